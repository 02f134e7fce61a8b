//! The migration dashboard: one self-contained page (`GET /dashboard`, no
//! external resources) and the JSON it polls (`GET /admin/dashboard.json`).
//! Writes go through the ordinary admin API with the token the person
//! enters.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use prometheus::core::Collector;
use serde_json::{json, Value};

use crate::plan::{standing, Plan, RouteNow, Routes};
use crate::state::Shared;

const PAGE: &str = include_str!("dashboard.html");
const SCRIPT: &str = include_str!("dashboard.js");

/// Nothing from another origin, no framing (the buttons change routes).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `GET /dashboard`
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        PAGE,
    )
}

/// `GET /dashboard.js`
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        SCRIPT,
    )
}

/// Values of a metric vector with their labels by name.
fn counters(c: &impl Collector) -> Vec<(BTreeMap<String, String>, f64)> {
    c.collect()
        .iter()
        .flat_map(|family| family.get_metric().iter())
        .map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            // A sample is a counter or a gauge; the other reads as 0.
            let value = m.get_counter().get_value() + m.get_gauge().get_value();
            (labels, value)
        })
        .collect()
}

/// `GET /admin/dashboard.json`: per route its mode and plan phase, request
/// and 5xx counts per arm (the page turns them into rates), the canary, the
/// shadow comparison; the spool depth and adapter lag.
pub async fn data(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let table = shared.table.load_full();
    let file = shared.file_config.load_full();
    let overrides = shared.overrides.load_full();

    // Requests per route (labels route, mode, status) and per canary arm
    // (labels route, arm, outcome; alphabetical order in the exposition).
    let mut totals: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (labels, v) in counters(&shared.metrics.requests) {
        let (Some(route), Some(status)) = (labels.get("route"), labels.get("status")) else {
            continue;
        };
        let t = totals.entry(route.clone()).or_default();
        t.0 += v;
        if status.starts_with('5') {
            t.1 += v;
        }
    }
    let mut arms: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for (labels, v) in counters(&shared.metrics.canary_requests) {
        let (Some(route), Some(arm), Some(outcome)) = (
            labels.get("route"),
            labels.get("arm"),
            labels.get("outcome"),
        ) else {
            continue;
        };
        let a = arms.entry((route.clone(), arm.clone())).or_default();
        a.0 += v;
        if outcome == "error" {
            a.1 += v;
        }
    }

    // Plan phases, judged on what this gateway serves.
    let live: Routes = table
        .routes()
        .iter()
        .map(|r| {
            let canary = r.canary.as_ref().map(|c| {
                let status = shared
                    .canaries
                    .state_of(&r.name, c)
                    .map(|s| s.status.as_str().to_string());
                (c.mode, status)
            });
            (
                r.name.clone(),
                RouteNow {
                    mode: r.mode,
                    canary,
                },
            )
        })
        .collect();
    let plan_dir = shared
        .config_path
        .as_ref()
        .and_then(|p| p.parent().map(|d| d.join("migration-plan")));
    let plan = match plan_dir {
        Some(dir) => {
            let config = file.config.clone();
            tokio::task::spawn_blocking(move || {
                dir.is_dir()
                    .then(|| Plan::load(&dir, &config))
                    .and_then(|r| {
                        r.map_err(|p| tracing::debug!(problems = ?p, "plan not shown"))
                            .ok()
                    })
            })
            .await
            .ok()
            .flatten()
        }
        None => None,
    };
    let phase_of = |route: &str| -> Option<Value> {
        let plan = plan.as_ref()?;
        plan.phases
            .iter()
            .filter(|p| p.file.routes.iter().any(|c| c.name == route))
            .map(|p| {
                json!({
                    "id": p.id,
                    "month": p.file.month,
                    "standing": standing(p, &live).as_str(),
                })
            })
            .next_back()
    };

    let routes: Vec<Value> = table
        .routes()
        .iter()
        .map(|r| {
            let (requests, errors) = totals.get(&r.name).copied().unwrap_or_default();
            let arm = |name: &str| {
                arms.get(&(r.name.clone(), name.to_string()))
                    .map(|(req, err)| json!({"requests": req, "errors": err}))
            };
            let canary = r.canary.as_ref().map(|c| {
                let state = shared.canaries.state_of(&r.name, c);
                json!({
                    "mode": c.mode.as_str(),
                    "percent": shared.canaries.percent(&r.name, c),
                    "status": state.as_ref().map(|s| s.status.as_str()),
                    "step": state.as_ref().map(|s| s.step + 1),
                    "steps": c.steps.len(),
                    "last_decision": state.as_ref().and_then(|s| s.decisions.last()).map(|d| json!({
                        "action": d.action.as_str(), "at": d.at, "by": d.by, "reason": d.reason,
                    })),
                    "arms": {"base": arm("base"), "canary": arm("canary")},
                })
            });
            let shadow = shared.shadow.report(&r.name).map(|s| {
                let compared = s["compared"].as_u64().unwrap_or(0);
                let different = s["different"].as_u64().unwrap_or(0);
                json!({
                    "compared": compared,
                    "match_rate": (compared > 0).then(|| 1.0 - different as f64 / compared as f64),
                    "top": s["top_differences"].as_array().map(|t| t.iter().take(3).map(|d| json!({
                        "path": d["path"], "count": d["count"],
                    })).collect::<Vec<_>>()),
                })
            });
            json!({
                "name": r.name,
                "method": r.method.as_str(),
                "path": r.path,
                "mode": r.mode.as_str(),
                "file_mode": file.config.routes.iter().find(|f| f.name == r.name).map(|f| f.mode.as_str()),
                "override": overrides.get(&r.name).map(|m| m.as_str()),
                "upstream": r.upstream.name,
                "topic": r.event.as_ref().map(|e| e.topic.clone()),
                "phase": phase_of(&r.name),
                "requests": requests,
                "errors": errors,
                "canary": canary,
                "shadow": shadow,
            })
        })
        .collect();

    let mut lag: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, v) in counters(&shared.metrics.adapter_lag) {
        if let Some(adapter) = labels.get("adapter") {
            *lag.entry(adapter.clone()).or_default() += v;
        }
    }
    Json(json!({
        "at": jiff::Timestamp::now().to_string(),
        "routes": routes,
        "spool_depth": shared.spool.depth(),
        "adapters": lag.into_iter().map(|(name, lag)| json!({"name": name, "lag": lag})).collect::<Vec<_>>(),
        "last_reload_error": shared.last_reload_error.load_full().as_deref(),
    }))
}
