//! Read models: what the API, the dashboard and `/metrics` see of the
//! engine's live state. Each takes the lock once and copies out.

use super::workers::queues_of;
use super::{Engine, QueueLimits, Stage};
use crate::metrics::QueueSnapshot;

/// A task waiting in a queue, as an operator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitingTask {
    /// Task id.
    pub id: String,
    /// Task name.
    pub task: String,
    /// Accepted at, microseconds since the epoch.
    pub submitted_at_us: u64,
    /// Deliveries so far.
    pub attempts: u32,
    /// Its priority.
    pub priority: u8,
    /// When it becomes deliverable, for a scheduled task.
    pub due_at_us: Option<u64>,
}

/// A point-in-time view of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// Client id.
    pub id: String,
    /// Tasks it may hold at once.
    pub capacity: u32,
    /// Tasks it holds now.
    pub in_flight: usize,
    /// Queues it consumes.
    pub queues: Vec<String>,
    /// Quarantined until then (microseconds since the epoch) for dropping
    /// its tasks again and again: it gets no new task before.
    pub quarantined_until_us: Option<u64>,
}

impl Engine {
    /// The requester of unfinished task or running workflow `id`: `None`
    /// when the engine holds neither, `Some(None)` when it has no requester
    /// identity.
    pub fn requester_of(&self, id: &str) -> Option<Option<String>> {
        let st = self.lock();
        if let Some(requester) = st.workflows.get(id).map(|f| f.requester()) {
            return Some(requester);
        }
        if let Some(e) = st.ids.get(id).and_then(|k| st.tasks.get(k)) {
            return Some(e.task.requester.clone());
        }
        let key = self.cold_key(&st, id)?;
        match self.inner.store.get(key) {
            Ok(Some(task)) => Some(task.requester),
            _ => None,
        }
    }

    /// Tasks delivered and not yet answered, over all queues.
    pub fn in_flight(&self) -> usize {
        self.lock().queues.values().map(|q| q.in_flight()).sum()
    }

    /// A view of every queue, sorted by name.
    pub fn queues(&self) -> Vec<QueueSnapshot> {
        let st = self.lock();
        let mut v: Vec<QueueSnapshot> = st
            .queues
            .iter()
            .map(|(name, q)| QueueSnapshot {
                name: name.clone(),
                waiting: q.waiting(),
                scheduled: q.scheduled(),
                in_flight: q.in_flight(),
                consumers: q.consumers.len(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The limits queue `name` runs with (a queue not yet created gets the
    /// ones it would be created with).
    pub fn limits(&self, name: &str) -> QueueLimits {
        self.lock()
            .queues
            .get(name)
            .map_or_else(|| self.inner.config.limits(name), |q| q.limits)
    }

    /// A view of every worker, sorted by id.
    pub fn workers(&self) -> Vec<WorkerSnapshot> {
        let st = self.lock();
        let mut v: Vec<WorkerSnapshot> = st
            .workers
            .iter()
            .map(|(id, w)| WorkerSnapshot {
                id: id.clone(),
                capacity: w.capacity,
                in_flight: w.in_flight.len(),
                queues: queues_of(&st, id),
                quarantined_until_us: (w.quarantined_until_us > 0)
                    .then_some(w.quarantined_until_us),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Whether task `id` is accepted and not yet final.
    pub fn is_unfinished(&self, id: &str) -> bool {
        let st = self.lock();
        st.ids.contains_key(id) || self.cold_key(&st, id).is_some()
    }

    /// Up to `limit` tasks waiting in `queue`: the deliverable ones in
    /// delivery order, then the scheduled ones in memory by due time (those
    /// due beyond the hot window are on disk and not listed). `None` when
    /// there is no such queue.
    pub fn waiting_tasks(&self, queue: &str, limit: usize) -> Option<Vec<WaitingTask>> {
        let st = self.lock();
        let q = st.queues.get(queue)?;
        let view = |key: super::TaskKey, due_at_us| {
            st.tasks.get(&key).map(|e: &super::Entry| WaitingTask {
                id: e.task.id.clone(),
                task: e.task.task.clone(),
                submitted_at_us: e.task.submitted_at_us,
                attempts: e.task.attempts,
                priority: e.task.priority,
                due_at_us,
            })
        };
        let mut out: Vec<WaitingTask> = q.ready_keys(limit).filter_map(|k| view(k, None)).collect();
        if out.len() < limit && q.scheduled() > 0 {
            let mut scheduled: Vec<WaitingTask> = st
                .tasks
                .iter()
                .filter(|(_, e)| e.task.queue == queue)
                .filter_map(|(k, e)| match e.stage {
                    Stage::Scheduled { due_us } => view(*k, Some(due_us)),
                    _ => None,
                })
                .collect();
            scheduled.sort_by_key(|t| t.due_at_us);
            out.extend(scheduled.into_iter().take(limit - out.len()));
        }
        Some(out)
    }
}
