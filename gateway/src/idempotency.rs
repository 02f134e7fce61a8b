//! `Idempotency-Key` across restarts.
//!
//! The keys a replica has seen live in memory (`Shared::idempotency`). Every
//! event published for a request with a key carries the key, the route
//! (`ce_source`) and a fingerprint of the request (`gateway-request-hash`),
//! so at start the gateway reads the last `idempotency.recover_secs` of its
//! route topics, and the events still in the spool, and remembers those keys
//! again before it serves. A caller whose request was cut off by a crash and
//! who retries with the same key then gets the first answer (async) or no
//! second event (dual-write), on this replica or on any other.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::Config;
use crate::events::spool::Spool;
use crate::state::{Accepted, IdempotentEntry, Shared};

/// Event header with the request's fingerprint (hex), present when the
/// request had an `Idempotency-Key`.
pub const HEADER_REQUEST_HASH: &str = "gateway-request-hash";

/// Fingerprint of a request: the same key with another method, resource or
/// body is another request. xxh3, so it is the same in every process and
/// every build.
pub fn request_hash(method: &http::Method, uri: &http::Uri, body: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        method.as_str().as_bytes(),
        uri.path().as_bytes(),
        uri.query().unwrap_or_default().as_bytes(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(body);
    h.digest()
}

/// The cache entry an event stands for, if it was published for a request
/// with a key: ((route, key), entry).
fn remembered(
    headers: &[(String, String)],
    topic: &str,
    partition: i32,
    offset: i64,
) -> Option<((String, String), IdempotentEntry)> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let key = get("idempotency-key")?;
    let route = get("ce_source")?;
    let id = get("ce_id")?;
    let body_hash = u64::from_str_radix(get(HEADER_REQUEST_HASH)?, 16).ok()?;
    Some((
        (route.to_string(), key.to_string()),
        IdempotentEntry {
            body_hash,
            accepted: Accepted {
                id: id.to_string(),
                topic: topic.to_string(),
                partition,
                offset,
            },
        },
    ))
}

/// Every topic a route of `config` publishes to.
fn route_topics(config: &Config) -> BTreeSet<String> {
    config
        .routes
        .iter()
        .filter_map(|r| r.topic.clone())
        .collect()
}

/// Reads the keys back (see the module docs) into `shared.idempotency`,
/// from the spool and, with `topics`, from the route topics. Returns how
/// many were remembered; an error when the topics could not be read within
/// `recover_timeout_secs` (serving without them could publish a retried
/// request twice).
pub async fn recover(shared: &Shared, bootstrap: &str, topics: bool) -> Result<usize, String> {
    let c = &shared.startup.config;
    if c.idempotency.recover_secs == 0 {
        return Ok(0);
    }
    let since = jiff::Timestamp::now()
        .as_millisecond()
        .saturating_sub(i64::try_from(c.idempotency.recover_secs * 1000).unwrap_or(i64::MAX));
    let deadline = Duration::from_secs(c.idempotency.recover_timeout_secs);
    let consumer: BaseConsumer = crate::events::client_config(&c.kafka, bootstrap)
        .set(
            "group.id",
            format!("gateway-idempotency-{}", uuid::Uuid::now_v7()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let topics = if topics {
        route_topics(c)
    } else {
        BTreeSet::new()
    };
    let mut found =
        tokio::task::spawn_blocking(move || read_back(&consumer, &topics, since, deadline))
            .await
            .map_err(|e| e.to_string())??;
    // Events still in the spool were acknowledged to their callers too.
    let spool = shared.spool.clone();
    let spooled = tokio::task::spawn_blocking(move || spooled(&spool))
        .await
        .map_err(|e| e.to_string())?;
    for (k, entry) in spooled {
        found.entry(k).or_insert(entry);
    }
    let n = found.len();
    for (k, entry) in found {
        shared.idempotency.insert(k, entry).await;
    }
    Ok(n)
}

type Found = HashMap<(String, String), IdempotentEntry>;

fn read_back(
    consumer: &BaseConsumer,
    topics: &BTreeSet<String>,
    since_ms: i64,
    patience: Duration,
) -> Result<Found, String> {
    let deadline = Instant::now() + patience;
    let metadata_timeout = patience.min(Duration::from_secs(10));
    // Where to start (the first offset at or after `since_ms`) and where to
    // stop (the end as it is now) in every partition.
    let mut wanted = TopicPartitionList::new();
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), metadata_timeout)
            .map_err(|e| format!("topic {topic}: {e}"))?;
        // A topic that does not exist yet holds nothing to remember.
        let Some(t) = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
        else {
            continue;
        };
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), metadata_timeout)
                .map_err(|e| format!("topic {topic} partition {}: {e}", p.id()))?;
            if high > low {
                wanted
                    .add_partition_offset(topic, p.id(), Offset::Offset(since_ms))
                    .map_err(|e| e.to_string())?;
                ends.insert((topic.clone(), p.id()), high);
            }
        }
    }
    if ends.is_empty() {
        return Ok(Found::new());
    }
    let starts = consumer
        .offsets_for_times(wanted, metadata_timeout)
        .map_err(|e| format!("offsets for the recovery window: {e}"))?;
    let mut assign = TopicPartitionList::new();
    for e in starts.elements() {
        let end = ends
            .get(&(e.topic().to_string(), e.partition()))
            .copied()
            .unwrap_or(0);
        match e.offset() {
            Offset::Offset(start) if start < end => {
                assign
                    .add_partition_offset(e.topic(), e.partition(), Offset::Offset(start))
                    .map_err(|e| e.to_string())?;
            }
            // Nothing written since `since_ms`.
            _ => {
                ends.remove(&(e.topic().to_string(), e.partition()));
            }
        }
    }
    if ends.is_empty() {
        return Ok(Found::new());
    }
    consumer.assign(&assign).map_err(|e| e.to_string())?;
    let mut found = Found::new();
    let mut reached: HashMap<(String, i32), i64> = HashMap::new();
    let done = |reached: &HashMap<(String, i32), i64>| {
        ends.iter()
            .all(|(tp, end)| reached.get(tp).copied().unwrap_or(0) >= *end)
    };
    while !done(&reached) {
        if Instant::now() > deadline {
            return Err(format!(
                "the last idempotency.recover_secs of the route topics were not read within {patience:?}; raise idempotency.recover_timeout_secs or lower recover_secs"
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                reached.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                let headers = crate::events::record_headers(&m);
                if let Some((k, entry)) = remembered(&headers, m.topic(), m.partition(), m.offset())
                {
                    // The first answer is the one a retry gets.
                    found.entry(k).or_insert(entry);
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "reading back idempotency keys"),
            None => {}
        }
    }
    Ok(found)
}

fn spooled(spool: &Spool) -> Found {
    let mut found = Found::new();
    spool.for_each(|event| {
        if let Some((k, entry)) = remembered(&event.headers, &event.topic, -1, -1) {
            found.entry(k).or_insert(entry);
        }
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_tells_requests_apart_and_is_stable() {
        let post = http::Method::POST;
        let a: http::Uri = "/orders?x=1".parse().expect("uri");
        let b: http::Uri = "/orders?x=2".parse().expect("uri");
        let h = request_hash(&post, &a, b"{}");
        assert_eq!(h, request_hash(&post, &a, b"{}"));
        assert_ne!(h, request_hash(&post, &b, b"{}"));
        assert_ne!(h, request_hash(&http::Method::PUT, &a, b"{}"));
        assert_ne!(h, request_hash(&post, &a, b"{ }"));
        // Lengths are hashed, so moving bytes between parts changes it.
        let c: http::Uri = "/orders?x".parse().expect("uri");
        assert_ne!(
            request_hash(&post, &c, b"=1"),
            request_hash(&post, &"/orders?x=1".parse().expect("uri"), b"")
        );
    }

    #[test]
    fn an_event_with_a_key_and_a_fingerprint_is_remembered() {
        let headers = |with_hash: bool| {
            let mut h = vec![
                ("ce_id".to_string(), "id-1".to_string()),
                ("ce_source".to_string(), "checkout".to_string()),
                ("idempotency-key".to_string(), "k-1".to_string()),
            ];
            if with_hash {
                h.push((HEADER_REQUEST_HASH.to_string(), format!("{:016x}", 42u64)));
            }
            h
        };
        let ((route, key), entry) = remembered(&headers(true), "orders", 2, 7).expect("entry");
        assert_eq!((route.as_str(), key.as_str()), ("checkout", "k-1"));
        assert_eq!(entry.body_hash, 42);
        assert_eq!(
            (
                entry.accepted.id.as_str(),
                entry.accepted.partition,
                entry.accepted.offset
            ),
            ("id-1", 2, 7)
        );
        // Without a fingerprint (an event from an older gateway) the key
        // cannot be checked against a retry's body: not remembered.
        assert!(remembered(&headers(false), "orders", 2, 7).is_none());
    }
}
