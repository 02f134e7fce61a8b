//! The route table: built whole from a config off to the side, validated,
//! then swapped in. Matching is by method and path pattern; static segments
//! win over parameters, parameters over catch-alls.

mod build;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::Method;

use crate::config::Mode;
use crate::schema::EventSchema;
use crate::upstream::{Forwarding, Upstream};

pub use build::{build, SchemaIds};

/// Where the event key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JSON pointer into the body.
    Pointer(String),
    /// A path parameter.
    PathParam(String),
}

/// What a publishing route sends to Kafka.
#[derive(Debug, Clone)]
pub struct EventSpec {
    /// Destination topic.
    pub topic: String,
    /// Schema Registry subject (per `schemas.subject_strategy`).
    pub subject: String,
    /// Parsed schema (encoder).
    pub schema: Arc<EventSchema>,
    /// Id in the registry (or the local catalog) for the wire format.
    pub schema_id: u32,
    /// Message key source.
    pub key: KeySource,
    /// `unknown_fields = "ignore"`.
    pub ignore_unknown_fields: bool,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Route name.
    pub name: String,
    /// Method.
    pub method: Method,
    /// Path pattern as written.
    pub path: String,
    /// Mode.
    pub mode: Mode,
    /// Legacy service.
    pub upstream: Arc<Upstream>,
    /// Event publication (dual-write and async only).
    pub event: Option<EventSpec>,
    /// Shadow copies to a candidate, if configured.
    pub shadow: Option<Arc<crate::shadow::ShadowSpec>>,
    /// The route's canary, when it has one that changes something.
    pub canary: Option<Arc<crate::canary::CanarySpec>>,
    /// Which arm of a canaried route this is (`None`: not canaried).
    pub arm: Option<crate::canary::Arm>,
}

/// A matched request.
pub struct Matched<'a> {
    /// The route.
    pub route: &'a Arc<Route>,
    /// Path parameters.
    pub params: Vec<(String, String)>,
}

/// Limits that travel with the table, so a reload can change them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `server.max_body_bytes`
    pub max_body_bytes: usize,
    /// `server.retry_after_secs`
    pub retry_after_secs: u32,
    /// `server.body_read_timeout_ms`
    pub body_read_timeout: std::time::Duration,
    /// `server.trust_forwarded_headers`
    pub trust_forwarded_headers: bool,
    /// `server.trusted_proxies`
    pub trusted_proxies: std::sync::Arc<[ipnet::IpNet]>,
    /// The public listener speaks TLS (`X-Forwarded-Proto: https`).
    pub https: bool,
}

impl Limits {
    /// How this table treats a client's forwarding headers: kept only from
    /// a trusted proxy.
    pub fn forwarding(&self, client_addr: Option<std::net::SocketAddr>) -> Forwarding {
        let trusted_peer = client_addr.is_some_and(|a| {
            let ip = a.ip().to_canonical();
            self.trusted_proxies.iter().any(|n| n.contains(&ip))
        });
        Forwarding {
            client_addr,
            trust_incoming: self.trust_forwarded_headers || trusted_peer,
            https: self.https,
        }
    }
}

/// An immutable, fully validated route table.
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    paths: matchit::Router<usize>,
    methods: Vec<HashMap<Method, usize>>,
    /// Pass-through target for unmatched requests.
    pub fallback: Option<Arc<Upstream>>,
    /// Every schema id this table publishes with.
    pub schema_ids: BTreeMap<u32, Arc<EventSchema>>,
    /// Body and backpressure limits.
    pub limits: Limits,
}

impl RouteTable {
    /// Finds the route for a request.
    pub fn lookup(&self, method: &Method, path: &str) -> Option<Matched<'_>> {
        let found = self.paths.at(path).ok()?;
        let index = *self.methods.get(*found.value)?.get(method)?;
        let route = self.routes.get(index)?;
        let params = found
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Matched { route, params })
    }

    /// All routes, in file order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

#[cfg(test)]
mod tests;
