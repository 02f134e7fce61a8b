//! Adapters against the real broker: the RFC's temporal-coupling scenario,
//! dead letters and re-drive, operation status, fan-out, crash and resume.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gateway_tests::{config_text, read_topic, unique_topic, wait_until, TestGateway};
use serde_json::Value;
use tokio::sync::watch;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// A shop whose create-order route is async, with adapters delivering
/// `orders` to each given (name, legacy URL).
fn shop(orders: &str, adapters: &[(&str, &str)]) -> String {
    let mut extra = format!(
        r#"
[upstreams.orders]
url = "http://127.0.0.1:9"

[[routes]]
name = "create-order"
method = "POST"
path = "/orders"
upstream = "orders"
mode = "async"
topic = "{orders}"
schema = "com.shop.OrderCreated"
key = "/customerId"
"#
    );
    for (name, url) in adapters {
        extra.push_str(&format!(
            r#"
[upstreams.{name}]
url = "{url}"
timeout_ms = 1000

[[adapters]]
name = "{name}"
topic = "{orders}"
upstream = "{name}"
path = "/inventory/reservations"
max_attempts = 1000
retry_initial_ms = 20
retry_max_ms = 200
"#
        ));
    }
    config_text(&bootstrap(), 10_000, &extra).replace(
        "publish_timeout_ms = 10000\n",
        &format!("publish_timeout_ms = 10000\ncontrol_topic = \"{orders}.control\"\naudit_topic = \"{orders}.audit\"\noperations_topic = \"{orders}.ops\"\ncontrol_replication_factor = 1\n"),
    )
}

fn order(customer: &str, seq: usize) -> String {
    format!(
        r#"{{"orderId":"{customer}-{seq}","customerId":"{customer}","items":[],"totalCents":{seq}}}"#
    )
}

struct RunningAdapter {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start_adapter(gw: &TestGateway, name: &str) -> RunningAdapter {
    let loaded = gateway::config::LoadedConfig::read(&gw.config_path()).expect("config");
    let (stop, rx) = watch::channel(false);
    let (name, bootstrap) = (name.to_string(), bootstrap());
    let task = tokio::spawn(async move {
        gateway::adapter::run(&loaded, &name, &bootstrap, rx)
            .await
            .expect("adapter runs");
    });
    RunningAdapter { stop, task }
}

impl RunningAdapter {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// (idempotency key, orderId, customerId) of every call, in arrival order.
async fn calls(legacy: &MockServer) -> Vec<(String, String, String)> {
    legacy
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.method == http::Method::POST)
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            (
                r.headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
                body["orderId"].as_str().unwrap_or("").to_string(),
                body["customerId"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn orders_are_accepted_while_inventory_is_down_and_delivered_once_in_order_when_it_is_back() {
    let inventory = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&inventory)
        .await;
    let orders = unique_topic("adapters.orders");
    let gw = TestGateway::start(&shop(&orders, &[("inventory", &inventory.uri())]))
        .await
        .expect("gateway");
    let adapter = start_adapter(&gw, "inventory");

    // Inventory is down: the order service keeps accepting orders.
    const CUSTOMERS: usize = 4;
    const PER_CUSTOMER: usize = 15;
    let mut ids = Vec::new();
    for seq in 0..PER_CUSTOMER {
        for c in 0..CUSTOMERS {
            let r = gw
                .http
                .post(format!("{}/orders", gw.base))
                .body(order(&format!("c{c}"), seq))
                .send()
                .await
                .expect("post");
            assert_eq!(r.status(), 202, "accepted while inventory is down");
            ids.push(
                r.json::<Value>().await.expect("json")["id"]
                    .as_str()
                    .expect("id")
                    .to_string(),
            );
        }
    }
    wait_until(
        Duration::from_secs(10),
        "the adapter is retrying against the down service",
        || async { !calls(&inventory).await.is_empty() },
    )
    .await
    .expect("retries");

    // Inventory comes back: the backlog drains.
    inventory.reset().await;
    Mock::given(method("POST"))
        .and(path("/inventory/reservations"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(serde_json::json!({"reserved": true})),
        )
        .mount(&inventory)
        .await;
    let total = CUSTOMERS * PER_CUSTOMER;
    wait_until(
        Duration::from_secs(60),
        "every order reached inventory",
        || async {
            calls(&inventory)
                .await
                .iter()
                .map(|(k, _, _)| k.clone())
                .collect::<BTreeSet<_>>()
                .len()
                >= total
        },
    )
    .await
    .expect("backlog drained");

    let seen = calls(&inventory).await;
    let keys: BTreeSet<&String> = seen.iter().map(|(k, _, _)| k).collect();
    assert_eq!(
        keys.len(),
        total,
        "exactly once in effect: one idempotency key per order"
    );
    assert_eq!(
        keys,
        ids.iter().collect::<BTreeSet<_>>(),
        "the keys are the operation ids"
    );
    // Per customer (the event key), first deliveries arrive in order.
    let mut firsts: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut delivered = BTreeSet::new();
    for (key, order_id, customer) in &seen {
        if delivered.insert(key.clone()) {
            let seq = order_id
                .rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("seq");
            firsts.entry(customer.clone()).or_default().push(seq);
        }
    }
    for (customer, seqs) in &firsts {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{customer}: {seqs:?}");
    }

    // The outcome reaches GET /operations/{id}.
    let op: Value = gw
        .http
        .get(format!("{}/operations/{}", gw.base, ids[0]))
        .header("prefer", "wait=10")
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(op["status"], "completed", "{op}");
    assert_eq!(op["result"]["status"], 201);
    adapter.stop().await;
}

#[tokio::test]
async fn refused_events_go_to_the_dead_letter_topic_and_can_be_re_driven() {
    let inventory = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(serde_json::json!({"customerId": "bad"})))
        .respond_with(ResponseTemplate::new(422).set_body_string("unknown customer"))
        .mount(&inventory)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&inventory)
        .await;
    let orders = unique_topic("adapters.dlq");
    let gw = TestGateway::start(&shop(&orders, &[("inventory", &inventory.uri())]))
        .await
        .expect("gateway");
    let adapter = start_adapter(&gw, "inventory");
    for c in ["good", "bad"] {
        let r = gw
            .http
            .post(format!("{}/orders", gw.base))
            .body(order(c, 1))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 202);
    }
    let dlq = gateway::adapter::dlq_topic(&orders);
    let bootstrap = bootstrap();
    wait_until(
        Duration::from_secs(30),
        "the refused event is dead-lettered",
        || async {
            read_topic(&bootstrap, &dlq)
                .await
                .map(|r| r.len() == 1)
                .unwrap_or(false)
        },
    )
    .await
    .expect("dead letter");
    let letter = &read_topic(&bootstrap, &dlq).await.expect("dlq")[0];
    assert_eq!(letter.key.as_deref(), Some("bad"));
    assert!(letter
        .header("dlq-error")
        .expect("error header")
        .contains("422"));
    assert_eq!(letter.header("dlq-adapter"), Some("inventory"));
    assert!(
        letter.header("ce_id").is_some(),
        "original headers are kept"
    );

    // The customer is fixed; re-driving delivers it.
    inventory.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&inventory)
        .await;
    let loaded = gateway::config::LoadedConfig::read(&gw.config_path()).expect("config");
    let n = gateway::adapter::redrive(&loaded, "inventory", &bootstrap)
        .await
        .expect("redrive");
    assert_eq!(n, 1);
    wait_until(
        Duration::from_secs(30),
        "the re-driven event is delivered",
        || async { calls(&inventory).await.iter().any(|(_, _, c)| c == "bad") },
    )
    .await
    .expect("delivered after re-drive");
    assert_eq!(
        gateway::adapter::redrive(&loaded, "inventory", &bootstrap)
            .await
            .expect("again"),
        0,
        "nothing twice"
    );
    adapter.stop().await;
}

#[tokio::test]
async fn independent_adapters_each_receive_every_event_and_a_restart_loses_nothing() {
    let inventory = MockServer::start().await;
    let notifications = MockServer::start().await;
    for server in [&inventory, &notifications] {
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_millis(20)))
            .mount(server)
            .await;
    }
    let orders = unique_topic("adapters.fanout");
    let gw = TestGateway::start(&shop(
        &orders,
        &[
            ("inventory", &inventory.uri()),
            ("notifications", &notifications.uri()),
        ],
    ))
    .await
    .expect("gateway");
    let first = start_adapter(&gw, "inventory");
    let notify = start_adapter(&gw, "notifications");
    const N: usize = 40;
    for seq in 0..N {
        let r = gw
            .http
            .post(format!("{}/orders", gw.base))
            .body(order(&format!("k{}", seq % 5), seq))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 202);
    }
    // Kill the inventory adapter mid-stream (no graceful stop, offsets not
    // committed), then start it again.
    wait_until(
        Duration::from_secs(30),
        "inventory got some events",
        || async { calls(&inventory).await.len() >= 5 },
    )
    .await
    .expect("progress");
    first.task.abort();
    let _ = first.task.await;
    let again = start_adapter(&gw, "inventory");
    for (name, server) in [("inventory", &inventory), ("notifications", &notifications)] {
        wait_until(Duration::from_secs(60), name, || async {
            calls(server)
                .await
                .iter()
                .map(|(k, _, _)| k.clone())
                .collect::<BTreeSet<_>>()
                .len()
                == N
        })
        .await
        .expect("every event delivered to every adapter");
    }
    again.stop().await;
    notify.stop().await;
}

#[tokio::test]
async fn replay_delivers_a_time_window_to_a_new_service_and_resumes() {
    use gateway::adapter::replay::{run, ReplayRequest, Target};
    let orders = unique_topic("adapters.replay");
    let gw = TestGateway::start(&shop(&orders, &[]))
        .await
        .expect("gateway");
    let post = |customer: &'static str, seq: usize| {
        let (http, base) = (gw.http.clone(), gw.base.clone());
        async move {
            let r = http
                .post(format!("{base}/orders"))
                .body(order(customer, seq))
                .send()
                .await
                .expect("post");
            assert_eq!(r.status(), 202);
        }
    };
    for seq in 0..3 {
        post("old", seq).await;
    }
    // Kafka timestamps have millisecond resolution: make "after" unambiguous.
    let old_last = read_topic(&bootstrap(), &orders)
        .await
        .expect("topic")
        .len();
    assert_eq!(old_last, 3);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let window_start = jiff::Timestamp::now().to_string();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for seq in 0..4 {
        post(if seq % 2 == 0 { "a" } else { "b" }, seq).await;
    }

    let target = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/backfill"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&target)
        .await;
    let loaded = gateway::config::LoadedConfig::read(&gw.config_path()).expect("config");
    let dir = tempfile::tempdir().expect("tempdir");
    let request = |key: Option<&str>, dry_run: bool| ReplayRequest {
        topic: orders.clone(),
        from: window_start.clone(),
        to: None,
        key: key.map(str::to_string),
        target: Target::Http(format!("{}/backfill", target.uri())),
        rate: Some(1000),
        dry_run,
        resume: Some(dir.path().join("progress.json")),
    };

    let dry = run(&loaded, &bootstrap(), request(None, true))
        .await
        .expect("dry run");
    assert_eq!((dry.total, dry.delivered), (4, 4));
    assert!(
        target
            .received_requests()
            .await
            .expect("recording")
            .is_empty(),
        "a dry run delivers nothing"
    );

    let only_a = run(
        &loaded,
        &bootstrap(),
        ReplayRequest {
            resume: None,
            ..request(Some("a"), false)
        },
    )
    .await
    .expect("replay");
    assert_eq!((only_a.delivered, only_a.skipped), (2, 2));

    target.reset().await;
    Mock::given(method("POST"))
        .and(path("/backfill"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&target)
        .await;
    let all = run(&loaded, &bootstrap(), request(None, false))
        .await
        .expect("replay");
    assert_eq!(all.delivered, 4);
    let got = calls(&target).await;
    assert_eq!(got.len(), 4, "only the window: {got:?}");
    assert!(
        got.iter().all(|(k, _, c)| !k.is_empty() && c != "old"),
        "{got:?}"
    );

    // The progress file makes a second run start where the first ended.
    let again = run(&loaded, &bootstrap(), request(None, false))
        .await
        .expect("resume");
    assert_eq!(again.delivered, 0);
}
