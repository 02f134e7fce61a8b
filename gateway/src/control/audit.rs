//! The audit trail: every change as a log line, in a bounded in-memory list
//! for `GET /admin/audit`, and as an Avro event on the audit topic.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::events::{EventContext, OutgoingEvent, Publisher};
use crate::schema::EventSchema;

/// How many changes `GET /admin/audit` remembers.
const RECENT: usize = 1000;

/// The Avro schema of an audit event (`ce_type` `com.gateway.RouteChanged`).
pub const AUDIT_SCHEMA: &str = r#"{
  "type": "record", "name": "RouteChanged", "namespace": "com.gateway",
  "doc": "A change of the gateway's effective routes: file reload, admin API flip, plan step, or a flip received from another replica.",
  "fields": [
    {"name": "id", "type": "string"},
    {"name": "at", "type": "string", "doc": "RFC 3339"},
    {"name": "by", "type": "string", "doc": "Token name, 'file' for reloads, or the replica that applied it"},
    {"name": "source", "type": "string", "doc": "api | reload | plan | replica"},
    {"name": "route", "type": ["null", "string"], "default": null},
    {"name": "before", "type": ["null", "string"], "default": null},
    {"name": "after", "type": ["null", "string"], "default": null},
    {"name": "detail", "type": ["null", "string"], "default": null}
  ]
}"#;

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// Unique id.
    pub id: String,
    /// When (RFC 3339).
    pub at: String,
    /// Who: the token's name, `file`, or the origin of a replicated flip.
    pub by: String,
    /// `api`, `reload`, `plan` or `replica`.
    pub source: String,
    /// The route, when the change concerns one.
    pub route: Option<String>,
    /// Effective mode before (`None`: no such route / no override).
    pub before: Option<String>,
    /// Effective mode after.
    pub after: Option<String>,
    /// Anything else worth knowing.
    pub detail: Option<String>,
}

impl Change {
    /// A change happening now.
    pub fn now(by: &str, source: &str, route: Option<&str>) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            at: jiff::Timestamp::now().to_string(),
            by: by.to_string(),
            source: source.to_string(),
            route: route.map(str::to_string),
            before: None,
            after: None,
            detail: None,
        }
    }
}

/// The trail.
pub struct Audit {
    recent: Mutex<VecDeque<Change>>,
    sink: Option<(Publisher, String, Arc<EventSchema>)>,
}

impl Audit {
    /// An audit trail that also publishes to `topic` (when given).
    pub fn new(sink: Option<(Publisher, String)>) -> Self {
        let schema = EventSchema::parse(AUDIT_SCHEMA, "audit")
            .map(Arc::new)
            .map_err(|e| tracing::error!(error = %e, "audit schema does not parse"))
            .ok();
        Self {
            recent: Mutex::new(VecDeque::with_capacity(64)),
            sink: sink.zip(schema).map(|((p, t), s)| (p, t, s)),
        }
    }

    /// Records a change: log line, memory, audit topic (in the background).
    pub fn record(&self, change: Change) {
        tracing::info!(
            target: "audit",
            id = %change.id,
            by = %change.by,
            source = %change.source,
            route = change.route.as_deref().unwrap_or("-"),
            before = change.before.as_deref().unwrap_or("-"),
            after = change.after.as_deref().unwrap_or("-"),
            detail = change.detail.as_deref().unwrap_or(""),
            "route change"
        );
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(change.clone());
        }
        if let Some((publisher, topic, schema)) = &self.sink {
            let event = serde_json::to_value(&change)
                .map_err(|e| e.to_string())
                .and_then(|json| schema.encode_json(&json).map_err(|e| format!("{e:?}")))
                .map(|datum| {
                    OutgoingEvent::new(
                        &change.source,
                        topic,
                        &schema.full_name,
                        change.route.clone().unwrap_or_default(),
                        crate::schema::confluent_frame(schema.local_id(), &datum),
                        &EventContext::default(),
                    )
                });
            match event {
                Ok(event) => {
                    let publisher = publisher.clone();
                    tokio::spawn(async move {
                        if let Err(e) = publisher.publish(&event).await {
                            tracing::warn!(topic = %event.topic, error = %e, "audit event not published");
                        }
                    });
                }
                Err(e) => tracing::error!(error = %e, "audit event not encoded"),
            }
        }
    }

    /// The most recent changes, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Change> {
        self.recent
            .lock()
            .map(|r| r.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }
}
