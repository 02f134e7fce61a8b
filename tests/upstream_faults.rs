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

/// Overload at four times capacity: `max_in_flight` 8 and a 100 ms legacy
/// service give a capacity of 8 requests at a time; 32 callers keep
/// sending. The excess is shed with 503 + Retry-After at once, the admitted
/// requests keep their latency bounded, and once the load stops every
/// request is served again.
#[tokio::test]
async fn overload_is_shed_with_503_and_admitted_latency_stays_bounded() {
    let legacy = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(100)))
        .mount(&legacy)
        .await;
    let config = routes(&legacy.uri(), "timeout_ms = 2000").replace(
        "max_body_bytes = 4096\n",
        "max_body_bytes = 4096\nmax_in_flight = 8\n",
    );
    assert!(config.contains("max_in_flight = 8"));
    let gw = TestGateway::start(&config).await.expect("gateway starts");

    let per_caller = 20;
    let results = join_all((0..32).map(|c| {
        let gw = &gw;
        async move {
            let mut out = Vec::new();
            for i in 0..per_caller {
                let started = Instant::now();
                let r = gw
                    .http
                    .get(format!("{}/orders/{c}-{i}", gw.base))
                    .send()
                    .await
                    .expect("answered");
                let retry_after = r.headers().contains_key("retry-after");
                out.push((r.status().as_u16(), retry_after, started.elapsed()));
            }
            out
        }
    }))
    .await;
    let all: Vec<_> = results.into_iter().flatten().collect();
    let mut admitted: Vec<Duration> = all
        .iter()
        .filter(|(s, _, _)| *s == 200)
        .map(|(_, _, d)| *d)
        .collect();
    admitted.sort();
    let shed: Vec<_> = all.iter().filter(|(s, _, _)| *s == 503).collect();
    let p99 = admitted[(admitted.len() * 99 / 100).min(admitted.len() - 1)];
    let shed_max = shed.iter().map(|(_, _, d)| *d).max().unwrap_or_default();
    println!(
        "overload[32 callers, capacity 8]: {} admitted (p50 {:?}, p99 {:?}), {} shed (slowest answer {:?})",
        admitted.len(),
        admitted[admitted.len() / 2],
        p99,
        shed.len(),
        shed_max
    );
    assert_eq!(admitted.len() + shed.len(), all.len(), "only 200 or 503");
    assert!(!shed.is_empty(), "the excess is shed");
    assert!(
        shed.iter().all(|(_, retry_after, _)| *retry_after),
        "503 carries Retry-After"
    );
    assert!(
        p99 < Duration::from_secs(1),
        "admitted requests do not queue behind the excess: p99 {p99:?}"
    );
    assert!(
        shed_max < Duration::from_millis(500),
        "shedding answers at once, without waiting for a slot: {shed_max:?}"
    );
    for i in 0..8 {
        let r = gw
            .http
            .get(format!("{}/orders/after-{i}", gw.base))
            .send()
            .await
            .expect("answered");
        assert_eq!(r.status(), 200, "served again once the load stops");
    }
}
