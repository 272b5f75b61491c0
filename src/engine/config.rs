//! [`EngineConfig`]: what the engine is told, and nothing else of the settings.
//!
//! `app` builds it from the configuration tree; the engine never sees
//! `Settings`, so it can be constructed in a test from plain values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The engine's own configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Largest task payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Create a queue on its first task or exact worker subscription.
    pub auto_create_queues: bool,
    /// Finished task ids remembered, so a resubmission is not run twice.
    pub dedupe_window: usize,
    /// Dead letters kept per queue; the oldest go first.
    pub max_dead_letters: usize,
    /// Limits of every queue not declared in `queues`.
    pub default_limits: QueueLimits,
    /// Declared queues and their limits.
    pub queues: BTreeMap<String, QueueLimits>,
    /// Bounds of one workflow.
    pub workflow_limits: super::WorkflowLimits,
    /// When a worker that keeps dropping its tasks is quarantined.
    pub flapping: FlapPolicy,
}

/// A worker is *flapping* when it disconnects holding tasks `threshold`
/// times within `window_ms`. Then it gets no task for `quarantine_ms`,
/// doubled at each further strike up to `quarantine_max_ms` (a quiet window
/// starts over), and the deliveries it loses while flapping are counted as
/// lost, not as attempts: one bad worker cannot use up everybody's attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapPolicy {
    /// Disconnects holding tasks within the window that make a worker
    /// flapping; 0 turns the quarantine off.
    pub threshold: u32,
    /// The window, in milliseconds.
    pub window_ms: u64,
    /// The first quarantine, in milliseconds.
    pub quarantine_ms: u64,
    /// The longest quarantine, in milliseconds.
    pub quarantine_max_ms: u64,
}

impl FlapPolicy {
    /// No quarantine.
    pub const OFF: FlapPolicy = FlapPolicy {
        threshold: 0,
        window_ms: 0,
        quarantine_ms: 0,
        quarantine_max_ms: 0,
    };
}

impl EngineConfig {
    /// The limits of queue `name`.
    pub fn limits(&self, name: &str) -> QueueLimits {
        self.queues
            .get(name)
            .copied()
            .unwrap_or(self.default_limits)
    }
}

/// Limits of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most tasks held (scheduled + waiting + in flight).
    pub max_length: usize,
    /// How long a worker may hold a task without answering or reporting
    /// progress, in milliseconds.
    pub lease_timeout_ms: u64,
    /// Most unfinished tasks of this queue per worker (0 = no cap).
    pub max_per_worker: u32,
    /// Most running tasks of this queue across all workers (0 = no cap).
    pub max_in_flight: u32,
    /// Most task starts per period across all workers, if limited.
    pub rate_limit: Option<RateLimit>,
    /// Attempts and backoff of the queue's tasks, unless a task overrides it.
    pub retry: RetryPolicy,
}

/// `N` task starts per `period_ms`, evenly spaced: a start is allowed
/// `period_ms / N` after the previous one (a token bucket of capacity one,
/// as Celery's `rate_limit` is, but counted for the whole queue rather than
/// per worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Starts per period.
    pub count: u32,
    /// The period, in milliseconds.
    pub period_ms: u64,
}

impl RateLimit {
    /// Parses `N/s`, `N/m` or `N/h` (N from 1).
    pub fn parse(s: &str) -> Option<RateLimit> {
        let (n, unit) = s.trim().split_once('/')?;
        let count: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
        let period_ms = match unit.trim() {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        Some(RateLimit { count, period_ms })
    }

    /// Microseconds between two starts.
    pub fn interval_us(&self) -> u64 {
        self.period_ms * 1000 / u64::from(self.count)
    }
}

/// How often and how late a task is tried again.
///
/// Every delivery is an attempt. After attempt `n` failed with a retry asked
/// for, the next one is delayed by `d = min(backoff_max_ms, backoff_ms *
/// 2^(n-1))`, or by a uniform time in `[d/2, d]` with `jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Deliveries before the task fails for good (1 to 100).
    pub max_attempts: u32,
    /// Delay after the first failed attempt, in milliseconds.
    pub backoff_ms: u64,
    /// Longest delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// Spread each delay uniformly over its upper half.
    pub jitter: bool,
}

/// Most attempts a task may be given.
pub const MAX_ATTEMPTS: u32 = 100;

/// Longest backoff or countdown the engine accepts: one year, in milliseconds.
pub const MAX_DELAY_MS: u64 = 31_536_000_000;

impl RetryPolicy {
    /// The delay before the attempt that follows failed attempt `attempt`
    /// (from 1), with `unit` a uniform random number in `[0, 1)` for the jitter.
    pub fn delay_ms(&self, attempt: u32, unit: f64) -> u64 {
        let exp = attempt.saturating_sub(1).min(63);
        let d = self
            .backoff_ms
            .saturating_mul(1u64.checked_shl(exp).unwrap_or(u64::MAX))
            .min(self.backoff_max_ms);
        if self.jitter {
            let half = d / 2;
            half + ((d - half) as f64 * unit.clamp(0.0, 1.0)) as u64
        } else {
            d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_jitter_stays_in_the_upper_half() {
        let p = RetryPolicy {
            max_attempts: 10,
            backoff_ms: 1000,
            backoff_max_ms: 5000,
            jitter: false,
        };
        let delays: Vec<u64> = (1..=5).map(|n| p.delay_ms(n, 0.5)).collect();
        assert_eq!(delays, [1000, 2000, 4000, 5000, 5000]);
        let j = RetryPolicy { jitter: true, ..p };
        assert_eq!(j.delay_ms(2, 0.0), 1000);
        assert_eq!(j.delay_ms(2, 0.999_999), 1999);
        assert_eq!(j.delay_ms(100, 0.0), 2500);
        let huge = RetryPolicy {
            backoff_max_ms: u64::MAX,
            ..p
        };
        assert_eq!(huge.delay_ms(80, 0.0), u64::MAX);
    }

    #[test]
    fn rate_limits_parse_per_second_minute_and_hour() {
        let r = |count, period_ms| Some(RateLimit { count, period_ms });
        assert_eq!(RateLimit::parse("10/s"), r(10, 1000));
        assert_eq!(RateLimit::parse(" 3 / m "), r(3, 60_000));
        assert_eq!(RateLimit::parse("7200/h"), r(7200, 3_600_000));
        assert_eq!(RateLimit::parse("10/s").unwrap().interval_us(), 100_000);
        for bad in ["", "10", "0/s", "-1/s", "10/d", "x/s", "10/"] {
            assert_eq!(RateLimit::parse(bad), None, "{bad}");
        }
    }
}
