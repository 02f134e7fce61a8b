//! The one place where failures become responses: every error the request
//! path can produce maps to a status, a JSON problem body (RFC 9457) and the
//! labels metrics, logs and later the shadow/canary logic use.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::events::PublishError;
use crate::schema::FieldError;

/// A panic in a handler becomes a 500 problem, not a dropped connection.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("panic");
    tracing::error!(detail, "handler panicked");
    GatewayError::Internal(format!("handler panicked: {detail}")).into_problem(None, 1)
}

/// Which side of the gateway a failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller sent something the gateway will not take.
    Client,
    /// The legacy service failed or was unreachable.
    Upstream,
    /// Kafka could not take the event.
    Kafka,
    /// A fault inside the gateway.
    Internal,
}

impl Side {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Kafka => "kafka",
            Side::Internal => "internal",
        }
    }
}

/// Everything that can go wrong while serving one request.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route matches and there is no fallback.
    #[error("no route for {method} {path}")]
    NoRoute {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The path has dot-segments or encoded separators that could reach a
    /// path no route exposes once the legacy service normalises it.
    #[error("path {path:?} has '.'/'..' segments or encoded separators")]
    UnsafePath {
        /// The raw path.
        path: String,
    },
    /// A request header the gateway interprets is unusable.
    #[error("header {name}: {reason}")]
    InvalidHeader {
        /// Header name.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The body is larger than `server.max_body_bytes`.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body could not be read from the client.
    #[error("request body could not be read: {0}")]
    BodyRead(String),
    /// The body is not JSON.
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body is JSON but does not fit the route's schema.
    #[error("request body does not match schema {schema}")]
    SchemaViolation {
        /// Full name of the schema.
        schema: String,
        /// Each offending field.
        errors: Vec<FieldError>,
    },
    /// The event key could not be taken from the request.
    #[error("event key {key} is missing or not a scalar")]
    MissingKey {
        /// The configured key.
        key: String,
    },
    /// An `Idempotency-Key` was reused with a different body.
    #[error("Idempotency-Key {key:?} was already used with a different body")]
    IdempotencyConflict {
        /// The key.
        key: String,
    },
    /// The legacy service did not answer in time.
    #[error("upstream {upstream} did not answer within {timeout_ms} ms")]
    UpstreamTimeout {
        /// Upstream name.
        upstream: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The legacy service could not be reached.
    #[error("upstream {upstream} is unreachable: {detail}")]
    UpstreamConnect {
        /// Upstream name.
        upstream: String,
        /// Cause.
        detail: String,
    },
    /// The gateway did not call the legacy service: its concurrency limit is
    /// reached or its circuit breaker is open.
    #[error("upstream {upstream} is not called: {why}")]
    UpstreamShed {
        /// Upstream name.
        upstream: String,
        /// `concurrency_limit` or `circuit_open`.
        why: &'static str,
    },
    /// The legacy service broke the exchange after connecting.
    #[error("upstream {upstream} failed: {detail}")]
    UpstreamProtocol {
        /// Upstream name.
        upstream: String,
        /// Cause.
        detail: String,
    },
    /// Kafka did not acknowledge the event.
    #[error("event for topic {topic} was not accepted by Kafka: {source}")]
    Publish {
        /// Topic.
        topic: String,
        /// Why.
        source: PublishError,
    },
    /// The body did not arrive within `server.body_read_timeout_ms`.
    #[error("request body not received within {timeout_ms} ms")]
    BodyTimeout {
        /// The timeout.
        timeout_ms: u64,
    },
    /// `server.max_in_flight` requests are already being served.
    #[error("gateway is at its limit of {limit} requests in flight")]
    Overloaded {
        /// The limit.
        limit: usize,
    },
    /// A fault inside the gateway.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NoRoute { .. } => StatusCode::NOT_FOUND,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyRead(_)
            | GatewayError::MalformedJson(_)
            | GatewayError::UnsafePath { .. }
            | GatewayError::InvalidHeader { .. } => StatusCode::BAD_REQUEST,
            GatewayError::SchemaViolation { .. } | GatewayError::MissingKey { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            GatewayError::IdempotencyConflict { .. } => StatusCode::CONFLICT,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamConnect { .. } | GatewayError::UpstreamProtocol { .. } => {
                StatusCode::BAD_GATEWAY
            }
            // A record Kafka will never take is not a reason to come back later.
            GatewayError::Publish { source, .. } if !source.retryable() => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            GatewayError::Publish { .. }
            | GatewayError::Overloaded { .. }
            | GatewayError::UpstreamShed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            GatewayError::NoRoute { .. }
            | GatewayError::UnsafePath { .. }
            | GatewayError::InvalidHeader { .. }
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::BodyRead(_)
            | GatewayError::MalformedJson(_)
            | GatewayError::SchemaViolation { .. }
            | GatewayError::MissingKey { .. }
            | GatewayError::IdempotencyConflict { .. }
            | GatewayError::BodyTimeout { .. } => Side::Client,
            GatewayError::UpstreamTimeout { .. }
            | GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamProtocol { .. }
            | GatewayError::UpstreamShed { .. } => Side::Upstream,
            GatewayError::Publish { .. } => Side::Kafka,
            GatewayError::Internal(_) | GatewayError::Overloaded { .. } => Side::Internal,
        }
    }

    /// Whether sending the same request again may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            GatewayError::UpstreamTimeout { .. }
            | GatewayError::UpstreamConnect { .. }
            | GatewayError::Overloaded { .. }
            | GatewayError::UpstreamShed { .. }
            | GatewayError::BodyTimeout { .. } => true,
            GatewayError::Publish { source, .. } => source.retryable(),
            _ => false,
        }
    }

    /// Short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::NoRoute { .. } => "no_route",
            GatewayError::UnsafePath { .. } => "unsafe_path",
            GatewayError::InvalidHeader { .. } => "invalid_header",
            GatewayError::BodyTooLarge { .. } => "body_too_large",
            GatewayError::BodyRead(_) => "body_read",
            GatewayError::MalformedJson(_) => "malformed_json",
            GatewayError::SchemaViolation { .. } => "schema_violation",
            GatewayError::MissingKey { .. } => "missing_key",
            GatewayError::IdempotencyConflict { .. } => "idempotency_conflict",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::UpstreamConnect { .. } => "upstream_connect",
            GatewayError::UpstreamProtocol { .. } => "upstream_protocol",
            GatewayError::UpstreamShed { why, .. } => why,
            GatewayError::Publish { source, .. } => source.reason(),
            GatewayError::BodyTimeout { .. } => "body_timeout",
            GatewayError::Overloaded { .. } => "overloaded",
            GatewayError::Internal(_) => "internal",
        }
    }

    /// Renders the problem response. `route` is the matched route, if any.
    pub fn into_problem(self, route: Option<&str>, retry_after_secs: u32) -> Response {
        let status = self.status();
        let mut body = json!({
            "type": format!("urn:gateway:problem:{}", self.reason()),
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
            "side": self.side().as_str(),
            "retryable": self.retryable(),
        });
        if let Some(route) = route {
            body["route"] = json!(route);
        }
        match &self {
            GatewayError::SchemaViolation { errors, .. } => body["errors"] = json!(errors),
            GatewayError::Publish { topic, .. } => body["topic"] = json!(topic),
            _ => {}
        }
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}
