//! Per-identity limits (connections, publish rate) and the growing delay that
//! slows down repeated authentication failures from one address.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Failures from one address before each further attempt is delayed.
const FREE_FAILURES: u32 = 3;

/// The first delay, doubled with each further failure.
const FIRST_DELAY: Duration = Duration::from_millis(100);

/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// An address whose last failure is this old starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Authentication failures by remote address.
#[derive(Debug, Default)]
pub struct FailureTracker {
    by_addr: DashMap<IpAddr, (u32, Instant)>,
}

impl FailureTracker {
    /// How long an attempt from `addr` waits before it is checked.
    pub fn delay(&self, addr: IpAddr) -> Duration {
        let Some(entry) = self.by_addr.get(&addr) else {
            return Duration::ZERO;
        };
        let (failures, last) = *entry;
        if last.elapsed() > FORGET_AFTER || failures < FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (failures - FREE_FAILURES).min(16);
        FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
    }

    /// Notes a failure from `addr`.
    pub fn failed(&self, addr: IpAddr) {
        let now = Instant::now();
        let mut entry = self.by_addr.entry(addr).or_insert((0, now));
        if entry.1.elapsed() > FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        drop(entry);
        if self.by_addr.len() > 100_000 {
            // Bounded: a spray from many addresses cannot grow this forever.
            self.by_addr
                .retain(|_, (_, last)| last.elapsed() < FORGET_AFTER);
        }
    }

    /// Forgets `addr` after a success.
    pub fn succeeded(&self, addr: IpAddr) {
        self.by_addr.remove(&addr);
    }
}

/// A token bucket: `rate` per second, bursts up to one second's worth.
#[derive(Debug)]
pub struct RateBucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl RateBucket {
    /// A full bucket.
    pub fn new(rate: f64) -> RateBucket {
        RateBucket {
            rate,
            tokens: rate.max(1.0),
            at: Instant::now(),
        }
    }

    /// Takes one token; false when none is left.
    pub fn take(&mut self, rate: f64) -> bool {
        let now = Instant::now();
        self.rate = rate;
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_grow_the_delay_and_success_clears_it() {
        let t = FailureTracker::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.delay(a), Duration::ZERO);
            t.failed(a);
        }
        assert_eq!(t.delay(a), FIRST_DELAY);
        t.failed(a);
        assert_eq!(t.delay(a), FIRST_DELAY * 2);
        for _ in 0..40 {
            t.failed(a);
        }
        assert_eq!(t.delay(a), MAX_DELAY);
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(t.delay(other), Duration::ZERO);
        t.succeeded(a);
        assert_eq!(t.delay(a), Duration::ZERO);
    }

    #[test]
    fn a_bucket_allows_a_burst_then_the_rate() {
        let mut b = RateBucket::new(5.0);
        let taken = (0..20).filter(|_| b.take(5.0)).count();
        assert_eq!(taken, 5);
    }
}
