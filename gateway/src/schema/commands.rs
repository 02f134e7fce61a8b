//! `gateway schemas …`: compatibility of two files, the history check CI
//! runs, a diff between versions, and registration. Each returns what to
//! print and the exit code, so the CLI stays thin and tests call these.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value as Json;

use super::compat::{can_read, describe, Incompatibility, Level, Model, Node};
use super::levels::Levels;
use super::registry::RegistryClient;
use super::{version_of, Catalog, EventSchema};
use crate::config::LoadedConfig;

/// What a command prints and how it exits.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Exit code: 0 fine, 1 incompatible / refused, 2 unusable input.
    pub code: u8,
    /// Lines for standard output.
    pub lines: Vec<String>,
}

impl Outcome {
    fn error(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            lines: vec![format!("error: {}", message.into())],
        }
    }
}

fn load_model(path: &Path) -> Result<Model, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    apache_avro::Schema::parse_str(&text)
        .map_err(|e| format!("{}: not a valid Avro schema: {e}", path.display()))?;
    let json: Json = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Model::parse(&json).map_err(|e| format!("{}: {e}", path.display()))
}

/// `gateway schemas compat --reader R --writer W`.
pub fn compat(reader: &Path, writer: &Path) -> Outcome {
    let (r, w) = match (load_model(reader), load_model(writer)) {
        (Ok(r), Ok(w)) => (r, w),
        (Err(e), _) | (_, Err(e)) => return Outcome::error(e),
    };
    let found = can_read(&r, &w);
    if found.is_empty() {
        Outcome {
            code: 0,
            lines: vec!["compatible".into()],
        }
    } else {
        Outcome {
            code: 1,
            lines: found.iter().map(ToString::to_string).collect(),
        }
    }
}

fn history_models(
    record: &str,
    versions: &BTreeMap<u32, std::sync::Arc<EventSchema>>,
) -> Result<Vec<(u32, Model)>, String> {
    versions
        .iter()
        .map(|(v, s)| {
            s.model()
                .map(|m| (*v, m))
                .map_err(|e| format!("{record}: {e}"))
        })
        .collect()
}

/// Checks `new_versions` of one record against everything before each.
fn check_record(
    record: &str,
    level: Level,
    history: &[(u32, Model)],
    new_versions: &[u32],
    lines: &mut Vec<String>,
) {
    for v in new_versions {
        let Some(pos) = history.iter().position(|(h, _)| h == v) else {
            continue;
        };
        let older: Vec<(String, Model)> = history[..pos]
            .iter()
            .map(|(h, m)| (format!("v{h}"), m.clone()))
            .collect();
        for i in level.check(&history[pos].1, &older) {
            lines.push(format!("{record} v{v} ({}): {i}", level.as_str()));
        }
    }
}

/// `gateway schemas check [--against REV]`: every record's newest version
/// (or, with `against`, every version added since REV) must be compatible
/// with its history at the record's level; with `against`, released versions
/// must also be unchanged.
pub fn check(schemas_dir: &Path, against: Option<&str>) -> Outcome {
    let catalog = match Catalog::load(schemas_dir) {
        Ok(c) => c,
        Err(problems) => {
            return Outcome {
                code: 2,
                lines: problems.iter().map(|p| format!("error: {p}")).collect(),
            }
        }
    };
    let levels = match Levels::load(schemas_dir) {
        Ok(l) => l,
        Err(e) => return Outcome::error(e),
    };
    let released = match against.map(|rev| released_versions(schemas_dir, rev)) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => return Outcome::error(e),
    };
    let mut lines = Vec::new();
    let mut checked = 0;
    for record in catalog.records() {
        let Some(versions) = catalog.history(record) else {
            continue;
        };
        let history = match history_models(record, versions) {
            Ok(h) => h,
            Err(e) => return Outcome::error(e),
        };
        let new_versions: Vec<u32> = match &released {
            None => versions.keys().next_back().copied().into_iter().collect(),
            Some(released) => {
                for ((rec, v), old) in released.iter().filter(|((r, _), _)| r == record) {
                    match versions.get(v) {
                        None => lines.push(format!("{rec} v{v}: released version was deleted")),
                        Some(now) if &now.source != old => lines.push(format!(
                            "{rec} v{v}: released version was changed; add v{} instead",
                            versions.keys().next_back().map_or(1, |n| n + 1)
                        )),
                        Some(_) => {}
                    }
                }
                versions
                    .keys()
                    .filter(|v| !released.contains_key(&(record.to_string(), **v)))
                    .copied()
                    .collect()
            }
        };
        checked += new_versions.len();
        let level = levels.for_names(&[record]);
        check_record(record, level, &history, &new_versions, &mut lines);
    }
    if let Some(released) = &released {
        for (rec, v) in released.keys() {
            if catalog.history(rec).is_none() {
                lines.push(format!("{rec} v{v}: released record was deleted"));
            }
        }
    }
    let code = u8::from(!lines.is_empty());
    if lines.is_empty() {
        lines.push(format!(
            "ok: {} records, {checked} version(s) checked{}",
            catalog.len(),
            against.map(|r| format!(" against {r}")).unwrap_or_default()
        ));
    }
    Outcome { code, lines }
}

/// (record, version) → schema JSON, as committed at `rev`.
fn released_versions(
    schemas_dir: &Path,
    rev: &str,
) -> Result<BTreeMap<(String, u32), Json>, String> {
    let git = |args: &[&str]| -> Result<Vec<u8>, String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(schemas_dir)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    git(&["rev-parse", "--verify", &format!("{rev}^{{commit}}")])?;
    let listing = git(&["ls-tree", "-r", "--name-only", rev, "--", "."])?;
    let mut out = BTreeMap::new();
    for path in String::from_utf8_lossy(&listing).lines() {
        let p = Path::new(path);
        let (Some(record), Some(version)) = (
            p.parent()
                .and_then(|d| d.file_name())
                .and_then(|d| d.to_str()),
            version_of(p),
        ) else {
            continue;
        };
        if p.extension().is_none_or(|x| x != "avsc") {
            continue;
        }
        let text = git(&["show", &format!("{rev}:./{path}")])?;
        let json: Json =
            serde_json::from_slice(&text).map_err(|e| format!("{path} at {rev}: {e}"))?;
        out.insert((record.to_string(), version), json);
    }
    Ok(out)
}

/// `gateway schemas check --registry`: each publishing route's schema
/// against the latest version the registry holds under its subject.
pub async fn check_registry(loaded: &LoadedConfig, client: &RegistryClient) -> Outcome {
    let catalog = match Catalog::load(&loaded.schemas_dir()) {
        Ok(c) => c,
        Err(p) => {
            return Outcome::error(
                p.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        }
    };
    let levels = Levels::load(&loaded.schemas_dir()).unwrap_or_default();
    let mut lines = Vec::new();
    for (subject, schema) in publishing_subjects(loaded, &catalog) {
        let latest = match client.latest(&subject).await {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => return Outcome::error(e.to_string()),
        };
        let registered = serde_json::from_str::<Json>(&latest.schema)
            .map_err(|e| e.to_string())
            .and_then(|j| Model::parse(&j));
        let (Ok(registered), Ok(local)) = (registered, schema.model()) else {
            return Outcome::error(format!(
                "{subject}: cannot read the registered or local schema"
            ));
        };
        let level = match client.subject_level(&subject).await {
            Ok(Some(l)) => l,
            _ => levels.for_names(&[&subject, &schema.full_name]),
        };
        let against = vec![(format!("registry version {}", latest.version), registered)];
        for i in level.check(&local, &against) {
            lines.push(format!("{subject} ({}): {i}", level.as_str()));
        }
    }
    let code = u8::from(!lines.is_empty());
    if lines.is_empty() {
        lines.push("ok: every subject is compatible with the registry".into());
    }
    Outcome { code, lines }
}

/// (subject, schema) of every publishing route, each once.
fn publishing_subjects(
    loaded: &LoadedConfig,
    catalog: &Catalog,
) -> Vec<(String, std::sync::Arc<EventSchema>)> {
    let strategy = loaded.config.schemas.subject_strategy;
    let mut out: Vec<(String, std::sync::Arc<EventSchema>)> = Vec::new();
    for r in &loaded.config.routes {
        let (Some(topic), Some(name)) = (&r.topic, &r.schema) else {
            continue;
        };
        if !r.mode.publishes() {
            continue;
        }
        let schema = match r.schema_version {
            Some(v) => catalog.version(name, v),
            None => catalog.get(name),
        };
        let Some(schema) = schema else { continue };
        let subject = strategy.subject(topic, name);
        if !out
            .iter()
            .any(|(s, sc)| s == &subject && sc.canonical == schema.canonical)
        {
            out.push((subject, schema.clone()));
        }
    }
    out
}

/// `gateway schemas register [--apply]`.
pub async fn register(loaded: &LoadedConfig, client: &RegistryClient, apply: bool) -> Outcome {
    let catalog = match Catalog::load(&loaded.schemas_dir()) {
        Ok(c) => c,
        Err(p) => {
            return Outcome::error(
                p.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        }
    };
    let levels = Levels::load(&loaded.schemas_dir()).unwrap_or_default();
    let mut lines = Vec::new();
    let mut code = 0;
    for (subject, schema) in publishing_subjects(loaded, &catalog) {
        match client.lookup(&subject, &schema.text).await {
            Ok(Some(id)) => {
                lines.push(format!(
                    "{subject}: {} already registered (id {id})",
                    schema.full_name
                ));
                continue;
            }
            Ok(None) => {}
            Err(e) => return Outcome::error(e.to_string()),
        }
        let wanted = levels.for_names(&[&subject, &schema.full_name]);
        match client.incompatibilities(&subject, &schema.text).await {
            Ok(msgs) if !msgs.is_empty() => {
                code = 1;
                lines.push(format!(
                    "{subject}: REFUSED, incompatible: {}",
                    msgs.join("; ")
                ));
                continue;
            }
            Ok(_) => {}
            Err(e) => return Outcome::error(e.to_string()),
        }
        if !apply {
            lines.push(format!(
                "{subject}: would register {} ({}) and set compatibility {}",
                schema.full_name,
                schema.file,
                wanted.as_str()
            ));
            continue;
        }
        let level_set = match client.subject_level(&subject).await {
            Ok(Some(l)) if l == wanted => Ok(()),
            _ => client.set_subject_level(&subject, wanted).await,
        };
        if let Err(e) = level_set {
            return Outcome::error(e.to_string());
        }
        match client.register(&subject, &schema.text).await {
            Ok(id) => lines.push(format!(
                "{subject}: registered {} as id {id}",
                schema.full_name
            )),
            Err(e) => return Outcome::error(e.to_string()),
        }
    }
    if lines.is_empty() {
        lines.push("nothing to register: no route publishes".into());
    }
    Outcome { code, lines }
}

/// `gateway schemas diff <record> [--from N] [--to M]`.
pub fn diff(schemas_dir: &Path, record: &str, from: Option<u32>, to: Option<u32>) -> Outcome {
    let catalog = match Catalog::load(schemas_dir) {
        Ok(c) => c,
        Err(p) => {
            return Outcome::error(
                p.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        }
    };
    let Some(history) = catalog.history(record) else {
        let known: Vec<&str> = catalog.records().collect();
        return Outcome::error(format!("no record {record} (known: {})", known.join(", ")));
    };
    let versions: Vec<u32> = history.keys().copied().collect();
    let to = to.or(versions.last().copied()).unwrap_or(1);
    let from = from
        .or_else(|| versions.iter().rev().find(|v| **v < to).copied())
        .unwrap_or(to);
    let (Some(old), Some(new)) = (history.get(&from), history.get(&to)) else {
        return Outcome::error(format!(
            "{record} has versions {versions:?}; asked for v{from}..v{to}"
        ));
    };
    let (Ok(om), Ok(nm)) = (old.model(), new.model()) else {
        return Outcome::error(format!("{record}: cannot model the schemas"));
    };
    let mut lines = vec![format!("{record}: v{from} → v{to}")];
    let mut changes = Vec::new();
    diff_node(
        &om,
        &nm,
        &om.root,
        &nm.root,
        "$",
        &mut changes,
        &mut Default::default(),
    );
    if changes.is_empty() {
        changes.push("  no structural change".into());
    }
    lines.extend(changes);
    let verdict = |found: Vec<Incompatibility>| {
        if found.is_empty() {
            "yes".to_string()
        } else {
            format!(
                "no: {}",
                found
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    };
    lines.push(format!(
        "  backward (v{to} reads v{from} data): {}",
        verdict(can_read(&nm, &om))
    ));
    lines.push(format!(
        "  forward (v{from} reads v{to} data): {}",
        verdict(can_read(&om, &nm))
    ));
    Outcome { code: 0, lines }
}

fn diff_node(
    om: &Model,
    nm: &Model,
    o: &Node,
    n: &Node,
    path: &str,
    out: &mut Vec<String>,
    seen: &mut std::collections::HashSet<(String, String)>,
) {
    use super::compat::model_named as named;
    match (o, n) {
        (Node::Named(on), Node::Named(nn)) => {
            let (Some(ot), Some(nt)) = (om.get(on), nm.get(nn)) else {
                return;
            };
            // Each pair of named types once: recursive records end.
            if !seen.insert((on.clone(), nn.clone())) {
                return;
            }
            if ot.full_name != nt.full_name {
                out.push(format!(
                    "  {path}: renamed {} → {}",
                    ot.full_name, nt.full_name
                ));
            }
            match (&ot.def, &nt.def) {
                (named::Record { fields: of }, named::Record { fields: nf }) => {
                    for f in nf {
                        let p = format!("{path}.{}", f.name);
                        match of
                            .iter()
                            .find(|x| x.name == f.name || f.aliases.contains(&x.name))
                        {
                            None => out.push(format!(
                                "  {p}: added ({}{})",
                                describe(&f.node),
                                if f.has_default {
                                    ", with default"
                                } else {
                                    ", no default"
                                }
                            )),
                            Some(old) => {
                                if old.name != f.name {
                                    out.push(format!("  {p}: renamed from {}", old.name));
                                }
                                if old.has_default != f.has_default {
                                    out.push(format!(
                                        "  {p}: default {}",
                                        if f.has_default { "added" } else { "removed" }
                                    ));
                                }
                                diff_node(om, nm, &old.node, &f.node, &p, out, seen);
                            }
                        }
                    }
                    for f in of {
                        if !nf
                            .iter()
                            .any(|x| x.name == f.name || x.aliases.contains(&f.name))
                        {
                            out.push(format!(
                                "  {path}.{}: removed ({})",
                                f.name,
                                describe(&f.node)
                            ));
                        }
                    }
                }
                (
                    named::Enum {
                        symbols: os,
                        default: od,
                    },
                    named::Enum {
                        symbols: ns,
                        default: nd,
                    },
                ) => {
                    let added: Vec<&String> = ns.iter().filter(|s| !os.contains(s)).collect();
                    let removed: Vec<&String> = os.iter().filter(|s| !ns.contains(s)).collect();
                    if !added.is_empty() {
                        out.push(format!("  {path}: enum symbols added {added:?}"));
                    }
                    if !removed.is_empty() {
                        out.push(format!("  {path}: enum symbols removed {removed:?}"));
                    }
                    if od != nd {
                        out.push(format!("  {path}: enum default {od:?} → {nd:?}"));
                    }
                }
                (named::Fixed { size: a }, named::Fixed { size: b }) if a != b => {
                    out.push(format!("  {path}: fixed size {a} → {b}"));
                }
                _ => {}
            }
        }
        (Node::Array(a), Node::Array(b)) => {
            diff_node(om, nm, a, b, &format!("{path}[]"), out, seen)
        }
        (Node::Map(a), Node::Map(b)) => diff_node(om, nm, a, b, &format!("{path}{{}}"), out, seen),
        _ => {
            let (a, b) = (describe(o), describe(n));
            if a != b {
                out.push(format!("  {path}: type {a} → {b}"));
            }
        }
    }
}
