//! Shadow traffic: a copy of a request goes to a candidate service after the
//! caller already has its answer from the legacy service; the two answers
//! are compared, with noise (fields that differ between two legacy answers)
//! learned and reported apart from regressions.

pub mod compare;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use http::{HeaderMap, Method, Request, Response};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::upstream::{Forwarding, HttpClient, Upstream};
use compare::{diff, Answer, Rules};

/// Shadow copies in flight (and waiting) at once, for the whole gateway;
/// past this, copies are dropped and counted, never queued without bound.
pub const MAX_IN_FLIGHT: usize = 64;
/// Largest legacy answer kept for comparison; larger ones are not shadowed.
pub const MAX_COMPARED_BYTES: u64 = 1024 * 1024;
/// Header marking a shadow copy of an unsafe request.
pub const SHADOW_HEADER: &str = "x-gateway-shadow";

/// Where noise is learned from.
#[derive(Debug, Clone)]
pub enum NoiseSource {
    /// The same legacy service, asked a second time (safe methods only).
    SameUpstream,
    /// A second legacy instance.
    Upstream(Arc<Upstream>),
}

/// A route's compiled shadow settings.
#[derive(Debug, Clone)]
pub struct ShadowSpec {
    /// The candidate.
    pub candidate: Arc<Upstream>,
    /// Share of requests copied, 0-100.
    pub percent: u8,
    /// Comparison rules.
    pub rules: Rules,
    /// Noise learning.
    pub noise: Option<NoiseSource>,
    /// Copy unsafe methods too.
    pub allow_side_effects: bool,
    /// Headers whose values examples never show (lowercase).
    pub redact: Vec<String>,
    /// Publish each difference to the shadow topic.
    pub publish_diffs: bool,
    /// Read-after-write: path template and delay.
    pub read_after_write: Option<(String, std::time::Duration)>,
}

/// A read-after-write comparison to make.
pub struct ReadBack {
    /// Route name.
    pub route: String,
    /// Settings.
    pub spec: Arc<ShadowSpec>,
    /// The legacy service, read back too for dual-write.
    pub legacy: Option<Arc<Upstream>>,
    /// The request body (async: what the candidate must reflect).
    pub body: serde_json::Value,
    /// Path parameters.
    pub params: Vec<(String, String)>,
    /// The canary arm that served the request, on a canaried route.
    pub arm: Option<crate::canary::Arm>,
}

/// Fills `{name}` from path parameters, then from top-level body fields.
fn fill(template: &str, params: &[(String, String)], body: &serde_json::Value) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}')? + start;
        let name = &rest[start + 1..end];
        let value = params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| match body.get(name)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })?;
        out.push_str(&rest[..start]);
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Paths of `expected` whose value `actual` lacks or differs in.
fn subset(expected: &serde_json::Value, actual: &serde_json::Value, rules: &Rules) -> Vec<String> {
    let a = Answer {
        status: 200,
        headers: Vec::new(),
        body: expected.to_string().into_bytes(),
    };
    let b = Answer {
        status: 200,
        headers: Vec::new(),
        body: actual.to_string().into_bytes(),
    };
    let mut fields = Vec::new();
    collect_paths(expected, &mut String::new(), &mut fields);
    let diffs = diff(&a, &b, rules);
    diffs
        .into_iter()
        .filter(|d| {
            fields
                .iter()
                .any(|f| d == f || d.starts_with(&format!("{f}/")))
        })
        .collect()
}

fn collect_paths(v: &serde_json::Value, path: &mut String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let len = path.len();
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                collect_paths(v, path, out);
                path.truncate(len);
            }
        }
        _ => out.push(path.clone()),
    }
}

/// Headers whose values examples never show, whatever the configuration.
pub const ALWAYS_REDACTED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

impl ShadowSpec {
    /// Whether this request is copied.
    pub fn wants(&self, method: &Method) -> bool {
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        (safe || self.allow_side_effects) && fastrand::u8(0..100) < self.percent
    }
}

/// Per-field counts.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct FieldStat {
    different: u64,
    noise: u64,
    example: Option<serde_json::Value>,
}

/// Per-route counts.
#[derive(Debug, Default, Clone)]
struct RouteStats {
    compared: u64,
    equal: u64,
    different: u64,
    noise_only: u64,
    candidate_errors: u64,
    dropped: u64,
    fields: BTreeMap<String, FieldStat>,
    learned_noise: BTreeSet<String>,
}

/// The shadow runner and its results.
pub struct Shadow {
    permits: Arc<Semaphore>,
    stats: Mutex<HashMap<String, RouteStats>>,
    http: HttpClient,
    metrics: Metrics,
    diffs: Option<(crate::events::Publisher, String)>,
    canaries: Arc<crate::canary::Canaries>,
}

/// One copy to make.
pub struct Job {
    /// Route name.
    pub route: String,
    /// Settings.
    pub spec: Arc<ShadowSpec>,
    /// The legacy service (for noise from the same upstream).
    pub primary_upstream: Arc<Upstream>,
    /// Request method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
    /// The caller's (legacy) answer.
    pub primary: Answer,
    /// The canary arm that served the request, on a canaried route.
    pub arm: Option<crate::canary::Arm>,
}

impl Shadow {
    /// A runner using `http` for candidate calls.
    pub fn new(
        http: HttpClient,
        metrics: Metrics,
        diffs: Option<(crate::events::Publisher, String)>,
        canaries: Arc<crate::canary::Canaries>,
    ) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            stats: Mutex::new(HashMap::new()),
            http,
            metrics,
            diffs,
            canaries,
        }
    }

    fn with_stats(&self, route: &str, f: impl FnOnce(&mut RouteStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(s.entry(route.to_string()).or_default());
        }
    }

    /// Starts a copy in the background, or drops it when the runner is full.
    pub fn submit(self: &Arc<Self>, job: Job) {
        let route = job.route.clone();
        let this = Arc::clone(self);
        // The copy belongs to the request's trace (and logs with its id).
        let work = tracing::Instrument::in_current_span(async move { this.run(job).await });
        self.spawn_bounded(&route, work);
    }

    /// Schedules a read-after-write comparison, or drops it when full.
    pub fn submit_read_back(self: &Arc<Self>, job: ReadBack) {
        let route = job.route.clone();
        let this = Arc::clone(self);
        let work = tracing::Instrument::in_current_span(async move { this.read_back(job).await });
        self.spawn_bounded(&route, work);
    }

    fn spawn_bounded(
        &self,
        route: &str,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.with_stats(route, |s| s.dropped += 1);
            self.metrics
                .shadow
                .with_label_values(&[route, "dropped"])
                .inc();
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            work.await;
        });
    }

    async fn get(&self, upstream: &Upstream, path: &str) -> Result<Answer, String> {
        let request = Request::get(path)
            .header(http::header::ACCEPT, "application/json")
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        let forwarding = Forwarding {
            client_addr: None,
            trust_incoming: true,
            https: false,
        };
        let response = upstream
            .call(&self.http, &self.metrics, request, forwarding)
            .await
            .map_err(|e| e.to_string())?;
        buffer(response).await
    }

    async fn read_back(&self, job: ReadBack) {
        let Some((template, delay)) = &job.spec.read_after_write else {
            return;
        };
        tokio::time::sleep(*delay).await;
        let Some(path) = fill(template, &job.params, &job.body) else {
            tracing::debug!(route = %job.route, template, "read-after-write path cannot be filled from the request");
            return;
        };
        let candidate = match self.get(&job.spec.candidate, &path).await {
            Ok(a) if (200..300).contains(&a.status) => a,
            Ok(a) => {
                self.record(
                    (&job.route, job.arm),
                    &format!("GET {path}"),
                    &["status".to_string()],
                    &[],
                    |p| json!({"path": p, "candidate": a.status, "legacy": 200}),
                );
                return;
            }
            Err(_) => {
                self.with_stats(&job.route, |s| s.candidate_errors += 1);
                self.metrics
                    .shadow
                    .with_label_values(&[&job.route, "candidate_error"])
                    .inc();
                return;
            }
        };
        let actual: serde_json::Value =
            serde_json::from_slice(&candidate.body).unwrap_or(serde_json::Value::Null);
        let (diffs, expected) = match &job.legacy {
            // dual-write: the legacy service holds the state; read it too.
            Some(legacy) => match self.get(legacy, &path).await {
                Ok(l) => {
                    let expected =
                        serde_json::from_slice(&l.body).unwrap_or(serde_json::Value::Null);
                    (diff(&l, &candidate, &job.spec.rules), expected)
                }
                Err(_) => return,
            },
            // async: what the caller sent must be what the new service holds.
            None => (
                subset(&job.body, &actual, &job.spec.rules),
                job.body.clone(),
            ),
        };
        self.record(
            (&job.route, job.arm),
            &format!("GET {path} (read after write)"),
            &diffs,
            &[],
            |p| json!({"path": p, "expected": expected.pointer(p), "candidate": actual.pointer(p)}),
        );
    }

    /// Counts one comparison's differences.
    fn record(
        &self,
        (route, arm): (&str, Option<crate::canary::Arm>),
        request: &str,
        diffs: &[String],
        noise: &[String],
        example: impl Fn(&str) -> serde_json::Value,
    ) -> &'static str {
        let mut outcome = "equal";
        self.with_stats(route, |s| {
            s.compared += 1;
            s.learned_noise.extend(noise.iter().cloned());
            let mut real = 0;
            for path in diffs {
                let field = s.fields.entry(path.clone()).or_default();
                let class = if s.learned_noise.contains(path) {
                    field.noise += 1;
                    "noise"
                } else {
                    field.different += 1;
                    real += 1;
                    if field.example.is_none() {
                        let mut e = example(path);
                        e["request"] = json!(request);
                        field.example = Some(e);
                    }
                    "different"
                };
                self.metrics
                    .shadow_fields
                    .with_label_values(&[route, &label(path), class])
                    .inc();
            }
            if diffs.is_empty() {
                s.equal += 1;
            } else if real == 0 {
                s.noise_only += 1;
                outcome = "noise";
            } else {
                s.different += 1;
                outcome = "different";
            }
        });
        self.metrics
            .shadow
            .with_label_values(&[route, outcome])
            .inc();
        if let Some(arm) = arm {
            self.canaries
                .record_shadow(route, arm, outcome == "different");
        }
        outcome
    }

    async fn call(&self, upstream: &Upstream, job: &Job, shadow: bool) -> Result<Answer, String> {
        let mut request = Request::builder()
            .method(job.method.clone())
            .uri(job.path.as_str());
        for (k, v) in &job.headers {
            request = request.header(k, v);
        }
        if shadow && !matches!(job.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            request = request.header(SHADOW_HEADER, "1");
        }
        let request = request
            .body(Body::from(job.body.clone()))
            .map_err(|e| e.to_string())?;
        let forwarding = Forwarding {
            client_addr: None,
            trust_incoming: true,
            https: false,
        };
        let response = upstream
            .call(&self.http, &self.metrics, request, forwarding)
            .await
            .map_err(|e| e.to_string())?;
        buffer(response).await
    }

    async fn run(&self, job: Job) {
        let candidate = match self.call(&job.spec.candidate, &job, true).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(route = %job.route, error = %e, "shadow candidate failed");
                self.with_stats(&job.route, |s| s.candidate_errors += 1);
                self.metrics
                    .shadow
                    .with_label_values(&[&job.route, "candidate_error"])
                    .inc();
                return;
            }
        };
        let noise_answer = match &job.spec.noise {
            Some(NoiseSource::SameUpstream)
                if matches!(job.method, Method::GET | Method::HEAD | Method::OPTIONS) =>
            {
                self.call(&job.primary_upstream, &job, false).await.ok()
            }
            Some(NoiseSource::Upstream(u)) => self.call(u, &job, true).await.ok(),
            _ => None,
        };
        let diffs = diff(&job.primary, &candidate, &job.spec.rules);
        let noise: Vec<String> = noise_answer
            .map(|n| diff(&job.primary, &n, &job.spec.rules))
            .unwrap_or_default();
        let redact = &job.spec.redact;
        let example = |path: &str| {
            json!({
                "request": format!("{} {}", job.method, job.path),
                "path": path,
                "legacy": pointer(&job.primary, path, redact),
                "candidate": pointer(&candidate, path, redact),
            })
        };
        let request = format!("{} {}", job.method, job.path);
        let outcome = self.record((&job.route, job.arm), &request, &diffs, &noise, example);
        if outcome == "different" {
            tracing::info!(route = %job.route, request = %format!("{} {}", job.method, job.path), paths = ?diffs, "shadow answer differs");
            if let (true, Some((publisher, topic))) = (job.spec.publish_diffs, &self.diffs) {
                let payload = json!({
                    "route": job.route,
                    "request": format!("{} {}", job.method, job.path),
                    "at": jiff::Timestamp::now().to_string(),
                    "differences": diffs.iter().map(|p| example(p)).collect::<Vec<_>>(),
                });
                let event = crate::events::OutgoingEvent {
                    id: uuid::Uuid::now_v7().to_string(),
                    route: job.route.clone(),
                    topic: topic.clone(),
                    key: job.route.clone(),
                    headers: vec![("content-type".into(), "application/json".into())],
                    payload: payload.to_string().into_bytes(),
                };
                if let Err(e) = publisher.publish(&event).await {
                    tracing::debug!(route = %job.route, error = %e, "shadow difference not published");
                }
            }
        }
    }

    /// `GET /admin/shadow/{route}`.
    pub fn report(&self, route: &str) -> Option<serde_json::Value> {
        let stats = self.stats.lock().ok()?.get(route).cloned()?;
        let mut fields: Vec<(&String, &FieldStat)> = stats
            .fields
            .iter()
            .filter(|(_, f)| f.different > 0)
            .collect();
        fields.sort_by_key(|f| std::cmp::Reverse(f.1.different));
        let match_rate = if stats.compared == 0 {
            1.0
        } else {
            (stats.equal + stats.noise_only) as f64 / stats.compared as f64
        };
        Some(json!({
            "route": route,
            "compared": stats.compared,
            "equal": stats.equal,
            "different": stats.different,
            "noise_only": stats.noise_only,
            "candidate_errors": stats.candidate_errors,
            "dropped": stats.dropped,
            "match_rate": match_rate,
            "top_differences": fields.iter().take(20).map(|(p, f)| json!({
                "path": p, "count": f.different, "example": f.example,
            })).collect::<Vec<_>>(),
            "noise": stats.learned_noise,
        }))
    }
}

/// A metric label for a path: array indexes folded to `*`, so one field of
/// every element is one series.
fn label(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn pointer(answer: &Answer, path: &str, redact: &[String]) -> serde_json::Value {
    match path {
        p if p.starts_with("header:") && {
            let name = &p["header:".len()..];
            ALWAYS_REDACTED.contains(&name) || redact.iter().any(|r| r == name)
        } =>
        {
            json!("[redacted]")
        }
        "status" => json!(answer.status),
        "body" => json!(String::from_utf8_lossy(&answer.body)
            .chars()
            .take(200)
            .collect::<String>()),
        p if p.starts_with("header:") => {
            let name = &p["header:".len()..];
            json!(answer
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v))
        }
        p => serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v.pointer(p).cloned())
            .unwrap_or(serde_json::Value::Null),
    }
}

impl Answer {
    /// From a response's status and headers and its buffered body.
    pub fn from_parts(parts: &http::response::Parts, body: &[u8]) -> Self {
        Self {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    v.to_str()
                        .ok()
                        .map(|v| (k.as_str().to_string(), v.to_string()))
                })
                .collect(),
            body: body.to_vec(),
        }
    }
}

/// Buffers a (bounded) response into an [`Answer`].
pub async fn buffer(response: Response<Body>) -> Result<Answer, String> {
    let (parts, body) = response.into_parts();
    let bytes = http_body_util::Limited::new(
        body,
        usize::try_from(MAX_COMPARED_BYTES).unwrap_or(usize::MAX),
    )
    .collect()
    .await
    .map_err(|e| e.to_string())?
    .to_bytes();
    Ok(Answer::from_parts(&parts, &bytes))
}

/// Whether a legacy response is small enough, by its declared length, to be
/// buffered for comparison.
pub fn comparable(response: &Response<Body>) -> bool {
    if matches!(response.status().as_u16(), 204 | 304) {
        return true; // no body
    }
    response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= MAX_COMPARED_BYTES)
}
