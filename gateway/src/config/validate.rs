//! Whole-file validation: every problem, each with its route name.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use super::{Config, RouteConfig};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML syntax, unknown keys or wrong types.
    #[error("{0}")]
    Syntax(String),
    /// An environment variable meant to override a setting has a bad value.
    #[error("environment: {0}")]
    Environment(String),
    /// The file parsed but is not a valid gateway config.
    #[error("{} problem(s):\n{}", .0.len(), Problem::list(.0))]
    Invalid(Vec<Problem>),
}

/// One thing wrong with a config, and where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The route it concerns, when it concerns one.
    pub route: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem with one route.
    pub fn route(route: &str, message: impl Into<String>) -> Self {
        Self {
            route: Some(route.to_string()),
            message: message.into(),
        }
    }

    /// A problem with the file as a whole.
    pub fn global(message: impl Into<String>) -> Self {
        Self {
            route: None,
            message: message.into(),
        }
    }

    fn list(problems: &[Problem]) -> String {
        problems
            .iter()
            .map(|p| format!("  - {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.route {
            Some(r) => write!(f, "route {r}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

impl Config {
    /// Checks everything that can be checked without reading schemas.
    /// Returns all problems found, not only the first.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.validate_globals(&mut problems);
        let mut adapters = HashSet::new();
        for a in &self.adapters {
            if !adapters.insert(a.name.as_str()) {
                problems.push(Problem::global(format!(
                    "adapter {}: duplicate name",
                    a.name
                )));
            }
            if !self.upstreams.contains_key(&a.upstream) {
                problems.push(Problem::global(format!(
                    "adapter {}: upstream {:?} is not configured",
                    a.name, a.upstream
                )));
            }
            if a.max_attempts == 0 {
                problems.push(Problem::global(format!(
                    "adapter {}: max_attempts must be > 0",
                    a.name
                )));
            }
            if let Err(msg) = check_topic(&a.topic) {
                problems.push(Problem::global(format!("adapter {}: {msg}", a.name)));
            }
        }
        let mut names = HashSet::new();
        for route in &self.routes {
            if !names.insert(route.name.as_str()) {
                problems.push(Problem::route(&route.name, "duplicate route name"));
            }
            self.validate_route(route, &mut problems);
        }
        problems
    }

    fn validate_globals(&self, problems: &mut Vec<Problem>) {
        if self.server.max_body_bytes == 0 {
            problems.push(Problem::global("server.max_body_bytes must be > 0"));
        }
        if self.server.listen == self.server.admin && self.server.listen.port() != 0 {
            problems.push(Problem::global(
                "server.listen and server.admin must be different addresses",
            ));
        }
        for p in &self.server.trusted_proxies {
            if crate::canary::parse_net(p).is_none() {
                problems.push(Problem::global(format!(
                    "server.trusted_proxies: {p:?} is not an address or a network (10.0.0.0/8)"
                )));
            }
        }
        if self.server.max_in_flight == 0 {
            problems.push(Problem::global("server.max_in_flight must be > 0"));
        }
        if self.server.max_connections == 0 {
            problems.push(Problem::global("server.max_connections must be > 0"));
        }
        if self.server.body_read_timeout_ms == 0 {
            problems.push(Problem::global("server.body_read_timeout_ms must be > 0"));
        }
        if self.kafka.bootstrap.trim().is_empty() {
            problems.push(Problem::global("kafka.bootstrap is empty"));
        }
        if self.kafka.publish_timeout_ms == 0 {
            problems.push(Problem::global("kafka.publish_timeout_ms must be > 0"));
        }
        if self.kafka.queue_max_messages == 0 {
            problems.push(Problem::global("kafka.queue_max_messages must be > 0"));
        }
        for (key, value) in &self.kafka.properties {
            if let Some(msg) = forbidden_property(key, value) {
                problems.push(Problem::global(msg));
            }
            if super::security::security_property(key) {
                problems.push(Problem::global(format!(
                    "kafka.properties.{key}: security settings and credentials go in [kafka.security] (credentials from the environment or a file, not from this file)"
                )));
            }
        }
        self.kafka.security.validate(problems);
        if let Some(tls) = &self.server.tls {
            for (name, path) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                if path.as_os_str().is_empty() {
                    problems.push(Problem::global(format!("server.tls.{name} is not set")));
                } else if !path.is_file() {
                    problems.push(Problem::global(format!(
                        "server.tls.{name} {}: no such file",
                        path.display()
                    )));
                }
            }
        }
        let u = &self.upstream_tls;
        if u.cert_file.is_some() != u.key_file.is_some() {
            problems.push(Problem::global(
                "upstream_tls: cert_file and key_file go together",
            ));
        }
        for (name, path) in [
            ("ca_file", &u.ca_file),
            ("cert_file", &u.cert_file),
            ("key_file", &u.key_file),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    problems.push(Problem::global(format!(
                        "upstream_tls.{name} {}: no such file",
                        path.display()
                    )));
                }
            }
        }
        if self.kafka.bootstrap.eq_ignore_ascii_case("embedded")
            && (self.kafka.security.protocol != super::SecurityProtocol::Plaintext
                || self.kafka.security.sasl_mechanism.is_some())
        {
            problems.push(Problem::global(
                "kafka.security: the embedded development cluster has no TLS or SASL; set kafka.bootstrap to a real cluster",
            ));
        }
        if let Some(url) = &self.schemas.registry {
            if let Err(e) = url.parse::<http::Uri>() {
                problems.push(Problem::global(format!("schemas.registry {url:?}: {e}")));
            }
        }
        if self.spool.max_events == 0 {
            problems.push(Problem::global("spool.max_events must be > 0"));
        }
        if self.idempotency.recover_secs > self.idempotency.ttl_secs {
            problems.push(Problem::global(
                "idempotency.recover_secs must not exceed idempotency.ttl_secs (a key read back would be one already forgotten)",
            ));
        }
        if self.idempotency.recover_secs > 0 && self.idempotency.recover_timeout_secs == 0 {
            problems.push(Problem::global(
                "idempotency.recover_timeout_secs must be > 0 when recover_secs is",
            ));
        }
        for (name, upstream) in &self.upstreams {
            if let Err(msg) = check_upstream_url(&upstream.url) {
                problems.push(Problem::global(format!("upstream {name}: {msg}")));
            }
            if upstream.timeout_ms == 0 {
                problems.push(Problem::global(format!(
                    "upstream {name}: timeout_ms must be > 0"
                )));
            }
            if upstream.max_concurrency == 0 {
                problems.push(Problem::global(format!(
                    "upstream {name}: max_concurrency must be > 0"
                )));
            }
            if upstream.breaker_failures > 0 && upstream.breaker_open_ms == 0 {
                problems.push(Problem::global(format!(
                    "upstream {name}: breaker_open_ms must be > 0 when breaker_failures is set"
                )));
            }
        }
        if let Some(fallback) = &self.fallback {
            if !self.upstreams.contains_key(&fallback.upstream) {
                problems.push(Problem::global(format!(
                    "fallback.upstream {:?} is not a configured upstream",
                    fallback.upstream
                )));
            }
        }
    }

    fn validate_route(&self, route: &RouteConfig, problems: &mut Vec<Problem>) {
        let name = &route.name;
        if name.trim().is_empty() {
            problems.push(Problem::global("a route has an empty name"));
        }
        if !KNOWN_METHODS.contains(&route.method.as_str()) {
            problems.push(Problem::route(
                name,
                format!(
                    "method {:?} is not one of {}",
                    route.method,
                    KNOWN_METHODS.join(", ")
                ),
            ));
        }
        if route.path == "/operations" || route.path.starts_with("/operations/") {
            problems.push(Problem::route(
                name,
                "paths under /operations/ are reserved for the gateway's operation status",
            ));
        }
        if !route.path.starts_with('/') {
            problems.push(Problem::route(
                name,
                format!("path {:?} must start with '/'", route.path),
            ));
        }
        if !self.upstreams.contains_key(&route.upstream) {
            problems.push(Problem::route(
                name,
                format!("upstream {:?} is not configured", route.upstream),
            ));
        }
        if let Some(shadow) = &route.shadow {
            if !self.upstreams.contains_key(&shadow.upstream) {
                problems.push(Problem::route(
                    name,
                    format!("shadow upstream {:?} is not configured", shadow.upstream),
                ));
            }
            if shadow.percent > 100 {
                problems.push(Problem::route(name, "shadow percent must be 0-100"));
            }
            if let Some(noise) = &shadow.noise {
                if noise != "same" && !self.upstreams.contains_key(noise) {
                    problems.push(Problem::route(
                        name,
                        format!(
                            "shadow noise {noise:?} is neither \"same\" nor a configured upstream"
                        ),
                    ));
                }
            }
            let canary_publishes = route.canary.as_ref().is_some_and(|c| c.mode.publishes());
            match (route.mode, &shadow.read_after_write) {
                (super::Mode::Async, None) => problems.push(Problem::route(
                    name,
                    "an async route has no legacy answer to compare: set shadow.read_after_write",
                )),
                (super::Mode::Passthrough, Some(_)) if !canary_publishes => {
                    problems.push(Problem::route(
                        name,
                        "shadow.read_after_write needs a dual-write or async route",
                    ))
                }
                _ => {}
            }
        }
        if let Some(canary) = &route.canary {
            for msg in crate::canary::check(canary) {
                problems.push(Problem::route(name, msg));
            }
            if let Some(up) = &canary.upstream {
                if !self.upstreams.contains_key(up) {
                    problems.push(Problem::route(
                        name,
                        format!("canary upstream {up:?} is not configured"),
                    ));
                }
            }
            if canary.max_shadow_diff_rate.is_some() {
                // The canary arm must produce comparisons: copies on
                // passthrough or dual-write, reads after write on async.
                let compares = route.shadow.as_ref().is_some_and(|s| {
                    canary.mode != super::Mode::Async || s.read_after_write.is_some()
                });
                if !compares {
                    problems.push(Problem::route(
                        name,
                        "canary.max_shadow_diff_rate needs shadow on the route (with read_after_write for an async canary arm)",
                    ));
                }
            }
            if canary.sticky == "key"
                && (route.key.is_none() || !(route.mode.publishes() || canary.mode.publishes()))
            {
                problems.push(Problem::route(
                    name,
                    "canary.sticky = \"key\" needs the route's key and an arm that publishes",
                ));
            }
        }
        let mode = match &route.canary {
            Some(c) if !route.mode.publishes() && c.mode.publishes() => c.mode,
            _ => route.mode,
        };
        if !mode.publishes() {
            return;
        }
        let mode = if mode == route.mode {
            mode.as_str().to_string()
        } else {
            format!("canary {}", mode.as_str())
        };
        match &route.topic {
            None => problems.push(Problem::route(name, format!("mode {mode} needs a topic"))),
            Some(t) => {
                if let Err(msg) = check_topic(t) {
                    problems.push(Problem::route(name, msg));
                }
            }
        }
        if route.schema.is_none() {
            problems.push(Problem::route(name, format!("mode {mode} needs a schema")));
        }
        match &route.key {
            None => problems.push(Problem::route(name, format!("mode {mode} needs a key"))),
            Some(key) => {
                if let Err(msg) = check_key(key, &route.path) {
                    problems.push(Problem::route(name, msg));
                }
            }
        }
    }
}

/// Durability settings the gateway owns; weakening them would break the
/// promise that a 202 means the event is in Kafka.
fn forbidden_property(key: &str, value: &str) -> Option<String> {
    let owned = match key {
        "acks" | "request.required.acks" => value != "all" && value != "-1",
        "enable.idempotence" => value != "true",
        "bootstrap.servers" | "metadata.broker.list" => true,
        "message.timeout.ms" | "delivery.timeout.ms" => true,
        _ => false,
    };
    owned.then(|| {
        format!(
            "kafka.properties.{key} = {value:?} is owned by the gateway (see README: durability)"
        )
    })
}

fn check_upstream_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("url {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "url {url:?}: scheme {other:?} is not supported (http or https)"
            ))
        }
        None => return Err(format!("url {url:?} needs a scheme, e.g. http://")),
    }
    if uri.authority().is_none() {
        return Err(format!("url {url:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("url {url:?} must not have a query"));
    }
    Ok(())
}

fn check_topic(topic: &str) -> Result<(), String> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty() || topic.len() > 249 || topic == "." || topic == ".." {
        return Err(format!("topic {topic:?} is not a legal Kafka topic name"));
    }
    if !topic.chars().all(legal) {
        return Err(format!(
            "topic {topic:?} may only contain ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

fn check_key(key: &str, path: &str) -> Result<(), String> {
    if let Some(param) = key.strip_prefix('{').and_then(|k| k.strip_suffix('}')) {
        let wanted = format!("{{{param}}}");
        if path.split('/').any(|seg| seg == wanted) {
            return Ok(());
        }
        return Err(format!(
            "key {key:?} names a path parameter that the path {path:?} does not have"
        ));
    }
    if key.starts_with('/') {
        return Ok(());
    }
    Err(format!(
        "key {key:?} must be a JSON pointer (\"/customerId\") or a path parameter (\"{{id}}\")"
    ))
}
