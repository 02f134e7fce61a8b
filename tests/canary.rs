//! Canary releases through the public and admin ports: shares at each step,
//! stickiness, automatic rollback (candidate upstream failing, Kafka
//! failing), no verdict below `min_requests`, people's actions, and a fleet
//! of two replicas sharing figures and decisions (embedded Kafka, wiremock).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gateway::events::embedded::EmbeddedKafka;
use gateway_tests::{config_text, wait_until, TestGateway};
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKENS: &str = "[tokens]\nalice = \"alice-secret\"\n";
const TOKEN: &str = "alice-secret";
const ROUTE: &str = "checkout";

fn order(customer: &str) -> String {
    json!({
        "orderId": format!("o-{}", uuid::Uuid::new_v4()),
        "customerId": customer,
        "items": [{"sku": "SKU-1", "quantity": 1, "unitPriceCents": 100}],
        "totalCents": 100
    })
    .to_string()
}

/// A checkout route on `legacy` with `canary = { <canary> }`.
fn routes(
    bootstrap: &str,
    publish_timeout_ms: u64,
    legacy: &str,
    candidate: &str,
    canary: &str,
) -> String {
    config_text(
        bootstrap,
        publish_timeout_ms,
        &format!(
            r#"
[upstreams.legacy]
url = "{legacy}"

[upstreams.candidate]
url = "{candidate}"

[[routes]]
name = "{ROUTE}"
method = "POST"
path = "/orders"
upstream = "legacy"
mode = "passthrough"
topic = "orders.order-created"
schema = "com.shop.OrderCreated"
key = "/customerId"
canary = {{ {canary} }}

[admin]
tokens_file = "tokens.toml"
"#
        ),
    )
}

/// An in-process cluster several gateways share, with the gateway's own
/// topics created up front (the mock cluster has no CreateTopics).
fn cluster() -> EmbeddedKafka {
    let topics = [
        "orders.order-created",
        "gateway.control",
        "gateway.audit",
        "gateway.operations",
        "gateway.canary-figures",
    ];
    EmbeddedKafka::start(topics.iter().map(|t| t.to_string()).collect()).expect("kafka")
}

async fn answering(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status).set_body_string("{}"))
        .mount(&server)
        .await;
    server
}

async fn start(config: &str) -> TestGateway {
    let gw = TestGateway::start_with_files(config, &[("tokens.toml", TOKENS)])
        .await
        .expect("gateway starts");
    wait_until(Duration::from_secs(10), "the canary starts", || async {
        view(&gw).await["status"] == "running"
    })
    .await
    .expect("started");
    gw
}

async fn view(gw: &TestGateway) -> Value {
    gw.http
        .get(format!("{}/admin/canary/{ROUTE}", gw.admin))
        .send()
        .await
        .expect("admin answers")
        .json()
        .await
        .expect("json")
}

async fn act(gw: &TestGateway, action: &str) -> (u16, Value) {
    let r = gw
        .admin_write(
            Method::POST,
            &format!("/admin/canary/{ROUTE}/{action}"),
            Some(TOKEN),
        )
        .send()
        .await
        .expect("admin answers");
    (r.status().as_u16(), r.json().await.expect("json"))
}

/// Sends one order; `X-Canary: always` when `force` (the test client is a
/// trusted source). Returns the status.
async fn send(gw: &TestGateway, customer: Option<&str>, force: bool) -> u16 {
    let mut r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .header("content-type", "application/json")
        .body(order(customer.unwrap_or("anonymous")));
    if let Some(c) = customer {
        r = r.header("x-customer-id", c);
    }
    if force {
        r = r.header("x-canary", "always");
    }
    r.send().await.expect("gateway answers").status().as_u16()
}

/// Sends one order per customer, 32 at a time; returns the statuses.
async fn send_all(gw: &TestGateway, customers: &[String], force: bool) -> Vec<u16> {
    futures::stream::iter(customers)
        .map(|c| send(gw, Some(c), force))
        .buffer_unordered(32)
        .collect()
        .await
}

/// Customer ids the server received, in arrival order.
async fn customers_at(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            r.headers
                .get("x-customer-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .collect()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_sends_its_share_of_10000_customers_and_nobody_leaves_the_canary() {
    let (legacy, candidate) = (answering(201).await, answering(201).await);
    let gw = start(&routes(
        "embedded",
        3000,
        &legacy.uri(),
        &candidate.uri(),
        r#"mode = "passthrough", upstream = "candidate", steps = [1, 5, 25, 50, 100], interval = "1h", sticky = "header:X-Customer-Id", min_requests = 100000"#,
    ))
    .await;
    let customers = ids("c", 10_000);
    let mut previous: HashSet<String> = HashSet::new();
    let mut seen = 0;
    for (i, percent) in [1.0, 5.0, 25.0, 50.0, 100.0].into_iter().enumerate() {
        if i > 0 {
            let (status, body) = act(&gw, "promote").await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["percent"], json!(percent), "{body}");
        }
        let statuses = send_all(&gw, &customers, false).await;
        assert!(statuses.iter().all(|s| *s == 201), "every request answered");
        let arrived = customers_at(&candidate).await;
        let now: HashSet<String> = arrived[seen..].iter().cloned().collect();
        assert_eq!(now.len(), arrived.len() - seen, "one request per customer");
        seen = arrived.len();
        let share = now.len() as f64 / customers.len() as f64;
        let p = percent / 100.0;
        let tolerance = 4.0 * (p * (1.0 - p) / customers.len() as f64).sqrt();
        assert!(
            (share - p).abs() <= tolerance,
            "step {percent}%: canary share {share} outside {p} ± {tolerance}"
        );
        assert!(
            previous.is_subset(&now),
            "step {percent}%: customers of the previous step left the canary"
        );
        previous = now;
    }
    assert_eq!(
        gw.metric(r#"gateway_canary_requests_total{arm="canary",outcome="ok",route="checkout"}"#)
            .await
            .expect("metric") as usize,
        seen
    );
    assert_eq!(
        legacy.received_requests().await.unwrap_or_default().len() + seen,
        5 * customers.len()
    );
}

#[tokio::test]
async fn a_customer_always_lands_in_the_same_arm() {
    let (legacy, candidate) = (answering(201).await, answering(201).await);
    let gw = start(&routes(
        "embedded",
        3000,
        &legacy.uri(),
        &candidate.uri(),
        r#"mode = "passthrough", upstream = "candidate", steps = [25], interval = "1h", sticky = "header:X-Customer-Id""#,
    ))
    .await;
    let customers = ids("s", 300);
    for _ in 0..4 {
        send_all(&gw, &customers, false).await;
    }
    let mut arms: HashMap<String, (usize, usize)> = HashMap::new();
    for c in customers_at(&candidate).await {
        arms.entry(c).or_default().0 += 1;
    }
    for c in customers_at(&legacy).await {
        arms.entry(c).or_default().1 += 1;
    }
    assert_eq!(arms.len(), customers.len());
    for (customer, (canary, base)) in &arms {
        assert!(
            (*canary, *base) == (4, 0) || (*canary, *base) == (0, 4),
            "{customer}: {canary} canary, {base} base"
        );
    }
    // Without the sticky header, the base arm.
    for _ in 0..20 {
        assert_eq!(send(&gw, None, false).await, 201);
    }
    assert_eq!(
        legacy.received_requests().await.unwrap_or_default().len(),
        arms.values().map(|a| a.1).sum::<usize>() + 20
    );
}

#[tokio::test]
async fn a_failing_canary_upstream_is_rolled_back_within_the_window_and_stays_back() {
    let (legacy, candidate) = (answering(201).await, answering(500).await);
    let gw = start(&routes(
        "embedded",
        3000,
        &legacy.uri(),
        &candidate.uri(),
        r#"mode = "passthrough", upstream = "candidate", steps = [50, 100], interval = "1h", window = "5s", sticky = "header:X-Customer-Id", min_requests = 20, max_error_rate = 0.05"#,
    ))
    .await;
    let first_failure = Instant::now();
    let mut batch = 0;
    wait_until(Duration::from_secs(10), "the canary rolls back", || {
        batch += 1;
        let customers = ids(&format!("f{batch}"), 40);
        let gw = &gw;
        async move {
            send_all(gw, &customers, false).await;
            view(gw).await["status"] == "rolled-back"
        }
    })
    .await
    .expect("rolled back");
    let took = first_failure.elapsed();
    assert!(
        took <= Duration::from_secs(5),
        "rollback took {took:?}, window is 5s"
    );

    let v = view(&gw).await;
    assert_eq!(v["percent"], json!(0.0));
    let decision = &v["decisions"][0];
    assert_eq!(decision["action"], "rollback");
    assert_eq!(decision["from_percent"], json!(50.0));
    assert!(
        decision["reason"]
            .as_str()
            .is_some_and(|r| r.contains("error rate")),
        "{decision}"
    );
    let failed = decision["figures"]["canary"]["errors"]
        .as_u64()
        .expect("figures");
    assert!(failed >= 20, "{decision}");

    // Every customer is back on the legacy path, and stays there.
    let hits = candidate
        .received_requests()
        .await
        .unwrap_or_default()
        .len();
    let statuses = send_all(&gw, &ids("after", 200), false).await;
    assert!(statuses.iter().all(|s| *s == 201));
    assert_eq!(
        candidate
            .received_requests()
            .await
            .unwrap_or_default()
            .len(),
        hits
    );

    // In the audit trail, with its figures, and counted.
    let audit: Value = gw
        .http
        .get(format!("{}/admin/audit", gw.admin))
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let change = audit["changes"]
        .as_array()
        .and_then(|cs| {
            cs.iter().find(|c| {
                c["source"] == "canary"
                    && c["after"]
                        .as_str()
                        .is_some_and(|a| a.contains("rolled-back"))
            })
        })
        .expect("rollback audited")
        .clone();
    assert!(
        change["detail"]
            .as_str()
            .is_some_and(|d| d.contains("figures")),
        "{change}"
    );
    assert_eq!(
        gw.metric(r#"gateway_canary_decisions_total{action="rollback",route="checkout"}"#)
            .await
            .expect("metric"),
        1.0
    );
    assert_eq!(
        gw.metric(r#"gateway_canary_percent{route="checkout"}"#)
            .await
            .expect("metric"),
        0.0
    );

    // A person resumes it: first step again.
    let (status, body) = act(&gw, "resume").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].clone(), body["percent"].clone()),
        (json!("running"), json!(50.0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_canary_that_cannot_publish_rolls_back_while_the_legacy_arm_keeps_serving() {
    let kafka = cluster();
    let (legacy, candidate) = (answering(201).await, answering(201).await);
    let config = routes(
        kafka.bootstrap(),
        1000,
        &legacy.uri(),
        &candidate.uri(),
        r#"mode = "async", steps = [10, 100], interval = "1h", window = "30s", sticky = "header:X-Customer-Id", min_requests = 10, max_error_rate = 0.2, override_from = ["127.0.0.1", "::1"]"#,
    );
    let gw = start(&config).await;
    // Healthy first: the async arm answers 202.
    assert_eq!(send(&gw, Some("c-1"), true).await, 202);

    kafka.set_down(true).expect("broker down");
    let statuses = send_all(&gw, &ids("k", 12), true).await;
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    wait_until(Duration::from_secs(10), "the canary rolls back", || async {
        view(&gw).await["status"] == "rolled-back"
    })
    .await
    .expect("rolled back while Kafka is down");
    // The legacy arm never depended on Kafka.
    let statuses = send_all(&gw, &ids("l", 50), false).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    // A person can still stop it for good while Kafka is down.
    let (status, body) = act(&gw, "abort").await;
    assert_eq!(
        (status, body["status"].clone()),
        (200, json!("aborted")),
        "{body}"
    );

    // Once Kafka is back, the decisions reach the control topic: a new
    // replica starts with the canary aborted.
    kafka.set_down(false).expect("broker up");
    // A trusted tester can still exercise the new path while it is rolled back.
    wait_until(
        Duration::from_secs(20),
        "the async arm publishes again",
        || async { send(&gw, Some("qa"), true).await == 202 },
    )
    .await
    .expect("publishing again");
    assert_eq!(view(&gw).await["status"], "aborted");
    wait_until(
        Duration::from_secs(30),
        "a new replica sees the rollback",
        || {
            let config = config.clone();
            async move {
                let Ok(other) =
                    TestGateway::start_with_files(&config, &[("tokens.toml", TOKENS)]).await
                else {
                    return false;
                };
                let seen = view(&other).await["status"] == "aborted";
                other.stop().await;
                seen
            }
        },
    )
    .await
    .expect("replicated");
    let _ = candidate;
}

#[tokio::test]
async fn a_hanging_canary_arm_is_rolled_back_from_the_requests_its_callers_gave_up_on() {
    let legacy = answering(201).await;
    let candidate = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&candidate)
        .await;
    let gw = start(&routes(
        "embedded",
        3000,
        &legacy.uri(),
        &candidate.uri(),
        r#"mode = "passthrough", upstream = "candidate", steps = [50], interval = "1h", sticky = "header:X-Customer-Id", min_requests = 10, override_from = ["127.0.0.1", "::1"]"#,
    ))
    .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let calls = (0..12).map(|i| {
        impatient
            .post(format!("{}/orders", gw.base))
            .header("x-customer-id", format!("h-{i}"))
            .header("x-canary", "always")
            .body(order("h"))
            .send()
    });
    let answers = futures::future::join_all(calls).await;
    assert!(answers.iter().all(Result::is_err), "every caller gave up");
    wait_until(Duration::from_secs(10), "the canary rolls back", || async {
        view(&gw).await["status"] == "rolled-back"
    })
    .await
    .expect("rolled back");
    let reason = view(&gw).await["decisions"][0]["reason"].clone();
    assert!(
        reason.as_str().is_some_and(|r| r.contains("12 of 12")),
        "{reason}"
    );
}

#[tokio::test]
async fn nothing_is_decided_below_min_requests() {
    let (legacy, candidate) = (answering(201).await, answering(500).await);
    let gw = start(&routes(
        "embedded",
        3000,
        &legacy.uri(),
        &candidate.uri(),
        r#"mode = "passthrough", upstream = "candidate", steps = [5, 100], interval = "1s", window = "1m", sticky = "header:X-Customer-Id", min_requests = 30, override_from = ["127.0.0.1", "::1"]"#,
    ))
    .await;
    let statuses = send_all(&gw, &ids("m", 10), true).await;
    assert!(statuses.iter().all(|s| *s == 500));
    // Wait for a check taken after the interval ended with all 10 counted.
    let next_step_at: jiff::Timestamp = view(&gw).await["next_step_at"]
        .as_str()
        .expect("running")
        .parse()
        .expect("time");
    wait_until(
        Duration::from_secs(10),
        "a check after the interval",
        || async {
            let v = view(&gw).await;
            let at: Option<jiff::Timestamp> =
                v["last_check"]["at"].as_str().and_then(|t| t.parse().ok());
            at.is_some_and(|at| at > next_step_at) && v["last_check"]["canary"]["requests"] == 10
        },
    )
    .await
    .expect("checked");
    let v = view(&gw).await;
    assert_eq!(v["status"], "running", "{v}");
    assert_eq!(v["percent"], json!(5.0), "{v}");
    assert_eq!(
        v["decisions"].as_array().map(Vec::len),
        Some(1),
        "only the start: {v}"
    );
    assert_eq!(
        v["last_check"]["outcome"],
        "waiting: 10 of 30 canary requests in the window"
    );
    let _ = (legacy, candidate);
}

#[tokio::test]
async fn people_pause_resume_abort_and_promote_through_the_api_with_a_token() {
    let (legacy, candidate) = (answering(201).await, answering(201).await);
    let gw = start(&routes(
        "embedded",
        3000,
        &legacy.uri(),
        &candidate.uri(),
        r#"mode = "passthrough", upstream = "candidate", steps = [1, 5, 25], interval = "1h", sticky = "header:X-Customer-Id""#,
    ))
    .await;
    let path = format!("/admin/canary/{ROUTE}/pause");
    let anonymous = gw
        .admin_write(Method::POST, &path, None)
        .send()
        .await
        .expect("r");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(view(&gw).await["status"], "running");

    let (s, v) = act(&gw, "pause").await;
    assert_eq!(
        (s, v["status"].clone(), v["percent"].clone()),
        (200, json!("paused"), json!(1.0))
    );
    let (s, _) = act(&gw, "pause").await;
    assert_eq!(s, 409, "pausing twice is refused");
    let (s, v) = act(&gw, "resume").await;
    assert_eq!((s, v["status"].clone()), (200, json!("running")));
    let (s, v) = act(&gw, "promote").await;
    assert_eq!((s, v["percent"].clone()), (200, json!(5.0)));
    let (s, v) = act(&gw, "abort").await;
    assert_eq!(
        (s, v["status"].clone(), v["percent"].clone()),
        (200, json!("aborted"), json!(0.0))
    );
    let (s, _) = act(&gw, "promote").await;
    assert_eq!(s, 409, "an aborted canary is resumed, not promoted");
    let (s, _) = act(&gw, "explode").await;
    assert_eq!(s, 404);
    let (s, v) = act(&gw, "resume").await;
    assert_eq!(
        (s, v["status"].clone(), v["percent"].clone()),
        (200, json!("running"), json!(1.0))
    );

    let actions: Vec<String> = view(&gw).await["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| {
            format!(
                "{}:{}",
                d["action"].as_str().unwrap_or("?"),
                d["by"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(
        actions[..5],
        [
            "resume:alice",
            "abort:alice",
            "promote:alice",
            "resume:alice",
            "pause:alice"
        ]
    );
    assert!(actions[5].starts_with("start:"), "{actions:?}");
    let missing = gw
        .http
        .get(format!("{}/admin/canary/nope", gw.admin))
        .send()
        .await
        .expect("r");
    assert_eq!(missing.status(), 404);
    let _ = (legacy, candidate);
}

#[tokio::test]
async fn a_new_release_of_the_canary_starts_over_a_reload_keeps_the_old_one() {
    let (legacy, candidate) = (answering(201).await, answering(201).await);
    let canary = r#"mode = "passthrough", upstream = "candidate", steps = [1, 5, 25], interval = "1h", sticky = "header:X-Customer-Id", release = "r1""#;
    let config = routes("embedded", 3000, &legacy.uri(), &candidate.uri(), canary);
    let gw = start(&config).await;
    act(&gw, "promote").await;
    let reload = |text: String| {
        let gw = &gw;
        async move {
            std::fs::write(gw.config_path(), text).expect("write");
            let r = gw
                .admin_write(Method::POST, "/admin/reload", Some(TOKEN))
                .send()
                .await
                .expect("reload");
            assert_eq!(r.status(), 200);
        }
    };
    // Another key changes: same release, same state.
    reload(config.replace("max_body_bytes = 4096", "max_body_bytes = 8192")).await;
    let v = view(&gw).await;
    assert_eq!(
        (v["percent"].clone(), v["version"].clone()),
        (json!(5.0), json!(2))
    );
    // A new release label: a new canary at its first step.
    reload(config.replace("release = \"r1\"", "release = \"r2\"")).await;
    wait_until(
        Duration::from_secs(10),
        "the new release starts",
        || async { view(&gw).await["version"] == json!(3) },
    )
    .await
    .expect("restarted");
    let v = view(&gw).await;
    assert_eq!(
        (v["status"].clone(), v["percent"].clone()),
        (json!("running"), json!(1.0))
    );
    assert_eq!(v["decisions"].as_array().map(Vec::len), Some(1), "{v}");
    let _ = (legacy, candidate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_steps_up_on_its_joint_figures_and_rolls_back_together() {
    let kafka = cluster();
    let (legacy, candidate) = (answering(201).await, answering(201).await);
    let config = routes(
        kafka.bootstrap(),
        3000,
        &legacy.uri(),
        &candidate.uri(),
        r#"mode = "passthrough", upstream = "candidate", steps = [10, 50, 100], interval = "1s", window = "1m", sticky = "header:X-Customer-Id", min_requests = 40, max_error_rate = 0.1, override_from = ["127.0.0.1", "::1"]"#,
    );
    let a = start(&config).await;
    let b = start(&config).await;
    // 25 canary requests on each: neither replica alone has 40.
    send_all(&a, &ids("a", 25), true).await;
    send_all(&b, &ids("b", 25), true).await;
    for gw in [&a, &b] {
        wait_until(
            Duration::from_secs(20),
            "the fleet steps up to 50%",
            || async { view(gw).await["percent"] == json!(50.0) },
        )
        .await
        .expect("stepped up");
    }
    let v = view(&a).await;
    let step_up = v["decisions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["action"] == "step-up"))
        .expect("step-up decision")
        .clone();
    assert_eq!(step_up["figures"]["replicas"], 2, "{step_up}");
    assert!(
        step_up["figures"]["canary"]["requests"].as_u64() >= Some(40),
        "{step_up}"
    );

    // The candidate breaks; only replica A sees traffic, both roll back.
    candidate.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&candidate)
        .await;
    wait_until(Duration::from_secs(10), "replica A rolls back", || {
        let a = &a;
        async move {
            send_all(a, &ids(&format!("x{}", uuid::Uuid::new_v4()), 20), true).await;
            view(a).await["status"] == "rolled-back"
        }
    })
    .await
    .expect("A rolled back");
    wait_until(Duration::from_secs(10), "replica B follows", || async {
        view(&b).await["status"] == "rolled-back"
    })
    .await
    .expect("B rolled back");
    let (va, vb) = (view(&a).await, view(&b).await);
    assert_eq!(vb["percent"], json!(0.0));
    assert_eq!(vb["decisions"][0]["action"], "rollback");
    assert_eq!(va["version"], vb["version"], "one decision for the fleet");

    // The state outlives a reload and a restart.
    let reloaded = a
        .admin_write(Method::POST, "/admin/reload", Some(TOKEN))
        .send()
        .await
        .expect("reload");
    assert_eq!(reloaded.status(), 200);
    assert_eq!(view(&a).await["status"], "rolled-back");
    let version = view(&a).await["version"].clone();
    a.stop().await;
    let c = TestGateway::start_with_files(&config, &[("tokens.toml", TOKENS)])
        .await
        .expect("restart");
    let v = view(&c).await;
    assert_eq!(
        (v["status"].clone(), v["version"].clone()),
        (json!("rolled-back"), version)
    );
    let _ = legacy;
}
