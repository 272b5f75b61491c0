//! [`Dispatcher`]: the task queues, the workers and the leases between them.
//!
//! The dispatcher owns every decision of the task engine: whether a submission
//! is accepted, which worker gets which task, when a task goes back to its queue,
//! and what result the requester receives. It speaks no MQTT: the broker adapter
//! (`crate::mqtt`) calls it with plain values and executes the [`Outbound`]
//! messages it returns. Time is passed in, so leases are testable without sleeping.
//!
//! State sits behind one `std::sync::Mutex`. Every operation is a short,
//! non-blocking critical section (no `.await` inside), which is cheaper than a
//! channel hop to an actor on the publish path; the only I/O under the lock is
//! the queue store's journal append, which keeps "stored" and "visible to
//! workers" in the same order. Delivery itself happens after the lock is released.
//!
//! Guarantees kept here (see docs/PROTOCOL.md):
//! - a task is stored before it is acknowledged, and removed only once final;
//! - a worker never holds more unfinished tasks than its capacity;
//! - each task has at most one lease; the first reply wins, later ones are ignored;
//! - a task whose worker vanished or whose lease expired goes back to the front
//!   of its queue, until `max_attempts` deliveries have been made.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value};
use swarmq_worker::wire::{self, Status, TaskMessage, TaskResult, WorkerReply};

use crate::history::{EventSink, TaskEvent};
use crate::metrics::{Metrics, QueueSnapshot, RejectReason};
use crate::queue::{QueueStore, ReplyTo, StoreError, StoredTask, TaskKey};
use crate::settings::{QueueLimits, Settings};

/// Longest task id accepted from a requester, in bytes.
pub const MAX_TASK_ID_LEN: usize = 256;

/// A message the broker adapter must publish on the dispatcher's behalf.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Give a task to one worker, on `tasks/<queue>`.
    Deliver {
        /// Client id of the worker.
        worker: String,
        /// Queue of the task (the topic is `tasks/<queue>`).
        queue: String,
        /// Task id: the MQTT 5 Correlation Data.
        task_id: String,
        /// Where the worker answers: the MQTT 5 Response Topic.
        reply_to: String,
        /// JSON [`TaskMessage`].
        payload: Bytes,
        /// The submitter's MQTT 5 user properties.
        user_properties: Vec<(String, String)>,
    },
    /// Publish a result to a requester's reply topic.
    Reply {
        /// Reply topic.
        topic: String,
        /// MQTT 5 Correlation Data of the request, if it had one.
        correlation_data: Option<Bytes>,
        /// JSON [`TaskResult`].
        payload: Bytes,
    },
}

/// A task published to `tasks/<queue>`, as the broker adapter saw it.
#[derive(Debug, Clone, Default)]
pub struct Submission<'a> {
    /// The topic level after `tasks/`, not yet validated.
    pub queue: &'a str,
    /// The raw payload.
    pub payload: &'a [u8],
    /// MQTT 5 Response Topic.
    pub response_topic: Option<String>,
    /// MQTT 5 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// MQTT 5 user properties.
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5 Message Expiry Interval, in seconds.
    pub message_expiry_secs: Option<u32>,
}

/// What became of a submission.
#[derive(Debug)]
pub enum SubmitOutcome {
    /// Stored; acknowledge it, then publish these.
    Accepted(Vec<Outbound>),
    /// The id is already known: acknowledge it and run nothing.
    Duplicate,
    /// Refused: the reason, a message, and a `rejected` result to publish if
    /// the requester gave a reply topic.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// Human-readable detail.
        message: String,
        /// The `rejected` result for the requester.
        reply: Option<Outbound>,
    },
    /// The task could not be stored: do not acknowledge, so the client retries.
    NotStored(StoreError),
}

/// Errors while starting the dispatcher.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The queue store could not be read.
    #[error("cannot recover tasks from the queue store")]
    Recover(#[from] StoreError),
}

/// Why an operator action (revoke, purge, retry) was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No unfinished task has this id.
    #[error("no unfinished task `{0}`")]
    NotFound(String),
    /// The task is with a worker; only waiting tasks can be revoked.
    #[error("task `{0}` is running on a worker; only waiting tasks can be revoked")]
    Running(String),
    /// The task is still unfinished, so it cannot be retried.
    #[error("task `{0}` is still unfinished")]
    Unfinished(String),
    /// No such queue.
    #[error("unknown queue `{0}`")]
    UnknownQueue(String),
    /// The queue holds its maximum.
    #[error("queue `{0}` is full")]
    QueueFull(String),
    /// The broker is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// The task could not be stored.
    #[error("task not stored")]
    Store(#[from] StoreError),
}

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
}

/// Identifies one connection of a client, so a late disconnect of an old
/// connection cannot unregister the new one that took its client id over.
pub type ConnectionId = u64;

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
}

struct Queue {
    limits: QueueLimits,
    waiting: VecDeque<TaskKey>,
    in_flight: usize,
    /// Client ids of the workers consuming this queue.
    consumers: Vec<String>,
    /// Rotates the starting point of the least-loaded search, so equally free
    /// workers take turns.
    next_consumer: usize,
    /// Waiting tasks that carry an expiry; the expiry sweep skips queues at 0.
    expiring: usize,
}

struct Lease {
    worker: String,
    delivered_at_us: u64,
    deadline: Instant,
}

struct Entry {
    task: StoredTask,
    lease: Option<Lease>,
}

struct Worker {
    conn: ConnectionId,
    capacity: u32,
    /// Shared-subscription filters (without `$share/<group>/`) that select queues.
    filters: Vec<String>,
    in_flight: HashSet<TaskKey>,
    per_queue: HashMap<String, u32>,
}

struct State {
    queues: HashMap<String, Queue>,
    tasks: HashMap<TaskKey, Entry>,
    ids: HashMap<String, TaskKey>,
    recent_done: VecDeque<String>,
    recent_done_set: HashSet<String>,
    workers: HashMap<String, Worker>,
    keys: ulid::Generator,
    accepting: bool,
}

struct Inner {
    state: Mutex<State>,
    store: QueueStore,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// Where task and worker events go (the history recorder), once attached.
    events: OnceLock<EventSink>,
}

/// Handle to the task engine. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

/// A handle that does not keep the dispatcher (and its store) alive.
#[derive(Clone)]
pub struct WeakDispatcher {
    inner: std::sync::Weak<Inner>,
}

impl WeakDispatcher {
    /// The dispatcher, if it still exists.
    pub fn upgrade(&self) -> Option<Dispatcher> {
        self.inner.upgrade().map(|inner| Dispatcher { inner })
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Dispatcher {
    /// Creates the dispatcher and recovers every stored task into its queue,
    /// in submission order. Tasks that were in flight when the broker stopped
    /// wait again for a worker.
    ///
    /// # Errors
    ///
    /// Fails when the store cannot be read.
    pub fn recover(
        store: QueueStore,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Result<Dispatcher, DispatchError> {
        let mut state = State {
            queues: HashMap::new(),
            tasks: HashMap::new(),
            ids: HashMap::new(),
            recent_done: VecDeque::new(),
            recent_done_set: HashSet::new(),
            workers: HashMap::new(),
            keys: ulid::Generator::new(),
            accepting: true,
        };
        for name in settings.queues.keys() {
            state
                .queues
                .insert(name.clone(), Queue::new(settings.queue_limits(name)));
        }
        let recovered = store.load_all()?;
        let count = recovered.len();
        for (key, task) in recovered {
            let queue = state
                .queues
                .entry(task.queue.clone())
                .or_insert_with(|| Queue::new(settings.queue_limits(&task.queue)));
            queue.waiting.push_back(key);
            if task.expires_at_us.is_some() {
                queue.expiring += 1;
            }
            state.ids.insert(task.id.clone(), key);
            state.tasks.insert(key, Entry { task, lease: None });
        }
        if count > 0 {
            tracing::info!(tasks = count, "recovered tasks from the queue store");
        }
        Ok(Dispatcher {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                store,
                settings,
                metrics,
                events: OnceLock::new(),
            }),
        })
    }

    /// Sends every later task and worker event to `sink`. Only the first
    /// call takes effect.
    pub fn attach_events(&self, sink: EventSink) {
        if self.inner.events.set(sink).is_err() {
            tracing::warn!("event sink already attached; ignored");
        }
    }

    fn emit(&self, event: impl FnOnce() -> TaskEvent) {
        if let Some(sink) = self.inner.events.get() {
            sink.send(event());
        }
    }

    /// A weak handle.
    pub fn downgrade(&self) -> WeakDispatcher {
        WeakDispatcher {
            inner: Arc::downgrade(&self.inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in this module; the
        // state is still structurally valid (every mutation is a few plain
        // collection operations), so keep serving rather than poison the broker.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The metrics this dispatcher counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Validates, stores and queues a task, and hands it to a free worker.
    pub fn submit(&self, sub: Submission<'_>, now: Instant) -> SubmitOutcome {
        let metrics = &self.inner.metrics;
        let settings = &self.inner.settings;
        let v5_reply = sub.response_topic.clone().map(|topic| ReplyTo {
            topic,
            correlation_data: sub.correlation_data.as_ref().map(|b| b.to_vec()),
            correlation_id: None,
        });
        let reject = |reason: RejectReason,
                      message: String,
                      reply: Option<&ReplyTo>,
                      id: Option<String>| {
            tracing::warn!(queue = sub.queue, reason = reason.as_str(), error = %message, "task rejected");
            // A refused task with an id is kept in the history, so whoever
            // looks it up learns why (the history never overwrites a real
            // task's record with a rejection). Sent before the count, so a
            // count seen means the event is on its way.
            if let Some(id) = &id {
                self.emit(|| TaskEvent::Rejected {
                    id: id.clone(),
                    queue: sub.queue.to_string(),
                    error: message.clone(),
                    reply: reply.cloned(),
                    at_us: now_us(),
                });
            }
            metrics.task_rejected(reason);
            let reply = reply.map(|r| {
                reply_message(
                    r,
                    &TaskResult {
                        id,
                        queue: sub.queue.to_string(),
                        task: None,
                        status: Status::Rejected,
                        result: None,
                        error: Some(message.clone()),
                        worker: None,
                        attempts: 0,
                        queued_ms: None,
                        run_ms: None,
                        correlation_id: r.correlation_id.clone(),
                    },
                )
            });
            SubmitOutcome::Rejected {
                reason,
                message,
                reply,
            }
        };

        if !wire::is_valid_queue_name(sub.queue) {
            let msg = format!(
                "invalid queue name `{}`: one topic level of 1 to 64 of A-Z a-z 0-9 _ . -",
                sub.queue
            );
            return reject(RejectReason::InvalidQueue, msg, v5_reply.as_ref(), None);
        }
        if sub.payload.len() > settings.tasks.max_payload_bytes {
            let msg = format!(
                "payload of {} bytes exceeds the limit of {} bytes",
                sub.payload.len(),
                settings.tasks.max_payload_bytes
            );
            return reject(RejectReason::PayloadTooLarge, msg, v5_reply.as_ref(), None);
        }
        let parsed = match parse_request(sub.payload) {
            Ok(p) => p,
            Err(bad) => {
                // The 3.1.1 reply_to is usable when the payload was an object
                // with a well-formed reply_to, even if another field was wrong.
                let reply = v5_reply.clone().or(bad.reply_to);
                return reject(
                    RejectReason::InvalidPayload,
                    bad.message,
                    reply.as_ref(),
                    bad.id,
                );
            }
        };
        // MQTT 5 properties win over the JSON fields.
        let reply = match (v5_reply, parsed.reply_to) {
            (Some(mut r), json) => {
                r.correlation_id = json.and_then(|j| j.correlation_id);
                Some(r)
            }
            (None, json) => json,
        };

        let mut state = self.lock();
        if !state.accepting {
            drop(state);
            return reject(
                RejectReason::ShuttingDown,
                "the broker is shutting down".into(),
                reply.as_ref(),
                parsed.id,
            );
        }
        if !state.queues.contains_key(sub.queue) && !settings.tasks.auto_create_queues {
            drop(state);
            let msg = format!("unknown queue `{}`", sub.queue);
            return reject(RejectReason::UnknownQueue, msg, reply.as_ref(), parsed.id);
        }
        if let Some(id) = &parsed.id
            && (state.ids.contains_key(id) || state.recent_done_set.contains(id))
        {
            metrics.task_duplicate();
            tracing::info!(queue = sub.queue, task_id = %id, "duplicate task id, not run again");
            return SubmitOutcome::Duplicate;
        }
        let key = match state.keys.generate() {
            Ok(ulid) => TaskKey(ulid),
            // The generator overflows only after 2^80 ids in one millisecond;
            // a fresh ULID from the clock is then still unique enough.
            Err(_) => TaskKey(ulid::Ulid::new()),
        };
        self.ensure_queue(&mut state, sub.queue);
        let (queue_len, max_length) = state.queues.get(sub.queue).map_or((0, usize::MAX), |q| {
            (q.waiting.len() + q.in_flight, q.limits.max_length)
        });
        if queue_len >= max_length {
            drop(state);
            let msg = format!("queue `{}` is full ({max_length} tasks)", sub.queue);
            return reject(RejectReason::QueueFull, msg, reply.as_ref(), parsed.id);
        }

        let submitted_at_us = now_us();
        let task = StoredTask {
            id: parsed.id.unwrap_or_else(|| key.0.to_string()),
            queue: sub.queue.to_string(),
            task: parsed.task.unwrap_or_else(|| sub.queue.to_string()),
            args: parsed.args,
            kwargs: parsed.kwargs,
            reply,
            user_properties: sub.user_properties,
            submitted_at_us,
            expires_at_us: sub
                .message_expiry_secs
                .map(|s| submitted_at_us + u64::from(s) * 1_000_000),
            attempts: 0,
        };
        if let Err(e) = self.admit(&mut state, key, task) {
            tracing::error!(queue = sub.queue, error = %e, "cannot store task; not acknowledged");
            return SubmitOutcome::NotStored(e);
        }
        let mut out = Vec::new();
        self.pump(&mut state, sub.queue, now, &mut out);
        SubmitOutcome::Accepted(out)
    }

    /// Stores `task` and puts it at the back of its queue, which must exist.
    fn admit(&self, state: &mut State, key: TaskKey, task: StoredTask) -> Result<(), StoreError> {
        self.inner.store.put(key, &task)?;
        self.inner.metrics.task_submitted();
        self.emit(|| TaskEvent::Submitted(Box::new(task.clone())));
        if let Some(queue) = state.queues.get_mut(&task.queue) {
            queue.waiting.push_back(key);
            if task.expires_at_us.is_some() {
                queue.expiring += 1;
            }
        }
        state.ids.insert(task.id.clone(), key);
        state.tasks.insert(key, Entry { task, lease: None });
        Ok(())
    }

    /// Registers `worker` as a consumer of the queues `filter` selects (the
    /// part of a `$share/<group>/<filter>` subscription after the group).
    pub fn worker_subscribed(
        &self,
        worker: &str,
        conn: ConnectionId,
        capacity: u32,
        filter: &str,
        now: Instant,
    ) -> Vec<Outbound> {
        let mut state = self.lock();
        let capacity = capacity.max(1);
        let w = state
            .workers
            .entry(worker.to_string())
            .or_insert_with(|| Worker {
                conn,
                capacity,
                filters: Vec::new(),
                in_flight: HashSet::new(),
                per_queue: HashMap::new(),
            });
        w.conn = conn;
        w.capacity = capacity;
        if !w.filters.iter().any(|f| f == filter) {
            w.filters.push(filter.to_string());
        }
        // An exact queue filter creates the queue, so a worker can wait on a
        // queue nobody has submitted to yet.
        if let Some(name) = filter.strip_prefix(wire::TASKS_PREFIX)
            && wire::is_valid_queue_name(name)
            && (self.inner.settings.tasks.auto_create_queues || state.queues.contains_key(name))
        {
            self.ensure_queue(&mut state, name);
        }
        let matching: Vec<String> = state
            .queues
            .keys()
            .filter(|q| filter_matches(filter, &wire::task_topic(q)))
            .cloned()
            .collect();
        for q in &matching {
            if let Some(queue) = state.queues.get_mut(q)
                && !queue.consumers.iter().any(|c| c == worker)
            {
                queue.consumers.push(worker.to_string());
            }
        }
        tracing::info!(worker, capacity, filter, queues = ?matching, "worker subscribed");
        self.emit_worker_seen(&state, worker);
        let mut out = Vec::new();
        for q in &matching {
            self.pump(&mut state, q, now, &mut out);
        }
        out
    }

    /// Removes one subscription of `worker`. Tasks it holds stay leased to it:
    /// it may still answer them.
    pub fn worker_unsubscribed(&self, worker: &str, filter: &str) {
        let mut state = self.lock();
        let Some(w) = state.workers.get_mut(worker) else {
            return;
        };
        w.filters.retain(|f| f != filter);
        let filters = w.filters.clone();
        for (name, queue) in state.queues.iter_mut() {
            let topic = wire::task_topic(name);
            if !filters.iter().any(|f| filter_matches(f, &topic)) {
                queue.consumers.retain(|c| c != worker);
            }
        }
        tracing::info!(worker, filter, "worker unsubscribed");
        self.emit_worker_seen(&state, worker);
    }

    fn emit_worker_seen(&self, state: &State, worker: &str) {
        let Some(w) = state.workers.get(worker) else {
            return;
        };
        self.emit(|| TaskEvent::WorkerSeen {
            id: worker.to_string(),
            capacity: w.capacity,
            queues: queues_of(state, worker),
            at_us: now_us(),
        });
    }

    /// Forgets connection `conn` of `worker` and puts every task it held back
    /// at the front of its queue, for the other workers.
    pub fn worker_gone(&self, worker: &str, conn: ConnectionId, now: Instant) -> Vec<Outbound> {
        let mut state = self.lock();
        match state.workers.get(worker) {
            Some(w) if w.conn == conn => {}
            _ => return Vec::new(),
        }
        let Some(w) = state.workers.remove(worker) else {
            return Vec::new();
        };
        for queue in state.queues.values_mut() {
            queue.consumers.retain(|c| c != worker);
        }
        self.emit(|| TaskEvent::WorkerLeft {
            id: worker.to_string(),
            at_us: now_us(),
        });
        let mut held: Vec<TaskKey> = w.in_flight.into_iter().collect();
        // Oldest first, pushed to the front in reverse, keeps submission order.
        held.sort();
        if !held.is_empty() {
            tracing::warn!(
                worker,
                tasks = held.len(),
                "worker left holding tasks; redelivering"
            );
        }
        let mut out = Vec::new();
        let mut touched = HashSet::new();
        for key in held.into_iter().rev() {
            if let Some(q) = self.release(&mut state, key, "worker disconnected", &mut out) {
                touched.insert(q);
            }
        }
        for q in touched {
            self.pump(&mut state, &q, now, &mut out);
        }
        out
    }

    /// Records a worker's reply to a task and routes the result to its requester.
    ///
    /// `task_id` comes from the MQTT 5 Correlation Data, or else from the `id`
    /// field of the JSON (MQTT 3.1.1 workers).
    pub fn complete(
        &self,
        worker: &str,
        correlation_data: Option<&[u8]>,
        payload: &[u8],
        now: Instant,
    ) -> Vec<Outbound> {
        let metrics = &self.inner.metrics;
        let json: Option<Value> = serde_json::from_slice(payload).ok();
        let task_id = correlation_data
            .and_then(|c| std::str::from_utf8(c).ok().map(str::to_string))
            .or_else(|| {
                json.as_ref()
                    .and_then(|v| v.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        let Some(task_id) = task_id else {
            metrics.reply_ignored();
            tracing::warn!(
                worker,
                "worker reply without a task id (no Correlation Data, no `id` field)"
            );
            return Vec::new();
        };
        let reply = match json {
            Some(v) => WorkerReply::from_json(v),
            None => match std::str::from_utf8(payload) {
                Ok(text) => WorkerReply::Success(Value::String(text.to_string())),
                Err(_) => WorkerReply::Failure {
                    error: "worker reply is neither JSON nor UTF-8 text".into(),
                    retry: false,
                },
            },
        };

        let mut state = self.lock();
        let Some(&key) = state.ids.get(&task_id) else {
            metrics.reply_ignored();
            tracing::debug!(
                worker,
                task_id,
                "reply for a task that is not unfinished; ignored"
            );
            return Vec::new();
        };
        let queue_name = match state.tasks.get(&key) {
            Some(e) => e.task.queue.clone(),
            None => return Vec::new(),
        };
        let mut out = Vec::new();
        // Free the slot of whoever holds the lease now (the replying worker, or
        // another one the task was redelivered to after this one's lease ran out).
        let lease = self.end_lease(&mut state, key);
        let delivered_at_us = lease.as_ref().map(|(at, _)| *at);
        // A worker may answer through another connection (a shell worker's
        // mosquitto_pub): then the lease holder is the one that ran the task.
        let ran_by = match lease {
            Some((_, holder)) if !state.workers.contains_key(worker) => holder,
            _ => worker.to_string(),
        };
        // A reply to a task still waiting (its lease had expired) takes it out
        // of its queue. Rare, so the linear search is fine; a leased task is
        // never in `waiting`, which keeps the common path O(1).
        let has_expiry = state
            .tasks
            .get(&key)
            .is_some_and(|e| e.task.expires_at_us.is_some());
        let waiting_queue = match delivered_at_us {
            None => state.queues.get_mut(&queue_name),
            Some(_) => None,
        };
        if let Some(q) = waiting_queue
            && let Some(pos) = q.waiting.iter().position(|k| *k == key)
        {
            q.waiting.remove(pos);
            if has_expiry {
                q.expiring = q.expiring.saturating_sub(1);
            }
        }
        let max_attempts = state
            .queues
            .get(&queue_name)
            .map_or(1, |q| q.limits.max_attempts);
        match reply {
            WorkerReply::Failure { error, retry: true } => {
                let attempts = state
                    .tasks
                    .get(&key)
                    .map(|e| e.task.attempts + 1)
                    .unwrap_or(0);
                if attempts < max_attempts {
                    metrics.task_retried();
                    tracing::info!(worker, task_id, attempts, error, "worker asked for a retry");
                    self.requeue_front(&mut state, key, &format!("retry asked: {error}"));
                } else {
                    let error = format!("{error} (gave up after {attempts} attempts)");
                    self.finish(
                        &mut state,
                        key,
                        Status::Failure,
                        None,
                        Some(error),
                        Some(&ran_by),
                        delivered_at_us,
                        &mut out,
                    );
                }
            }
            WorkerReply::Failure {
                error,
                retry: false,
            } => {
                self.finish(
                    &mut state,
                    key,
                    Status::Failure,
                    None,
                    Some(error),
                    Some(&ran_by),
                    delivered_at_us,
                    &mut out,
                );
            }
            WorkerReply::Success(value) => {
                self.finish(
                    &mut state,
                    key,
                    Status::Success,
                    Some(value),
                    None,
                    Some(&ran_by),
                    delivered_at_us,
                    &mut out,
                );
            }
        }
        // The replying worker has a free slot now: feed every queue it consumes.
        let queues: Vec<String> = state
            .queues
            .iter()
            .filter(|(_, q)| q.consumers.iter().any(|c| c == worker))
            .map(|(n, _)| n.clone())
            .collect();
        for q in queues {
            self.pump(&mut state, &q, now, &mut out);
        }
        if !state
            .queues
            .get(&queue_name)
            .is_some_and(|q| q.consumers.iter().any(|c| c == worker))
        {
            self.pump(&mut state, &queue_name, now, &mut out);
        }
        out
    }

    /// Whether the broker should still deliver task `task_id` to `worker`. A
    /// persistent session may try to redeliver a copy of a task that has since
    /// gone to someone else; this vetoes it.
    pub fn lease_held_by(&self, task_id: &str, worker: &str) -> bool {
        let state = self.lock();
        state
            .ids
            .get(task_id)
            .and_then(|k| state.tasks.get(k))
            .and_then(|e| e.lease.as_ref())
            .is_some_and(|l| l.worker == worker)
    }

    /// Takes back tasks whose lease ran out and answers tasks whose message
    /// expiry passed while waiting. Called periodically.
    pub fn tick(&self, now: Instant) -> Vec<Outbound> {
        let mut state = self.lock();
        let mut out = Vec::new();
        // Only leased tasks can expire, and every one is in its worker's set:
        // the scan is proportional to the tasks in flight, not in the store.
        let expired_leases: Vec<TaskKey> = state
            .workers
            .values()
            .flat_map(|w| w.in_flight.iter())
            .filter(|k| {
                state
                    .tasks
                    .get(k)
                    .and_then(|e| e.lease.as_ref())
                    .is_some_and(|l| l.deadline <= now)
            })
            .copied()
            .collect();
        let mut touched = HashSet::new();
        for key in expired_leases {
            if let Some(lease) = state.tasks.get(&key).and_then(|e| e.lease.as_ref()) {
                tracing::warn!(worker = %lease.worker, "lease expired; taking the task back");
            }
            if let Some(q) = self.release(&mut state, key, "lease expired", &mut out) {
                touched.insert(q);
            }
        }
        let wall = now_us();
        let expiring: Vec<String> = state
            .queues
            .iter()
            .filter(|(_, q)| q.expiring > 0)
            .map(|(n, _)| n.clone())
            .collect();
        for name in expiring {
            let keys: Vec<TaskKey> = state.queues[&name]
                .waiting
                .iter()
                .copied()
                .filter(|k| {
                    state
                        .tasks
                        .get(k)
                        .and_then(|e| e.task.expires_at_us)
                        .is_some_and(|t| t <= wall)
                })
                .collect();
            if keys.is_empty() {
                continue;
            }
            if let Some(q) = state.queues.get_mut(&name) {
                q.waiting.retain(|k| !keys.contains(k));
                q.expiring = q.expiring.saturating_sub(keys.len());
            }
            for key in keys {
                self.finish(
                    &mut state,
                    key,
                    Status::Expired,
                    None,
                    Some("message expiry passed before a worker took the task".into()),
                    None,
                    None,
                    &mut out,
                );
            }
        }
        for q in touched {
            self.pump(&mut state, &q, now, &mut out);
        }
        out
    }

    /// Stops accepting submissions (they are rejected as `shutting_down`).
    pub fn stop_accepting(&self) {
        self.lock().accepting = false;
    }

    /// Hands pending store writes (buffered removals) to the OS; called on shutdown.
    pub fn flush_store(&self) {
        if let Err(e) = self.inner.store.flush() {
            tracing::error!(error = %e, "cannot flush the queue store");
        }
    }

    /// Tasks delivered and not yet answered, over all queues.
    pub fn in_flight(&self) -> usize {
        self.lock().queues.values().map(|q| q.in_flight).sum()
    }

    /// A view of every queue, sorted by name.
    pub fn queues(&self) -> Vec<QueueSnapshot> {
        let state = self.lock();
        let mut v: Vec<QueueSnapshot> = state
            .queues
            .iter()
            .map(|(name, q)| QueueSnapshot {
                name: name.clone(),
                waiting: q.waiting.len(),
                in_flight: q.in_flight,
                consumers: q.consumers.len(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A view of every worker, sorted by id.
    pub fn workers(&self) -> Vec<WorkerSnapshot> {
        let state = self.lock();
        let mut v: Vec<WorkerSnapshot> = state
            .workers
            .iter()
            .map(|(id, w)| WorkerSnapshot {
                id: id.clone(),
                capacity: w.capacity,
                in_flight: w.in_flight.len(),
                queues: queues_of(&state, id),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Whether task `id` is accepted and not yet final.
    pub fn is_unfinished(&self, id: &str) -> bool {
        self.lock().ids.contains_key(id)
    }

    /// Up to `limit` tasks waiting in `queue`, next to be delivered first.
    /// `None` when there is no such queue.
    pub fn waiting_tasks(&self, queue: &str, limit: usize) -> Option<Vec<WaitingTask>> {
        let state = self.lock();
        let q = state.queues.get(queue)?;
        Some(
            q.waiting
                .iter()
                .take(limit)
                .filter_map(|k| state.tasks.get(k))
                .map(|e| WaitingTask {
                    id: e.task.id.clone(),
                    task: e.task.task.clone(),
                    submitted_at_us: e.task.submitted_at_us,
                    attempts: e.task.attempts,
                })
                .collect(),
        )
    }

    /// Takes waiting task `id` out of its queue for good: its requester gets
    /// a `revoked` result.
    ///
    /// # Errors
    ///
    /// [`ActionError::NotFound`] when no unfinished task has the id,
    /// [`ActionError::Running`] when a worker has it.
    pub fn revoke(&self, id: &str) -> Result<Vec<Outbound>, ActionError> {
        let mut state = self.lock();
        let Some(&key) = state.ids.get(id) else {
            return Err(ActionError::NotFound(id.to_string()));
        };
        let Some(entry) = state.tasks.get(&key) else {
            return Err(ActionError::NotFound(id.to_string()));
        };
        if entry.lease.is_some() {
            return Err(ActionError::Running(id.to_string()));
        }
        let has_expiry = entry.task.expires_at_us.is_some();
        let queue = entry.task.queue.clone();
        if let Some(q) = state.queues.get_mut(&queue)
            && let Some(pos) = q.waiting.iter().position(|k| *k == key)
        {
            q.waiting.remove(pos);
            if has_expiry {
                q.expiring = q.expiring.saturating_sub(1);
            }
        }
        tracing::info!(task_id = id, queue, "task revoked");
        let mut out = Vec::new();
        self.finish(
            &mut state,
            key,
            Status::Revoked,
            None,
            Some("revoked by an operator".into()),
            None,
            None,
            &mut out,
        );
        Ok(out)
    }

    /// Revokes every task waiting in `queue` (tasks with workers finish
    /// normally). Returns how many were removed and their results.
    ///
    /// # Errors
    ///
    /// [`ActionError::UnknownQueue`] when there is no such queue.
    pub fn purge(&self, queue: &str) -> Result<(usize, Vec<Outbound>), ActionError> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else {
            return Err(ActionError::UnknownQueue(queue.to_string()));
        };
        let keys: Vec<TaskKey> = q.waiting.drain(..).collect();
        q.expiring = 0;
        let mut out = Vec::new();
        for &key in &keys {
            self.finish(
                &mut state,
                key,
                Status::Revoked,
                None,
                Some("queue purged by an operator".into()),
                None,
                None,
                &mut out,
            );
        }
        tracing::warn!(queue, tasks = keys.len(), "queue purged");
        Ok((keys.len(), out))
    }

    /// Submits a finished task again under its own id, as new: attempts
    /// start over and the result goes to its original reply topic.
    ///
    /// # Errors
    ///
    /// [`ActionError::Unfinished`] while the id is still unfinished; the
    /// errors of a submission (unknown or full queue, shutting down, store).
    pub fn resubmit(
        &self,
        mut task: StoredTask,
        now: Instant,
    ) -> Result<Vec<Outbound>, ActionError> {
        let mut state = self.lock();
        if !state.accepting {
            return Err(ActionError::ShuttingDown);
        }
        if state.ids.contains_key(&task.id) {
            return Err(ActionError::Unfinished(task.id));
        }
        if !state.queues.contains_key(&task.queue) {
            if !self.inner.settings.tasks.auto_create_queues {
                return Err(ActionError::UnknownQueue(task.queue));
            }
            self.ensure_queue(&mut state, &task.queue);
        }
        if let Some(q) = state.queues.get(&task.queue)
            && q.waiting.len() + q.in_flight >= q.limits.max_length
        {
            return Err(ActionError::QueueFull(task.queue));
        }
        let key = match state.keys.generate() {
            Ok(ulid) => TaskKey(ulid),
            Err(_) => TaskKey(ulid::Ulid::new()),
        };
        task.submitted_at_us = now_us();
        task.attempts = 0;
        task.expires_at_us = None;
        state.recent_done_set.remove(&task.id);
        let queue = task.queue.clone();
        tracing::info!(task_id = %task.id, queue, "task resubmitted by an operator");
        self.admit(&mut state, key, task)?;
        let mut out = Vec::new();
        self.pump(&mut state, &queue, now, &mut out);
        Ok(out)
    }

    fn ensure_queue(&self, state: &mut State, name: &str) {
        if state.queues.contains_key(name) {
            return;
        }
        let mut queue = Queue::new(self.inner.settings.queue_limits(name));
        let topic = wire::task_topic(name);
        for (id, w) in &state.workers {
            if w.filters.iter().any(|f| filter_matches(f, &topic)) {
                queue.consumers.push(id.clone());
            }
        }
        tracing::info!(
            queue = name,
            consumers = queue.consumers.len(),
            "queue created"
        );
        state.queues.insert(name.to_string(), queue);
    }

    /// Delivers waiting tasks of `queue_name` while a consumer has a free slot.
    fn pump(&self, state: &mut State, queue_name: &str, now: Instant, out: &mut Vec<Outbound>) {
        let State {
            queues,
            tasks,
            workers,
            ..
        } = state;
        let Some(queue) = queues.get_mut(queue_name) else {
            return;
        };
        let wall = now_us();
        while !queue.waiting.is_empty() {
            let Some(worker_id) = pick_worker(queue, queue_name, workers) else {
                break;
            };
            let Some(key) = queue.waiting.pop_front() else {
                break;
            };
            let Some(entry) = tasks.get_mut(&key) else {
                continue;
            };
            if entry.task.expires_at_us.is_some() {
                queue.expiring = queue.expiring.saturating_sub(1);
                if entry.task.expires_at_us.is_some_and(|t| t <= wall) {
                    // Leave it for the expiry sweep, which answers the requester.
                    queue.waiting.push_front(key);
                    queue.expiring += 1;
                    break;
                }
            }
            let Some(worker) = workers.get_mut(&worker_id) else {
                queue.waiting.push_front(key);
                break;
            };
            worker.in_flight.insert(key);
            *worker.per_queue.entry(queue_name.to_string()).or_default() += 1;
            queue.in_flight += 1;
            entry.lease = Some(Lease {
                worker: worker_id.clone(),
                delivered_at_us: wall,
                deadline: now + queue.limits.lease_timeout(),
            });
            let attempt = entry.task.attempts + 1;
            if attempt > 1 {
                self.inner.metrics.task_redelivered();
            }
            self.emit(|| TaskEvent::Started {
                id: entry.task.id.clone(),
                worker: worker_id.clone(),
                attempt,
                at_us: wall,
            });
            out.push(deliver_message(&entry.task, &worker_id, attempt));
        }
    }

    /// Ends the lease of task `key`, freeing its worker's slot. Returns when
    /// and to whom it was delivered, if it was.
    fn end_lease(&self, state: &mut State, key: TaskKey) -> Option<(u64, String)> {
        let entry = state.tasks.get_mut(&key)?;
        let lease = entry.lease.take()?;
        if let Some(q) = state.queues.get_mut(&entry.task.queue) {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
        if let Some(w) = state.workers.get_mut(&lease.worker) {
            w.in_flight.remove(&key);
            if let Some(n) = w.per_queue.get_mut(&entry.task.queue) {
                *n = n.saturating_sub(1);
            }
        }
        Some((lease.delivered_at_us, lease.worker))
    }

    /// A delivery of `key` ended without a result: end its lease, count the
    /// attempt and put the task back at the front of its queue, or fail it
    /// after the last one. Returns the queue to pump, as a slot was freed.
    fn release(
        &self,
        state: &mut State,
        key: TaskKey,
        why: &str,
        out: &mut Vec<Outbound>,
    ) -> Option<String> {
        self.end_lease(state, key);
        let entry = state.tasks.get_mut(&key)?;
        let queue = entry.task.queue.clone();
        let attempts = entry.task.attempts + 1;
        let max_attempts = state
            .queues
            .get(&queue)
            .map_or(1, |q| q.limits.max_attempts);
        if attempts >= max_attempts {
            entry.task.attempts = attempts;
            let error = format!("{why}; gave up after {attempts} attempts");
            self.finish(
                state,
                key,
                Status::Failure,
                None,
                Some(error),
                None,
                None,
                out,
            );
            // The slot it held is free either way.
            return Some(queue);
        }
        self.requeue_front(state, key, why);
        Some(queue)
    }

    fn requeue_front(&self, state: &mut State, key: TaskKey, why: &str) {
        let Some(entry) = state.tasks.get_mut(&key) else {
            return;
        };
        entry.task.attempts += 1;
        self.emit(|| TaskEvent::Requeued {
            id: entry.task.id.clone(),
            reason: why.to_string(),
            at_us: now_us(),
        });
        if let Err(e) = self.inner.store.put(key, &entry.task) {
            // The task stays queued in memory; only its attempt count may be
            // stale after a restart.
            tracing::error!(task_id = %entry.task.id, error = %e, "cannot store the attempt count");
        }
        let has_expiry = entry.task.expires_at_us.is_some();
        let queue = entry.task.queue.clone();
        if let Some(q) = state.queues.get_mut(&queue) {
            q.waiting.push_front(key);
            if has_expiry {
                q.expiring += 1;
            }
        }
    }

    /// Makes task `key` final: removes it from the store and memory, remembers
    /// its id, counts it, and queues its result for the requester.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        state: &mut State,
        key: TaskKey,
        status: Status,
        result: Option<Value>,
        error: Option<String>,
        worker: Option<&str>,
        delivered_at_us: Option<u64>,
        out: &mut Vec<Outbound>,
    ) {
        // Normally the caller has ended the lease already; this keeps the
        // worker's and the queue's counts right if it has not.
        self.end_lease(state, key);
        let Some(entry) = state.tasks.remove(&key) else {
            return;
        };
        let task = entry.task;
        if let Err(e) = self.inner.store.remove(key) {
            // The task is done; at worst it runs once more after a restart.
            tracing::error!(task_id = %task.id, error = %e, "cannot remove a finished task from the store");
        }
        state.ids.remove(&task.id);
        state.recent_done_set.insert(task.id.clone());
        state.recent_done.push_back(task.id.clone());
        while state.recent_done.len() > self.inner.settings.tasks.dedupe_window {
            if let Some(old) = state.recent_done.pop_front() {
                state.recent_done_set.remove(&old);
            }
        }
        let now = now_us();
        let latency = now.saturating_sub(task.submitted_at_us);
        self.inner.metrics.task_finished(status, Some(latency));
        let attempts = task.attempts + u32::from(delivered_at_us.is_some());
        let result = if status == Status::Success {
            Some(result.unwrap_or(Value::Null))
        } else {
            None
        };
        self.emit(|| TaskEvent::Finished {
            id: task.id.clone(),
            queue: task.queue.clone(),
            status,
            result: result.clone(),
            error: error.clone(),
            worker: worker.map(str::to_string),
            attempts,
            at_us: now,
            latency_us: latency,
        });
        let Some(reply) = &task.reply else {
            return;
        };
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        let result = TaskResult {
            id: Some(task.id.clone()),
            queue: task.queue.clone(),
            task: Some(task.task.clone()),
            status,
            result,
            error,
            worker: worker.map(str::to_string),
            attempts,
            queued_ms: delivered_at_us.map(|d| ms(d.saturating_sub(task.submitted_at_us))),
            run_ms: delivered_at_us.map(|d| ms(now.saturating_sub(d))),
            correlation_id: reply.correlation_id.clone(),
        };
        out.push(reply_message(reply, &result));
    }
}

impl Queue {
    fn new(limits: QueueLimits) -> Queue {
        Queue {
            limits,
            waiting: VecDeque::new(),
            in_flight: 0,
            consumers: Vec::new(),
            next_consumer: 0,
            expiring: 0,
        }
    }
}

/// The queues `worker` consumes, sorted.
fn queues_of(state: &State, worker: &str) -> Vec<String> {
    let mut queues: Vec<String> = state
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
fn pick_worker(
    queue: &mut Queue,
    queue_name: &str,
    workers: &HashMap<String, Worker>,
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

fn deliver_message(task: &StoredTask, worker: &str, attempt: u32) -> Outbound {
    let reply_to = wire::results_topic(&task.queue);
    let msg = TaskMessage {
        id: task.id.clone(),
        task: task.task.clone(),
        args: task.args.clone(),
        kwargs: task.kwargs.clone(),
        reply_to: reply_to.clone(),
        queue: task.queue.clone(),
        attempt,
    };
    Outbound::Deliver {
        worker: worker.to_string(),
        queue: task.queue.clone(),
        task_id: task.id.clone(),
        reply_to,
        // Serialising these plain types cannot fail.
        payload: Bytes::from(serde_json::to_vec(&msg).unwrap_or_default()),
        user_properties: task.user_properties.clone(),
    }
}

fn reply_message(reply: &ReplyTo, result: &TaskResult) -> Outbound {
    Outbound::Reply {
        topic: reply.topic.clone(),
        correlation_data: reply.correlation_data.clone().map(Bytes::from),
        payload: Bytes::from(serde_json::to_vec(result).unwrap_or_default()),
    }
}

/// A request payload that passed validation.
#[derive(Debug, Default)]
struct ParsedRequest {
    task: Option<String>,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    id: Option<String>,
    reply_to: Option<ReplyTo>,
}

/// A payload that failed validation, with what could still be salvaged to
/// tell the requester.
#[derive(Debug)]
struct BadRequest {
    message: String,
    id: Option<String>,
    reply_to: Option<ReplyTo>,
}

/// Checks a task payload against the contract: a JSON object whose known
/// fields have the right types. Unknown fields are ignored.
fn parse_request(payload: &[u8]) -> Result<ParsedRequest, BadRequest> {
    let bad = |message: String| BadRequest {
        message,
        id: None,
        reply_to: None,
    };
    let value: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return Err(bad(format!("payload is not JSON: {e}"))),
    };
    let Value::Object(mut obj) = value else {
        return Err(bad(format!(
            "payload must be a JSON object, got {}",
            json_type(&value)
        )));
    };
    // Salvage reply_to / correlation_id / id first, so a requester whose other
    // fields are wrong still hears why.
    let str_field = |obj: &Map<String, Value>, name: &str| -> Result<Option<String>, String> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "field `{name}` must be a string, got {}",
                json_type(other)
            )),
        }
    };
    let reply_topic = str_field(&obj, "reply_to");
    let correlation_id = str_field(&obj, "correlation_id");
    let id = str_field(&obj, "id");
    let salvage_reply = match (&reply_topic, &correlation_id) {
        (Ok(Some(t)), c) if is_valid_reply_topic(t) => Some(ReplyTo {
            topic: t.clone(),
            correlation_data: None,
            correlation_id: c.clone().ok().flatten(),
        }),
        _ => None,
    };
    let salvage_id = id.clone().ok().flatten();
    let fail = |message: String| BadRequest {
        message,
        id: salvage_id.clone(),
        reply_to: salvage_reply.clone(),
    };
    let reply_topic = reply_topic.map_err(&fail)?;
    let correlation_id = correlation_id.map_err(&fail)?;
    let id = id.map_err(&fail)?;
    if let Some(t) = &reply_topic
        && !is_valid_reply_topic(t)
    {
        return Err(fail(format!(
            "field `reply_to` is not a valid topic name: `{t}`"
        )));
    }
    if let Some(id) = &id
        && (id.is_empty() || id.len() > MAX_TASK_ID_LEN)
    {
        return Err(fail(format!(
            "field `id` must be 1 to {MAX_TASK_ID_LEN} bytes"
        )));
    }
    let task = str_field(&obj, "task").map_err(&fail)?;
    if task.as_deref() == Some("") {
        return Err(fail("field `task` must not be empty".into()));
    }
    let args = match obj.remove("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(fail(format!(
                "field `args` must be an array, got {}",
                json_type(&other)
            )));
        }
    };
    let kwargs = match obj.remove("kwargs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(fail(format!(
                "field `kwargs` must be an object, got {}",
                json_type(&other)
            )));
        }
    };
    Ok(ParsedRequest {
        task,
        args,
        kwargs,
        id,
        reply_to: reply_topic.map(|topic| ReplyTo {
            topic,
            correlation_data: None,
            correlation_id,
        }),
    })
}

/// A reply topic must be a topic name one can publish to: non-empty, no
/// wildcards, no NUL.
fn is_valid_reply_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 65_535 && !t.contains(['+', '#', '\0'])
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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

/// How long the periodic [`Dispatcher::tick`] waits between sweeps.
pub const TICK_INTERVAL: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests;
