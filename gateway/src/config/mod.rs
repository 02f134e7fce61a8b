//! `routes.toml`: the typed shape users write, with documented defaults.
//!
//! Parsing is strict (`deny_unknown_fields`); semantic checks that need the
//! whole file (upstream names, schemas, keys) live in [`validate`] and in the
//! route-table build, which together report every problem at once.

pub mod env;
mod security;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use security::{
    Credential, KafkaSecurity, SaslMechanism, Secret, SecurityProtocol, DEFAULT_PASSWORD_ENV,
};
pub use validate::{ConfigError, Problem};

/// The whole `routes.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners and request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// The Kafka cluster events are published to.
    pub kafka: KafkaConfig,
    /// Where the Avro schemas live and, optionally, the Schema Registry.
    #[serde(default)]
    pub schemas: SchemasConfig,
    /// Durable local spool for dual-write events that Kafka could not take.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// `Idempotency-Key` handling for async routes.
    #[serde(default)]
    pub idempotency: IdempotencyConfig,
    /// How long `GET /operations/{id}` remembers accepted operations.
    #[serde(default)]
    pub operations: OperationsConfig,
    /// Legacy services, by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes, matched on method and path pattern, most specific first.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Optional catch-all: requests matching no route are passed through here
    /// instead of answered 404.
    pub fallback: Option<FallbackConfig>,
    /// Who may change routes through the admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Event→HTTP adapters: deliver a topic's events to a legacy service.
    #[serde(default)]
    pub adapters: Vec<AdapterConfig>,
    /// TLS to `https://` upstreams and the Schema Registry.
    #[serde(default)]
    pub upstream_tls: UpstreamTls,
}

/// `[server.tls]`: HTTPS on the public listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the two files are checked for a new certificate, in seconds.
    #[serde(default = "default_tls_reload_secs")]
    pub reload_interval_secs: u64,
}

pub(super) fn default_tls_reload_secs() -> u64 {
    10
}

/// `[upstream_tls]`: the client side of `https://` upstreams and registry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of extra certificate authorities to trust, besides the
    /// system's store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for services that want mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// `[[adapters]]`: consume a topic and call a legacy service for each event.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// Name (`gateway adapter run --name …`, metrics, reports).
    pub name: String,
    /// Topic to consume.
    pub topic: String,
    /// Consumer group; `adapter-<name>` by default. Independent adapters
    /// (inventory, notifications, data lake) use different groups, so each
    /// receives every event.
    pub group: Option<String>,
    /// The `[upstreams.*]` to call.
    pub upstream: String,
    /// Method to call with; the original request's by default.
    pub method: Option<String>,
    /// Path to call; the original request's (from the event) by default.
    pub path: Option<String>,
    /// Deliveries tried before an event goes to `<topic>.dlq`.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First retry delay, in milliseconds (doubles, with full jitter).
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest retry delay, in milliseconds.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
}

impl AdapterConfig {
    /// The consumer group.
    pub fn group(&self) -> String {
        self.group
            .clone()
            .unwrap_or_else(|| format!("adapter-{}", self.name))
    }
}

fn default_attempts() -> u32 {
    8
}
fn default_retry_initial_ms() -> u64 {
    100
}
fn default_retry_max_ms() -> u64 {
    30_000
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// A TOML file of named bearer tokens (`[tokens] alice = "..."`),
    /// relative to the config file. The environment variable
    /// `GATEWAY_ADMIN_TOKEN` adds a token named `env`. No token at all =
    /// admin writes are disabled.
    pub tokens_file: Option<PathBuf>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address for public traffic.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address for health, metrics, the schema catalog and the admin API.
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Seconds a client is told to wait (`Retry-After`) when the gateway sheds load.
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u32,
    /// Watch the config file and reload it on change (SIGHUP always reloads).
    #[serde(default = "default_true")]
    pub watch_config: bool,
    /// Most requests served at once; beyond it requests get 503 with
    /// `Retry-After` instead of queueing (restart to change).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Most client connections open at once per listener; further ones wait
    /// in the kernel's accept queue (restart to change).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Keep X-Forwarded-For/-Host/-Proto and Forwarded sent by the client
    /// (appending to X-Forwarded-For). Only for a gateway behind a trusted
    /// proxy or load balancer; otherwise they are replaced, since a client
    /// could forge them.
    #[serde(default)]
    pub trust_forwarded_headers: bool,
    /// Peers (addresses or networks, `10.0.0.0/8`) whose X-Forwarded-For,
    /// -Host, -Proto and Forwarded headers are kept and appended to: the
    /// load balancers in front of the gateway. From any other peer they
    /// are replaced. `trust_forwarded_headers = true` trusts every peer.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Time allowed to receive a whole request body on dual-write and async
    /// routes, in milliseconds; a slower client gets 408.
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// HTTPS on the public listener (restart to turn on or off; the
    /// certificate itself is reloaded when its files change).
    pub tls: Option<ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin: default_admin(),
            max_body_bytes: default_max_body_bytes(),
            retry_after_secs: default_retry_after_secs(),
            watch_config: default_true(),
            max_in_flight: default_max_in_flight(),
            trust_forwarded_headers: false,
            trusted_proxies: Vec::new(),
            max_connections: default_max_connections(),
            body_read_timeout_ms: default_body_read_timeout_ms(),
            tls: None,
        }
    }
}

/// `[kafka]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port]`, or `"embedded"` for an in-process development
    /// cluster (librdkafka's mock cluster: not durable, data lives in memory).
    pub bootstrap: String,
    /// Upper bound for one delivery, in milliseconds. It is also librdkafka's
    /// `message.timeout.ms`, so a message that was not acknowledged in time is
    /// failed by the producer itself rather than delivered after the caller
    /// was told it failed.
    #[serde(default = "default_publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// Most messages the producer may hold in memory before new publishes are
    /// refused with 503 (`queue.buffering.max.messages`).
    #[serde(default = "default_queue_max_messages")]
    pub queue_max_messages: u32,
    /// Extra librdkafka properties, handed over as they are. The gateway's
    /// durability settings (`acks=all`, `enable.idempotence=true`) cannot be
    /// weakened here.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Compacted topic that carries runtime route flips to every replica,
    /// keyed by route (created at start if missing).
    #[serde(default = "default_control_topic")]
    pub control_topic: String,
    /// Topic that keeps every change (file reload, API flip, plan step) as
    /// an Avro event; never compacted.
    #[serde(default = "default_audit_topic")]
    pub audit_topic: String,
    /// Topic where adapters (and new services) report the outcome of async
    /// operations, keyed by operation id; feeds `GET /operations/{id}`.
    #[serde(default = "default_operations_topic")]
    pub operations_topic: String,
    /// Topic for shadow differences of routes with `publish_diffs`.
    #[serde(default = "default_shadow_topic")]
    pub shadow_topic: String,
    /// Short-lived topic where each replica shares its canary figures, so a
    /// step up is decided from the whole fleet's traffic.
    #[serde(default = "default_canary_figures_topic")]
    pub canary_figures_topic: String,
    /// Replication factor for the two topics above when the gateway creates
    /// them; -1 = the broker's default.
    #[serde(default = "default_replication")]
    pub control_replication_factor: i32,
    /// TLS and SASL to the brokers (every Kafka client of the gateway).
    #[serde(default)]
    pub security: KafkaSecurity,
}

/// `[schemas]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchemasConfig {
    /// Directory of `.avsc` files, relative to the config file.
    #[serde(default = "default_schemas_dir")]
    pub dir: PathBuf,
    /// Base URL of a Confluent-compatible Schema Registry. Without it the
    /// gateway numbers its own catalog and serves it at `/schemas/ids/{id}`.
    pub registry: Option<String>,
    /// Timeout for one Schema Registry call, in milliseconds.
    #[serde(default = "default_registry_timeout_ms")]
    pub registry_timeout_ms: u64,
    /// How a route's registry subject is named: `topic` (`<topic>-value`,
    /// the default), `record` (`<record full name>`) or `topic-record`
    /// (`<topic>-<record full name>`).
    #[serde(default)]
    pub subject_strategy: SubjectStrategy,
}

/// Confluent's subject name strategies.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectStrategy {
    /// TopicNameStrategy: `<topic>-value`.
    #[default]
    Topic,
    /// RecordNameStrategy: `<record full name>`.
    Record,
    /// TopicRecordNameStrategy: `<topic>-<record full name>`.
    TopicRecord,
}

impl SubjectStrategy {
    /// The subject for a topic's value schema.
    pub fn subject(self, topic: &str, record: &str) -> String {
        match self {
            SubjectStrategy::Topic => format!("{topic}-value"),
            SubjectStrategy::Record => record.to_string(),
            SubjectStrategy::TopicRecord => format!("{topic}-{record}"),
        }
    }
}

impl Default for SchemasConfig {
    fn default() -> Self {
        Self {
            dir: default_schemas_dir(),
            registry: None,
            registry_timeout_ms: default_registry_timeout_ms(),
            subject_strategy: SubjectStrategy::default(),
        }
    }
}

/// `[spool]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory for spooled events, relative to the config file.
    #[serde(default = "default_spool_dir")]
    pub dir: PathBuf,
    /// Most events the spool holds; past it an event is logged and counted
    /// as lost (`gateway_events_lost_total`), never silently dropped.
    #[serde(default = "default_spool_max_events")]
    pub max_events: usize,
    /// Pause between re-publish attempts while Kafka is unavailable, in milliseconds.
    #[serde(default = "default_spool_retry_ms")]
    pub retry_interval_ms: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: default_spool_dir(),
            max_events: default_spool_max_events(),
            retry_interval_ms: default_spool_retry_ms(),
        }
    }
}

/// `[idempotency]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long a key is remembered, in seconds.
    #[serde(default = "default_idempotency_ttl_secs")]
    pub ttl_secs: u64,
    /// Most keys remembered at once (least recently used are forgotten first).
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
    /// At start, keys of the events published in this many seconds before
    /// are read back from the route topics (and the spool), so a retry after
    /// a crash or a restart is still recognised. 0 = off. At most `ttl_secs`.
    #[serde(default = "default_idempotency_recover_secs")]
    pub recover_secs: u64,
    /// How long that read-back may take before the start fails, in seconds.
    #[serde(default = "default_idempotency_recover_timeout_secs")]
    pub recover_timeout_secs: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            ttl_secs: default_idempotency_ttl_secs(),
            max_entries: default_cache_entries(),
            recover_secs: default_idempotency_recover_secs(),
            recover_timeout_secs: default_idempotency_recover_timeout_secs(),
        }
    }
}

/// `[operations]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OperationsConfig {
    /// How long an accepted operation id is remembered, in seconds.
    #[serde(default = "default_operations_ttl_secs")]
    pub ttl_secs: u64,
    /// Most operation ids remembered at once.
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
}

impl Default for OperationsConfig {
    fn default() -> Self {
        Self {
            ttl_secs: default_operations_ttl_secs(),
            max_entries: default_cache_entries(),
        }
    }
}

/// `[upstreams.<name>]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the legacy service (`http://host:port[/prefix]`).
    pub url: String,
    /// Time allowed for the legacy service to answer with headers, in milliseconds.
    #[serde(default = "default_upstream_timeout_ms")]
    pub timeout_ms: u64,
    /// Most calls in flight to this service at once; past it, 503 at once
    /// instead of a queue.
    #[serde(default = "default_upstream_max_concurrency")]
    pub max_concurrency: usize,
    /// Consecutive failures (connect errors, timeouts, broken exchanges,
    /// 5xx answers) that open the circuit breaker; 0 turns it off.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before one trial call.
    #[serde(default = "default_breaker_open_ms")]
    pub breaker_open_ms: u64,
}

/// `[fallback]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Upstream that unmatched requests are passed through to.
    pub upstream: String,
}

/// What a route does with a call.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Proxy to the legacy service, nothing else.
    Passthrough,
    /// Proxy, and on a 2xx answer also publish the event.
    DualWrite,
    /// Publish the event and answer 202; the legacy service is not called.
    Async,
}

impl Mode {
    /// The name used in `routes.toml`, metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Passthrough => "passthrough",
            Mode::DualWrite => "dual-write",
            Mode::Async => "async",
        }
    }

    /// Whether the mode publishes events (and so needs topic, schema and key).
    pub fn publishes(self) -> bool {
        !matches!(self, Mode::Passthrough)
    }
}

/// `shadow = { upstream = "orders-v2", ... }`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// The candidate: an `[upstreams.*]` entry.
    pub upstream: String,
    /// Share of requests copied, 0-100.
    #[serde(default = "default_percent")]
    pub percent: u8,
    /// JSON pointer globs not compared (`/items/*/updatedAt`).
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Headers compared (case-insensitive); none by default.
    #[serde(default)]
    pub compare_headers: Vec<String>,
    /// Numbers closer than this are equal.
    #[serde(default)]
    pub tolerance: f64,
    /// Learn noise from a second legacy answer: `"same"` asks the legacy
    /// service twice (safe methods only), or name another upstream.
    pub noise: Option<String>,
    /// Also copy unsafe methods (POST, PUT, ...), marked `X-Gateway-Shadow: 1`.
    #[serde(default)]
    pub allow_side_effects: bool,
    /// Headers whose values never appear in examples (besides
    /// authorization, proxy-authorization, cookie and set-cookie).
    #[serde(default)]
    pub redact_headers: Vec<String>,
    /// Also publish each difference to `kafka.shadow_topic`.
    #[serde(default)]
    pub publish_diffs: bool,
    /// Dual-write and async routes: after the event, read the resource back
    /// from the candidate at this path (`{field}` = a top-level body field or
    /// path parameter) and compare it with the legacy read (dual-write) or
    /// with the fields the request sent (async).
    pub read_after_write: Option<String>,
    /// Wait this long after the event before reading back, in milliseconds.
    #[serde(default = "default_read_delay_ms")]
    pub delay_ms: u64,
}

fn default_read_delay_ms() -> u64 {
    1_000
}

fn default_percent() -> u8 {
    100
}

/// Policy for body fields the schema does not know.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownFields {
    /// 422 listing each unknown field.
    #[default]
    Reject,
    /// Leave them out of the event.
    Ignore,
}

/// `[[routes]]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name; used in metrics, logs, `ce_source` and problem bodies.
    pub name: String,
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path pattern: `/orders`, `/orders/{id}`, or a catch-all `/static/{*rest}`.
    pub path: String,
    /// Name of an `[upstreams.*]` entry.
    pub upstream: String,
    /// `passthrough`, `dual-write` or `async`.
    pub mode: Mode,
    /// Kafka topic for the event (dual-write and async).
    pub topic: Option<String>,
    /// Full name of the Avro record in `schemas/` (dual-write and async).
    pub schema: Option<String>,
    /// Copy requests to a candidate service and compare its answers with
    /// the legacy ones (passthrough and dual-write routes).
    pub shadow: Option<ShadowConfig>,
    /// What to do with body fields the schema does not have: `reject`
    /// (422, the default) or `ignore` (they are left out of the event).
    #[serde(default)]
    pub unknown_fields: UnknownFields,
    /// Pin a version of the record (`schemas/<name>/v<N>.avsc`); without it
    /// the newest version is used.
    pub schema_version: Option<u32>,
    /// Message key: a JSON pointer into the body (`/customerId`) or a path
    /// parameter (`{id}`) (dual-write and async).
    pub key: Option<String>,
    /// Progressive release of another mode (and/or upstream) to a growing,
    /// sticky share of requests, with automatic rollback.
    pub canary: Option<CanaryConfig>,
}

/// `canary = { mode = "async", steps = [1, 5, 25, 50, 100], interval = "10m",
/// sticky = "header:X-Customer-Id" }`
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The mode the canary arm serves with; the rest keep the route's mode.
    pub mode: Mode,
    /// The canary arm's upstream (for a rewritten service); the route's by
    /// default.
    pub upstream: Option<String>,
    /// Shares of requests (percent, increasing, each in (0, 100]) the canary
    /// arm takes, one after the other.
    #[serde(default = "default_canary_steps")]
    pub steps: Vec<f64>,
    /// Healthy time at a step before stepping up (`10m`, `90s`).
    #[serde(default = "default_canary_interval")]
    pub interval: String,
    /// Sliding window the figures are taken over (`1m`).
    #[serde(default = "default_canary_window")]
    pub window: String,
    /// What keeps a caller in one arm: `header:NAME`, `cookie:NAME`, or
    /// `key` (the route's event key). Requests without it take the base arm.
    pub sticky: String,
    /// Highest share of canary-arm requests that may fail (5xx or a failed
    /// publish) within the window, 0-1.
    #[serde(default = "default_canary_error_rate")]
    pub max_error_rate: f64,
    /// Highest p99 latency of the canary arm within the window, in milliseconds.
    pub max_p99_ms: Option<u64>,
    /// Highest share of the canary arm's shadow comparisons that may differ
    /// (routes with `shadow`), 0-1.
    pub max_shadow_diff_rate: Option<f64>,
    /// Canary-arm requests needed within the window before any verdict
    /// (step up or roll back).
    #[serde(default = "default_canary_min_requests")]
    pub min_requests: u64,
    /// Client addresses or networks (`10.0.0.0/8`, `127.0.0.1`) whose
    /// `X-Canary: always|never` header is honoured; nobody's by default.
    #[serde(default)]
    pub override_from: Vec<String>,
    /// Names this release: a canary whose `release` (or `mode`) differs from
    /// the one the fleet ran starts over at its first step. `gateway plan`
    /// sets it when it writes a canary.
    #[serde(default)]
    pub release: String,
}

fn default_canary_steps() -> Vec<f64> {
    vec![1.0, 5.0, 25.0, 50.0, 100.0]
}
fn default_canary_interval() -> String {
    "10m".into()
}
fn default_canary_window() -> String {
    "1m".into()
}
fn default_canary_error_rate() -> f64 {
    0.01
}
fn default_canary_min_requests() -> u64 {
    100
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_upstream_max_concurrency() -> usize {
    256
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open_ms() -> u64 {
    5_000
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9080))
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_retry_after_secs() -> u32 {
    1
}
fn default_true() -> bool {
    true
}
fn default_max_in_flight() -> usize {
    10_000
}
fn default_max_connections() -> usize {
    20_000
}
fn default_body_read_timeout_ms() -> u64 {
    30_000
}
fn default_publish_timeout_ms() -> u64 {
    5_000
}
fn default_control_topic() -> String {
    "gateway.control".into()
}
fn default_operations_topic() -> String {
    "gateway.operations".into()
}
fn default_shadow_topic() -> String {
    "gateway.shadow-diffs".into()
}
fn default_canary_figures_topic() -> String {
    "gateway.canary-figures".into()
}
fn default_audit_topic() -> String {
    "gateway.audit".into()
}
fn default_replication() -> i32 {
    -1
}
fn default_queue_max_messages() -> u32 {
    100_000
}
fn default_schemas_dir() -> PathBuf {
    PathBuf::from("schemas")
}
fn default_registry_timeout_ms() -> u64 {
    5_000
}
fn default_spool_dir() -> PathBuf {
    PathBuf::from("spool")
}
fn default_spool_max_events() -> usize {
    1_000_000
}
fn default_spool_retry_ms() -> u64 {
    1_000
}
fn default_idempotency_ttl_secs() -> u64 {
    24 * 60 * 60
}
fn default_idempotency_recover_secs() -> u64 {
    60 * 60
}
fn default_idempotency_recover_timeout_secs() -> u64 {
    120
}
fn default_operations_ttl_secs() -> u64 {
    24 * 60 * 60
}
fn default_cache_entries() -> u64 {
    1_000_000
}
fn default_upstream_timeout_ms() -> u64 {
    5_000
}

/// `p` as written in a config file in `base_dir`: relative paths are
/// relative to that directory.
pub(crate) fn resolve_in(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// A parsed config together with the directory its relative paths resolve against.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The parsed file.
    pub config: Config,
    /// Directory of the file; relative paths in it are relative to this.
    pub base_dir: PathBuf,
    /// Environment variables that overrode settings of the file (names only).
    pub from_env: Vec<String>,
}

impl LoadedConfig {
    /// Reads and parses a config file (syntax and types only), with the
    /// overrides from the process environment ([`env`]) and the Kafka
    /// credentials read.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse_with_env(&text, base_dir, &|k| std::env::var(k).ok())
    }

    /// Parses config text whose relative paths resolve against `base_dir`,
    /// without looking at the environment.
    pub fn parse(text: &str, base_dir: PathBuf) -> Result<Self, ConfigError> {
        Self::parse_with_env(text, base_dir, &|_| None)
    }

    /// Parses config text, then applies the overrides and reads the
    /// credentials that `env` gives.
    pub fn parse_with_env(
        text: &str,
        base_dir: PathBuf,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let from_env = env::apply(&mut config, env)?;
        config.kafka.security.prepare(&base_dir, env);
        if let Some(tls) = &mut config.server.tls {
            for p in [&mut tls.cert_file, &mut tls.key_file] {
                // An unset file (an override named only the other) stays
                // empty, for validation to name.
                if !p.as_os_str().is_empty() {
                    *p = resolve_in(&base_dir, p);
                }
            }
        }
        let u = &mut config.upstream_tls;
        for p in [&mut u.ca_file, &mut u.cert_file, &mut u.key_file]
            .into_iter()
            .flatten()
        {
            *p = resolve_in(&base_dir, p);
        }
        Ok(Self {
            config,
            base_dir,
            from_env,
        })
    }

    /// Resolves a path from the file against the file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve_in(&self.base_dir, p)
    }

    /// Schema directory, resolved.
    pub fn schemas_dir(&self) -> PathBuf {
        self.resolve(&self.config.schemas.dir)
    }

    /// Spool directory, resolved.
    pub fn spool_dir(&self) -> PathBuf {
        self.resolve(&self.config.spool.dir)
    }
}

#[cfg(test)]
mod tests;
