//! Reliability under load and faults, against the real Kafka broker. Every
//! request carries a unique id (the event key); afterwards each case reads
//! its topics back and reconciles them against what the callers were told,
//! prints its figures, and asserts its pass criterion:
//!
//! - no acknowledged request (202 on async, 2xx on dual-write) missing from
//!   Kafka, none there twice;
//! - nothing published for a request that was refused (422).
//!
//! The broker-fault case runs its own broker (`KAFKA_FAULT_PORT`, default
//! 19292) so it can kill it without disturbing the other tests.

#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_tests::{
    config_text, read_topic, unique_topic, wait_until, PrivateBroker, TestGateway,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The cases load the machine and two of them run a broker of their own:
/// one at a time, so they measure faults, not each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn routes(legacy: &str, orders: &str, users: &str) -> String {
    gateway_tests::shop_routes(legacy, orders, users)
}

async fn legacy() -> MockServer {
    let legacy = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/users"))
        .respond_with(ResponseTemplate::new(201).set_body_string("created"))
        .mount(&legacy)
        .await;
    legacy
}

/// What one request was: its id, the route, and whether its body was valid.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Order,
    User,
    /// An order the schema refuses (no `items`, no `totalCents`).
    BadOrder,
}

fn request(gw: &TestGateway, kind: Kind, id: &str) -> reqwest::RequestBuilder {
    let (route, body) = match kind {
        Kind::Order => (
            "orders",
            format!(r#"{{"orderId":"o-{id}","customerId":"{id}","items":[],"totalCents":1}}"#),
        ),
        Kind::BadOrder => (
            "orders",
            format!(r#"{{"orderId":"o-{id}","customerId":"{id}"}}"#),
        ),
        Kind::User => (
            "users",
            format!(r#"{{"userId":"{id}","email":"{id}@example.com","name":"U {id}"}}"#),
        ),
    };
    gw.http
        .post(format!("{}/{route}", gw.base))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(30))
        .body(body)
}

/// Outcome of one request: the status, or 0 when the call itself failed.
#[derive(Default)]
struct Ledger {
    sent: BTreeMap<String, (Kind, u16)>,
    /// Statuses in the order the answers came.
    order: Vec<(Kind, u16)>,
    retry_after_missing: usize,
}

/// `workers` callers, each sending one request after another (a mix of
/// orders, users and refused orders) until `stop` is set.
fn load(
    gw: &Arc<TestGateway>,
    workers: usize,
    stop: &Arc<AtomicBool>,
    ledger: &Arc<Mutex<Ledger>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|w| {
            let (gw, stop, ledger) = (Arc::clone(gw), Arc::clone(stop), Arc::clone(ledger));
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let id = format!("w{w}-{n}");
                    let kind = match n % 10 {
                        0 => Kind::BadOrder,
                        1..=5 => Kind::Order,
                        _ => Kind::User,
                    };
                    let (status, retry_after) = match request(&gw, kind, &id).send().await {
                        Ok(r) => (r.status().as_u16(), r.headers().contains_key("retry-after")),
                        Err(_) => (0, false),
                    };
                    let mut l = ledger.lock().expect("ledger");
                    if status == 503 && !retry_after {
                        l.retry_after_missing += 1;
                    }
                    l.sent.insert(id, (kind, status));
                    l.order.push((kind, status));
                }
            })
        })
        .collect()
}

/// The figures of one reconciliation.
#[derive(Debug, Default)]
struct Figures {
    sent: usize,
    acknowledged: usize,
    refused_503: usize,
    rejected_422: usize,
    failed_calls: usize,
    found: usize,
    lost: Vec<String>,
    duplicated: Vec<String>,
    published_but_rejected: Vec<String>,
    /// Events of requests answered 503 that are in Kafka anyway (a publish
    /// that timed out for the caller but reached the broker).
    published_after_503: usize,
    /// The CloudEvents ids found per request id.
    event_ids: BTreeMap<String, BTreeSet<String>>,
}

impl Figures {
    /// Duplicates that are not copies of one event (another `ce_id`), which
    /// a consumer deduplicating by event id could not recognise.
    fn distinct_duplicates(&self) -> Vec<&String> {
        self.duplicated
            .iter()
            .filter(|id| self.event_ids.get(*id).is_none_or(|ids| ids.len() != 1))
            .collect()
    }
}

async fn reconcile(bootstrap: &str, orders: &str, users: &str, ledger: &Ledger) -> Figures {
    let mut counts: BTreeMap<(bool, String), usize> = BTreeMap::new();
    let mut event_ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (is_order, topic) in [(true, orders), (false, users)] {
        for r in read_topic(bootstrap, topic).await.expect("read topic") {
            let id = r.header("ce_id").unwrap_or_default().to_string();
            let key = r.key.expect("every event is keyed");
            event_ids.entry(key.clone()).or_default().insert(id);
            *counts.entry((is_order, key)).or_default() += 1;
        }
    }
    let mut f = Figures {
        event_ids,
        sent: ledger.sent.len(),
        found: counts.values().sum(),
        ..Figures::default()
    };
    for (id, (kind, status)) in &ledger.sent {
        let here = counts
            .get(&(matches!(kind, Kind::Order | Kind::BadOrder), id.clone()))
            .copied()
            .unwrap_or(0);
        let acked = match kind {
            Kind::Order | Kind::BadOrder => *status == 202,
            Kind::User => (200..300).contains(status),
        };
        match *status {
            503 => f.refused_503 += 1,
            422 => f.rejected_422 += 1,
            0 => f.failed_calls += 1,
            _ => {}
        }
        if acked {
            f.acknowledged += 1;
            match here {
                0 => f.lost.push(id.clone()),
                1 => {}
                _ => f.duplicated.push(id.clone()),
            }
        } else if *status == 422 && here > 0 {
            f.published_but_rejected.push(id.clone());
        } else if *status == 503 && here > 0 {
            f.published_after_503 += 1;
        }
    }
    f
}

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn print(case: &str, f: &Figures) {
    let rss = rss_kb("VmHWM:");
    println!(
        "reliability[{case}]: sent {} acknowledged {} found-in-kafka {} lost {} duplicated {} \
         refused-503 {} rejected-422 {} published-for-rejected {} published-after-503 {} \
         failed-calls {} peak-rss-kb(test process, gateway in-process) {rss}",
        f.sent,
        f.acknowledged,
        f.found,
        f.lost.len(),
        f.duplicated.len(),
        f.refused_503,
        f.rejected_422,
        f.published_but_rejected.len(),
        f.published_after_503,
        f.failed_calls,
    );
}

/// After a fault is lifted: the load goes on until async requests are
/// accepted again (`at_least` more answers, recent orders getting 202),
/// then the callers stop, the dual-write spool drains, and the topics are
/// reconciled with what the callers were told.
struct Recovery {
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    answered_before: usize,
    at_least: usize,
    within: Duration,
}

async fn recover_and_reconcile(
    gw: &TestGateway,
    r: Recovery,
    (bootstrap, orders, users): (&str, &str, &str),
) -> (Ledger, Figures) {
    let Recovery {
        ledger,
        stop,
        workers,
        answered_before,
        at_least,
        within,
    } = r;
    wait_until(
        within,
        "async requests accepted again after the fault",
        || {
            let ledger = Arc::clone(&ledger);
            async move {
                let l = ledger.lock().expect("ledger");
                l.order.len() > answered_before + at_least
                    && l.order
                        .iter()
                        .rev()
                        .take(50)
                        .filter(|(k, s)| *k == Kind::Order && *s == 202)
                        .count()
                        > 5
            }
        },
    )
    .await
    .expect("the gateway recovers by itself, without a restart");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    wait_until(Duration::from_secs(90), "the spool drains", || async {
        gw.metric("gateway_spool_depth")
            .await
            .map(|d| d == 0.0)
            .unwrap_or(false)
    })
    .await
    .expect("spool drains");
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    let f = reconcile(bootstrap, orders, users, &ledger).await;
    (ledger, f)
}

/// What every broker fault must leave: nothing acknowledged lost, duplicates
/// only as copies of one event, nothing published for a 422, every 503 with
/// Retry-After, every call answered.
fn assert_nothing_lost_after_a_fault(f: &Figures, ledger: &Ledger) {
    assert!(
        f.lost.is_empty(),
        "acknowledged but not in Kafka: {:?}",
        f.lost
    );
    // A publish that timed out for the caller while the broker was failing
    // may still have been written; the dual-write spool then publishes the
    // same event (same ce_id) again: at least once, deduplicable by id.
    assert!(
        f.distinct_duplicates().is_empty(),
        "duplicates that are different events: {:?}",
        f.distinct_duplicates()
    );
    assert!(
        f.published_but_rejected.is_empty(),
        "published although refused: {:?}",
        f.published_but_rejected
    );
    assert_eq!(
        ledger.retry_after_missing, 0,
        "every 503 carries Retry-After"
    );
    assert_eq!(f.failed_calls, 0, "every call got an answer");
}

/// Many concurrent callers on async and dual-write routes: every
/// acknowledged request is in Kafka exactly once, refused ones are not.
#[tokio::test]
async fn no_acknowledged_request_is_lost_or_duplicated_under_load() {
    let _one = ONE_AT_A_TIME.lock().await;
    let bootstrap = bootstrap();
    let legacy = legacy().await;
    let (orders, users) = (unique_topic("rel.orders"), unique_topic("rel.users"));
    let gw = Arc::new(
        TestGateway::start(&config_text(
            &bootstrap,
            10_000,
            &routes(&legacy.uri(), &orders, &users),
        ))
        .await
        .expect("gateway starts against the real broker"),
    );
    let (stop, ledger) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Ledger::default())),
    );
    let started = tokio::time::Instant::now();
    let workers = load(&gw, 64, &stop, &ledger);
    wait_until(Duration::from_secs(60), "3000 requests answered", || {
        let ledger = Arc::clone(&ledger);
        async move { ledger.lock().expect("ledger").sent.len() >= 3000 }
    })
    .await
    .expect("load runs");
    // The soak variant keeps the load up for GATEWAY_SOAK_SECS.
    if let Some(soak) = gateway_tests::soak() {
        tokio::time::sleep(soak.saturating_sub(started.elapsed())).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    let f = reconcile(&bootstrap, &orders, &users, &ledger).await;
    print("load", &f);
    assert!(
        f.lost.is_empty(),
        "acknowledged but not in Kafka: {:?}",
        f.lost
    );
    assert!(
        f.duplicated.is_empty(),
        "in Kafka twice: {:?}",
        f.duplicated
    );
    assert!(
        f.published_but_rejected.is_empty(),
        "published although refused: {:?}",
        f.published_but_rejected
    );
    assert_eq!(
        f.acknowledged + f.rejected_422,
        f.sent,
        "with a healthy broker every request is acknowledged or refused for its body"
    );
    assert_eq!(f.found, f.acknowledged, "nothing else is in the topics");
}

/// The broker is killed (SIGKILL) under load and started again: no 202
/// without an acknowledgement, every acknowledged event present afterwards,
/// 503 with Retry-After during the outage, recovery without restarting the
/// gateway, and the dual-write spool drains.
#[tokio::test]
async fn broker_killed_under_load_loses_no_acknowledged_event_and_recovers() {
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = PrivateBroker::launch("KAFKA_FAULT_PORT", 19292).await;
    let bootstrap = broker.bootstrap();
    let legacy = legacy().await;
    let (orders, users) = ("fault.orders", "fault.users");
    let gw = Arc::new(
        TestGateway::start(&config_text(
            &bootstrap,
            2_000,
            &routes(&legacy.uri(), orders, users),
        ))
        .await
        .expect("gateway starts"),
    );
    let (stop, ledger) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Ledger::default())),
    );
    let workers = load(&gw, 16, &stop, &ledger);
    let answered = |n: usize| {
        let ledger = Arc::clone(&ledger);
        move || {
            let ledger = Arc::clone(&ledger);
            async move { ledger.lock().expect("ledger").sent.len() >= n }
        }
    };
    wait_until(
        Duration::from_secs(60),
        "500 requests before the kill",
        answered(500),
    )
    .await
    .expect("load runs");

    broker.signal("KILL");
    let before_outage = ledger.lock().expect("ledger").sent.len();
    // The outage lasts until 503s have been seen for a while.
    wait_until(Duration::from_secs(60), "503s during the outage", || {
        let ledger = Arc::clone(&ledger);
        async move {
            ledger
                .lock()
                .expect("ledger")
                .sent
                .values()
                .filter(|(_, s)| *s == 503)
                .count()
                >= 50
        }
    })
    .await
    .expect("the gateway refuses async requests while Kafka is gone");

    let broker = tokio::task::spawn_blocking(move || {
        broker.run("start");
        broker
    })
    .await
    .expect("broker thread");
    let restarted = ledger.lock().expect("ledger").sent.len();
    let (ledger, f) = recover_and_reconcile(
        &gw,
        Recovery {
            ledger,
            stop,
            workers,
            answered_before: restarted,
            at_least: 200,
            within: Duration::from_secs(90),
        },
        (&bootstrap, orders, users),
    )
    .await;
    print("broker-kill", &f);
    println!(
        "reliability[broker-kill]: {before_outage} requests before the kill, {restarted} by the restart"
    );
    assert_nothing_lost_after_a_fault(&f, &ledger);
    assert!(f.refused_503 > 0, "the outage was seen");
    drop(broker);
}

/// The broker is frozen (SIGSTOP) for 30 s under load: callers get 503
/// within the publish deadline (at once when the producer queue of
/// `queue_max_messages` is full), memory does not grow with the backlog, and
/// after SIGCONT the gateway recovers by itself; nothing acknowledged is lost.
#[tokio::test]
async fn broker_paused_for_30_s_sheds_with_503_and_recovers_after() {
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = PrivateBroker::launch("KAFKA_PAUSE_PORT", 19392).await;
    let bootstrap = broker.bootstrap();
    let legacy = legacy().await;
    let (orders, users) = ("pause.orders", "pause.users");
    let config = config_text(&bootstrap, 2_000, &routes(&legacy.uri(), orders, users)).replace(
        "publish_timeout_ms = 2000\n",
        "publish_timeout_ms = 2000\nqueue_max_messages = 32\n",
    );
    assert!(config.contains("queue_max_messages = 32"));
    let gw = Arc::new(TestGateway::start(&config).await.expect("gateway starts"));
    let (stop, ledger) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Ledger::default())),
    );
    let workers = load(&gw, 64, &stop, &ledger);
    let count = |ledger: &Arc<Mutex<Ledger>>| ledger.lock().expect("ledger").order.len();
    wait_until(
        Duration::from_secs(60),
        "300 requests before the pause",
        || {
            let ledger = Arc::clone(&ledger);
            async move { count(&ledger) >= 300 }
        },
    )
    .await
    .expect("load runs");

    broker.signal("STOP");
    let paused_at = tokio::time::Instant::now();
    let rss_at_pause = rss_kb("VmRSS:");
    let answered_at_pause = count(&ledger);
    // The fault lasts 30 s; meanwhile the memory of the process is sampled.
    let mut rss_max = rss_at_pause;
    while paused_at.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_max = rss_max.max(rss_kb("VmRSS:"));
    }
    let answered_in_pause = count(&ledger) - answered_at_pause;
    let refused_in_pause = ledger.lock().expect("ledger").order[answered_at_pause..]
        .iter()
        .filter(|(_, s)| *s == 503)
        .count();
    broker.signal("CONT");

    let resumed = count(&ledger);
    let (ledger, f) = recover_and_reconcile(
        &gw,
        Recovery {
            ledger,
            stop,
            workers,
            answered_before: resumed,
            at_least: 100,
            within: Duration::from_secs(60),
        },
        (&bootstrap, orders, users),
    )
    .await;
    print("broker-pause", &f);
    println!(
        "reliability[broker-pause]: during the 30 s pause {answered_in_pause} answered, {refused_in_pause} of them 503; \
         RSS {} MB at the pause, at most {} MB during it",
        rss_at_pause / 1024,
        rss_max / 1024
    );
    assert_nothing_lost_after_a_fault(&f, &ledger);
    assert!(refused_in_pause > 0, "the pause was seen as 503s");
    assert!(
        rss_max < rss_at_pause + 200 * 1024,
        "memory stayed bounded during the pause: {rss_at_pause} kB -> {rss_max} kB"
    );
    drop(broker);
}

/// An async publish that times out while the broker is frozen gets 503, yet
/// the broker may write it once it thaws. A client retrying with its
/// `Idempotency-Key` must then get that event's id, not a second event.
#[tokio::test]
async fn a_retry_after_an_uncertain_503_sends_the_same_event_again() {
    let _one = ONE_AT_A_TIME.lock().await;
    let broker = PrivateBroker::launch("KAFKA_PAUSE_PORT", 19392).await;
    let bootstrap = broker.bootstrap();
    let legacy = legacy().await;
    let (orders, users) = ("uncertain.orders", "uncertain.users");
    let gw = TestGateway::start(&config_text(
        &bootstrap,
        1_500,
        &routes(&legacy.uri(), orders, users),
    ))
    .await
    .expect("gateway starts");
    let post = |key: Option<&str>| {
        let mut r = gw
            .http
            .post(format!("{}/orders", gw.base))
            .header("content-type", "application/json")
            .body(r#"{"orderId":"o-u","customerId":"c-u","items":[],"totalCents":1}"#);
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        r.send()
    };
    // Connected and the topic made: the next produce request goes straight
    // onto the broker's socket.
    assert_eq!(post(None).await.expect("answer").status(), 202);

    broker.signal("STOP");
    let first = post(Some("uncertain-1")).await.expect("answer");
    broker.signal("CONT");
    assert_eq!(first.status(), 503, "no acknowledgement while frozen");
    // The thawed broker writes what it had received.
    let written = || async {
        read_topic(&bootstrap, orders)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.header("idempotency-key") == Some("uncertain-1"))
            .filter_map(|r| r.header("ce_id").map(str::to_string))
            .collect::<Vec<String>>()
    };
    wait_until(
        Duration::from_secs(30),
        "the frozen produce request written",
        || async { !written().await.is_empty() },
    )
    .await
    .expect("the broker wrote the request it held while frozen (the case this test is about)");

    let retry = post(Some("uncertain-1")).await.expect("answer");
    assert_eq!(retry.status(), 202);
    let answer: serde_json::Value = retry.json().await.expect("json");
    let ids: BTreeSet<String> = written().await.into_iter().collect();
    println!(
        "reliability[uncertain-503]: 503 while frozen, event written after the thaw; retry answered 202 with {}, distinct events for the key: {}",
        answer["id"],
        ids.len()
    );
    println!("reliability[uncertain-503]: criterion: one distinct event for the key, and the retry names it");
    assert_eq!(ids.len(), 1, "a second event for one request: {ids:?}");
    assert_eq!(
        answer["id"].as_str(),
        ids.iter().next().map(String::as_str),
        "the retry's 202 names the written event"
    );
    drop(broker);
}
