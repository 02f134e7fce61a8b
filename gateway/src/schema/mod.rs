//! The Avro catalog: `.avsc` files parsed once per config load, and the
//! encoders that turn a JSON body into a Confluent-framed Avro value.

pub mod commands;
pub mod compat;
mod json_to_avro;
pub mod levels;
pub mod registry;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use apache_avro::schema::{Name, RecordSchema};
use apache_avro::Schema;

use crate::config::Problem;

pub use json_to_avro::FieldError;

/// One top-level record schema from the catalog.
#[derive(Debug)]
pub struct EventSchema {
    /// Full name, e.g. `com.shop.OrderCreated`.
    pub full_name: String,
    /// The parsed schema.
    pub schema: Schema,
    /// Parsing Canonical Form: identity of the schema (ids, collisions).
    pub canonical: String,
    /// The schema as written, in compact JSON: what is registered and served
    /// by id, so consumers keep docs, defaults, aliases and logical types.
    pub text: String,
    /// The file it came from, for messages.
    pub file: String,
    /// The schema as written (with defaults, aliases and docs, which the
    /// canonical form drops), for compatibility checks.
    pub source: serde_json::Value,
    /// Named types defined inside it, for resolving `Schema::Ref`.
    named: HashMap<Name, Schema>,
}

impl EventSchema {
    /// Parses one schema document. It must be a record.
    pub fn parse(text: &str, file: &str) -> Result<Self, String> {
        let schema = Schema::parse_str(text).map_err(|e| format!("{file}: {e}"))?;
        let full_name = match &schema {
            Schema::Record(RecordSchema { name, .. }) => name.fullname(None),
            other => {
                return Err(format!(
                    "{file}: top-level schema must be a record, found {}",
                    kind(other)
                ))
            }
        };
        let mut named = HashMap::new();
        let mut unsupported = Vec::new();
        collect_named(&schema, &mut named, &mut unsupported);
        if !unsupported.is_empty() {
            unsupported.sort();
            unsupported.dedup();
            return Err(format!(
                "{file}: {full_name} uses types the JSON mapping does not support: {}",
                unsupported.join(", ")
            ));
        }
        let canonical = schema.canonical_form();
        let source: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        Ok(Self {
            full_name,
            schema,
            canonical,
            text: source.to_string(),
            file: file.to_string(),
            source,
            named,
        })
    }

    /// A stable id for this schema when no registry numbers it: the low 31
    /// bits of its CRC-64-AVRO (Rabin) fingerprint, never 0.
    pub fn local_id(&self) -> u32 {
        let fp = self.schema.fingerprint::<apache_avro::rabin::Rabin>().bytes;
        let mut b = [0u8; 4];
        b.copy_from_slice(&fp[..4]);
        (u32::from_le_bytes(b) & 0x7fff_ffff).max(1)
    }

    /// Converts a JSON body into this schema's Avro binary encoding,
    /// refusing fields the schema does not have.
    pub fn encode_json(&self, body: &serde_json::Value) -> Result<Vec<u8>, Vec<FieldError>> {
        self.encode_json_with(body, false)
    }

    /// Like [`EventSchema::encode_json`]; with `ignore_unknown`, fields the
    /// schema does not have are left out instead of refused.
    pub fn encode_json_with(
        &self,
        body: &serde_json::Value,
        ignore_unknown: bool,
    ) -> Result<Vec<u8>, Vec<FieldError>> {
        let value = json_to_avro::convert(self, body, ignore_unknown)?;
        // The converter already walked the schema, so the writer's own
        // validation pass would only repeat it.
        apache_avro::writer::datum::GenericDatumWriter::builder(&self.schema)
            .validate(false)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .map_err(|e| {
                vec![FieldError {
                    pointer: String::new(),
                    expected: self.full_name.clone(),
                    found: format!("a value the Avro writer refused: {e}"),
                }]
            })
    }

    /// The compatibility model of this schema.
    pub fn model(&self) -> Result<compat::Model, String> {
        compat::Model::parse(&self.source).map_err(|e| format!("{}: {e}", self.file))
    }

    /// Decodes an Avro datum written with this schema.
    pub fn decode(&self, mut datum: &[u8]) -> Result<apache_avro::types::Value, String> {
        apache_avro::reader::datum::GenericDatumReader::builder(&self.schema)
            .build()
            .and_then(|r| r.read_value(&mut datum))
            .map_err(|e| e.to_string())
    }

    /// Follows a named reference to its definition.
    pub(crate) fn resolve<'a>(&'a self, schema: &'a Schema) -> &'a Schema {
        match schema {
            Schema::Ref { name } => self.named.get(name).unwrap_or(schema),
            other => other,
        }
    }
}

/// Every version of every record under `schemas.dir`.
///
/// Layout: one directory per record, named by its full name, holding
/// `v1.avsc`, `v2.avsc`, ...: `schemas/com.shop.OrderCreated/v2.avsc`.
/// Versions are never edited once released; a change is a new file.
#[derive(Debug, Default)]
pub struct Catalog {
    records: BTreeMap<String, BTreeMap<u32, Arc<EventSchema>>>,
}

impl Catalog {
    /// Loads every record's history from `dir`, reporting every problem.
    pub fn load(dir: &Path) -> Result<Self, Vec<Problem>> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            vec![Problem::global(format!(
                "schemas.dir {}: {e}",
                dir.display()
            ))]
        })?;
        let mut problems = Vec::new();
        let mut catalog = Catalog::default();
        let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let name = file_name(&path);
            if path.is_dir() {
                catalog.load_record(&path, &name, &mut problems);
            } else if path.extension().is_some_and(|x| x == "avsc") {
                problems.push(Problem::global(format!(
                    "{name}: schemas live in one directory per record with numbered versions; move it to <full.name>/v1.avsc"
                )));
            }
        }
        if problems.is_empty() {
            Ok(catalog)
        } else {
            Err(problems)
        }
    }

    fn load_record(&mut self, dir: &Path, record: &str, problems: &mut Vec<Problem>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            problems.push(Problem::global(format!("{record}: cannot read directory")));
            return;
        };
        let mut versions = BTreeMap::new();
        for path in entries.filter_map(Result::ok).map(|e| e.path()) {
            if path.extension().is_none_or(|x| x != "avsc") {
                continue;
            }
            let file = format!("{record}/{}", file_name(&path));
            let Some(version) = version_of(&path) else {
                problems.push(Problem::global(format!("{file}: name must be v<N>.avsc")));
                continue;
            };
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| format!("{file}: {e}"))
                .and_then(|text| EventSchema::parse(&text, &file));
            match parsed {
                Ok(schema) if schema.full_name != record => {
                    problems.push(Problem::global(format!(
                        "{file}: defines {}, but its directory says {record}",
                        schema.full_name
                    )))
                }
                Ok(schema) => {
                    versions.insert(version, Arc::new(schema));
                }
                Err(msg) => problems.push(Problem::global(msg)),
            }
        }
        if !versions.is_empty() {
            self.records.insert(record.to_string(), versions);
        }
    }

    /// The newest version of a record.
    pub fn get(&self, full_name: &str) -> Option<&Arc<EventSchema>> {
        self.records.get(full_name)?.values().next_back()
    }

    /// One version of a record.
    pub fn version(&self, full_name: &str, version: u32) -> Option<&Arc<EventSchema>> {
        self.records.get(full_name)?.get(&version)
    }

    /// Every version of a record, oldest first.
    pub fn history(&self, full_name: &str) -> Option<&BTreeMap<u32, Arc<EventSchema>>> {
        self.records.get(full_name)
    }

    /// Record names.
    pub fn records(&self) -> impl Iterator<Item = &str> {
        self.records.keys().map(String::as_str)
    }

    /// The newest version of every record.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<EventSchema>> {
        self.records.values().filter_map(|v| v.values().next_back())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `v12.avsc` → 12.
pub fn version_of(path: &Path) -> Option<u32> {
    path.file_stem()?
        .to_str()?
        .strip_prefix('v')?
        .parse()
        .ok()
        .filter(|v| *v > 0)
}

/// Frames an Avro datum in the Confluent wire format: magic byte 0, the
/// schema id as 4 big-endian bytes, then the datum.
pub fn confluent_frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a Confluent-framed value into schema id and datum.
pub fn confluent_unframe(value: &[u8]) -> Option<(u32, &[u8])> {
    match value {
        [0, a, b, c, d, rest @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        _ => None,
    }
}

fn collect_named(
    schema: &Schema,
    named: &mut HashMap<Name, Schema>,
    unsupported: &mut Vec<String>,
) {
    match schema {
        Schema::Record(r) => {
            named.insert(r.name.clone(), schema.clone());
            for f in &r.fields {
                collect_named(&f.schema, named, unsupported);
            }
        }
        Schema::Enum(e) => {
            named.insert(e.name.clone(), schema.clone());
        }
        Schema::Fixed(f) => {
            named.insert(f.name.clone(), schema.clone());
        }
        Schema::Array(a) => collect_named(&a.items, named, unsupported),
        Schema::Map(m) => collect_named(&m.types, named, unsupported),
        Schema::Union(u) => {
            for v in u.variants() {
                collect_named(v, named, unsupported);
            }
        }
        Schema::Null
        | Schema::Boolean
        | Schema::Int
        | Schema::Long
        | Schema::Float
        | Schema::Double
        | Schema::Bytes
        | Schema::String
        | Schema::Uuid(_)
        | Schema::Date
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::Ref { .. } => {}
        other => unsupported.push(kind(other)),
    }
}

/// A short human name for a schema's type, for messages.
pub(crate) fn kind(schema: &Schema) -> String {
    match schema {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int => "int".into(),
        Schema::Long => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "string".into(),
        Schema::Array(a) => format!("array<{}>", kind(&a.items)),
        Schema::Map(m) => format!("map<{}>", kind(&m.types)),
        Schema::Union(u) => format!(
            "union [{}]",
            u.variants().iter().map(kind).collect::<Vec<_>>().join(", ")
        ),
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {} {:?}", e.name.fullname(None), e.symbols),
        Schema::Fixed(f) => format!("fixed {} ({} bytes)", f.name.fullname(None), f.size),
        Schema::Decimal(_) => "decimal".into(),
        Schema::BigDecimal => "big-decimal".into(),
        Schema::Uuid(_) => "uuid".into(),
        Schema::Date => "date".into(),
        Schema::TimeMillis => "time-millis".into(),
        Schema::TimeMicros => "time-micros".into(),
        Schema::TimestampMillis => "timestamp-millis".into(),
        Schema::TimestampMicros => "timestamp-micros".into(),
        Schema::TimestampNanos => "timestamp-nanos".into(),
        Schema::LocalTimestampMillis => "local-timestamp-millis".into(),
        Schema::LocalTimestampMicros => "local-timestamp-micros".into(),
        Schema::LocalTimestampNanos => "local-timestamp-nanos".into(),
        Schema::Duration(_) => "duration".into(),
        Schema::Ref { name } => name.fullname(None),
    }
}

#[cfg(test)]
mod tests;
