//! Live reload: read the file, build a whole new table off to the side,
//! validate it, swap it in. A bad file never replaces a good table.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use std::collections::BTreeMap;

use crate::config::{LoadedConfig, Mode, Problem};
use crate::control::audit::Change;
use crate::control::effective;
use crate::routing;
use crate::state::{ReloadFailure, Shared};

/// Reloads `path` into `shared`. On failure the serving table is unchanged
/// and the problems are logged and kept for `/admin/routes`.
pub async fn reload(shared: &Shared, path: &Path) -> Result<usize, Vec<Problem>> {
    reload_as(shared, path, "file", "reload").await
}

/// [`reload`], recording `by` and `source` in the audit trail.
pub async fn reload_as(
    shared: &Shared,
    path: &Path,
    by: &str,
    source: &str,
) -> Result<usize, Vec<Problem>> {
    let _one_at_a_time = shared.reload_lock.lock().await;
    let overrides = shared.overrides.load_full();
    let result = match LoadedConfig::read(path) {
        Ok(mut loaded) => {
            warn_restart_only_changes(&shared.startup, &loaded);
            // Settings fixed at start stay as started (e.g. an overridden bootstrap).
            loaded.config.kafka = shared.startup.config.kafka.clone();
            routing::build(&effective(&loaded, &overrides), &shared.schema_ids)
                .await
                .map(|table| (loaded, table))
        }
        Err(e) => Err(vec![Problem::global(e.to_string())]),
    };
    match result {
        Ok((loaded, table)) => {
            let n = table.routes().len();
            let before = modes(&effective(&shared.file_config.load(), &overrides));
            let after = modes(&effective(&loaded, &overrides));
            // Overrides of routes the file no longer has are dropped, so a
            // route added again later starts from its file mode.
            let kept: crate::control::Overrides = overrides
                .iter()
                .filter(|(name, _)| loaded.config.routes.iter().any(|r| &r.name == *name))
                .map(|(n, m)| (n.clone(), *m))
                .collect();
            if kept.len() != overrides.len() {
                shared.overrides.store(Arc::new(kept));
            }
            shared.file_config.store(Arc::new(loaded));
            shared.install(table);
            shared.last_reload_error.store(None);
            record_mode_changes(shared, &before, &after, by, source);
            shared.metrics.reloads.with_label_values(&["ok"]).inc();
            tracing::info!(path = %path.display(), routes = n, "config reloaded");
            Ok(n)
        }
        Err(problems) => {
            for p in &problems {
                tracing::error!(path = %path.display(), problem = %p, "config reload refused; previous routes keep serving");
            }
            shared
                .metrics
                .reloads
                .with_label_values(&["rejected"])
                .inc();
            shared.last_reload_error.store(Some(Arc::new(ReloadFailure {
                at: jiff::Timestamp::now().to_string(),
                problems: problems.clone(),
            })));
            Err(problems)
        }
    }
}

fn modes(config: &LoadedConfig) -> BTreeMap<String, Mode> {
    config
        .config
        .routes
        .iter()
        .map(|r| (r.name.clone(), r.mode))
        .collect()
}

fn record_mode_changes(
    shared: &Shared,
    before: &BTreeMap<String, Mode>,
    after: &BTreeMap<String, Mode>,
    by: &str,
    source: &str,
) {
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut any = false;
    for name in names {
        let (b, a) = (before.get(name), after.get(name));
        if b != a {
            any = true;
            let mut change = Change::now(by, source, Some(name));
            change.before = b.map(|m| m.as_str().to_string());
            change.after = a.map(|m| m.as_str().to_string());
            shared.audit.record(change);
        }
    }
    if !any {
        let mut change = Change::now(by, source, None);
        change.detail = Some("reloaded; no route changed mode".into());
        shared.audit.record(change);
    }
}

fn warn_restart_only_changes(running: &LoadedConfig, new: &LoadedConfig) {
    let (a, b) = (&running.config, &new.config);
    let mut changed = Vec::new();
    if a.server.listen != b.server.listen
        || a.server.admin != b.server.admin
        || a.server.max_in_flight != b.server.max_in_flight
        || a.server.max_connections != b.server.max_connections
        || a.server.watch_config != b.server.watch_config
    {
        changed.push("server.listen/admin/max_in_flight/watch_config");
    }
    if a.server.tls != b.server.tls {
        changed.push("server.tls (the certificate files themselves reload)");
    }
    if a.upstream_tls != b.upstream_tls {
        changed.push("upstream_tls");
    }
    if a.kafka != b.kafka {
        changed.push("kafka");
    }
    if a.spool != b.spool {
        changed.push("spool");
    }
    if a.idempotency != b.idempotency || a.operations != b.operations {
        changed.push("idempotency/operations");
    }
    if a.schemas.registry != b.schemas.registry
        || a.schemas.registry_timeout_ms != b.schemas.registry_timeout_ms
    {
        changed.push("schemas.registry/registry_timeout_ms");
    }
    if !changed.is_empty() {
        tracing::warn!(sections = %changed.join(", "), "these settings take effect only after a restart");
    }
}

/// Reloads on every change of the file (debounced) until the process ends.
pub fn watch(shared: Arc<Shared>, path: PathBuf) -> notify::Result<tokio::task::JoinHandle<()>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let file_name = path.file_name().map(|f| f.to_os_string());
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name().map(|f| f.to_os_string()) == file_name);
            if ours && !event.kind.is_access() {
                let _ = tx.try_send(());
            }
        }
    })?;
    // The directory, not the file: editors replace files by rename.
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(tokio::spawn(async move {
        let _keep = watcher;
        while rx.recv().await.is_some() {
            // Let a burst of writes settle before reading.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            let _ = reload(&shared, &path).await;
        }
    }))
}
