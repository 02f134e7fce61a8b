//! `gateway check`: every problem of a file at once, TLS files included,
//! with environment overrides applied as the server applies them.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn config(schemas: &Path) -> String {
    format!(
        r#"
[server.tls]
cert_file = "tls.crt"
key_file = "tls.key"

[kafka]
bootstrap = "embedded"

[schemas]
dir = "{}"

[upstreams.orders]
url = "http://127.0.0.1:1"

[[routes]]
name = "get-order"
method = "GET"
path = "/orders/{{id}}"
upstream = "missing"
mode = "passthrough"
"#,
        schemas.display()
    )
}

#[test]
fn check_reports_a_broken_certificate_with_the_other_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tls.crt"), "not a certificate").expect("write");
    std::fs::write(dir.path().join("tls.key"), "not a key").expect("write");
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    std::fs::write(dir.path().join("routes.toml"), config(&schemas)).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["check", "--config"])
        .arg(dir.path().join("routes.toml"))
        .env_remove("GATEWAY_CONFIG")
        .output()
        .expect("gateway runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("upstream \"missing\" is not configured"),
        "{text}"
    );
    assert!(
        text.contains("server.tls:") && text.contains("tls.crt"),
        "{text}"
    );
}

#[test]
fn check_applies_environment_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let text = config(&schemas)
        .replace(
            "[server.tls]\ncert_file = \"tls.crt\"\nkey_file = \"tls.key\"\n",
            "",
        )
        .replace("upstream = \"missing\"", "upstream = \"orders\"");
    std::fs::write(dir.path().join("routes.toml"), text).expect("write");
    let run = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["check", "--config"])
            .arg(dir.path().join("routes.toml"))
            .env_remove("GATEWAY_CONFIG")
            .env("GATEWAY_UPSTREAM_ORDERS_URL", url)
            .output()
            .expect("gateway runs")
    };
    assert_eq!(run("http://orders.prod:8080").status.code(), Some(0));
    let bad = run("ftp://orders.prod");
    assert_eq!(bad.status.code(), Some(1));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(said.contains("ftp"), "{said}");
}
