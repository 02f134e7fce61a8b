//! Wiring: config → producer, route table, state → the public and admin
//! listeners, the spool re-publisher and the config watcher.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::{ConfigError, LoadedConfig, Problem};
use crate::control::audit::Audit;
use crate::control::replication::{self, ControlChannel};
use crate::control::tokens::Tokens;
use crate::events::embedded::EmbeddedKafka;
use crate::events::spool::Spool;
use crate::events::Publisher;
use crate::metrics::Metrics;
use crate::routing::{self, SchemaIds};
use crate::state::{AdminParts, IoParts, Shared};
use crate::{admin, listener, modes, reload, upstream};

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file could not be read or parsed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The config is invalid.
    #[error("{}", ConfigError::Invalid(.0.clone()))]
    Invalid(Vec<Problem>),
    /// Kafka client setup failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// Spool directory unusable.
    #[error("spool {dir}: {source}")]
    Spool {
        /// The directory.
        dir: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The admin token file is unusable.
    #[error("admin tokens: {0}")]
    Admin(String),
    /// A TLS certificate, key or trust store is unusable.
    #[error("tls: {0}")]
    Tls(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Validates a config file and its schemas without starting anything
/// (`gateway check`). A registry, if configured, is only read from.
pub async fn check(path: &Path) -> Result<usize, Vec<Problem>> {
    let loaded = LoadedConfig::read(path).map_err(|e| vec![Problem::global(e.to_string())])?;
    // Certificates and keys are loaded as the server would load them; a
    // missing file is already one of the build's problems.
    let mut tls_problems = Vec::new();
    let u = &loaded.config.upstream_tls;
    let usable = |f: &Option<PathBuf>| f.as_ref().is_none_or(|p| p.is_file());
    let http = match upstream::client_for(u) {
        Ok(c) => c,
        Err(e) => {
            if usable(&u.ca_file) && usable(&u.cert_file) && usable(&u.key_file) {
                tls_problems.push(Problem::global(format!("upstream_tls: {e}")));
            }
            upstream::client()
        }
    };
    if let Some(tls) = &loaded.config.server.tls {
        if tls.cert_file.is_file() && tls.key_file.is_file() {
            if let Err(e) = crate::tls::server(tls) {
                tls_problems.push(Problem::global(format!("server.tls: {e}")));
            }
        }
    }
    let ids = SchemaIds::lookup_only(&loaded, &http);
    match routing::build(&loaded, &ids).await {
        Ok(t) if tls_problems.is_empty() => Ok(t.routes().len()),
        Ok(_) => Err(tls_problems),
        Err(mut problems) => {
            problems.extend(tls_problems);
            Err(problems)
        }
    }
}

/// Settings that override the file at start (used by `gateway demo` and tests).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `kafka.bootstrap`.
    pub kafka_bootstrap: Option<String>,
    /// An extra admin token (name, secret), e.g. the demo's.
    pub admin_token: Option<(String, String)>,
}

/// A running gateway.
pub struct Gateway {
    /// Where public traffic is served.
    pub public_addr: SocketAddr,
    /// Where the admin API is served.
    pub admin_addr: SocketAddr,
    /// Shared state (route table, metrics...).
    pub shared: Arc<Shared>,
    /// The resolved `bootstrap.servers` (the embedded cluster's when embedded).
    pub kafka_bootstrap: String,
    config_path: PathBuf,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    embedded: Option<Arc<EmbeddedKafka>>,
}

/// Looks at the listener's certificate files every `interval` and swaps in
/// a new pair; a pair that does not load is refused (logged and counted) and
/// the old certificate stays in use.
async fn watch_certificate(
    cert: Arc<crate::tls::ReloadingCert>,
    interval: Duration,
    metrics: Metrics,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let c = cert.clone();
        let outcome = tokio::task::spawn_blocking(move || c.reload_if_changed()).await;
        match outcome {
            Ok(crate::tls::Reload::Loaded) => {
                tracing::info!("TLS certificate reloaded");
                metrics.tls_reloads.with_label_values(&["loaded"]).inc();
            }
            Ok(crate::tls::Reload::Refused(e)) => {
                tracing::error!(error = %e, "new TLS certificate refused; the previous one stays in use");
                metrics.tls_reloads.with_label_values(&["refused"]).inc();
            }
            Ok(crate::tls::Reload::Unchanged) | Err(_) => {}
        }
    }
}

/// The start error for a cluster that could not be reached, with what to
/// check (never the credentials themselves).
fn connect_error(kafka: &crate::config::KafkaConfig, error: &str) -> String {
    let s = &kafka.security;
    let mut m = format!(
        "cannot connect to {} (security.protocol {}",
        kafka.bootstrap,
        s.protocol.as_str()
    );
    if let Some(mechanism) = s.sasl_mechanism {
        m.push_str(&format!(
            ", SASL {} as {:?}",
            mechanism.as_str(),
            s.username.as_deref().unwrap_or("")
        ));
    }
    m.push_str(&format!("): {error}"));
    if error.contains("refused the connection") && s.sasl_mechanism.is_some() {
        m.push_str(&format!(
            "; check kafka.security.username and the password ({})",
            match &s.password_file {
                Some(f) => format!("file {}", f.display()),
                None => format!("environment variable {}", s.password_env),
            }
        ));
    }
    m
}

impl Gateway {
    /// Loads `config_path`, connects everything and starts serving.
    pub async fn start(config_path: &Path) -> Result<Self, StartError> {
        Self::start_with(config_path, Overrides::default()).await
    }

    /// Like [`Gateway::start`], with some settings overridden.
    pub async fn start_with(config_path: &Path, overrides: Overrides) -> Result<Self, StartError> {
        let mut loaded = LoadedConfig::read(config_path)?;
        if let Some(b) = overrides.kafka_bootstrap.clone() {
            loaded.config.kafka.bootstrap = b;
        }
        let problems = loaded.config.validate();
        if !problems.is_empty() {
            return Err(StartError::Invalid(problems));
        }
        let c = &loaded.config;

        let embedded = if c.kafka.bootstrap == "embedded" {
            let topics = c
                .routes
                .iter()
                .filter_map(|r| r.topic.clone())
                .chain([
                    c.kafka.control_topic.clone(),
                    c.kafka.audit_topic.clone(),
                    c.kafka.operations_topic.clone(),
                    c.kafka.canary_figures_topic.clone(),
                ])
                .collect();
            let e = EmbeddedKafka::start(topics).map_err(StartError::Kafka)?;
            tracing::warn!(
                bootstrap = e.bootstrap(),
                "EMBEDDED KAFKA: in-process mock cluster, NOT DURABLE - events vanish when the process stops. For development only."
            );
            Some(e)
        } else {
            None
        };
        let bootstrap = embedded
            .as_ref()
            .map_or(c.kafka.bootstrap.clone(), |e| e.bootstrap().to_string());
        if !loaded.from_env.is_empty() {
            tracing::info!(variables = ?loaded.from_env, "settings overridden from the environment");
        }
        let publisher =
            Publisher::new(&c.kafka, &bootstrap).map_err(|e| StartError::Kafka(e.to_string()))?;
        if embedded.is_none() {
            publisher
                .connect(Duration::from_secs(30))
                .await
                .map_err(|e| StartError::Kafka(connect_error(&c.kafka, &e)))?;
        }

        let http = upstream::client_for(&c.upstream_tls)
            .map_err(|e| StartError::Tls(format!("upstream_tls: {e}")))?;
        let public_tls = c
            .server
            .tls
            .as_ref()
            .map(crate::tls::server)
            .transpose()
            .map_err(|e| StartError::Tls(format!("server.tls: {e}")))?;
        let schema_ids = SchemaIds::from_config(&loaded, &http);
        let table = routing::build(&loaded, &schema_ids)
            .await
            .map_err(StartError::Invalid)?;

        let spool_dir = loaded.spool_dir();
        let spool =
            Spool::open(&spool_dir, c.spool.max_events).map_err(|source| StartError::Spool {
                dir: spool_dir.clone(),
                source,
            })?;
        let spool = Arc::new(spool);
        let metrics = Metrics::new();
        let metrics_for_tls = metrics.clone();
        let retry_interval = Duration::from_millis(c.spool.retry_interval_ms);
        let (listen, admin_listen, watch_config, max_connections) = (
            c.server.listen,
            c.server.admin,
            c.server.watch_config,
            c.server.max_connections,
        );

        let mut tokens = Tokens::load(
            loaded
                .config
                .admin
                .tokens_file
                .as_ref()
                .map(|p| loaded.resolve(p))
                .as_deref(),
        )
        .map_err(StartError::Admin)?;
        if let Some((name, secret)) = &overrides.admin_token {
            tokens.add(name, secret);
        }
        let kafka = c.kafka.clone();
        let admin_parts = AdminParts {
            tokens,
            audit: Audit::new(Some((publisher.clone(), kafka.audit_topic.clone()))),
            control: Some(ControlChannel::new(
                publisher.clone(),
                kafka.control_topic.clone(),
            )),
            config_path: Some(config_path.to_path_buf()),
        };
        let io = IoParts {
            publisher: publisher.clone(),
            http,
            metrics: metrics.clone(),
            spool: spool.clone(),
            schema_ids,
        };
        let shared = Arc::new(Shared::new(loaded, table, io, admin_parts));

        // Runtime flips made by any replica, including before this one started.
        if embedded.is_none() {
            if let Err(e) = replication::ensure_topics(&kafka, &bootstrap).await {
                tracing::warn!(error = %e, "cannot create the control/audit topics; they must exist");
            }
        }
        let follower =
            replication::follow(shared.clone(), &kafka, &bootstrap, Duration::from_secs(30))
                .await
                .map_err(|e| {
                    StartError::Kafka(format!("control topic {}: {e}", kafka.control_topic))
                })?;

        // Before serving: a retry of a request cut off by the last stop must
        // find its key.
        // (The embedded cluster starts empty every time: only the spool.)
        let recovered = crate::idempotency::recover(&shared, &bootstrap, embedded.is_none())
            .await
            .map_err(|e| StartError::Kafka(format!("idempotency keys: {e}")))?;
        if recovered > 0 {
            tracing::info!(
                keys = recovered,
                "idempotency keys read back from the route topics and the spool"
            );
        }

        let public = bind(listen).await?;
        let admin = bind(admin_listen).await?;
        let public_addr = public.local_addr().map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
            addr: admin_listen,
            source,
        })?;

        let (stop, stop_rx) = watch::channel(false);
        let public_router = Router::new()
            .fallback(modes::handle)
            .with_state(shared.clone())
            .layer(CatchPanicLayer::custom(crate::problem::panic_response));
        let admin_router = admin::router(shared.clone());
        let acceptor = public_tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
        let servers = vec![
            listener::serve(
                public,
                public_router,
                stop_rx.clone(),
                max_connections,
                acceptor,
            ),
            listener::serve(admin, admin_router, stop_rx, max_connections, None),
        ];

        let operations =
            crate::operations::follow(shared.clone(), &kafka, &bootstrap).map_err(|e| {
                StartError::Kafka(format!("operations topic {}: {e}", kafka.operations_topic))
            })?;
        let figures = crate::canary::engine::follow_figures(shared.clone(), &kafka, &bootstrap)
            .await
            .map_err(|e| {
                StartError::Kafka(format!(
                    "canary figures topic {}: {e}",
                    kafka.canary_figures_topic
                ))
            })?;
        let mut background = vec![
            tokio::spawn(spool.run(publisher, metrics, retry_interval)),
            follower,
            operations,
            figures,
            // After the control topic was read, so stored canaries resume
            // where they were instead of starting over.
            tokio::spawn(crate::canary::engine::run(shared.clone())),
        ];
        if let Some(t) = public_tls {
            background.push(tokio::spawn(watch_certificate(
                t.cert,
                t.interval,
                metrics_for_tls,
            )));
        }
        if watch_config {
            match reload::watch(shared.clone(), config_path.to_path_buf()) {
                Ok(h) => background.push(h),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP")
                }
            }
        }
        tracing::info!(%public_addr, %admin_addr, routes = shared.table.load().routes().len(), "gateway serving");
        Ok(Self {
            public_addr,
            admin_addr,
            shared,
            kafka_bootstrap: bootstrap,
            config_path: config_path.to_path_buf(),
            stop,
            servers,
            background,
            embedded: embedded.map(Arc::new),
        })
    }

    /// The in-process cluster, when `kafka.bootstrap = "embedded"` (the demo
    /// takes it down to show a rollback).
    pub fn embedded_kafka(&self) -> Option<Arc<EmbeddedKafka>> {
        self.embedded.clone()
    }

    /// Re-reads the config file now (what SIGHUP does).
    pub async fn reload(&self) -> Result<usize, Vec<Problem>> {
        reload::reload(&self.shared, &self.config_path).await
    }

    /// Stops accepting, lets in-flight requests finish (bounded), and
    /// flushes the producer. Whether everything drained in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.shutdown_after(Duration::ZERO, grace).await
    }

    /// The whole drain: `/readyz` turns false at once; the listeners keep
    /// serving for `delay` (so load balancers see it and stop sending), then
    /// stop accepting; in-flight requests and publication tasks get `grace`
    /// each; the producer is flushed. Dual-write events are published or in
    /// the spool (written and fsync'd per event) before their task ends.
    /// Returns whether everything finished in time.
    pub async fn shutdown_after(self, delay: Duration, grace: Duration) -> bool {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if !delay.is_zero() {
            tracing::info!(delay_ms = delay.as_millis() as u64, "not ready; draining");
            tokio::time::sleep(delay).await;
        }
        let _ = self.stop.send(true);
        let mut drained = true;
        let drain = futures::future::join_all(self.servers);
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!("in-flight requests did not finish within the grace period");
            drained = false;
        }
        // Events already handed to publication tasks are finished (published
        // or spooled) before the process goes.
        self.shared.tasks.close();
        if tokio::time::timeout(grace, self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                left = self.shared.tasks.len(),
                "publication tasks still running at shutdown"
            );
            drained = false;
        }
        for task in &self.background {
            task.abort();
        }
        if !self.shared.publisher.flush(grace).await {
            tracing::error!("the producer still held undelivered events at shutdown");
            drained = false;
        }
        drained
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}
