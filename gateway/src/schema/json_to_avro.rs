//! JSON body → Avro value, guided by the schema, collecting every mismatch
//! with its JSON pointer instead of stopping at the first.

use std::fmt::Write as _;

use apache_avro::schema::{RecordSchema, UuidSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::Value as Json;

use super::{kind, EventSchema};

/// One field of a body that does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// JSON pointer to the field (`""` is the whole body).
    pub pointer: String,
    /// The Avro type the schema expects there.
    pub expected: String,
    /// What the body had instead.
    pub found: String,
}

/// Converts `json` to a value of `schema`'s top-level record.
pub(super) fn convert(
    schema: &EventSchema,
    json: &Json,
    ignore_unknown: bool,
) -> Result<Value, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut ptr = String::new();
    let value = Converter {
        schema,
        ignore_unknown,
    }
    .value(&schema.schema, json, &mut ptr, &mut errors);
    match value {
        Some(v) if errors.is_empty() => Ok(v),
        _ => Err(errors),
    }
}

struct Converter<'a> {
    schema: &'a EventSchema,
    ignore_unknown: bool,
}

fn describe(json: &Json) -> String {
    match json {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("boolean {b}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(s) if s.chars().count() > 40 => "a string".into(),
        Json::String(s) => format!("string {s:?}"),
        Json::Array(_) => "an array".into(),
        Json::Object(_) => "an object".into(),
    }
}

fn escape(token: &str) -> String {
    let mut out = String::with_capacity(token.len());
    push_escaped(&mut out, token);
    out
}

/// Appends a JSON pointer token (RFC 6901: `~` as `~0`, `/` as `~1`). The
/// pointer is kept for every field on the way down, so this must not allocate.
fn push_escaped(ptr: &mut String, token: &str) {
    for c in token.chars() {
        match c {
            '~' => ptr.push_str("~0"),
            '/' => ptr.push_str("~1"),
            c => ptr.push(c),
        }
    }
}

impl Converter<'_> {
    fn value(
        &self,
        schema: &Schema,
        json: &Json,
        ptr: &mut String,
        errors: &mut Vec<FieldError>,
    ) -> Option<Value> {
        let schema = self.schema.resolve(schema);
        let converted = match (schema, json) {
            (Schema::Null, Json::Null) => Some(Value::Null),
            (Schema::Boolean, Json::Bool(b)) => Some(Value::Boolean(*b)),
            (Schema::Int, Json::Number(n)) => n
                .as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .map(Value::Int),
            (Schema::Long, Json::Number(n)) => n.as_i64().map(Value::Long),
            // JSON numbers are doubles; narrowing to float is what a float field means.
            #[allow(clippy::cast_possible_truncation)]
            (Schema::Float, Json::Number(n)) => n.as_f64().map(|f| Value::Float(f as f32)),
            (Schema::Double, Json::Number(n)) => n.as_f64().map(Value::Double),
            (Schema::String, Json::String(s)) => Some(Value::String(s.clone())),
            (Schema::Bytes, Json::String(s)) => Some(Value::Bytes(s.as_bytes().to_vec())),
            (Schema::Enum(e), Json::String(s)) => e
                .symbols
                .iter()
                .position(|sym| sym == s)
                .and_then(|i| u32::try_from(i).ok())
                .map(|i| Value::Enum(i, s.clone())),
            (Schema::Fixed(f), Json::String(s)) if s.len() == f.size => {
                Some(Value::Fixed(f.size, s.as_bytes().to_vec()))
            }
            (Schema::Uuid(UuidSchema::String), Json::String(s)) => {
                uuid::Uuid::parse_str(s).ok().map(Value::Uuid)
            }
            (Schema::Date, Json::Number(n)) => n
                .as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .map(Value::Date),
            (Schema::Date, Json::String(s)) => parse_date(s).map(Value::Date),
            (Schema::TimestampMillis, Json::Number(n)) => n.as_i64().map(Value::TimestampMillis),
            (Schema::TimestampMillis, Json::String(s)) => s
                .parse::<jiff::Timestamp>()
                .ok()
                .map(|t| Value::TimestampMillis(t.as_millisecond())),
            (Schema::TimestampMicros, Json::Number(n)) => n.as_i64().map(Value::TimestampMicros),
            (Schema::TimestampMicros, Json::String(s)) => s
                .parse::<jiff::Timestamp>()
                .ok()
                .map(|t| Value::TimestampMicros(t.as_microsecond())),
            (Schema::Array(a), Json::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = ptr.len();
                    // Writing to a String cannot fail.
                    let _ = write!(ptr, "/{i}");
                    if let Some(v) = self.value(&a.items, item, ptr, errors) {
                        out.push(v);
                    }
                    ptr.truncate(len);
                }
                return Some(Value::Array(out));
            }
            (Schema::Map(m), Json::Object(obj)) => {
                let mut out = std::collections::HashMap::with_capacity(obj.len());
                for (k, item) in obj {
                    let len = ptr.len();
                    ptr.push('/');
                    push_escaped(ptr, k);
                    if let Some(v) = self.value(&m.types, item, ptr, errors) {
                        out.insert(k.clone(), v);
                    }
                    ptr.truncate(len);
                }
                return Some(Value::Map(out));
            }
            (Schema::Record(r), Json::Object(_)) => return self.record(r, json, ptr, errors),
            (Schema::Union(u), _) => return self.union(u.variants(), schema, json, ptr, errors),
            _ => None,
        };
        if converted.is_none() {
            errors.push(FieldError {
                pointer: ptr.clone(),
                expected: kind(schema),
                found: describe(json),
            });
        }
        converted
    }

    fn union(
        &self,
        variants: &[Schema],
        schema: &Schema,
        json: &Json,
        ptr: &mut String,
        errors: &mut Vec<FieldError>,
    ) -> Option<Value> {
        // First branch the value fits, in declaration order, as Avro's own
        // JSON-to-union resolution does for untagged values.
        for (i, variant) in variants.iter().enumerate() {
            let mut scratch = Vec::new();
            if let Some(v) = self.value(variant, json, ptr, &mut scratch) {
                if scratch.is_empty() {
                    return u32::try_from(i).ok().map(|i| Value::Union(i, Box::new(v)));
                }
            }
        }
        errors.push(FieldError {
            pointer: ptr.clone(),
            expected: kind(schema),
            found: describe(json),
        });
        None
    }

    fn record(
        &self,
        record: &RecordSchema,
        json: &Json,
        ptr: &mut String,
        errors: &mut Vec<FieldError>,
    ) -> Option<Value> {
        let obj = json.as_object()?;
        let mut fields = Vec::with_capacity(record.fields.len());
        for field in &record.fields {
            let len = ptr.len();
            ptr.push('/');
            push_escaped(ptr, &field.name);
            match (obj.get(&field.name), &field.default) {
                (Some(v), _) => {
                    if let Some(v) = self.value(&field.schema, v, ptr, errors) {
                        fields.push((field.name.clone(), v));
                    }
                }
                (None, Some(default)) => {
                    // A union's default belongs to its first branch.
                    let schema = match self.schema.resolve(&field.schema) {
                        Schema::Union(u) => u.variants().first().unwrap_or(&field.schema),
                        _ => &field.schema,
                    };
                    let mut scratch = Vec::new();
                    match self.value(schema, default, ptr, &mut scratch) {
                        Some(v) => {
                            let v = match self.schema.resolve(&field.schema) {
                                Schema::Union(_) => Value::Union(0, Box::new(v)),
                                _ => v,
                            };
                            fields.push((field.name.clone(), v));
                        }
                        None => errors.push(FieldError {
                            pointer: ptr.clone(),
                            expected: kind(&field.schema),
                            found: format!(
                                "missing, and the schema default {default} does not fit"
                            ),
                        }),
                    }
                }
                (None, None) => errors.push(FieldError {
                    pointer: ptr.clone(),
                    expected: kind(&field.schema),
                    found: "missing (required field)".into(),
                }),
            }
            ptr.truncate(len);
        }
        for key in obj.keys().filter(|_| !self.ignore_unknown) {
            if !record.fields.iter().any(|f| &f.name == key) {
                errors.push(FieldError {
                    pointer: format!("{ptr}/{}", escape(key)),
                    expected: format!("no such field in {}", record.name.fullname(None)),
                    found: "an unexpected field".into(),
                });
            }
        }
        Some(Value::Record(fields))
    }
}

fn parse_date(s: &str) -> Option<i32> {
    let date: jiff::civil::Date = s.parse().ok()?;
    let epoch = jiff::civil::date(1970, 1, 1);
    let span = epoch.until(date).ok()?;
    Some(span.get_days())
}
