//! The task engine: queues, workers, leases, timers and results. Every task
//! decision is made here, from plain values; nothing here speaks MQTT, HTTP
//! or knows the history.
//!
//! | file | owns |
//! |---|---|
//! | [`config`] | [`EngineConfig`], queue limits, the retry policy and its backoff |
//! | [`clock`] | the [`Clock`] passed in (tests drive a manual one) |
//! | [`task`] | the accepted task record ([`StoredTask`]) and its key |
//! | [`store`] | the [`TaskStore`] port and its durability rules |
//! | `request` | reading a submission's payload against the contract |
//! | `submit` | accepting a task: dedupe, limits, store, then queue or schedule |
//! | `queue` | one queue's deliverable tasks by priority, and its counts |
//! | `deadline` | the one index of everything timed: leases, expiry, countdown/ETA, backoff |
//! | `workers` | consumers, capacity, choosing a worker |
//! | `dispatch` | delivering, answers and progress, lost deliveries, retries, the timer |
//! | `finish` | making a task final, and the `on_final` seam results leave by |
//! | `actions` | operator actions: revoke, purge, run again, dead letters |
//! | [`schedules`] | schedules (`every`, `cron`): deterministic firings, catch-up after downtime |
//! | `views` | read models for the API and metrics |
//! | [`effects`] | the [`Effect`]s to publish and the [`Outbox`] port |
//! | [`events`] | the [`TaskEvent`]s observers (the history) receive |
//!
//! A task's stage is `Scheduled` (waiting for its time), `Ready` (in its
//! queue) or `Leased` (with a worker). Every change of stage goes through
//! `State::detach` and `State::attach`, which keep the queue's counts, the
//! workers' slots and the deadline index in step.
//!
//! State sits behind one `std::sync::Mutex`. Every operation is a short,
//! non-blocking critical section (no `.await` inside), cheaper than a
//! channel hop to an actor on the publish path; the only I/O under the lock
//! is the store's journal append, which keeps "stored" and "visible to
//! workers" in one order. Effects and events are pushed, in decision order,
//! to non-blocking ports before the lock is released.
//!
//! Guarantees kept here (see docs/PROTOCOL.md):
//! - a task is stored before it is acknowledged, and removed only once final;
//! - a worker never holds more unfinished tasks than its capacity;
//! - each task has at most one lease; the first answer wins, later ones are ignored;
//! - a task whose worker vanished or whose lease expired goes back to the
//!   front of its queue; a retry asked for waits out its backoff; either way
//!   until its attempts are used up.

mod actions;
pub mod clock;
pub mod config;
mod deadline;
mod dispatch;
pub mod effects;
pub mod events;
mod finish;
mod queue;
mod request;
pub mod schedules;
pub mod store;
mod submit;
pub mod task;
mod views;
mod workers;
pub mod workflow;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

pub use actions::{ActionError, RevokeOutcome};
pub use clock::{Clock, SystemClock, now_us};
pub use config::{EngineConfig, FlapPolicy, QueueLimits, RateLimit, RetryPolicy};
pub use dispatch::{Answered, HolderCheck, REQUESTER_PROPERTY};
pub use effects::{Effect, MemoryOutbox, Outbox};
pub use events::{EventObserver, TaskEvent};
pub use request::{
    MAX_TASK_ID_LEN, ReplyCheck, Submission, is_sys_topic, is_valid_reply_topic, parse_rfc3339_us,
};
pub use schedules::{
    ScheduleError, ScheduleRecord, ScheduleSource, ScheduleSpec, ScheduleView, When, firing_id,
};
pub use store::{DeadLetter, DeadPage, StoreError, TaskStore};
pub use store::{StoredWorkflow, WorkflowMeta};
pub use submit::SubmitOutcome;
pub use task::{ReplyTo, StoredTask, TaskKey};
pub use views::{WaitingTask, WorkerSnapshot};
pub use workers::{ConnectionId, filter_matches};
pub use workflow::{LISTED_CHILDREN, NodeView, WorkflowLimits, WorkflowView};

use deadline::{Deadline, DeadlineIndex};
use queue::Queue;
use workers::Worker;

use crate::metrics::Metrics;

/// Scheduled tasks due further ahead than this stay in the store only (a
/// count per queue, and their id when the requester chose it); the timer
/// loads them from the store's due-time index as they come within it. A
/// million tasks scheduled for tomorrow cost disk, not memory.
pub const HOT_WINDOW_US: u64 = 60_000_000;

/// Most cold tasks loaded by one tick; the next tick goes on.
const COLD_BATCH: usize = 10_000;

/// Longest the timer loop sleeps without looking at the clock again.
pub const MAX_TIMER_SLEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// Errors while starting the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store could not be read.
    #[error("cannot recover tasks from the queue store")]
    Recover(#[from] StoreError),
}

/// Where a task stands in the engine.
#[derive(Debug)]
enum Stage {
    /// Waiting for its countdown, ETA or retry backoff.
    Scheduled { due_us: u64 },
    /// In its queue, deliverable.
    Ready,
    /// With a worker.
    Leased(Lease),
    /// In none of them, between a `detach` and the next `attach` (or its
    /// removal); a second `detach` finds nothing to undo.
    Detached,
}

#[derive(Debug)]
struct Lease {
    worker: String,
    delivered_at_us: u64,
    deadline_us: u64,
}

#[derive(Debug)]
struct Entry {
    task: StoredTask,
    stage: Stage,
}

struct State {
    queues: HashMap<String, Queue>,
    /// Queue names by [`deadline::QueueId`].
    queue_names: Vec<String>,
    schedules: std::collections::BTreeMap<String, schedules::Running>,
    /// Schedule names by [`deadline::ScheduleId`] (ids are never reused).
    schedule_names: Vec<String>,
    tasks: HashMap<TaskKey, Entry>,
    ids: HashMap<String, TaskKey>,
    recent_done: VecDeque<String>,
    recent_done_set: HashSet<String>,
    workers: HashMap<String, Worker>,
    deadlines: DeadlineIndex,
    keys: ulid::Generator,
    accepting: bool,
    /// The time the timer loop sleeps until; a deadline set earlier wakes it.
    timer_armed_us: u64,
    wake_timer: bool,
    /// xorshift state for the backoff jitter.
    rng: u64,
    /// Scheduled tasks due after this are cold (on disk only); the timer
    /// moves it forward as it loads them.
    cold_until_us: u64,
    /// Requester-chosen ids of cold tasks (a generated id is its key).
    cold_ids: HashMap<String, TaskKey>,
    /// Workflows running, by id.
    workflows: HashMap<String, workflow::engine::Flow>,
    /// Workflows being written to the store, not yet running: a second
    /// submission with the same id is a duplicate.
    workflows_storing: HashSet<String>,
    /// Workflows that ended under the lock; their member results are
    /// removed from the store once it is released.
    ended_workflows: Vec<String>,
    /// Workflow members to admit, a batch at a time, once the operation
    /// that started them releases the lock (see [`Engine::commit`]).
    pending_members: VecDeque<StoredTask>,
    /// Recent task-dropping disconnects and quarantines, by client id; kept
    /// across the worker's reconnects.
    flaps: HashMap<String, workers::Flap>,
}

struct Inner {
    state: Mutex<State>,
    store: Box<dyn TaskStore>,
    config: EngineConfig,
    clock: Box<dyn Clock>,
    metrics: Arc<Metrics>,
    outbox: Box<dyn Outbox>,
    events: Option<Box<dyn EventObserver>>,
    timer: tokio::sync::Notify,
}

/// Handle to the task engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A handle that does not keep the engine (and its store) alive.
#[derive(Clone)]
pub struct WeakEngine {
    inner: std::sync::Weak<Inner>,
}

impl WeakEngine {
    /// The engine, if it still exists.
    pub fn upgrade(&self) -> Option<Engine> {
        self.inner.upgrade().map(|inner| Engine { inner })
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// What the engine is built from.
pub struct EngineParts {
    /// Durable storage.
    pub store: Box<dyn TaskStore>,
    /// The engine's configuration.
    pub config: EngineConfig,
    /// Its time.
    pub clock: Box<dyn Clock>,
    /// Counters it keeps.
    pub metrics: Arc<Metrics>,
    /// Where its effects go.
    pub outbox: Box<dyn Outbox>,
    /// Who observes its events, if anyone.
    pub events: Option<Box<dyn EventObserver>>,
}

impl Engine {
    /// Creates the engine and recovers every stored task: in submission
    /// order into its queue, or as scheduled when its time has not come.
    /// Tasks that were with workers when the broker stopped wait again.
    ///
    /// # Errors
    ///
    /// Fails when the store cannot be read.
    pub fn recover(parts: EngineParts) -> Result<Engine, EngineError> {
        let EngineParts {
            store,
            config,
            clock,
            metrics,
            outbox,
            events,
        } = parts;
        let mut seed = [0u8; 8];
        // Jitter needs spread, not secrecy: a fixed seed is a fine fallback.
        let _ = getrandom::fill(&mut seed);
        let mut st = State {
            queues: HashMap::new(),
            queue_names: Vec::new(),
            schedules: Default::default(),
            schedule_names: Vec::new(),
            tasks: HashMap::new(),
            ids: HashMap::new(),
            recent_done: VecDeque::new(),
            recent_done_set: HashSet::new(),
            workers: HashMap::new(),
            deadlines: DeadlineIndex::default(),
            keys: ulid::Generator::new(),
            accepting: true,
            timer_armed_us: 0,
            wake_timer: false,
            rng: u64::from_le_bytes(seed) | 1,
            cold_until_us: 0,
            cold_ids: HashMap::new(),
            workflows: HashMap::new(),
            workflows_storing: HashSet::new(),
            ended_workflows: Vec::new(),
            pending_members: VecDeque::new(),
            flaps: HashMap::new(),
        };
        for (name, limits) in &config.queues {
            st.add_queue(name, *limits);
        }
        let now = clock.now_us();
        st.cold_until_us = now + HOT_WINDOW_US;
        let (mut count, mut cold) = (0usize, 0usize);
        store.scan(&mut |key, task| {
            count += 1;
            if !st.queues.contains_key(&task.queue) {
                st.add_queue(&task.queue, config.limits(&task.queue));
            }
            if task.not_before_us.is_some_and(|t| t > st.cold_until_us) {
                // Its due-time entry was written with it; the timer loads it.
                cold += 1;
                st.note_cold(key, &task);
                return;
            }
            let stage = match task.not_before_us {
                Some(due_us) if due_us > now => Stage::Scheduled { due_us },
                _ => Stage::Ready,
            };
            st.insert_task(key, task, stage);
        })?;
        if count > 0 {
            tracing::info!(
                tasks = count,
                on_disk_until_due = cold,
                "recovered tasks from the queue store"
            );
        }
        let engine = Engine {
            inner: Arc::new(Inner {
                state: Mutex::new(st),
                store,
                config,
                clock,
                metrics,
                outbox,
                events,
                timer: tokio::sync::Notify::new(),
            }),
        };
        engine.recover_workflows()?;
        Ok(engine)
    }

    /// A weak handle.
    pub fn downgrade(&self) -> WeakEngine {
        WeakEngine {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// The metrics this engine counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    fn now_us(&self) -> u64 {
        self.inner.clock.now_us()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // parking_lot's mutex does not poison: a panic while holding it
        // would be a bug in this module, and the state is still
        // structurally valid (every mutation is a few plain collection
        // operations), so the broker keeps serving.
        self.inner.state.lock()
    }

    fn emit(&self, event: impl FnOnce() -> TaskEvent) {
        if let Some(observer) = &self.inner.events {
            observer.observe(event());
        }
    }

    /// Ends an operation: hands its effects to the outbox in decision order,
    /// admits the workflow members it started (a batch per hold of the
    /// lock, handing the lock over fairly in between, so that a group of
    /// 100,000 members does not stall other clients), wakes the timer when
    /// a deadline earlier than its sleep was set, releases the lock, then
    /// removes the member results of workflows that ended.
    fn commit<'a>(&'a self, mut st: MutexGuard<'a, State>, mut effects: Vec<Effect>) {
        let mut wake = false;
        let mut ended = Vec::new();
        loop {
            if !effects.is_empty() {
                self.inner.outbox.send(std::mem::take(&mut effects));
            }
            wake |= std::mem::take(&mut st.wake_timer);
            ended.append(&mut st.ended_workflows);
            if st.pending_members.is_empty() {
                drop(st);
                break;
            }
            // An ordinary unlock would let this thread take the lock
            // straight back, and others would wait for every batch.
            MutexGuard::unlock_fair(st);
            st = self.lock();
            effects = self.admit_pending_members(&mut st);
        }
        if wake {
            self.inner.timer.notify_one();
        }
        if !ended.is_empty() {
            // Off the lock, and off the async threads when there are any: a
            // chord of 100,000 members has as many results to delete.
            let engine = self.clone();
            let remove = move || {
                for id in ended {
                    if let Err(e) = engine.inner.store.remove_member_results(&id) {
                        tracing::error!(workflow_id = %id, error = %e, "cannot remove a finished workflow's member results");
                    }
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(remove)),
                Err(_) => remove(),
            }
        }
    }

    /// A uniform number in `[0, 1)`, for the backoff jitter.
    fn unit_random(st: &mut State) -> f64 {
        // xorshift64: enough to spread retries, cheap under the lock.
        let mut x = st.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        st.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl State {
    /// Takes `task` into memory, in `stage`.
    fn insert_task(&mut self, key: TaskKey, task: StoredTask, stage: Stage) {
        self.ids.insert(task.id.clone(), key);
        self.tasks.insert(
            key,
            Entry {
                task,
                stage: Stage::Detached,
            },
        );
        self.attach(key, stage, false);
    }

    /// Counts `task` as cold: on disk only until its time comes near.
    fn note_cold(&mut self, key: TaskKey, task: &StoredTask) {
        if let Some(q) = self.queues.get_mut(&task.queue) {
            q.cold_added();
        }
        if task.id != key.0.to_string() {
            self.cold_ids.insert(task.id.clone(), key);
        }
    }

    /// Forgets that `task` was cold (it was loaded, revoked or purged).
    fn forget_cold(&mut self, task: &StoredTask) {
        if let Some(q) = self.queues.get_mut(&task.queue) {
            q.cold_removed();
        }
        self.cold_ids.remove(&task.id);
    }

    /// Remembers `id` as finished, for deduplication, within `window` ids.
    fn remember_done(&mut self, id: &str, window: usize) {
        self.recent_done_set.insert(id.to_string());
        self.recent_done.push_back(id.to_string());
        while self.recent_done.len() > window {
            if let Some(old) = self.recent_done.pop_front() {
                self.recent_done_set.remove(&old);
            }
        }
    }

    /// Whether any queue holds cold tasks.
    fn has_cold(&self) -> bool {
        self.queues.values().any(|q| q.cold() > 0)
    }

    /// Creates queue `name`; it must not exist yet.
    fn add_queue(&mut self, name: &str, limits: QueueLimits) -> &mut Queue {
        let id = deadline::QueueId(self.queue_names.len() as u32);
        self.queue_names.push(name.to_string());
        self.queues
            .entry(name.to_string())
            .or_insert_with(|| Queue::new(id, limits))
    }

    /// Takes task `key` out of its stage: out of its queue, the schedule or
    /// its worker's slots, with its deadlines. Returns the lease it had.
    fn detach(&mut self, key: TaskKey) -> Option<Lease> {
        let entry = self.tasks.get_mut(&key)?;
        let stage = std::mem::replace(&mut entry.stage, Stage::Detached);
        let task = &entry.task;
        let queue = self.queues.get_mut(&task.queue);
        match stage {
            Stage::Scheduled { due_us } => {
                self.deadlines.remove(due_us, Deadline::Due(key));
                if let Some(t) = task.expires_at_us {
                    self.deadlines.remove(t, Deadline::Expiry(key));
                }
                if let Some(q) = queue {
                    q.scheduled_removed();
                }
                None
            }
            Stage::Ready => {
                if let Some(t) = task.expires_at_us {
                    self.deadlines.remove(t, Deadline::Expiry(key));
                }
                if let Some(q) = queue {
                    q.remove_ready(key, task.priority);
                }
                None
            }
            Stage::Leased(lease) => {
                self.deadlines
                    .remove(lease.deadline_us, Deadline::Lease(key));
                if let Some(q) = queue {
                    q.lease_ended();
                }
                if let Some(w) = self.workers.get_mut(&lease.worker) {
                    w.in_flight.remove(&key);
                    if let Some(n) = w.per_queue.get_mut(&task.queue) {
                        *n = n.saturating_sub(1);
                    }
                }
                Some(lease)
            }
            Stage::Detached => None,
        }
    }

    /// Takes the next deliverable task of `queue` out of it, with its
    /// expiry deadline: the task is then detached, to be leased or finished.
    fn pop_ready(&mut self, queue: &str) -> Option<TaskKey> {
        let key = self.queues.get_mut(queue)?.pop_ready()?;
        if let Some(entry) = self.tasks.get_mut(&key) {
            entry.stage = Stage::Detached;
            if let Some(t) = entry.task.expires_at_us {
                self.deadlines.remove(t, Deadline::Expiry(key));
            }
        }
        Some(key)
    }

    /// Puts task `key`, detached, into `stage`; a `Ready` task goes to the
    /// front of its priority when `front` (a lost delivery).
    fn attach(&mut self, key: TaskKey, stage: Stage, front: bool) {
        let Some(entry) = self.tasks.get_mut(&key) else {
            return;
        };
        let task = &entry.task;
        let Some(queue) = self.queues.get_mut(&task.queue) else {
            return;
        };
        let mut earliest = None;
        match &stage {
            Stage::Scheduled { due_us } => {
                queue.scheduled_added();
                self.deadlines.insert(*due_us, Deadline::Due(key));
                earliest = Some(*due_us);
            }
            Stage::Ready => queue.push_ready(key, task.priority, front),
            Stage::Detached => {}
            Stage::Leased(lease) => {
                queue.lease_started();
                self.deadlines
                    .insert(lease.deadline_us, Deadline::Lease(key));
                earliest = Some(lease.deadline_us);
                if let Some(w) = self.workers.get_mut(&lease.worker) {
                    w.in_flight.insert(key);
                    *w.per_queue.entry(task.queue.clone()).or_default() += 1;
                }
            }
        }
        if matches!(stage, Stage::Ready | Stage::Scheduled { .. })
            && let Some(t) = task.expires_at_us
        {
            self.deadlines.insert(t, Deadline::Expiry(key));
            earliest = Some(earliest.map_or(t, |e: u64| e.min(t)));
        }
        if earliest.is_some_and(|t| t < self.timer_armed_us) {
            self.wake_timer = true;
        }
        entry.stage = stage;
    }

    /// The retry policy of `task`: its own, or its queue's.
    fn policy(&self, task: &StoredTask) -> RetryPolicy {
        task.retry.unwrap_or_else(|| {
            self.queues
                .get(&task.queue)
                .map_or(RetryPolicy::ONE_ATTEMPT, |q| q.limits.retry)
        })
    }
}

impl RetryPolicy {
    /// A single attempt, no retry: for a task whose queue is gone.
    const ONE_ATTEMPT: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        backoff_ms: 0,
        backoff_max_ms: 0,
        jitter: false,
    };
}
