//! [`HistoryStore`]: task records, the time index, workers and the metric
//! series, in a fjall database of their own (`<data_dir>/history`).
//!
//! Keyspaces:
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `records` | task id | [`TaskRecord`] (JSON) |
//! | `timeline` | submitted_at_us (8 bytes, big-endian) + task id | [`TaskSummary`] (JSON) |
//! | `workers` | client id | [`WorkerInfo`] (JSON) |
//! | `series` | unix ms (8 bytes, big-endian) | [`SeriesPoint`] (JSON) |
//! | `workflows` | workflow id | its final [`WorkflowView`] (JSON) |
//! | `workflow_timeline` | submitted_at_us (8 bytes, big-endian) + workflow id | nothing |
//!
//! A search walks `timeline` newest first and filters on the summaries, so it
//! never reads arguments or results, and pages with a cursor (the last key
//! returned) rather than an offset: page 1,000 costs what page 1 does.
//!
//! The history has its own journal, apart from the queue store's, so its
//! batched writes never wait behind (or delay) a task's acknowledgement.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::Serialize;

use super::activity::{SeriesPoint, WorkerInfo};
use super::{TaskEvent, TaskRecord, TaskState, TaskSummary};
use crate::engine::WorkflowView;

/// Most timeline entries one search reads before it returns what it found
/// with a cursor to go on, so a rare filter over a huge history cannot pin a
/// thread for long.
pub(crate) const MAX_SCAN: usize = 200_000;

/// Most tasks removed by one retention pass; the next pass goes on.
const RETENTION_BATCH: usize = 50_000;

/// Errors of the history store.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The storage engine failed.
    #[error("history store failed")]
    Engine(#[from] fjall::Error),
    /// A record could not be encoded or decoded.
    #[error("history record is unreadable")]
    Codec(#[from] serde_json::Error),
}

/// What to look for in the history. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Exactly this task id.
    pub id: Option<String>,
    /// Queue name.
    pub queue: Option<String>,
    /// Task name.
    pub task: Option<String>,
    /// Worker client id.
    pub worker: Option<String>,
    /// The submitting identity.
    pub requester: Option<String>,
    /// Status.
    pub status: Option<TaskState>,
    /// Submitted at or after (microseconds since the epoch).
    pub since_us: Option<u64>,
    /// Submitted at or before.
    pub until_us: Option<u64>,
    /// Continue after this timeline key (from a previous page).
    pub cursor: Option<Vec<u8>>,
    /// Most tasks to return.
    pub limit: usize,
}

impl TaskFilter {
    fn matches(&self, s: &TaskSummary) -> bool {
        self.queue.as_ref().is_none_or(|q| *q == s.queue)
            && self.task.as_ref().is_none_or(|t| *t == s.task)
            && self
                .worker
                .as_ref()
                .is_none_or(|w| s.worker.as_ref() == Some(w))
            && self
                .requester
                .as_ref()
                .is_none_or(|r| s.requester.as_ref() == Some(r))
            && self.status.is_none_or(|st| st == s.status)
            && self.since_us.is_none_or(|t| s.submitted_at_us >= t)
            && self.until_us.is_none_or(|t| s.submitted_at_us <= t)
    }
}

/// One page of a search, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct TaskPage {
    /// The tasks found.
    pub tasks: Vec<TaskSummary>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// Timeline entries read for this page.
    pub scanned: usize,
    /// Tasks retained in the history, in all.
    pub retained: u64,
}

struct Inner {
    db: Database,
    records: Keyspace,
    timeline: Keyspace,
    workers: Keyspace,
    series: Keyspace,
    workflows: Keyspace,
    workflow_timeline: Keyspace,
    /// Tasks retained (entries of `timeline`).
    count: AtomicU64,
    /// The recorder's backlog, once wired: reads wait for it to catch up.
    backlog: std::sync::OnceLock<Arc<super::Backlog>>,
}

/// The history database. Cheap to clone.
#[derive(Clone)]
pub struct HistoryStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStore")
            .field("retained", &self.retained())
            .finish_non_exhaustive()
    }
}

/// A handle that does not keep the history open.
#[derive(Clone)]
pub struct WeakHistoryStore {
    inner: std::sync::Weak<Inner>,
}

impl WeakHistoryStore {
    /// The store, if it is still open.
    pub fn upgrade(&self) -> Option<HistoryStore> {
        self.inner.upgrade().map(|inner| HistoryStore { inner })
    }
}

/// A record being changed in one batch, and where its disk version sits in
/// the timeline (to move or count it).
struct Pending {
    record: TaskRecord,
    stored_at_us: Option<u64>,
}

impl HistoryStore {
    /// Opens (or creates) the history under `dir/history`.
    ///
    /// # Errors
    ///
    /// Fails when the database cannot be opened or its index counted.
    pub fn open(dir: &Path) -> Result<HistoryStore, HistoryError> {
        std::fs::create_dir_all(dir).map_err(|e| HistoryError::Engine(e.into()))?;
        // A small cache and write buffer keep the broker's memory flat however
        // long the history grows: it lives on disk, not in RAM.
        let db = Database::builder(dir.join("history"))
            .worker_threads(1)
            .cache_size(16 * 1024 * 1024)
            .open()?;
        let small_memtable =
            || KeyspaceCreateOptions::default().max_memtable_size(16 * 1024 * 1024);
        let records = db.keyspace("records", small_memtable)?;
        let timeline = db.keyspace("timeline", small_memtable)?;
        let workers = db.keyspace("workers", KeyspaceCreateOptions::default)?;
        let series = db.keyspace("series", KeyspaceCreateOptions::default)?;
        let workflows = db.keyspace("workflows", small_memtable)?;
        let workflow_timeline = db.keyspace("workflow_timeline", KeyspaceCreateOptions::default)?;
        let count = timeline.len()? as u64;
        Ok(HistoryStore {
            inner: Arc::new(Inner {
                db,
                records,
                timeline,
                workers,
                series,
                workflows,
                workflow_timeline,
                count: AtomicU64::new(count),
                backlog: std::sync::OnceLock::new(),
            }),
        })
    }

    /// A weak handle.
    pub fn downgrade(&self) -> WeakHistoryStore {
        WeakHistoryStore {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Tasks retained.
    pub fn retained(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    /// Lets reads wait for the recorder that feeds this store
    /// ([`HistoryStore::read`]). Only the first call takes effect.
    pub fn attach_backlog(&self, backlog: Arc<super::Backlog>) {
        let _ = self.inner.backlog.set(backlog);
    }

    /// The record of task `id` as of now: first waits until the recorder has
    /// written every event sent before this call (at most
    /// [`READ_YOUR_WRITES_WAIT`](super::READ_YOUR_WRITES_WAIT)), so a client
    /// that has its result, or its acknowledgement, finds the task here.
    ///
    /// # Errors
    ///
    /// Fails on an engine error or an unreadable record.
    pub async fn read(&self, id: &str) -> Result<Option<TaskRecord>, HistoryError> {
        if let Some(b) = self.inner.backlog.get() {
            b.caught_up().await;
        }
        self.get(id)
    }

    /// The final state of workflow `id`, once every event sent before this
    /// call is written (as [`HistoryStore::read`]).
    ///
    /// # Errors
    ///
    /// Fails on an engine error or an unreadable record.
    pub async fn read_workflow(&self, id: &str) -> Result<Option<WorkflowView>, HistoryError> {
        if let Some(b) = self.inner.backlog.get() {
            b.caught_up().await;
        }
        match self.inner.workflows.get(id)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Ids of the finished workflows, newest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// Fails on an engine error.
    pub fn recent_workflows(&self, limit: usize) -> Result<Vec<String>, HistoryError> {
        let mut out = Vec::new();
        for guard in self.inner.workflow_timeline.iter().rev().take(limit) {
            let k = guard.key()?;
            out.push(String::from_utf8_lossy(k.get(8..).unwrap_or_default()).into_owned());
        }
        Ok(out)
    }

    /// The record of task `id` as written so far.
    ///
    /// # Errors
    ///
    /// Fails on an engine error or an unreadable record.
    pub fn get(&self, id: &str) -> Result<Option<TaskRecord>, HistoryError> {
        match self.inner.records.get(id)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Folds a batch of events into one write per task, and hands it to the OS.
    /// Takes the events by value: arguments and results move into the
    /// records instead of being copied.
    ///
    /// # Errors
    ///
    /// Fails when a record cannot be read or the batch cannot be written.
    pub fn apply(&self, events: impl IntoIterator<Item = TaskEvent>) -> Result<(), HistoryError> {
        let events = events.into_iter();
        let mut pending: HashMap<String, Pending> = HashMap::with_capacity(events.size_hint().0);
        let mut workflows: Vec<Box<WorkflowView>> = Vec::new();
        for event in events {
            match event {
                TaskEvent::Submitted(task) => {
                    let stored_at_us = match pending.remove(&task.id) {
                        Some(p) => p.stored_at_us,
                        None => self.get(&task.id)?.map(|r| r.summary.submitted_at_us),
                    };
                    pending.insert(
                        task.id.clone(),
                        Pending {
                            record: TaskRecord::queued(*task),
                            stored_at_us,
                        },
                    );
                }
                TaskEvent::Started {
                    id,
                    worker,
                    attempt,
                    at_us,
                } => {
                    if let Some(p) = self.pending(&mut pending, &id)? {
                        let s = &mut p.record.summary;
                        s.status = TaskState::Running;
                        s.worker = Some(worker);
                        s.attempts = attempt;
                        s.started_at_us = Some(at_us);
                    }
                }
                TaskEvent::Requeued {
                    id,
                    reason,
                    due_us,
                    lost,
                    ..
                } => {
                    if let Some(p) = self.pending(&mut pending, &id)? {
                        p.record.lost_deliveries += u32::from(lost);
                        p.record.summary.status = if due_us.is_some() {
                            TaskState::Scheduled
                        } else {
                            TaskState::Queued
                        };
                        p.record.due_at_us = due_us;
                        p.record.error = Some(reason);
                    }
                }
                TaskEvent::Ready { id, .. } => {
                    if let Some(p) = self.pending(&mut pending, &id)? {
                        p.record.summary.status = TaskState::Queued;
                    }
                }
                TaskEvent::Progress { id, progress, .. } => {
                    if let Some(p) = self.pending(&mut pending, &id)? {
                        p.record.progress = Some(progress);
                    }
                }
                TaskEvent::Finished {
                    id,
                    status,
                    result,
                    error,
                    worker,
                    attempts,
                    at_us,
                    ..
                } => {
                    if let Some(p) = self.pending(&mut pending, &id)? {
                        let s = &mut p.record.summary;
                        s.status = TaskState::from(status);
                        if worker.is_some() {
                            s.worker = worker;
                        }
                        s.attempts = attempts;
                        s.finished_at_us = Some(at_us);
                        p.record.result = result;
                        p.record.error = error;
                    }
                }
                TaskEvent::Rejected {
                    id,
                    queue,
                    error,
                    reply,
                    at_us,
                } => {
                    // Never overwrite a real task's record with a refused
                    // resubmission of its id.
                    if pending.contains_key(&id) || self.get(&id)?.is_some() {
                        continue;
                    }
                    let record = TaskRecord::rejected(&id, &queue, &error, reply, at_us);
                    pending.insert(
                        id,
                        Pending {
                            record,
                            stored_at_us: None,
                        },
                    );
                }
                TaskEvent::WorkerSeen { .. } | TaskEvent::WorkerLeft { .. } => {}
                TaskEvent::WorkflowFinished(view) => workflows.push(view),
            }
        }
        if pending.is_empty() && workflows.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let mut batch = inner.db.batch().durability(Some(PersistMode::Buffer));
        for view in workflows {
            batch.insert(
                &inner.workflow_timeline,
                timeline_key(view.submitted_at_us, &view.id),
                [],
            );
            batch.insert(
                &inner.workflows,
                view.id.as_bytes(),
                serde_json::to_vec(&view)?,
            );
        }
        let mut added = 0u64;
        for (id, p) in pending {
            let s = &p.record.summary;
            match p.stored_at_us {
                None => added += 1,
                Some(old) if old != s.submitted_at_us => {
                    batch.remove(&inner.timeline, timeline_key(old, &id));
                }
                Some(_) => {}
            }
            batch.insert(
                &inner.timeline,
                timeline_key(s.submitted_at_us, &id),
                serde_json::to_vec(s)?,
            );
            batch.insert(&inner.records, id, serde_json::to_vec(&p.record)?);
        }
        batch.commit()?;
        inner.count.fetch_add(added, Ordering::Relaxed);
        Ok(())
    }

    /// The pending version of `id`, read from disk on first use. `None` when
    /// the history does not know the task (retention removed it).
    fn pending<'a>(
        &self,
        pending: &'a mut HashMap<String, Pending>,
        id: &str,
    ) -> Result<Option<&'a mut Pending>, HistoryError> {
        if !pending.contains_key(id) {
            let Some(record) = self.get(id)? else {
                return Ok(None);
            };
            let stored_at_us = Some(record.summary.submitted_at_us);
            pending.insert(
                id.to_string(),
                Pending {
                    record,
                    stored_at_us,
                },
            );
        }
        Ok(pending.get_mut(id))
    }

    /// Finds tasks, newest first.
    ///
    /// # Errors
    ///
    /// Fails on an engine error or an unreadable entry.
    pub fn search(&self, filter: &TaskFilter) -> Result<TaskPage, HistoryError> {
        let retained = self.retained();
        if let Some(id) = &filter.id {
            let tasks = match self.get(id)? {
                Some(r) if filter.matches(&r.summary) => vec![r.summary],
                _ => Vec::new(),
            };
            return Ok(TaskPage {
                tasks,
                next_cursor: None,
                scanned: 1,
                retained,
            });
        }
        let lower = Bound::Included(filter.since_us.unwrap_or(0).to_be_bytes().to_vec());
        let upper = match (&filter.cursor, filter.until_us) {
            (Some(c), _) => Bound::Excluded(c.clone()),
            (None, Some(t)) => match t.checked_add(1) {
                Some(t) => Bound::Excluded(t.to_be_bytes().to_vec()),
                None => Bound::Unbounded,
            },
            (None, None) => Bound::Unbounded,
        };
        let limit = filter.limit.max(1);
        let mut tasks = Vec::with_capacity(limit.min(1024));
        let mut last_key: Option<Vec<u8>> = None;
        let mut scanned = 0;
        let mut next_cursor = None;
        for guard in self.inner.timeline.range((lower, upper)).rev() {
            let (k, v) = guard.into_inner()?;
            scanned += 1;
            let summary: TaskSummary = serde_json::from_slice(&v)?;
            if filter.matches(&summary) {
                if tasks.len() == limit {
                    // One more match exists: the page is full and not the last.
                    next_cursor = last_key.take();
                    break;
                }
                tasks.push(summary);
                last_key = Some(k.to_vec());
            }
            if scanned >= MAX_SCAN {
                // Stop here, and let the caller go on from this entry.
                next_cursor = Some(k.to_vec());
                break;
            }
        }
        Ok(TaskPage {
            tasks,
            next_cursor: next_cursor.map(|k| hex(&k)),
            scanned,
            retained,
        })
    }

    /// Removes the oldest tasks while more than `max_tasks` are kept or they
    /// were submitted before `cutoff_us`; at most a batch per call. Returns
    /// how many were removed.
    ///
    /// # Errors
    ///
    /// Fails on an engine error.
    pub fn enforce_retention(&self, max_tasks: u64, cutoff_us: u64) -> Result<usize, HistoryError> {
        let inner = &self.inner;
        let mut count = self.retained();
        let mut batch = inner.db.batch().durability(Some(PersistMode::Buffer));
        let mut removed = 0;
        for guard in inner.timeline.iter() {
            if removed >= RETENTION_BATCH {
                break;
            }
            let key = guard.key()?;
            let ts = key
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes);
            if count <= max_tasks && ts >= cutoff_us {
                break;
            }
            batch.remove(&inner.records, key.get(8..).unwrap_or_default().to_vec());
            batch.remove(&inner.timeline, key.to_vec());
            count = count.saturating_sub(1);
            removed += 1;
        }
        if removed > 0 {
            batch.commit()?;
            inner.count.fetch_sub(removed as u64, Ordering::Relaxed);
        }
        Ok(removed)
    }

    /// Saves worker entries.
    ///
    /// # Errors
    ///
    /// Fails on an engine error.
    pub fn save_workers(&self, workers: &[WorkerInfo]) -> Result<(), HistoryError> {
        let mut batch = self.inner.db.batch().durability(Some(PersistMode::Buffer));
        for w in workers {
            batch.insert(&self.inner.workers, w.id.as_str(), serde_json::to_vec(w)?);
        }
        batch.commit()?;
        Ok(())
    }

    /// Forgets workers.
    ///
    /// # Errors
    ///
    /// Fails on an engine error.
    pub fn remove_workers(&self, ids: &[String]) -> Result<(), HistoryError> {
        let mut batch = self.inner.db.batch().durability(Some(PersistMode::Buffer));
        for id in ids {
            batch.remove(&self.inner.workers, id.as_str());
        }
        batch.commit()?;
        Ok(())
    }

    /// Every saved worker.
    ///
    /// # Errors
    ///
    /// Fails on an engine error or an unreadable entry.
    pub fn load_workers(&self) -> Result<Vec<WorkerInfo>, HistoryError> {
        let mut out = Vec::new();
        for guard in self.inner.workers.iter() {
            let (_, v) = guard.into_inner()?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    /// Saves one point of the metric series and drops points before `cutoff_ms`.
    ///
    /// # Errors
    ///
    /// Fails on an engine error.
    pub fn save_point(&self, point: &SeriesPoint, cutoff_ms: u64) -> Result<(), HistoryError> {
        let series = &self.inner.series;
        let mut batch = self.inner.db.batch().durability(Some(PersistMode::Buffer));
        batch.insert(series, point.t_ms.to_be_bytes(), serde_json::to_vec(point)?);
        for guard in series.range(..cutoff_ms.to_be_bytes()) {
            batch.remove(series, guard.key()?.to_vec());
        }
        batch.commit()?;
        Ok(())
    }

    /// Points of the metric series from `since_ms` on, oldest first.
    ///
    /// # Errors
    ///
    /// Fails on an engine error or an unreadable entry.
    pub fn load_points(&self, since_ms: u64) -> Result<Vec<SeriesPoint>, HistoryError> {
        let mut out = Vec::new();
        for guard in self.inner.series.range(since_ms.to_be_bytes()..) {
            let (_, v) = guard.into_inner()?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    /// Hands everything written to the OS; called on shutdown.
    ///
    /// # Errors
    ///
    /// Fails when the journal cannot be written.
    pub fn flush(&self) -> Result<(), HistoryError> {
        self.inner.db.persist(PersistMode::SyncData)?;
        Ok(())
    }
}

fn timeline_key(submitted_at_us: u64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + id.len());
    k.extend_from_slice(&submitted_at_us.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// Lowercase hex of `bytes`: the cursor as the API shows it.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Parses a cursor back into a timeline key.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() < 16 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StoredTask;
    use swarmq_worker::wire::Status;

    fn submitted(id: &str, queue: &str, at: u64) -> TaskEvent {
        TaskEvent::Submitted(Box::new(StoredTask {
            submitted_at_us: at,
            ..StoredTask::new(id, queue, "t", vec![serde_json::json!(id)])
        }))
    }

    fn finished(id: &str, status: Status, at: u64) -> TaskEvent {
        TaskEvent::Finished {
            id: id.into(),
            queue: "q".into(),
            status,
            result: Some(serde_json::json!(1)),
            error: None,
            worker: Some("w1".into()),
            attempts: 1,
            at_us: at,
            latency_us: 1,
        }
    }

    #[test]
    fn events_fold_into_records_that_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let h = HistoryStore::open(dir.path()).unwrap();
            h.apply([submitted("a", "q", 10), submitted("b", "q", 20)])
                .unwrap();
            h.apply([
                TaskEvent::Started {
                    id: "a".into(),
                    worker: "w1".into(),
                    attempt: 1,
                    at_us: 11,
                },
                finished("a", Status::Success, 15),
            ])
            .unwrap();
            assert_eq!(h.retained(), 2);
        }
        let h = HistoryStore::open(dir.path()).unwrap();
        assert_eq!(h.retained(), 2);
        let a = h.get("a").unwrap().unwrap();
        assert_eq!(a.summary.status, TaskState::Success);
        assert_eq!(a.summary.worker.as_deref(), Some("w1"));
        assert_eq!(a.queued_ms(), Some(0.001));
        assert_eq!(a.run_ms(), Some(0.004));
        assert_eq!(a.result, Some(serde_json::json!(1)));
        assert_eq!(
            h.get("b").unwrap().unwrap().summary.status,
            TaskState::Queued
        );
        assert!(h.get("zzz").unwrap().is_none());
    }

    #[test]
    fn search_filters_and_pages_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let h = HistoryStore::open(dir.path()).unwrap();
        let events: Vec<TaskEvent> = (0..25)
            .map(|i| {
                submitted(
                    &format!("t{i:02}"),
                    if i % 2 == 0 { "even" } else { "odd" },
                    100 + i,
                )
            })
            .collect();
        h.apply(events).unwrap();
        let mut filter = TaskFilter {
            queue: Some("even".into()),
            limit: 5,
            ..TaskFilter::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = h.search(&filter).unwrap();
            seen.extend(page.tasks.iter().map(|t| t.id.clone()));
            match page.next_cursor {
                Some(c) => filter.cursor = Some(unhex(&c).unwrap()),
                None => break,
            }
        }
        let expected: Vec<String> = (0..25)
            .rev()
            .filter(|i| i % 2 == 0)
            .map(|i| format!("t{i:02}"))
            .collect();
        assert_eq!(seen, expected);

        let window = h
            .search(&TaskFilter {
                since_us: Some(110),
                until_us: Some(112),
                limit: 100,
                ..TaskFilter::default()
            })
            .unwrap();
        let ids: Vec<_> = window.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t12", "t11", "t10"]);
        assert!(window.next_cursor.is_none());
    }

    #[test]
    fn resubmission_moves_the_task_in_the_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let h = HistoryStore::open(dir.path()).unwrap();
        h.apply([submitted("a", "q", 10), finished("a", Status::Failure, 12)])
            .unwrap();
        h.apply([submitted("a", "q", 50)]).unwrap();
        assert_eq!(h.retained(), 1);
        let page = h
            .search(&TaskFilter {
                limit: 10,
                ..TaskFilter::default()
            })
            .unwrap();
        assert_eq!(page.tasks.len(), 1);
        assert_eq!(page.tasks[0].submitted_at_us, 50);
        assert_eq!(page.tasks[0].status, TaskState::Queued);
    }

    #[test]
    fn retention_removes_the_oldest_by_count_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let h = HistoryStore::open(dir.path()).unwrap();
        let events: Vec<TaskEvent> = (0..10)
            .map(|i| submitted(&format!("t{i}"), "q", 100 + i))
            .collect();
        h.apply(events).unwrap();
        assert_eq!(h.enforce_retention(6, 0).unwrap(), 4);
        assert_eq!(h.retained(), 6);
        assert!(h.get("t3").unwrap().is_none());
        assert!(h.get("t4").unwrap().is_some());
        assert_eq!(h.enforce_retention(100, 107).unwrap(), 3);
        assert_eq!(h.retained(), 3);
        assert!(h.get("t7").unwrap().is_some());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let key = timeline_key(42, "abc");
        assert_eq!(unhex(&hex(&key)), Some(key));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("0011"), None);
        assert_eq!(unhex("00112233445566778"), None);
    }
}
