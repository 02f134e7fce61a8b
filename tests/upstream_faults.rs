//! A legacy service that is slow or down: timeouts hold, the per-upstream
//! concurrency limit answers 503 at once instead of queueing, the circuit
//! breaker opens after consecutive failures and closes again after a
//! successful trial call, and async routes (which never call the legacy
//! service) are unaffected. Runs on the embedded Kafka.

#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::future::join_all;
use gateway_tests::{config_text, wait_until, TestGateway};
use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const ORDER: &str = r#"{"orderId":"o-1","customerId":"c-1","items":[],"totalCents":1}"#;

fn routes(url: &str, upstream_extra: &str) -> String {
    config_text(
        "embedded",
        5_000,
        &format!(
            r#"
[upstreams.legacy]
url = "{url}"
{upstream_extra}

[[routes]]
name = "get-order"
method = "GET"
path = "/orders/{{id}}"
upstream = "legacy"
mode = "passthrough"

[[routes]]
name = "create-order"
method = "POST"
path = "/orders"
upstream = "legacy"
mode = "async"
topic = "faults.orders"
schema = "com.shop.OrderCreated"
key = "/customerId"
"#
        ),
    )
}

async fn problem_type(r: reqwest::Response) -> (u16, String, bool) {
    let status = r.status().as_u16();
    let retry_after = r.headers().contains_key("retry-after");
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        body["type"].as_str().unwrap_or_default().to_string(),
        retry_after,
    )
}

#[tokio::test]
async fn a_slow_service_gets_at_most_max_concurrency_calls_and_the_rest_503_at_once() {
    let legacy = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&legacy)
        .await;
    let gw = TestGateway::start(&routes(
        &legacy.uri(),
        "timeout_ms = 1000\nmax_concurrency = 4\nbreaker_failures = 0",
    ))
    .await
    .expect("gateway starts");

    let started = Instant::now();
    let answers = join_all((0..20).map(|i| {
        let r = gw.http.get(format!("{}/orders/{i}", gw.base)).send();
        async move { problem_type(r.await.expect("answered")).await }
    }))
    .await;
    let elapsed = started.elapsed();
    let timeouts = answers.iter().filter(|(s, _, _)| *s == 504).count();
    let shed: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    println!(
        "upstream[slow 5 s, limit 4, timeout 1 s]: {timeouts} timed out (504), {} shed (503), all answered in {:.1} s",
        shed.len(),
        elapsed.as_secs_f64()
    );
    assert_eq!(
        timeouts, 4,
        "exactly the admitted calls waited for the timeout"
    );
    assert_eq!(shed.len(), 16);
    for (_, kind, retry_after) in shed {
        assert_eq!(kind, "urn:gateway:problem:concurrency_limit");
        assert!(retry_after, "503 carries Retry-After");
    }
    assert!(
        elapsed < Duration::from_secs(4),
        "the timeout held: no caller waited for the 5 s service"
    );
    assert!(
        legacy.received_requests().await.unwrap_or_default().len() <= 4,
        "no more than max_concurrency calls reached the service"
    );

    let r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .header("content-type", "application/json")
        .body(ORDER)
        .send()
        .await
        .expect("post");
    assert_eq!(
        r.status(),
        202,
        "async routes do not depend on the legacy service"
    );
}

#[tokio::test]
async fn the_breaker_opens_on_a_dead_service_and_closes_when_it_is_back() {
    // A port nothing listens on, which the service will take later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let gw = TestGateway::start(&routes(
        &format!("http://127.0.0.1:{port}"),
        "timeout_ms = 1000\nbreaker_failures = 3\nbreaker_open_ms = 500",
    ))
    .await
    .expect("gateway starts");
    let get = || async {
        problem_type(
            gw.http
                .get(format!("{}/orders/1", gw.base))
                .send()
                .await
                .expect("answered"),
        )
        .await
    };
    for _ in 0..3 {
        let (status, kind, _) = get().await;
        assert_eq!(
            (status, kind.as_str()),
            (502, "urn:gateway:problem:upstream_connect")
        );
    }
    let (status, kind, retry_after) = get().await;
    assert_eq!(
        (status, kind.as_str(), retry_after),
        (503, "urn:gateway:problem:circuit_open", true),
        "three failures open the breaker"
    );
    let r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .header("content-type", "application/json")
        .body(ORDER)
        .send()
        .await
        .expect("post");
    assert_eq!(
        r.status(),
        202,
        "async routes are unaffected by the open breaker"
    );

    // The service comes back on its port: the next trial call closes it.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind the port");
    let legacy = MockServer::builder().listener(listener).start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("back"))
        .mount(&legacy)
        .await;
    wait_until(Duration::from_secs(10), "the breaker closes", || async {
        get().await.0 == 200
    })
    .await
    .expect("a trial call after breaker_open_ms closes the breaker");
    for _ in 0..5 {
        assert_eq!(get().await.0, 200, "closed: every call goes through");
    }
    assert!(
        gw.metric(r#"gateway_request_errors_total{reason="circuit_open",route="get-order",side="upstream"}"#)
            .await
            .expect("metric")
            >= 1.0
    );
}
