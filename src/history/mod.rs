//! Task history and results: what happened to every task, kept on disk.
//!
//! The engine reports each step of a task's life as a [`TaskEvent`] on a
//! channel and moves on; it never waits for the history, and the history
//! never calls back into the engine. The [`Recorder`]
//! thread drains that channel every [`RECORD_INTERVAL`], folds the events of a
//! batch into one write per task in the [`HistoryStore`] (fjall, in
//! `<data_dir>/history`), and keeps the live [`Activity`] figures (workers,
//! per-queue counts, latencies) that the dashboard and `/metrics` show.
//!
//! The history is an observation, not the source of truth for running tasks:
//! the queue store is. A history write lost in a crash costs a line in the
//! dashboard, never a task.

mod activity;
mod recorder;
mod store;
mod tail;

pub(crate) use activity::SERIES_IN_MEMORY;
pub use activity::{Activity, QueueRates, SeriesPoint, WorkerInfo};
pub use recorder::{
    Backlog, EventSink, LiveFigures, LiveSource, MAX_BACKLOG, READ_YOUR_WRITES_WAIT,
    RECORD_INTERVAL, Recorder,
};
pub use store::{HistoryError, HistoryStore, TaskFilter, TaskPage, WeakHistoryStore};
pub(crate) use store::{MAX_SCAN, hex as hex_string, unhex};
pub use tail::{Tail, TailEvent};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use swarmq_worker::wire::Status;

pub use crate::engine::TaskEvent;
use crate::engine::{ReplyTo, StoredTask};

/// Where a task stands, as the history knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Accepted, waiting for its countdown, ETA or retry backoff.
    Scheduled,
    /// Accepted, waiting for a worker.
    Queued,
    /// Delivered to a worker, no result yet.
    Running,
    /// The worker returned a result.
    Success,
    /// The worker reported an error, or every attempt was used up.
    Failure,
    /// Message expiry passed before a worker took it.
    Expired,
    /// An operator revoked it, or purged its queue.
    Revoked,
    /// Refused at submission (recorded when the submission carried an id
    /// that the history does not already hold).
    Rejected,
}

impl TaskState {
    /// Every state, in the order the dashboard lists them.
    pub const ALL: [TaskState; 8] = [
        TaskState::Scheduled,
        TaskState::Queued,
        TaskState::Running,
        TaskState::Success,
        TaskState::Failure,
        TaskState::Expired,
        TaskState::Revoked,
        TaskState::Rejected,
    ];

    /// The lowercase name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Scheduled => "scheduled",
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Success => "success",
            TaskState::Failure => "failure",
            TaskState::Expired => "expired",
            TaskState::Revoked => "revoked",
            TaskState::Rejected => "rejected",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl From<Status> for TaskState {
    fn from(s: Status) -> TaskState {
        match s {
            Status::Success => TaskState::Success,
            Status::Failure => TaskState::Failure,
            Status::Rejected => TaskState::Rejected,
            Status::Expired => TaskState::Expired,
            Status::Revoked => TaskState::Revoked,
            Status::Progress => TaskState::Running,
        }
    }
}

/// The fields a task list shows: small, and stored beside the time index so a
/// search never reads arguments or results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// Task id.
    pub id: String,
    /// Queue name.
    pub queue: String,
    /// Task name.
    pub task: String,
    /// Where it stands.
    pub status: TaskState,
    /// Client id of the worker that has or had it last.
    #[serde(default)]
    pub worker: Option<String>,
    /// Deliveries so far.
    #[serde(default)]
    pub attempts: u32,
    /// Accepted at, microseconds since the Unix epoch.
    pub submitted_at_us: u64,
    /// Last delivered to a worker at.
    #[serde(default)]
    pub started_at_us: Option<u64>,
    /// Final at.
    #[serde(default)]
    pub finished_at_us: Option<u64>,
    /// The identity that submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
}

/// Everything the history keeps of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The list fields.
    #[serde(flatten)]
    pub summary: TaskSummary,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// The requester's reply topic and correlation.
    #[serde(default)]
    pub reply: Option<ReplyTo>,
    /// The workflow it is a member of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// A chunk task's items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<Vec<Value>>,
    /// Deliveries lost to a flapping worker (not counted in `attempts`).
    #[serde(default)]
    pub lost_deliveries: u32,
    /// MQTT 5 user properties of the submission.
    #[serde(default)]
    pub user_properties: Vec<(String, String)>,
    /// When the task expires if no worker takes it.
    #[serde(default)]
    pub expires_at_us: Option<u64>,
    /// When a scheduled task becomes deliverable (countdown, ETA, backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at_us: Option<u64>,
    /// Its priority, 0 to 9.
    #[serde(default)]
    pub priority: u8,
    /// Its own retry policy, when the submission gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::engine::RetryPolicy>,
    /// The requester asked for progress reports.
    #[serde(default)]
    pub progress_wanted: bool,
    /// The worker's latest progress report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    /// The worker's return value, for `success`.
    #[serde(default)]
    pub result: Option<Value>,
    /// The error, for `failure`, `expired`, `revoked`, `rejected`; or why
    /// the last delivery ended without a result.
    #[serde(default)]
    pub error: Option<String>,
}

impl TaskRecord {
    /// A record for a task just accepted: `scheduled` when it has a due
    /// time, `queued` otherwise.
    pub fn queued(task: StoredTask) -> TaskRecord {
        let status = if task.not_before_us.is_some() {
            TaskState::Scheduled
        } else {
            TaskState::Queued
        };
        TaskRecord {
            summary: TaskSummary {
                id: task.id,
                queue: task.queue,
                task: task.task,
                status,
                worker: None,
                attempts: task.attempts,
                submitted_at_us: task.submitted_at_us,
                started_at_us: None,
                finished_at_us: None,
                requester: task.requester,
            },
            args: task.args,
            kwargs: task.kwargs,
            reply: task.reply,
            workflow: task.workflow,
            chunk: task.chunk,
            lost_deliveries: task.lost,
            user_properties: task.user_properties,
            expires_at_us: task.expires_at_us,
            due_at_us: task.not_before_us,
            priority: task.priority,
            retry: task.retry,
            progress_wanted: task.progress,
            progress: None,
            result: None,
            error: None,
        }
    }

    /// A record for a submission refused with `error`.
    pub fn rejected(
        id: &str,
        queue: &str,
        error: &str,
        reply: Option<ReplyTo>,
        at_us: u64,
    ) -> TaskRecord {
        TaskRecord {
            summary: TaskSummary {
                id: id.to_string(),
                queue: queue.to_string(),
                task: String::new(),
                status: TaskState::Rejected,
                worker: None,
                attempts: 0,
                submitted_at_us: at_us,
                started_at_us: None,
                finished_at_us: Some(at_us),
                requester: None,
            },
            args: Vec::new(),
            kwargs: Map::new(),
            reply,
            workflow: None,
            chunk: None,
            lost_deliveries: 0,
            user_properties: Vec::new(),
            expires_at_us: None,
            due_at_us: None,
            priority: 0,
            retry: None,
            progress_wanted: false,
            progress: None,
            result: None,
            error: Some(error.to_string()),
        }
    }

    /// The task as it can be submitted again (retry), with its priority,
    /// retry policy and progress wish.
    pub fn to_stored_task(&self) -> StoredTask {
        StoredTask {
            kwargs: self.kwargs.clone(),
            reply: self.reply.clone(),
            user_properties: self.user_properties.clone(),
            priority: self.priority,
            retry: self.retry,
            progress: self.progress_wanted,
            ..StoredTask::new(
                &self.summary.id,
                &self.summary.queue,
                &self.summary.task,
                self.args.clone(),
            )
        }
    }

    /// Milliseconds between submission and the last delivery.
    pub fn queued_ms(&self) -> Option<f64> {
        let s = &self.summary;
        s.started_at_us
            .map(|t| ms(t.saturating_sub(s.submitted_at_us)))
    }

    /// Milliseconds between the last delivery and the result.
    pub fn run_ms(&self) -> Option<f64> {
        let s = &self.summary;
        match (s.started_at_us, s.finished_at_us) {
            (Some(a), Some(b)) => Some(ms(b.saturating_sub(a))),
            _ => None,
        }
    }

    /// The API's JSON view: the record with timings and the reply spelled out.
    pub fn to_json(&self) -> Value {
        let s = &self.summary;
        let mut v = serde_json::json!({
            "id": s.id,
            "queue": s.queue,
            "task": s.task,
            "status": s.status,
            "worker": s.worker,
            "requester": s.requester,
            "attempts": s.attempts,
            "submitted_at_us": s.submitted_at_us,
            "started_at_us": s.started_at_us,
            "finished_at_us": s.finished_at_us,
            "queued_ms": self.queued_ms(),
            "run_ms": self.run_ms(),
            "args": self.args,
            "chunk": self.chunk,
            "lost_deliveries": self.lost_deliveries,
            "workflow": self.workflow,
            "kwargs": self.kwargs,
            "result": self.result,
            "error": self.error,
            "expires_at_us": self.expires_at_us,
            "due_at_us": self.due_at_us,
            "priority": self.priority,
            "retry": self.retry,
            "progress": self.progress,
            "user_properties": self.user_properties,
            "reply_topic": self.reply.as_ref().map(|r| r.topic.clone()),
            "correlation_id": self.reply.as_ref().and_then(|r| r.correlation_id.clone()),
            "correlation_data": self.reply.as_ref().and_then(|r| r.correlation_data.as_ref())
                .map(|d| String::from_utf8_lossy(d).into_owned()),
        });
        if let Value::Object(map) = &mut v {
            map.retain(|_, v| !v.is_null());
        }
        v
    }
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 1000.0).round() / 1000.0
}
