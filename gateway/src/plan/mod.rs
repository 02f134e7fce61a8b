//! The migration plan as code: `migration-plan/NN-name.toml`, one file per
//! phase, each a list of route changes (overlays on `routes.toml`) and the
//! preconditions that must hold before it applies.

pub mod apply;
pub mod checks;
pub mod cli;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{Config, Mode};

/// One phase file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PhaseFile {
    /// Human name; the file name (without `NN-` and `.toml`) when absent.
    pub phase: Option<String>,
    /// The RFC month it implements.
    pub month: Option<u32>,
    /// What the phase does, for operators.
    #[serde(default)]
    pub description: String,
    /// A phase that must be applied first (its id or name).
    pub requires: Option<String>,
    /// Route changes.
    #[serde(default)]
    pub routes: Vec<RouteChange>,
    /// Preconditions checked before the phase applies.
    #[serde(default)]
    pub checks: Vec<Check>,
}

/// One route's change in a phase.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteChange {
    /// Route name in `routes.toml`.
    pub name: String,
    /// The mode the phase moves it to.
    pub mode: Mode,
    /// The mode a rollback returns it to.
    pub from: Mode,
    /// Go to `mode` through a canary: the route keeps `from` and gets this
    /// `canary` table (its `mode` is the change's), which steps the new
    /// mode up by itself. Keys as in `routes.toml`'s `canary`.
    pub canary: Option<toml::Table>,
}

impl RouteChange {
    /// The canary this change installs, checked.
    pub fn canary_config(&self) -> Option<Result<crate::config::CanaryConfig, String>> {
        let mut table = self.canary.clone()?;
        table.insert(
            "mode".into(),
            toml::Value::String(self.mode.as_str().into()),
        );
        Some(
            toml::Value::Table(table)
                .try_into::<crate::config::CanaryConfig>()
                .map_err(|e| e.to_string()),
        )
    }
}

/// A route as it stands: its mode and, when it has one, its canary.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteNow {
    /// Effective mode (the base arm's, on a canaried route).
    pub mode: Mode,
    /// The canary's mode and, read from a running gateway, its status.
    pub canary: Option<(Mode, Option<String>)>,
}

impl RouteNow {
    /// A route without a canary.
    pub fn plain(mode: Mode) -> Self {
        Self { mode, canary: None }
    }

    /// Whether the route serves `target`, or is on its way there through a
    /// canary that was not rolled back or aborted.
    pub fn reaches(&self, target: Mode) -> bool {
        self.mode == target || self.canary_toward(target)
    }

    /// Whether an active canary leads to `target`.
    pub fn canary_toward(&self, target: Mode) -> bool {
        self.canary.as_ref().is_some_and(|(m, status)| {
            *m == target && !matches!(status.as_deref(), Some("rolled-back" | "aborted"))
        })
    }

    /// `passthrough`, or `passthrough, canary → async (running)`.
    pub fn describe(&self) -> String {
        match &self.canary {
            None => self.mode.as_str().to_string(),
            Some((m, status)) => format!(
                "{}, canary → {}{}",
                self.mode.as_str(),
                m.as_str(),
                status
                    .as_ref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Every route as it stands, by name.
pub type Routes = BTreeMap<String, RouteNow>;

/// A precondition.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// The topic exists (with `partitions` partitions, when given).
    pub topic: Option<String>,
    /// Expected partition count of `topic`.
    pub partitions: Option<i32>,
    /// The record's newest schema is registered (with a registry) or valid
    /// and compatible with its history (without one).
    pub schema: Option<String>,
    /// This consumer group exists and has members.
    pub consumer_group: Option<String>,
}

impl Check {
    /// `topic`, `schema` or `consumer-group`.
    pub fn kind(&self) -> &'static str {
        if self.consumer_group.is_some() {
            "consumer-group"
        } else if self.schema.is_some() {
            "schema"
        } else {
            "topic"
        }
    }
}

/// A loaded phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// File stem, e.g. `02-user-registration`: the id commands take.
    pub id: String,
    /// Name (`phase` or the id without its number).
    pub name: String,
    /// Parsed file.
    pub file: PhaseFile,
    /// Where it came from.
    pub path: PathBuf,
}

impl Phase {
    /// Whether `s` names this phase (by id or name).
    pub fn is(&self, s: &str) -> bool {
        self.id == s || self.name == s
    }
}

/// Every phase, in file-name order.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The phases.
    pub phases: Vec<Phase>,
}

impl Plan {
    /// Loads `dir/*.toml` and validates them against `config`, reporting
    /// every problem with its file (and route).
    pub fn load(dir: &Path, config: &Config) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect(),
            Err(e) => return Err(vec![format!("{}: {e}", dir.display())]),
        };
        files.sort();
        let mut phases = Vec::new();
        for path in files {
            let id = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let shown = format!("migration-plan/{id}.toml");
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| toml::from_str::<PhaseFile>(&t).map_err(|e| e.to_string()));
            match parsed {
                Ok(file) => {
                    let name = file.phase.clone().unwrap_or_else(|| {
                        id.split_once('-')
                            .map_or(id.clone(), |(_, n)| n.to_string())
                    });
                    phases.push(Phase {
                        id,
                        name,
                        file,
                        path,
                    });
                }
                Err(e) => problems.push(format!("{shown}: {e}")),
            }
        }
        let plan = Plan { phases };
        problems.extend(plan.validate(config));
        if problems.is_empty() {
            Ok(plan)
        } else {
            Err(problems)
        }
    }

    fn validate(&self, config: &Config) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (i, phase) in self.phases.iter().enumerate() {
            let shown = format!("migration-plan/{}.toml", phase.id);
            if let Some(other) = seen.insert(&phase.name, &phase.id) {
                problems.push(format!(
                    "{shown}: phase name {:?} is also used by {other}",
                    phase.name
                ));
            }
            if let Some(req) = &phase.file.requires {
                match self.phases.iter().position(|p| p.is(req)) {
                    None => problems.push(format!("{shown}: requires unknown phase {req:?}")),
                    Some(j) if j >= i => problems.push(format!(
                        "{shown}: requires {req:?}, which does not come before it"
                    )),
                    Some(_) => {}
                }
            }
            let mut routes = BTreeMap::new();
            for change in &phase.file.routes {
                let at = format!("{shown}: route {}", change.name);
                if routes.insert(change.name.as_str(), ()).is_some() {
                    problems.push(format!("{at}: listed twice"));
                }
                let Some(route) = config.routes.iter().find(|r| r.name == change.name) else {
                    problems.push(format!("{at}: not in routes.toml"));
                    continue;
                };
                if change.mode.publishes()
                    && (route.topic.is_none() || route.schema.is_none() || route.key.is_none())
                {
                    problems.push(format!(
                        "{at}: mode {} needs topic, schema and key in routes.toml",
                        change.mode.as_str()
                    ));
                }
                if change.mode == change.from {
                    problems.push(format!(
                        "{at}: mode and from are both {}",
                        change.mode.as_str()
                    ));
                }
                match change.canary_config() {
                    None => {}
                    Some(Err(e)) => problems.push(format!("{at}: canary: {e}")),
                    Some(Ok(c)) => problems.extend(
                        crate::canary::check(&c)
                            .into_iter()
                            .map(|p| format!("{at}: {p}")),
                    ),
                }
            }
            for (n, check) in phase.file.checks.iter().enumerate() {
                let kinds = [
                    check.topic.is_some() && check.consumer_group.is_none(),
                    check.schema.is_some(),
                    check.consumer_group.is_some(),
                ];
                if kinds.iter().filter(|k| **k).count() != 1 {
                    problems.push(format!(
                        "{shown}: check {}: name exactly one of topic, schema or consumer_group",
                        n + 1
                    ));
                }
                if check.partitions.is_some() && check.topic.is_none() {
                    problems.push(format!(
                        "{shown}: check {}: partitions needs a topic",
                        n + 1
                    ));
                }
            }
        }
        problems
    }

    /// The phase with this id or name.
    pub fn get(&self, s: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.is(s))
    }

    /// Phases after `phase`.
    pub fn after<'a>(&'a self, phase: &Phase) -> impl Iterator<Item = &'a Phase> {
        let id = phase.id.clone();
        self.phases.iter().skip_while(move |p| p.id != id).skip(1)
    }
}

/// Where a phase stands against the effective modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Every route change is in place.
    Applied,
    /// Some are.
    Partial,
    /// None are.
    NotApplied,
    /// The phase changes no route (preconditions only).
    ChecksOnly,
}

impl Standing {
    /// For output.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Applied => "applied",
            Standing::Partial => "PARTIALLY applied",
            Standing::NotApplied => "not applied",
            Standing::ChecksOnly => "checks only",
        }
    }
}

/// How `phase` stands given each route's effective mode and canary: a
/// change is in place when its route serves the new mode or an active
/// canary leads there.
pub fn standing(phase: &Phase, routes: &Routes) -> Standing {
    if phase.file.routes.is_empty() {
        return Standing::ChecksOnly;
    }
    let done = phase
        .file
        .routes
        .iter()
        .filter(|c| routes.get(&c.name).is_some_and(|r| r.reaches(c.mode)))
        .count();
    match done {
        0 => Standing::NotApplied,
        n if n == phase.file.routes.len() => Standing::Applied,
        _ => Standing::Partial,
    }
}

#[cfg(test)]
mod tests;
