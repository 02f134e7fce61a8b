//! `schemas/compatibility.toml`: the compatibility level for each record's
//! history (and registry subject), reviewed together with the schemas.
//!
//! ```toml
//! default = "BACKWARD"
//! [subjects]
//! "com.shop.OrderCreated" = "FULL_TRANSITIVE"     # a record...
//! "orders.order-created-value" = "FULL"           # ...or a registry subject
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::compat::Level;

/// The file name inside `schemas.dir`.
pub const FILE: &str = "compatibility.toml";

/// Levels, global and per subject.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Levels {
    /// Level for every subject not listed (BACKWARD when absent).
    #[serde(default)]
    pub default: Level,
    /// Per record full name or registry subject.
    #[serde(default)]
    pub subjects: BTreeMap<String, Level>,
}

impl Levels {
    /// Reads `<dir>/compatibility.toml`; defaults when the file is absent.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The level for the first of `names` that is listed, else the default.
    pub fn for_names(&self, names: &[&str]) -> Level {
        names
            .iter()
            .find_map(|n| self.subjects.get(*n).copied())
            .unwrap_or(self.default)
    }
}
