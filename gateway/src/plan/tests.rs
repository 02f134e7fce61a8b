use std::path::PathBuf;

use super::*;
use crate::config::LoadedConfig;

fn shop() -> LoadedConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../routes.toml");
    LoadedConfig::read(&path).expect("repository routes.toml")
}

fn plan_in(files: &[(&str, &str)]) -> Result<Plan, Vec<String>> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    Plan::load(dir.path(), &shop().config)
}

#[test]
fn the_repository_plan_follows_the_rfc_months() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../migration-plan");
    let plan = Plan::load(&dir, &shop().config).expect("valid plan");
    let months: Vec<(String, Option<u32>)> = plan
        .phases
        .iter()
        .map(|p| (p.name.clone(), p.file.month))
        .collect();
    assert_eq!(
        months,
        vec![
            ("provision".to_string(), Some(1)),
            ("user-registration".to_string(), Some(2)),
            ("checkout".to_string(), Some(3)),
        ]
    );
    let checkout = plan.get("03-checkout").expect("by id");
    assert_eq!(plan.get("checkout"), Some(checkout), "by name too");
}

#[test]
fn every_problem_is_reported_with_its_file_and_route() {
    let problems = plan_in(&[
        ("01-a.toml", "phase = \"a\"\nrequires = \"z\"\n[[routes]]\nname = \"nope\"\nmode = \"async\"\nfrom = \"passthrough\"\n"),
        ("02-b.toml", "phase = \"a\"\n[[routes]]\nname = \"get-order\"\nmode = \"async\"\nfrom = \"passthrough\"\n[[checks]]\npartitions = 3\n"),
        ("03-c.toml", "phase = \"c\"\nwhen = \"now\"\n"),
        ("04-d.toml", "[[routes]]\nname = \"register-user\"\nmode = \"dual-write\"\nfrom = \"dual-write\"\n"),
    ])
    .expect_err("invalid");
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(
        has("migration-plan/01-a.toml: requires unknown phase \"z\""),
        "{problems:#?}"
    );
    assert!(
        has("migration-plan/01-a.toml: route nope: not in routes.toml"),
        "{problems:#?}"
    );
    assert!(
        has("migration-plan/02-b.toml: phase name \"a\" is also used by 01-a"),
        "{problems:#?}"
    );
    assert!(
        has("migration-plan/02-b.toml: route get-order: mode async needs topic, schema and key"),
        "{problems:#?}"
    );
    assert!(has("migration-plan/02-b.toml: check 1: name exactly one of topic, schema or consumer_group"), "{problems:#?}");
    assert!(
        has("migration-plan/03-c.toml") && has("unknown field `when`"),
        "{problems:#?}"
    );
    assert!(
        has("migration-plan/04-d.toml: route register-user: mode and from are both dual-write"),
        "{problems:#?}"
    );
}

#[test]
fn standing_follows_the_effective_modes() {
    let plan = plan_in(&[(
        "01-x.toml",
        "[[routes]]\nname = \"register-user\"\nmode = \"dual-write\"\nfrom = \"passthrough\"\n[[routes]]\nname = \"checkout\"\nmode = \"async\"\nfrom = \"passthrough\"\n",
    )])
    .expect("valid");
    let phase = &plan.phases[0];
    let mut routes: Routes = BTreeMap::new();
    routes.insert("register-user".into(), RouteNow::plain(Mode::Passthrough));
    routes.insert("checkout".into(), RouteNow::plain(Mode::Passthrough));
    assert_eq!(standing(phase, &routes), Standing::NotApplied);
    routes.insert("register-user".into(), RouteNow::plain(Mode::DualWrite));
    assert_eq!(standing(phase, &routes), Standing::Partial);
    routes.insert("checkout".into(), RouteNow::plain(Mode::Async));
    assert_eq!(standing(phase, &routes), Standing::Applied);
    // On its way through a canary counts; a rolled-back canary does not.
    let canaried = |status: &str| RouteNow {
        mode: Mode::Passthrough,
        canary: Some((Mode::Async, Some(status.to_string()))),
    };
    routes.insert("checkout".into(), canaried("running"));
    assert_eq!(standing(phase, &routes), Standing::Applied);
    routes.insert("checkout".into(), canaried("rolled-back"));
    assert_eq!(standing(phase, &routes), Standing::Partial);
}
