//! Config + schema catalog → [`RouteTable`], collecting every problem.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use http::Method;

use super::{EventSpec, KeySource, Limits, Route, RouteTable};
use crate::config::SubjectStrategy;
use crate::config::{LoadedConfig, Problem, RouteConfig};
use crate::schema::registry::RegistryClient;
use crate::schema::{Catalog, EventSchema};
use crate::upstream::{HttpClient, Upstream};

/// How schema ids are obtained.
pub enum SchemaIds {
    /// The gateway numbers its own catalog (fingerprint-derived ids).
    Local,
    /// A Confluent-compatible registry, with a cache of what it answered.
    Registry(Box<Registry>),
}

/// A Schema Registry and the ids it gave out.
pub struct Registry {
    client: RegistryClient,
    /// (subject, canonical schema) → id.
    cache: moka::future::Cache<(String, String), u32>,
    /// Register new schemas (serving), or only look them up (`gateway check`).
    register: bool,
}

impl SchemaIds {
    /// From the `[schemas]` section.
    pub fn from_config(loaded: &LoadedConfig, client: &HttpClient) -> Self {
        match &loaded.config.schemas.registry {
            None => SchemaIds::Local,
            Some(url) => SchemaIds::Registry(Box::new(Registry {
                client: RegistryClient::new(
                    url,
                    client.clone(),
                    Duration::from_millis(loaded.config.schemas.registry_timeout_ms),
                ),
                cache: moka::future::Cache::new(10_000),
                register: true,
            })),
        }
    }

    /// Like [`SchemaIds::from_config`], but never writes to the registry: a
    /// schema it does not know yet gets id 0 (it is registered on `serve`).
    pub fn lookup_only(loaded: &LoadedConfig, client: &HttpClient) -> Self {
        match Self::from_config(loaded, client) {
            SchemaIds::Registry(mut r) => {
                r.register = false;
                SchemaIds::Registry(r)
            }
            local => local,
        }
    }

    /// The id to publish `schema` with under `subject`. With a registry, a
    /// schema the registry finds incompatible with the subject's latest
    /// version is refused, never registered.
    async fn id_for(&self, subject: &str, schema: &EventSchema) -> Result<u32, String> {
        let registry = match self {
            SchemaIds::Local => return Ok(schema.local_id()),
            SchemaIds::Registry(r) => r,
        };
        let key = (subject.to_string(), schema.text.clone());
        if let Some(id) = registry.cache.get(&key).await {
            return Ok(id);
        }
        let client = &registry.client;
        let incompatible = client
            .incompatibilities(subject, &schema.text)
            .await
            .map_err(|e| e.to_string())?;
        if !incompatible.is_empty() {
            return Err(format!(
                "{} is incompatible with what subject {subject} holds, at its compatibility level: {}",
                schema.full_name,
                incompatible.join("; ")
            ));
        }
        let id = if registry.register {
            client.register(subject, &schema.text).await
        } else {
            client
                .lookup(subject, &schema.text)
                .await
                .map(|id| id.unwrap_or(0))
        }
        .map_err(|e| e.to_string())?;
        if id != 0 {
            registry.cache.insert(key, id).await;
        }
        Ok(id)
    }
}

/// Builds and validates a complete route table. Nothing is shared with the
/// table currently serving, so a failure leaves that one untouched.
pub async fn build(loaded: &LoadedConfig, ids: &SchemaIds) -> Result<RouteTable, Vec<Problem>> {
    let config = &loaded.config;
    let mut problems = config.validate();
    let catalog = match Catalog::load(&loaded.schemas_dir()) {
        Ok(c) => c,
        Err(p) => {
            problems.extend(p);
            Catalog::default()
        }
    };

    let mut upstreams = HashMap::new();
    for (name, u) in &config.upstreams {
        if let Ok(up) = Upstream::new(name, u) {
            upstreams.insert(name.clone(), Arc::new(up));
        }
    }

    let mut routes = Vec::new();
    let mut paths = matchit::Router::new();
    let mut methods: Vec<HashMap<Method, usize>> = Vec::new();
    let mut path_index: HashMap<String, usize> = HashMap::new();

    for rc in &config.routes {
        let Some(upstream) = upstreams.get(&rc.upstream).cloned() else {
            continue; // reported by validate()
        };
        let Ok(method) = Method::from_bytes(rc.method.as_bytes()) else {
            continue;
        };
        let event = event_spec(rc, loaded, &catalog, &mut problems);

        let index = routes.len();
        let slot = match path_index.get(&rc.path) {
            Some(slot) => *slot,
            None => match paths.insert(rc.path.clone(), methods.len()) {
                Ok(()) => {
                    path_index.insert(rc.path.clone(), methods.len());
                    methods.push(HashMap::new());
                    methods.len() - 1
                }
                Err(e) => {
                    problems.push(Problem::route(&rc.name, format!("path {:?}: {e}", rc.path)));
                    continue;
                }
            },
        };
        if let Some(prev) = methods[slot].insert(method.clone(), index) {
            let prev: &Route = &routes[prev];
            problems.push(Problem::route(
                &rc.name,
                format!(
                    "{} {} is already routed by {}",
                    rc.method, rc.path, prev.name
                ),
            ));
        }
        let shadow = rc.shadow.as_ref().and_then(|s| {
            let candidate = upstreams.get(&s.upstream)?.clone();
            let noise = match s.noise.as_deref() {
                None => None,
                Some("same") => Some(crate::shadow::NoiseSource::SameUpstream),
                Some(other) => Some(crate::shadow::NoiseSource::Upstream(
                    upstreams.get(other)?.clone(),
                )),
            };
            Some(Arc::new(crate::shadow::ShadowSpec {
                candidate,
                percent: s.percent.min(100),
                rules: crate::shadow::compare::Rules {
                    ignore: s.ignore.clone(),
                    headers: s
                        .compare_headers
                        .iter()
                        .map(|h| h.to_ascii_lowercase())
                        .collect(),
                    tolerance: s.tolerance,
                },
                noise,
                allow_side_effects: s.allow_side_effects,
                redact: s
                    .redact_headers
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                publish_diffs: s.publish_diffs,
                read_after_write: s
                    .read_after_write
                    .clone()
                    .map(|p| (p, std::time::Duration::from_millis(s.delay_ms))),
            }))
        });
        routes.push(Route {
            name: rc.name.clone(),
            method,
            path: rc.path.clone(),
            mode: rc.mode,
            upstream,
            event,
            shadow,
            canary: None,
            arm: None,
        });
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    let schema_ids = resolve_ids(&mut routes, ids, &mut problems).await;
    if !problems.is_empty() {
        return Err(problems);
    }
    for (route, rc) in routes.iter_mut().zip(&config.routes) {
        let Some(c) = rc
            .canary
            .as_ref()
            .filter(|c| canary_changes_something(rc, c))
        else {
            continue;
        };
        let upstream = match &c.upstream {
            Some(name) => upstreams.get(name).cloned(),
            None => Some(route.upstream.clone()),
        };
        let Some(upstream) = upstream else {
            continue; // reported by validate()
        };
        let arm = Arc::new(Route {
            name: route.name.clone(),
            method: route.method.clone(),
            path: route.path.clone(),
            mode: c.mode,
            upstream,
            event: route.event.clone(),
            shadow: route.shadow.clone(),
            canary: None,
            arm: Some(crate::canary::Arm::Canary),
        });
        match crate::canary::CanarySpec::new(c, arm) {
            Ok(spec) => {
                route.canary = Some(Arc::new(spec));
                route.arm = Some(crate::canary::Arm::Base);
            }
            Err(p) => problems.extend(p.into_iter().map(|m| Problem::route(&rc.name, m))),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let routes = routes.into_iter().map(Arc::new).collect();
    let fallback = config
        .fallback
        .as_ref()
        .and_then(|f| upstreams.get(&f.upstream).cloned());
    Ok(RouteTable {
        routes,
        paths,
        methods,
        fallback,
        schema_ids,
        limits: Limits {
            max_body_bytes: config.server.max_body_bytes,
            retry_after_secs: config.server.retry_after_secs,
            body_read_timeout: Duration::from_millis(config.server.body_read_timeout_ms),
            trust_forwarded_headers: config.server.trust_forwarded_headers,
            trusted_proxies: config
                .server
                .trusted_proxies
                .iter()
                .filter_map(|p| crate::canary::parse_net(p))
                .collect(),
            https: config.server.tls.is_some(),
        },
    })
}

/// Resolves a route's event: schema and key are checked for every route that
/// names them; only publishing routes get a schema id (and so a registry
/// subject), so a passthrough route's subject appears when it is flipped.
fn event_spec(
    rc: &RouteConfig,
    loaded: &LoadedConfig,
    catalog: &Catalog,
    problems: &mut Vec<Problem>,
) -> Option<EventSpec> {
    let strategy: SubjectStrategy = loaded.config.schemas.subject_strategy;
    let (Some(topic), Some(schema_name), Some(key)) = (&rc.topic, &rc.schema, &rc.key) else {
        return None;
    };
    let found = match rc.schema_version {
        Some(v) => catalog.version(schema_name, v),
        None => catalog.get(schema_name),
    };
    let Some(schema) = found else {
        if let (Some(v), Some(history)) = (rc.schema_version, catalog.history(schema_name)) {
            let known: Vec<String> = history.keys().map(|v| format!("v{v}")).collect();
            problems.push(Problem::route(
                &rc.name,
                format!(
                    "schema {schema_name} has no v{v} (it has {})",
                    known.join(", ")
                ),
            ));
            return None;
        }
        let known: Vec<&str> = catalog.iter().map(|s| s.full_name.as_str()).collect();
        problems.push(Problem::route(
            &rc.name,
            format!(
                "schema {schema_name:?} is not in {} (known: {})",
                loaded.schemas_dir().display(),
                known.join(", ")
            ),
        ));
        return None;
    };
    if let Err(msg) = check_key_in_schema(key, schema) {
        problems.push(Problem::route(&rc.name, msg));
    }
    let canary_publishes = rc
        .canary
        .as_ref()
        .is_some_and(|c| c.mode.publishes() && canary_changes_something(rc, c));
    if !rc.mode.publishes() && !canary_publishes {
        return None;
    }
    Some(EventSpec {
        topic: topic.clone(),
        subject: strategy.subject(topic, &schema.full_name),
        schema: schema.clone(),
        // Resolved once the whole table is valid (see `resolve_ids`).
        schema_id: 0,
        key: key_source(key),
        ignore_unknown_fields: rc.unknown_fields == crate::config::UnknownFields::Ignore,
    })
}

/// Gives every publishing route its schema id. Runs only on a table with no
/// other problem, so a refused file never registers anything.
async fn resolve_ids(
    routes: &mut [Route],
    ids: &SchemaIds,
    problems: &mut Vec<Problem>,
) -> BTreeMap<u32, Arc<EventSchema>> {
    let mut schema_ids: BTreeMap<u32, Arc<EventSchema>> = BTreeMap::new();
    for route in routes {
        let Some(spec) = route.event.as_mut() else {
            continue;
        };
        match ids.id_for(&spec.subject, &spec.schema).await {
            Ok(id) => {
                if let Some(other) = schema_ids.get(&id) {
                    if id != 0 && other.canonical != spec.schema.canonical {
                        problems.push(Problem::route(
                            &route.name,
                            format!(
                                "schema id {id} of {} collides with {}",
                                spec.schema.full_name, other.full_name
                            ),
                        ));
                    }
                }
                spec.schema_id = id;
                if id != 0 {
                    schema_ids.insert(id, spec.schema.clone());
                }
            }
            Err(e) => problems.push(Problem::route(&route.name, format!("schema registry: {e}"))),
        }
    }
    schema_ids
}

/// A canary whose arm would serve exactly like the route is inactive (for
/// example once a flip gave the route the canary's mode).
pub(crate) fn canary_changes_something(rc: &RouteConfig, c: &crate::config::CanaryConfig) -> bool {
    c.mode != rc.mode || c.upstream.as_ref().is_some_and(|u| *u != rc.upstream)
}

fn key_source(key: &str) -> KeySource {
    match key.strip_prefix('{').and_then(|k| k.strip_suffix('}')) {
        Some(param) => KeySource::PathParam(param.to_string()),
        None => KeySource::Pointer(key.to_string()),
    }
}

/// A pointer key must lead, through records, to a non-null scalar field, so
/// that every body the schema accepts yields a key.
fn check_key_in_schema(key: &str, schema: &EventSchema) -> Result<(), String> {
    use apache_avro::Schema;
    if key.starts_with('{') {
        return Ok(());
    }
    let mut current = &schema.schema;
    for token in key.trim_start_matches('/').split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        let field = match schema.resolve(current) {
            Schema::Record(r) => r.fields.iter().find(|f| f.name == token),
            _ => None,
        };
        let Some(field) = field else {
            return Err(format!(
                "key {key:?} does not point at a field of {}",
                schema.full_name
            ));
        };
        current = &field.schema;
    }
    match schema.resolve(current) {
        Schema::String
        | Schema::Int
        | Schema::Long
        | Schema::Boolean
        | Schema::Enum(_)
        | Schema::Uuid(_) => Ok(()),
        other => Err(format!(
            "key {key:?} points at a field of type {}; a key needs a non-null string, number, boolean, enum or uuid",
            crate::schema::kind(other)
        )),
    }
}
