//! Carrying a phase out: on the routes file (edited in place, comments
//! kept, validated before it replaces the old file) or on a running gateway
//! through its admin API.

use std::path::Path;

use axum::body::Body;
use http_body_util::BodyExt;

use super::{RouteNow, Routes};
use crate::config::{LoadedConfig, Mode};

/// One thing a phase changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Set the route's mode.
    Mode(String, Mode),
    /// Give the route this `canary` table (routes file only).
    SetCanary(String, toml::Table),
    /// Take the route's `canary` table away (routes file only).
    RemoveCanary(String),
    /// `resume` or `abort` the route's canary (running gateway only).
    CanaryAction(String, &'static str),
}

impl Step {
    /// For output, with where the route stands now.
    pub fn describe(&self, routes: &Routes) -> String {
        match self {
            Step::Mode(r, m) => format!(
                "{r}: {} → {}",
                routes.get(r).map_or("missing", |n| n.mode.as_str()),
                m.as_str()
            ),
            Step::SetCanary(r, t) => format!(
                "{r}: canary → {} (steps {})",
                t.get("mode").and_then(|m| m.as_str()).unwrap_or("?"),
                t.get("steps")
                    .map_or_else(|| "default".to_string(), ToString::to_string)
            ),
            Step::RemoveCanary(r) => format!("{r}: canary removed"),
            Step::CanaryAction(r, a) => format!("{r}: canary {a}"),
        }
    }
}

/// Each route's mode and canary in the file.
pub fn file_routes(loaded: &LoadedConfig) -> Routes {
    loaded
        .config
        .routes
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                RouteNow {
                    mode: r.mode,
                    canary: r.canary.as_ref().map(|c| (c.mode, None)),
                },
            )
        })
        .collect()
}

/// Each route of a running gateway as it serves it (and the mode its file
/// gives it), from `/admin/routes`.
pub async fn live_routes(admin: &str) -> Result<Vec<(String, RouteNow, Option<Mode>)>, String> {
    let url = format!("{}/admin/routes", admin.trim_end_matches('/'));
    let body = send(http::Method::GET, &url, None, None).await?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
    let parse = |m: &serde_json::Value| {
        m.as_str()
            .and_then(|s| serde_json::from_value(serde_json::json!(s)).ok())
    };
    Ok(v["routes"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| {
                    let canary = parse(&r["canary"]["mode"])
                        .map(|m| (m, r["canary"]["status"].as_str().map(str::to_string)));
                    Some((
                        r["name"].as_str()?.to_string(),
                        RouteNow {
                            mode: parse(&r["mode"])?,
                            canary,
                        },
                        parse(&r["file_mode"]),
                    ))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Carries the steps out on the routes file. The edited file must pass
/// `gateway check` before it replaces the old one; comments and layout stay.
pub async fn to_file(path: &Path, steps: &[Step]) -> Result<(), Vec<String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let Some(routes) = doc
        .get_mut("routes")
        .and_then(|r| r.as_array_of_tables_mut())
    else {
        return Err(vec![format!("{}: no [[routes]]", path.display())]);
    };
    for step in steps {
        let name = match step {
            Step::Mode(n, _) | Step::SetCanary(n, _) | Step::RemoveCanary(n) => n,
            Step::CanaryAction(n, a) => {
                return Err(vec![format!(
                    "route {n}: canary {a} acts on a running gateway (--admin), not on the file"
                )])
            }
        };
        let table = routes
            .iter_mut()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name.as_str()))
            .ok_or_else(|| vec![format!("route {name} is not in {}", path.display())])?;
        match step {
            Step::Mode(_, mode) => {
                // Keep the spacing and any trailing comment of the old value.
                let mut value = toml_edit::Value::from(mode.as_str());
                if let Some(old) = table.get("mode").and_then(|i| i.as_value()) {
                    *value.decor_mut() = old.decor().clone();
                }
                table["mode"] = toml_edit::Item::Value(value);
            }
            Step::SetCanary(_, canary) => {
                let text = toml::to_string(canary).map_err(|e| vec![e.to_string()])?;
                let doc: toml_edit::DocumentMut =
                    text.parse().map_err(|e| vec![format!("canary: {e}")])?;
                // `mode` first, as people write it.
                let mut ordered = toml_edit::Table::new();
                let parsed = doc.as_table();
                for (k, v) in parsed
                    .iter()
                    .filter(|(k, _)| *k == "mode")
                    .chain(parsed.iter().filter(|(k, _)| *k != "mode"))
                {
                    ordered.insert(k, v.clone());
                }
                table["canary"] = toml_edit::Item::Table(ordered);
            }
            Step::RemoveCanary(_) => {
                table.remove("canary");
            }
            Step::CanaryAction(..) => {}
        }
    }
    let tmp = path.with_extension("toml.plan-tmp");
    std::fs::write(&tmp, doc.to_string()).map_err(|e| vec![format!("{}: {e}", tmp.display())])?;
    if let Err(problems) = crate::server::check(&tmp).await {
        let _ = std::fs::remove_file(&tmp);
        return Err(problems.iter().map(ToString::to_string).collect());
    }
    std::fs::rename(&tmp, path).map_err(|e| vec![format!("{}: {e}", path.display())])
}

/// Carries the steps out on a running gateway: flips
/// (`PUT /admin/routes/{name}/mode`) and canary actions
/// (`POST /admin/canary/{name}/{action}`).
pub async fn to_gateway(admin: &str, token: &str, steps: &[Step]) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let base = admin.trim_end_matches('/');
    for step in steps {
        let (method, url, body) = match step {
            Step::Mode(name, mode) => (
                http::Method::PUT,
                format!("{base}/admin/routes/{name}/mode"),
                Some(serde_json::json!({ "mode": mode.as_str() }).to_string()),
            ),
            Step::CanaryAction(name, action) => (
                http::Method::POST,
                format!("{base}/admin/canary/{name}/{action}"),
                Some(serde_json::json!({ "reason": "migration plan" }).to_string()),
            ),
            Step::SetCanary(name, _) | Step::RemoveCanary(name) => {
                problems.push(format!(
                    "route {name}: a canary lives in the routes file; change it without --admin, then reload the gateways"
                ));
                continue;
            }
        };
        if let Err(e) = send(method, &url, Some(token), body).await {
            problems.push(e);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

async fn send(
    method: http::Method,
    url: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<Vec<u8>, String> {
    let (status, bytes) = admin_request(method, url, token, "plan", body).await?;
    if status.is_success() {
        Ok(bytes)
    } else {
        Err(format!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        ))
    }
}

/// One call to a gateway's admin API: the status and body, or why there
/// was no answer. A token marks the change's source (`plan`, `cli`) in the
/// audit trail.
pub async fn admin_request(
    method: http::Method,
    url: &str,
    token: Option<&str>,
    source: &str,
    body: Option<String>,
) -> Result<(http::StatusCode, Vec<u8>), String> {
    let mut request = http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        request = request
            .header(http::header::AUTHORIZATION, format!("Bearer {t}"))
            .header("x-change-source", source);
    }
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, Body::from))
        .map_err(|e| format!("{url}: {e}"))?;
    let client = crate::upstream::client();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(30), client.request(request))
            .await
            .map_err(|_| format!("{url}: no answer"))?
            .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((status, bytes.to_vec()))
}
