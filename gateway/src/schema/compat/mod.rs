//! Schema compatibility, following the Avro specification's schema
//! resolution rules: can data written with one schema be read with another?
//! On top of that, the Schema Registry's compatibility levels.

mod model;

use std::collections::HashSet;
use std::fmt;

/// Named-type definitions, for tools that walk a [`Model`].
pub use model::Named as model_named;
use model::{short, Named as Def, NamedType};
pub use model::{Model, Node};

/// One reason a reader cannot read a writer's data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Incompatibility {
    /// Where: `$` is the root, `.field`, `[]` array items, `{}` map values,
    /// `<type>` a union branch.
    pub path: String,
    /// Which rule fails, and how.
    pub reason: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Everything that stops `reader` from reading data written with `writer`;
/// empty when it can.
pub fn can_read(reader: &Model, writer: &Model) -> Vec<Incompatibility> {
    let mut c = Checker {
        r: reader,
        w: writer,
        seen: HashSet::new(),
        out: Vec::new(),
    };
    c.check(&reader.root, &writer.root, "$");
    c.out
}

/// The Schema Registry's compatibility levels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    /// New schema reads data of the latest previous one (the default).
    #[default]
    Backward,
    /// New schema reads data of every previous one.
    BackwardTransitive,
    /// The latest previous schema reads data of the new one.
    Forward,
    /// Every previous schema reads data of the new one.
    ForwardTransitive,
    /// Backward and forward against the latest previous.
    Full,
    /// Backward and forward against every previous.
    FullTransitive,
    /// No check.
    None,
}

impl Level {
    /// The registry's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
            Level::None => "NONE",
        }
    }

    /// Checks `new` against `history` (oldest first) at this level. Each
    /// finding is prefixed with the version and direction that fails.
    pub fn check(self, new: &Model, history: &[(String, Model)]) -> Vec<Incompatibility> {
        let (backward, forward, transitive) = match self {
            Level::None => return Vec::new(),
            Level::Backward => (true, false, false),
            Level::BackwardTransitive => (true, false, true),
            Level::Forward => (false, true, false),
            Level::ForwardTransitive => (false, true, true),
            Level::Full => (true, true, false),
            Level::FullTransitive => (true, true, true),
        };
        let against: Vec<&(String, Model)> = if transitive {
            history.iter().collect()
        } else {
            history.last().into_iter().collect()
        };
        let mut out = Vec::new();
        for (version, old) in against {
            let mut tag = |found: Vec<Incompatibility>, how: &str| {
                out.extend(found.into_iter().map(|i| Incompatibility {
                    path: i.path,
                    reason: format!("{how} {version}: {}", i.reason),
                }))
            };
            if backward {
                tag(
                    can_read(new, old),
                    "new schema cannot read data written with",
                );
            }
            if forward {
                tag(
                    can_read(old, new),
                    "data of the new schema cannot be read with",
                );
            }
        }
        out
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase()))
            .map_err(|_| format!("unknown compatibility level {s:?}"))
    }
}

struct Checker<'a> {
    r: &'a Model,
    w: &'a Model,
    /// (reader, writer) record pairs under check or already checked: each
    /// pair is resolved once (recursive types end, shared types do not
    /// multiply the work, and each finding is reported once).
    seen: HashSet<(String, String)>,
    out: Vec<Incompatibility>,
}

/// A short human name for a type.
pub fn describe(node: &Node) -> String {
    match node {
        Node::Null => "null".into(),
        Node::Boolean => "boolean".into(),
        Node::Int => "int".into(),
        Node::Long => "long".into(),
        Node::Float => "float".into(),
        Node::Double => "double".into(),
        Node::Bytes => "bytes".into(),
        Node::String => "string".into(),
        Node::Array(i) => format!("array<{}>", describe(i)),
        Node::Map(v) => format!("map<{}>", describe(v)),
        Node::Union(b) => format!(
            "union [{}]",
            b.iter().map(describe).collect::<Vec<_>>().join(", ")
        ),
        Node::Named(n) => n.clone(),
    }
}

impl<'a> Checker<'a> {
    fn fail(&mut self, path: &str, reason: String) {
        self.out.push(Incompatibility {
            path: path.to_string(),
            reason,
        });
    }

    fn named(&self, model: &'a Model, node: &Node) -> Option<&'a NamedType> {
        match node {
            Node::Named(n) => model.get(n),
            _ => None,
        }
    }

    /// The specification's "match" between a reader and a writer type,
    /// before any recursive resolution.
    fn matches(&self, r: &Node, w: &Node) -> bool {
        use Node::*;
        match (r, w) {
            (Null, Null) | (Boolean, Boolean) | (Int, Int) | (Long, Long) => true,
            (Float, Float) | (Double, Double) | (Bytes, Bytes) | (String, String) => true,
            // Promotions the specification allows.
            (Long | Float | Double, Int) | (Float | Double, Long) | (Double, Float) => true,
            (Bytes, String) | (String, Bytes) => true,
            (Array(_), Array(_)) | (Map(_), Map(_)) => true,
            (Named(_), Named(_)) => {
                let (Some(rn), Some(wn)) = (self.named(self.r, r), self.named(self.w, w)) else {
                    return false;
                };
                let same_kind = matches!(
                    (&rn.def, &wn.def),
                    (Def::Record { .. }, Def::Record { .. })
                        | (Def::Enum { .. }, Def::Enum { .. })
                        | (Def::Fixed { .. }, Def::Fixed { .. })
                );
                let names_match = rn.short_name() == wn.short_name()
                    || rn.aliases.iter().any(|a| a == &wn.full_name);
                let sizes_match = match (&rn.def, &wn.def) {
                    (Def::Fixed { size: a }, Def::Fixed { size: b }) => a == b,
                    _ => true,
                };
                same_kind && names_match && sizes_match
            }
            _ => false,
        }
    }

    fn check(&mut self, r: &Node, w: &Node, path: &str) {
        match (r, w) {
            // Any branch may have been written, so every one must resolve.
            (_, Node::Union(w_branches)) => {
                for wb in w_branches {
                    let branch_path = format!("{path}<{}>", describe(wb));
                    match r {
                        Node::Union(_) => self.check(r, wb, &branch_path),
                        _ if self.matches(r, wb) => self.check(r, wb, &branch_path),
                        _ => self.fail(
                            &branch_path,
                            format!(
                                "writer union branch {} cannot be read as {}",
                                describe(wb),
                                describe(r)
                            ),
                        ),
                    }
                }
            }
            // The first reader branch that matches is the one used, and it
            // must resolve; later branches are not tried.
            (Node::Union(r_branches), _) => {
                match r_branches.iter().find(|rb| self.matches(rb, w)) {
                    Some(rb) => self.check(rb, w, path),
                    None => self.fail(
                        path,
                        format!(
                            "no branch of reader {} matches writer {}",
                            describe(r),
                            describe(w)
                        ),
                    ),
                }
            }
            _ if !self.matches(r, w) => self.mismatch(r, w, path),
            (Node::Array(ri), Node::Array(wi)) => self.check(ri, wi, &format!("{path}[]")),
            (Node::Map(rv), Node::Map(wv)) => self.check(rv, wv, &format!("{path}{{}}")),
            (Node::Named(_), Node::Named(_)) => self.check_named(r, w, path),
            _ => {}
        }
    }

    fn mismatch(&mut self, r: &Node, w: &Node, path: &str) {
        let reason = match (self.named(self.r, r), self.named(self.w, w)) {
            (Some(rn), Some(wn)) => match (&rn.def, &wn.def) {
                (Def::Fixed { size: a }, Def::Fixed { size: b })
                    if a != b && rn.short_name() == wn.short_name() =>
                {
                    format!(
                        "fixed {} has size {b} in the writer and {a} in the reader",
                        wn.full_name
                    )
                }
                _ if std::mem::discriminant(&rn.def) == std::mem::discriminant(&wn.def) => format!(
                    "reader name {} does not match writer name {} (and no reader alias names it)",
                    rn.full_name, wn.full_name
                ),
                _ => format!(
                    "reader {} cannot read writer {}",
                    rn.full_name, wn.full_name
                ),
            },
            _ => format!(
                "reader type {} cannot read writer type {} (no such promotion)",
                describe(r),
                describe(w)
            ),
        };
        self.fail(path, reason);
    }

    fn check_named(&mut self, r: &Node, w: &Node, path: &str) {
        let (Some(rn), Some(wn)) = (self.named(self.r, r), self.named(self.w, w)) else {
            return;
        };
        match (&rn.def, &wn.def) {
            (Def::Record { fields: rf }, Def::Record { fields: wf }) => {
                let pair = (rn.full_name.clone(), wn.full_name.clone());
                if !self.seen.insert(pair) {
                    return;
                }
                for field in rf {
                    let field_path = format!("{path}.{}", field.name);
                    let written = wf
                        .iter()
                        .find(|f| f.name == field.name)
                        .or_else(|| wf.iter().find(|f| field.aliases.contains(&f.name)));
                    match written {
                        Some(wfield) => self.check(&field.node, &wfield.node, &field_path),
                        None if field.has_default => {}
                        None => self.fail(
                            &field_path,
                            "reader field is not in the writer's schema and has no default"
                                .to_string(),
                        ),
                    }
                }
            }
            (
                Def::Enum {
                    symbols: rs,
                    default,
                },
                Def::Enum { symbols: ws, .. },
            ) => {
                let missing: Vec<&String> = ws.iter().filter(|s| !rs.contains(s)).collect();
                if !missing.is_empty() && default.is_none() {
                    self.fail(
                        path,
                        format!(
                            "writer symbols {} are not in reader enum {} and it has no default",
                            missing
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            short(&rn.full_name)
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
