//! Async operation status: `accepted` when the event is in Kafka, then
//! `completed` or `failed` when an adapter (or a new service) reports on the
//! operations topic. `GET /operations/{id}` serves it, holding the request
//! while `Prefer: wait=N` asks it to.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::KafkaConfig;
use crate::state::{Accepted, Shared};

/// Longest `Prefer: wait` honoured, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

/// What is known of an operation's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// `accepted`, `completed` or `failed`.
    pub status: String,
    /// The legacy response or the reply, when there is one.
    pub result: Option<Value>,
}

/// A report on the operations topic (keyed by operation id).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Operation (= `ce_id`) id.
    pub id: String,
    /// `completed` or `failed`.
    pub status: String,
    /// Details: the legacy status and body, or a reply.
    pub result: Option<Value>,
    /// Who reported (adapter name or service).
    pub by: String,
}

/// One operation.
pub struct Operation {
    /// Where its event went, when this replica accepted it.
    pub accepted: Option<Accepted>,
    state: watch::Sender<Outcome>,
}

impl Operation {
    /// A just-accepted operation.
    pub fn accepted(accepted: Accepted) -> Arc<Self> {
        Arc::new(Self {
            accepted: Some(accepted),
            state: watch::channel(Outcome {
                status: "accepted".into(),
                result: None,
            })
            .0,
        })
    }

    /// The current outcome.
    pub fn outcome(&self) -> Outcome {
        self.state.borrow().clone()
    }

    /// Waits (bounded) until the outcome is no longer `accepted`.
    pub async fn wait(&self, limit: Duration) -> Outcome {
        let mut rx = self.state.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|o| o.status != "accepted")).await;
        self.outcome()
    }

    /// The JSON body of `GET /operations/{id}`.
    pub fn to_json(&self, id: &str) -> Value {
        let o = self.outcome();
        let mut body = json!({ "id": id, "status": o.status });
        if let Some(a) = &self.accepted {
            body["topic"] = json!(a.topic);
            body["partition"] = json!(a.partition);
            body["offset"] = json!(a.offset);
        }
        if let Some(r) = o.result {
            body["result"] = r;
        }
        body
    }
}

/// Applies a report: updates the operation this replica knows, or records
/// the outcome of one another replica accepted.
pub async fn apply(shared: &Shared, report: Report) {
    let outcome = Outcome {
        status: report.status,
        result: report.result,
    };
    match shared.operations.get(&report.id).await {
        Some(op) => {
            op.state.send_replace(outcome);
        }
        None => {
            let op = Arc::new(Operation {
                accepted: None,
                state: watch::channel(outcome).0,
            });
            shared.operations.insert(report.id, op).await;
        }
    }
}

/// `Prefer: wait=N` (RFC 7240), capped at [`MAX_WAIT_SECS`].
pub fn preferred_wait(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix("wait="))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .map(|n| Duration::from_secs(n.min(MAX_WAIT_SECS)))
        .next()
}

/// Follows the operations topic from its end and applies every report.
pub fn follow(
    shared: Arc<Shared>,
    kafka: &KafkaConfig,
    bootstrap: &str,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let consumer: StreamConsumer = crate::events::client_config(kafka, bootstrap)
        .set(
            "group.id",
            format!("gateway-operations-{}", uuid::Uuid::now_v7()),
        )
        .set("enable.auto.commit", "false")
        // From the start of what the topic keeps: a restarted replica learns
        // the outcomes it missed (bounded by the cache's size and TTL).
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "5000")
        .create()
        .map_err(|e| e.to_string())?;
    consumer
        .subscribe(&[&kafka.operations_topic])
        .map_err(|e| e.to_string())?;
    let topic = kafka.operations_topic.clone();
    Ok(tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(m) => {
                    if let Some(Ok(report)) = m.payload().map(serde_json::from_slice::<Report>) {
                        apply(&shared, report).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(topic = %topic, error = %e, "operations topic read failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_wait_is_parsed_and_capped() {
        let mut h = http::HeaderMap::new();
        h.insert("prefer", "respond-async, wait=5".parse().expect("value"));
        assert_eq!(preferred_wait(&h), Some(Duration::from_secs(5)));
        h.insert("prefer", "wait=3600".parse().expect("value"));
        assert_eq!(preferred_wait(&h), Some(Duration::from_secs(MAX_WAIT_SECS)));
        assert_eq!(preferred_wait(&http::HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn waiting_ends_when_the_outcome_arrives() {
        let op = Operation::accepted(Accepted {
            id: "1".into(),
            topic: "t".into(),
            partition: 0,
            offset: 7,
        });
        let waiter = {
            let op = op.clone();
            tokio::spawn(async move { op.wait(Duration::from_secs(10)).await })
        };
        op.state.send_replace(Outcome {
            status: "completed".into(),
            result: Some(json!({"status": 201})),
        });
        let outcome = waiter.await.expect("task");
        assert_eq!(outcome.status, "completed");
        assert_eq!(op.to_json("1")["offset"], 7);
    }
}
