//! A small Confluent Schema Registry client: register a subject's schema
//! (or only look it up) and learn its id.

use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;

use crate::upstream::HttpClient;

/// Registers `canonical` under `subject` (idempotent in the registry: an
/// identical schema returns its existing id) and returns the id.
pub async fn register(
    client: &HttpClient,
    base: &str,
    subject: &str,
    canonical: &str,
    timeout: Duration,
) -> Result<u32, String> {
    let url = format!("{}/subjects/{subject}/versions", base.trim_end_matches('/'));
    let (status, body) = post_schema(client, &url, canonical, timeout).await?;
    id_from(&url, status, &body)
}

async fn post_schema(
    client: &HttpClient,
    url: &str,
    canonical: &str,
    timeout: Duration,
) -> Result<(http::StatusCode, axum::body::Bytes), String> {
    let body = serde_json::json!({ "schema": canonical }).to_string();
    let request = http::Request::post(url)
        .header(
            http::header::CONTENT_TYPE,
            "application/vnd.schemaregistry.v1+json",
        )
        .header(
            http::header::ACCEPT,
            "application/vnd.schemaregistry.v1+json, application/json",
        )
        .body(Body::from(body))
        .map_err(|e| format!("{url}: {e}"))?;
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| format!("{url}: no answer within {} ms", timeout.as_millis()))?
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let bytes = tokio::time::timeout(timeout, response.into_body().collect())
        .await
        .map_err(|_| format!("{url}: body not received within {} ms", timeout.as_millis()))?
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

fn id_from(url: &str, status: http::StatusCode, bytes: &[u8]) -> Result<u32, String> {
    if !status.is_success() {
        return Err(format!(
            "{url}: registry answered {status}: {}",
            String::from_utf8_lossy(bytes)
        ));
    }
    let parsed: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{url}: bad JSON from registry: {e}"))?;
    parsed
        .get("id")
        .and_then(serde_json::Value::as_u64)
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| format!("{url}: registry answer has no numeric id: {parsed}"))
}

/// Looks `canonical` up under `subject` without registering it. `None` when
/// the registry does not know the subject or that schema under it.
pub async fn lookup(
    client: &HttpClient,
    base: &str,
    subject: &str,
    canonical: &str,
    timeout: Duration,
) -> Result<Option<u32>, String> {
    let url = format!("{}/subjects/{subject}", base.trim_end_matches('/'));
    match post_schema(client, &url, canonical, timeout).await? {
        (status, _) if status == http::StatusCode::NOT_FOUND => Ok(None),
        (status, body) => id_from(&url, status, &body).map(Some),
    }
}
