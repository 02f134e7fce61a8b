//! Contract tests of the Schema Registry client against a wiremock registry:
//! the requests it sends, and how it handles 404, 409, 422, 5xx and auth.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::time::Duration;

use gateway::schema::registry::{RegistryAuth, RegistryClient, RegistryError};
use gateway_tests::{config_text, TestGateway};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SCHEMA: &str = r#"{"type":"record","name":"X","fields":[]}"#;

fn client(server: &MockServer, auth: Option<RegistryAuth>) -> RegistryClient {
    RegistryClient::with_auth(
        &server.uri(),
        gateway::upstream::client(),
        Duration::from_secs(2),
        auth,
    )
}

#[tokio::test]
async fn register_posts_the_schema_with_the_registry_media_type() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/subjects/orders-value/versions"))
        .and(header(
            "content-type",
            "application/vnd.schemaregistry.v1+json",
        ))
        .and(body_json(json!({ "schema": SCHEMA })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 21})))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        client(&server, None)
            .register("orders-value", SCHEMA)
            .await
            .expect("id"),
        21
    );
}

#[tokio::test]
async fn basic_and_bearer_credentials_are_sent() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/subjects/a-value/versions/latest"))
        .and(header("authorization", "Basic a2V5OnNlY3JldA=="))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": 1, "version": 3, "schema": SCHEMA})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/subjects/b-value/versions/latest"))
        .and(header("authorization", "Bearer t0ken"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": 2, "version": 1, "schema": SCHEMA})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let basic = client(
        &server,
        Some(RegistryAuth::Basic {
            user: "key".into(),
            password: "secret".into(),
        }),
    );
    let latest = basic.latest("a-value").await.expect("ok").expect("exists");
    assert_eq!((latest.id, latest.version), (1, 3));
    let bearer = client(&server, Some(RegistryAuth::Bearer("t0ken".into())));
    assert_eq!(
        bearer
            .latest("b-value")
            .await
            .expect("ok")
            .expect("exists")
            .id,
        2
    );
}

#[tokio::test]
async fn not_found_means_unknown_subject_or_schema() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error_code": 40401, "message": "Subject not found"})),
        )
        .mount(&server)
        .await;
    let c = client(&server, None);
    assert_eq!(c.lookup("s", SCHEMA).await.expect("ok"), None);
    assert_eq!(c.latest("s").await.expect("ok"), None);
    assert!(
        c.incompatibilities("s", SCHEMA)
            .await
            .expect("ok")
            .is_empty(),
        "a new subject has nothing to be incompatible with"
    );
    assert_eq!(c.subject_level("s").await.expect("ok"), None);
}

#[tokio::test]
async fn conflict_and_invalid_schema_are_reported_without_retrying() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/subjects/c-value/versions"))
        .respond_with(ResponseTemplate::new(409).set_body_json(
            json!({"error_code": 409, "message": "Schema being registered is incompatible"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/subjects/i-value/versions"))
        .respond_with(
            ResponseTemplate::new(422)
                .set_body_json(json!({"error_code": 42201, "message": "Invalid schema"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, None);
    match c.register("c-value", SCHEMA).await {
        Err(RegistryError::Status {
            status: 409,
            message,
            ..
        }) => assert!(message.contains("incompatible")),
        other => panic!("{other:?}"),
    }
    match c.register("i-value", SCHEMA).await {
        Err(RegistryError::Status {
            status: 422,
            code: 42201,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_reported() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/subjects/flaky-value/versions"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/subjects/flaky-value/versions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 5})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/subjects/down-value/versions"))
        .respond_with(ResponseTemplate::new(500))
        .expect(3)
        .mount(&server)
        .await;
    let c = client(&server, None);
    assert_eq!(
        c.register("flaky-value", SCHEMA)
            .await
            .expect("third attempt"),
        5
    );
    assert!(matches!(
        c.register("down-value", SCHEMA).await,
        Err(RegistryError::Status { status: 500, .. })
    ));
}

#[tokio::test]
async fn compatibility_test_returns_the_registry_messages() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/compatibility/subjects/o-value/versions"))
        .and(query_param("verbose", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "is_compatible": false,
            "messages": ["READER_FIELD_MISSING_DEFAULT_VALUE: owner"]
        })))
        .mount(&server)
        .await;
    let found = client(&server, None)
        .incompatibilities("o-value", SCHEMA)
        .await
        .expect("ok");
    assert_eq!(
        found,
        vec!["READER_FIELD_MISSING_DEFAULT_VALUE: owner".to_string()]
    );
}

#[tokio::test]
async fn the_gateway_refuses_a_route_the_registry_finds_incompatible_and_registers_nothing() {
    let legacy = MockServer::start().await;
    let registry = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/compatibility/subjects/orders.order-created-value/versions",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "is_compatible": false, "messages": ["field totalCents: type changed"]
        })))
        .mount(&registry)
        .await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path_regex("^/subjects/.*/versions$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 1})))
        .expect(0)
        .mount(&registry)
        .await;
    let routes = format!(
        r#"
[upstreams.legacy]
url = "{}"

[[routes]]
name = "create-order"
method = "POST"
path = "/orders"
upstream = "legacy"
mode = "async"
topic = "orders.order-created"
schema = "com.shop.OrderCreated"
key = "/customerId"
"#,
        legacy.uri()
    );
    let config = config_text("embedded", 2000, &routes).replace(
        "\n[spool]",
        &format!("registry = \"{}\"\n\n[spool]", registry.uri()),
    );
    let err = TestGateway::start(&config).await.err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("route create-order"), "{text}");
    assert!(
        text.contains("incompatible with what subject orders.order-created-value holds"),
        "{text}"
    );
    assert!(text.contains("field totalCents: type changed"), "{text}");
}
