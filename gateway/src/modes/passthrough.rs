//! passthrough: stream the request to the legacy service and its answer back.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::Request;
use axum::response::Response;

use super::check_declared_length;
use crate::problem::GatewayError;
use crate::routing::Limits;
use crate::state::Shared;
use crate::upstream::Upstream;

/// Forwards the request with its body streamed under the size limit.
pub(super) async fn forward(
    shared: &Shared,
    upstream: &Upstream,
    limits: Limits,
    request: Request<Body>,
    client_addr: Option<SocketAddr>,
) -> Result<Response, GatewayError> {
    check_declared_length(&request, limits.max_body_bytes)?;
    let (parts, body) = request.into_parts();
    let limited = Body::new(http_body_util::Limited::new(body, limits.max_body_bytes));
    let request = Request::from_parts(parts, limited);
    upstream
        .call(
            &shared.http,
            &shared.metrics,
            request,
            limits.forwarding(client_addr),
        )
        .await
        .map_err(|e| match e {
            GatewayError::BodyTooLarge { .. } => GatewayError::BodyTooLarge {
                limit: limits.max_body_bytes,
            },
            other => other,
        })
}
