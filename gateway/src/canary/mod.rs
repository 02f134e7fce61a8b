//! Canary releases: a route's `canary` sends a growing, sticky share of its
//! requests through another mode (and/or upstream), judges that arm on its
//! own figures, steps it up after each healthy interval, and rolls it back
//! to 0% by itself when a check fails.
//!
//! - [`choose`]: which arm a request takes (hash of the sticky attribute).
//! - [`window`]: per-arm sliding windows; mergeable fleet figures.
//! - [`state`]: the versioned state every replica shares.
//! - [`engine`]: the checks, the decisions, and their replication.

pub mod cli;
pub mod engine;
pub mod state;
pub mod window;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::{CanaryConfig, Mode};
use state::CanaryState;
use window::{Figures, Window};

/// The two arms of a canaried route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arm {
    /// The route's own mode.
    Base,
    /// The canary's mode.
    Canary,
}

impl Arm {
    /// For metrics and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Base => "base",
            Arm::Canary => "canary",
        }
    }
}

/// What keeps one caller in one arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// A request header.
    Header(http::HeaderName),
    /// A cookie.
    Cookie(String),
    /// The route's event key.
    Key,
}

impl Sticky {
    /// `header:NAME`, `cookie:NAME` or `key`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("header", name)) => http::HeaderName::from_bytes(name.trim().as_bytes())
                .map(Sticky::Header)
                .map_err(|_| format!("canary.sticky {s:?}: {name:?} is not a header name")),
            Some(("cookie", name)) if !name.trim().is_empty() => {
                Ok(Sticky::Cookie(name.trim().to_string()))
            }
            None if s == "key" => Ok(Sticky::Key),
            _ => Err(format!(
                "canary.sticky {s:?} must be header:NAME, cookie:NAME or key"
            )),
        }
    }
}

/// A route's canary, checked and compiled.
#[derive(Debug)]
pub struct CanarySpec {
    /// The canary arm's mode.
    pub mode: Mode,
    /// Shares, percent.
    pub steps: Vec<f64>,
    /// Healthy time per step.
    pub interval: Duration,
    /// Figures window.
    pub window: Duration,
    /// Stickiness.
    pub sticky: Sticky,
    /// Thresholds.
    pub max_error_rate: f64,
    /// p99 threshold, ms.
    pub max_p99_ms: Option<u64>,
    /// Shadow difference threshold.
    pub max_shadow_diff_rate: Option<f64>,
    /// Evidence needed for any verdict.
    pub min_requests: u64,
    /// Who may send `X-Canary`.
    pub override_from: Vec<ipnet::IpNet>,
    /// The release label.
    pub release: String,
    /// The route as the canary arm serves it.
    pub arm: Arc<crate::routing::Route>,
}

/// Parses the parts of a `canary` table that need parsing; every problem
/// is reported.
pub fn check(c: &CanaryConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = Sticky::parse(&c.sticky) {
        problems.push(e);
    }
    for (name, text) in [("interval", &c.interval), ("window", &c.window)] {
        match humantime::parse_duration(text) {
            Ok(d) if d >= Duration::from_secs(1) => {}
            Ok(_) => problems.push(format!("canary.{name} must be at least 1s")),
            Err(e) => problems.push(format!("canary.{name} {text:?}: {e}")),
        }
    }
    if c.steps.is_empty() {
        problems.push("canary.steps is empty".into());
    }
    if c.steps.iter().any(|s| !(*s >= 0.01 && *s <= 100.0)) {
        problems.push("canary.steps must each be in [0.01, 100] (percent)".into());
    }
    if c.steps.windows(2).any(|w| w[0] >= w[1]) {
        problems.push("canary.steps must increase".into());
    }
    if !(0.0..=1.0).contains(&c.max_error_rate) {
        problems.push("canary.max_error_rate must be in [0, 1]".into());
    }
    if c.max_shadow_diff_rate
        .is_some_and(|r| !(0.0..=1.0).contains(&r))
    {
        problems.push("canary.max_shadow_diff_rate must be in [0, 1]".into());
    }
    if c.min_requests == 0 {
        problems.push("canary.min_requests must be > 0".into());
    }
    for net in &c.override_from {
        if parse_net(net).is_none() {
            problems.push(format!(
                "canary.override_from {net:?} is not an address or network"
            ));
        }
    }
    problems
}

/// A network (`10.0.0.0/8`) or a single address (`10.1.2.3`).
pub(crate) fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

impl CanarySpec {
    /// Compiles a checked config around the canary arm's route.
    pub fn new(c: &CanaryConfig, arm: Arc<crate::routing::Route>) -> Result<Self, Vec<String>> {
        let problems = check(c);
        if !problems.is_empty() {
            return Err(problems);
        }
        let duration = |t: &str| humantime::parse_duration(t).unwrap_or(Duration::from_secs(60));
        Ok(Self {
            mode: c.mode,
            steps: c.steps.clone(),
            interval: duration(&c.interval),
            window: duration(&c.window),
            sticky: Sticky::parse(&c.sticky).map_err(|e| vec![e])?,
            max_error_rate: c.max_error_rate,
            max_p99_ms: c.max_p99_ms,
            max_shadow_diff_rate: c.max_shadow_diff_rate,
            min_requests: c.min_requests,
            override_from: c
                .override_from
                .iter()
                .filter_map(|n| parse_net(n))
                .collect(),
            release: c.release.clone(),
            arm,
        })
    }
}

/// The value a request is kept in its arm by, if it has one.
pub fn sticky_value<'a>(
    sticky: &Sticky,
    headers: &'a http::HeaderMap,
    key: Option<&'a str>,
) -> Option<&'a str> {
    match sticky {
        Sticky::Header(name) => headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty()),
        Sticky::Cookie(name) => headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty()),
        Sticky::Key => key.filter(|k| !k.is_empty()),
    }
}

/// The request's bucket, 0-9999: the same value always lands in the same
/// bucket (on every replica and release), and a bucket under the canary's
/// share at one step is under it at every later step too.
pub fn bucket(route: &str, value: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(route.as_bytes());
    h.update(&[0]);
    h.update(value.as_bytes());
    h.digest() % 10_000
}

/// Why a request took its arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its bucket.
    Hash,
    /// No sticky attribute: base.
    NoAttribute,
    /// `X-Canary` from a trusted source.
    Override,
}

/// Picks the arm for a request at `percent`.
pub fn choose(
    route: &str,
    spec: &CanarySpec,
    percent: f64,
    headers: &http::HeaderMap,
    client: Option<IpAddr>,
    key: Option<&str>,
) -> (Arm, Reason) {
    if let Some(forced) = headers.get("x-canary").and_then(|v| v.to_str().ok()) {
        let trusted = client.is_some_and(|ip| {
            let ip = canonical(ip);
            spec.override_from.iter().any(|n| n.contains(&ip))
        });
        if trusted {
            match forced.trim().to_ascii_lowercase().as_str() {
                "always" => return (Arm::Canary, Reason::Override),
                "never" => return (Arm::Base, Reason::Override),
                _ => {}
            }
        }
    }
    let Some(value) = sticky_value(&spec.sticky, headers, key) else {
        return (Arm::Base, Reason::NoAttribute);
    };
    let threshold = (percent * 100.0).round() as u64;
    if bucket(route, value) < threshold {
        (Arm::Canary, Reason::Hash)
    } else {
        (Arm::Base, Reason::Hash)
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One route's windows, for the state version they were opened under.
struct RouteWindows {
    version: u64,
    length: Duration,
    base: Window,
    canary: Window,
}

/// A replica's report of its figures.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Who.
    pub replica: String,
    /// Route.
    pub route: String,
    /// The state version the figures were taken under.
    pub version: u64,
    /// Base arm.
    pub base: Figures,
    /// Canary arm.
    pub canary: Figures,
}

/// The last check of a route, for `GET /admin/canary/{route}`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastCheck {
    /// When (RFC 3339).
    pub at: String,
    /// `healthy`, `waiting: …`, or the failed check.
    pub outcome: String,
    /// Replicas whose figures were counted (this one included).
    pub replicas: usize,
    /// Fleet figures of the canary arm.
    pub canary: serde_json::Value,
    /// Fleet figures of the base arm.
    pub base: serde_json::Value,
}

/// Every canary's state and figures on this replica.
pub struct Canaries {
    /// This replica's id in reports and decisions.
    pub replica: String,
    anchor: Instant,
    states: RwLock<HashMap<String, Arc<CanaryState>>>,
    windows: Mutex<HashMap<String, RouteWindows>>,
    peers: Mutex<HashMap<(String, String), (Instant, Report)>>,
    checks: Mutex<HashMap<String, LastCheck>>,
    /// One decision at a time on this replica (automatic or a person's).
    pub deciding: tokio::sync::Mutex<()>,
    /// Decisions announced by this replica and not installed yet.
    pending: Mutex<std::collections::HashSet<String>>,
    /// Routes with a step-up being announced.
    announcing: Mutex<std::collections::HashSet<String>>,
}

/// Most peer reports kept (routes × replicas).
const MAX_PEER_REPORTS: usize = 4096;
/// Most latency buckets accepted in a peer report.
const MAX_REPORT_BUCKETS: usize = 8192;

impl Default for Canaries {
    fn default() -> Self {
        Self::new()
    }
}

impl Canaries {
    /// An empty registry with a fresh replica id.
    pub fn new() -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gateway".into());
        let id = uuid::Uuid::now_v7().simple().to_string();
        Self {
            replica: format!("{host}-{}", &id[id.len() - 8..]),
            anchor: Instant::now(),
            states: RwLock::new(HashMap::new()),
            windows: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            checks: Mutex::new(HashMap::new()),
            deciding: tokio::sync::Mutex::new(()),
            pending: Mutex::new(Default::default()),
            announcing: Mutex::new(Default::default()),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.anchor.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The route's state.
    pub fn state(&self, route: &str) -> Option<Arc<CanaryState>> {
        self.states.read().ok()?.get(route).cloned()
    }

    /// Every state.
    pub fn states(&self) -> Vec<Arc<CanaryState>> {
        self.states
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The route's state if it belongs to this canary (same mode and
    /// release).
    pub fn state_of(&self, route: &str, spec: &CanarySpec) -> Option<Arc<CanaryState>> {
        self.state(route).filter(|s| s.is(spec.mode, &spec.release))
    }

    /// Marks a decision of this replica as announced but not installed yet
    /// (`true`), or clears the mark.
    pub fn pending(&self, id: &str, on: bool) {
        if let Ok(mut p) = self.pending.lock() {
            if on {
                p.insert(id.to_string());
            } else {
                p.remove(id);
            }
        }
    }

    /// Whether a decision is this replica's, still being announced.
    pub fn is_pending(&self, id: &str) -> bool {
        self.pending.lock().is_ok_and(|p| p.contains(id))
    }

    /// Claims the route's step-up announcement; `false` if one is running.
    pub fn begin_announce(&self, route: &str) -> bool {
        self.announcing
            .lock()
            .is_ok_and(|mut a| a.insert(route.to_string()))
    }

    /// Releases the claim.
    pub fn end_announce(&self, route: &str) {
        if let Ok(mut a) = self.announcing.lock() {
            a.remove(route);
        }
    }

    /// The canary arm's share for `route`, percent: 0 until its state is
    /// known.
    pub fn percent(&self, route: &str, spec: &CanarySpec) -> f64 {
        self.state_of(route, spec)
            .map_or(0.0, |s| s.percent(&spec.steps))
    }

    /// Installs `state` if it supersedes the current one; returns the state
    /// it replaced (or `Err` with the newer current one).
    pub fn install(
        &self,
        state: CanaryState,
    ) -> Result<Option<Arc<CanaryState>>, Arc<CanaryState>> {
        let mut states = self
            .states
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = states.get(&state.route).cloned();
        if let Some(current) = &old {
            if !state.supersedes(current) {
                return Err(current.clone());
            }
        }
        states.insert(state.route.clone(), Arc::new(state));
        Ok(old)
    }

    /// Counts a request of `arm`.
    pub fn record(&self, route: &str, spec: &CanarySpec, arm: Arm, latency: Duration, error: bool) {
        let version = self.state(route).map_or(0, |s| s.version);
        let now = self.now();
        self.with_windows(route, spec, version, |w| {
            let window = match arm {
                Arm::Base => &mut w.base,
                Arm::Canary => &mut w.canary,
            };
            window.record(now, latency, error);
        });
    }

    /// Counts a shadow comparison of a request served by `arm` (into the
    /// windows its request was counted in).
    pub fn record_shadow(&self, route: &str, arm: Arm, different: bool) {
        let version = self.state(route).map_or(0, |s| s.version);
        let now = self.now();
        if let Ok(mut all) = self.windows.lock() {
            if let Some(w) = all.get_mut(route).filter(|w| w.version == version) {
                match arm {
                    Arm::Base => w.base.record_shadow(now, different),
                    Arm::Canary => w.canary.record_shadow(now, different),
                }
            }
        }
    }

    fn with_windows(
        &self,
        route: &str,
        spec: &CanarySpec,
        version: u64,
        f: impl FnOnce(&mut RouteWindows),
    ) {
        let Ok(mut all) = self.windows.lock() else {
            return;
        };
        let fresh = || RouteWindows {
            version,
            length: spec.window,
            base: Window::new(spec.window),
            canary: Window::new(spec.window),
        };
        let w = all.entry(route.to_string()).or_insert_with(fresh);
        // Each state version is judged on its own traffic.
        if w.version != version || w.length != spec.window {
            *w = fresh();
        }
        f(w);
    }

    /// This replica's figures for `route` under `version`.
    pub fn own(&self, route: &str, version: u64) -> (Figures, Figures) {
        let now = self.now();
        self.windows
            .lock()
            .ok()
            .and_then(|all| {
                all.get(route)
                    .filter(|w| w.version == version)
                    .map(|w| (w.base.figures(now), w.canary.figures(now)))
            })
            .unwrap_or_default()
    }

    /// Keeps another replica's report: only for a route canaried here, with
    /// a bounded histogram, and a bounded number of reports.
    pub fn peer_report(&self, report: Report) {
        let known = self
            .states
            .read()
            .is_ok_and(|s| s.contains_key(&report.route));
        let bounded = report.base.latency_us.len() <= MAX_REPORT_BUCKETS
            && report.canary.latency_us.len() <= MAX_REPORT_BUCKETS;
        if report.replica == self.replica || !known || !bounded {
            return;
        }
        if let Ok(mut peers) = self.peers.lock() {
            let key = (report.route.clone(), report.replica.clone());
            if peers.len() >= MAX_PEER_REPORTS && !peers.contains_key(&key) {
                return;
            }
            peers.insert(key, (Instant::now(), report));
        }
    }

    /// Forgets reports older than `fresh` (replicas that went away).
    pub fn prune_peers(&self, fresh: Duration) {
        if let Ok(mut peers) = self.peers.lock() {
            peers.retain(|_, (at, _)| at.elapsed() <= fresh);
        }
    }

    /// Fleet figures (base, canary) for `route` under `version`: this
    /// replica's plus every peer's recent report; and how many replicas.
    pub fn fleet(&self, route: &str, version: u64, fresh: Duration) -> (Figures, Figures, usize) {
        let (mut base, mut canary) = self.own(route, version);
        let mut replicas = 1;
        if let Ok(mut peers) = self.peers.lock() {
            peers.retain(|_, (at, _)| at.elapsed() <= fresh);
            for ((r, _), (_, report)) in peers.iter() {
                if r == route && report.version == version {
                    base.merge(&report.base);
                    canary.merge(&report.canary);
                    replicas += 1;
                }
            }
        }
        (base, canary, replicas)
    }

    /// Remembers the last check of a route.
    pub fn set_check(&self, route: &str, check: LastCheck) {
        if let Ok(mut c) = self.checks.lock() {
            c.insert(route.to_string(), check);
        }
    }

    /// The last check of a route.
    pub fn last_check(&self, route: &str) -> Option<LastCheck> {
        self.checks.lock().ok()?.get(route).cloned()
    }
}

#[cfg(test)]
mod tests;
