//! A canary's state: where it stands, since when, and every decision with
//! the figures behind it. States are versioned; the control topic carries
//! them to every replica, and the newest wins everywhere.

use serde::{Deserialize, Serialize};

use crate::config::Mode;

/// Decisions a state remembers.
const DECISIONS_KEPT: usize = 50;

/// Where a canary stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Serving its step, stepping up after each healthy interval.
    Running,
    /// Holding its step until resumed; automatic rollback stays armed.
    Paused,
    /// At its last step; automatic rollback stays armed.
    Completed,
    /// Failed a check: 0% until a person resumes it.
    RolledBack,
    /// Stopped by a person: 0% until resumed.
    Aborted,
}

impl Status {
    /// For output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Completed => "completed",
            Status::RolledBack => "rolled-back",
            Status::Aborted => "aborted",
        }
    }

    /// Between two states of the same version, the safer one wins.
    fn safety(self) -> u8 {
        match self {
            Status::RolledBack | Status::Aborted => 3,
            Status::Paused => 2,
            Status::Completed => 1,
            Status::Running => 0,
        }
    }

    /// Whether the canary arm takes traffic.
    pub fn serving(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Completed)
    }
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The canary appeared in the routes file.
    Start,
    /// A healthy interval passed: next step.
    StepUp,
    /// A healthy interval passed at the last step.
    Complete,
    /// A check failed: back to 0%.
    Rollback,
    /// A person: hold the current step.
    Pause,
    /// A person: go on (from 0% after a rollback or abort, at the first step).
    Resume,
    /// A person: back to 0% and stay there.
    Abort,
    /// A person: next step now.
    Promote,
}

impl Action {
    /// For output, the admin API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::StepUp => "step-up",
            Action::Complete => "complete",
            Action::Rollback => "rollback",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
            Action::Promote => "promote",
        }
    }

    /// The actions a person may take, by name.
    pub fn by_person(name: &str) -> Option<Self> {
        match name {
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "abort" => Some(Action::Abort),
            "promote" => Some(Action::Promote),
            _ => None,
        }
    }
}

/// One decision and what it was based on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Unique, time-ordered id (also the audit change's id).
    pub id: String,
    /// When (RFC 3339).
    pub at: String,
    /// The replica (automatic decisions) or the token's name (a person).
    pub by: String,
    /// What.
    pub action: Action,
    /// Canary share before, percent.
    pub from_percent: f64,
    /// Canary share after, percent.
    pub to_percent: f64,
    /// Why, in words.
    pub reason: String,
    /// The figures behind it (fleet-wide, per arm), when it was automatic.
    pub figures: Option<serde_json::Value>,
}

/// A canary's shared state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryState {
    /// The route.
    pub route: String,
    /// The canary arm's mode (a new mode means a new canary).
    pub mode: Mode,
    /// The release label (a new one means a new canary).
    #[serde(default)]
    pub release: String,
    /// When this canary started (Unix ms).
    #[serde(default)]
    pub started_ms: i64,
    /// Bumped by a start and by resuming from 0%: within one epoch a
    /// rollback or abort is final, whatever version a concurrent decision
    /// of another replica carries.
    #[serde(default)]
    pub epoch: u64,
    /// (mode, release) of the canaries this one replaced, newest last: a
    /// replica whose file still has one of them leaves this one alone.
    #[serde(default)]
    pub retired: Vec<(Mode, String)>,
    /// Bumped by every decision.
    pub version: u64,
    /// Where it stands.
    pub status: Status,
    /// Index into the route's `steps`.
    pub step: usize,
    /// When the current step or status began (Unix ms).
    pub since_ms: i64,
    /// Decisions, oldest first (the most recent ones are kept).
    pub decisions: Vec<Decision>,
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl CanaryState {
    /// The share of requests the canary arm takes, percent.
    pub fn percent(&self, steps: &[f64]) -> f64 {
        if !self.status.serving() {
            return 0.0;
        }
        steps
            .get(self.step.min(steps.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    }

    /// Whether `self` supersedes `other`: a later epoch wins; within an
    /// epoch a rollback or abort beats any decision that is not one (a
    /// replica that had not seen the rollback yet cannot undo it); then the
    /// higher version, the safer status, the later decision.
    pub fn supersedes(&self, other: &CanaryState) -> bool {
        if self.epoch != other.epoch {
            return self.epoch > other.epoch;
        }
        let stopped = |s: &CanaryState| matches!(s.status, Status::RolledBack | Status::Aborted);
        if stopped(self) != stopped(other) {
            return stopped(self);
        }
        let rank = |s: &CanaryState| {
            (
                s.version,
                s.status.safety(),
                s.decisions.last().map(|d| d.id.clone()).unwrap_or_default(),
            )
        };
        rank(self) > rank(other)
    }

    /// Whether this state belongs to the canary `(mode, release)`.
    pub fn is(&self, mode: Mode, release: &str) -> bool {
        self.mode == mode && self.release == release
    }

    /// Whether `(mode, release)` is a canary this one replaced.
    pub fn replaced(&self, mode: Mode, release: &str) -> bool {
        self.retired.iter().any(|(m, r)| *m == mode && r == release)
    }

    /// A new canary replacing `self` (another mode or release).
    pub fn restart(&self, (mode, release): (Mode, &str), by: &str, steps: &[f64]) -> Self {
        let mut s = Self::start(&self.route, (mode, release), self.version + 1, by, steps);
        s.epoch = self.epoch + 1;
        s.retired = self.retired.clone();
        s.retired.push((self.mode, self.release.clone()));
        if s.retired.len() > DECISIONS_KEPT {
            s.retired.remove(0);
        }
        s
    }

    /// A new canary at its first step.
    pub fn start(
        route: &str,
        (mode, release): (Mode, &str),
        version: u64,
        by: &str,
        steps: &[f64],
    ) -> Self {
        let mut s = Self {
            route: route.to_string(),
            mode,
            release: release.to_string(),
            started_ms: now_ms(),
            epoch: 1,
            retired: Vec::new(),
            version,
            status: Status::Running,
            step: 0,
            since_ms: now_ms(),
            decisions: Vec::new(),
        };
        s.push(Decision {
            id: uuid::Uuid::now_v7().to_string(),
            at: jiff::Timestamp::now().to_string(),
            by: by.to_string(),
            action: Action::Start,
            from_percent: 0.0,
            to_percent: s.percent(steps),
            reason: format!("canary to {} configured", mode.as_str()),
            figures: None,
        });
        s
    }

    fn push(&mut self, d: Decision) {
        self.decisions.push(d);
        if self.decisions.len() > DECISIONS_KEPT {
            let extra = self.decisions.len() - DECISIONS_KEPT;
            self.decisions.drain(..extra);
        }
    }

    /// The state after `action`, or why it does not apply now.
    pub fn next(
        &self,
        action: Action,
        by: &str,
        reason: &str,
        figures: Option<serde_json::Value>,
        steps: &[f64],
    ) -> Result<CanaryState, String> {
        let last = steps.len().saturating_sub(1);
        let mut n = self.clone();
        match (action, self.status) {
            (Action::Start, _) => return Err("a canary starts only once".into()),
            (Action::Rollback, s) if s.serving() => n.status = Status::RolledBack,
            (Action::StepUp | Action::Complete, Status::Running) => {
                if self.step >= last {
                    n.status = Status::Completed;
                } else {
                    n.step += 1;
                }
            }
            (Action::Promote, Status::Running | Status::Paused) => {
                if self.step >= last {
                    n.status = Status::Completed;
                } else {
                    n.step += 1;
                    n.status = Status::Running;
                }
            }
            (Action::Pause, Status::Running) => n.status = Status::Paused,
            (Action::Resume, Status::Paused) => n.status = Status::Running,
            (Action::Resume, Status::RolledBack | Status::Aborted) => {
                n.status = Status::Running;
                n.step = 0;
                n.epoch += 1;
            }
            (Action::Abort, s) if s != Status::Aborted => n.status = Status::Aborted,
            (a, s) => {
                return Err(format!(
                    "cannot {} a canary that is {}",
                    a.as_str(),
                    s.as_str()
                ))
            }
        }
        let action = if action == Action::StepUp && n.status == Status::Completed {
            Action::Complete
        } else {
            action
        };
        n.version = self.version + 1;
        n.since_ms = now_ms();
        n.push(Decision {
            id: uuid::Uuid::now_v7().to_string(),
            at: jiff::Timestamp::now().to_string(),
            by: by.to_string(),
            action,
            from_percent: self.percent(steps),
            to_percent: n.percent(steps),
            reason: reason.to_string(),
            figures,
        });
        Ok(n)
    }

    /// `5% (running)`, for the audit trail.
    pub fn describe(&self, steps: &[f64]) -> String {
        format!(
            "{} canary {}% ({})",
            self.mode.as_str(),
            self.percent(steps),
            self.status.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[f64] = &[1.0, 5.0, 25.0, 50.0, 100.0];

    fn started() -> CanaryState {
        CanaryState::start("checkout", (Mode::Async, ""), 1, "r1", STEPS)
    }

    #[test]
    fn steps_up_to_completion_then_rolls_back_to_zero() {
        let mut s = started();
        assert_eq!(s.percent(STEPS), 1.0);
        for want in [5.0, 25.0, 50.0, 100.0] {
            s = s
                .next(Action::StepUp, "r1", "healthy", None, STEPS)
                .expect("step");
            assert_eq!(s.percent(STEPS), want);
            assert_eq!(s.status, Status::Running);
        }
        s = s
            .next(Action::StepUp, "r1", "healthy", None, STEPS)
            .expect("done");
        assert_eq!(s.status, Status::Completed);
        assert_eq!(s.decisions.last().map(|d| d.action), Some(Action::Complete));
        assert_eq!(s.percent(STEPS), 100.0);
        let r = s
            .next(Action::Rollback, "r2", "errors", None, STEPS)
            .expect("rollback");
        assert_eq!((r.status, r.percent(STEPS)), (Status::RolledBack, 0.0));
        // It stays there: no step-up until a person resumes it.
        assert!(r.next(Action::StepUp, "r1", "", None, STEPS).is_err());
        let again = r
            .next(Action::Resume, "alice", "fixed", None, STEPS)
            .expect("resume");
        assert_eq!((again.status, again.percent(STEPS)), (Status::Running, 1.0));
        assert_eq!(again.version, 8);
    }

    #[test]
    fn a_rollback_beats_a_concurrent_step_up_of_the_same_version() {
        let s = started();
        let up = s
            .next(Action::StepUp, "r1", "healthy", None, STEPS)
            .expect("up");
        let back = s
            .next(Action::Rollback, "r2", "errors", None, STEPS)
            .expect("back");
        assert!(back.supersedes(&up));
        assert!(!up.supersedes(&back));
        // A replica that had not seen the rollback cannot undo it by
        // deciding more on its branch.
        let later = up
            .next(Action::Promote, "bob", "", None, STEPS)
            .expect("promote");
        assert!(later.version > back.version);
        assert!(back.supersedes(&later));
        // A person resuming it does.
        let resumed = back
            .next(Action::Resume, "alice", "", None, STEPS)
            .expect("resume");
        assert!(resumed.supersedes(&later) && resumed.supersedes(&back));
        // A new release replaces the old one, which cannot come back.
        let new = resumed.restart((Mode::Async, "r2"), "r1", STEPS);
        assert!(new.supersedes(&resumed));
        assert!(new.replaced(Mode::Async, "") && !new.replaced(Mode::Async, "r2"));
    }

    #[test]
    fn people_cannot_take_actions_that_make_no_sense() {
        let s = started();
        let paused = s.next(Action::Pause, "a", "", None, STEPS).expect("pause");
        assert!(paused.next(Action::Pause, "a", "", None, STEPS).is_err());
        assert!(paused.next(Action::StepUp, "r", "", None, STEPS).is_err());
        let promoted = paused
            .next(Action::Promote, "a", "", None, STEPS)
            .expect("promote");
        assert_eq!(
            (promoted.status, promoted.percent(STEPS)),
            (Status::Running, 5.0)
        );
        let aborted = promoted
            .next(Action::Abort, "a", "", None, STEPS)
            .expect("abort");
        assert!(aborted.next(Action::Promote, "a", "", None, STEPS).is_err());
        assert!(aborted.next(Action::Abort, "a", "", None, STEPS).is_err());
    }
}
