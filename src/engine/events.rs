//! [`TaskEvent`]s: each step of a task's or a worker's life, for observers.
//!
//! The history records them; the engine never waits for an observer and no
//! observer calls back into the engine. An [`EventObserver`] must not block:
//! it is called with the engine's lock held.

use serde_json::Value;
use swarmq_worker::wire::Status;

use super::task::{ReplyTo, StoredTask};

/// Receives the engine's events.
pub trait EventObserver: Send + Sync + 'static {
    /// Takes one event; must return at once.
    fn observe(&self, event: TaskEvent);
}

/// One step in a task's life, or a worker's.
#[derive(Debug, Clone)]
pub enum TaskEvent {
    /// Accepted into a queue (also when an operator runs it again). The
    /// task is `scheduled` when its `not_before_us` is in the future.
    Submitted(Box<StoredTask>),
    /// A scheduled task became deliverable.
    Ready {
        /// Task id.
        id: String,
        /// When.
        at_us: u64,
    },
    /// Delivered to a worker.
    Started {
        /// Task id.
        id: String,
        /// Worker client id.
        worker: String,
        /// This delivery's number, from 1.
        attempt: u32,
        /// When.
        at_us: u64,
    },
    /// A running task reported progress.
    Progress {
        /// Task id.
        id: String,
        /// The worker's report.
        progress: Value,
        /// When.
        at_us: u64,
    },
    /// A delivery ended without a final answer; the task waits again, at
    /// once or (a retry's backoff) from `due_us`.
    Requeued {
        /// Task id.
        id: String,
        /// Why (worker disconnected, lease expired, the worker's error).
        reason: String,
        /// When it may be delivered again, if later than now.
        due_us: Option<u64>,
        /// Lost to a flapping worker: not counted as an attempt.
        lost: bool,
        /// When.
        at_us: u64,
    },
    /// The task is final.
    Finished {
        /// Task id.
        id: String,
        /// Queue, so a record trimmed by retention can still be counted.
        queue: String,
        /// Outcome.
        status: Status,
        /// Return value.
        result: Option<Value>,
        /// Error message.
        error: Option<String>,
        /// Worker that produced the result.
        worker: Option<String>,
        /// Deliveries made.
        attempts: u32,
        /// When.
        at_us: u64,
        /// Submission to result.
        latency_us: u64,
    },
    /// A submission with an id was refused.
    Rejected {
        /// Task id.
        id: String,
        /// The queue named in the topic (possibly invalid).
        queue: String,
        /// Why.
        error: String,
        /// Where the requester wanted the result.
        reply: Option<ReplyTo>,
        /// When.
        at_us: u64,
    },
    /// A worker subscribed to task queues (or changed its subscriptions).
    WorkerSeen {
        /// Client id.
        id: String,
        /// Capacity.
        capacity: u32,
        /// Queues it consumes now.
        queues: Vec<String>,
        /// When.
        at_us: u64,
    },
    /// A worker disconnected.
    WorkerLeft {
        /// Client id.
        id: String,
        /// When.
        at_us: u64,
    },
    /// A workflow is final: its last state, tree included.
    WorkflowFinished(Box<super::WorkflowView>),
}
