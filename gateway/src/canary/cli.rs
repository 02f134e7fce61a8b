//! `gateway canary status|pause|resume|abort|promote <route>`: the admin
//! API from a terminal. Exit codes: 0 done, 1 refused (no such canary, an
//! action that does not apply, no token), 2 no answer or unusable answer.

use serde_json::Value;

use crate::control::tokens::ENV_TOKEN;
use crate::plan::apply::admin_request;
use crate::schema::commands::Outcome;

fn fail(code: u8, line: String) -> Outcome {
    Outcome {
        code,
        lines: vec![format!("error: {line}")],
    }
}

/// `status` (one route, or every canary) or a person's action.
pub async fn run(
    admin: &str,
    action: &str,
    route: Option<&str>,
    reason: Option<&str>,
    raw: bool,
) -> Outcome {
    let base = admin.trim_end_matches('/');
    let (method, url, token, body) = match (action, route) {
        ("status", None) => (
            http::Method::GET,
            format!("{base}/admin/canary"),
            None,
            None,
        ),
        ("status", Some(r)) => (
            http::Method::GET,
            format!("{base}/admin/canary/{r}"),
            None,
            None,
        ),
        (_, None) => return fail(2, format!("{action} needs a route")),
        (_, Some(r)) => {
            let Ok(token) = std::env::var(ENV_TOKEN) else {
                return fail(
                    1,
                    format!("{ENV_TOKEN} must hold an admin token to {action} a canary"),
                );
            };
            let body = reason.map(|r| serde_json::json!({ "reason": r }).to_string());
            (
                http::Method::POST,
                format!("{base}/admin/canary/{r}/{action}"),
                Some(token),
                body,
            )
        }
    };
    let (status, bytes) = match admin_request(method, &url, token.as_deref(), "cli", body).await {
        Ok(answer) => answer,
        Err(e) => return fail(2, e),
    };
    let Ok(json) = serde_json::from_slice::<Value>(&bytes) else {
        return fail(
            2,
            format!("{url}: {status}: {}", String::from_utf8_lossy(&bytes)),
        );
    };
    if !status.is_success() {
        let detail = json["detail"].as_str().unwrap_or("refused");
        let code = if status.is_server_error() { 2 } else { 1 };
        return fail(code, format!("{status}: {detail}"));
    }
    if raw {
        return Outcome {
            code: 0,
            lines: vec![serde_json::to_string_pretty(&json).unwrap_or_default()],
        };
    }
    let mut lines = Vec::new();
    match json["canaries"].as_array() {
        Some(all) if all.is_empty() => lines.push("no canaries".into()),
        Some(all) => all.iter().for_each(|c| describe(c, &mut lines)),
        None => describe(&json, &mut lines),
    }
    Outcome { code: 0, lines }
}

/// `1` for 1.0, `0.5` for 0.5: shares as people write them.
fn pct(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Some(f) => f.to_string(),
        None => v.to_string(),
    }
}

/// A canary's view in a few lines.
fn describe(c: &Value, lines: &mut Vec<String>) {
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    lines.push(format!(
        "{}: {} → {} canary at {}% ({}), step {} of {}",
        s(&c["route"]),
        s(&c["base"]["mode"]),
        s(&c["canary"]["mode"]),
        pct(&c["percent"]),
        s(&c["status"]),
        s(&c["step"]),
        c["steps"].as_array().map_or(0, Vec::len),
    ));
    if let Some(next) = c["next_step_at"].as_str() {
        lines.push(format!("  next step at {next} if healthy"));
    }
    let check = &c["last_check"];
    if check.is_object() {
        lines.push(format!(
            "  last check {}: {} ({} replica(s))",
            s(&check["at"]),
            s(&check["outcome"]),
            s(&check["replicas"])
        ));
        for arm in ["canary", "base"] {
            let f = &check[arm];
            lines.push(format!(
                "  {arm:<6} arm: {} requests, {} errors ({}), p99 {} ms",
                s(&f["requests"]),
                s(&f["errors"]),
                s(&f["error_rate"]),
                s(&f["p99_ms"]),
            ));
        }
    }
    if let Some(decisions) = c["decisions"].as_array() {
        for d in decisions.iter().take(5) {
            lines.push(format!(
                "  {} {} {}% → {}% by {}: {}",
                s(&d["at"]),
                s(&d["action"]),
                pct(&d["from_percent"]),
                pct(&d["to_percent"]),
                s(&d["by"]),
                s(&d["reason"]),
            ));
        }
    }
}
