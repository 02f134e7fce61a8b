use super::*;

const MINIMAL: &str = r#"
[kafka]
bootstrap = "embedded"

[upstreams.orders]
url = "http://127.0.0.1:7001"

[[routes]]
name = "create-order"
method = "POST"
path = "/orders"
upstream = "orders"
mode = "async"
topic = "orders.order-created"
schema = "com.shop.OrderCreated"
key = "/customerId"
"#;

fn parse(text: &str) -> Result<LoadedConfig, ConfigError> {
    LoadedConfig::parse(text, PathBuf::from("."))
}

#[test]
fn minimal_config_has_documented_defaults() {
    let loaded = parse(MINIMAL).expect("parses");
    let c = &loaded.config;
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.admin.to_string(), "127.0.0.1:9080");
    assert_eq!(c.server.max_body_bytes, 1_048_576);
    assert_eq!(c.kafka.publish_timeout_ms, 5_000);
    assert_eq!(c.upstreams["orders"].timeout_ms, 5_000);
    assert_eq!(c.upstreams["orders"].max_concurrency, 256);
    assert_eq!(c.upstreams["orders"].breaker_failures, 5);
    assert_eq!(c.upstreams["orders"].breaker_open_ms, 5_000);
    assert_eq!(c.routes[0].mode, Mode::Async);
    assert!(c.validate().is_empty(), "{:?}", c.validate());
}

#[test]
fn unknown_keys_are_errors() {
    let text = MINIMAL.replace("mode = \"async\"", "mode = \"async\"\nretries = 3");
    let err = parse(&text).expect_err("unknown key must fail");
    assert!(err.to_string().contains("retries"), "{err}");
}

#[test]
fn unknown_mode_is_an_error() {
    let text = MINIMAL.replace("mode = \"async\"", "mode = \"fire-and-forget\"");
    let err = parse(&text).expect_err("unknown mode must fail");
    assert!(err.to_string().contains("fire-and-forget"), "{err}");
}

#[test]
fn validate_reports_every_problem_with_its_route() {
    let text = r#"
[kafka]
bootstrap = "embedded"
properties = { "acks" = "1" }

[upstreams.orders]
url = "ftp://example"

[[routes]]
name = "a"
method = "FETCH"
path = "orders"
upstream = "nowhere"
mode = "async"

[[routes]]
name = "a"
method = "GET"
path = "/orders/{id}"
upstream = "orders"
mode = "dual-write"
topic = "bad topic"
schema = "com.shop.X"
key = "{orderId}"
"#;
    let problems = parse(text).expect("parses").config.validate();
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let has = |needle: &str| text.iter().any(|p| p.contains(needle));
    assert!(has("acks"), "{text:#?}");
    assert!(has("upstream orders: url \"ftp://example\""), "{text:#?}");
    assert!(has("route a: method \"FETCH\""), "{text:#?}");
    assert!(has("route a: path \"orders\""), "{text:#?}");
    assert!(has("route a: upstream \"nowhere\""), "{text:#?}");
    assert!(has("route a: mode async needs a topic"), "{text:#?}");
    assert!(has("route a: mode async needs a schema"), "{text:#?}");
    assert!(has("route a: mode async needs a key"), "{text:#?}");
    assert!(has("route a: duplicate route name"), "{text:#?}");
    assert!(has("route a: topic \"bad topic\""), "{text:#?}");
    assert!(has("route a: key \"{orderId}\""), "{text:#?}");
}

#[test]
fn path_parameter_keys_must_exist_in_the_path() {
    let text = MINIMAL
        .replace("path = \"/orders\"", "path = \"/orders/{id}\"")
        .replace("key = \"/customerId\"", "key = \"{id}\"");
    assert!(parse(&text).expect("parses").config.validate().is_empty());
}

#[test]
fn upstream_limits_must_be_usable() {
    let text = MINIMAL.replace(
        "url = \"http://127.0.0.1:7001\"",
        "url = \"http://127.0.0.1:7001\"\nmax_concurrency = 0\nbreaker_open_ms = 0",
    );
    let problems: Vec<String> = parse(&text)
        .expect("parses")
        .config
        .validate()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("max_concurrency must be > 0")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("breaker_open_ms must be > 0")),
        "{problems:?}"
    );
}

#[test]
fn credentials_in_kafka_properties_are_refused() {
    let text = MINIMAL.replace(
        "bootstrap = \"embedded\"",
        "bootstrap = \"broker:9092\"\nproperties = { \"sasl.password\" = \"hunter2\", \"security.protocol\" = \"sasl_ssl\" }",
    );
    let problems: Vec<String> = parse(&text)
        .expect("parses")
        .config
        .validate()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|p| p.contains("[kafka.security]")));
    assert!(problems.iter().all(|p| !p.contains("hunter2")));
}

#[test]
fn the_embedded_cluster_takes_no_security_settings() {
    let text = MINIMAL.replace(
        "bootstrap = \"embedded\"",
        "bootstrap = \"embedded\"\n[kafka.security]\nprotocol = \"ssl\"",
    );
    let problems = parse(&text).expect("parses").config.validate();
    assert!(
        problems.iter().any(|p| p.message.contains("embedded")),
        "{problems:?}"
    );
}

#[test]
fn environment_overrides_apply_before_validation() {
    let env = |k: &str| match k {
        "GATEWAY_KAFKA_BOOTSTRAP" => Some("broker-1:9093".to_string()),
        "GATEWAY_UPSTREAM_ORDERS_URL" => Some("ftp://orders".to_string()),
        _ => None,
    };
    let loaded = LoadedConfig::parse_with_env(MINIMAL, PathBuf::from("."), &env).expect("parses");
    assert_eq!(loaded.config.kafka.bootstrap, "broker-1:9093");
    assert_eq!(
        loaded.from_env,
        ["GATEWAY_KAFKA_BOOTSTRAP", "GATEWAY_UPSTREAM_ORDERS_URL"]
    );
    let problems = loaded.config.validate();
    assert!(
        problems.iter().any(|p| p.message.contains("ftp")),
        "an overridden value is checked like the file's: {problems:?}"
    );
}
