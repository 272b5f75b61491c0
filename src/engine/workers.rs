//! Workers: who consumes which queue, with how much capacity, and the choice
//! of the worker a task goes to.
//!
//! A worker is a client with a shared subscription whose filter matches
//! `tasks/<queue>`. Connections are told apart by a [`ConnectionId`], so the
//! late disconnect of an old connection cannot unregister a new one that
//! took its client id.

use std::collections::{HashMap, HashSet, VecDeque};

use swarmq_worker::wire;

use super::queue::Queue;
use super::task::TaskKey;
use super::{Engine, State, TaskEvent};

/// Identifies one connection of a client.
pub type ConnectionId = u64;

#[derive(Debug)]
pub(super) struct Worker {
    pub(super) conn: ConnectionId,
    pub(super) capacity: u32,
    /// Shared-subscription filters (without `$share/<group>/`) that select queues.
    pub(super) filters: Vec<String>,
    pub(super) in_flight: HashSet<TaskKey>,
    pub(super) per_queue: HashMap<String, u32>,
    /// Gets no task before this time (microseconds; 0: not quarantined).
    pub(super) quarantined_until_us: u64,
}

/// How long a quarantined client is remembered after its quarantine.
const FLAP_MEMORY_US: u64 = 3_600_000_000;

/// A client's recent task-dropping disconnects and its quarantine.
#[derive(Debug, Default)]
pub(super) struct Flap {
    /// When it disconnected holding tasks, within the window.
    drops: VecDeque<u64>,
    /// Quarantines so far, since the last quiet window.
    strikes: u32,
    /// Quarantined until then (microseconds).
    pub(super) until_us: u64,
    /// The quarantine has ended and its queues were fed again.
    released: bool,
}

impl Engine {
    /// Registers `worker` as a consumer of the queues `filter` selects (the
    /// part of a `$share/<group>/<filter>` subscription after the group), and
    /// gives it tasks up to its capacity.
    pub fn worker_subscribed(&self, worker: &str, conn: ConnectionId, capacity: u32, filter: &str) {
        let mut st = self.lock();
        // A new connection under the same client id took over one that is
        // still registered (a worker that gave up on a dead link reconnects
        // before the broker saw the old link die): the tasks sent on the old
        // one went with it. Its later disconnect no longer matches, so
        // release them now, or they would sit on the new connection's
        // capacity until their leases ran out.
        if let Some(old) = st.workers.get(worker).map(|w| w.conn)
            && old != conn
        {
            drop(st);
            self.worker_gone(worker, old);
            st = self.lock();
        }
        let mut fx = Vec::new();
        let capacity = capacity.max(1);
        // A quarantine outlives the connection that earned it.
        let now = self.now_us();
        let quarantined_until_us = st
            .flaps
            .get(worker)
            .map(|f| f.until_us)
            .filter(|t| *t > now)
            .unwrap_or(0);
        let w = st
            .workers
            .entry(worker.to_string())
            .or_insert_with(|| Worker {
                conn,
                capacity,
                filters: Vec::new(),
                in_flight: HashSet::new(),
                per_queue: HashMap::new(),
                quarantined_until_us: 0,
            });
        w.conn = conn;
        w.capacity = capacity;
        if !w.filters.iter().any(|f| f == filter) {
            w.filters.push(filter.to_string());
        }
        w.quarantined_until_us = quarantined_until_us;
        // An exact queue filter creates the queue, so a worker can wait on a
        // queue nobody has submitted to yet.
        if let Some(name) = filter.strip_prefix(wire::TASKS_PREFIX)
            && wire::is_valid_queue_name(name)
            && (self.inner.config.auto_create_queues || st.queues.contains_key(name))
        {
            self.ensure_queue(&mut st, name);
        }
        let matching: Vec<String> = st
            .queues
            .keys()
            .filter(|q| filter_matches(filter, &wire::task_topic(q)))
            .cloned()
            .collect();
        for q in &matching {
            if let Some(queue) = st.queues.get_mut(q)
                && !queue.consumers.iter().any(|c| c == worker)
            {
                queue.consumers.push(worker.to_string());
            }
        }
        tracing::info!(worker, capacity, filter, queues = ?matching, "worker subscribed");
        self.emit_worker_seen(&st, worker);
        for q in &matching {
            self.pump(&mut st, q, &mut fx);
        }
        self.commit(st, fx);
    }

    /// Removes one subscription of `worker`. Tasks it holds stay leased to it:
    /// it may still answer them.
    pub fn worker_unsubscribed(&self, worker: &str, filter: &str) {
        let mut st = self.lock();
        let Some(w) = st.workers.get_mut(worker) else {
            return;
        };
        w.filters.retain(|f| f != filter);
        let filters = w.filters.clone();
        for (name, queue) in st.queues.iter_mut() {
            let topic = wire::task_topic(name);
            if !filters.iter().any(|f| filter_matches(f, &topic)) {
                queue.consumers.retain(|c| c != worker);
            }
        }
        tracing::info!(worker, filter, "worker unsubscribed");
        self.emit_worker_seen(&st, worker);
    }

    /// Forgets connection `conn` of `worker` and gives every task it held to
    /// the other workers, at the front of their queues.
    pub fn worker_gone(&self, worker: &str, conn: ConnectionId) {
        let mut st = self.lock();
        match st.workers.get(worker) {
            Some(w) if w.conn == conn => {}
            _ => return,
        }
        let Some(w) = st.workers.remove(worker) else {
            return;
        };
        for queue in st.queues.values_mut() {
            queue.consumers.retain(|c| c != worker);
        }
        let now = self.now_us();
        self.emit(|| TaskEvent::WorkerLeft {
            id: worker.to_string(),
            at_us: now,
        });
        let mut held: Vec<TaskKey> = w.in_flight.into_iter().collect();
        // Newest first, each pushed to the front, keeps submission order.
        held.sort_unstable_by(|a, b| b.cmp(a));
        if !held.is_empty() {
            tracing::warn!(
                worker,
                tasks = held.len(),
                "worker left holding tasks; redelivering"
            );
        }
        let flapping = !held.is_empty() && self.note_drop(&mut st, worker, now);
        let mut fx = Vec::new();
        let mut touched = HashSet::new();
        for key in held {
            if let Some(q) =
                self.delivery_lost(&mut st, key, "worker disconnected", !flapping, &mut fx)
            {
                touched.insert(q);
            }
        }
        for q in touched {
            self.pump(&mut st, &q, &mut fx);
        }
        self.commit(st, fx);
    }

    /// Records that `worker` disconnected holding tasks; returns whether it
    /// is flapping (its tasks are then not charged an attempt), and
    /// quarantines it when this drop makes it so.
    fn note_drop(&self, st: &mut State, worker: &str, now: u64) -> bool {
        let policy = self.inner.config.flapping;
        if policy.threshold == 0 {
            return false;
        }
        let window_us = policy.window_ms.saturating_mul(1000);
        let flap = st.flaps.entry(worker.to_string()).or_default();
        while flap
            .drops
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > window_us)
        {
            flap.drops.pop_front();
        }
        if flap.drops.is_empty() && flap.until_us + window_us < now {
            // A quiet window: it starts over.
            flap.strikes = 0;
        }
        flap.drops.push_back(now);
        if flap.drops.len() < policy.threshold as usize {
            return false;
        }
        let ms = policy
            .quarantine_ms
            .saturating_mul(1u64 << flap.strikes.min(20))
            .min(policy.quarantine_max_ms);
        flap.strikes += 1;
        flap.until_us = now.saturating_add(ms.saturating_mul(1000));
        flap.released = false;
        flap.drops.clear();
        tracing::warn!(
            worker,
            quarantine_ms = ms,
            drops = policy.threshold,
            window_ms = policy.window_ms,
            "worker keeps dropping its tasks; quarantined (no new tasks)"
        );
        self.inner.metrics.worker_quarantined();
        true
    }

    /// Ends the quarantines that are over; returns the queues of the
    /// workers released (to feed them) and the next end still to come.
    pub(super) fn release_quarantines(st: &mut State, now: u64) -> (Vec<String>, Option<u64>) {
        let mut released = Vec::new();
        let mut next = None;
        let ended: Vec<String> = st
            .flaps
            .iter_mut()
            .filter_map(|(id, f)| {
                if f.released {
                    return None;
                }
                if f.until_us > now {
                    next = Some(next.map_or(f.until_us, |n: u64| n.min(f.until_us)));
                    return None;
                }
                f.released = true;
                Some(id.clone())
            })
            .collect();
        for id in ended {
            if let Some(w) = st.workers.get_mut(&id) {
                w.quarantined_until_us = 0;
                tracing::info!(worker = %id, "quarantine over");
                released.extend(queues_of(st, &id));
            }
        }
        // Forget clients quiet for an hour: their next quarantine starts over.
        st.flaps
            .retain(|_, f| !f.drops.is_empty() || now < f.until_us.saturating_add(FLAP_MEMORY_US));
        (released, next)
    }

    pub(super) fn emit_worker_seen(&self, st: &State, worker: &str) {
        let Some(w) = st.workers.get(worker) else {
            return;
        };
        let now = self.now_us();
        self.emit(|| TaskEvent::WorkerSeen {
            id: worker.to_string(),
            capacity: w.capacity,
            queues: queues_of(st, worker),
            at_us: now,
        });
    }

    /// Creates queue `name` if it does not exist, with the workers whose
    /// filters match it as consumers.
    pub(super) fn ensure_queue(&self, st: &mut State, name: &str) {
        if st.queues.contains_key(name) {
            return;
        }
        let topic = wire::task_topic(name);
        let consumers: Vec<String> = st
            .workers
            .iter()
            .filter(|(_, w)| w.filters.iter().any(|f| filter_matches(f, &topic)))
            .map(|(id, _)| id.clone())
            .collect();
        tracing::info!(queue = name, consumers = consumers.len(), "queue created");
        st.add_queue(name, self.inner.config.limits(name)).consumers = consumers;
    }
}

/// The queues `worker` consumes, sorted.
pub(super) fn queues_of(st: &State, worker: &str) -> Vec<String> {
    let mut queues: Vec<String> = st
        .queues
        .iter()
        .filter(|(_, q)| q.consumers.iter().any(|c| c == worker))
        .map(|(n, _)| n.clone())
        .collect();
    queues.sort();
    queues
}

/// The consumer of `queue` with the most free slots, if any has one. Ties go
/// to the first found from a rotating start, so equal workers take turns.
pub(super) fn pick_worker(
    queue: &mut Queue,
    queue_name: &str,
    workers: &HashMap<String, Worker>,
    now: u64,
) -> Option<String> {
    let n = queue.consumers.len();
    if n == 0 {
        return None;
    }
    let start = queue.next_consumer % n;
    let mut best: Option<(usize, u32)> = None;
    for i in 0..n {
        let idx = (start + i) % n;
        let Some(w) = workers.get(&queue.consumers[idx]) else {
            continue;
        };
        if w.quarantined_until_us > now {
            continue;
        }
        let held = w.in_flight.len() as u32;
        let mut free = w.capacity.saturating_sub(held);
        if queue.limits.max_per_worker > 0 {
            let in_queue = w.per_queue.get(queue_name).copied().unwrap_or(0);
            free = free.min(queue.limits.max_per_worker.saturating_sub(in_queue));
        }
        if free > 0 && best.is_none_or(|(_, f)| free > f) {
            best = Some((idx, free));
        }
    }
    let (idx, _) = best?;
    queue.next_consumer = idx + 1;
    Some(queue.consumers[idx].clone())
}

/// MQTT topic filter matching (`+` one level, `#` the rest).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}
