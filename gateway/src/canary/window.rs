//! Per-arm figures over a sliding window: ten time slots, each with its
//! request and error counts, shadow comparisons and a latency histogram.
//! A summary ([`Figures`]) can be merged with other replicas' summaries,
//! so a verdict can be taken on the whole fleet's traffic.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

const SLOTS: u64 = 10;
/// Latencies are kept in microseconds, 1 µs to 10 min, 2 significant digits.
const MAX_LATENCY_US: u64 = 600_000_000;

struct Slot {
    epoch: u64,
    requests: u64,
    errors: u64,
    shadow_compared: u64,
    shadow_different: u64,
    latency: Option<Histogram<u64>>,
}

impl Slot {
    fn empty(epoch: u64) -> Self {
        Self {
            epoch,
            requests: 0,
            errors: 0,
            shadow_compared: 0,
            shadow_different: 0,
            latency: None,
        }
    }
}

/// One arm's sliding window.
pub struct Window {
    slot_ms: u64,
    slots: Vec<Slot>,
}

impl Window {
    /// A window of `length` (at least 10 ms).
    pub fn new(length: Duration) -> Self {
        let ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        Self {
            slot_ms: (ms / SLOTS).max(1),
            slots: (0..SLOTS).map(|_| Slot::empty(u64::MAX)).collect(),
        }
    }

    /// The window's length.
    pub fn length(&self) -> Duration {
        Duration::from_millis(self.slot_ms * SLOTS)
    }

    fn slot(&mut self, now_ms: u64) -> &mut Slot {
        let epoch = now_ms / self.slot_ms;
        let index = usize::try_from(epoch % SLOTS).unwrap_or(0);
        let slot = &mut self.slots[index];
        if slot.epoch != epoch {
            *slot = Slot::empty(epoch);
        }
        slot
    }

    /// Counts one request.
    pub fn record(&mut self, now_ms: u64, latency: Duration, error: bool) {
        let slot = self.slot(now_ms);
        slot.requests += 1;
        if error {
            slot.errors += 1;
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if slot.latency.is_none() {
            slot.latency = new_histogram().ok();
        }
        if let Some(hist) = &mut slot.latency {
            hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
        }
    }

    /// Counts one shadow comparison.
    pub fn record_shadow(&mut self, now_ms: u64, different: bool) {
        let slot = self.slot(now_ms);
        slot.shadow_compared += 1;
        if different {
            slot.shadow_different += 1;
        }
    }

    /// What the window holds at `now_ms`.
    pub fn figures(&self, now_ms: u64) -> Figures {
        let current = now_ms / self.slot_ms;
        let mut f = Figures::default();
        for slot in &self.slots {
            if slot.epoch == u64::MAX || slot.epoch + SLOTS <= current || slot.epoch > current {
                continue;
            }
            f.requests += slot.requests;
            f.errors += slot.errors;
            f.shadow_compared += slot.shadow_compared;
            f.shadow_different += slot.shadow_different;
            if let Some(h) = &slot.latency {
                for v in h.iter_recorded() {
                    *f.latency_us
                        .entry(h.highest_equivalent(v.value_iterated_to()))
                        .or_default() += v.count_at_value();
                }
            }
        }
        f
    }
}

fn new_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
}

/// One arm's figures over a window, mergeable across replicas.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    /// Requests served.
    pub requests: u64,
    /// Of which failed (5xx answer or failed publish).
    pub errors: u64,
    /// Shadow comparisons made.
    pub shadow_compared: u64,
    /// Of which differed.
    pub shadow_different: u64,
    /// Latency histogram: bucket value (µs) → count.
    pub latency_us: BTreeMap<u64, u64>,
}

impl Figures {
    /// Adds another replica's figures.
    pub fn merge(&mut self, other: &Figures) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.shadow_compared += other.shadow_compared;
        self.shadow_different += other.shadow_different;
        for (v, n) in &other.latency_us {
            *self.latency_us.entry(*v).or_default() += n;
        }
    }

    /// Failed share of requests (0 without requests).
    pub fn error_rate(&self) -> f64 {
        ratio(self.errors, self.requests)
    }

    /// Differing share of shadow comparisons.
    pub fn shadow_diff_rate(&self) -> f64 {
        ratio(self.shadow_different, self.shadow_compared)
    }

    /// Latency at quantile `q` (0-1), in milliseconds; `None` without data.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency_us.values().sum();
        if total == 0 {
            return None;
        }
        // The smallest value with at least q of the samples at or below it.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (v, n) in &self.latency_us {
            seen += n;
            if seen >= rank {
                return Some(*v as f64 / 1000.0);
            }
        }
        None
    }

    /// For people: counts, rates and percentiles.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round4(self.error_rate()),
            "p50_ms": self.latency_ms(0.50).map(round4),
            "p99_ms": self.latency_ms(0.99).map(round4),
            "shadow_compared": self.shadow_compared,
            "shadow_different": self.shadow_different,
        })
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_forgets_what_slid_out_and_keeps_the_rest() {
        let mut w = Window::new(Duration::from_secs(1));
        for i in 0..100 {
            w.record(0, Duration::from_millis(i + 1), i % 10 == 0);
        }
        let f = w.figures(500);
        assert_eq!((f.requests, f.errors), (100, 10));
        assert!((f.error_rate() - 0.1).abs() < 1e-9);
        let p99 = f.latency_ms(0.99).expect("data");
        assert!((98.0..=100.0).contains(&p99), "p99 {p99}");
        // One window later, everything recorded at t=0 is gone.
        assert_eq!(w.figures(1_000).requests, 0);
        w.record(1_000, Duration::from_millis(5), false);
        assert_eq!(w.figures(1_050).requests, 1);
    }

    #[test]
    fn figures_of_replicas_merge_into_fleet_figures() {
        let mut a = Window::new(Duration::from_secs(10));
        let mut b = Window::new(Duration::from_secs(10));
        for _ in 0..99 {
            a.record(0, Duration::from_millis(2), false);
        }
        b.record(0, Duration::from_millis(900), true);
        b.record_shadow(0, true);
        let mut fleet = a.figures(1);
        fleet.merge(&b.figures(1));
        assert_eq!((fleet.requests, fleet.errors), (100, 1));
        assert_eq!(fleet.shadow_diff_rate(), 1.0);
        let p99 = fleet.latency_ms(0.99).expect("data");
        assert!((1.9..=2.1).contains(&p99), "p99 {p99}");
        let max = fleet.latency_ms(1.0).expect("data");
        assert!((895.0..=905.0).contains(&max), "max {max}");
        // The summary survives the wire.
        let wire: Figures =
            serde_json::from_str(&serde_json::to_string(&fleet).expect("json")).expect("parse");
        assert_eq!(wire, fleet);
    }
}
