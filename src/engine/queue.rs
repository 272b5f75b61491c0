//! [`Queue`]: one queue's deliverable tasks by priority, and its counts.
//!
//! The counts (`waiting`, `scheduled`, `in_flight`) change only through the
//! methods here, which the engine's stage transitions call (see
//! `State::attach` and `State::detach` in the engine): no caller adjusts a
//! counter by hand, so revoke, purge, retry and expiry cannot drift apart.

use std::collections::VecDeque;

use super::config::QueueLimits;
use super::deadline::QueueId;
use super::task::{MAX_PRIORITY, TaskKey};

const LEVELS: usize = MAX_PRIORITY as usize + 1;

/// One queue.
#[derive(Debug)]
pub(super) struct Queue {
    pub(super) id: QueueId,
    pub(super) limits: QueueLimits,
    /// With a rate limit: the earliest time of the next start.
    pub(super) next_start_us: u64,
    /// The throttle deadline set, if one is.
    pub(super) throttle_at_us: Option<u64>,
    /// Deliverable tasks, one FIFO per priority level.
    ready: [VecDeque<TaskKey>; LEVELS],
    waiting: usize,
    scheduled: usize,
    /// Scheduled tasks due beyond the engine's hot window: on disk only.
    cold: usize,
    in_flight: usize,
    /// Client ids of the workers consuming this queue.
    pub(super) consumers: Vec<String>,
    /// Rotates the starting point of the least-loaded search, so equally free
    /// workers take turns.
    pub(super) next_consumer: usize,
}

impl Queue {
    pub(super) fn new(id: QueueId, limits: QueueLimits) -> Queue {
        Queue {
            id,
            limits,
            next_start_us: 0,
            throttle_at_us: None,
            ready: Default::default(),
            waiting: 0,
            scheduled: 0,
            cold: 0,
            in_flight: 0,
            consumers: Vec::new(),
            next_consumer: 0,
        }
    }

    /// Makes `key` deliverable: behind its priority's tasks, or (a delivery
    /// that was lost) in front of them.
    pub(super) fn push_ready(&mut self, key: TaskKey, priority: u8, front: bool) {
        let level = &mut self.ready[usize::from(priority.min(MAX_PRIORITY))];
        if front {
            level.push_front(key);
        } else {
            level.push_back(key);
        }
        self.waiting += 1;
    }

    /// The next task to deliver: the oldest of the highest priority.
    pub(super) fn pop_ready(&mut self) -> Option<TaskKey> {
        let key = self.ready.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.waiting -= 1;
        Some(key)
    }

    /// Takes `key` out of the deliverable tasks. Linear in its level: used by
    /// revoke, purge and late answers, never on the delivery path.
    pub(super) fn remove_ready(&mut self, key: TaskKey, priority: u8) -> bool {
        let level = &mut self.ready[usize::from(priority.min(MAX_PRIORITY))];
        match level.iter().position(|k| *k == key) {
            Some(pos) => {
                level.remove(pos);
                self.waiting -= 1;
                true
            }
            None => false,
        }
    }

    /// Deliverable tasks in delivery order, up to `limit`.
    pub(super) fn ready_keys(&self, limit: usize) -> impl Iterator<Item = TaskKey> + '_ {
        self.ready.iter().rev().flatten().copied().take(limit)
    }

    pub(super) fn scheduled_added(&mut self) {
        self.scheduled += 1;
    }

    pub(super) fn scheduled_removed(&mut self) {
        self.scheduled = self.scheduled.saturating_sub(1);
    }

    pub(super) fn cold_added(&mut self) {
        self.cold += 1;
    }

    pub(super) fn cold_removed(&mut self) {
        self.cold = self.cold.saturating_sub(1);
    }

    /// Scheduled tasks kept on disk only, until their time comes near.
    pub(super) fn cold(&self) -> usize {
        self.cold
    }

    pub(super) fn lease_started(&mut self) {
        self.in_flight += 1;
    }

    pub(super) fn lease_ended(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Tasks deliverable now.
    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Tasks waiting for their countdown, ETA or retry backoff, in memory
    /// and on disk.
    pub(super) fn scheduled(&self) -> usize {
        self.scheduled + self.cold
    }

    /// Tasks with workers.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Every task the queue holds.
    pub(super) fn len(&self) -> usize {
        self.waiting + self.scheduled + self.cold + self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::RetryPolicy;

    fn queue() -> Queue {
        Queue::new(
            QueueId(0),
            QueueLimits {
                max_length: 10,
                lease_timeout_ms: 1000,
                max_per_worker: 0,
                max_in_flight: 0,
                rate_limit: None,
                retry: RetryPolicy {
                    max_attempts: 1,
                    backoff_ms: 0,
                    backoff_max_ms: 0,
                    jitter: false,
                },
            },
        )
    }

    #[test]
    fn higher_priority_first_fifo_within_one_and_counts_follow() {
        let k = |n: u128| TaskKey(ulid::Ulid(n));
        let mut q = queue();
        q.push_ready(k(1), 0, false);
        q.push_ready(k(2), 5, false);
        q.push_ready(k(3), 5, false);
        q.push_ready(k(4), 9, false);
        q.push_ready(k(5), 0, true);
        assert_eq!(q.waiting(), 5);
        assert!(q.remove_ready(k(3), 5));
        assert!(!q.remove_ready(k(3), 5));
        let order: Vec<TaskKey> = std::iter::from_fn(|| q.pop_ready()).collect();
        assert_eq!(order, [k(4), k(2), k(5), k(1)]);
        assert_eq!(q.waiting(), 0);
    }
}
