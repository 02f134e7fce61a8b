//! The control topic: runtime flips are published there (keyed by route,
//! compacted) and every replica consumes it from the beginning, so a fleet
//! flips together and a restarted replica rebuilds its overrides.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::audit::Change;
use crate::canary::state::CanaryState;
use crate::config::{KafkaConfig, Mode};
use crate::events::{OutgoingEvent, Publisher};
use crate::state::Shared;

/// What goes on the control topic.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Flip {
    route: String,
    /// `None`: the override was cleared.
    mode: Option<Mode>,
    change: Change,
}

/// Anything on the control topic: a canary's state (keyed `canary/<route>`)
/// or a flip (keyed by route).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum ControlMessage {
    Canary { canary: CanaryState },
    Flip(Flip),
}

/// The publishing side, held by [`Shared`].
pub struct ControlChannel {
    publisher: Publisher,
    topic: String,
}

impl ControlChannel {
    /// A channel on `topic`.
    pub fn new(publisher: Publisher, topic: String) -> Self {
        Self { publisher, topic }
    }

    /// Publishes a flip and waits for Kafka's acknowledgement.
    pub async fn announce(
        &self,
        route: &str,
        mode: Option<Mode>,
        change: &Change,
    ) -> Result<(), String> {
        let flip = Flip {
            route: route.to_string(),
            mode,
            change: change.clone(),
        };
        let event = OutgoingEvent {
            id: change.id.clone(),
            route: "control".into(),
            topic: self.topic.clone(),
            key: route.to_string(),
            headers: vec![("content-type".into(), "application/json".into())],
            payload: serde_json::to_vec(&flip).map_err(|e| e.to_string())?,
        };
        self.publisher
            .publish(&event)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Publishes a canary's state and waits for Kafka's acknowledgement.
    pub async fn announce_canary(&self, state: &CanaryState) -> Result<(), String> {
        let id = state
            .decisions
            .last()
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), |d| d.id.clone());
        let event = OutgoingEvent {
            id,
            route: "control".into(),
            topic: self.topic.clone(),
            key: format!("canary/{}", state.route),
            headers: vec![("content-type".into(), "application/json".into())],
            payload: serde_json::to_vec(&ControlMessage::Canary {
                canary: state.clone(),
            })
            .map_err(|e| e.to_string())?,
        };
        self.publisher
            .publish(&event)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Creates the gateway's own topics (control, audit, operations, canary
/// figures) that do not exist yet. Topics provisioned beforehand are left
/// alone, so no CreateTopics permission is needed for them.
pub async fn ensure_topics(kafka: &KafkaConfig, bootstrap: &str) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = crate::events::client_config(kafka, bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let admin = Arc::new(admin);
    let wanted = [
        kafka.control_topic.clone(),
        kafka.audit_topic.clone(),
        kafka.operations_topic.clone(),
        kafka.canary_figures_topic.clone(),
    ];
    let existing = {
        let admin = Arc::clone(&admin);
        tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(10))
                .map(|md| {
                    md.topics()
                        .iter()
                        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                        .map(|t| t.name().to_string())
                        .collect::<Vec<_>>()
                })
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??
    };
    if wanted.iter().all(|t| existing.contains(t)) {
        return Ok(());
    }
    let rf = kafka.control_replication_factor;
    // One partition: a single log orders every flip.
    let compacted = NewTopic::new(&kafka.control_topic, 1, TopicReplication::Fixed(rf))
        .set("cleanup.policy", "compact");
    let kept = NewTopic::new(&kafka.audit_topic, 1, TopicReplication::Fixed(rf));
    // Figures are only useful for a window; ten minutes is plenty.
    let figures = NewTopic::new(&kafka.canary_figures_topic, 1, TopicReplication::Fixed(rf))
        .set("retention.ms", "600000");
    let operations = NewTopic::new(&kafka.operations_topic, 1, TopicReplication::Fixed(rf));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let missing: Vec<&NewTopic<'_>> = [&compacted, &kept, &operations, &figures]
        .into_iter()
        .filter(|t| !existing.iter().any(|e| e == t.name))
        .collect();
    let results = admin
        .create_topics(missing, &options)
        .await
        .map_err(|e| e.to_string())?;
    for r in results {
        if let Err((topic, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(format!("cannot create {topic}: {code}"));
            }
        }
    }
    Ok(())
}

/// Partitions of `topic` with their low and high watermarks, waiting (up to
/// `patience`) for a topic that was just created to show up.
pub(crate) fn partitions(
    consumer: &StreamConsumer,
    topic: &str,
    patience: Duration,
) -> Result<Vec<(i32, i64, i64)>, String> {
    let deadline = Instant::now() + patience;
    loop {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let found = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if let Some(t) = found {
            return t
                .partitions()
                .iter()
                .map(|p| {
                    let (low, high) = consumer
                        .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                        .map_err(|e| e.to_string())?;
                    Ok((p.id(), low, high))
                })
                .collect();
        }
        if Instant::now() > deadline {
            return Err(format!("topic {topic} has no readable partitions"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads the control topic from the beginning, applies what it holds, then
/// keeps applying new flips in the background. Returns once caught up; a
/// topic that cannot be read is an error (the replica would otherwise miss
/// every flip of the fleet).
pub async fn follow(
    shared: Arc<Shared>,
    kafka: &KafkaConfig,
    bootstrap: &str,
    catch_up: Duration,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let topic = kafka.control_topic.clone();
    let consumer: StreamConsumer = crate::events::client_config(kafka, bootstrap)
        .set(
            "group.id",
            format!("gateway-control-{}", uuid::Uuid::now_v7()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let (consumer, ends) = {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || -> Result<_, String> {
            let parts = partitions(&consumer, &topic, catch_up)?;
            let mut tpl = TopicPartitionList::new();
            for (p, _, _) in &parts {
                tpl.add_partition_offset(&topic, *p, Offset::Beginning)
                    .map_err(|e| e.to_string())?;
            }
            consumer.assign(&tpl).map_err(|e| e.to_string())?;
            Ok((consumer, parts))
        })
        .await
        .map_err(|e| e.to_string())??
    };

    // Catch up: the newest flip per route (change ids are time-ordered),
    // applied in one go.
    let mut latest: BTreeMap<String, Flip> = BTreeMap::new();
    let mut canaries: BTreeMap<String, CanaryState> = BTreeMap::new();
    let mut reached: HashMap<i32, i64> = ends.iter().map(|(p, low, _)| (*p, *low)).collect();
    let deadline = Instant::now() + catch_up;
    let done = |reached: &HashMap<i32, i64>| {
        ends.iter()
            .all(|(p, _, high)| reached.get(p).copied().unwrap_or(0) >= *high)
    };
    while !done(&reached) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "control topic {topic} not read to its end within {catch_up:?}"
            ));
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(m)) => {
                reached.insert(m.partition(), m.offset() + 1);
                match m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<ControlMessage>(p).ok())
                {
                    Some(ControlMessage::Flip(flip)) => {
                        let newer = latest
                            .get(&flip.route)
                            .is_none_or(|old| old.change.id < flip.change.id);
                        if newer {
                            latest.insert(flip.route.clone(), flip);
                        }
                    }
                    Some(ControlMessage::Canary { canary }) => {
                        let newer = canaries
                            .get(&canary.route)
                            .is_none_or(|old| canary.supersedes(old));
                        if newer {
                            canaries.insert(canary.route.clone(), canary);
                        }
                    }
                    None => {}
                }
            }
            Ok(Err(e)) => tracing::warn!(topic, error = %e, "control topic read failed"),
            Err(_) => {}
        }
    }
    if !latest.is_empty() {
        let updates = latest
            .into_values()
            .map(|f| (f.route, f.mode, f.change))
            .collect();
        super::apply_remote(&shared, updates).await;
    }
    for state in canaries.into_values() {
        crate::canary::engine::apply_remote(&shared, state, true);
    }

    Ok(tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(m) => match m.payload().map(serde_json::from_slice::<ControlMessage>) {
                    Some(Ok(ControlMessage::Flip(flip))) => {
                        super::apply_remote(&shared, vec![(flip.route, flip.mode, flip.change)])
                            .await;
                    }
                    Some(Ok(ControlMessage::Canary { canary })) => {
                        crate::canary::engine::apply_remote(&shared, canary, false);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(topic = %topic, error = %e, "unreadable control message skipped")
                    }
                    None => {}
                },
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, "control topic read failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }))
}
