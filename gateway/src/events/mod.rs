//! Events: building the Kafka record for a request (key, Confluent-framed
//! Avro value, CloudEvents headers), publishing it durably, and spooling
//! what Kafka could not take.

pub mod embedded;
mod producer;
pub mod spool;

pub use producer::{Delivered, PublishError, Publisher};

/// A librdkafka client config with the user's `kafka.properties` (security,
/// timeouts...) and the given bootstrap, for every client the gateway makes.
pub fn client_config(
    config: &crate::config::KafkaConfig,
    bootstrap: &str,
) -> rdkafka::ClientConfig {
    let mut cc = rdkafka::ClientConfig::new();
    for (k, v) in &config.properties {
        cc.set(k, v);
    }
    // The embedded development cluster speaks plaintext only (validation
    // refuses security settings with it).
    if !config.bootstrap.eq_ignore_ascii_case("embedded") {
        config.security.apply(&mut cc);
    }
    cc.set("bootstrap.servers", bootstrap);
    cc
}

/// A Kafka record ready to send: everything is already encoded, so it can be
/// published, spooled and re-published without the schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutgoingEvent {
    /// CloudEvents id; also the operation id of an async request.
    pub id: String,
    /// Route that produced it (CloudEvents `source`).
    pub route: String,
    /// Destination topic.
    pub topic: String,
    /// Message key (UTF-8).
    pub key: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Confluent-framed Avro value.
    #[serde(skip)]
    pub payload: Vec<u8>,
}

/// Request facts that end up in the CloudEvents headers.
#[derive(Debug, Default, Clone)]
pub struct EventContext {
    /// W3C `traceparent`: the request span's when traces are on, else the
    /// caller's, if any.
    pub traceparent: Option<String>,
    /// W3C `tracestate` going with it.
    pub tracestate: Option<String>,
    /// The request's id (`X-Request-Id`), also in the gateway's logs.
    pub request_id: Option<String>,
    /// `Idempotency-Key` of the request, if any.
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request (see [`crate::idempotency::request_hash`]),
    /// sent with the key so a restarted gateway can check retries against it.
    pub request_hash: Option<u64>,
    /// The request's method and path (with query), so an adapter can
    /// replay the original call to a service that is not migrated yet.
    pub origin: Option<(String, String)>,
}

/// A Kafka record's headers as UTF-8 (name, value) pairs, in order.
pub fn record_headers<M: rdkafka::Message>(m: &M) -> Vec<(String, String)> {
    use rdkafka::message::Headers;
    m.headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                    (h.key.to_string(), value.unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Header with the original request's method.
pub const HEADER_METHOD: &str = "gateway-method";
/// Header with the original request's path and query.
pub const HEADER_PATH: &str = "gateway-path";

impl OutgoingEvent {
    /// Builds the record with CloudEvents binary-mode headers.
    pub fn new(
        route: &str,
        topic: &str,
        ce_type: &str,
        key: String,
        payload: Vec<u8>,
        ctx: &EventContext,
    ) -> Self {
        let id = uuid::Uuid::now_v7().to_string();
        let mut headers = vec![
            ("ce_specversion".to_string(), "1.0".to_string()),
            ("ce_id".to_string(), id.clone()),
            ("ce_type".to_string(), ce_type.to_string()),
            ("ce_source".to_string(), route.to_string()),
            ("ce_time".to_string(), jiff::Timestamp::now().to_string()),
            ("content-type".to_string(), "application/avro".to_string()),
        ];
        if let Some(tp) = &ctx.traceparent {
            headers.push(("traceparent".to_string(), tp.clone()));
        }
        if let Some(ts) = &ctx.tracestate {
            headers.push(("tracestate".to_string(), ts.clone()));
        }
        if let Some(id) = &ctx.request_id {
            headers.push(("x-request-id".to_string(), id.clone()));
        }
        if let Some(k) = &ctx.idempotency_key {
            headers.push(("idempotency-key".to_string(), k.clone()));
            if let Some(h) = ctx.request_hash {
                headers.push((
                    crate::idempotency::HEADER_REQUEST_HASH.to_string(),
                    format!("{h:016x}"),
                ));
            }
        }
        if let Some((method, path)) = &ctx.origin {
            headers.push((HEADER_METHOD.to_string(), method.clone()));
            headers.push((HEADER_PATH.to_string(), path.clone()));
        }
        Self {
            id,
            route: route.to_string(),
            topic: topic.to_string(),
            key,
            headers,
            payload,
        }
    }
}
