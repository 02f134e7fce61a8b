//! The canary loop: every tick, each canaried route is checked on the
//! fleet's figures; a failed check rolls it back at once (here first, then
//! on the control topic), a healthy interval steps it up (on the control
//! topic first, so replicas never disagree on the step). People pause,
//! resume, abort and promote through [`act`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use serde_json::json;

use super::state::{now_ms, Action, CanaryState};
use super::window::Figures;
use super::{CanarySpec, LastCheck, Report};
use crate::config::KafkaConfig;
use crate::control::audit::Change;
use crate::events::OutgoingEvent;
use crate::routing::Route;
use crate::state::Shared;

/// How often each canary is checked.
pub const TICK: Duration = Duration::from_millis(250);
/// How often each replica shares its figures.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
/// A peer's report older than this is no longer counted (replica gone).
const REPORT_FRESH: Duration = Duration::from_secs(4);

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A threshold is crossed: roll back.
    Rollback(String),
    /// Healthy for a whole interval: next step.
    StepUp(String),
    /// Healthy so far.
    Healthy(String),
    /// Not enough evidence, or not running.
    Wait(String),
}

/// Judges the canary arm's fleet figures against the route's thresholds.
/// Below `min_requests` nothing is decided either way.
pub fn verdict(spec: &CanarySpec, state: &CanaryState, canary: &Figures, now_ms: i64) -> Verdict {
    if !state.status.serving() {
        return Verdict::Wait(format!(
            "{}: waiting for a person (resume)",
            state.status.as_str()
        ));
    }
    if canary.requests < spec.min_requests {
        return Verdict::Wait(format!(
            "waiting: {} of {} canary requests in the window",
            canary.requests, spec.min_requests
        ));
    }
    let rate = canary.error_rate();
    if rate > spec.max_error_rate {
        return Verdict::Rollback(format!(
            "canary error rate {:.2}% > max_error_rate {:.2}% ({} of {} requests failed)",
            rate * 100.0,
            spec.max_error_rate * 100.0,
            canary.errors,
            canary.requests
        ));
    }
    if let (Some(max), Some(p99)) = (spec.max_p99_ms, canary.latency_ms(0.99)) {
        if p99 > max as f64 {
            return Verdict::Rollback(format!(
                "canary p99 {p99:.1} ms > max_p99_ms {max} ms over {} requests",
                canary.requests
            ));
        }
    }
    if let Some(max) = spec.max_shadow_diff_rate {
        let rate = canary.shadow_diff_rate();
        if canary.shadow_compared >= spec.min_requests && rate > max {
            return Verdict::Rollback(format!(
                "canary shadow diff rate {:.2}% > max_shadow_diff_rate {:.2}% ({} of {} comparisons)",
                rate * 100.0,
                max * 100.0,
                canary.shadow_different,
                canary.shadow_compared
            ));
        }
    }
    let interval = i64::try_from(spec.interval.as_millis()).unwrap_or(i64::MAX);
    let at_step = now_ms.saturating_sub(state.since_ms);
    if state.status == super::state::Status::Running && at_step >= interval {
        return Verdict::StepUp(format!(
            "healthy for {} over {} canary requests",
            humantime::format_duration(Duration::from_millis(
                u64::try_from(at_step / 1000 * 1000).unwrap_or(0)
            )),
            canary.requests
        ));
    }
    Verdict::Healthy("healthy".into())
}

/// Checks every canaried route every [`TICK`] and shares this replica's
/// figures every [`REPORT_EVERY`]; runs until aborted.
pub async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_report = Instant::now();
    loop {
        tick.tick().await;
        let table = shared.table.load_full();
        let report = last_report.elapsed() >= REPORT_EVERY;
        if report {
            last_report = Instant::now();
        }
        for route in table.routes() {
            let Some(spec) = &route.canary else {
                continue;
            };
            check_route(&shared, route, spec).await;
            if report {
                share_figures(&shared, route);
            }
        }
        shared.canaries.prune_peers(REPORT_FRESH);
    }
}

/// One check of one route. Never waits on Kafka: a rollback is announced in
/// the background, a step-up in a task of its own.
async fn check_route(shared: &Arc<Shared>, route: &Route, spec: &Arc<CanarySpec>) {
    let canaries = &shared.canaries;
    let step_up = {
        let _one_decision_at_a_time = canaries.deciding.lock().await;
        let state = match canaries.state(&route.name) {
            Some(s) if s.is(spec.mode, &spec.release) => s,
            // A canary this replica's file still names was replaced by a
            // newer one: the fleet is rolling out a newer file.
            Some(newer) if newer.replaced(spec.mode, &spec.release) => {
                canaries.set_check(
                    &route.name,
                    LastCheck {
                        at: jiff::Timestamp::now().to_string(),
                        outcome: format!(
                            "waiting: the fleet runs a newer canary of this route ({}, release {:?}); this replica's routes file is older",
                            newer.mode.as_str(),
                            newer.release
                        ),
                        replicas: 1,
                        canary: Figures::default().summary(),
                        base: Figures::default().summary(),
                    },
                );
                return;
            }
            previous => {
                let by = &canaries.replica;
                let start = match previous {
                    Some(p) => p.restart((spec.mode, &spec.release), by, &spec.steps),
                    None => CanaryState::start(
                        &route.name,
                        (spec.mode, &spec.release),
                        1,
                        by,
                        &spec.steps,
                    ),
                };
                take(shared, &spec.steps, start, "canary");
                return;
            }
        };
        let (base, canary, replicas) = canaries.fleet(&route.name, state.version, REPORT_FRESH);
        let figures = json!({
            "replicas": replicas,
            "canary": canary.summary(),
            "base": base.summary(),
        });
        let verdict = verdict(spec, &state, &canary, now_ms());
        let outcome = match &verdict {
            Verdict::Rollback(r) => format!("FAILED: {r}"),
            Verdict::StepUp(r) | Verdict::Healthy(r) | Verdict::Wait(r) => r.clone(),
        };
        canaries.set_check(
            &route.name,
            LastCheck {
                at: jiff::Timestamp::now().to_string(),
                outcome,
                replicas,
                canary: canary.summary(),
                base: base.summary(),
            },
        );
        let (action, reason) = match verdict {
            Verdict::Rollback(r) => (Action::Rollback, r),
            Verdict::StepUp(r) => (Action::StepUp, r),
            Verdict::Healthy(_) | Verdict::Wait(_) => return,
        };
        let next = match state.next(
            action,
            &canaries.replica,
            &reason,
            Some(figures),
            &spec.steps,
        ) {
            Ok(next) => next,
            Err(e) => {
                tracing::debug!(route = %route.name, error = %e, "no canary transition");
                return;
            }
        };
        if action == Action::Rollback {
            // Here first: customers are hurt now, and the control topic may
            // be part of what is failing.
            take(shared, &spec.steps, next, "canary");
            return;
        }
        next
    };
    // Fleet first: a step up must not happen on one replica only. One
    // announce in flight per route; the checks go on meanwhile.
    if !canaries.begin_announce(&route.name) {
        return;
    }
    let (shared, spec, name) = (Arc::clone(shared), Arc::clone(spec), route.name.clone());
    tokio::spawn(async move {
        if let Err(e) = propose(&shared, &spec.steps, step_up, "canary").await {
            tracing::warn!(route = %name, error = %e, "canary step-up not announced; the next check tries again");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        shared.canaries.end_announce(&name);
    });
}

/// Takes a decision here at once, then offers it to the control topic until
/// it is there or superseded: rollbacks, aborts, pauses, starts.
fn take(shared: &Arc<Shared>, steps: &[f64], next: CanaryState, source: &str) {
    install(shared, steps, next.clone(), source, None);
    if shared.control.is_none() {
        return;
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(200);
        loop {
            let superseded = shared
                .canaries
                .state(&next.route)
                .is_some_and(|s| s.supersedes(&next));
            let Some(control) = shared.control.as_ref().filter(|_| !superseded) else {
                return;
            };
            match control.announce_canary(&next).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(route = %next.route, error = %e, "canary decision not yet on the control topic; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
}

/// Offers a decision to the control topic first and takes it here once
/// Kafka has it: step-ups, resumes, promotions. If Kafka does not take it,
/// it is taken nowhere.
async fn propose(
    shared: &Arc<Shared>,
    steps: &[f64],
    next: CanaryState,
    source: &str,
) -> Result<Arc<CanaryState>, String> {
    let id = next
        .decisions
        .last()
        .map(|d| d.id.clone())
        .unwrap_or_default();
    if let Some(control) = &shared.control {
        // This replica's own follower must not take it first (and audit it
        // as coming from another replica).
        shared.canaries.pending(&id, true);
        let announced = control.announce_canary(&next).await;
        if announced.is_err() {
            shared.canaries.pending(&id, false);
        }
        announced?;
    }
    let route = next.route.clone();
    let _one_decision_at_a_time = shared.canaries.deciding.lock().await;
    install(shared, steps, next, source, None);
    shared.canaries.pending(&id, false);
    shared
        .canaries
        .state(&route)
        .ok_or_else(|| "state vanished".to_string())
}

/// Installs a state if it supersedes the current one, with audit, log line
/// and metrics. `origin` names the control-topic message it came from.
/// Returns whether it was installed.
fn install(
    shared: &Shared,
    steps: &[f64],
    next: CanaryState,
    source: &str,
    origin: Option<&str>,
) -> bool {
    let Some(decision) = next.decisions.last().cloned() else {
        return false;
    };
    let route = next.route.clone();
    let after = next.describe(steps);
    let percent = next.percent(steps);
    let Ok(old) = shared.canaries.install(next) else {
        return false;
    };
    let mut change = Change::now(&decision.by, source, Some(&route));
    change.before = old.map(|o| o.describe(steps));
    change.after = Some(after);
    let mut detail = format!("canary {}: {}", decision.action.as_str(), decision.reason);
    if let Some(f) = &decision.figures {
        detail.push_str(&format!("; figures {f}"));
    }
    if let Some(o) = origin {
        detail.push_str(&format!(" (applied from the control topic, decision {o})"));
    }
    change.detail = Some(detail);
    shared.audit.record(change);
    shared
        .metrics
        .canary_decisions
        .with_label_values(&[&route, decision.action.as_str()])
        .inc();
    if !steps.is_empty() {
        shared
            .metrics
            .canary_percent
            .with_label_values(&[&route])
            .set(percent);
    }
    if decision.action == Action::Rollback {
        tracing::error!(route, reason = %decision.reason, "CANARY ROLLED BACK to 0%; it stays there until a person resumes it");
    } else {
        tracing::info!(route, action = decision.action.as_str(), percent, reason = %decision.reason, "canary decision");
    }
    true
}

/// Applies a state received from the control topic. `catch_up`: read at
/// start (installed without a new audit entry: it was audited when taken).
/// A state that loses to the one installed here is answered by announcing
/// the winner again, so the compacted topic keeps the winner last.
pub fn apply_remote(shared: &Arc<Shared>, state: CanaryState, catch_up: bool) {
    let id = state.decisions.last().map(|d| d.id.clone());
    if id
        .as_deref()
        .is_some_and(|id| shared.canaries.is_pending(id))
    {
        return;
    }
    let table = shared.table.load();
    let steps = table
        .routes()
        .iter()
        .find(|r| r.name == state.route)
        .and_then(|r| r.canary.as_ref().map(|c| c.steps.clone()))
        .unwrap_or_default();
    if catch_up {
        let percent = state.percent(&steps);
        let route = state.route.clone();
        if shared.canaries.install(state).is_ok() && !steps.is_empty() {
            shared
                .metrics
                .canary_percent
                .with_label_values(&[&route])
                .set(percent);
        }
        return;
    }
    let route = state.route.clone();
    let incoming = state.clone();
    if install(shared, &steps, state, "replica", id.as_deref()) {
        return;
    }
    let Some(current) = shared.canaries.state(&route) else {
        return;
    };
    if *current != incoming && current.supersedes(&incoming) && shared.control.is_some() {
        let (current, shared) = ((*current).clone(), Arc::clone(shared));
        tokio::spawn(async move {
            if let Some(control) = &shared.control {
                if let Err(e) = control.announce_canary(&current).await {
                    tracing::debug!(route = %current.route, error = %e, "winning canary state not re-announced");
                }
            }
        });
    }
}

/// Why a person's action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// No such route, or it has no active canary.
    #[error("{0}")]
    NotFound(String),
    /// The action does not apply to the canary's status.
    #[error("{0}")]
    Conflict(String),
    /// The control topic did not take it: not applied anywhere.
    #[error("control topic: {0}")]
    Control(String),
}

/// A person's `pause`, `resume`, `abort` or `promote`. Pausing and aborting
/// make things safer: they are taken here at once (even while Kafka is
/// down) and then offered to the fleet. Resuming and promoting send more
/// traffic to the canary: they are taken only once Kafka has them.
pub async fn act(
    shared: &Arc<Shared>,
    route: &str,
    action: Action,
    by: &str,
    source: &str,
    reason: Option<&str>,
) -> Result<Arc<CanaryState>, ActError> {
    let table = shared.table.load_full();
    let Some(spec) = table
        .routes()
        .iter()
        .find(|r| r.name == route)
        .and_then(|r| r.canary.clone())
    else {
        return Err(ActError::NotFound(format!(
            "route {route} has no active canary"
        )));
    };
    let reason = reason
        .map(str::to_string)
        .unwrap_or_else(|| format!("{} by {by}", action.as_str()));
    let next = {
        let _one_decision_at_a_time = shared.canaries.deciding.lock().await;
        let state = shared.canaries.state_of(route, &spec).ok_or_else(|| {
            ActError::Conflict(format!(
                "the canary of {route} has not started yet; try again in a moment"
            ))
        })?;
        let next = state
            .next(action, by, &reason, None, &spec.steps)
            .map_err(ActError::Conflict)?;
        if matches!(action, Action::Pause | Action::Abort) {
            take(shared, &spec.steps, next, source);
            return shared
                .canaries
                .state(route)
                .ok_or_else(|| ActError::Conflict("state vanished".into()));
        }
        next
    };
    let id = next.decisions.last().map(|d| d.id.clone());
    let installed = propose(shared, &spec.steps, next, source)
        .await
        .map_err(ActError::Control)?;
    if installed.decisions.last().map(|d| d.id.clone()) != id {
        return Err(ActError::Conflict(format!(
            "another decision came first: the canary is now {}",
            installed.describe(&spec.steps)
        )));
    }
    Ok(installed)
}

/// Publishes this replica's figures for `route` (in the background).
fn share_figures(shared: &Arc<Shared>, route: &Route) {
    let Some(state) = shared.canaries.state(&route.name) else {
        return;
    };
    let (base, canary) = shared.canaries.own(&route.name, state.version);
    if base.requests == 0 && canary.requests == 0 {
        return;
    }
    let report = Report {
        replica: shared.canaries.replica.clone(),
        route: route.name.clone(),
        version: state.version,
        base,
        canary,
    };
    let Ok(payload) = serde_json::to_vec(&report) else {
        return;
    };
    let event = OutgoingEvent {
        id: uuid::Uuid::now_v7().to_string(),
        route: "canary".into(),
        topic: shared.startup.config.kafka.canary_figures_topic.clone(),
        key: route.name.clone(),
        headers: vec![("content-type".into(), "application/json".into())],
        payload,
    };
    let publisher = shared.publisher.clone();
    tokio::spawn(async move {
        if let Err(e) = publisher.publish(&event).await {
            tracing::debug!(error = %e, "canary figures not shared");
        }
    });
}

/// Follows the other replicas' figures from now on. The partitions are
/// assigned, not subscribed: no consumer group to join or leave.
pub async fn follow_figures(
    shared: Arc<Shared>,
    kafka: &KafkaConfig,
    bootstrap: &str,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let topic = kafka.canary_figures_topic.clone();
    let consumer: StreamConsumer = crate::events::client_config(kafka, bootstrap)
        .set(
            "group.id",
            format!("gateway-canary-{}", shared.canaries.replica),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let consumer = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || -> Result<StreamConsumer, String> {
            let parts = crate::control::replication::partitions(
                &consumer,
                &topic,
                Duration::from_secs(30),
            )?;
            let mut tpl = rdkafka::TopicPartitionList::new();
            for (p, _, _) in parts {
                tpl.add_partition_offset(&topic, p, rdkafka::Offset::End)
                    .map_err(|e| e.to_string())?;
            }
            consumer.assign(&tpl).map_err(|e| e.to_string())?;
            Ok(consumer)
        })
        .await
        .map_err(|e| e.to_string())??
    };
    Ok(tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(m) => {
                    if let Some(Ok(report)) = m.payload().map(serde_json::from_slice::<Report>) {
                        shared.canaries.peer_report(report);
                    }
                }
                Err(e) => {
                    tracing::debug!(topic = %topic, error = %e, "canary figures read failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }))
}

/// `GET /admin/canary/{route}`: the state, the thresholds, the last check
/// with its fleet figures, this replica's figures and the decisions
/// (newest first). `None` when the route has no canary in its file.
pub fn view(
    shared: &Shared,
    table: &crate::routing::RouteTable,
    route: &str,
) -> Option<serde_json::Value> {
    let file = shared.file_config.load();
    let rc = file.config.routes.iter().find(|r| r.name == route)?;
    let configured = rc.canary.as_ref()?;
    let served = table.routes().iter().find(|r| r.name == route)?;
    let Some(spec) = &served.canary else {
        return Some(json!({
            "route": route,
            "status": "inactive",
            "detail": format!(
                "the route serves {} itself (runtime flip or file): its canary changes nothing",
                served.mode.as_str()
            ),
            "base": {"mode": served.mode.as_str(), "upstream": served.upstream.name},
            "canary": {"mode": configured.mode.as_str(), "upstream": configured.upstream.clone().unwrap_or_else(|| served.upstream.name.clone())},
        }));
    };
    let state = shared.canaries.state_of(route, spec);
    let (own_base, own_canary) = state
        .as_ref()
        .map(|s| shared.canaries.own(route, s.version))
        .unwrap_or_default();
    let at = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.to_string())
            .ok()
    };
    let interval_ms = i64::try_from(spec.interval.as_millis()).unwrap_or(i64::MAX);
    let next_step_at = state
        .as_ref()
        .filter(|s| s.status == super::state::Status::Running)
        .and_then(|s| at(s.since_ms.saturating_add(interval_ms)));
    let mut decisions: Vec<_> = state
        .as_ref()
        .map(|s| s.decisions.clone())
        .unwrap_or_default();
    decisions.reverse();
    Some(json!({
        "route": route,
        "status": state.as_ref().map_or("starting", |s| s.status.as_str()),
        "percent": shared.canaries.percent(route, spec),
        "step": state.as_ref().map(|s| s.step.min(spec.steps.len().saturating_sub(1)) + 1),
        "steps": spec.steps,
        "since": state.as_ref().and_then(|s| at(s.since_ms)),
        "next_step_at": next_step_at,
        "version": state.as_ref().map(|s| s.version),
        "base": {"mode": served.mode.as_str(), "upstream": served.upstream.name},
        "canary": {"mode": spec.mode.as_str(), "upstream": spec.arm.upstream.name},
        "sticky": configured.sticky,
        "thresholds": {
            "max_error_rate": spec.max_error_rate,
            "max_p99_ms": spec.max_p99_ms,
            "max_shadow_diff_rate": spec.max_shadow_diff_rate,
            "min_requests": spec.min_requests,
            "window": configured.window,
            "interval": configured.interval,
        },
        "last_check": shared.canaries.last_check(route),
        "this_replica": {
            "replica": shared.canaries.replica,
            "canary": own_canary.summary(),
            "base": own_base.summary(),
        },
        "decisions": decisions,
    }))
}
