//! `gateway canary …` against a running gateway: status, the actions a
//! person takes, their exit codes, and that writes need a token.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use gateway::server::{Gateway, Overrides};

const TOKEN: &str = "cli-secret";

async fn canary(admin: &str, args: &[&str], token: Option<&str>) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .arg("canary")
        .args(args)
        .args(["--admin", admin])
        .env_remove("GATEWAY_ADMIN_TOKEN")
        .env_remove("GATEWAY_ADMIN_URL");
    if let Some(t) = token {
        command.env("GATEWAY_ADMIN_TOKEN", t);
    }
    // The gateway serves from this test's runtime: run the CLI beside it.
    tokio::task::spawn_blocking(move || command.output().expect("gateway runs"))
        .await
        .expect("joined")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn config(dir: &Path) -> std::path::PathBuf {
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[kafka]
bootstrap = "embedded"

[schemas]
dir = "{}"

[spool]
dir = "spool"

[upstreams.legacy]
url = "http://127.0.0.1:9"

[upstreams.candidate]
url = "http://127.0.0.1:9"

[[routes]]
name = "checkout"
method = "POST"
path = "/orders"
upstream = "legacy"
mode = "passthrough"
canary = {{ mode = "passthrough", upstream = "candidate", steps = [1, 5, 25], interval = "1h", sticky = "header:X-Customer-Id" }}
"#,
        schemas.display()
    );
    let path = dir.join("routes.toml");
    std::fs::write(&path, text).expect("write");
    path
}

#[tokio::test]
async fn status_pause_resume_promote_and_abort_from_the_command_line() {
    let dir = tempfile::tempdir().expect("dir");
    let gateway = Gateway::start_with(
        &config(dir.path()),
        Overrides {
            admin_token: Some(("cli".into(), TOKEN.into())),
            ..Overrides::default()
        },
    )
    .await
    .expect("gateway starts");
    let admin = format!("http://{}", gateway.admin_addr);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = canary(&admin, &["status", "checkout"], None).await;
        if o.status.success() && stdout(&o).contains("(running)") {
            assert!(
                stdout(&o)
                    .contains("passthrough → passthrough canary at 1% (running), step 1 of 3"),
                "{}",
                stdout(&o)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "canary never started: {}",
            stdout(&o)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let o = canary(&admin, &["pause", "checkout"], None).await;
    assert_eq!(o.status.code(), Some(1), "no token, no write");
    assert!(String::from_utf8_lossy(&o.stdout).contains("GATEWAY_ADMIN_TOKEN"));

    let o = canary(
        &admin,
        &["pause", "checkout", "--reason", "holiday freeze"],
        Some(TOKEN),
    )
    .await;
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("at 1% (paused)"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("pause 1% → 1% by cli: holiday freeze"),
        "{}",
        stdout(&o)
    );

    let o = canary(&admin, &["pause", "checkout"], Some(TOKEN)).await;
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("409"), "{}", stdout(&o));

    let o = canary(&admin, &["resume", "checkout"], Some(TOKEN)).await;
    assert!(stdout(&o).contains("at 1% (running)"), "{}", stdout(&o));
    let o = canary(&admin, &["promote", "checkout"], Some(TOKEN)).await;
    assert!(
        stdout(&o).contains("at 5% (running), step 2 of 3"),
        "{}",
        stdout(&o)
    );
    let o = canary(&admin, &["abort", "checkout"], Some(TOKEN)).await;
    assert!(stdout(&o).contains("at 0% (aborted)"), "{}", stdout(&o));

    let o = canary(&admin, &["status", "--json"], None).await;
    let all: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(all["canaries"][0]["status"], "aborted");
    let o = canary(&admin, &["status", "nope"], None).await;
    assert_eq!(o.status.code(), Some(1));
    let o = canary("http://127.0.0.1:9", &["status"], None).await;
    assert_eq!(o.status.code(), Some(2), "no gateway there");

    // Each action is in the audit trail, marked as coming from the CLI.
    let audit = gateway
        .shared
        .audit
        .recent(20)
        .into_iter()
        .filter(|c| c.source == "cli")
        .count();
    assert_eq!(audit, 4);
    gateway.shutdown(Duration::from_secs(5)).await;
}

/// The shop of the repository, served on ephemeral ports.
fn shop(dir: &Path) -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(repo.join("routes.toml")).expect("routes");
    let text = text
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9080", "127.0.0.1:0");
    std::fs::write(dir.join("routes.toml"), text).expect("write");
    for sub in ["schemas", "migration-plan"] {
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(repo.join(sub))
            .arg(dir)
            .status()
            .expect("cp");
        assert!(status.success());
    }
    dir.join("routes.toml")
}

async fn plan(dir: &Path, admin: &str, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .arg("plan")
        .args(args)
        .args([
            "--admin",
            admin,
            "--skip-check",
            "topic",
            "--skip-check",
            "consumer-group",
        ])
        .current_dir(dir)
        .env_remove("GATEWAY_CONFIG")
        .env("GATEWAY_ADMIN_TOKEN", TOKEN);
    tokio::task::spawn_blocking(move || command.output().expect("gateway runs"))
        .await
        .expect("joined")
}

#[tokio::test]
async fn the_checkout_phase_on_a_running_gateway_aborts_and_resumes_its_canary() {
    let dir = tempfile::tempdir().expect("dir");
    let gateway = Gateway::start_with(
        &shop(dir.path()),
        Overrides {
            admin_token: Some(("cli".into(), TOKEN.into())),
            ..Overrides::default()
        },
    )
    .await
    .expect("the shop starts");
    let admin = format!("http://{}", gateway.admin_addr);
    let status = |o: &Output| stdout(o);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stdout(&canary(&admin, &["status", "checkout"], None).await).contains("(running)") {
        assert!(
            Instant::now() < deadline,
            "the checkout canary never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let o = plan(dir.path(), &admin, &["status"]).await;
    assert!(
        status(&o).contains("checkout: passthrough, canary → async (running)"),
        "{}",
        status(&o)
    );
    let o = plan(dir.path(), &admin, &["rollback", "checkout"]).await;
    assert!(o.status.success(), "{}", status(&o));
    assert!(
        status(&o).contains("checkout: canary abort"),
        "{}",
        status(&o)
    );
    let o = canary(&admin, &["status", "checkout"], None).await;
    assert!(stdout(&o).contains("at 0% (aborted)"), "{}", stdout(&o));
    let o = plan(dir.path(), &admin, &["status"]).await;
    assert!(
        status(&o).contains("03-checkout (month 3): not applied"),
        "{}",
        status(&o)
    );

    let o = plan(dir.path(), &admin, &["apply", "checkout"]).await;
    assert!(o.status.success(), "{}", status(&o));
    assert!(
        status(&o).contains("checkout: canary resume"),
        "{}",
        status(&o)
    );
    let o = canary(&admin, &["status", "checkout"], None).await;
    assert!(
        stdout(&o).contains("at 1% (running), step 1 of 5"),
        "{}",
        stdout(&o)
    );
    gateway.shutdown(Duration::from_secs(5)).await;
}
