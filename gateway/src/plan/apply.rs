//! Carrying a phase out: on the routes file (edited in place, comments
//! kept, validated before it replaces the old file) or on a running gateway
//! through its admin API.

use std::collections::BTreeMap;
use std::path::Path;

use axum::body::Body;
use http_body_util::BodyExt;

use crate::config::{LoadedConfig, Mode};

/// Each route's mode in the file.
pub fn file_modes(loaded: &LoadedConfig) -> BTreeMap<String, Mode> {
    loaded
        .config
        .routes
        .iter()
        .map(|r| (r.name.clone(), r.mode))
        .collect()
}

/// Live modes (and file modes) of a running gateway, from `/admin/routes`.
pub async fn live_modes(admin: &str) -> Result<Vec<(String, Mode, Option<Mode>)>, String> {
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
                    Some((
                        r["name"].as_str()?.to_string(),
                        parse(&r["mode"])?,
                        parse(&r["file_mode"]),
                    ))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Sets each route's `mode` in the routes file. The edited file must pass
/// `gateway check` before it replaces the old one; comments and layout stay.
pub async fn to_file(path: &Path, changes: &[(String, Mode)]) -> Result<(), Vec<String>> {
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
    for (name, mode) in changes {
        let table = routes
            .iter_mut()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name.as_str()))
            .ok_or_else(|| vec![format!("route {name} is not in {}", path.display())])?;
        // Keep the spacing and any trailing comment of the old value.
        let mut value = toml_edit::Value::from(mode.as_str());
        if let Some(old) = table.get("mode").and_then(|i| i.as_value()) {
            *value.decor_mut() = old.decor().clone();
        }
        table["mode"] = toml_edit::Item::Value(value);
    }
    let tmp = path.with_extension("toml.plan-tmp");
    std::fs::write(&tmp, doc.to_string()).map_err(|e| vec![format!("{}: {e}", tmp.display())])?;
    if let Err(problems) = crate::server::check(&tmp).await {
        let _ = std::fs::remove_file(&tmp);
        return Err(problems.iter().map(ToString::to_string).collect());
    }
    std::fs::rename(&tmp, path).map_err(|e| vec![format!("{}: {e}", path.display())])
}

/// Flips each route on a running gateway (`PUT /admin/routes/{name}/mode`).
pub async fn to_gateway(
    admin: &str,
    token: &str,
    changes: &[(String, Mode)],
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for (name, mode) in changes {
        let url = format!("{}/admin/routes/{name}/mode", admin.trim_end_matches('/'));
        let body = serde_json::json!({ "mode": mode.as_str() }).to_string();
        if let Err(e) = send(http::Method::PUT, &url, Some(token), Some(body)).await {
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
