//! Graceful shutdown under load: `/readyz` turns false first, the listener
//! keeps serving through the delay, in-flight requests finish, and the
//! gateway reports that everything drained. Runs on the embedded Kafka.

#![allow(clippy::expect_used)]

use std::time::Duration;

use gateway_tests::{config_text, wait_until, TestGateway};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn shutdown_turns_readyz_false_first_and_finishes_in_flight_requests() {
    let legacy = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(800)))
        .mount(&legacy)
        .await;
    let gw = TestGateway::start(&config_text(
        "embedded",
        5_000,
        &format!(
            r#"
[upstreams.legacy]
url = "{}"

[[routes]]
name = "get-order"
method = "GET"
path = "/orders/{{id}}"
upstream = "legacy"
mode = "passthrough"
"#,
            legacy.uri()
        ),
    ))
    .await
    .expect("gateway starts");
    let (base, admin, http) = (gw.base.clone(), gw.admin.clone(), gw.http.clone());
    assert_eq!(
        http.get(format!("{admin}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );

    // Requests in flight when shutdown begins.
    let in_flight: Vec<_> = (0..8)
        .map(|i| {
            let r = http.get(format!("{base}/orders/{i}")).send();
            tokio::spawn(async move { r.await.map(|r| r.status().as_u16()) })
        })
        .collect();
    wait_until(
        Duration::from_secs(5),
        "requests reach the legacy service",
        || async { legacy.received_requests().await.unwrap_or_default().len() == 8 },
    )
    .await
    .expect("in flight");

    let shutdown = tokio::spawn(async move {
        gw.gateway
            .shutdown_after(Duration::from_millis(1500), Duration::from_secs(5))
            .await
    });
    // During the delay: not ready, but still serving.
    wait_until(Duration::from_secs(2), "/readyz turns false", || {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            http.get(format!("{admin}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 503)
        }
    })
    .await
    .expect("readyz false during the delay");
    let late = http
        .get(format!("{base}/orders/late"))
        .send()
        .await
        .expect("still accepting during the delay");
    assert_eq!(late.status(), 200);

    for r in in_flight {
        assert_eq!(
            r.await.expect("task").expect("answered"),
            200,
            "no failed request"
        );
    }
    assert!(shutdown.await.expect("shutdown task"), "everything drained");
    assert!(
        http.get(format!("{base}/orders/after"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_err(),
        "the listener is closed after the drain"
    );
}
