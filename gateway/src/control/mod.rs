//! Runtime route flips: per-route mode overrides on top of `routes.toml`,
//! validated like a reload and swapped in atomically, replicated to every
//! replica through the compacted control topic, and audited.
//!
//! Precedence: a runtime override wins over the file's mode for its route
//! until it is cleared (`DELETE /admin/routes/{name}/mode`) or the route
//! disappears from the file. `gateway plan status` and `/admin/routes` show
//! both, so a difference is never silent.

pub mod audit;
pub mod replication;
pub mod tokens;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{LoadedConfig, Mode, Problem};
use crate::routing;
use crate::state::Shared;
use audit::Change;

/// Route name → mode set at runtime.
pub type Overrides = BTreeMap<String, Mode>;

/// The config with overrides applied. Overrides for routes the file no
/// longer has are ignored.
pub fn effective(file: &LoadedConfig, overrides: &Overrides) -> LoadedConfig {
    let mut out = file.clone();
    for route in &mut out.config.routes {
        if let Some(mode) = overrides.get(&route.name) {
            route.mode = *mode;
        }
    }
    out
}

/// Why a flip was refused.
#[derive(Debug, thiserror::Error)]
pub enum FlipError {
    /// No route of that name in the file.
    #[error("no route named {0}")]
    UnknownRoute(String),
    /// The resulting table would be invalid.
    #[error("the change would make the routes invalid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
    /// The change could not be written to the control topic, so it was not
    /// applied anywhere.
    #[error("control topic: {0}")]
    Control(String),
}

fn mode_name(m: Option<Mode>) -> Option<String> {
    m.map(|m| m.as_str().to_string())
}

/// Sets (`Some`) or clears (`None`) a route's runtime mode, on this replica
/// and, through the control topic, on every other.
pub async fn flip(
    shared: &Shared,
    route: &str,
    mode: Option<Mode>,
    by: &str,
    source: &str,
) -> Result<Change, FlipError> {
    let _one_at_a_time = shared.reload_lock.lock().await;
    let file = shared.file_config.load_full();
    let Some(file_route) = file.config.routes.iter().find(|r| r.name == route) else {
        return Err(FlipError::UnknownRoute(route.to_string()));
    };
    // Asking for the file's own mode clears the override, so later file
    // edits apply to the route again.
    let mode = mode.filter(|m| *m != file_route.mode);
    let old = shared.overrides.load_full();
    let before = old.get(route).copied().unwrap_or(file_route.mode);
    let mut new = (*old).clone();
    match mode {
        Some(m) => new.insert(route.to_string(), m),
        None => new.remove(route),
    };
    let after = new.get(route).copied().unwrap_or(file_route.mode);
    let table = routing::build(&effective(&file, &new), &shared.schema_ids)
        .await
        .map_err(FlipError::Invalid)?;

    let mut change = Change::now(by, source, Some(route));
    change.before = mode_name(Some(before));
    change.after = mode_name(Some(after));
    if mode.is_none() {
        change.detail = Some("runtime override cleared; the file's mode applies".into());
    }
    if let Some(control) = &shared.control {
        control
            .announce(route, mode, &change)
            .await
            .map_err(FlipError::Control)?;
    }
    if let Ok(mut last) = shared.last_change.lock() {
        last.insert(route.to_string(), change.id.clone());
    }
    shared.overrides.store(Arc::new(new));
    shared.install(table);
    shared.audit.record(change.clone());
    Ok(change)
}

/// Applies flips received from the control topic (or read at start), one
/// route at a time. A flip older than the last one applied for its route is
/// skipped, so a replica never steps back to a superseded mode; a flip this
/// replica's file cannot take is refused for that route only, logged and
/// audited.
pub async fn apply_remote(shared: &Shared, updates: Vec<(String, Option<Mode>, Change)>) {
    let _one_at_a_time = shared.reload_lock.lock().await;
    let file = shared.file_config.load_full();
    for (route, mode, origin) in updates {
        let superseded = shared
            .last_change
            .lock()
            .ok()
            .and_then(|l| l.get(&route).cloned())
            .is_some_and(|last| last >= origin.id);
        if superseded {
            continue;
        }
        let old = shared.overrides.load_full();
        let mut new = (*old).clone();
        match mode {
            Some(m) => new.insert(route.clone(), m),
            None => new.remove(&route),
        };
        if let Ok(mut last) = shared.last_change.lock() {
            last.insert(route.clone(), origin.id.clone());
        }
        if new == *old {
            continue;
        }
        let effective_mode = |o: &Overrides| {
            o.get(&route).copied().or_else(|| {
                file.config
                    .routes
                    .iter()
                    .find(|r| r.name == route)
                    .map(|r| r.mode)
            })
        };
        let mut change = Change::now(&origin.by, "replica", Some(&route));
        change.before = mode_name(effective_mode(&old));
        change.after = mode_name(effective_mode(&new));
        match routing::build(&effective(&file, &new), &shared.schema_ids).await {
            Ok(table) => {
                shared.overrides.store(Arc::new(new));
                shared.install(table);
                change.detail = Some(format!(
                    "applied from the control topic (change {})",
                    origin.id
                ));
            }
            Err(problems) => {
                change.after = change.before.clone();
                change.detail = Some(format!(
                    "refused flip {} from the control topic: {}",
                    origin.id,
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
                tracing::error!(
                    route,
                    detail = change.detail.as_deref().unwrap_or(""),
                    "control topic flip refused"
                );
            }
        }
        shared.audit.record(change);
    }
}
