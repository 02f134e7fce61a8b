//! End-to-end tests against a real Apache Kafka broker
//! (`tests/kafka/broker.sh start`; `KAFKA_BOOTSTRAP`, default 127.0.0.1:19092).
//! The outage test runs its own second broker so it can stop it.

// Helpers here are test code too: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use gateway_tests::{
    config_text, forbid_calls, read_topic, repo_root, unique_topic, wait_until, PrivateBroker,
    TestGateway,
};
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// Fails loudly when the broker is not there: these tests never fall back.
async fn require_broker(bootstrap: &str) {
    let reachable = gateway_tests::topic_count(bootstrap, "__gateway_probe").await;
    assert!(
        reachable.is_ok(),
        "no Kafka broker answers at {bootstrap}: start one with tests/kafka/broker.sh start ({reachable:?})"
    );
}

fn routes(legacy: &str, async_topic: &str, dual_topic: &str) -> String {
    format!(
        r#"
[upstreams.legacy]
url = "{legacy}"
timeout_ms = 2000

[[routes]]
name = "create-order"
method = "POST"
path = "/orders"
upstream = "legacy"
mode = "async"
topic = "{async_topic}"
schema = "com.shop.OrderCreated"
key = "/customerId"

[[routes]]
name = "register-user"
method = "POST"
path = "/users"
upstream = "legacy"
mode = "dual-write"
topic = "{dual_topic}"
schema = "com.shop.UserRegistered"
key = "/userId"
"#
    )
}

fn user(id: &str) -> String {
    format!(r#"{{"userId":"{id}","email":"{id}@example.com","name":"User {id}"}}"#)
}

fn decode(gw: &TestGateway, route_schema: &str, value: &[u8]) -> (u32, Value) {
    let (id, datum) = gateway::schema::confluent_unframe(value).expect("Confluent framing");
    let catalog = gateway::schema::Catalog::load(&repo_root().join("schemas")).expect("catalog");
    let schema = catalog.get(route_schema).expect("schema in catalog");
    let decoded = schema
        .decode(datum)
        .expect("Avro datum decodes with the route's schema");
    let _ = gw;
    (id, Value::try_from(decoded).expect("JSON"))
}

#[tokio::test]
async fn async_event_reaches_the_real_broker_framed_keyed_and_with_cloudevents_headers() {
    let bootstrap = bootstrap();
    require_broker(&bootstrap).await;
    let legacy = MockServer::start().await;
    forbid_calls(&legacy).await;
    let topic = unique_topic("e2e.orders");
    let gw = TestGateway::start(&config_text(
        &bootstrap,
        10_000,
        &routes(&legacy.uri(), &topic, "unused"),
    ))
    .await
    .expect("gateway starts");

    let r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("idempotency-key", "order-o-77")
        .body(r#"{"orderId":"o-77","customerId":"c-42","items":[{"sku":"SKU-9","quantity":3,"unitPriceCents":250}],"totalCents":750}"#)
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.expect("json");

    let records = read_topic(&bootstrap, &topic)
        .await
        .expect("topic readable");
    assert_eq!(records.len(), 1, "exactly one event");
    let rec = &records[0];
    assert_eq!(
        i64::from(rec.partition),
        accepted["partition"].as_i64().expect("partition")
    );
    assert_eq!(rec.offset, accepted["offset"].as_i64().expect("offset"));
    assert_eq!(rec.key.as_deref(), Some("c-42"));
    assert_eq!(rec.value[0], 0, "magic byte");

    let (schema_id, fields) = decode(&gw, "com.shop.OrderCreated", &rec.value);
    assert_eq!(
        schema_id,
        gw.schema_id("create-order").await.expect("schema id")
    );
    assert_eq!(fields["orderId"], "o-77");
    assert_eq!(fields["items"][0]["quantity"], 3);
    assert_eq!(fields["currency"], "EUR", "schema default filled");
    assert_eq!(fields["couponCode"], Value::Null);

    assert_eq!(rec.header("ce_specversion"), Some("1.0"));
    assert_eq!(rec.header("ce_id"), accepted["id"].as_str());
    assert_eq!(rec.header("ce_type"), Some("com.shop.OrderCreated"));
    assert_eq!(rec.header("ce_source"), Some("create-order"));
    assert_eq!(rec.header("content-type"), Some("application/avro"));
    assert_eq!(rec.header("idempotency-key"), Some("order-o-77"));
    assert_eq!(
        rec.header("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    let time = rec.header("ce_time").expect("ce_time");
    assert!(
        time.parse::<jiff::Timestamp>().is_ok(),
        "ce_time is RFC 3339: {time}"
    );
}

#[tokio::test]
async fn dual_write_event_reaches_the_real_broker_only_for_2xx() {
    let bootstrap = bootstrap();
    require_broker(&bootstrap).await;
    let legacy = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/users"))
        .respond_with(ResponseTemplate::new(201).set_body_string("created by legacy"))
        .up_to_n_times(1)
        .mount(&legacy)
        .await;
    Mock::given(method("POST"))
        .and(path("/users"))
        .respond_with(ResponseTemplate::new(422).set_body_string("legacy refused"))
        .mount(&legacy)
        .await;
    let topic = unique_topic("e2e.users");
    let gw = TestGateway::start(&config_text(
        &bootstrap,
        10_000,
        &routes(&legacy.uri(), "unused", &topic),
    ))
    .await
    .expect("gateway starts");

    for (id, status, body) in [
        ("u-1", 201, "created by legacy"),
        ("u-2", 422, "legacy refused"),
    ] {
        let r = gw
            .http
            .post(format!("{}/users", gw.base))
            .body(user(id))
            .send()
            .await
            .expect("response");
        assert_eq!(r.status(), status);
        assert_eq!(r.text().await.expect("body"), body);
    }
    let records = read_topic(&bootstrap, &topic)
        .await
        .expect("topic readable");
    assert_eq!(records.len(), 1, "only the 2xx produced an event");
    assert_eq!(records[0].key.as_deref(), Some("u-1"));
    let (id, fields) = decode(&gw, "com.shop.UserRegistered", &records[0].value);
    assert_eq!(id, gw.schema_id("register-user").await.expect("schema id"));
    assert_eq!(fields["email"], "u-1@example.com");
    assert_eq!(fields["marketingOptIn"], false);
    assert_eq!(records[0].header("ce_source"), Some("register-user"));
}

#[tokio::test]
async fn broker_outage_async_refuses_dual_write_spools_and_delivers_after_recovery() {
    require_broker(&bootstrap()).await;
    let broker = PrivateBroker::launch("KAFKA_OUTAGE_PORT", 19192).await;
    let bootstrap = broker.bootstrap();

    let legacy = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/users"))
        .respond_with(ResponseTemplate::new(201).set_body_string("legacy ok"))
        .mount(&legacy)
        .await;
    let (orders, users) = ("outage.orders", "outage.users");
    let gw = TestGateway::start(&config_text(
        &bootstrap,
        2_000,
        &routes(&legacy.uri(), orders, users),
    ))
    .await
    .expect("gateway starts");
    let order =
        |c: &str| format!(r#"{{"orderId":"o-{c}","customerId":"{c}","items":[],"totalCents":0}}"#);

    // While the broker is up, both modes publish.
    let r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .body(order("before"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    let r = gw
        .http
        .post(format!("{}/users", gw.base))
        .body(user("before"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);

    let broker = tokio::task::spawn_blocking(move || {
        broker.run("stop");
        broker
    })
    .await
    .expect("broker thread");

    let ready = gw
        .http
        .get(format!("{}/readyz", gw.admin))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503, "not ready without Kafka");

    let r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .body(order("during"))
        .send()
        .await
        .expect("post");
    assert_eq!(
        r.status(),
        503,
        "async never answers 202 without an acknowledgement"
    );
    assert!(r.headers().contains_key("retry-after"));
    let problem: Value = r.json().await.expect("problem");
    assert_eq!(problem["topic"], orders);
    assert_eq!(problem["side"], "kafka");

    let r = gw
        .http
        .post(format!("{}/users", gw.base))
        .body(user("during"))
        .send()
        .await
        .expect("post");
    assert_eq!(
        r.status(),
        201,
        "dual-write still answers with the legacy response"
    );
    assert_eq!(r.text().await.expect("body"), "legacy ok");
    let spooled = gw
        .metric("gateway_events_spooled_total{route=\"register-user\"}")
        .await
        .expect("metrics");
    assert_eq!(spooled, 1.0);
    assert_eq!(
        gw.metric("gateway_spool_depth").await.expect("metrics"),
        1.0
    );

    let _broker = tokio::task::spawn_blocking(move || {
        broker.run("start");
        broker
    })
    .await
    .expect("broker thread");

    wait_until(
        Duration::from_secs(60),
        "spool drained after the broker is back",
        || async {
            gw.metric("gateway_spool_depth")
                .await
                .map(|d| d == 0.0)
                .unwrap_or(false)
        },
    )
    .await
    .expect("spool drains");
    assert_eq!(
        gw.metric("gateway_events_republished_total{route=\"register-user\"}")
            .await
            .expect("metrics"),
        1.0
    );

    let mut user_keys: Vec<_> = read_topic(&bootstrap, users)
        .await
        .expect("users topic")
        .into_iter()
        .filter_map(|r| r.key)
        .collect();
    user_keys.sort();
    assert_eq!(user_keys, vec!["before".to_string(), "during".to_string()]);
    let order_keys: Vec<_> = read_topic(&bootstrap, orders)
        .await
        .expect("orders topic")
        .into_iter()
        .filter_map(|r| r.key)
        .collect();
    assert_eq!(
        order_keys,
        vec!["before".to_string()],
        "the refused async request published nothing"
    );
}

#[tokio::test]
async fn a_topic_that_cannot_be_created_answers_503_naming_the_topic() {
    let bootstrap = bootstrap();
    require_broker(&bootstrap).await;
    let legacy = MockServer::start().await;
    // Kafka refuses to create a topic whose name collides with an existing
    // one once '.' and '_' are treated alike.
    let existing = unique_topic("e2e_collide").replace(['.', '-'], "_");
    let colliding = existing.replace('_', ".");
    let gw = TestGateway::start(&config_text(
        &bootstrap,
        3_000,
        &routes(&legacy.uri(), &existing, &colliding),
    ))
    .await
    .expect("gateway starts");
    let order = r#"{"orderId":"o","customerId":"c","items":[],"totalCents":0}"#;
    let r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .body(order)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202, "the first topic is auto-created");

    // Flip register-user to async so its publish answers the caller directly.
    let flipped = std::fs::read_to_string(gw.config_path())
        .expect("read")
        .replace("mode = \"dual-write\"", "mode = \"async\"");
    std::fs::write(gw.config_path(), flipped).expect("write");
    gw.gateway.reload().await.expect("reload");
    let r = gw
        .http
        .post(format!("{}/users", gw.base))
        .body(user("x"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let problem: Value = r.json().await.expect("problem");
    assert_eq!(problem["topic"], colliding.as_str());
    assert_eq!(
        problem["type"], "urn:gateway:problem:unknown_topic",
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains(&colliding),
        "{problem}"
    );
    assert_eq!(
        gateway_tests::topic_count(&bootstrap, &colliding)
            .await
            .expect("count"),
        0
    );
}

#[tokio::test]
async fn a_consumer_on_the_older_schema_version_reads_events_of_the_newer_one() {
    let bootstrap = bootstrap();
    require_broker(&bootstrap).await;
    let legacy = MockServer::start().await;
    let topic = unique_topic("e2e.evolve");
    let gw = TestGateway::start(&config_text(
        &bootstrap,
        10_000,
        &routes(&legacy.uri(), &topic, "unused"),
    ))
    .await
    .expect("gateway starts");
    let r = gw
        .http
        .post(format!("{}/orders", gw.base))
        .body(r#"{"orderId":"o-9","customerId":"c-9","items":[{"sku":"S","quantity":1,"unitPriceCents":5}],"totalCents":5,"channel":"APP"}"#)
        .send()
        .await
        .expect("response");
    assert_eq!(
        r.status(),
        202,
        "published with the newest version (v2 has `channel`)"
    );

    let records = read_topic(&bootstrap, &topic)
        .await
        .expect("topic readable");
    let (id, datum) = gateway::schema::confluent_unframe(&records[0].value).expect("framed");
    // The writer's schema, fetched by id the way a registry-aware consumer does.
    let served: Value = gw
        .http
        .get(format!("{}/schemas/ids/{id}", gw.admin))
        .send()
        .await
        .expect("schema by id")
        .json()
        .await
        .expect("json");
    let writer =
        apache_avro::Schema::parse_str(served["schema"].as_str().expect("schema")).expect("writer");
    let v1_text =
        std::fs::read_to_string(repo_root().join("schemas/com.shop.OrderCreated/v1.avsc"))
            .expect("v1");
    let reader = apache_avro::Schema::parse_str(&v1_text).expect("reader");

    let value = apache_avro::reader::datum::GenericDatumReader::builder(&writer)
        .reader_schema(&reader)
        .build()
        .and_then(|r| r.read_value(&mut &datum[..]))
        .expect("v1 reader resolves v2 data");
    let fields = Value::try_from(value).expect("json");
    assert_eq!(fields["orderId"], "o-9");
    assert_eq!(fields["totalCents"], 5);
    assert!(
        fields.get("channel").is_none(),
        "the v1 reader does not see v2's new field: {fields}"
    );
}

const TOKENS: &str = "[tokens]\nops = \"ops-secret\"\n";

/// `routes()` plus a private control/audit topic pair and an admin token.
fn fleet_config(bootstrap: &str, legacy: &str, orders: &str, users: &str, control: &str) -> String {
    config_text(bootstrap, 10_000, &routes(legacy, orders, users))
        .replace(
            "publish_timeout_ms = 10000\n",
            &format!(
                "publish_timeout_ms = 10000\ncontrol_topic = \"{control}\"\naudit_topic = \"{control}.audit\"\ncontrol_replication_factor = 1\n"
            ),
        )
        + "\n[admin]\ntokens_file = \"tokens.toml\"\n"
}

#[tokio::test]
async fn a_flip_on_one_replica_reaches_the_other_and_survives_its_restart() {
    let bootstrap = bootstrap();
    require_broker(&bootstrap).await;
    let legacy = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_string("legacy"))
        .mount(&legacy)
        .await;
    let control = unique_topic("e2e.control");
    let config = fleet_config(
        &bootstrap,
        &legacy.uri(),
        &unique_topic("e2e.o"),
        &unique_topic("e2e.u"),
        &control,
    );
    let a = TestGateway::start_with_files(&config, &[("tokens.toml", TOKENS)])
        .await
        .expect("replica a");
    let b = TestGateway::start_with_files(&config, &[("tokens.toml", TOKENS)])
        .await
        .expect("replica b");
    assert_eq!(
        b.route_mode("register-user")
            .await
            .expect("routes")
            .as_deref(),
        Some("dual-write")
    );

    let r = a
        .admin_write(
            reqwest::Method::PUT,
            "/admin/routes/register-user/mode",
            Some("ops-secret"),
        )
        .json(&serde_json::json!({"mode": "async"}))
        .send()
        .await
        .expect("flip");
    assert_eq!(r.status(), 200);
    wait_until(
        Duration::from_secs(10),
        "replica b applies the flip",
        || async {
            b.route_mode("register-user")
                .await
                .ok()
                .flatten()
                .as_deref()
                == Some("async")
        },
    )
    .await
    .expect("flip replicated");
    let served = b
        .http
        .post(format!("{}/users", b.base))
        .body(user("via-b"))
        .send()
        .await
        .expect("post");
    assert_eq!(served.status(), 202, "replica b serves the flipped mode");

    let audit: Value = b
        .http
        .get(format!("{}/admin/audit", b.admin))
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let first = &audit["changes"][0];
    assert_eq!(
        (first["by"].as_str(), first["source"].as_str()),
        (Some("ops"), Some("replica"))
    );

    // The audit topic keeps every change as an Avro event.
    let audit_schema =
        gateway::schema::EventSchema::parse(gateway::control::audit::AUDIT_SCHEMA, "audit")
            .expect("schema");
    let audit_topic = format!("{control}.audit");
    wait_until(
        Duration::from_secs(10),
        "the flip is on the audit topic",
        || async {
            read_topic(&bootstrap, &audit_topic)
                .await
                .unwrap_or_default()
                .iter()
                .any(|r| {
                    gateway::schema::confluent_unframe(&r.value)
                        .and_then(|(_, d)| audit_schema.decode(d).ok())
                        .and_then(|v| Value::try_from(v).ok())
                        .is_some_and(|v| {
                            v["by"] == "ops" && v["source"] == "api" && v["after"] == "async"
                        })
                })
        },
    )
    .await
    .expect("audited on Kafka");

    // A restarted replica rebuilds its overrides from the control topic before serving.
    let dir = b.stop().await;
    let b = TestGateway::start_in(dir, &config, &[("tokens.toml", TOKENS)])
        .await
        .expect("replica b again");
    assert_eq!(
        b.route_mode("register-user")
            .await
            .expect("routes")
            .as_deref(),
        Some("async")
    );
    drop(a);
}

#[tokio::test]
async fn flipping_between_dual_write_and_async_under_load_loses_and_duplicates_nothing() {
    let bootstrap = bootstrap();
    require_broker(&bootstrap).await;
    let legacy = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_string("legacy"))
        .mount(&legacy)
        .await;
    let users = unique_topic("e2e.flipload");
    let config = fleet_config(
        &bootstrap,
        &legacy.uri(),
        &unique_topic("e2e.o"),
        &users,
        &unique_topic("e2e.control"),
    );
    let gw = TestGateway::start_with_files(&config, &[("tokens.toml", TOKENS)])
        .await
        .expect("gateway");

    const REQUESTS: usize = 300;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (http, admin, done) = (gw.http.clone(), gw.admin.clone(), done.clone());
        tokio::spawn(async move {
            let mut flips = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let mode = if flips % 2 == 0 {
                    "async"
                } else {
                    "dual-write"
                };
                let r = http
                    .put(format!("{admin}/admin/routes/register-user/mode"))
                    .bearer_auth("ops-secret")
                    .json(&serde_json::json!({ "mode": mode }))
                    .send()
                    .await
                    .expect("flip");
                assert_eq!(r.status(), 200);
                flips += 1;
            }
            flips
        })
    };
    let load = futures::stream::iter(0..REQUESTS)
        .map(|i| {
            let (http, base) = (gw.http.clone(), gw.base.clone());
            async move {
                let status = http
                    .post(format!("{base}/users"))
                    .body(user(&format!("load-{i}")))
                    .send()
                    .await
                    .expect("post")
                    .status();
                (format!("load-{i}"), status.as_u16())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.await.expect("flipper");
    assert!(
        flips >= 2,
        "the route was flipped while requests were served ({flips} flips)"
    );

    let mut events: std::collections::HashMap<String, usize> = Default::default();
    for r in read_topic(&bootstrap, &users).await.expect("topic") {
        *events.entry(r.key.unwrap_or_default()).or_default() += 1;
    }
    let mut legacy_calls: std::collections::HashMap<String, usize> = Default::default();
    for req in legacy.received_requests().await.expect("recording") {
        let body: Value = serde_json::from_slice(&req.body).expect("json");
        *legacy_calls
            .entry(body["userId"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    let (mut async_served, mut dual_served) = (0, 0);
    for (id, status) in &load {
        let (e, l) = (
            events.get(id).copied().unwrap_or(0),
            legacy_calls.get(id).copied().unwrap_or(0),
        );
        match status {
            202 => {
                async_served += 1;
                assert_eq!((e, l), (1, 0), "{id}: async = one event, no legacy call");
            }
            201 => {
                dual_served += 1;
                assert_eq!(
                    (e, l),
                    (1, 1),
                    "{id}: dual-write = one legacy call, one event"
                );
            }
            other => panic!("{id}: unexpected status {other}"),
        }
    }
    assert_eq!(
        events.values().sum::<usize>(),
        REQUESTS,
        "no event without a request"
    );
    assert!(
        async_served > 0 && dual_served > 0,
        "both modes served: {async_served} async, {dual_served} dual-write"
    );
}

#[tokio::test]
async fn plan_preconditions_read_topics_and_consumer_groups_from_the_real_broker() {
    use gateway::plan::checks;
    use gateway::plan::Check;
    use rdkafka::consumer::{Consumer, StreamConsumer};

    let bootstrap = bootstrap();
    require_broker(&bootstrap).await;
    let topic = unique_topic("e2e.plan");
    let group = unique_topic("e2e-group");
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("admin client");
    let new_topic =
        rdkafka::admin::NewTopic::new(&topic, 1, rdkafka::admin::TopicReplication::Fixed(1));
    admin
        .create_topics([&new_topic], &rdkafka::admin::AdminOptions::new())
        .await
        .expect("create topic");
    // A member of the group: subscribe and wait until it owns the partition.
    let member: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .create()
        .expect("consumer");
    member.subscribe(&[&topic]).expect("subscribe");
    wait_until(
        Duration::from_secs(30),
        "the consumer joins its group",
        || async {
            let _ = tokio::time::timeout(Duration::from_millis(100), member.recv()).await;
            member.assignment().map(|a| a.count() > 0).unwrap_or(false)
        },
    )
    .await
    .expect("group has a member");

    let loaded =
        gateway::config::LoadedConfig::read(&repo_root().join("routes.toml")).expect("routes");
    let check = |topic: Option<&str>, partitions: Option<i32>, group: Option<&str>| Check {
        topic: topic.map(str::to_string),
        partitions,
        schema: None,
        consumer_group: group.map(str::to_string),
    };
    let outcomes = checks::run(
        &[
            check(Some(&topic), Some(1), None),
            check(Some(&topic), Some(7), None),
            check(None, None, Some(&group)),
            check(None, None, Some("no-such-group-anywhere")),
            check(Some("no.such.topic.anywhere"), None, None),
        ],
        &loaded,
        Some(&bootstrap),
    )
    .await;
    let failures: Vec<Option<String>> = outcomes.iter().map(|o| o.failure.clone()).collect();
    assert_eq!(failures[0], None, "{outcomes:#?}");
    assert!(
        failures[1]
            .as_deref()
            .is_some_and(|f| f.contains("has 1 partitions, the plan expects 7")),
        "{outcomes:#?}"
    );
    assert_eq!(failures[2], None, "{outcomes:#?}");
    assert!(failures[3].is_some(), "{outcomes:#?}");
    assert!(
        failures[4]
            .as_deref()
            .is_some_and(|f| f.contains("does not exist")),
        "{outcomes:#?}"
    );
}

#[tokio::test]
async fn a_checkout_canary_publishes_exactly_its_own_arm_to_the_real_broker_sticky_by_key() {
    let bootstrap = bootstrap();
    require_broker(&bootstrap).await;
    let legacy = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_string("legacy"))
        .mount(&legacy)
        .await;
    let topic = unique_topic("e2e.checkout");
    let control = unique_topic("e2e.control");
    let config = config_text(
        &bootstrap,
        10_000,
        &format!(
            r#"
[upstreams.legacy]
url = "{legacy}"

[[routes]]
name = "checkout"
method = "POST"
path = "/orders"
upstream = "legacy"
mode = "passthrough"
topic = "{topic}"
schema = "com.shop.OrderCreated"
key = "/customerId"
canary = {{ mode = "async", steps = [50], interval = "1h", sticky = "key", min_requests = 100000 }}
"#,
            legacy = legacy.uri()
        ),
    )
    .replace(
        "publish_timeout_ms = 10000\n",
        &format!(
            "publish_timeout_ms = 10000\ncontrol_topic = \"{control}\"\naudit_topic = \"{control}.audit\"\ncanary_figures_topic = \"{control}.figures\"\ncontrol_replication_factor = 1\n"
        ),
    );
    let gw = TestGateway::start(&config).await.expect("gateway");
    wait_until(Duration::from_secs(15), "the canary starts", || async {
        let v: Value = gw
            .http
            .get(format!("{}/admin/canary/checkout", gw.admin))
            .send()
            .await
            .expect("admin")
            .json()
            .await
            .expect("json");
        v["status"] == "running"
    })
    .await
    .expect("started");

    // 40 customers, 5 orders each; the key in the body decides the arm.
    let orders: Vec<(String, String)> = (0..200)
        .map(|i| {
            (
                format!("cust-{}", i % 40),
                format!("order-{i}-{}", uuid::Uuid::new_v4()),
            )
        })
        .collect();
    let answers: Vec<(String, String, u16)> = futures::stream::iter(orders.clone())
        .map(|(customer, order)| {
            let gw = &gw;
            async move {
                let body = format!(
                    r#"{{"orderId":"{order}","customerId":"{customer}","items":[],"totalCents":0}}"#
                );
                let status = gw
                    .http
                    .post(format!("{}/orders", gw.base))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("answer")
                    .status()
                    .as_u16();
                (customer, order, status)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut arm_of: std::collections::HashMap<String, u16> = Default::default();
    for (customer, _, status) in &answers {
        assert!(*status == 201 || *status == 202, "{status}");
        let first = *arm_of.entry(customer.clone()).or_insert(*status);
        assert_eq!(first, *status, "{customer} changed arms");
    }
    let accepted: std::collections::BTreeSet<String> = answers
        .iter()
        .filter(|a| a.2 == 202)
        .map(|a| a.1.clone())
        .collect();
    assert!(
        !accepted.is_empty() && accepted.len() < answers.len(),
        "both arms served: {} of {}",
        accepted.len(),
        answers.len()
    );

    // Kafka holds one event per 202 and nothing for the legacy arm.
    wait_until(
        Duration::from_secs(20),
        "every accepted order in Kafka",
        || async {
            read_topic(&bootstrap, &topic)
                .await
                .is_ok_and(|r| r.len() >= accepted.len())
        },
    )
    .await
    .expect("events");
    let records = read_topic(&bootstrap, &topic).await.expect("records");
    let published: Vec<String> = records
        .iter()
        .map(|r| {
            decode(&gw, "com.shop.OrderCreated", &r.value).1["orderId"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let unique: std::collections::BTreeSet<String> = published.iter().cloned().collect();
    assert_eq!(published.len(), unique.len(), "no duplicates");
    assert_eq!(unique, accepted, "exactly the canary arm's orders");
    for r in &records {
        assert_eq!(arm_of.get(r.key.as_deref().unwrap_or_default()), Some(&202));
    }
    assert_eq!(
        legacy.received_requests().await.unwrap_or_default().len(),
        answers.len() - accepted.len()
    );
}
