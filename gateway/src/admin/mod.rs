//! The admin port: health, readiness, the route table, metrics and the
//! read-only schema catalog in the Confluent Schema Registry shape.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::Shared;

/// The admin router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/admin/routes", get(routes))
        .route("/metrics", get(metrics))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
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

async fn routes(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let table = shared.table.load();
    let routes: Vec<_> = table
        .routes()
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "method": r.method.as_str(),
                "path": r.path,
                "mode": r.mode.as_str(),
                "upstream": r.upstream.name,
                "topic": r.event.as_ref().map(|e| e.topic.clone()),
                "schema": r.event.as_ref().map(|e| e.schema.full_name.clone()),
                "schema_id": r.event.as_ref().map(|e| e.schema_id),
                "subject": r.event.as_ref().map(|e| e.subject.clone()),
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
