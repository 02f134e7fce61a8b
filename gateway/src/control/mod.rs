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
    shared.overrides.store(Arc::new(new));
    shared.install(table);
    shared.audit.record(change.clone());
    Ok(change)
}

/// Applies flips received from the control topic (or read at start).
/// Already-applied ones are skipped; a flip this replica's file cannot take
/// is refused here, logged and audited, and the table stays as it is.
pub async fn apply_remote(shared: &Shared, updates: Vec<(String, Option<Mode>, Option<Change>)>) {
    let _one_at_a_time = shared.reload_lock.lock().await;
    let old = shared.overrides.load_full();
    let mut new = (*old).clone();
    for (route, mode, _) in &updates {
        match mode {
            Some(m) => new.insert(route.clone(), *m),
            None => new.remove(route),
        };
    }
    if new == *old {
        return;
    }
    let file = shared.file_config.load_full();
    match routing::build(&effective(&file, &new), &shared.schema_ids).await {
        Ok(table) => {
            shared.overrides.store(Arc::new(new));
            shared.install(table);
            for (route, mode, origin) in updates {
                if old.get(&route) == mode.as_ref() {
                    continue;
                }
                let mut change = Change::now(
                    origin.as_ref().map_or("unknown", |c| c.by.as_str()),
                    "replica",
                    Some(&route),
                );
                change.before = mode_name(old.get(&route).copied());
                change.after = mode_name(mode);
                change.detail =
                    origin.map(|c| format!("applied from the control topic (change {})", c.id));
                shared.audit.record(change);
            }
        }
        Err(problems) => {
            let mut change = Change::now("control-topic", "replica", None);
            change.detail = Some(format!(
                "refused flips from the control topic: {}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            tracing::error!(
                detail = change.detail.as_deref().unwrap_or(""),
                "control topic flip refused"
            );
            shared.audit.record(change);
        }
    }
}
