//! The event→HTTP delivery adapter.
//!
//! - Consumes one topic in its own consumer group; every partition has a
//!   worker, so a failing key holds back only its own partition.
//! - Decodes the Avro value with the schema its id names, and calls the
//!   legacy service with the original method, path and JSON body, plus
//!   `Idempotency-Key: <ce_id>` and `traceparent`.
//! - An offset is stored (and committed) only after the event was handled:
//!   a 2xx, or a dead letter. Delivery is at least once; the idempotency key
//!   makes repeats harmless.
//! - 5xx, timeouts and connection failures are retried with exponential
//!   backoff and full jitter, up to `max_attempts`; 4xx answers, undecodable
//!   events and exhausted retries go to `<topic>.dlq` with the error in
//!   headers. Each outcome is reported on the operations topic.

pub mod replay;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{AdapterConfig, LoadedConfig};
use crate::events::{OutgoingEvent, Publisher, HEADER_METHOD, HEADER_PATH};
use crate::operations::Report;
use crate::schema::{confluent_unframe, Catalog, EventSchema};
use crate::upstream::{HttpClient, Upstream};
use axum::body::Body;
use http_body_util::BodyExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use tokio::sync::{mpsc, watch};

/// Header on dead letters: why.
pub const DLQ_ERROR: &str = "dlq-error";
/// Header on dead letters: attempts made.
pub const DLQ_ATTEMPTS: &str = "dlq-attempts";
/// Header on dead letters: the adapter.
pub const DLQ_ADAPTER: &str = "dlq-adapter";

/// Why the adapter could not run.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// Configuration problem.
    #[error("{0}")]
    Config(String),
    /// Kafka client problem.
    #[error("kafka: {0}")]
    Kafka(String),
}

/// The dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

struct Ctx {
    config: AdapterConfig,
    upstream: Upstream,
    http: HttpClient,
    schemas: HashMap<u32, Arc<EventSchema>>,
    publisher: Publisher,
    operations_topic: String,
    consumer: Arc<StreamConsumer>,
    stop: watch::Receiver<bool>,
    metrics: crate::metrics::Metrics,
    /// Schemas learnt from the registry by id (events written with registry ids).
    registry: Option<crate::schema::registry::RegistryClient>,
    learnt: std::sync::Mutex<HashMap<u32, Arc<EventSchema>>>,
    /// Per partition, the offset after the last event finished with.
    done: std::sync::Mutex<HashMap<i32, i64>>,
}

/// Runs the adapter `name` from `loaded` against `bootstrap` until `stop`
/// turns true; in-flight events finish or are left for redelivery.
pub async fn run(
    loaded: &LoadedConfig,
    name: &str,
    bootstrap: &str,
    stop: watch::Receiver<bool>,
) -> Result<(), AdapterError> {
    run_with_metrics(
        loaded,
        name,
        bootstrap,
        stop,
        crate::metrics::Metrics::new(),
    )
    .await
}

/// Like [`run`], counting into `metrics` (deliveries, retries, dead
/// letters, lag): the gateway's own registry when it runs adapters in
/// process, or the one `gateway adapter run --metrics` serves.
pub async fn run_with_metrics(
    loaded: &LoadedConfig,
    name: &str,
    bootstrap: &str,
    stop: watch::Receiver<bool>,
    metrics: crate::metrics::Metrics,
) -> Result<(), AdapterError> {
    let c = &loaded.config;
    let config = c
        .adapters
        .iter()
        .find(|a| a.name == name)
        .cloned()
        .ok_or_else(|| AdapterError::Config(format!("no adapter named {name} in [[adapters]]")))?;
    let upstream_config = c.upstreams.get(&config.upstream).ok_or_else(|| {
        AdapterError::Config(format!(
            "adapter {name}: unknown upstream {}",
            config.upstream
        ))
    })?;
    // The adapter's own retries with backoff already give a failing service
    // a rest; a breaker would only spend attempts on refusals.
    let upstream_config = crate::config::UpstreamConfig {
        breaker_failures: 0,
        ..upstream_config.clone()
    };
    let upstream =
        Upstream::new(&config.upstream, &upstream_config).map_err(AdapterError::Config)?;
    let catalog = Catalog::load(&loaded.schemas_dir()).map_err(|p| {
        AdapterError::Config(
            p.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    // Every version's id, so events written with any of them decode.
    let mut schemas = HashMap::new();
    for record in catalog.records() {
        for s in catalog.history(record).into_iter().flat_map(|h| h.values()) {
            schemas.insert(s.local_id(), s.clone());
        }
    }
    let publisher =
        Publisher::new(&c.kafka, bootstrap).map_err(|e| AdapterError::Kafka(e.to_string()))?;
    let consumer: StreamConsumer = crate::events::client_config(&c.kafka, bootstrap)
        .set("group.id", config.group())
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "5000")
        .create()
        .map_err(|e| AdapterError::Kafka(e.to_string()))?;
    consumer
        .subscribe(&[&config.topic])
        .map_err(|e| AdapterError::Kafka(e.to_string()))?;
    let consumer = Arc::new(consumer);
    let ctx = Arc::new(Ctx {
        config,
        upstream,
        http: crate::upstream::client_for_or_default(&c.upstream_tls),
        schemas,
        publisher,
        operations_topic: c.kafka.operations_topic.clone(),
        consumer: consumer.clone(),
        stop: stop.clone(),
        metrics,
        registry: c.schemas.registry.as_deref().map(|url| {
            crate::schema::registry::RegistryClient::new(
                url,
                crate::upstream::client_for_or_default(&c.upstream_tls),
                Duration::from_millis(c.schemas.registry_timeout_ms),
            )
        }),
        learnt: std::sync::Mutex::new(HashMap::new()),
        done: std::sync::Mutex::new(HashMap::new()),
    });
    tracing::info!(adapter = name, topic = %ctx.config.topic, group = %ctx.config.group(), "adapter running");
    let lag = tokio::spawn(watch_lag(ctx.clone()));

    let mut workers: HashMap<i32, mpsc::Sender<OwnedMessage>> = HashMap::new();
    let mut handles = Vec::new();
    let mut stop = stop;
    loop {
        let message = tokio::select! {
            m = consumer.recv() => m,
            _ = stop.wait_for(|s| *s) => break,
        };
        let m = match message {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(adapter = name, error = %e, "consume failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let partition = m.partition();
        let sender = workers.entry(partition).or_insert_with(|| {
            // Bounded: a partition whose service is down fills its queue and
            // then holds back consumption instead of growing without limit.
            let (tx, rx) = mpsc::channel(1_000);
            handles.push(tokio::spawn(partition_worker(ctx.clone(), rx)));
            tx
        });
        if sender.send(m).await.is_err() {
            break;
        }
    }
    drop(workers);
    for h in handles {
        let _ = h.await;
    }
    // Gone before the consumer is closed below: it holds the consumer too.
    lag.abort();
    let _ = lag.await;
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    Ok(())
}

/// Every 5 s: per assigned partition, the high watermark minus the offset
/// after the last event this adapter finished with (queued and retried
/// events count as lag), or the consumer's position before the first.
/// Partitions no longer assigned lose their series.
async fn watch_lag(ctx: Arc<Ctx>) {
    let mut shown: Vec<i32> = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let c = ctx.clone();
        let lags: Vec<(i32, i64)> = tokio::task::spawn_blocking(move || {
            let Ok(assigned) = c.consumer.assignment() else {
                return Vec::new();
            };
            let positions = c.consumer.position().ok();
            let done = c.done.lock().map(|d| d.clone()).unwrap_or_default();
            assigned
                .elements()
                .iter()
                .filter_map(|e| {
                    let (low, high) = c
                        .consumer
                        .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                        .ok()?;
                    let from_group = positions
                        .as_ref()
                        .and_then(|t| t.find_partition(e.topic(), e.partition()))
                        .and_then(|p| match p.offset() {
                            rdkafka::Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                    let next = done
                        .get(&e.partition())
                        .copied()
                        .or(from_group)
                        .unwrap_or(low);
                    Some((e.partition(), (high - next).max(0)))
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        let name = &ctx.config.name;
        for gone in shown.iter().filter(|p| !lags.iter().any(|(q, _)| q == *p)) {
            let _ = ctx
                .metrics
                .adapter_lag
                .remove_label_values(&[name, &gone.to_string()]);
        }
        shown = lags.iter().map(|(p, _)| *p).collect();
        for (partition, lag) in lags {
            ctx.metrics
                .adapter_lag
                .with_label_values(&[name, &partition.to_string()])
                .set(lag);
        }
    }
}

async fn partition_worker(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<OwnedMessage>) {
    while let Some(m) = rx.recv().await {
        let span = crate::telemetry::record_span(
            "deliver",
            &ctx.config.name,
            m.topic(),
            &crate::events::record_headers(&m),
        );
        let handled = tracing::Instrument::instrument(handle(&ctx, &m), span).await;
        if !handled {
            // Stopping: leave this and later events for redelivery.
            return;
        }
        if let Ok(mut done) = ctx.done.lock() {
            done.insert(m.partition(), m.offset() + 1);
        }
        if let Err(e) = ctx
            .consumer
            .store_offset(m.topic(), m.partition(), m.offset())
        {
            tracing::warn!(adapter = %ctx.config.name, error = %e, "offset not stored; the event may be delivered again");
        }
    }
}

fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    m.headers().and_then(|hs| {
        hs.iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

enum Attempt {
    Delivered(u16, serde_json::Value),
    Refused(u16, String),
    Retry(String),
}

/// Handles one event until it is delivered or dead-lettered. Returns false
/// when the adapter is stopping and the event was left for redelivery.
async fn handle(ctx: &Ctx, m: &OwnedMessage) -> bool {
    let id = header(m, "ce_id").unwrap_or_default();
    let body = match decode(ctx, m).await {
        Ok(b) => b,
        Err(e) => {
            count(ctx, "undecodable");
            dead_letter(ctx, m, &e, 0).await;
            report(ctx, &id, "failed", serde_json::json!({ "error": e })).await;
            return true;
        }
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match deliver(ctx, m, &id, &body).await {
            Attempt::Delivered(status, response) => {
                count(ctx, "completed");
                report(
                    ctx,
                    &id,
                    "completed",
                    serde_json::json!({ "status": status, "body": response }),
                )
                .await;
                return true;
            }
            Attempt::Refused(status, text) => {
                let error = format!("legacy service answered {status}: {text}");
                count(ctx, "refused");
                dead_letter(ctx, m, &error, attempt).await;
                report(
                    ctx,
                    &id,
                    "failed",
                    serde_json::json!({ "status": status, "error": error }),
                )
                .await;
                return true;
            }
            Attempt::Retry(error) if attempt >= ctx.config.max_attempts => {
                let error = format!("gave up after {attempt} attempts: {error}");
                count(ctx, "failed");
                dead_letter(ctx, m, &error, attempt).await;
                report(ctx, &id, "failed", serde_json::json!({ "error": error })).await;
                return true;
            }
            Attempt::Retry(error) => {
                ctx.metrics
                    .adapter_retries
                    .with_label_values(&[&ctx.config.name])
                    .inc();
                let delay = backoff(&ctx.config, attempt);
                tracing::debug!(adapter = %ctx.config.name, id, attempt, ?delay, error, "delivery failed; retrying");
                let mut stop = ctx.stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return false,
                }
            }
        }
    }
}

fn count(ctx: &Ctx, outcome: &str) {
    ctx.metrics
        .adapter_deliveries
        .with_label_values(&[&ctx.config.name, outcome])
        .inc();
}

/// Exponential backoff with full jitter.
fn backoff(config: &AdapterConfig, attempt: u32) -> Duration {
    let ceiling = config
        .retry_initial_ms
        .saturating_mul(1 << attempt.min(20))
        .min(config.retry_max_ms)
        .max(1);
    Duration::from_millis(fastrand::u64(ceiling / 2..=ceiling))
}

async fn schema(ctx: &Ctx, id: u32) -> Result<Arc<EventSchema>, String> {
    if let Some(s) = ctx.schemas.get(&id) {
        return Ok(s.clone());
    }
    if let Some(s) = ctx.learnt.lock().ok().and_then(|l| l.get(&id).cloned()) {
        return Ok(s);
    }
    let registry = ctx
        .registry
        .as_ref()
        .ok_or_else(|| format!("unknown schema id {id}"))?;
    let text = registry.schema_by_id(id).await.map_err(|e| e.to_string())?;
    let parsed = Arc::new(EventSchema::parse(&text, &format!("registry id {id}"))?);
    if let Ok(mut l) = ctx.learnt.lock() {
        l.insert(id, parsed.clone());
    }
    Ok(parsed)
}

async fn decode(ctx: &Ctx, m: &OwnedMessage) -> Result<serde_json::Value, String> {
    let value = m.payload().ok_or("event without a value")?;
    let (id, datum) =
        confluent_unframe(value).ok_or("value is not in the Confluent wire format")?;
    let schema = schema(ctx, id).await?;
    let avro = schema.decode(datum)?;
    serde_json::Value::try_from(avro).map_err(|e| e.to_string())
}

async fn deliver(ctx: &Ctx, m: &OwnedMessage, id: &str, body: &serde_json::Value) -> Attempt {
    let method = ctx
        .config
        .method
        .clone()
        .or_else(|| header(m, HEADER_METHOD))
        .unwrap_or_else(|| "POST".into());
    let path = ctx
        .config
        .path
        .clone()
        .or_else(|| header(m, HEADER_PATH))
        .unwrap_or_else(|| "/".into());
    let mut request = http::Request::builder()
        .method(method.as_str())
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", id);
    for name in ["traceparent", "tracestate", "x-request-id"] {
        if let Some(value) = header(m, name) {
            request = request.header(name, value);
        }
    }
    let request = match request.body(Body::from(body.to_string())) {
        Ok(r) => r,
        Err(e) => return Attempt::Refused(0, e.to_string()),
    };
    let forwarding = crate::upstream::Forwarding {
        client_addr: None,
        trust_incoming: true,
        https: false,
    };
    match ctx
        .upstream
        .call(&ctx.http, &ctx.metrics, request, forwarding)
        .await
    {
        Ok(response) => {
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if status.is_success() {
                let json =
                    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(text));
                Attempt::Delivered(status.as_u16(), json)
            } else if status.is_client_error()
                && status != http::StatusCode::TOO_MANY_REQUESTS
                && status != http::StatusCode::REQUEST_TIMEOUT
            {
                Attempt::Refused(status.as_u16(), text)
            } else {
                Attempt::Retry(format!("{status}: {text}"))
            }
        }
        Err(e) => Attempt::Retry(e.to_string()),
    }
}

async fn dead_letter(ctx: &Ctx, m: &OwnedMessage, error: &str, attempts: u32) {
    let mut headers = crate::events::record_headers(m);
    headers.push((DLQ_ERROR.into(), error.chars().take(1000).collect()));
    headers.push((DLQ_ATTEMPTS.into(), attempts.to_string()));
    headers.push((DLQ_ADAPTER.into(), ctx.config.name.clone()));
    let event = OutgoingEvent {
        id: header(m, "ce_id").unwrap_or_default(),
        route: ctx.config.name.clone(),
        topic: dlq_topic(m.topic()),
        key: m
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        headers,
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    };
    // Never lose it: keep trying until the dead letter is in Kafka.
    loop {
        match ctx.publisher.publish(&event).await {
            Ok(_) => {
                ctx.metrics
                    .adapter_dead_letters
                    .with_label_values(&[&ctx.config.name])
                    .inc();
                tracing::warn!(adapter = %ctx.config.name, id = %event.id, error, "event dead-lettered");
                return;
            }
            Err(e) => {
                tracing::error!(adapter = %ctx.config.name, error = %e, "dead letter not accepted; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn report(ctx: &Ctx, id: &str, status: &str, result: serde_json::Value) {
    if id.is_empty() {
        return;
    }
    let report = Report {
        id: id.to_string(),
        status: status.to_string(),
        result: Some(result),
        by: ctx.config.name.clone(),
    };
    let Ok(payload) = serde_json::to_vec(&report) else {
        return;
    };
    let event = OutgoingEvent {
        id: id.to_string(),
        route: ctx.config.name.clone(),
        topic: ctx.operations_topic.clone(),
        key: id.to_string(),
        headers: vec![("content-type".into(), "application/json".into())],
        payload,
    };
    if let Err(e) = ctx.publisher.publish(&event).await {
        tracing::warn!(adapter = %ctx.config.name, id, error = %e, "operation report not published");
    }
}

/// Sends every dead letter of adapter `name` back to its topic (without the
/// `dlq-*` headers), so the adapter delivers it again. Returns how many.
pub async fn redrive(
    loaded: &LoadedConfig,
    name: &str,
    bootstrap: &str,
) -> Result<usize, AdapterError> {
    let c = &loaded.config;
    let config =
        c.adapters.iter().find(|a| a.name == name).ok_or_else(|| {
            AdapterError::Config(format!("no adapter named {name} in [[adapters]]"))
        })?;
    let dlq = dlq_topic(&config.topic);
    let publisher =
        Publisher::new(&c.kafka, bootstrap).map_err(|e| AdapterError::Kafka(e.to_string()))?;
    let consumer: StreamConsumer = crate::events::client_config(&c.kafka, bootstrap)
        .set("group.id", format!("{}-redrive", config.group()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| AdapterError::Kafka(e.to_string()))?;
    // Everything present now, up to the high watermarks read at the start.
    let md = consumer
        .fetch_metadata(Some(&dlq), Duration::from_secs(10))
        .map_err(|e| AdapterError::Kafka(e.to_string()))?;
    let mut ends = HashMap::new();
    for t in md
        .topics()
        .iter()
        .filter(|t| t.name() == dlq && t.error().is_none())
    {
        for p in t.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(&dlq, p.id(), Duration::from_secs(10))
                .map_err(|e| AdapterError::Kafka(e.to_string()))?;
            ends.insert(p.id(), high);
        }
    }
    // Where this re-drive group stopped last time.
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition(&dlq, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|e| AdapterError::Kafka(e.to_string()))?;
    let start = |p: i32| match committed.find_partition(&dlq, p).map(|e| e.offset()) {
        Some(rdkafka::Offset::Offset(o)) => o,
        _ => 0,
    };
    if ends.iter().all(|(p, high)| start(*p) >= *high) {
        return Ok(0);
    }
    consumer
        .subscribe(&[&dlq])
        .map_err(|e| AdapterError::Kafka(e.to_string()))?;
    let mut done: HashMap<i32, i64> = ends.keys().map(|p| (*p, start(*p) - 1)).collect();
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ends
        .iter()
        .any(|(p, high)| done.get(p).copied().unwrap_or(-1) + 1 < *high)
    {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(m)) => m.detach(),
            Ok(Err(e)) => return Err(AdapterError::Kafka(e.to_string())),
            // Committed offsets may already be past the end: nothing left.
            Err(_) => break,
        };
        let headers: Vec<(String, String)> = crate::events::record_headers(&m)
            .into_iter()
            .filter(|(k, _)| !k.starts_with("dlq-"))
            .collect();
        let event = OutgoingEvent {
            id: header(&m, "ce_id").unwrap_or_default(),
            route: name.to_string(),
            topic: config.topic.clone(),
            key: m
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            headers,
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        };
        publisher
            .publish(&event)
            .await
            .map_err(|e| AdapterError::Kafka(e.to_string()))?;
        consumer
            .store_offset(m.topic(), m.partition(), m.offset())
            .map_err(|e| AdapterError::Kafka(e.to_string()))?;
        done.insert(m.partition(), m.offset());
        sent += 1;
    }
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .or_else(|e| if sent == 0 { Ok(()) } else { Err(e) })
        .map_err(|e| AdapterError::Kafka(e.to_string()))?;
    Ok(sent)
}
