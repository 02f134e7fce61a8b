//! `gateway plan …` on a copy of the repository's shop: the RFC's months
//! applied in turn to the routes file, rolled back, and refused out of order.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn plan(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("plan")
        .args(args)
        .current_dir(dir)
        .env_remove("GATEWAY_CONFIG")
        .env_remove("GATEWAY_ADMIN_TOKEN")
        .output()
        .expect("gateway runs")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn copy_shop(to: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::copy(repo.join("routes.toml"), to.join("routes.toml")).expect("routes");
    for dir in ["schemas", "migration-plan"] {
        let status = Command::new("cp")
            .arg("-r")
            .arg(repo.join(dir))
            .arg(to)
            .status()
            .expect("cp");
        assert!(status.success());
    }
}

// Without a broker here, Kafka-side checks are skipped; tests/e2e_kafka.rs
// checks topics and consumer groups against the real broker.
const SKIP: &[&str] = &["--skip-check", "topic", "--skip-check", "consumer-group"];

#[test]
fn the_months_apply_in_turn_and_roll_back_in_reverse_on_the_routes_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    copy_shop(root);
    // An operator's note on the line the plan edits must survive it.
    let text = std::fs::read_to_string(root.join("routes.toml")).expect("read");
    let text = text.replacen(
        "mode = \"dual-write\"",
        "mode = \"dual-write\"   # month 2: registration",
        1,
    );
    std::fs::write(root.join("routes.toml"), text).expect("write");
    let canary_of = |route: &str| {
        let text = std::fs::read_to_string(root.join("routes.toml")).expect("read");
        let doc: toml::Value = toml::from_str(&text).expect("toml");
        doc["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .find(|r| r["name"].as_str() == Some(route))
            .and_then(|r| r.get("canary"))
            .and_then(|c| c["mode"].as_str())
            .map(str::to_string)
    };
    let mode_of = |route: &str| {
        let text = std::fs::read_to_string(root.join("routes.toml")).expect("read");
        let doc: toml::Value = toml::from_str(&text).expect("toml");
        doc["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .find(|r| r["name"].as_str() == Some(route))
            .and_then(|r| r["mode"].as_str())
            .map(str::to_string)
    };

    // The repository's file is at month 3; rolling back out of order is refused.
    let refused = plan(root, &["rollback", "user-registration"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        out(&refused).contains("03-checkout comes after it and is applied"),
        "{}",
        out(&refused)
    );

    for phase in ["checkout", "user-registration"] {
        let r = plan(root, &["rollback", phase]);
        assert_eq!(r.status.code(), Some(0), "{}", out(&r));
    }
    assert_eq!(mode_of("checkout").as_deref(), Some("passthrough"));
    assert_eq!(
        canary_of("checkout"),
        None,
        "rolling back removes the canary"
    );
    assert_eq!(mode_of("register-user").as_deref(), Some("passthrough"));
    let status = out(&plan(root, &["status"]));
    assert!(
        status.contains("02-user-registration (month 2): not applied"),
        "{status}"
    );

    // Month 3 before month 2 is refused, and changes nothing.
    let early = plan(root, &[&["apply", "checkout"], SKIP].concat());
    assert_eq!(early.status.code(), Some(1));
    assert!(
        out(&early).contains("REFUSED: requires 02-user-registration to be applied first"),
        "{}",
        out(&early)
    );
    assert_eq!(mode_of("checkout").as_deref(), Some("passthrough"));
    assert_eq!(canary_of("checkout"), None);

    // A dry run shows and changes nothing.
    let dry = plan(
        root,
        &[&["apply", "user-registration", "--dry-run"], SKIP].concat(),
    );
    assert!(
        out(&dry).contains("register-user: passthrough → dual-write"),
        "{}",
        out(&dry)
    );
    assert_eq!(mode_of("register-user").as_deref(), Some("passthrough"));

    for (phase, route, mode) in [
        ("user-registration", "register-user", "dual-write"),
        ("checkout", "checkout", "passthrough"),
    ] {
        let r = plan(root, &[&["apply", phase], SKIP].concat());
        assert_eq!(r.status.code(), Some(0), "{}", out(&r));
        assert!(
            out(&r).contains("SKIPPED"),
            "skipped checks are said: {}",
            out(&r)
        );
        assert_eq!(mode_of(route).as_deref(), Some(mode));
    }
    // Checkout keeps its legacy mode and goes to async through a canary.
    assert_eq!(canary_of("checkout").as_deref(), Some("async"));
    let status = out(&plan(root, &["status"]));
    assert!(
        status.contains("03-checkout (month 3): applied"),
        "{status}"
    );
    assert!(
        status.contains(
            "checkout: passthrough, canary → async (plan: passthrough → async through a canary)"
        ),
        "{status}"
    );
    let check = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["check", "--config", "routes.toml"])
        .current_dir(root)
        .output()
        .expect("gateway runs");
    assert!(check.status.success(), "the applied file is valid");
    let text = std::fs::read_to_string(root.join("routes.toml")).expect("read");
    assert!(
        text.contains("# The example shop"),
        "comments survive the edits"
    );
    assert!(
        text.contains("mode = \"dual-write\"   # month 2: registration"),
        "inline comments too:\n{text}"
    );
}
