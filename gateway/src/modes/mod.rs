//! The public request path: match a route, run its mode, and turn every
//! failure into a problem response with a labelled metric.

mod async_accept;
mod dual_write;
mod passthrough;
mod shadowed;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, Request};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::canary::{Arm, CanarySpec, Sticky};
use crate::events::{EventContext, OutgoingEvent};
use crate::problem::GatewayError;
use crate::routing::{KeySource, Limits, Matched, Route};
use crate::state::Shared;

const OPERATIONS_PREFIX: &str = "/operations/";

/// Longest `X-Request-Id` taken from a caller; others get a fresh one.
const MAX_REQUEST_ID: usize = 200;

const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The caller's `X-Request-Id` when usable, else a new UUID v7.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string)
}

/// What answered a request, for the latency histogram.
#[derive(Debug, Clone)]
struct Served {
    route: String,
    mode: &'static str,
}

/// The single public handler (axum fallback): one span per request (which
/// continues the caller's W3C trace), a request id in the logs, the legacy
/// call, the event headers and the answer, and the latency histogram.
pub async fn handle(State(shared): State<Arc<Shared>>, mut request: Request<Body>) -> Response {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let id = request_id(request.headers());
    let id_header = http::HeaderValue::from_str(&id).ok();
    if let Some(v) = &id_header {
        request.headers_mut().insert(X_REQUEST_ID, v.clone());
    }
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        otel.name = %method,
        otel.kind = "server",
        http.request.method = %method,
        url.path = %request.uri().path(),
        request_id = %id,
        route = tracing::field::Empty,
        mode = tracing::field::Empty,
        canary.arm = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    crate::telemetry::continue_from_headers(&span, request.headers());
    let mut response = handle_inner(Arc::clone(&shared), request)
        .instrument(span.clone())
        .await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let elapsed = started.elapsed();
    if let Some(served) = response.extensions_mut().remove::<Served>() {
        shared
            .metrics
            .request_latency
            .with_label_values(&[&served.route, served.mode])
            .observe(elapsed.as_secs_f64());
    }
    {
        // The access log: one line per request, with the span's fields
        // (request id, route, mode, arm). `RUST_LOG=…,access=off` mutes it.
        let _in = span.enter();
        tracing::info!(
            target: "access",
            status = response.status().as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    }
    if let Some(v) = id_header {
        response.headers_mut().insert(X_REQUEST_ID, v);
    }
    response
}

async fn handle_inner(shared: Arc<Shared>, request: Request<Body>) -> Response {
    let client_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let table = shared.table.load_full();
    let retry_after = table.limits.retry_after_secs;
    // Shed load instead of queueing without bound.
    let Ok(_permit) = shared.in_flight.clone().try_acquire_owned() else {
        let limit = shared.startup.config.server.max_in_flight;
        return finish(
            &shared,
            "",
            "none",
            Err(GatewayError::Overloaded { limit }),
            retry_after,
        );
    };

    if request.method() == http::Method::GET {
        if let Some(id) = request.uri().path().strip_prefix(OPERATIONS_PREFIX) {
            let wait = crate::operations::preferred_wait(request.headers());
            return operation_status(&shared, id, wait, retry_after).await;
        }
    }

    let path = request.uri().path().to_string();
    if !is_safe_path(&path) {
        return finish(
            &shared,
            "",
            "none",
            Err(GatewayError::UnsafePath { path }),
            retry_after,
        );
    }
    let Some(Matched { route, params }) = table.lookup(request.method(), &path) else {
        if let Some(fallback) = &table.fallback {
            let result = passthrough::forward(
                &shared,
                fallback,
                table.limits.clone(),
                request,
                client_addr,
            )
            .await;
            return finish(&shared, "fallback", "passthrough", result, retry_after);
        }
        let err = GatewayError::NoRoute {
            method: request.method().to_string(),
            path,
        };
        return finish(&shared, "", "none", Err(err), retry_after);
    };

    let route: Arc<Route> = route.clone();
    let span = tracing::Span::current();
    span.record("route", route.name.as_str());
    span.record("otel.name", format!("{} {}", route.method, route.name));
    let Some(canary) = route.canary.clone() else {
        span.record("mode", route.mode.as_str());
        let result = serve(
            &shared,
            &route,
            &params,
            table.limits.clone(),
            request,
            client_addr,
        )
        .await;
        return finish(
            &shared,
            &route.name,
            route.mode.as_str(),
            result,
            retry_after,
        );
    };
    let started = std::time::Instant::now();
    let picked = pick_arm(
        &shared,
        &route,
        &canary,
        &params,
        table.limits.clone(),
        request,
        client_addr,
    )
    .await;
    let (serving, request) = match picked {
        Ok(p) => p,
        Err(e) => {
            return finish(
                &shared,
                &route.name,
                route.mode.as_str(),
                Err(e),
                retry_after,
            )
        }
    };
    span.record("mode", serving.mode.as_str());
    span.record("canary.arm", serving.arm.unwrap_or(Arm::Base).as_str());
    let tally = Tally {
        shared: Arc::clone(&shared),
        route: Arc::clone(&route),
        canary,
        arm: serving.arm.unwrap_or(Arm::Base),
        started,
        failed: None,
    };
    let result = serve(
        &shared,
        &serving,
        &params,
        table.limits.clone(),
        request,
        client_addr,
    )
    .await;
    tally.finish(match &result {
        Ok(r) => r.status().is_server_error() || r.extensions().get::<PublishFailed>().is_some(),
        Err(e) => e.status().is_server_error(),
    });
    finish(
        &shared,
        &route.name,
        serving.mode.as_str(),
        result,
        retry_after,
    )
}

/// Counts a canaried request in its arm when it is answered, or as a
/// failure when it never is (the caller gave up first: a hung arm must not
/// escape the checks).
struct Tally {
    shared: Arc<Shared>,
    route: Arc<Route>,
    canary: Arc<CanarySpec>,
    arm: Arm,
    started: std::time::Instant,
    failed: Option<bool>,
}

impl Tally {
    fn finish(mut self, failed: bool) {
        self.failed = Some(failed);
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let failed = self.failed.unwrap_or(true);
        let name = self.route.name.as_str();
        self.shared
            .canaries
            .record(name, &self.canary, self.arm, self.started.elapsed(), failed);
        self.shared
            .metrics
            .canary_requests
            .with_label_values(&[name, self.arm.as_str(), if failed { "error" } else { "ok" }])
            .inc();
    }
}

/// Marks a response whose event could not be published (it was spooled):
/// the caller got its answer, but the arm that served it counts a failure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishFailed;

/// Runs the route's mode.
async fn serve(
    shared: &Arc<Shared>,
    route: &Route,
    params: &[(String, String)],
    limits: Limits,
    request: Request<Body>,
    client_addr: Option<SocketAddr>,
) -> Result<Response, GatewayError> {
    match route.mode {
        crate::config::Mode::Passthrough => match shadowed::wanted(route, request.method()) {
            Some(spec) => {
                shadowed::passthrough(shared, route, spec, limits, request, client_addr).await
            }
            None => {
                passthrough::forward(shared, &route.upstream, limits, request, client_addr).await
            }
        },
        crate::config::Mode::DualWrite => {
            dual_write::serve(shared, route, params, limits, request, client_addr).await
        }
        crate::config::Mode::Async => {
            async_accept::serve(shared, route, params, limits, request).await
        }
    }
}

/// Which arm of a canaried route serves this request. With `sticky = "key"`
/// and a key in the body, the body is read (bounded) first.
async fn pick_arm(
    shared: &Shared,
    route: &Arc<Route>,
    canary: &Arc<CanarySpec>,
    params: &[(String, String)],
    limits: Limits,
    request: Request<Body>,
    client_addr: Option<SocketAddr>,
) -> Result<(Arc<Route>, Request<Body>), GatewayError> {
    let client = client_addr.map(|a| a.ip());
    let mut request = request;
    // The body is read for its key only when the key can decide the arm.
    let undecided = |request: &Request<Body>| {
        let percent = shared.canaries.percent(&route.name, canary);
        let (_, reason) = crate::canary::choose(
            &route.name,
            canary,
            percent,
            request.headers(),
            client,
            None,
        );
        reason != crate::canary::Reason::Override && percent > 0.0 && percent < 100.0
    };
    let key = match (&canary.sticky, route.event.as_ref().map(|e| &e.key)) {
        (Sticky::Key, Some(KeySource::PathParam(name))) => params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone()),
        (Sticky::Key, Some(KeySource::Pointer(pointer))) if undecided(&request) => {
            check_declared_length(&request, limits.max_body_bytes)?;
            let (parts, body) = request.into_parts();
            let bytes = read_body(body, &limits).await?;
            let key = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|json| json.pointer(pointer).and_then(scalar_to_key));
            request = Request::from_parts(parts, Body::from(bytes));
            key
        }
        _ => None,
    };
    // Read now: a rollback during a slow body read must count.
    let percent = shared.canaries.percent(&route.name, canary);
    let (arm, _) = crate::canary::choose(
        &route.name,
        canary,
        percent,
        request.headers(),
        client,
        key.as_deref(),
    );
    Ok(match arm {
        Arm::Base => (route.clone(), request),
        Arm::Canary => (canary.arm.clone(), request),
    })
}

fn finish(
    shared: &Shared,
    route: &str,
    mode: &str,
    result: Result<Response, GatewayError>,
    retry_after: u32,
) -> Response {
    let response = match result {
        Ok(r) => r,
        Err(err) => {
            shared
                .metrics
                .request_errors
                .with_label_values(&[route, err.side().as_str(), err.reason()])
                .inc();
            if err.side() != crate::problem::Side::Client {
                tracing::warn!(route, error = %err, "request failed");
            }
            err.into_problem((!route.is_empty()).then_some(route), retry_after)
        }
    };
    shared
        .metrics
        .requests
        .with_label_values(&[route, mode, response.status().as_str()])
        .inc();
    let mut response = response;
    response.extensions_mut().insert(Served {
        route: route.to_string(),
        mode: match mode {
            "passthrough" => "passthrough",
            "dual-write" => "dual-write",
            "async" => "async",
            _ => "none",
        },
    });
    response
}

async fn operation_status(
    shared: &Shared,
    id: &str,
    wait: Option<std::time::Duration>,
    retry_after: u32,
) -> Response {
    match shared.operations.get(id).await {
        Some(op) => {
            if let Some(limit) = wait {
                op.wait(limit).await;
            }
            axum::Json(op.to_json(id)).into_response()
        }
        None => GatewayError::NoRoute {
            method: "GET".into(),
            path: format!("{OPERATIONS_PREFIX}{id} (unknown or expired operation)"),
        }
        .into_problem(None, retry_after),
    }
}

/// Refuses paths a legacy service might normalise into a path no route
/// exposes: `.`/`..` segments (also percent-encoded, and with `;` path
/// parameters, which servlet containers strip before resolving them), empty
/// segments (`//`, which some servers merge), and encoded `/` or `\`.
/// Runs on every request, so it looks at bytes without allocating.
fn is_safe_path(path: &str) -> bool {
    let encoded_separator =
        |w: &[u8]| w[0] == b'%' && matches!((w[1], w[2] | 0x20), (b'2', b'f') | (b'5', b'c'));
    let bytes = path.as_bytes();
    let segments = bytes.split(|&b| b == b'/').count();
    bytes.split(|&b| b == b'/').enumerate().all(|(i, segment)| {
        // The empty segment before the leading `/`, and after a trailing one.
        let empty_allowed = i == 0 || i + 1 == segments;
        (empty_allowed || !segment.is_empty())
            && !is_dot_segment(without_parameters(segment))
            && !segment.contains(&b'\\')
            && !segment.windows(3).any(encoded_separator)
    })
}

/// A segment without its `;` path parameters (also `%3B`).
fn without_parameters(segment: &[u8]) -> &[u8] {
    let plain = segment.iter().position(|&b| b == b';');
    let encoded = segment
        .windows(3)
        .position(|w| w[0] == b'%' && w[1] == b'3' && w[2] | 0x20 == b'b');
    match (plain, encoded) {
        (Some(a), Some(b)) => &segment[..a.min(b)],
        (Some(a), None) | (None, Some(a)) => &segment[..a],
        (None, None) => segment,
    }
}

/// `.` or `..`, each dot written plainly or as `%2e`/`%2E`.
fn is_dot_segment(segment: &[u8]) -> bool {
    let mut dots = 0;
    let mut rest = segment;
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'.' {
            rest = tail;
        } else if first == b'%' && tail.len() >= 2 && tail[0] == b'2' && tail[1] | 0x20 == b'e' {
            rest = &tail[2..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// Reads a whole body, refusing more than the size limit or a body that
/// takes longer than the read timeout.
pub(crate) async fn read_body(body: Body, limits: &Limits) -> Result<Bytes, GatewayError> {
    let limit = limits.max_body_bytes;
    let collect = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(limits.body_read_timeout, collect).await {
        Err(_) => Err(GatewayError::BodyTimeout {
            timeout_ms: u64::try_from(limits.body_read_timeout.as_millis()).unwrap_or(u64::MAX),
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::BodyTooLarge { limit })
        }
        Ok(Err(e)) => Err(GatewayError::BodyRead(e.to_string())),
    }
}

/// Refuses at once a body whose declared length is over the limit.
pub(crate) fn check_declared_length(
    request: &Request<Body>,
    limit: usize,
) -> Result<(), GatewayError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => Err(GatewayError::BodyTooLarge { limit }),
        _ => Ok(()),
    }
}

/// Validates and encodes a body into the route's event. Nothing is sent.
pub(crate) fn encode_event(
    route: &Route,
    params: &[(String, String)],
    body: &[u8],
    ctx: &EventContext,
) -> Result<OutgoingEvent, GatewayError> {
    let Some(spec) = &route.event else {
        return Err(GatewayError::Internal(format!(
            "route {} publishes but has no event spec",
            route.name
        )));
    };
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| GatewayError::MalformedJson(e.to_string()))?;
    let datum = spec
        .schema
        .encode_json_with(&json, spec.ignore_unknown_fields)
        .map_err(|errors| GatewayError::SchemaViolation {
            schema: spec.schema.full_name.clone(),
            errors,
        })?;
    let key = match &spec.key {
        KeySource::Pointer(p) => json.pointer(p).and_then(scalar_to_key),
        KeySource::PathParam(name) => params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone()),
    }
    .ok_or_else(|| GatewayError::MissingKey {
        key: match &spec.key {
            KeySource::Pointer(p) => p.clone(),
            KeySource::PathParam(n) => format!("{{{n}}}"),
        },
    })?;
    Ok(OutgoingEvent::new(
        &route.name,
        &spec.topic,
        &spec.schema.full_name,
        key,
        crate::schema::confluent_frame(spec.schema_id, &datum),
        ctx,
    ))
}

fn scalar_to_key(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The request's method and path with query.
pub(crate) fn origin(parts: &http::request::Parts) -> (String, String) {
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    (parts.method.to_string(), path)
}

/// Longest `Idempotency-Key` accepted (it is kept in memory and copied
/// into every event's headers).
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Request facts copied into the event headers. A malformed `traceparent`
/// is dropped, as W3C Trace Context asks; an unusable `Idempotency-Key` is
/// refused, since silently ignoring it would let a retry publish twice.
pub(crate) fn event_context(headers: &http::HeaderMap) -> Result<EventContext, GatewayError> {
    let get = |name: &str| headers.get(name).map(|v| v.to_str().map(str::to_string));
    let idempotency_key = match get("idempotency-key") {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY => Some(k),
        Some(_) => {
            return Err(GatewayError::InvalidHeader {
                name: "Idempotency-Key",
                reason: "must be 1 to 255 visible ASCII characters",
            })
        }
    };
    // The request span's context when traces are on (so consumers continue
    // this trace), else the caller's own, passed through.
    let current = crate::telemetry::current_context_pairs();
    let from_span = |name: &str| {
        current
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (traceparent, tracestate) = match from_span("traceparent") {
        Some(tp) => (Some(tp), from_span("tracestate")),
        None => {
            let tp = get("traceparent")
                .and_then(Result::ok)
                .filter(|t| is_traceparent(t));
            let ts = tp
                .as_ref()
                .and(get("tracestate").and_then(Result::ok))
                .filter(|s| s.len() <= 512);
            (tp, ts)
        }
    };
    Ok(EventContext {
        traceparent,
        tracestate,
        idempotency_key,
        request_id: get("x-request-id").and_then(Result::ok),
        origin: None,
        request_hash: None,
    })
}

/// Fills in the request's origin and, for a request with an
/// `Idempotency-Key`, its fingerprint; returns (key, fingerprint), which is
/// how a retry of the same request is recognised. The same key on another
/// resource of the route, or with another body, is another request.
pub(crate) fn identify(
    ctx: &mut EventContext,
    parts: &http::request::Parts,
    body: &[u8],
) -> Option<(String, u64)> {
    ctx.origin = Some(origin(parts));
    ctx.request_hash = ctx
        .idempotency_key
        .as_ref()
        .map(|_| crate::idempotency::request_hash(&parts.method, &parts.uri, body));
    ctx.idempotency_key.clone().zip(ctx.request_hash)
}

/// `version-traceid-parentid-flags`, lowercase hex (W3C Trace Context).
fn is_traceparent(value: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let not_zero = |s: &str| s.bytes().any(|b| b != b'0');
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() >= 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && not_zero(parts[1])
        && hex(parts[2], 16)
        && not_zero(parts[2])
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_validated_and_idempotency_keys_are_bounded() {
        let mut h = http::HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert("traceparent", tp.parse().expect("value"));
        h.insert("idempotency-key", "k-1".parse().expect("value"));
        let ctx = event_context(&h).expect("valid");
        assert_eq!(ctx.traceparent.as_deref(), Some(tp));
        assert_eq!(ctx.idempotency_key.as_deref(), Some("k-1"));

        h.insert(
            "traceparent",
            "00-XYZ-00f067aa0ba902b7-01".parse().expect("value"),
        );
        assert!(event_context(&h)
            .expect("still valid")
            .traceparent
            .is_none());

        h.insert("idempotency-key", "x".repeat(256).parse().expect("value"));
        assert!(matches!(
            event_context(&h),
            Err(GatewayError::InvalidHeader { .. })
        ));
    }

    #[test]
    fn unsafe_paths_are_recognised() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/a/%2e%2E/b",
            "/a%2fb",
            "/a%5Cb",
            "/..",
            "/public/..;/admin",
            "/public/..%3b/admin",
            "/public/.;x/admin",
            "/public//admin",
            "//admin",
        ] {
            assert!(!is_safe_path(bad), "{bad}");
        }
        for good in [
            "/orders/1",
            "/files/a.b",
            "/v1.2/x",
            "/a/...b",
            "/a/.../b",
            "/%2e%2e%2e",
            "/a%2",
            "/",
            "/orders/",
            "/items/1;v=2",
            "/a/..x;y",
        ] {
            assert!(is_safe_path(good), "{good}");
        }
    }
}
