//! Routes with `shadow`: the legacy answer goes to the caller unchanged; a
//! copy of the request and that answer go to the shadow runner, which calls
//! the candidate in the background.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::response::Response;
use http_body_util::BodyExt;

use crate::problem::GatewayError;
use crate::routing::{Limits, Route};
use crate::shadow::{comparable, compare::Answer, Job, ShadowSpec};
use crate::state::Shared;

/// The request facts a shadow copy needs.
pub(super) struct Copy {
    pub method: http::Method,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Copy {
    pub(super) fn of(parts: &http::request::Parts, body: &Bytes) -> Self {
        Self {
            method: parts.method.clone(),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string()),
            headers: parts.headers.clone(),
            body: body.clone(),
        }
    }
}

/// The route's shadow settings when this request is to be copied.
pub(super) fn wanted(route: &Route, method: &http::Method) -> Option<Arc<ShadowSpec>> {
    route.shadow.clone().filter(|s| s.wants(method))
}

/// Passes the legacy answer through and submits the comparison. Answers
/// without a small declared length are passed on unbuffered and not compared.
pub(super) async fn tee(
    shared: &Shared,
    route: &Route,
    spec: Arc<ShadowSpec>,
    copy: Copy,
    response: Response,
) -> Response {
    if !comparable(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await else {
        // The legacy body broke; the caller sees what hyper saw.
        return Response::from_parts(parts, Body::empty());
    };
    let bytes = collected.to_bytes();
    let primary = Answer::from_parts(&parts, &bytes);
    shared.shadow.submit(Job {
        route: route.name.clone(),
        spec,
        primary_upstream: route.upstream.clone(),
        method: copy.method,
        path: copy.path,
        headers: copy.headers,
        body: copy.body,
        primary,
        arm: route.arm,
    });
    Response::from_parts(parts, Body::from(bytes))
}

/// After a dual-write or async event: schedules the read-after-write
/// comparison, when the route asks for one.
pub(super) fn read_back(
    shared: &Shared,
    route: &Route,
    params: &[(String, String)],
    body: &Bytes,
    dual_write: bool,
) {
    let Some(spec) = route
        .shadow
        .clone()
        .filter(|s| s.read_after_write.is_some())
    else {
        return;
    };
    if fastrand::u8(0..100) >= spec.percent {
        return;
    }
    let body = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    shared.shadow.submit_read_back(crate::shadow::ReadBack {
        route: route.name.clone(),
        legacy: dual_write.then(|| route.upstream.clone()),
        spec,
        body,
        params: params.to_vec(),
        arm: route.arm,
    });
}

/// passthrough with a shadow copy: the request body is buffered (bounded)
/// so it can be sent twice.
pub(super) async fn passthrough(
    shared: &Shared,
    route: &Route,
    spec: Arc<ShadowSpec>,
    limits: Limits,
    request: Request<Body>,
    client_addr: Option<SocketAddr>,
) -> Result<Response, GatewayError> {
    super::check_declared_length(&request, limits.max_body_bytes)?;
    let (parts, body) = request.into_parts();
    let bytes = super::read_body(body, &limits).await?;
    let copy = Copy::of(&parts, &bytes);
    let request = Request::from_parts(parts, Body::from(bytes));
    let response = route
        .upstream
        .call(
            &shared.http,
            &shared.metrics,
            request,
            limits.forwarding(client_addr),
        )
        .await?;
    Ok(tee(shared, route, spec, copy, response).await)
}
