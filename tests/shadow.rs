//! Shadow traffic: copies to a candidate, compared with the legacy answers,
//! noise learned, and the caller never affected (wiremock services,
//! embedded Kafka).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gateway_tests::{config_text, wait_until, TestGateway};
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn config(legacy: &str, candidate: &str, shadow: &str) -> String {
    config_text(
        "embedded",
        3000,
        &format!(
            r#"
[upstreams.legacy]
url = "{legacy}"

[upstreams.candidate]
url = "{candidate}"
timeout_ms = 10000

[[routes]]
name = "get-order"
method = "GET"
path = "/orders/{{id}}"
upstream = "legacy"
mode = "passthrough"
shadow = {shadow}

[[routes]]
name = "cancel-order"
method = "DELETE"
path = "/orders/{{id}}"
upstream = "legacy"
mode = "passthrough"
shadow = {shadow}
"#
        ),
    )
}

/// A legacy service whose answers carry a fresh request id and timestamp.
struct Noisy {
    n: AtomicU64,
    status: &'static str,
}

impl Respond for Noisy {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "1", "status": self.status, "total": 10.0,
            "requestId": format!("req-{n}"), "servedAt": format!("t{n}"),
            "items": [{"sku": "A", "updatedAt": format!("u{n}")}]
        }))
    }
}

async fn fetch_report(gw: &TestGateway, route: &str) -> Value {
    gw.http
        .get(format!("{}/admin/shadow/{route}", gw.admin))
        .send()
        .await
        .expect("report")
        .json()
        .await
        .unwrap_or(Value::Null)
}

async fn wait_report(gw: &TestGateway, route: &str, compared: u64) -> Value {
    wait_until(
        Duration::from_secs(10),
        "shadow comparisons recorded",
        || async {
            fetch_report(gw, route).await["compared"]
                .as_u64()
                .unwrap_or(0)
                >= compared
        },
    )
    .await
    .expect("comparisons");
    fetch_report(gw, route).await
}

#[tokio::test]
async fn the_differing_field_is_named_and_noise_and_ignored_fields_are_not() {
    let legacy = MockServer::start().await;
    let candidate = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(Noisy {
            n: AtomicU64::new(0),
            status: "PAID",
        })
        .mount(&legacy)
        .await;
    Mock::given(method("GET"))
        .respond_with(Noisy {
            n: AtomicU64::new(1000),
            status: "paid",
        })
        .mount(&candidate)
        .await;
    let shadow = r#"{ upstream = "candidate", noise = "same", ignore = ["/items/*/updatedAt"] }"#;
    let gw = TestGateway::start(&config(&legacy.uri(), &candidate.uri(), shadow))
        .await
        .expect("gateway");

    for _ in 0..5 {
        let r = gw
            .http
            .get(format!("{}/orders/1", gw.base))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.expect("json");
        assert_eq!(
            body["status"], "PAID",
            "the caller always gets the legacy answer"
        );
    }
    let report = wait_report(&gw, "get-order", 5).await;
    let top: Vec<&str> = report["top_differences"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert_eq!(top, vec!["/status"], "{report:#}");
    let example = &report["top_differences"][0]["example"];
    assert_eq!(
        (example["legacy"].as_str(), example["candidate"].as_str()),
        (Some("PAID"), Some("paid"))
    );
    let noise: Vec<&str> = report["noise"]
        .as_array()
        .expect("noise")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert!(
        noise.contains(&"/requestId") && noise.contains(&"/servedAt"),
        "{noise:?}"
    );
    assert!(
        !noise.iter().any(|n| n.contains("updatedAt")),
        "ignored fields are not even compared"
    );
    assert_eq!(report["match_rate"], 0.0);
}

#[tokio::test]
async fn a_slow_candidate_does_not_hold_the_caller() {
    let legacy = MockServer::start().await;
    let candidate = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "1"})))
        .mount(&legacy)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "1"}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&candidate)
        .await;
    let gw = TestGateway::start(&config(
        &legacy.uri(),
        &candidate.uri(),
        r#"{ upstream = "candidate" }"#,
    ))
    .await
    .expect("gateway");
    let r = gw
        .http
        .get(format!("{}/orders/1", gw.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")["id"], "1");
    // The caller has its answer while the candidate is still working on the copy.
    assert_eq!(
        fetch_report(&gw, "get-order").await["compared"],
        Value::Null,
        "no comparison yet: the caller did not wait for the candidate"
    );
    let report = wait_report(&gw, "get-order", 1).await;
    assert_eq!(report["equal"], 1);
}

#[tokio::test]
async fn unsafe_methods_are_copied_only_when_allowed_and_then_marked() {
    let legacy = MockServer::start().await;
    let candidate = MockServer::start().await;
    for s in [&legacy, &candidate] {
        Mock::given(method("DELETE"))
            .respond_with(ResponseTemplate::new(204))
            .mount(s)
            .await;
    }
    let gw = TestGateway::start(&config(
        &legacy.uri(),
        &candidate.uri(),
        r#"{ upstream = "candidate" }"#,
    ))
    .await
    .expect("gateway");
    let r = gw
        .http
        .delete(format!("{}/orders/1", gw.base))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    assert!(
        candidate
            .received_requests()
            .await
            .expect("recording")
            .is_empty(),
        "no side effects by default"
    );

    let allowed = TestGateway::start(&config(
        &legacy.uri(),
        &candidate.uri(),
        r#"{ upstream = "candidate", allow_side_effects = true }"#,
    ))
    .await
    .expect("gateway");
    let r = allowed
        .http
        .delete(format!("{}/orders/2", allowed.base))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    wait_until(
        Duration::from_secs(10),
        "the copy reaches the candidate",
        || async {
            !candidate
                .received_requests()
                .await
                .unwrap_or_default()
                .is_empty()
        },
    )
    .await
    .expect("copied");
    let copy = &candidate.received_requests().await.expect("recording")[0];
    assert_eq!(copy.headers["x-gateway-shadow"], "1");
}

#[tokio::test]
async fn secrets_are_redacted_and_differences_are_counted_and_published() {
    let legacy = MockServer::start().await;
    let candidate = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-session", "legacy-secret")
                .set_body_json(json!({"items": [{"price": 1}, {"price": 2}]})),
        )
        .mount(&legacy)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-session", "candidate-secret")
                .set_body_json(json!({"items": [{"price": 1}, {"price": 3}]})),
        )
        .mount(&candidate)
        .await;
    let shadow = r#"{ upstream = "candidate", compare_headers = ["X-Session"], redact_headers = ["x-session"], publish_diffs = true }"#;
    let gw = TestGateway::start(&config(&legacy.uri(), &candidate.uri(), shadow))
        .await
        .expect("gateway");
    let r = gw
        .http
        .get(format!("{}/orders/1", gw.base))
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.headers()["x-session"],
        "legacy-secret",
        "the caller's answer is untouched"
    );
    let report = wait_report(&gw, "get-order", 1).await;
    let text = report.to_string();
    assert!(
        !text.contains("legacy-secret") && !text.contains("candidate-secret"),
        "{text}"
    );
    assert!(
        text.contains("[redacted]") && text.contains("header:x-session"),
        "{text}"
    );
    assert_eq!(
        gw.metric("gateway_shadow_field_differences_total{class=\"different\",path=\"/items/*/price\",route=\"get-order\"}")
            .await
            .expect("metric"),
        1.0
    );
    let bootstrap = gw.gateway.kafka_bootstrap.clone();
    wait_until(
        Duration::from_secs(10),
        "the difference is on the shadow topic",
        || async {
            gateway_tests::read_topic(&bootstrap, "gateway.shadow-diffs")
                .await
                .map(|r| {
                    r.iter()
                        .any(|m| String::from_utf8_lossy(&m.value).contains("/items/1/price"))
                })
                .unwrap_or(false)
        },
    )
    .await
    .expect("published");
}

#[tokio::test]
async fn read_after_write_compares_the_new_read_side_on_async_and_dual_write_routes() {
    use wiremock::matchers::path;
    let legacy = MockServer::start().await;
    let candidate = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&legacy)
        .await;
    Mock::given(method("GET"))
        .and(path("/users/u-1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"userId": "u-1", "name": "Ada"})),
        )
        .mount(&legacy)
        .await;
    Mock::given(method("GET"))
        .and(path("/users/u-1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"userId": "u-1", "name": "ada"})),
        )
        .mount(&candidate)
        .await;
    // The new orders service stored the order, but with another total.
    Mock::given(method("GET"))
        .and(path("/orders/o-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "orderId": "o-1", "customerId": "c-1", "items": [], "totalCents": 999,
            "currency": "EUR", "storedAt": "2026-12-03T00:00:00Z"
        })))
        .mount(&candidate)
        .await;
    let config = config_text(
        "embedded",
        3000,
        &format!(
            r#"
[upstreams.legacy]
url = "{}"

[upstreams.candidate]
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
shadow = {{ upstream = "candidate", read_after_write = "/orders/{{orderId}}", delay_ms = 50 }}

[[routes]]
name = "register-user"
method = "POST"
path = "/users"
upstream = "legacy"
mode = "dual-write"
topic = "users.user-registered"
schema = "com.shop.UserRegistered"
key = "/userId"
shadow = {{ upstream = "candidate", read_after_write = "/users/{{userId}}", delay_ms = 50 }}
"#,
            legacy.uri(),
            candidate.uri()
        ),
    );
    let gw = TestGateway::start(&config).await.expect("gateway");
    let r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .body(r#"{"orderId":"o-1","customerId":"c-1","items":[],"totalCents":100}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    let r = gw
        .http
        .post(format!("{}/users", gw.base))
        .body(r#"{"userId":"u-1","email":"ada@example.com","name":"Ada"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);

    let orders = wait_report(&gw, "create-order", 1).await;
    let paths: Vec<&str> = orders["top_differences"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert_eq!(
        paths,
        vec!["/totalCents"],
        "only what the caller sent is compared: {orders:#}"
    );
    assert_eq!(orders["top_differences"][0]["example"]["expected"], 100);
    assert_eq!(orders["top_differences"][0]["example"]["candidate"], 999);

    let users = wait_report(&gw, "register-user", 1).await;
    let paths: Vec<&str> = users["top_differences"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert_eq!(
        paths,
        vec!["/name"],
        "legacy read against candidate read: {users:#}"
    );
}

#[tokio::test]
async fn noise_can_be_learned_from_a_second_legacy_instance() {
    let legacy = MockServer::start().await;
    let legacy2 = MockServer::start().await;
    let candidate = MockServer::start().await;
    for (server, start, status) in [
        (&legacy, 0, "PAID"),
        (&legacy2, 500, "PAID"),
        (&candidate, 1000, "paid"),
    ] {
        Mock::given(method("GET"))
            .respond_with(Noisy {
                n: AtomicU64::new(start),
                status,
            })
            .mount(server)
            .await;
    }
    let shadow = r#"{ upstream = "candidate", noise = "legacy2" }"#;
    let config = config(&legacy.uri(), &candidate.uri(), shadow).replace(
        "[upstreams.candidate]",
        &format!(
            "[upstreams.legacy2]\nurl = \"{}\"\n\n[upstreams.candidate]",
            legacy2.uri()
        ),
    );
    let gw = TestGateway::start(&config).await.expect("gateway");
    for _ in 0..3 {
        let r = gw
            .http
            .get(format!("{}/orders/1", gw.base))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
    }
    let report = wait_report(&gw, "get-order", 3).await;
    let top: Vec<&str> = report["top_differences"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    assert_eq!(top, vec!["/status"], "{report:#}");
    let noise = report["noise"].to_string();
    assert!(
        noise.contains("/requestId") && noise.contains("/items/0/updatedAt"),
        "{noise}"
    );
    assert!(
        !legacy2
            .received_requests()
            .await
            .expect("recording")
            .is_empty(),
        "the second instance was asked"
    );
}
