//! Preconditions of a phase: topics, schemas, consumer groups, and the
//! phase it requires.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::Check;
use crate::config::{KafkaConfig, LoadedConfig};
use crate::schema::compat::Level;
use crate::schema::levels::Levels;
use crate::schema::registry::RegistryClient;
use crate::schema::Catalog;

/// One precondition's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What was checked.
    pub what: String,
    /// Why it failed, if it did.
    pub failure: Option<String>,
}

/// Runs the checks. `bootstrap` is the Kafka to ask (`None` when only an
/// embedded cluster is configured and none was named).
pub async fn run(checks: &[Check], loaded: &LoadedConfig, bootstrap: Option<&str>) -> Vec<Outcome> {
    let mut out = Vec::new();
    for check in checks {
        let (what, result) = if let Some(group) = &check.consumer_group {
            (
                format!("consumer group {group} has members"),
                group_has_members(&loaded.config.kafka, bootstrap, group).await,
            )
        } else if let Some(topic) = &check.topic {
            let what = match check.partitions {
                Some(n) => format!("topic {topic} exists with {n} partitions"),
                None => format!("topic {topic} exists"),
            };
            (
                what,
                topic_ok(&loaded.config.kafka, bootstrap, topic, check.partitions).await,
            )
        } else if let Some(schema) = &check.schema {
            (
                format!("schema {schema} is ready"),
                schema_ok(loaded, schema).await,
            )
        } else {
            continue;
        };
        out.push(Outcome {
            what,
            failure: result.err(),
        });
    }
    out
}

fn consumer(kafka: &KafkaConfig, bootstrap: Option<&str>) -> Result<BaseConsumer, String> {
    let bootstrap = bootstrap.ok_or_else(|| {
        "kafka.bootstrap is \"embedded\": pass --kafka with the running gateway's bootstrap"
            .to_string()
    })?;
    crate::events::client_config(kafka, bootstrap)
        .set("group.id", "gateway-plan-checks")
        .create()
        .map_err(|e| e.to_string())
}

async fn topic_ok(
    kafka: &KafkaConfig,
    bootstrap: Option<&str>,
    topic: &str,
    partitions: Option<i32>,
) -> Result<(), String> {
    let consumer = consumer(kafka, bootstrap)?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .ok_or_else(|| format!("topic {topic} does not exist"))?;
        let have = i32::try_from(t.partitions().len()).unwrap_or(i32::MAX);
        match partitions {
            Some(want) if want != have => Err(format!(
                "topic {topic} has {have} partitions, the plan expects {want}"
            )),
            _ => Ok(()),
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn group_has_members(
    kafka: &KafkaConfig,
    bootstrap: Option<&str>,
    group: &str,
) -> Result<(), String> {
    let consumer = consumer(kafka, bootstrap)?;
    let group = group.to_string();
    tokio::task::spawn_blocking(move || {
        let list = consumer
            .fetch_group_list(Some(&group), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let g = list
            .groups()
            .iter()
            .find(|g| g.name() == group)
            .ok_or_else(|| format!("consumer group {group} does not exist"))?;
        if g.members().is_empty() {
            Err(format!(
                "consumer group {group} has no members (state {})",
                g.state()
            ))
        } else {
            Ok(())
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// With a registry: registered under every subject a route publishes it to.
/// Without: in the catalog and compatible with its history at its level.
async fn schema_ok(loaded: &LoadedConfig, record: &str) -> Result<(), String> {
    let dir = loaded.schemas_dir();
    let catalog = Catalog::load(&dir).map_err(|p| {
        p.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let schema = catalog
        .get(record)
        .ok_or_else(|| format!("{record} is not in {}", dir.display()))?;
    if let Some(url) = &loaded.config.schemas.registry {
        let client = RegistryClient::new(
            url,
            crate::upstream::client_for_or_default(&loaded.config.upstream_tls),
            Duration::from_millis(loaded.config.schemas.registry_timeout_ms),
        );
        let strategy = loaded.config.schemas.subject_strategy;
        for route in loaded
            .config
            .routes
            .iter()
            .filter(|r| r.schema.as_deref() == Some(record))
        {
            let Some(topic) = &route.topic else { continue };
            let subject = strategy.subject(topic, record);
            match client.lookup(&subject, &schema.text).await.map_err(|e| e.to_string())? {
                Some(_) => {}
                None => {
                    return Err(format!(
                        "{record} is not registered under {subject}: run gateway schemas register --apply"
                    ))
                }
            }
        }
        return Ok(());
    }
    let levels = Levels::load(&dir)?;
    let level: Level = levels.for_names(&[record]);
    let history = catalog
        .history(record)
        .map(|h| h.values().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    let Some((newest, older)) = history.split_last() else {
        return Ok(());
    };
    let older = older
        .iter()
        .map(|s| s.model().map(|m| (s.file.clone(), m)))
        .collect::<Result<Vec<_>, _>>()?;
    let found = level.check(&newest.model()?, &older);
    if found.is_empty() {
        Ok(())
    } else {
        Err(found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "))
    }
}
