//! The durable producer: `acks=all`, idempotence on, every delivery bounded
//! by `publish_timeout_ms`, queue-full refused at once instead of buffered.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::OutgoingEvent;
use crate::config::KafkaConfig;

/// Where Kafka put an acknowledged event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

/// Why an event was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The producer's in-memory queue is full: shed load.
    #[error("producer queue is full")]
    QueueFull,
    /// No acknowledgement within the publish timeout (broker down or slow).
    #[error("no acknowledgement within {0} ms")]
    Timeout(u64),
    /// The topic does not exist and could not be created.
    #[error("topic does not exist and cannot be created")]
    UnknownTopic,
    /// The broker refused the record for good (too large, not authorised...).
    #[error("rejected by Kafka: {0}")]
    Rejected(String),
    /// Any other, possibly transient, Kafka failure.
    #[error("{0}")]
    Other(String),
}

impl PublishError {
    fn from_kafka(err: &KafkaError, timeout_ms: u64) -> Self {
        match err.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => PublishError::QueueFull,
            Some(RDKafkaErrorCode::MessageTimedOut) | Some(RDKafkaErrorCode::RequestTimedOut) => {
                PublishError::Timeout(timeout_ms)
            }
            Some(RDKafkaErrorCode::UnknownTopicOrPartition)
            | Some(RDKafkaErrorCode::UnknownTopic)
            | Some(RDKafkaErrorCode::InvalidTopic) => PublishError::UnknownTopic,
            Some(
                RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::ClusterAuthorizationFailed,
            ) => PublishError::Rejected(err.to_string()),
            _ => PublishError::Other(err.to_string()),
        }
    }

    /// Whether trying again later can help.
    pub fn retryable(&self) -> bool {
        !matches!(self, PublishError::Rejected(_))
    }

    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::QueueFull => "queue_full",
            PublishError::Timeout(_) => "timeout",
            PublishError::UnknownTopic => "unknown_topic",
            PublishError::Rejected(_) => "rejected",
            PublishError::Other(_) => "kafka_error",
        }
    }
}

/// The producer's librdkafka context: client errors go to the log, and the
/// last refused login or TLS handshake is kept, so it can be named at start
/// and in `/readyz` instead of showing as a timeout.
#[derive(Clone, Default)]
pub struct KafkaContext {
    last_refusal: Arc<Mutex<Option<(Instant, String)>>>,
}

impl ClientContext for KafkaContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(error = %error, reason, "Kafka client error");
        let refusal = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::SSL
            )
        );
        if refusal {
            if let Ok(mut last) = self.last_refusal.lock() {
                *last = Some((Instant::now(), reason.to_string()));
            }
        }
    }
}

impl KafkaContext {
    /// A refused login or TLS handshake reported in the last `within`.
    fn refused(&self, within: Duration) -> Option<String> {
        let last = self.last_refusal.lock().ok()?;
        let (at, reason) = last.as_ref()?;
        (at.elapsed() <= within).then(|| reason.clone())
    }
}

/// A cheap-to-clone handle on the one producer of the process.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer<KafkaContext>,
    context: KafkaContext,
    timeout_ms: u64,
}

impl Publisher {
    /// Creates the producer. `bootstrap` is the resolved broker list.
    pub fn new(config: &KafkaConfig, bootstrap: &str) -> Result<Self, KafkaError> {
        let mut cc = super::client_config(config, bootstrap);
        cc.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", config.publish_timeout_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                config.queue_max_messages.to_string(),
            )
            .set("client.id", "migration-gateway");
        if !config.properties.contains_key("linger.ms") {
            cc.set("linger.ms", "5");
        }
        let context = KafkaContext::default();
        let producer: FutureProducer<KafkaContext> = cc.create_with_context(context.clone())?;
        Ok(Self {
            producer,
            context,
            timeout_ms: config.publish_timeout_ms,
        })
    }

    /// Enqueues the event and waits for the broker's acknowledgement.
    pub async fn publish(&self, event: &OutgoingEvent) -> Result<Delivered, PublishError> {
        let span = tracing::info_span!(
            "publish",
            otel.name = %format!("publish {}", event.topic),
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.destination.name = %event.topic,
            messaging.message.id = %event.id,
            otel.status_code = tracing::field::Empty,
        );
        let result = tracing::Instrument::instrument(self.publish_inner(event), span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    async fn publish_inner(&self, event: &OutgoingEvent) -> Result<Delivered, PublishError> {
        let mut headers = OwnedHeaders::new_with_capacity(event.headers.len());
        for (k, v) in &event.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let record = FutureRecord::to(&event.topic)
            .key(event.key.as_bytes())
            .payload(&event.payload)
            .headers(headers);
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| PublishError::from_kafka(&e, self.timeout_ms))?;
        // librdkafka fails the message itself at message.timeout.ms; the extra
        // margin only guards against a lost delivery report.
        let guard = Duration::from_millis(self.timeout_ms.saturating_add(2_000));
        let result = match tokio::time::timeout(guard, delivery).await {
            Ok(Ok(Ok(d))) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
            }),
            Ok(Ok(Err((e, _)))) => Err(PublishError::from_kafka(&e, self.timeout_ms)),
            Ok(Err(_canceled)) => Err(PublishError::Other("producer shut down".into())),
            Err(_) => Err(PublishError::Timeout(self.timeout_ms)),
        };
        match result {
            Err(PublishError::Timeout(ms)) => Err(self.explain_timeout(&event.topic, ms).await),
            other => other,
        }
    }

    /// librdkafka reports a topic that cannot be auto-created as a plain
    /// timeout; a reachable cluster that still has no such topic says why.
    async fn explain_timeout(&self, topic: &str, timeout_ms: u64) -> PublishError {
        let producer = self.producer.clone();
        let topic = topic.to_string();
        let missing = tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(1))
                .ok()?;
            let t = md.topics().iter().find(|t| t.name() == topic);
            Some(t.is_none_or(|t| t.error().is_some() || t.partitions().is_empty()))
        })
        .await
        .ok()
        .flatten();
        match missing {
            Some(true) => PublishError::UnknownTopic,
            _ => PublishError::Timeout(timeout_ms),
        }
    }

    /// Whether cluster metadata can be fetched right now; a refused login
    /// or TLS handshake is named as such.
    pub async fn metadata_reachable(&self, timeout: Duration) -> Result<(), String> {
        let producer = self.producer.clone();
        let result = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?;
        match (result, self.context.refused(Duration::from_secs(60))) {
            (Err(_), Some(reason)) => Err(format!("Kafka refused the connection: {reason}")),
            (result, _) => result,
        }
    }

    /// At start: waits until the cluster answers, up to `timeout`, and
    /// fails at once when it refuses the credentials or the TLS handshake
    /// (retrying cannot fix those).
    pub async fn connect(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let error = match self.metadata_reachable(Duration::from_secs(1)).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if let Some(reason) = self.context.refused(timeout) {
                return Err(format!("Kafka refused the connection: {reason}"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no answer from Kafka within {} s: {error}",
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Messages still waiting for an acknowledgement.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Waits (bounded) for queued messages to be delivered, for shutdown.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let producer = self.producer.clone();
        matches!(
            tokio::task::spawn_blocking(move || producer.flush(timeout)).await,
            Ok(Ok(()))
        )
    }
}
