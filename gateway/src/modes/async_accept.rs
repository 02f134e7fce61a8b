//! async: validate, publish with acks=all, and only then answer 202.
//! The legacy service is not called.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{check_declared_length, encode_event, event_context, read_body};
use crate::events::{OutgoingEvent, PublishError};
use crate::problem::GatewayError;
use crate::routing::{Limits, Route};
use crate::state::{Accepted, IdempotentEntry, Shared};

pub(super) async fn serve(
    shared: &Arc<Shared>,
    route: &Route,
    params: &[(String, String)],
    limits: Limits,
    request: Request<Body>,
) -> Result<Response, GatewayError> {
    check_declared_length(&request, limits.max_body_bytes)?;
    let (parts, body) = request.into_parts();
    let bytes = read_body(body, &limits).await?;
    let mut ctx = event_context(&parts.headers)?;
    let fingerprint = super::identify(&mut ctx, &parts, &bytes);
    let event = encode_event(route, params, &bytes, &ctx)?;

    // Publication runs in its own task: once the event is handed to the
    // producer, a caller who disconnects cannot cancel the bookkeeping (the
    // idempotency entry, the operation id) that makes a retry safe.
    let task_shared = Arc::clone(shared);
    let route_name = route.name.clone();
    let accepted = shared
        .tasks
        .spawn(tracing::Instrument::in_current_span(async move {
            accept(&task_shared, &route_name, event, fingerprint).await
        }))
        .await
        .map_err(|e| GatewayError::Internal(format!("publish task failed: {e}")))??;
    super::shadowed::read_back(shared, route, params, &bytes, false);
    Ok(accepted_response(&accepted))
}

async fn accept(
    shared: &Shared,
    route: &str,
    event: OutgoingEvent,
    fingerprint: Option<(String, u64)>,
) -> Result<Accepted, GatewayError> {
    let Some((idem_key, body_hash)) = fingerprint else {
        return publish(shared, &event)
            .await
            .map_err(|source| publish_error(&event.topic, source));
    };
    let cache_key = (route.to_string(), idem_key.clone());
    // An earlier attempt that timed out may have been written by the broker
    // all the same: a retry of the same request sends that very event (same
    // id) again, so the topic holds at most copies of one event, never two
    // different ones.
    let event = match shared.uncertain.get(&cache_key).await {
        Some((hash, earlier)) if hash == body_hash => earlier,
        _ => Arc::new(event),
    };
    // Concurrent requests with the same key wait on one publication; a
    // failed publication is not remembered as an answer, so a retry
    // publishes again.
    let result = shared
        .idempotency
        .entry(cache_key.clone())
        .or_try_insert_with(async {
            publish(shared, &event)
                .await
                .map(|accepted| IdempotentEntry {
                    body_hash,
                    accepted,
                })
        })
        .await;
    let entry = match result {
        Ok(entry) => {
            shared.uncertain.invalidate(&cache_key).await;
            entry
        }
        Err(e) => {
            if matches!(*e, PublishError::Timeout(_)) {
                shared
                    .uncertain
                    .insert(cache_key, (body_hash, Arc::clone(&event)))
                    .await;
            }
            return Err(publish_error(&event.topic, (*e).clone()));
        }
    };
    let remembered = entry.value();
    if !entry.is_fresh() {
        if remembered.body_hash != body_hash {
            return Err(GatewayError::IdempotencyConflict { key: idem_key });
        }
        shared
            .metrics
            .idempotent_replays
            .with_label_values(&[route])
            .inc();
    }
    Ok(remembered.accepted.clone())
}

fn publish_error(topic: &str, source: PublishError) -> GatewayError {
    GatewayError::Publish {
        topic: topic.to_string(),
        source,
    }
}

async fn publish(
    shared: &Shared,
    event: &crate::events::OutgoingEvent,
) -> Result<Accepted, PublishError> {
    let started = Instant::now();
    let result = shared.publisher.publish(event).await;
    shared
        .metrics
        .publish_latency
        .with_label_values(&[&event.topic])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(d) => {
            shared
                .metrics
                .events_published
                .with_label_values(&[&event.route, &event.topic])
                .inc();
            let accepted = Accepted {
                id: event.id.clone(),
                topic: event.topic.clone(),
                partition: d.partition,
                offset: d.offset,
            };
            shared
                .operations
                .insert(
                    accepted.id.clone(),
                    crate::operations::Operation::accepted(accepted.clone()),
                )
                .await;
            Ok(accepted)
        }
        Err(e) => {
            shared
                .metrics
                .publish_failures
                .with_label_values(&[&event.topic, e.reason()])
                .inc();
            Err(e)
        }
    }
}

fn accepted_response(accepted: &Accepted) -> Response {
    let mut response = (StatusCode::ACCEPTED, axum::Json(accepted)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/operations/{}", accepted.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}
