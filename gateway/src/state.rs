//! What lives for the whole process and survives reloads: the current route
//! table (swapped atomically), the producer, the spool, caches and metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::config::{LoadedConfig, Problem};
use crate::events::spool::Spool;
use crate::events::Publisher;
use crate::metrics::Metrics;
use crate::routing::{RouteTable, SchemaIds};
use crate::schema::EventSchema;
use crate::upstream::HttpClient;

/// The answer to an accepted async request, replayed for a repeated
/// `Idempotency-Key` and served by `GET /operations/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Accepted {
    /// Operation (= CloudEvents) id.
    pub id: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A remembered idempotent request.
#[derive(Debug, Clone)]
pub struct IdempotentEntry {
    /// Hash of the body the key was first used with.
    pub body_hash: u64,
    /// The first answer.
    pub accepted: Accepted,
}

/// The last reload that was refused.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadFailure {
    /// When (RFC 3339).
    pub at: String,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

/// Process-wide state shared by the public and admin servers.
pub struct Shared {
    /// The serving table. Each request loads it once, so a swap never
    /// affects a request in flight.
    pub table: ArcSwap<RouteTable>,
    /// The last refused reload, cleared by a successful one.
    pub last_reload_error: ArcSwapOption<ReloadFailure>,
    /// The producer.
    pub publisher: Publisher,
    /// Pooled client for upstreams.
    pub http: HttpClient,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Dual-write spool.
    pub spool: Arc<Spool>,
    /// Accepted async operations by id.
    pub operations: moka::future::Cache<String, Arc<crate::operations::Operation>>,
    /// (route, Idempotency-Key) → first answer.
    pub idempotency: moka::future::Cache<(String, String), IdempotentEntry>,
    /// (route, Idempotency-Key) → (request fingerprint, event) of an async
    /// publication that timed out: the broker may have written it anyway, so
    /// a retry sends this same event (same id) rather than a new one.
    pub uncertain: moka::future::Cache<(String, String), (u64, Arc<crate::events::OutgoingEvent>)>,
    /// Every schema id ever published with, for `/schemas/ids/{id}`.
    pub known_schemas: RwLock<BTreeMap<u32, Arc<EventSchema>>>,
    /// How schema ids are obtained (and their cache).
    pub schema_ids: SchemaIds,
    /// Publication tasks that must finish even if their caller goes away;
    /// shutdown waits for them.
    pub tasks: tokio_util::task::TaskTracker,
    /// One reload at a time, so an older build never replaces a newer one.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// Permits for `server.max_in_flight`.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// The config as loaded at start (listeners, Kafka, spool: restart-only).
    pub startup: LoadedConfig,
    /// The last routes file that loaded (before runtime overrides).
    pub file_config: ArcSwap<LoadedConfig>,
    /// Runtime mode overrides, by route.
    pub overrides: ArcSwap<crate::control::Overrides>,
    /// Id of the last flip applied per route (ids are time-ordered).
    pub last_change: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Who may write through the admin API.
    pub tokens: crate::control::tokens::Tokens,
    /// The audit trail.
    pub audit: crate::control::audit::Audit,
    /// Where flips are announced to the fleet (none in tests that opt out).
    pub control: Option<crate::control::replication::ControlChannel>,
    /// The routes file, for `POST /admin/reload`.
    pub config_path: Option<std::path::PathBuf>,
    /// Shadow copies and their comparisons.
    pub shadow: Arc<crate::shadow::Shadow>,
    /// Canary states and figures.
    pub canaries: Arc<crate::canary::Canaries>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on, so load
    /// balancers stop sending before the listener closes.
    pub draining: std::sync::atomic::AtomicBool,
}

/// The I/O-side parts of [`Shared`].
pub struct IoParts {
    /// The producer.
    pub publisher: Publisher,
    /// Pooled upstream client.
    pub http: HttpClient,
    /// Metrics.
    pub metrics: Metrics,
    /// Dual-write spool.
    pub spool: Arc<Spool>,
    /// Schema id source.
    pub schema_ids: SchemaIds,
}

/// The admin-side parts of [`Shared`].
pub struct AdminParts {
    /// Tokens.
    pub tokens: crate::control::tokens::Tokens,
    /// Audit trail.
    pub audit: crate::control::audit::Audit,
    /// Control channel.
    pub control: Option<crate::control::replication::ControlChannel>,
    /// The routes file.
    pub config_path: Option<std::path::PathBuf>,
}

impl Shared {
    /// Assembles the state around an already built table.
    pub fn new(startup: LoadedConfig, table: RouteTable, io: IoParts, admin: AdminParts) -> Self {
        let IoParts {
            publisher,
            http,
            metrics,
            spool,
            schema_ids,
        } = io;
        let canaries = Arc::new(crate::canary::Canaries::new());
        let shadow = Arc::new(crate::shadow::Shadow::new(
            http.clone(),
            metrics.clone(),
            Some((publisher.clone(), startup.config.kafka.shadow_topic.clone())),
            canaries.clone(),
        ));
        let c = &startup.config;
        // LRU, not moka's default TinyLFU: a new key must always be admitted,
        // or a repeated Idempotency-Key could publish twice.
        let operations = moka::future::Cache::builder()
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .max_capacity(c.operations.max_entries)
            .time_to_live(Duration::from_secs(c.operations.ttl_secs))
            .build();
        let idempotency = moka::future::Cache::builder()
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .max_capacity(c.idempotency.max_entries)
            .time_to_live(Duration::from_secs(c.idempotency.ttl_secs))
            .build();
        let uncertain = moka::future::Cache::builder()
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .max_capacity(c.idempotency.max_entries)
            .time_to_live(Duration::from_secs(c.idempotency.ttl_secs))
            .build();
        let known = table.schema_ids.clone();
        Self {
            table: ArcSwap::from_pointee(table),
            last_reload_error: ArcSwapOption::empty(),
            publisher,
            http,
            metrics,
            spool,
            operations,
            idempotency,
            uncertain,
            known_schemas: RwLock::new(known),
            schema_ids,
            tasks: tokio_util::task::TaskTracker::new(),
            reload_lock: tokio::sync::Mutex::new(()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(c.server.max_in_flight)),
            file_config: ArcSwap::from_pointee(startup.clone()),
            overrides: ArcSwap::from_pointee(Default::default()),
            last_change: std::sync::Mutex::new(Default::default()),
            draining: std::sync::atomic::AtomicBool::new(false),
            tokens: admin.tokens,
            audit: admin.audit,
            control: admin.control,
            config_path: admin.config_path,
            shadow,
            canaries,
            startup,
        }
    }

    /// Swaps in a new, already validated table.
    pub fn install(&self, table: RouteTable) {
        if let Ok(mut known) = self.known_schemas.write() {
            known.extend(table.schema_ids.iter().map(|(k, v)| (*k, v.clone())));
        }
        self.table.store(Arc::new(table));
    }
}
