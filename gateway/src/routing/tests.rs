use std::path::PathBuf;

use http::Method;

use super::*;
use crate::config::LoadedConfig;

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

fn config(routes: &str) -> LoadedConfig {
    let text = format!(
        r#"
[kafka]
bootstrap = "embedded"
[schemas]
dir = "{}"
[upstreams.orders]
url = "http://127.0.0.1:7001"
{routes}
"#,
        schemas_dir().display()
    );
    LoadedConfig::parse(&text, PathBuf::from(".")).expect("parses")
}

fn route(name: &str, method: &str, path: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nmethod = \"{method}\"\npath = \"{path}\"\nupstream = \"orders\"\nmode = \"passthrough\"\n"
    )
}

async fn table(routes: &str) -> Result<RouteTable, Vec<crate::config::Problem>> {
    build(&config(routes), &SchemaIds::Local).await
}

#[tokio::test]
async fn static_segments_win_over_parameters_and_methods_are_separate() {
    let routes = [
        route("by-id", "GET", "/orders/{id}"),
        route("search", "GET", "/orders/search"),
        route("update", "PUT", "/orders/{id}"),
        route("files", "GET", "/files/{*rest}"),
    ]
    .concat();
    let t = table(&routes).await.expect("valid");
    let name = |m: Method, p: &str| t.lookup(&m, p).map(|m| m.route.name.clone());
    assert_eq!(
        name(Method::GET, "/orders/search").as_deref(),
        Some("search")
    );
    assert_eq!(name(Method::GET, "/orders/17").as_deref(), Some("by-id"));
    assert_eq!(name(Method::PUT, "/orders/17").as_deref(), Some("update"));
    assert_eq!(name(Method::DELETE, "/orders/17"), None);
    assert_eq!(name(Method::GET, "/files/a/b/c").as_deref(), Some("files"));
    assert_eq!(name(Method::GET, "/nothing"), None);
    let m = t.lookup(&Method::GET, "/orders/17").expect("match");
    assert_eq!(m.params, vec![("id".to_string(), "17".to_string())]);
}

#[tokio::test]
async fn conflicting_patterns_and_duplicate_method_paths_are_reported_by_route() {
    let routes = [
        route("a", "GET", "/orders/{id}"),
        route("b", "GET", "/orders/{orderId}"),
        route("c", "GET", "/orders/{id}"),
    ]
    .concat();
    let problems = table(&routes).await.err().expect("invalid");
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|p| p.starts_with("route b: path")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|p| p.starts_with("route c: GET /orders/{id} is already routed by a")),
        "{text:#?}"
    );
}

#[tokio::test]
async fn unknown_schema_and_key_outside_the_schema_are_reported() {
    let routes = r#"
[[routes]]
name = "x"
method = "POST"
path = "/orders"
upstream = "orders"
mode = "async"
topic = "t"
schema = "com.shop.Missing"
key = "/id"

[[routes]]
name = "y"
method = "POST"
path = "/orders2"
upstream = "orders"
mode = "async"
topic = "t"
schema = "com.shop.OrderCreated"
key = "/nope"

[[routes]]
name = "z"
method = "POST"
path = "/orders3"
upstream = "orders"
mode = "async"
topic = "t"
schema = "com.shop.OrderCreated"
key = "/couponCode"

[[routes]]
name = "w"
method = "POST"
path = "/orders4"
upstream = "orders"
mode = "async"
topic = "t"
schema = "com.shop.OrderCreated"
key = "/items"
"#;
    let problems = table(routes).await.err().expect("invalid");
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|p| p.contains("route x: schema \"com.shop.Missing\" is not in")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|p| p.contains("route y: key \"/nope\" does not point at a field")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|p| p.contains("route z: key \"/couponCode\" points at a field of type union")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|p| p.contains("route w: key \"/items\" points at a field of type array")),
        "{text:#?}"
    );
}

#[tokio::test]
async fn the_repository_routes_file_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../routes.toml");
    let loaded = LoadedConfig::read(&path).expect("parses");
    let t = build(&loaded, &SchemaIds::Local).await.expect("valid");
    // Async reaches the shop through checkout's canary arm.
    let checkout = t
        .routes()
        .iter()
        .find(|r| r.name == "checkout")
        .expect("checkout");
    let canary = checkout.canary.as_ref().expect("canaried");
    assert_eq!(canary.arm.mode, crate::config::Mode::Async);
    assert!(checkout.event.is_some(), "the async arm publishes");
    assert!(t
        .routes()
        .iter()
        .any(|r| r.mode == crate::config::Mode::DualWrite));
    assert!(t
        .routes()
        .iter()
        .any(|r| r.mode == crate::config::Mode::Passthrough));
}

#[test]
fn forwarding_headers_are_kept_only_from_trusted_proxies() {
    let limits = Limits {
        max_body_bytes: 1024,
        retry_after_secs: 1,
        body_read_timeout: std::time::Duration::from_secs(1),
        trust_forwarded_headers: false,
        trusted_proxies: ["10.0.0.0/8", "192.0.2.9"]
            .iter()
            .filter_map(|p| crate::canary::parse_net(p))
            .collect(),
        https: true,
    };
    let peer = |ip: &str| Some(std::net::SocketAddr::new(ip.parse().expect("ip"), 40000));
    assert!(limits.forwarding(peer("10.20.30.40")).trust_incoming);
    assert!(limits.forwarding(peer("192.0.2.9")).trust_incoming);
    // An IPv4 peer seen on a dual-stack socket.
    assert!(limits.forwarding(peer("::ffff:10.1.1.1")).trust_incoming);
    assert!(!limits.forwarding(peer("192.0.2.10")).trust_incoming);
    assert!(!limits.forwarding(None).trust_incoming);
    assert!(limits.forwarding(None).https);
}
