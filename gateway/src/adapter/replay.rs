//! `gateway replay`: read a time window of a topic again and deliver it to
//! a new service (HTTP) or another topic, to backfill its state.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::AdapterError;
use crate::config::LoadedConfig;
use crate::events::{OutgoingEvent, Publisher, HEADER_METHOD};
use crate::schema::{confluent_unframe, Catalog};

/// Where replayed events go.
#[derive(Debug, Clone)]
pub enum Target {
    /// POST (or the original method) each decoded event to this URL.
    Http(String),
    /// Copy each record to this topic.
    Topic(String),
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// Source topic.
    pub topic: String,
    /// Start: RFC 3339 time, or a duration back from now (`7d`, `36h`).
    pub from: String,
    /// End (same forms); now when absent.
    pub to: Option<String>,
    /// Only this key.
    pub key: Option<String>,
    /// Destination.
    pub target: Target,
    /// Most events per second (unlimited when absent).
    pub rate: Option<u32>,
    /// Count and show, deliver nothing.
    pub dry_run: bool,
    /// Progress file: resume from it, and keep it up to date.
    pub resume: Option<PathBuf>,
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Delivered (or, dry run, would be).
    pub delivered: u64,
    /// Skipped by the key filter.
    pub skipped: u64,
    /// Records in the window.
    pub total: u64,
}

/// Parses `2026-11-26T00:00:00Z` or a duration back from now (`7d`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let back = humantime::parse_duration(s)
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a duration like 7d"))?;
    let now = jiff::Timestamp::now().as_millisecond();
    Ok(now - i64::try_from(back.as_millis()).unwrap_or(i64::MAX))
}

/// Runs a replay.
pub async fn run(
    loaded: &LoadedConfig,
    bootstrap: &str,
    req: ReplayRequest,
) -> Result<Summary, AdapterError> {
    let from = parse_time(&req.from).map_err(AdapterError::Config)?;
    let to = req
        .to
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(AdapterError::Config)?;
    let c = &loaded.config;
    let consumer: BaseConsumer = crate::events::client_config(&c.kafka, bootstrap)
        .set(
            "group.id",
            format!("gateway-replay-{}", uuid::Uuid::now_v7()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| AdapterError::Kafka(e.to_string()))?;
    let kafka = |e: rdkafka::error::KafkaError| AdapterError::Kafka(e.to_string());
    let md = consumer
        .fetch_metadata(Some(&req.topic), Duration::from_secs(10))
        .map_err(kafka)?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == req.topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return Err(AdapterError::Config(format!(
            "topic {} does not exist",
            req.topic
        )));
    }
    // The window as offsets, per partition.
    let seek = |ts: i64| -> Result<BTreeMap<i32, i64>, AdapterError> {
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition_offset(&req.topic, *p, Offset::Offset(ts))
                .map_err(kafka)?;
        }
        let found = consumer
            .offsets_for_times(tpl, Duration::from_secs(10))
            .map_err(kafka)?;
        parts
            .iter()
            .map(|p| {
                let (_, high) = consumer
                    .fetch_watermarks(&req.topic, *p, Duration::from_secs(10))
                    .map_err(kafka)?;
                let at = match found.find_partition(&req.topic, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => high, // nothing at or after the time
                };
                Ok((*p, at))
            })
            .collect()
    };
    let mut start = seek(from)?;
    let end = match to {
        Some(t) => seek(t)?,
        None => parts
            .iter()
            .map(|p| {
                consumer
                    .fetch_watermarks(&req.topic, *p, Duration::from_secs(10))
                    .map(|(_, h)| (*p, h))
                    .map_err(kafka)
            })
            .collect::<Result<_, _>>()?,
    };
    if let Some(file) = &req.resume {
        if let Ok(text) = std::fs::read_to_string(file) {
            let saved: BTreeMap<i32, i64> = serde_json::from_str(&text)
                .map_err(|e| AdapterError::Config(format!("{}: {e}", file.display())))?;
            for (p, o) in saved {
                if let Some(s) = start.get_mut(&p) {
                    *s = (*s).max(o);
                }
            }
        }
    }
    let total: u64 = parts
        .iter()
        .map(|p| u64::try_from(end[p] - start[p]).unwrap_or(0))
        .sum();
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(&req.topic, *p, Offset::Offset(start[p]))
            .map_err(kafka)?;
    }
    consumer.assign(&tpl).map_err(kafka)?;

    let progress = if std::io::stderr().is_terminal() && !req.dry_run {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} events, {per_sec}, ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let catalog = Catalog::load(&loaded.schemas_dir()).map_err(|p| {
        AdapterError::Config(
            p.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let schemas: BTreeMap<u32, _> = catalog
        .records()
        .flat_map(|r| {
            catalog
                .history(r)
                .into_iter()
                .flat_map(|h| h.values().cloned())
        })
        .map(|s| (s.local_id(), s))
        .collect();
    let publisher =
        Publisher::new(&c.kafka, bootstrap).map_err(|e| AdapterError::Kafka(e.to_string()))?;
    let http = crate::upstream::client_for_or_default(&c.upstream_tls);

    let mut position = start.clone();
    let mut summary = Summary {
        total,
        ..Summary::default()
    };
    let started = Instant::now();
    let mut handled: u64 = 0;
    while parts.iter().any(|p| position[p] < end[p]) {
        let Some(m) = consumer.poll(Duration::from_secs(10)) else {
            return Err(AdapterError::Kafka("no records arrived within 10 s".into()));
        };
        let m = m.map_err(kafka)?;
        let p = m.partition();
        if m.offset() >= end[&p] {
            position.insert(p, end[&p]);
            continue;
        }
        position.insert(p, m.offset() + 1);
        handled += 1;
        progress.inc(1);
        let key = m
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        if req.key.as_ref().is_some_and(|k| *k != key) {
            summary.skipped += 1;
            continue;
        }
        if !req.dry_run {
            let mut headers = crate::events::record_headers(&m);
            let span = crate::telemetry::record_span("replay", m.topic(), m.topic(), &headers);
            // The delivery continues the recorded request's trace.
            for (k, v) in crate::telemetry::context_pairs_of(&span) {
                headers.retain(|(h, _)| !h.eq_ignore_ascii_case(&k));
                headers.push((k, v));
            }
            let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            match &req.target {
                Target::Topic(t) => {
                    let event = OutgoingEvent {
                        id: header("ce_id").unwrap_or_default(),
                        route: "replay".into(),
                        topic: t.clone(),
                        key: key.clone(),
                        headers: headers.clone(),
                        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    };
                    tracing::Instrument::instrument(publisher.publish(&event), span)
                        .await
                        .map_err(|e| AdapterError::Kafka(e.to_string()))?;
                }
                Target::Http(url) => {
                    let body = m
                        .payload()
                        .and_then(confluent_unframe)
                        .and_then(|(id, datum)| schemas.get(&id).and_then(|s| s.decode(datum).ok()))
                        .and_then(|v| serde_json::Value::try_from(v).ok())
                        .ok_or_else(|| {
                            AdapterError::Config(format!(
                                "record at {p}:{} cannot be decoded",
                                m.offset()
                            ))
                        })?;
                    let method = header(HEADER_METHOD).unwrap_or_else(|| "POST".into());
                    tracing::Instrument::instrument(
                        post(
                            &http,
                            url,
                            &method,
                            &body,
                            header("ce_id"),
                            header("traceparent"),
                        ),
                        span,
                    )
                    .await?;
                }
            }
        }
        summary.delivered += 1;
        if let Some(rate) = req.rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(handled as f64 / f64::from(rate));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        if handled % 100 == 0 {
            save(&req, &position);
        }
    }
    save(&req, &position);
    progress.finish_and_clear();
    Ok(summary)
}

fn save(req: &ReplayRequest, position: &BTreeMap<i32, i64>) {
    if let (Some(file), false) = (&req.resume, req.dry_run) {
        if let Ok(text) = serde_json::to_string(position) {
            if let Err(e) = std::fs::write(file, text) {
                tracing::warn!(file = %file.display(), error = %e, "replay progress not saved");
            }
        }
    }
}

async fn post(
    http: &crate::upstream::HttpClient,
    url: &str,
    method: &str,
    body: &serde_json::Value,
    id: Option<String>,
    traceparent: Option<String>,
) -> Result<(), AdapterError> {
    let mut last = String::new();
    for attempt in 0..5u32 {
        let mut request = http::Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(id) = &id {
            request = request.header("idempotency-key", id.as_str());
        }
        if let Some(tp) = &traceparent {
            request = request.header("traceparent", tp.as_str());
        }
        let request = request
            .body(Body::from(body.to_string()))
            .map_err(|e| AdapterError::Config(e.to_string()))?;
        match tokio::time::timeout(Duration::from_secs(30), http.request(request)).await {
            Ok(Ok(r)) if r.status().is_success() => return Ok(()),
            Ok(Ok(r)) if r.status().is_client_error() => {
                let status = r.status();
                let text = r
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                return Err(AdapterError::Config(format!(
                    "{url} answered {status}: {}",
                    String::from_utf8_lossy(&text)
                )));
            }
            Ok(Ok(r)) => last = format!("{url} answered {}", r.status()),
            Ok(Err(e)) => last = format!("{url}: {e}"),
            Err(_) => last = format!("{url}: no answer within 30 s"),
        }
        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
    }
    Err(AdapterError::Kafka(format!(
        "{last} (gave up; rerun with the same --resume file)"
    )))
}
