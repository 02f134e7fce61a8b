//! The admin port: health, readiness, the route table, metrics and the
//! read-only schema catalog in the Confluent Schema Registry shape.

mod dashboard;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;

use crate::control::audit::Change;
use crate::control::tokens::Denied;
use crate::control::FlipError;
use crate::state::Shared;

/// The admin router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/admin/routes", get(routes))
        .route(
            "/admin/routes/{name}/mode",
            put(set_mode).delete(clear_mode),
        )
        .route("/admin/reload", post(reload))
        .route("/admin/audit", get(audit))
        .route("/admin/shadow/{route}", get(shadow_report))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/admin/dashboard.json", get(dashboard::data))
        .route("/admin/canary", get(canaries))
        .route("/admin/canary/{route}", get(canary))
        .route("/admin/canary/{route}/{action}", post(canary_action))
        .route("/metrics", get(metrics))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": "shutting down"})),
        )
            .into_response();
    }
    match shared
        .publisher
        .metadata_reachable(Duration::from_secs(2))
        .await
    {
        Ok(()) => (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": format!("Kafka metadata unreachable: {e}")})),
        )
            .into_response(),
    }
}

/// The token's name.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<String, Denied> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    shared.tokens.authorize(header)
}

fn denied(denied: Denied) -> Response {
    let (status, detail) = match denied {
        Denied::Disabled => (
            StatusCode::FORBIDDEN,
            "admin writes are disabled: no token is configured ([admin] tokens_file or GATEWAY_ADMIN_TOKEN)",
        ),
        Denied::Missing => (StatusCode::UNAUTHORIZED, "a bearer token is required"),
        Denied::Wrong => (StatusCode::FORBIDDEN, "this token may not change routes"),
    };
    let mut r = (
        status,
        Json(json!({"status": status.as_u16(), "detail": detail})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

#[derive(serde::Deserialize)]
struct ModeBody {
    mode: crate::config::Mode,
}

async fn set_mode(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let who = match authorize(&shared, &headers) {
        Ok(w) => w,
        Err(d) => return denied(d),
    };
    let mode = match serde_json::from_slice::<ModeBody>(&body) {
        Ok(b) => b.mode,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"status": 400, "detail": format!("expected {{\"mode\": \"passthrough|dual-write|async\"}}: {e}")})),
            )
                .into_response()
        }
    };
    let source = change_source(&headers);
    flip_response(crate::control::flip(&shared, &name, Some(mode), &who, source).await)
}

async fn clear_mode(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let who = match authorize(&shared, &headers) {
        Ok(w) => w,
        Err(d) => return denied(d),
    };
    let source = change_source(&headers);
    flip_response(crate::control::flip(&shared, &name, None, &who, source).await)
}

/// `X-Change-Source: plan` marks flips made by `gateway plan` in the audit.
fn change_source(headers: &HeaderMap) -> &'static str {
    match headers.get("x-change-source").and_then(|v| v.to_str().ok()) {
        Some("plan") => "plan",
        Some("cli") => "cli",
        _ => "api",
    }
}

fn flip_response(result: Result<Change, FlipError>) -> Response {
    match result {
        Ok(change) => Json(json!(change)).into_response(),
        Err(e) => {
            let status = match &e {
                FlipError::UnknownRoute(_) => StatusCode::NOT_FOUND,
                FlipError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                FlipError::Control(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            let problems = match &e {
                FlipError::Invalid(p) => json!(p),
                _ => json!([]),
            };
            (
                status,
                Json(json!({"status": status.as_u16(), "detail": e.to_string(), "problems": problems})),
            )
                .into_response()
        }
    }
}

async fn reload(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let who = match authorize(&shared, &headers) {
        Ok(w) => w,
        Err(d) => return denied(d),
    };
    let Some(path) = shared.config_path.clone() else {
        return (
            StatusCode::CONFLICT,
            Json(json!({"detail": "no config file to reload"})),
        )
            .into_response();
    };
    match crate::reload::reload_as(&shared, &path, &who, "api").await {
        Ok(n) => Json(json!({"reloaded": true, "routes": n})).into_response(),
        Err(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"reloaded": false, "problems": problems})),
        )
            .into_response(),
    }
}

async fn shadow_report(State(shared): State<Arc<Shared>>, Path(route): Path<String>) -> Response {
    match shared.shadow.report(&route) {
        Some(r) => Json(r).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": format!("no shadow comparisons for route {route} yet")})),
        )
            .into_response(),
    }
}

async fn canaries(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let table = shared.table.load_full();
    let file = shared.file_config.load_full();
    let views: Vec<_> = file
        .config
        .routes
        .iter()
        .filter(|r| r.canary.is_some())
        .filter_map(|r| crate::canary::engine::view(&shared, &table, &r.name))
        .collect();
    Json(json!({ "canaries": views }))
}

async fn canary(State(shared): State<Arc<Shared>>, Path(route): Path<String>) -> Response {
    let table = shared.table.load_full();
    match crate::canary::engine::view(&shared, &table, &route) {
        Some(v) => Json(v).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"status": 404, "detail": format!("route {route} has no canary")})),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize, Default)]
struct ActionBody {
    reason: Option<String>,
}

async fn canary_action(
    State(shared): State<Arc<Shared>>,
    Path((route, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use crate::canary::engine::{act, ActError};
    let who = match authorize(&shared, &headers) {
        Ok(w) => w,
        Err(d) => return denied(d),
    };
    let Some(action) = crate::canary::state::Action::by_person(&action) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"status": 404, "detail": format!("no canary action {action:?} (pause, resume, abort, promote)")})),
        )
            .into_response();
    };
    let body: ActionBody = if body.is_empty() {
        ActionBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"status": 400, "detail": format!("expected {{\"reason\": \"...\"}} or no body: {e}")})),
                )
                    .into_response()
            }
        }
    };
    let source = change_source(&headers);
    match act(
        &shared,
        &route,
        action,
        &who,
        source,
        body.reason.as_deref(),
    )
    .await
    {
        Ok(_) => {
            let table = shared.table.load_full();
            Json(crate::canary::engine::view(&shared, &table, &route)).into_response()
        }
        Err(e) => {
            let status = match &e {
                ActError::NotFound(_) => StatusCode::NOT_FOUND,
                ActError::Conflict(_) => StatusCode::CONFLICT,
                ActError::Control(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            (
                status,
                Json(json!({"status": status.as_u16(), "detail": e.to_string()})),
            )
                .into_response()
        }
    }
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Json<serde_json::Value> {
    Json(json!({ "changes": shared.audit.recent(q.limit.unwrap_or(100).min(1000)) }))
}

async fn routes(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let table = shared.table.load();
    let file = shared.file_config.load();
    let overrides = shared.overrides.load();
    let routes: Vec<_> = table
        .routes()
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "method": r.method.as_str(),
                "path": r.path,
                "mode": r.mode.as_str(),
                "file_mode": file.config.routes.iter().find(|f| f.name == r.name).map(|f| f.mode.as_str()),
                "override": overrides.get(&r.name).map(|m| m.as_str()),
                "upstream": r.upstream.name,
                "topic": r.event.as_ref().map(|e| e.topic.clone()),
                "schema": r.event.as_ref().map(|e| e.schema.full_name.clone()),
                "schema_id": r.event.as_ref().map(|e| e.schema_id),
                "subject": r.event.as_ref().map(|e| e.subject.clone()),
                "canary": r.canary.as_ref().map(|c| {
                    let state = shared.canaries.state_of(&r.name, c);
                    json!({
                        "mode": c.mode.as_str(),
                        "upstream": c.arm.upstream.name,
                        "percent": shared.canaries.percent(&r.name, c),
                        "status": state.map(|s| s.status.as_str()),
                    })
                }),
            })
        })
        .collect();
    let last_error = shared.last_reload_error.load_full();
    Json(json!({
        "routes": routes,
        "fallback": table.fallback.as_ref().map(|u| u.name.clone()),
        "last_reload_error": last_error.as_deref(),
        "spool_depth": shared.spool.depth(),
    }))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    shared
        .metrics
        .spool_depth
        .set(i64::try_from(shared.spool.depth()).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

async fn schema_by_id(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let found = id.parse::<u32>().ok().and_then(|id| {
        shared
            .known_schemas
            .read()
            .ok()
            .and_then(|k| k.get(&id).cloned())
    });
    match found {
        Some(schema) => Json(json!({ "schema": schema.text })).into_response(),
        // Confluent's error shape, so registry clients report it properly.
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error_code": 40403, "message": format!("Schema {id} not found")})),
        )
            .into_response(),
    }
}
