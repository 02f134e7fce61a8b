//! A fleet: three gateway processes behind haproxy (Debian's package), on
//! the test broker, restarted one by one (SIGTERM, as a deploy does) under
//! steady load, with a route flip made in the middle of the rolling restart.
//!
//! haproxy checks each replica's `/readyz` every 300 ms and takes it out of
//! rotation at the first failure; the gateways turn `/readyz` false on
//! SIGTERM and keep serving for `GATEWAY_SHUTDOWN_DELAY_SECS` (2 s) before
//! their listeners close, so the balancer has stopped sending first. A
//! connection refused is retried on another replica (`retry-on
//! conn-failure`), which is safe: nothing was sent.
//!
//! Pass criterion, printed with the figures:
//! - zero failed requests: every call through haproxy answered 202;
//! - zero acknowledged events lost: each 202's request id is in the topic;
//! - each stop drained (exit code 0);
//! - the flip made during the rolling restart is in force on all three.

#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_tests::{config_text, free_port, read_topic, unique_topic, wait_until, GatewayProcess};

const TOKEN: &str = "fleet-admin-token";

fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn config(orders: &str, users: &str, control: &str) -> String {
    config_text(
        &bootstrap(),
        10_000,
        &gateway_tests::shop_routes("http://127.0.0.1:9", orders, users),
    )
    .replace(
        "publish_timeout_ms = 10000\n",
        &format!(
            "publish_timeout_ms = 10000\ncontrol_topic = \"{control}\"\naudit_topic = \"{control}.audit\"\noperations_topic = \"{control}.ops\"\ncanary_figures_topic = \"{control}.figures\"\ncontrol_replication_factor = 1\n"
        ),
    )
}

/// haproxy in the foreground, stopped when dropped.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn haproxy(dir: &std::path::Path, port: u16, replicas: &[(u16, u16)]) -> Haproxy {
    let servers: String = replicas
        .iter()
        .enumerate()
        .map(|(i, (public, admin))| {
            format!(
                "  server g{i} 127.0.0.1:{public} check port {admin} inter 300ms fall 1 rise 1\n"
            )
        })
        .collect();
    let cfg = format!(
        r#"global
  maxconn 2000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch 1
  retry-on conn-failure
frontend public
  bind 127.0.0.1:{port}
  default_backend gateways
backend gateways
  balance roundrobin
  option http-server-close
  option httpchk GET /readyz
  http-check expect status 200
{servers}"#
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).expect("write haproxy.cfg");
    let log = std::fs::File::create(dir.join("haproxy.log")).expect("haproxy log");
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("haproxy runs (Debian package haproxy)");
    Haproxy(child)
}

#[derive(Default)]
struct Ledger {
    /// request id → status (0 = no answer)
    answers: BTreeMap<String, u16>,
    failures: Vec<String>,
}

#[tokio::test]
async fn a_rolling_restart_behind_haproxy_fails_no_request_and_loses_no_event() {
    let (orders, users, control) = (
        unique_topic("fleet.orders"),
        unique_topic("fleet.users"),
        unique_topic("fleet.control"),
    );
    let text = config(&orders, &users, &control);
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let env = [
        ("GATEWAY_SHUTDOWN_DELAY_SECS", "2"),
        ("GATEWAY_GRACE_SECS", "10"),
        ("GATEWAY_ADMIN_TOKEN", TOKEN),
    ];
    let mut replicas = Vec::new();
    for dir in &dirs {
        replicas.push(
            GatewayProcess::start_with_env(dir.path(), &text, &env)
                .await
                .expect("a replica starts"),
        );
    }
    let ports: Vec<(u16, u16)> = replicas
        .iter()
        .map(|r| {
            let port = |url: &str| url.rsplit(':').next().and_then(|p| p.parse().ok());
            (
                port(&r.base).expect("public port"),
                port(&r.admin).expect("admin port"),
            )
        })
        .collect();
    let lb_dir = tempfile::tempdir().expect("tempdir");
    let lb_port = free_port().expect("port");
    let _lb = haproxy(lb_dir.path(), lb_port, &ports);
    let lb = format!("http://127.0.0.1:{lb_port}");
    let http = reqwest::Client::new();
    wait_until(Duration::from_secs(30), "haproxy serves", || {
        let (http, lb) = (http.clone(), lb.clone());
        async move {
            http.get(format!("{lb}/nothing-here"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 404)
        }
    })
    .await
    .expect("haproxy up");

    // Steady load: 8 callers, each request once, no client retry.
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (http, lb) = (http.clone(), lb.clone());
            let (stop, ledger) = (Arc::clone(&stop), Arc::clone(&ledger));
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let id = format!("f{w}-{n}");
                    let body = format!(
                        r#"{{"orderId":"o-{id}","customerId":"{id}","items":[],"totalCents":1}}"#
                    );
                    let answer = http
                        .post(format!("{lb}/orders"))
                        .header("content-type", "application/json")
                        .timeout(Duration::from_secs(20))
                        .body(body)
                        .send()
                        .await;
                    let mut l = ledger.lock().expect("ledger");
                    match answer {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            if status != 202 {
                                l.failures.push(format!("{id}: {status}"));
                            }
                            l.answers.insert(id, status);
                        }
                        Err(e) => {
                            l.failures.push(format!("{id}: {e}"));
                            l.answers.insert(id, 0);
                        }
                    }
                }
            })
        })
        .collect();
    let answered = |n: usize| {
        let ledger = Arc::clone(&ledger);
        move || {
            let ledger = Arc::clone(&ledger);
            async move { ledger.lock().expect("ledger").answers.len() >= n }
        }
    };
    wait_until(Duration::from_secs(30), "200 answers", answered(200))
        .await
        .expect("load runs");

    // The rolling restart; the flip is made on replica 1 after replica 0
    // came back, so it has to reach one replica that already restarted, one
    // that follows it live and is restarted later, and the third.
    let mut exits = Vec::new();
    // One round for CI; the soak variant restarts the fleet round after
    // round for GATEWAY_SOAK_SECS.
    let started = tokio::time::Instant::now();
    let soak = gateway_tests::soak();
    let mut round = 0;
    loop {
        for i in 0..replicas.len() {
            let code = replicas[i]
                .terminate(Duration::from_secs(30))
                .await
                .expect("stops on SIGTERM");
            exits.push(code);
            replicas[i].restart().await.expect("starts again");
            // Back in rotation: it serves requests through haproxy again.
            let r = &replicas[i];
            wait_until(
                Duration::from_secs(30),
                "the replica takes traffic",
                || async { r.metric("gateway_requests_total").await.unwrap_or(0.0) >= 5.0 },
            )
            .await
            .expect("the restarted replica is back in rotation");
            if round == 0 && i == 0 {
                let flipped = http
                    .put(format!(
                        "{}/admin/routes/register-user/mode",
                        replicas[1].admin
                    ))
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({"mode": "async"}))
                    .send()
                    .await
                    .expect("flip answered");
                assert!(flipped.status().is_success(), "flip: {}", flipped.status());
            }
        }
        round += 1;
        if soak.is_none_or(|s| started.elapsed() >= s) {
            break;
        }
    }
    let before = ledger.lock().expect("ledger").answers.len();
    wait_until(
        Duration::from_secs(30),
        "200 more answers",
        answered(before + 200),
    )
    .await
    .expect("load runs after the restarts");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }

    // The flip is in force everywhere.
    for (i, r) in replicas.iter().enumerate() {
        let admin = r.admin.clone();
        wait_until(
            Duration::from_secs(30),
            &format!("replica {i} has the flip"),
            || {
                let (http, admin) = (http.clone(), admin.clone());
                async move {
                    let routes: serde_json::Value =
                        match http.get(format!("{admin}/admin/routes")).send().await {
                            Ok(r) => r.json().await.unwrap_or_default(),
                            Err(_) => return false,
                        };
                    routes["routes"].as_array().is_some_and(|rs| {
                        rs.iter()
                            .any(|r| r["name"] == "register-user" && r["mode"] == "async")
                    })
                }
            },
        )
        .await
        .expect("the flip reached every replica");
    }

    let ledger = Arc::try_unwrap(ledger)
        .ok()
        .expect("workers done")
        .into_inner()
        .expect("ledger");
    let in_kafka: BTreeSet<String> = read_topic(&bootstrap(), &orders)
        .await
        .expect("read back")
        .into_iter()
        .filter_map(|r| r.key)
        .collect();
    let acknowledged: Vec<&String> = ledger
        .answers
        .iter()
        .filter(|(_, s)| **s == 202)
        .map(|(id, _)| id)
        .collect();
    let lost: Vec<&&String> = acknowledged
        .iter()
        .filter(|id| !in_kafka.contains(**id))
        .collect();
    println!(
        "fleet: {round} rolling restart(s), sent {}, acknowledged {}, failed {}, lost {}, exit codes {:?}, flip on 3/3 replicas",
        ledger.answers.len(),
        acknowledged.len(),
        ledger.failures.len(),
        lost.len(),
        exits
    );
    println!("fleet: criterion: failed 0, lost 0, every stop drained (exit 0), the flip on every replica");
    assert!(
        ledger.failures.is_empty(),
        "failed requests: {:?}",
        &ledger.failures[..ledger.failures.len().min(20)]
    );
    assert!(lost.is_empty(), "acknowledged but not in Kafka: {lost:?}");
    assert!(
        exits.iter().all(|c| *c == Some(0)),
        "every stop drained: {exits:?}"
    );
}
