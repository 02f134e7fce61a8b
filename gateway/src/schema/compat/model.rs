//! A small Avro schema model for compatibility checks: full names and
//! aliases resolved as the specification says, logical types reduced to
//! their underlying types, named types kept once and referenced by name.

use std::collections::BTreeMap;

use serde_json::Value as Json;

/// A type in a schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `null`
    Null,
    /// `boolean`
    Boolean,
    /// `int`
    Int,
    /// `long`
    Long,
    /// `float`
    Float,
    /// `double`
    Double,
    /// `bytes`
    Bytes,
    /// `string`
    String,
    /// `array`
    Array(Box<Node>),
    /// `map`
    Map(Box<Node>),
    /// A union's branches, in order.
    Union(Vec<Node>),
    /// A named type, by full name (see [`Model::named`]).
    Named(String),
}

/// A record field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Field aliases.
    pub aliases: Vec<String>,
    /// Field type.
    pub node: Node,
    /// Whether the field declares a default.
    pub has_default: bool,
}

/// A named type's definition.
#[derive(Debug, Clone, PartialEq)]
pub enum Named {
    /// `record` (and `error`).
    Record {
        /// Fields, in order.
        fields: Vec<Field>,
    },
    /// `enum`
    Enum {
        /// Symbols, in order.
        symbols: Vec<String>,
        /// The enum's default symbol, if any.
        default: Option<String>,
    },
    /// `fixed`
    Fixed {
        /// Size in bytes.
        size: u64,
    },
}

/// A named type with its names.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedType {
    /// Full name.
    pub full_name: String,
    /// Aliases, as full names.
    pub aliases: Vec<String>,
    /// Definition.
    pub def: Named,
}

impl NamedType {
    /// The name without its namespace.
    pub fn short_name(&self) -> &str {
        short(&self.full_name)
    }
}

/// The name part of a full name.
pub fn short(full: &str) -> &str {
    full.rsplit('.').next().unwrap_or(full)
}

/// A parsed schema: its root and every named type it defines.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The top-level type.
    pub root: Node,
    /// Named types by full name.
    pub named: BTreeMap<String, NamedType>,
}

impl Model {
    /// Parses Avro schema JSON. Expects a schema apache-avro already accepted;
    /// errors here are about shapes the model cannot represent.
    pub fn parse(json: &Json) -> Result<Self, String> {
        let mut named = BTreeMap::new();
        let root = node(json, None, &mut named)?;
        Ok(Self { root, named })
    }

    /// The definition of a named node.
    pub fn get(&self, full_name: &str) -> Option<&NamedType> {
        self.named.get(full_name)
    }
}

fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        _ if name.contains('.') => name.to_string(),
        Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

fn namespace_of(full: &str) -> Option<&str> {
    full.rfind('.').map(|i| &full[..i])
}

fn primitive(name: &str) -> Option<Node> {
    Some(match name {
        "null" => Node::Null,
        "boolean" => Node::Boolean,
        "int" => Node::Int,
        "long" => Node::Long,
        "float" => Node::Float,
        "double" => Node::Double,
        "bytes" => Node::Bytes,
        "string" => Node::String,
        _ => return None,
    })
}

fn node(
    json: &Json,
    namespace: Option<&str>,
    named: &mut BTreeMap<String, NamedType>,
) -> Result<Node, String> {
    match json {
        Json::String(name) => Ok(primitive(name).unwrap_or_else(|| {
            // A reference: resolve against the enclosing namespace, falling
            // back to the name as written (a null-namespace type).
            let full = full_name(name, namespace);
            if named.contains_key(&full) || name.contains('.') {
                Node::Named(full)
            } else {
                Node::Named(name.clone())
            }
        })),
        Json::Array(branches) => branches
            .iter()
            .map(|b| node(b, namespace, named))
            .collect::<Result<Vec<_>, _>>()
            .map(Node::Union),
        Json::Object(obj) => {
            let ty = obj
                .get("type")
                .ok_or_else(|| "a schema object without \"type\"".to_string())?;
            let Json::String(ty_name) = ty else {
                // {"type": {...}} or {"type": [...]}: the wrapper adds nothing.
                return node(ty, namespace, named);
            };
            match ty_name.as_str() {
                "record" | "error" | "enum" | "fixed" => named_type(ty_name, obj, namespace, named),
                "array" => Ok(Node::Array(Box::new(node(
                    obj.get("items").ok_or("array without items")?,
                    namespace,
                    named,
                )?))),
                "map" => Ok(Node::Map(Box::new(node(
                    obj.get("values").ok_or("map without values")?,
                    namespace,
                    named,
                )?))),
                // Logical types resolve as their underlying type.
                other => node(&Json::String(other.to_string()), namespace, named),
            }
        }
        other => Err(format!("not a schema: {other}")),
    }
}

fn named_type(
    kind: &str,
    obj: &serde_json::Map<String, Json>,
    enclosing: Option<&str>,
    named: &mut BTreeMap<String, NamedType>,
) -> Result<Node, String> {
    let name = obj
        .get("name")
        .and_then(Json::as_str)
        .ok_or("named type without a name")?;
    let namespace = obj.get("namespace").and_then(Json::as_str).or(enclosing);
    let full = full_name(name, namespace);
    let own_ns = namespace_of(&full).map(str::to_string);
    let aliases = strings(obj.get("aliases"))
        .into_iter()
        .map(|a| full_name(&a, own_ns.as_deref()))
        .collect();
    // Registered before its fields so recursive references resolve.
    named.insert(
        full.clone(),
        NamedType {
            full_name: full.clone(),
            aliases,
            def: Named::Fixed { size: 0 },
        },
    );
    let def = match kind {
        "enum" => Named::Enum {
            symbols: strings(obj.get("symbols")),
            default: obj
                .get("default")
                .and_then(Json::as_str)
                .map(str::to_string),
        },
        "fixed" => Named::Fixed {
            size: obj
                .get("size")
                .and_then(Json::as_u64)
                .ok_or("fixed without size")?,
        },
        _ => {
            let mut fields = Vec::new();
            for f in obj
                .get("fields")
                .and_then(Json::as_array)
                .ok_or("record without fields")?
            {
                let fname = f
                    .get("name")
                    .and_then(Json::as_str)
                    .ok_or("field without a name")?;
                let ty = f.get("type").ok_or("field without a type")?;
                fields.push(Field {
                    name: fname.to_string(),
                    aliases: strings(f.get("aliases")),
                    node: node(ty, own_ns.as_deref(), named)?,
                    has_default: f.get("default").is_some(),
                });
            }
            Named::Record { fields }
        }
    };
    if let Some(t) = named.get_mut(&full) {
        t.def = def;
    }
    Ok(Node::Named(full))
}

fn strings(v: Option<&Json>) -> Vec<String> {
    v.and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Json::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
