//! [`TaskStore`]: what the engine needs of durable storage, and nothing more.
//!
//! The engine keeps its queues in memory and writes through this trait; the
//! store is the write-ahead record it recovers from after a crash. The rules
//! every implementation must keep (the contract's "nothing acknowledged is
//! lost"):
//!
//! - [`TaskStore::put`] returns only once the record survives the process
//!   being killed (and, where configured, a power loss); the engine calls it
//!   before a submission is acknowledged.
//! - [`TaskStore::remove`] may be buffered: a crash may forget a removal,
//!   never an insertion. The task then runs once more after the restart,
//!   which at-least-once delivery allows. The next `put` or
//!   [`TaskStore::flush`] makes earlier removals durable.
//! - [`TaskStore::scan`] visits every record in key order, so queues
//!   rebuild in submission order; each record carries its own due time
//!   (`not_before_us`) and expiry, from which the engine rebuilds its
//!   deadline index. It visits one record at a time, so a store of a
//!   million scheduled tasks is read without holding them all.
//! - A task due far ahead is written with [`TaskStore::put_cold`], which
//!   also enters it in a durable due-time index ([`TaskStore::due_range`]);
//!   it then stays on disk only, and the engine loads it from the index as
//!   its time comes near. The engine keeps this invariant: a task whose due
//!   time was beyond its hot window when written has an entry, any other
//!   has none, so after a restart every task due beyond the window is in
//!   the index. Entries may outlive their record (a removal does not look
//!   for them): the engine drops such stale entries when it meets them
//!   ([`TaskStore::remove_due`]).
//!
//! - A workflow is stored once, whole, with [`TaskStore::put_workflow`]
//!   before it is acknowledged; its members' results one by one with
//!   [`TaskStore::put_member_result`], durable when it returns, so a member
//!   whose result was recorded never runs again. Its member tasks are
//!   written only when they change (an attempt lost, a countdown): the
//!   definition and the results are enough to rebuild the rest. An ended
//!   workflow's record goes first, durably, then its results; results
//!   without a record are dropped at the next start.
//!
//! fjall is the one implementation today (`crate::queue::FjallStore`); a
//! replicated backend would implement the same four calls.

use serde::{Deserialize, Serialize};

use super::schedules::ScheduleRecord;
use super::task::{StoredTask, TaskKey};

/// A task whose attempts were used up, kept in its queue's dead letters
/// until it is replayed or discarded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The task as it was last stored.
    pub task: StoredTask,
    /// Its last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it failed for good, microseconds since the epoch.
    pub failed_at_us: u64,
}

/// One page of a queue's dead letters, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadPage {
    /// The letters.
    pub letters: Vec<DeadLetter>,
    /// Pass back to get the next page; `None` on the last one.
    pub next_cursor: Option<Vec<u8>>,
    /// Dead letters the queue holds in all.
    pub total: usize,
}

/// Errors of a task store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed (I/O, a full disk, corruption).
    #[error("queue store failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored record could not be decoded.
    #[error("stored task `{key}` is unreadable")]
    Corrupt {
        /// The record's key.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A record could not be encoded.
    #[error("task could not be encoded")]
    Encode(#[source] serde_json::Error),
    /// The store cannot write (a full disk, most often), for this reason;
    /// it recovers by itself once it can.
    #[error("the queue store cannot write: {0}")]
    Unavailable(String),
}

/// A workflow as stored: what it was submitted with, and the results of
/// the members that have completed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWorkflow {
    /// What the broker knows of it besides its definition.
    pub meta: WorkflowMeta,
    /// The submission's payload, whose `workflow` field is the definition.
    pub payload: Vec<u8>,
    /// Completed members: member path → result.
    pub results: Vec<(String, serde_json::Value)>,
}

/// A workflow's record besides its definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowMeta {
    /// Workflow id.
    pub id: String,
    /// Where the final result goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<super::ReplyTo>,
    /// The identity that submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// Progress messages wanted.
    #[serde(default)]
    pub progress: bool,
    /// Submission time, microseconds since the epoch.
    pub submitted_at_us: u64,
}

/// Durable storage of unfinished tasks.
pub trait TaskStore: Send + Sync + 'static {
    /// Writes `task` under `key`, replacing any previous version; durable
    /// when it returns.
    ///
    /// # Errors
    ///
    /// Fails when the write fails; the task is then not stored.
    fn put(&self, key: TaskKey, task: &StoredTask) -> Result<(), StoreError>;

    /// As [`TaskStore::put`], and enters the task in the due-time index at
    /// `due_us`, in the same write.
    ///
    /// # Errors
    ///
    /// Fails when the write fails; then neither is stored.
    fn put_cold(&self, key: TaskKey, task: &StoredTask, due_us: u64) -> Result<(), StoreError>;

    /// Deletes the task under `key`; durable with the next `put` or `flush`.
    ///
    /// # Errors
    ///
    /// Fails when the removal cannot be recorded.
    fn remove(&self, key: TaskKey) -> Result<(), StoreError>;

    /// Makes everything written so far durable.
    ///
    /// # Errors
    ///
    /// Fails when the write fails.
    fn flush(&self) -> Result<(), StoreError>;

    /// Calls `visit` with every stored task, oldest key first.
    ///
    /// # Errors
    ///
    /// Fails on a backend error or an undecodable record.
    fn scan(&self, visit: &mut dyn FnMut(TaskKey, StoredTask)) -> Result<(), StoreError>;

    /// The task stored under `key`.
    ///
    /// # Errors
    ///
    /// Fails on a backend error or an undecodable record.
    fn get(&self, key: TaskKey) -> Result<Option<StoredTask>, StoreError>;

    /// Up to `limit` entries of the due-time index with a due time in
    /// `(after_us, until_us]`, earliest first.
    ///
    /// # Errors
    ///
    /// Fails on a backend error.
    fn due_range(
        &self,
        after_us: u64,
        until_us: u64,
        limit: usize,
    ) -> Result<Vec<(u64, TaskKey)>, StoreError>;

    /// Deletes one entry of the due-time index.
    ///
    /// # Errors
    ///
    /// Fails when the removal cannot be recorded.
    fn remove_due(&self, due_us: u64, key: TaskKey) -> Result<(), StoreError>;

    /// Adds `letter` to its queue's dead letters, durably, then drops the
    /// oldest of that queue beyond `keep`.
    ///
    /// # Errors
    ///
    /// Fails when the write fails.
    fn put_dead(&self, letter: &DeadLetter, keep: usize) -> Result<(), StoreError>;

    /// Up to `limit` of `queue`'s dead letters, newest first, after `cursor`.
    ///
    /// # Errors
    ///
    /// Fails on a backend error or an undecodable record.
    fn dead_letters(
        &self,
        queue: &str,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<DeadPage, StoreError>;

    /// Removes task `id` from `queue`'s dead letters and returns it.
    ///
    /// # Errors
    ///
    /// Fails on a backend error.
    fn take_dead(&self, queue: &str, id: &str) -> Result<Option<DeadLetter>, StoreError>;

    /// Writes a schedule's record (its spec and last firing), durably.
    ///
    /// # Errors
    ///
    /// Fails when the write fails.
    fn put_schedule(&self, record: &ScheduleRecord) -> Result<(), StoreError>;

    /// Deletes schedule `name`, durably.
    ///
    /// # Errors
    ///
    /// Fails when the write fails.
    fn remove_schedule(&self, name: &str) -> Result<(), StoreError>;

    /// Every stored schedule.
    ///
    /// # Errors
    ///
    /// Fails on a backend error or an undecodable record.
    fn load_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError>;

    /// Writes a workflow's record and definition, durably.
    ///
    /// # Errors
    ///
    /// Fails when the write fails; then nothing of it is stored.
    fn put_workflow(&self, meta: &WorkflowMeta, payload: &[u8]) -> Result<(), StoreError>;

    /// Records member `path` of `workflow` as completed with `result`,
    /// durably.
    ///
    /// # Errors
    ///
    /// Fails when the write fails.
    fn put_member_result(
        &self,
        workflow: &str,
        path: &str,
        result: &serde_json::Value,
    ) -> Result<(), StoreError>;

    /// Deletes a workflow's record, durably: after a restart it is gone,
    /// whatever results of it are left.
    ///
    /// # Errors
    ///
    /// Fails when the removal cannot be recorded.
    fn remove_workflow(&self, id: &str) -> Result<(), StoreError>;

    /// Deletes the member results of workflow `id` (whose record is gone).
    ///
    /// # Errors
    ///
    /// Fails when the removal cannot be recorded.
    fn remove_member_results(&self, id: &str) -> Result<(), StoreError>;

    /// Deletes member results whose workflow has no record (left by a
    /// crash between the two removals); returns how many.
    ///
    /// # Errors
    ///
    /// Fails on a backend error.
    fn remove_orphan_results(&self) -> Result<usize, StoreError>;

    /// Why the store cannot write now, if it cannot.
    fn condition(&self) -> Option<String>;

    /// Calls `visit` with every stored workflow.
    ///
    /// # Errors
    ///
    /// Fails on a backend error or an undecodable record.
    fn scan_workflows(&self, visit: &mut dyn FnMut(StoredWorkflow)) -> Result<(), StoreError>;
}
