//! Runtime route flips through the admin API: auth, validation, audit, and
//! precedence over the file (embedded Kafka, wiremock legacy service).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use gateway_tests::{config_text, TestGateway};
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const USER: &str = r#"{"userId":"u-1","email":"u@example.com","name":"U"}"#;

fn routes(legacy: &str) -> String {
    config_text(
        "embedded",
        3000,
        &format!(
            r#"
[upstreams.legacy]
url = "{legacy}"

[[routes]]
name = "register-user"
method = "POST"
path = "/users"
upstream = "legacy"
mode = "passthrough"
topic = "users.user-registered"
schema = "com.shop.UserRegistered"
key = "/userId"

[[routes]]
name = "get-user"
method = "GET"
path = "/users/{{id}}"
upstream = "legacy"
mode = "passthrough"

[admin]
tokens_file = "tokens.toml"
"#
        ),
    )
}

const TOKENS: &str = "[tokens]\nalice = \"alice-secret\"\nci = \"ci-secret\"\n";

async fn setup() -> (MockServer, TestGateway) {
    let legacy = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_string("legacy"))
        .mount(&legacy)
        .await;
    let gw = TestGateway::start_with_files(&routes(&legacy.uri()), &[("tokens.toml", TOKENS)])
        .await
        .expect("gateway starts");
    (legacy, gw)
}

#[tokio::test]
async fn writes_need_a_known_token_and_change_nothing_otherwise() {
    let (_legacy, gw) = setup().await;
    let path = "/admin/routes/register-user/mode";
    let none = gw
        .admin_write(Method::PUT, path, None)
        .json(&json!({"mode": "async"}))
        .send()
        .await
        .expect("r");
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let wrong = gw
        .admin_write(Method::PUT, path, Some("guess"))
        .json(&json!({"mode": "async"}))
        .send()
        .await
        .expect("r");
    assert_eq!(wrong.status(), 403);
    let reload = gw
        .admin_write(Method::POST, "/admin/reload", Some("guess"))
        .send()
        .await
        .expect("r");
    assert_eq!(reload.status(), 403);
    assert_eq!(
        gw.route_mode("register-user")
            .await
            .expect("routes")
            .as_deref(),
        Some("passthrough")
    );
}

#[tokio::test]
async fn without_any_token_configured_writes_are_disabled() {
    let legacy = MockServer::start().await;
    let config = routes(&legacy.uri()).replace("[admin]\ntokens_file = \"tokens.toml\"\n", "");
    let gw = TestGateway::start(&config).await.expect("gateway starts");
    let r = gw
        .admin_write(
            Method::PUT,
            "/admin/routes/register-user/mode",
            Some("anything"),
        )
        .json(&json!({"mode": "async"}))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.expect("json");
    assert!(body["detail"]
        .as_str()
        .expect("detail")
        .contains("disabled"));
}

#[tokio::test]
async fn a_flip_takes_effect_at_once_is_audited_and_can_be_cleared() {
    let (legacy, gw) = setup().await;
    let path = "/admin/routes/register-user/mode";
    let r = gw
        .admin_write(Method::PUT, path, Some("alice-secret"))
        .json(&json!({"mode": "async"}))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
    let change: Value = r.json().await.expect("json");
    assert_eq!(
        (change["before"].as_str(), change["after"].as_str()),
        (Some("passthrough"), Some("async"))
    );
    assert_eq!(change["by"], "alice");

    let routes = gw.admin_routes().await.expect("routes");
    let route = routes["routes"]
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["name"] == "register-user")
        .expect("route")
        .clone();
    assert_eq!(
        (
            route["mode"].as_str(),
            route["file_mode"].as_str(),
            route["override"].as_str()
        ),
        (Some("async"), Some("passthrough"), Some("async"))
    );

    let served = gw
        .http
        .post(format!("{}/users", gw.base))
        .body(USER)
        .send()
        .await
        .expect("post");
    assert_eq!(
        served.status(),
        202,
        "the flipped route answers asynchronously"
    );
    assert!(legacy
        .received_requests()
        .await
        .expect("recording")
        .is_empty());

    // A file reload does not undo the runtime flip...
    let reloaded = gw
        .admin_write(Method::POST, "/admin/reload", Some("ci-secret"))
        .send()
        .await
        .expect("r");
    assert_eq!(reloaded.status(), 200);
    assert_eq!(
        gw.route_mode("register-user")
            .await
            .expect("routes")
            .as_deref(),
        Some("async")
    );
    // ...clearing it does.
    let cleared = gw
        .admin_write(Method::DELETE, path, Some("alice-secret"))
        .send()
        .await
        .expect("r");
    assert_eq!(cleared.status(), 200);
    assert_eq!(
        gw.route_mode("register-user")
            .await
            .expect("routes")
            .as_deref(),
        Some("passthrough")
    );

    let audit: Value = gw
        .http
        .get(format!("{}/admin/audit", gw.admin))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    let changes = audit["changes"].as_array().expect("changes");
    let who: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| {
            (
                c["by"].as_str().unwrap_or(""),
                c["source"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(who[0], ("alice", "api"), "newest first: the clear");
    assert!(who.contains(&("ci", "api")), "the reload by ci: {who:?}");
}

#[tokio::test]
async fn unsafe_or_unknown_flips_are_refused_with_reasons() {
    let (_legacy, gw) = setup().await;
    let r = gw
        .admin_write(
            Method::PUT,
            "/admin/routes/get-user/mode",
            Some("alice-secret"),
        )
        .json(&json!({"mode": "async"}))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("json");
    let problems = body["problems"].to_string();
    assert!(
        problems.contains("get-user") && problems.contains("needs a topic"),
        "{problems}"
    );
    assert_eq!(
        gw.route_mode("get-user").await.expect("routes").as_deref(),
        Some("passthrough")
    );

    let unknown = gw
        .admin_write(Method::PUT, "/admin/routes/nope/mode", Some("alice-secret"))
        .json(&json!({"mode": "async"}))
        .send()
        .await
        .expect("r");
    assert_eq!(unknown.status(), 404);
    let bad_mode = gw
        .admin_write(
            Method::PUT,
            "/admin/routes/get-user/mode",
            Some("alice-secret"),
        )
        .json(&json!({"mode": "sideways"}))
        .send()
        .await
        .expect("r");
    assert_eq!(bad_mode.status(), 400);
}
