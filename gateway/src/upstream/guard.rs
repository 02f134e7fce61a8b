//! Per-upstream protection: a concurrency limit (503 at once instead of a
//! queue behind a slow service) and a circuit breaker (after consecutive
//! failures, calls are refused for a while, then one trial call decides
//! whether the service is back).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::UpstreamConfig;

/// The concurrency limit and breaker of one upstream.
#[derive(Debug)]
pub struct Guard {
    permits: Arc<Semaphore>,
    failures_to_open: u32,
    open_for: Duration,
    breaker: Mutex<Breaker>,
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    /// Open until then; `None` = closed.
    open_until: Option<Instant>,
    /// When the trial call of a half-open breaker started.
    trial_since: Option<Instant>,
}

/// Held for the duration of one call.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
}

impl Guard {
    /// From the upstream's config.
    pub fn new(config: &UpstreamConfig) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(config.max_concurrency.max(1))),
            failures_to_open: config.breaker_failures,
            open_for: Duration::from_millis(config.breaker_open_ms),
            breaker: Mutex::new(Breaker::default()),
        }
    }

    fn breaker(&self) -> MutexGuard<'_, Breaker> {
        // The state is a few counters: a panic elsewhere cannot corrupt it.
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one call, or says why not (`circuit_open`,
    /// `concurrency_limit`).
    pub fn admit(&self) -> Result<Permit, &'static str> {
        let mut trial = false;
        if self.failures_to_open > 0 {
            let now = Instant::now();
            let mut b = self.breaker();
            if let Some(until) = b.open_until {
                if now < until {
                    return Err("circuit_open");
                }
                // Half-open: one trial call at a time. A trial whose caller
                // went away without an outcome is replaced after a while.
                if b.trial_since
                    .is_some_and(|since| now.duration_since(since) < self.open_for)
                {
                    return Err("circuit_open");
                }
                b.trial_since = Some(now);
                trial = true;
            }
        }
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(slot) => Ok(Permit { _slot: slot }),
            Err(_) => {
                if trial {
                    self.breaker().trial_since = None;
                }
                Err("concurrency_limit")
            }
        }
    }

    /// Records a call's outcome: `Some(true)` healthy, `Some(false)` a
    /// failure of the service, `None` neither (the caller's fault).
    pub fn record(&self, healthy: Option<bool>) {
        let Some(healthy) = healthy else { return };
        if self.failures_to_open == 0 {
            return;
        }
        let mut b = self.breaker();
        if healthy {
            *b = Breaker::default();
            return;
        }
        b.consecutive_failures = b.consecutive_failures.saturating_add(1);
        let trial_failed = b.trial_since.take().is_some();
        if trial_failed || b.consecutive_failures >= self.failures_to_open {
            if b.open_until.is_none() || trial_failed {
                tracing::warn!(
                    failures = b.consecutive_failures,
                    open_ms = u64::try_from(self.open_for.as_millis()).unwrap_or(u64::MAX),
                    "upstream circuit breaker opened"
                );
            }
            b.open_until = Some(Instant::now() + self.open_for);
        }
    }

    /// Whether the breaker refuses calls now.
    pub fn is_open(&self) -> bool {
        self.breaker()
            .open_until
            .is_some_and(|until| Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(limit: usize, failures: u32, open_ms: u64) -> Guard {
        Guard::new(&UpstreamConfig {
            url: "http://127.0.0.1:1".into(),
            timeout_ms: 1000,
            max_concurrency: limit,
            breaker_failures: failures,
            breaker_open_ms: open_ms,
        })
    }

    #[test]
    fn the_limit_refuses_past_max_concurrency_and_frees_on_drop() {
        let g = guard(2, 0, 0);
        let a = g.admit().expect("first");
        let _b = g.admit().expect("second");
        assert_eq!(g.admit().err(), Some("concurrency_limit"));
        drop(a);
        assert!(g.admit().is_ok());
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_then_one_trial_closes_it() {
        let g = guard(10, 3, 50);
        for _ in 0..2 {
            g.record(Some(false));
        }
        assert!(g.admit().is_ok(), "two failures do not open it");
        g.record(Some(true));
        for _ in 0..3 {
            g.record(Some(false));
        }
        assert_eq!(g.admit().err(), Some("circuit_open"));
        assert!(g.is_open());
        std::thread::sleep(Duration::from_millis(60));
        let trial = g.admit().expect("half-open: one trial");
        assert_eq!(g.admit().err(), Some("circuit_open"), "only one trial");
        drop(trial);
        g.record(Some(true));
        assert!(g.admit().is_ok(), "closed again");
    }

    #[test]
    fn a_failed_trial_opens_it_again_and_callers_faults_do_not_count() {
        let g = guard(10, 1, 50);
        g.record(None);
        assert!(g.admit().is_ok());
        g.record(Some(false));
        assert_eq!(g.admit().err(), Some("circuit_open"));
        std::thread::sleep(Duration::from_millis(60));
        let _trial = g.admit().expect("trial");
        g.record(Some(false));
        assert_eq!(g.admit().err(), Some("circuit_open"), "open again");
    }
}
