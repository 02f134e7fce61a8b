//! Contract tests per route mode: legacy services are wiremock servers,
//! Kafka is the embedded (in-process mock) cluster.

// Helpers here are test code too: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::time::Duration;

use gateway_tests::{config_text, forbid_calls, topic_count, wait_until, TestGateway};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ORDER: &str = r#"{"orderId":"o-1","customerId":"c-1","items":[{"sku":"A","quantity":1,"unitPriceCents":100}],"totalCents":100}"#;
const USER: &str = r#"{"userId":"u-1","email":"ada@example.com","name":"Ada"}"#;

/// Routes of every mode against one legacy server.
fn shop(legacy: &str) -> String {
    config_text(
        "embedded",
        3000,
        &format!(
            r#"
[upstreams.legacy]
url = "{legacy}"
timeout_ms = 500

[[routes]]
name = "get-order"
method = "GET"
path = "/orders/{{id}}"
upstream = "legacy"
mode = "passthrough"
# A passthrough route may already name its event (ready to flip); it publishes nothing.
topic = "orders.order-viewed"
schema = "com.shop.OrderCreated"
key = "{{id}}"

[[routes]]
name = "create-order"
method = "POST"
path = "/orders"
upstream = "legacy"
mode = "async"
topic = "orders.order-created"
schema = "com.shop.OrderCreated"
key = "/customerId"

[[routes]]
name = "register-user"
method = "POST"
path = "/users"
upstream = "legacy"
mode = "dual-write"
topic = "users.user-registered"
schema = "com.shop.UserRegistered"
key = "/userId"

[[routes]]
name = "upload"
method = "PUT"
path = "/files/{{*rest}}"
upstream = "legacy"
mode = "passthrough"
"#
        ),
    )
}

async fn setup() -> (MockServer, TestGateway) {
    let legacy = MockServer::start().await;
    let gw = TestGateway::start(&shop(&legacy.uri()))
        .await
        .expect("gateway starts");
    (legacy, gw)
}

async fn count(gw: &TestGateway, topic: &str) -> i64 {
    topic_count(&gw.gateway.kafka_bootstrap, topic)
        .await
        .expect("watermarks")
}

#[tokio::test]
async fn passthrough_returns_the_legacy_response_unchanged_and_publishes_nothing() {
    let (legacy, gw) = setup().await;
    Mock::given(method("GET"))
        .and(path("/orders/42"))
        .respond_with(
            ResponseTemplate::new(203)
                .insert_header("x-legacy", "orders-v1")
                .insert_header("cache-control", "no-store")
                .set_body_raw(r#"{"orderId":"42","status":"PAID"}"#, "application/json"),
        )
        .expect(1)
        .mount(&legacy)
        .await;

    let r = gw
        .http
        .get(format!("{}/orders/42?verbose=1", gw.base))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 203);
    assert_eq!(r.headers()["x-legacy"], "orders-v1");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(
        r.text().await.expect("body"),
        r#"{"orderId":"42","status":"PAID"}"#
    );

    let seen = legacy.received_requests().await.expect("recording on");
    assert_eq!(
        seen[0].url.query(),
        Some("verbose=1"),
        "query string is forwarded"
    );
    assert_eq!(count(&gw, "orders.order-viewed").await, 0);
}

#[tokio::test]
async fn dual_write_publishes_exactly_one_event_on_2xx_and_none_on_4xx_or_5xx() {
    let (legacy, gw) = setup().await;
    for (status, expected_events) in [(201, 1), (409, 1), (503, 1), (200, 2)] {
        legacy.verify().await;
        legacy.reset().await;
        Mock::given(method("POST"))
            .and(path("/users"))
            .respond_with(
                ResponseTemplate::new(status).set_body_string(format!("legacy said {status}")),
            )
            .expect(1)
            .mount(&legacy)
            .await;
        let r = gw
            .http
            .post(format!("{}/users", gw.base))
            .header("content-type", "application/json")
            .body(USER)
            .send()
            .await
            .expect("response");
        assert_eq!(r.status(), status, "caller gets the legacy status");
        assert_eq!(
            r.text().await.expect("body"),
            format!("legacy said {status}")
        );
        assert_eq!(
            count(&gw, "users.user-registered").await,
            expected_events,
            "after a legacy {status}"
        );
        let received = legacy.received_requests().await.expect("recording");
        assert_eq!(
            received[0].body,
            USER.as_bytes(),
            "legacy gets the body as sent"
        );
    }
}

#[tokio::test]
async fn async_answers_202_with_location_and_never_calls_the_legacy_service() {
    let (legacy, gw) = setup().await;
    forbid_calls(&legacy).await;

    let r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .header("content-type", "application/json")
        .body(ORDER)
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().expect("ascii").to_string();
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["topic"], "orders.order-created");
    assert!(body["partition"].as_i64().is_some() && body["offset"].as_i64().is_some());
    let id = body["id"].as_str().expect("id");
    assert_eq!(location, format!("/operations/{id}"));
    assert_eq!(count(&gw, "orders.order-created").await, 1);

    let op: Value = gw
        .http
        .get(format!("{}{location}", gw.base))
        .send()
        .await
        .expect("response")
        .json()
        .await
        .expect("json");
    assert_eq!(op["status"], "accepted");
    assert_eq!(op["id"], id);

    let unknown = gw
        .http
        .get(format!("{}/operations/not-an-operation", gw.base))
        .send()
        .await
        .expect("response");
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn invalid_bodies_are_refused_and_publish_nothing() {
    let (legacy, gw) = setup().await;
    forbid_calls(&legacy).await;

    let malformed = gw
        .http
        .post(format!("{}/orders", gw.base))
        .body("{not json")
        .send()
        .await
        .expect("response");
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.headers()["content-type"],
        "application/problem+json"
    );

    let wrong = gw
        .http
        .post(format!("{}/orders", gw.base))
        .body(r#"{"orderId":7,"customerId":"c","items":[{"sku":"A","quantity":"x","unitPriceCents":1}]}"#)
        .send()
        .await
        .expect("response");
    assert_eq!(wrong.status(), 422);
    let problem: Value = wrong.json().await.expect("json");
    let errors = problem["errors"].as_array().expect("errors listed");
    let pointers: Vec<&str> = errors
        .iter()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    assert_eq!(
        pointers,
        vec!["/orderId", "/items/0/quantity", "/totalCents"]
    );
    assert_eq!(errors[0]["expected"], "string");
    assert_eq!(errors[0]["found"], "number 7");
    assert_eq!(problem["route"], "create-order");
    assert_eq!(problem["side"], "client");

    assert_eq!(count(&gw, "orders.order-created").await, 0);
}

#[tokio::test]
async fn idempotency_key_replays_the_first_202_and_publishes_once() {
    let (_legacy, gw) = setup().await;
    let send = |body: &'static str| {
        gw.http
            .post(format!("{}/orders", gw.base))
            .header("idempotency-key", "checkout-123")
            .body(body)
            .send()
    };
    let first: Value = send(ORDER)
        .await
        .expect("first")
        .json()
        .await
        .expect("json");
    let again = send(ORDER).await.expect("again");
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.expect("json");
    assert_eq!(first, again);
    assert_eq!(count(&gw, "orders.order-created").await, 1);

    let other_body = ORDER.replace("c-1", "c-2");
    let other_body: &'static str = Box::leak(other_body.into_boxed_str());
    let conflict = send(other_body).await.expect("conflict");
    assert_eq!(conflict.status(), 409);
    assert_eq!(count(&gw, "orders.order-created").await, 1);
}

#[tokio::test]
async fn hop_by_hop_headers_never_reach_the_legacy_service() {
    let (legacy, gw) = setup().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&legacy)
        .await;
    // Raw HTTP/1.1 so nothing between the test and the gateway rewrites headers.
    let request = "GET /orders/1 HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive, X-Hop\r\n\
         X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\
         X-Hop: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         Proxy-Connection: keep-alive\r\nX-End-To-End: kept\r\n\r\n";
    let response = raw_http(gw.gateway.public_addr, request).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let seen = legacy.received_requests().await.expect("recording");
    let headers = &seen[0].headers;
    for hop in [
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            headers.get(hop).is_none(),
            "{hop} reached the legacy service: {headers:?}"
        );
    }
    assert_eq!(headers["x-end-to-end"], "kept");
    assert_eq!(headers["x-forwarded-host"], "shop.example");
    assert_eq!(
        headers["x-forwarded-for"], "127.0.0.1",
        "a client cannot forge its address"
    );
    assert!(headers.get("forwarded").is_none());
    assert_eq!(headers["x-forwarded-proto"], "http");
}

async fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn unmatched_routes_get_404_and_the_gateway_is_not_an_open_proxy() {
    let (legacy, gw) = setup().await;
    forbid_calls(&legacy).await;
    for (m, p) in [
        ("GET", "/admin"),
        ("DELETE", "/orders/1"),
        ("GET", "/orders"),
    ] {
        let r = gw
            .http
            .request(m.parse().expect("method"), format!("{}{p}", gw.base))
            .send()
            .await
            .expect("response");
        assert_eq!(r.status(), 404, "{m} {p}");
        let problem: Value = r.json().await.expect("problem body");
        assert_eq!(problem["status"], 404);
    }
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_in_every_mode() {
    let (legacy, gw) = setup().await;
    forbid_calls(&legacy).await;
    let big = "x".repeat(5000); // limit is 4096
    for (m, p) in [
        ("POST", "/orders"),
        ("POST", "/users"),
        ("PUT", "/files/a.bin"),
    ] {
        let r = gw
            .http
            .request(m.parse().expect("method"), format!("{}{p}", gw.base))
            .body(big.clone())
            .send()
            .await
            .expect("response");
        assert_eq!(r.status(), 413, "{m} {p}");
    }
    // Streamed without a length: the limit still holds while streaming.
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..5).map(|_| Ok("y".repeat(1000))).collect();
    let r = gw
        .http
        .put(format!("{}/files/stream.bin", gw.base))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn upstream_timeout_is_504_and_unreachable_upstream_is_502() {
    let (legacy, gw) = setup().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&legacy)
        .await;
    let slow = gw
        .http
        .get(format!("{}/orders/slow", gw.base))
        .send()
        .await
        .expect("response");
    assert_eq!(slow.status(), 504);
    let problem: Value = slow.json().await.expect("json");
    assert_eq!(problem["side"], "upstream");
    assert_eq!(problem["retryable"], true);

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let gw2 = TestGateway::start(&shop(&dead))
        .await
        .expect("gateway starts");
    let r = gw2
        .http
        .get(format!("{}/orders/1", gw2.base))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 502);
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["side"], "upstream");
    assert!(gw2.metric("gateway_request_errors_total{reason=\"upstream_connect\",route=\"get-order\",side=\"upstream\"}").await.expect("metrics") >= 1.0);
}

#[tokio::test]
async fn a_reload_with_an_invalid_file_keeps_the_old_table_serving() {
    let (legacy, gw) = setup().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("legacy"))
        .mount(&legacy)
        .await;
    let good = shop(&legacy.uri());

    // Broken: unknown upstream and unknown schema. Written in place, picked up by the watcher.
    let broken = good
        .replace(
            "upstream = \"legacy\"\nmode = \"async\"",
            "upstream = \"nowhere\"\nmode = \"async\"",
        )
        .replace("com.shop.UserRegistered", "com.shop.Nope");
    std::fs::write(gw.config_path(), &broken).expect("write");
    wait_until(Duration::from_secs(10), "reload error reported", || async {
        gw.admin_routes()
            .await
            .map(|r| !r["last_reload_error"].is_null())
            .unwrap_or(false)
    })
    .await
    .expect("refused reload is visible");
    let routes = gw.admin_routes().await.expect("routes");
    let problems = routes["last_reload_error"]["problems"].to_string();
    assert!(
        problems.contains("create-order") && problems.contains("nowhere"),
        "{problems}"
    );
    assert!(
        problems.contains("register-user") && problems.contains("com.shop.Nope"),
        "{problems}"
    );

    // Old table still serves every route.
    let r = gw
        .http
        .get(format!("{}/orders/1", gw.base))
        .send()
        .await
        .expect("response");
    assert_eq!(r.text().await.expect("body"), "legacy");
    let r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .body(ORDER)
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 202);

    // A good file flips a route live: create-order goes back to passthrough.
    let flipped = good.replace("mode = \"async\"", "mode = \"passthrough\"");
    std::fs::write(gw.config_path(), &flipped).expect("write");
    gw.gateway.reload().await.expect("valid file reloads");
    assert_eq!(
        gw.route_mode("create-order")
            .await
            .expect("routes")
            .as_deref(),
        Some("passthrough")
    );
    assert!(gw.admin_routes().await.expect("routes")["last_reload_error"].is_null());
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_string("legacy created"))
        .mount(&legacy)
        .await;
    let r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .body(ORDER)
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn admin_port_reports_health_readiness_routes_metrics_and_schemas() {
    let (_legacy, gw) = setup().await;
    let health = gw
        .http
        .get(format!("{}/healthz", gw.admin))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = gw
        .http
        .get(format!("{}/readyz", gw.admin))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);

    let r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .body(ORDER)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    let published = gw
        .metric(
            "gateway_events_published_total{route=\"create-order\",topic=\"orders.order-created\"}",
        )
        .await
        .expect("metrics");
    assert_eq!(published, 1.0);
    let requests = gw
        .metric("gateway_requests_total{mode=\"async\",route=\"create-order\",status=\"202\"}")
        .await
        .expect("metrics");
    assert_eq!(requests, 1.0);

    let id = gw.schema_id("create-order").await.expect("schema id");
    let schema: Value = gw
        .http
        .get(format!("{}/schemas/ids/{id}", gw.admin))
        .send()
        .await
        .expect("schema")
        .json()
        .await
        .expect("json");
    let text = schema["schema"].as_str().expect("schema string");
    let parsed: Value = serde_json::from_str(text).expect("schema is JSON");
    assert_eq!(
        (parsed["namespace"].as_str(), parsed["name"].as_str()),
        (Some("com.shop"), Some("OrderCreated"))
    );
    let missing = gw
        .http
        .get(format!("{}/schemas/ids/1", gw.admin))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.expect("json")["error_code"],
        json!(40403)
    );
}

#[tokio::test]
async fn a_fallback_upstream_receives_unmatched_requests() {
    let legacy = MockServer::start().await;
    let catch_all = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/legacy/anything"))
        .respond_with(ResponseTemplate::new(200).set_body_string("from the monolith"))
        .expect(1)
        .mount(&catch_all)
        .await;
    let config = format!(
        "{}\n[upstreams.monolith]\nurl = \"{}\"\n\n[fallback]\nupstream = \"monolith\"\n",
        shop(&legacy.uri()),
        catch_all.uri()
    );
    let gw = TestGateway::start(&config).await.expect("gateway starts");
    let r = gw
        .http
        .get(format!("{}/legacy/anything", gw.base))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "from the monolith");
}

#[tokio::test]
async fn with_a_schema_registry_the_registered_id_frames_the_event() {
    let legacy = MockServer::start().await;
    let registry = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/subjects/orders.order-created-value/versions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 4711})))
        .expect(1)
        .mount(&registry)
        .await;
    Mock::given(method("POST"))
        .and(path("/subjects/users.user-registered-value/versions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 4712})))
        .expect(1)
        .mount(&registry)
        .await;
    // The registry URL goes at the end of the [schemas] table, just before [spool].
    let config = shop(&legacy.uri()).replace(
        "\n[spool]",
        &format!("registry = \"{}\"\n\n[spool]", registry.uri()),
    );
    let gw = TestGateway::start(&config).await.expect("gateway starts");
    assert_eq!(gw.schema_id("create-order").await.expect("id"), 4711);
    assert_eq!(gw.schema_id("register-user").await.expect("id"), 4712);

    let received = registry.received_requests().await.expect("recording");
    let sent: Value = serde_json::from_slice(&received[0].body).expect("json");
    let schema: Value = serde_json::from_str(sent["schema"].as_str().expect("schema string"))
        .expect("schema is JSON");
    assert_eq!(
        schema["namespace"], "com.shop",
        "the schema is registered as written"
    );
    assert!(
        schema.to_string().contains("\"default\""),
        "defaults are kept: {schema}"
    );

    let r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .body(ORDER)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    let records = gateway_tests::read_topic(&gw.gateway.kafka_bootstrap, "orders.order-created")
        .await
        .expect("topic");
    assert_eq!(records.len(), 1);
    assert_eq!(
        &records[0].value[..5],
        &[0, 0, 0, 0x12, 0x67],
        "magic byte + id 4711"
    );
}

#[tokio::test]
async fn an_unreachable_registry_fails_start_with_the_route_named() {
    let legacy = MockServer::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let config = shop(&legacy.uri()).replace(
        "\n[spool]",
        &format!("registry = \"{dead}\"\nregistry_timeout_ms = 500\n\n[spool]"),
    );
    let err = TestGateway::start(&config)
        .await
        .err()
        .expect("must not start");
    let text = err.to_string();
    assert!(
        text.contains("route create-order: schema registry"),
        "{text}"
    );
    assert!(
        text.contains("route register-user: schema registry"),
        "{text}"
    );
}

#[tokio::test]
async fn a_body_that_arrives_too_slowly_gets_408_and_publishes_nothing() {
    let legacy = MockServer::start().await;
    let config = shop(&legacy.uri()).replace(
        "max_body_bytes = 4096",
        "max_body_bytes = 4096\nbody_read_timeout_ms = 300",
    );
    let gw = TestGateway::start(&config).await.expect("gateway starts");
    // Announce 100 bytes, send 10, then stall.
    let request = "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"orderId\"";
    let response = raw_http(gw.gateway.public_addr, request).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert_eq!(count(&gw, "orders.order-created").await, 0);
}

#[tokio::test]
async fn past_max_in_flight_requests_are_shed_with_503_and_retry_after() {
    let legacy = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .mount(&legacy)
        .await;
    let config = shop(&legacy.uri())
        .replace(
            "max_body_bytes = 4096",
            "max_body_bytes = 4096\nmax_in_flight = 1\nretry_after_secs = 2",
        )
        .replace("timeout_ms = 500", "timeout_ms = 10000");
    let gw = TestGateway::start(&config).await.expect("gateway starts");
    let first = tokio::spawn({
        let (http, url) = (gw.http.clone(), format!("{}/orders/1", gw.base));
        async move { http.get(url).send().await.map(|r| r.status()) }
    });
    wait_until(
        Duration::from_secs(5),
        "first request reaches the legacy service",
        || async {
            legacy
                .received_requests()
                .await
                .is_some_and(|r| !r.is_empty())
        },
    )
    .await
    .expect("first request in flight");
    let shed = gw
        .http
        .get(format!("{}/orders/2", gw.base))
        .send()
        .await
        .expect("response");
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "2");
    let problem: Value = shed.json().await.expect("problem");
    assert_eq!(problem["retryable"], true);
    assert_eq!(first.await.expect("task").expect("first response"), 200);
}

#[tokio::test]
async fn dot_segments_and_encoded_separators_never_reach_the_legacy_service() {
    let (legacy, gw) = setup().await;
    forbid_calls(&legacy).await;
    for p in [
        "/files/../admin/x",
        "/files/%2e%2E/admin",
        "/files/a%2Fb",
        "/orders/..",
        "/files/./x",
    ] {
        let request = format!("PUT {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        let response = raw_http(gw.gateway.public_addr, &request).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{p}: {response}");
    }
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_publish_once() {
    let (_legacy, gw) = setup().await;
    let sends = (0..8).map(|_| {
        gw.http
            .post(format!("{}/orders", gw.base))
            .header("idempotency-key", "double-click")
            .body(ORDER)
            .send()
    });
    let responses = futures::future::join_all(sends).await;
    let mut bodies = Vec::new();
    for r in responses {
        let r = r.expect("response");
        assert_eq!(r.status(), 202);
        bodies.push(r.json::<Value>().await.expect("json"));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:#?}");
    assert_eq!(count(&gw, "orders.order-created").await, 1);
}

#[tokio::test]
async fn check_reads_the_registry_but_never_registers() {
    let legacy = MockServer::start().await;
    let registry = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/subjects/orders.order-created-value"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 9, "version": 1})))
        .mount(&registry)
        .await;
    Mock::given(method("POST"))
        .and(path("/subjects/users.user-registered-value"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error_code": 40401})))
        .mount(&registry)
        .await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path_regex("^/subjects/.*/versions$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 1})))
        .expect(0)
        .mount(&registry)
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("routes.toml");
    let config = shop(&legacy.uri()).replace(
        "\n[spool]",
        &format!("registry = \"{}\"\n\n[spool]", registry.uri()),
    );
    std::fs::write(&file, config).expect("write");
    let routes = gateway::server::check(&file).await.expect("valid");
    assert_eq!(routes, 4);
}
