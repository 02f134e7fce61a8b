//! dual-write: the legacy service answers the caller; on its 2xx the event
//! is published too, or spooled durably when Kafka cannot take it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use axum::response::Response;

use super::{check_declared_length, encode_event, event_context, read_body};
use crate::events::OutgoingEvent;
use crate::problem::GatewayError;
use crate::routing::{Limits, Route};
use crate::state::Shared;

pub(super) async fn serve(
    shared: &Arc<Shared>,
    route: &Route,
    params: &[(String, String)],
    limits: Limits,
    request: Request<Body>,
    client_addr: Option<SocketAddr>,
) -> Result<Response, GatewayError> {
    check_declared_length(&request, limits.max_body_bytes)?;
    let (parts, body) = request.into_parts();
    // Buffered (bounded): the same bytes go to the legacy service and the event.
    let bytes = read_body(body, &limits).await?;
    // The legacy service decides what an unusual Idempotency-Key means; the
    // event simply goes without it.
    let ctx = event_context(&parts.headers).unwrap_or_else(|_| {
        let mut headers = parts.headers.clone();
        headers.remove("idempotency-key");
        event_context(&headers).unwrap_or_default()
    });
    let mut ctx = ctx;
    let fingerprint = super::identify(&mut ctx, &parts, &bytes);
    // Encoded before the call, published only after a 2xx. The legacy service
    // stays the source of truth: a body it accepts is never refused here.
    let event = encode_event(route, params, &bytes, &ctx);

    let shadow = super::shadowed::wanted(route, &parts.method)
        .map(|spec| (spec, super::shadowed::Copy::of(&parts, &bytes)));
    let body_copy = bytes.clone();
    let request = Request::from_parts(parts, Body::from(bytes));
    let mut response = route
        .upstream
        .call(
            &shared.http,
            &shared.metrics,
            request,
            limits.forwarding(client_addr),
        )
        .await?;
    if let Some((spec, copy)) = shadow {
        response = super::shadowed::tee(shared, route, spec, copy, response).await;
    }
    if !response.status().is_success() {
        return Ok(response);
    }
    match event {
        Ok(event) => {
            // In its own task: the legacy write is committed, so a caller who
            // disconnects now must not cancel the publish or the spool write.
            let task_shared = Arc::clone(shared);
            let task = shared
                .tasks
                .spawn(tracing::Instrument::in_current_span(async move {
                    publish_once(&task_shared, event, fingerprint).await
                }));
            match task.await {
                Ok(Outcome::Published | Outcome::AlreadyPublished) => {}
                Ok(Outcome::Spooled | Outcome::Lost) => {
                    response.extensions_mut().insert(super::PublishFailed);
                }
                Err(e) => {
                    response.extensions_mut().insert(super::PublishFailed);
                    tracing::error!(route = %route.name, error = %e, "publish task failed");
                }
            }
            super::shadowed::read_back(shared, route, params, &body_copy, true);
        }
        Err(e) => {
            shared
                .metrics
                .events_unencodable
                .with_label_values(&[&route.name])
                .inc();
            tracing::warn!(route = %route.name, error = %e, "legacy accepted a body that does not fit the event schema; no event");
        }
    }
    Ok(response)
}

/// What became of a dual-write event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// In Kafka.
    Published,
    /// A retry (same `Idempotency-Key` and request) of a request whose event
    /// is already in Kafka or in the spool: not published again.
    AlreadyPublished,
    /// In the spool, for re-publication.
    Spooled,
    /// Neither (counted and logged).
    Lost,
}

/// Publishes the event unless a request with the same key and fingerprint
/// already did (on this replica, or on any replica before a restart: see
/// [`crate::idempotency`]); retries with the same key wait on one another.
async fn publish_once(
    shared: &Shared,
    event: OutgoingEvent,
    fingerprint: Option<(String, u64)>,
) -> Outcome {
    let Some((key, body_hash)) = fingerprint else {
        return publish_or_spool(shared, &event).await;
    };
    let mut outcome = Outcome::AlreadyPublished;
    let entry = shared
        .idempotency
        .entry((event.route.clone(), key))
        .or_try_insert_with(async {
            outcome = publish_or_spool(shared, &event).await;
            if outcome == Outcome::Lost {
                // Not remembered: a retry must try again.
                return Err(());
            }
            Ok(crate::state::IdempotentEntry {
                body_hash,
                accepted: crate::state::Accepted {
                    id: event.id.clone(),
                    topic: event.topic.clone(),
                    partition: -1,
                    offset: -1,
                },
            })
        })
        .await;
    match entry {
        Ok(entry) if entry.is_fresh() => outcome,
        Ok(entry) if entry.value().body_hash == body_hash => {
            shared
                .metrics
                .idempotent_replays
                .with_label_values(&[&event.route])
                .inc();
            Outcome::AlreadyPublished
        }
        // The legacy service accepted another body under a key already
        // used: it is the source of truth, so that is another event.
        Ok(_) => publish_or_spool(shared, &event).await,
        Err(_) => Outcome::Lost,
    }
}

async fn publish_or_spool(shared: &Shared, event: &OutgoingEvent) -> Outcome {
    // While older events wait in the spool, newer ones queue behind them:
    // this keeps per-key order and spares callers a publish timeout each
    // while Kafka is known to be down.
    if shared.spool.depth() > 0 {
        return spool(shared, event, "spool not empty").await;
    }
    let started = Instant::now();
    let result = shared.publisher.publish(event).await;
    shared
        .metrics
        .publish_latency
        .with_label_values(&[&event.topic])
        .observe(started.elapsed().as_secs_f64());
    let err = match result {
        Ok(_) => {
            shared
                .metrics
                .events_published
                .with_label_values(&[&event.route, &event.topic])
                .inc();
            return Outcome::Published;
        }
        Err(e) => e,
    };
    shared
        .metrics
        .publish_failures
        .with_label_values(&[&event.topic, err.reason()])
        .inc();
    spool(shared, event, &err.to_string()).await
}

async fn spool(shared: &Shared, event: &OutgoingEvent, why: &str) -> Outcome {
    match shared.spool.put(event).await {
        Ok(()) => {
            shared
                .metrics
                .events_spooled
                .with_label_values(&[&event.route])
                .inc();
            shared
                .metrics
                .spool_depth
                .set(i64::try_from(shared.spool.depth()).unwrap_or(i64::MAX));
            tracing::warn!(route = %event.route, topic = %event.topic, id = %event.id, why, "event spooled for re-publication");
            Outcome::Spooled
        }
        Err(spool_err) => {
            shared
                .metrics
                .events_lost
                .with_label_values(&["spool_failed"])
                .inc();
            tracing::error!(route = %event.route, topic = %event.topic, id = %event.id, why, spool_error = %spool_err, "EVENT LOST: neither published nor spooled");
            Outcome::Lost
        }
    }
}
