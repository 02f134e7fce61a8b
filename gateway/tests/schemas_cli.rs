//! `gateway schemas …` as users and CI run it: exit codes and output.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gateway(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .current_dir(cwd)
        .env_remove("GATEWAY_CONFIG")
        .output()
        .expect("gateway runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

const V1: &str = r#"{"type":"record","name":"Thing","namespace":"t","fields":[
  {"name":"id","type":"string"},{"name":"count","type":"long"}]}"#;
const V2_COMPATIBLE: &str = r#"{"type":"record","name":"Thing","namespace":"t","fields":[
  {"name":"id","type":"string"},{"name":"count","type":"long"},
  {"name":"note","type":["null","string"],"default":null}]}"#;
const V3_INCOMPATIBLE: &str = r#"{"type":"record","name":"Thing","namespace":"t","fields":[
  {"name":"id","type":"string"},{"name":"count","type":"int"},
  {"name":"owner","type":"string"}]}"#;

#[test]
fn compat_exit_codes_follow_the_verdict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (v1, v3, bad) = (
        dir.path().join("v1.avsc"),
        dir.path().join("v3.avsc"),
        dir.path().join("bad.avsc"),
    );
    write(&v1, V1);
    write(&v3, V3_INCOMPATIBLE);
    write(&bad, r#"{"type":"record","name":"X"}"#);
    let s = |p: &Path| p.to_str().expect("utf-8").to_string();

    let ok = gateway(
        &[
            "schemas",
            "compat",
            "--reader",
            &s(&v1),
            "--writer",
            &s(&v1),
        ],
        dir.path(),
    );
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(stdout(&ok).trim(), "compatible");

    let no = gateway(
        &[
            "schemas",
            "compat",
            "--reader",
            &s(&v3),
            "--writer",
            &s(&v1),
        ],
        dir.path(),
    );
    assert_eq!(no.status.code(), Some(1));
    let out = stdout(&no);
    assert!(
        out.contains("$.count: reader type int cannot read writer type long"),
        "{out}"
    );
    assert!(
        out.contains("$.owner: reader field is not in the writer's schema and has no default"),
        "{out}"
    );

    let unreadable = gateway(
        &[
            "schemas",
            "compat",
            "--reader",
            &s(&bad),
            "--writer",
            &s(&v1),
        ],
        dir.path(),
    );
    assert_eq!(unreadable.status.code(), Some(2));
    let missing = gateway(
        &[
            "schemas",
            "compat",
            "--reader",
            "/no/such.avsc",
            "--writer",
            &s(&v1),
        ],
        dir.path(),
    );
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn the_repository_schemas_pass_their_own_check_and_diff_names_the_change() {
    let check = gateway(&["schemas", "check"], &repo());
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    let diff = gateway(
        &[
            "schemas",
            "diff",
            "com.shop.OrderCreated",
            "--from",
            "1",
            "--to",
            "2",
        ],
        &repo(),
    );
    assert_eq!(diff.status.code(), Some(0));
    let out = stdout(&diff);
    assert!(
        out.contains("$.channel: added (com.shop.Channel, with default)"),
        "{out}"
    );
    assert!(out.contains("backward (v2 reads v1 data): yes"), "{out}");
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

#[test]
fn the_ci_gate_fails_an_incompatible_change_and_passes_a_compatible_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(
        &root.join("routes.toml"),
        "[kafka]\nbootstrap = \"embedded\"\n",
    );
    write(&root.join("schemas/t.Thing/v1.avsc"), V1);
    git(root, &["init", "-q"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "v1"]);

    // A compatible v2, committed: the gate passes against the previous commit.
    write(&root.join("schemas/t.Thing/v2.avsc"), V2_COMPATIBLE);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "v2"]);
    let pass = gateway(&["schemas", "check", "--against", "HEAD~1"], root);
    assert_eq!(pass.status.code(), Some(0), "{}", stdout(&pass));
    assert!(stdout(&pass).contains("1 version(s) checked against HEAD~1"));

    // An incompatible v3: the gate fails and says why.
    write(&root.join("schemas/t.Thing/v3.avsc"), V3_INCOMPATIBLE);
    let fail = gateway(&["schemas", "check", "--against", "HEAD"], root);
    assert_eq!(fail.status.code(), Some(1));
    let out = stdout(&fail);
    assert!(out.contains("t.Thing v3 (BACKWARD): $.count"), "{out}");
    std::fs::remove_file(root.join("schemas/t.Thing/v3.avsc")).expect("rm");

    // Editing a released version is refused even when it would be compatible.
    write(
        &root.join("schemas/t.Thing/v1.avsc"),
        V2_COMPATIBLE.replace("note", "remark").as_str(),
    );
    let edited = gateway(&["schemas", "check", "--against", "HEAD"], root);
    assert_eq!(edited.status.code(), Some(1));
    assert!(
        stdout(&edited).contains("t.Thing v1: released version was changed"),
        "{}",
        stdout(&edited)
    );

    // A revision that does not exist is an error, not a pass.
    let bad_rev = gateway(&["schemas", "check", "--against", "no-such-rev"], root);
    assert_eq!(bad_rev.status.code(), Some(2));
}
