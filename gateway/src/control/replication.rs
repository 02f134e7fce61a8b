//! The control topic: runtime flips are published there (keyed by route,
//! compacted) and every replica consumes it from the beginning, so a fleet
//! flips together and a restarted replica rebuilds its overrides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::audit::Change;
use crate::config::Mode;
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
}

/// Creates the compacted control topic and the audit topic when missing.
pub async fn ensure_topics(
    bootstrap: &str,
    control: &str,
    audit: &str,
    replication: i32,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let compacted = NewTopic::new(control, 1, TopicReplication::Fixed(replication))
        .set("cleanup.policy", "compact");
    let kept = NewTopic::new(audit, 1, TopicReplication::Fixed(replication));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&compacted, &kept], &options)
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

/// Reads the control topic from the beginning, applies what it holds, then
/// keeps applying new flips in the background. Returns once caught up (or
/// after `catch_up` elapsed, with a warning).
pub async fn follow(
    shared: Arc<Shared>,
    bootstrap: &str,
    topic: &str,
    catch_up: Duration,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("gateway-control-{}", uuid::Uuid::now_v7()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let (consumer, ends) = {
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || -> Result<_, String> {
            let md = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let mut tpl = TopicPartitionList::new();
            let mut ends = Vec::new();
            for t in md.topics().iter().filter(|t| t.name() == topic) {
                for p in t.partitions() {
                    tpl.add_partition_offset(&topic, p.id(), Offset::Beginning)
                        .map_err(|e| e.to_string())?;
                    let (_, high) = consumer
                        .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                        .map_err(|e| e.to_string())?;
                    ends.push((p.id(), high));
                }
            }
            consumer.assign(&tpl).map_err(|e| e.to_string())?;
            Ok((consumer, ends))
        })
        .await
        .map_err(|e| e.to_string())??
    };

    // Catch up: the latest flip per route, applied in one rebuild.
    let mut latest: std::collections::BTreeMap<String, (Option<Mode>, Option<Change>)> =
        Default::default();
    let mut reached: std::collections::HashMap<i32, i64> =
        ends.iter().map(|(p, _)| (*p, 0)).collect();
    let deadline = Instant::now() + catch_up;
    let done = |reached: &std::collections::HashMap<i32, i64>| {
        ends.iter()
            .all(|(p, high)| reached.get(p).copied().unwrap_or(0) >= *high)
    };
    while !done(&reached) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(
                topic,
                "control topic not read to its end in time; continuing to follow it"
            );
            break;
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(m)) => {
                reached.insert(m.partition(), m.offset() + 1);
                if let Some(flip) = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Flip>(p).ok())
                {
                    latest.insert(flip.route, (flip.mode, Some(flip.change)));
                }
            }
            Ok(Err(e)) => tracing::warn!(topic, error = %e, "control topic read failed"),
            Err(_) => {}
        }
    }
    if !latest.is_empty() {
        let updates = latest.into_iter().map(|(r, (m, c))| (r, m, c)).collect();
        super::apply_remote(&shared, updates).await;
    }

    let topic = topic.to_string();
    Ok(tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(m) => match m.payload().map(serde_json::from_slice::<Flip>) {
                    Some(Ok(flip)) => {
                        super::apply_remote(
                            &shared,
                            vec![(flip.route, flip.mode, Some(flip.change))],
                        )
                        .await;
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
