//! Kafka over TLS with SASL, as on a managed cluster: the test broker's
//! SASL_SSL listener (`tests/kafka/broker.sh`, certificates made at start by
//! a test CA). The gateway publishes through it with PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512 and OAUTHBEARER (development tokens); a wrong password
//! stops the start with an error that says so, quickly, without printing
//! the password.

#![allow(clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway_tests::{
    config_text, free_port, gateway_binary, read_topic, unique_topic, GatewayProcess, SaslListener,
    TestGateway,
};

fn plaintext_bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn routes(topic: &str) -> String {
    gateway_tests::shop_routes("http://127.0.0.1:9", topic, &format!("{topic}.users"))
}

fn security(sasl: &SaslListener, mechanism: &str, password: &str) -> String {
    format!(
        r#"
[kafka.security]
protocol = "sasl_ssl"
sasl_mechanism = "{mechanism}"
username = "{user}"
ca_file = "{ca}"
{password}
"#,
        user = sasl.user,
        ca = sasl.ca_file.display(),
    )
}

const ORDER: &str = r#"{"orderId":"o-1","customerId":"c-42","items":[],"totalCents":1}"#;

/// Posts [`ORDER`] to the async route at `base`; the status.
async fn post_order(base: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}/orders"))
        .header("content-type", "application/json")
        .body(ORDER)
        .send()
        .await
        .expect("answer")
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_gateway_publishes_through_sasl_ssl_with_plain_and_scram() {
    let sasl = SaslListener::from_env();
    assert!(
        sasl.ca_file.is_file(),
        "no test CA at {} (start the broker with tests/kafka/broker.sh)",
        sasl.ca_file.display()
    );
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let topic = unique_topic("secure.orders");
        let secret_dir = tempfile::tempdir().expect("tempdir");
        let password_file = secret_dir.path().join("kafka-password");
        // As a mounted secret: with a trailing newline.
        std::fs::write(&password_file, format!("{}\n", sasl.password)).expect("write secret");
        let config = config_text(
            &sasl.bootstrap,
            10_000,
            &format!(
                "{}\n{}",
                security(
                    &sasl,
                    mechanism,
                    &format!("password_file = \"{}\"", password_file.display())
                ),
                routes(&topic)
            ),
        );
        let gw = TestGateway::start(&config)
            .await
            .unwrap_or_else(|e| panic!("{mechanism}: the gateway starts: {e:#}"));
        let status = post_order(&gw.base).await;
        assert_eq!(status, 202, "{mechanism}: accepted");
        let ready = reqwest::get(format!("{}/readyz", gw.admin))
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 200, "{mechanism}: ready");
        // Read back through the plaintext listener: the event is in Kafka.
        let records = read_topic(&plaintext_bootstrap(), &topic)
            .await
            .expect("read back");
        assert_eq!(records.len(), 1, "{mechanism}: one event");
        assert_eq!(records[0].key.as_deref(), Some("c-42"));
        println!("kafka-security: {mechanism} over TLS: 202, event in {topic}");
        gw.stop().await;
    }
}

#[tokio::test]
async fn credentials_from_the_environment_work_and_never_reach_the_log() {
    let sasl = SaslListener::from_env();
    let topic = unique_topic("secure.env");
    let dir = tempfile::tempdir().expect("tempdir");
    // The file names no cluster and no user: the environment gives them, as
    // in a container.
    let config = config_text(
        "localhost:1",
        10_000,
        &format!(
            "[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\n{}",
            routes(&topic)
        ),
    );
    let ca = sasl.ca_file.display().to_string();
    let gw = GatewayProcess::start_with_env(
        dir.path(),
        &config,
        &[
            ("GATEWAY_KAFKA_BOOTSTRAP", sasl.bootstrap.as_str()),
            ("GATEWAY_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("GATEWAY_KAFKA_SASL_USERNAME", sasl.user.as_str()),
            ("GATEWAY_KAFKA_SASL_PASSWORD", sasl.password.as_str()),
            ("GATEWAY_KAFKA_CA_FILE", ca.as_str()),
        ],
    )
    .await
    .expect("the gateway starts with settings from the environment");
    let status = post_order(&gw.base).await;
    assert_eq!(status, 202);
    // Everything the admin port serves, and the log: no password.
    let http = reqwest::Client::new();
    for path in ["/admin/routes", "/metrics", "/readyz", "/healthz"] {
        let body = http
            .get(format!("{}{path}", gw.admin))
            .send()
            .await
            .expect("admin answers")
            .text()
            .await
            .expect("body");
        assert!(!body.contains(&sasl.password), "{path} shows the password");
    }
    let log = gw.log_text();
    assert!(
        log.contains("GATEWAY_KAFKA_SASL_MECHANISM"),
        "the overrides are named in the log"
    );
    assert!(!log.contains(&sasl.password), "the log shows the password");
    let records = read_topic(&plaintext_bootstrap(), &topic)
        .await
        .expect("read back");
    assert_eq!(records.len(), 1);
}

#[tokio::test]
async fn a_wrong_password_stops_the_start_with_a_clear_error() {
    let sasl = SaslListener::from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let (public, admin) = (free_port().expect("port"), free_port().expect("port"));
    let config = config_text(
        &sasl.bootstrap,
        10_000,
        &format!(
            "{}\n{}",
            security(&sasl, "SCRAM-SHA-256", ""),
            routes("secure.refused")
        ),
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{public}\""),
    )
    .replace(
        "admin = \"127.0.0.1:0\"",
        &format!("admin = \"127.0.0.1:{admin}\""),
    );
    std::fs::write(dir.path().join("routes.toml"), config).expect("write config");
    let wrong = "not-the-password-4711";
    let binary = tokio::task::spawn_blocking(gateway_binary)
        .await
        .expect("thread")
        .expect("gateway binary");
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(dir.path().join("routes.toml"))
        .env("GATEWAY_KAFKA_SASL_PASSWORD", wrong)
        .env("GATEWAY_LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Never ready while it tries, and it gives up by itself.
    let http = reqwest::Client::new();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        let ready = http
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        assert!(
            !ready.is_ok_and(|r| r.status().is_success()),
            "ready with a wrong password"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still starting after 60 s: a hang"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = started.elapsed();
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "kafka-security: wrong password: exit {:?} after {:.1} s",
        status.code(),
        took.as_secs_f64()
    );
    assert!(!status.success(), "the start fails");
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.contains("Kafka refused the connection") && last.contains("SCRAM-SHA-256"),
        "the error names the refusal and the mechanism: {last}"
    );
    assert!(
        last.contains("GATEWAY_KAFKA_SASL_PASSWORD"),
        "the error says where the password came from: {last}"
    );
    assert!(!text.contains(wrong), "the password is printed");
    assert!(
        took < Duration::from_secs(30),
        "a refusal is reported without waiting for the connect timeout"
    );
}

#[tokio::test]
async fn oauthbearer_with_librdkafka_development_tokens() {
    let sasl = SaslListener::from_env();
    let topic = unique_topic("secure.oauth");
    // librdkafka's unsecured JWTs, accepted by the test broker's unsecured
    // validator: the OAUTHBEARER exchange itself, without an identity
    // provider.
    let config = config_text(
        &sasl.bootstrap,
        10_000,
        &format!(
            r#"
[kafka.security]
protocol = "sasl_ssl"
sasl_mechanism = "OAUTHBEARER"
ca_file = "{ca}"
{routes}"#,
            ca = sasl.ca_file.display(),
            routes = routes(&topic)
        ),
    )
    .replace(
        "publish_timeout_ms = 10000\n",
        "publish_timeout_ms = 10000\n[kafka.properties]\n\"enable.sasl.oauthbearer.unsecure.jwt\" = \"true\"\n\"sasl.oauthbearer.config\" = \"principal=gateway\"\n",
    );
    let gw = TestGateway::start(&config)
        .await
        .expect("the gateway starts with OAUTHBEARER");
    let status = post_order(&gw.base).await;
    assert_eq!(status, 202);
    let records = read_topic(&plaintext_bootstrap(), &topic)
        .await
        .expect("read back");
    assert_eq!(records.len(), 1, "the event is in Kafka");
    println!(
        "kafka-security: OAUTHBEARER (unsecured development JWT) over TLS: 202, event in {topic}"
    );
    gw.stop().await;
}
