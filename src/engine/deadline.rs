//! [`DeadlineIndex`]: every timed thing of the engine in one ordered index.
//!
//! Leases, expiry, countdown/ETA and retry backoff are all "at time T, look
//! at task K again". They share one `BTreeSet` keyed by time, and one timer
//! loop pops what is due ([`super::Engine::tick`]), as mini-redis's
//! `purge_expired_keys` does, instead of one scan per feature. The index
//! holds no decisions: the engine checks the task's stage when a deadline
//! pops, and removes a deadline whenever the stage that set it ends.

use std::collections::BTreeSet;

use super::task::TaskKey;

/// What falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Deadline {
    /// A worker's lease on a task runs out.
    Lease(TaskKey),
    /// A scheduled task (countdown, ETA, retry backoff) becomes deliverable.
    Due(TaskKey),
    /// A task that has not started expires.
    Expiry(TaskKey),
    /// A rate-limited queue may start its next task.
    Throttle(QueueId),
    /// A schedule's next firing is due.
    Schedule(ScheduleId),
}

/// A schedule's number in the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ScheduleId(pub(super) u32);

/// A queue's number in the engine, so that a deadline stays a small copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct QueueId(pub(super) u32);

/// Deadlines ordered by time, then by kind and task.
#[derive(Debug, Default)]
pub(super) struct DeadlineIndex {
    set: BTreeSet<(u64, Deadline)>,
}

impl DeadlineIndex {
    pub(super) fn insert(&mut self, at_us: u64, d: Deadline) {
        self.set.insert((at_us, d));
    }

    pub(super) fn remove(&mut self, at_us: u64, d: Deadline) {
        self.set.remove(&(at_us, d));
    }

    /// Removes and returns every deadline at or before `now_us`, earliest first.
    pub(super) fn pop_due(&mut self, now_us: u64) -> Vec<Deadline> {
        let mut due = Vec::new();
        while let Some(&(at, d)) = self.set.first() {
            if at > now_us {
                break;
            }
            self.set.pop_first();
            due.push(d);
        }
        due
    }

    /// The earliest deadline.
    pub(super) fn next_us(&self) -> Option<u64> {
        self.set.first().map(|(at, _)| *at)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_what_is_due_in_time_order() {
        let k = |n: u128| TaskKey(ulid::Ulid(n));
        let mut idx = DeadlineIndex::default();
        idx.insert(30, Deadline::Lease(k(1)));
        idx.insert(10, Deadline::Due(k(2)));
        idx.insert(20, Deadline::Expiry(k(3)));
        idx.remove(20, Deadline::Expiry(k(3)));
        assert_eq!(idx.next_us(), Some(10));
        assert_eq!(idx.pop_due(29), [Deadline::Due(k(2))]);
        assert_eq!(idx.pop_due(30), [Deadline::Lease(k(1))]);
        assert_eq!(idx.len(), 0);
    }
}
