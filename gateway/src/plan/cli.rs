//! `gateway plan status|diff|apply|rollback`: what each prints and its exit
//! code (0 done / nothing to do, 1 refused: preconditions or validation, 2
//! unusable input).

use std::path::PathBuf;

use super::apply::Step;
use super::{apply, checks, standing, Phase, Plan, RouteNow, Routes, Standing};
use crate::config::LoadedConfig;
use crate::control::tokens::ENV_TOKEN;
use crate::schema::commands::Outcome;

/// Where a plan command reads and acts.
pub struct Target {
    /// The routes file.
    pub config: PathBuf,
    /// `migration-plan/` (default: beside the routes file).
    pub plan_dir: Option<PathBuf>,
    /// A running gateway's admin URL: act on it instead of the file.
    pub admin: Option<String>,
    /// Kafka to check preconditions against (default: `kafka.bootstrap`).
    pub kafka: Option<String>,
    /// Kinds of precondition not to check (`topic`, `schema`,
    /// `consumer-group`), each reported as SKIPPED.
    pub skip_checks: Vec<String>,
}

struct Loaded {
    config: LoadedConfig,
    plan: Plan,
}

fn load(t: &Target) -> Result<Loaded, Outcome> {
    let config = LoadedConfig::read(&t.config).map_err(|e| err(2, vec![e.to_string()]))?;
    let dir = t
        .plan_dir
        .clone()
        .unwrap_or_else(|| config.base_dir.join("migration-plan"));
    let plan = Plan::load(&dir, &config.config).map_err(|p| err(2, p))?;
    Ok(Loaded { config, plan })
}

fn err(code: u8, lines: Vec<String>) -> Outcome {
    Outcome {
        code,
        lines: lines.into_iter().map(|l| format!("error: {l}")).collect(),
    }
}

/// Routes as they stand: the running gateway's when `--admin` is given,
/// else the file's; and the drift between the two.
async fn routes(t: &Target, l: &Loaded) -> Result<(Routes, Vec<String>), Outcome> {
    let file = apply::file_routes(&l.config);
    let Some(admin) = &t.admin else {
        return Ok((file, Vec::new()));
    };
    let live = apply::live_routes(admin)
        .await
        .map_err(|e| err(2, vec![e]))?;
    let mut drift = Vec::new();
    for (name, now, live_file_mode) in &live {
        let ours = file.get(name).map(|r| r.mode);
        if Some(now.mode) != ours {
            drift.push(format!(
                "  {name}: this routes file says {}, the gateway serves {} ({})",
                ours.map_or("nothing", |m| m.as_str()),
                now.mode.as_str(),
                if live_file_mode.as_ref() == Some(&now.mode) {
                    "the gateway runs another file"
                } else {
                    "runtime override"
                }
            ));
        }
    }
    Ok((live.into_iter().map(|(n, r, _)| (n, r)).collect(), drift))
}

/// `gateway plan status`.
pub async fn status(t: &Target) -> Outcome {
    let l = match load(t) {
        Ok(l) => l,
        Err(o) => return o,
    };
    let (routes, drift) = match routes(t, &l).await {
        Ok(m) => m,
        Err(o) => return o,
    };
    let mut lines = Vec::new();
    for phase in &l.plan.phases {
        let month = phase
            .file
            .month
            .map(|m| format!(" (month {m})"))
            .unwrap_or_default();
        lines.push(format!(
            "{}{month}: {}",
            phase.id,
            standing(phase, &routes).as_str()
        ));
        for c in &phase.file.routes {
            let now = routes
                .get(&c.name)
                .map_or_else(|| "missing".to_string(), RouteNow::describe);
            lines.push(format!(
                "  {}: {now} (plan: {} → {}{})",
                c.name,
                c.from.as_str(),
                c.mode.as_str(),
                if c.canary.is_some() {
                    " through a canary"
                } else {
                    ""
                }
            ));
        }
    }
    if drift.is_empty() {
        lines.push("drift: none".into());
    } else {
        lines.push("drift:".into());
        lines.extend(drift);
    }
    Outcome { code: 0, lines }
}

/// `gateway plan diff <phase>`.
pub async fn diff(t: &Target, phase: &str) -> Outcome {
    let l = match load(t) {
        Ok(l) => l,
        Err(o) => return o,
    };
    let Some(p) = l.plan.get(phase) else {
        return unknown(&l.plan, phase);
    };
    let (routes, _) = match routes(t, &l).await {
        Ok(m) => m,
        Err(o) => return o,
    };
    let mut lines = vec![format!("{}: {}", p.id, p.file.description.trim())];
    match steps(p, &routes, false, t.admin.is_some()) {
        Ok(steps) if steps.is_empty() => lines.push("  nothing to change".into()),
        Ok(steps) => lines.extend(steps.iter().map(|s| format!("  {}", s.describe(&routes)))),
        Err(refused) => lines.extend(refused.iter().map(|r| format!("  cannot: {r}"))),
    }
    for c in &p.file.checks {
        lines.push(format!("  precondition: {}", describe_check(c)));
    }
    Outcome { code: 0, lines }
}

fn describe_check(c: &super::Check) -> String {
    if let Some(g) = &c.consumer_group {
        format!("consumer group {g} has members")
    } else if let Some(s) = &c.schema {
        format!("schema {s} is ready")
    } else {
        format!(
            "topic {}{}",
            c.topic.as_deref().unwrap_or("?"),
            c.partitions
                .map(|n| format!(" with {n} partitions"))
                .unwrap_or_default()
        )
    }
}

fn unknown(plan: &Plan, phase: &str) -> Outcome {
    let known: Vec<&str> = plan.phases.iter().map(|p| p.id.as_str()).collect();
    err(
        2,
        vec![format!("no phase {phase:?} (phases: {})", known.join(", "))],
    )
}

/// What carrying a phase out (or back) changes from where the routes
/// stand, or why it cannot be done on this target.
fn steps(p: &Phase, routes: &Routes, back: bool, live: bool) -> Result<Vec<Step>, Vec<String>> {
    let mut steps = Vec::new();
    let mut refused = Vec::new();
    for c in &p.file.routes {
        let Some(now) = routes.get(&c.name) else {
            refused.push(format!("route {} is missing", c.name));
            continue;
        };
        let name = c.name.clone();
        if back {
            if now.mode != c.from {
                steps.push(Step::Mode(name.clone(), c.from));
            }
            let canary_there = now.canary.as_ref().is_some_and(|(m, _)| *m == c.mode);
            match (live, canary_there) {
                (false, true) => steps.push(Step::RemoveCanary(name)),
                (true, true) if now.canary_toward(c.mode) => {
                    steps.push(Step::CanaryAction(name, "abort"))
                }
                _ => {}
            }
            continue;
        }
        if now.reaches(c.mode) {
            continue;
        }
        let Some(canary) = c.canary_config() else {
            steps.push(Step::Mode(name, c.mode));
            continue;
        };
        match (live, &now.canary) {
            (true, Some((m, _))) if *m == c.mode => steps.push(Step::CanaryAction(name, "resume")),
            (true, _) => refused.push(format!(
                "route {name} goes to {} through a canary, which lives in the routes file: apply this phase without --admin, then reload the gateways",
                c.mode.as_str()
            )),
            (false, _) => match canary.map(|_| c.canary.clone().unwrap_or_default()) {
                Ok(mut table) => {
                    if now.mode != c.from {
                        steps.push(Step::Mode(name.clone(), c.from));
                    }
                    table.insert("mode".into(), toml::Value::String(c.mode.as_str().into()));
                    // A new release each time the phase is applied: a canary
                    // removed by a rollback and written again starts over.
                    let label = table
                        .get("release")
                        .and_then(|r| r.as_str())
                        .unwrap_or(&p.id)
                        .to_string();
                    table.insert(
                        "release".into(),
                        toml::Value::String(format!("{label} {}", jiff::Timestamp::now())),
                    );
                    steps.push(Step::SetCanary(name, table));
                }
                Err(e) => refused.push(format!("route {name}: canary: {e}")),
            },
        }
    }
    if refused.is_empty() {
        Ok(steps)
    } else {
        Err(refused)
    }
}

/// `gateway plan apply <phase> [--dry-run]` and `gateway plan rollback <phase>`.
pub async fn apply(t: &Target, phase: &str, dry_run: bool, back: bool) -> Outcome {
    let l = match load(t) {
        Ok(l) => l,
        Err(o) => return o,
    };
    let Some(p) = l.plan.get(phase) else {
        return unknown(&l.plan, phase);
    };
    let (routes, _) = match routes(t, &l).await {
        Ok(m) => m,
        Err(o) => return o,
    };
    let verb = if back { "rollback" } else { "apply" };
    let mut lines = vec![format!("{verb} {}: {}", p.id, p.file.description.trim())];
    let mut refused = Vec::new();

    if back {
        for later in l.plan.after(p) {
            if matches!(
                standing(later, &routes),
                Standing::Applied | Standing::Partial
            ) {
                refused.push(format!(
                    "{} comes after it and is applied: roll that back first",
                    later.id
                ));
            }
        }
    } else {
        if let Some(req) = &p.file.requires {
            if let Some(rp) = l.plan.get(req) {
                let ok = match standing(rp, &routes) {
                    Standing::Applied => true,
                    Standing::ChecksOnly => run_checks(t, &l, rp, &mut lines).await,
                    _ => false,
                };
                if !ok {
                    refused.push(format!("requires {} to be applied first", rp.id));
                }
            }
        }
        if !run_checks(t, &l, p, &mut lines).await {
            refused.push("preconditions failed".into());
        }
    }
    let todo = match steps(p, &routes, back, t.admin.is_some()) {
        Ok(todo) => todo,
        Err(why) => {
            refused.extend(why);
            Vec::new()
        }
    };
    if !refused.is_empty() {
        lines.extend(refused.into_iter().map(|r| format!("REFUSED: {r}")));
        return Outcome { code: 1, lines };
    }
    for step in &todo {
        lines.push(format!("  {}", step.describe(&routes)));
    }
    if todo.is_empty() {
        lines.push("  nothing to change".into());
        return Outcome { code: 0, lines };
    }
    if dry_run {
        lines.push("dry run: nothing changed".into());
        return Outcome { code: 0, lines };
    }
    let result = match &t.admin {
        Some(admin) => match std::env::var(ENV_TOKEN) {
            Ok(token) => apply::to_gateway(admin, &token, &todo).await,
            Err(_) => Err(vec![format!(
                "{ENV_TOKEN} must hold an admin token to change a running gateway"
            )]),
        },
        None => apply::to_file(&t.config, &todo).await,
    };
    match result {
        Ok(()) => {
            lines.push(match &t.admin {
                Some(a) => format!("done: flipped on {a} (replicated through the control topic)"),
                None => format!(
                    "done: {} updated (a running gateway reloads it)",
                    t.config.display()
                ),
            });
            Outcome { code: 0, lines }
        }
        Err(problems) => {
            lines.extend(problems.into_iter().map(|p| format!("REFUSED: {p}")));
            Outcome { code: 1, lines }
        }
    }
}

async fn run_checks(t: &Target, l: &Loaded, p: &Phase, lines: &mut Vec<String>) -> bool {
    let bootstrap = t.kafka.clone().or_else(|| {
        let b = &l.config.config.kafka.bootstrap;
        (b != "embedded").then(|| b.clone())
    });
    let mut ok = true;
    let (skipped, kept): (Vec<_>, Vec<_>) = p
        .file
        .checks
        .iter()
        .cloned()
        .partition(|c| t.skip_checks.iter().any(|k| k == c.kind()));
    for c in &skipped {
        lines.push(format!(
            "  SKIPPED (--skip-check {}): {} ({})",
            c.kind(),
            describe_check(c),
            p.id
        ));
    }
    for outcome in checks::run(&kept, &l.config, bootstrap.as_deref()).await {
        match outcome.failure {
            None => lines.push(format!("  ok: {} ({})", outcome.what, p.id)),
            Some(why) => {
                ok = false;
                lines.push(format!("  FAILED: {}: {why} ({})", outcome.what, p.id));
            }
        }
    }
    ok
}
