//! [`FjallStore`]: the fjall-backed durable record of accepted tasks.
//!
//! [`FjallStore::put`] appends to fjall's journal and hands it to the operating
//! system before it returns (`PersistMode::Buffer`), so a task whose `put`
//! returned survives `kill -9` of the broker; `SyncMode::Fsync` also flushes it
//! to the disk, for power loss. That is one write syscall of a few
//! microseconds without fsync, which is why the engine may call it on the
//! publish path.
//!
//! [`FjallStore::remove`] only appends to the journal's in-process buffer; the
//! next `put` (or [`FjallStore::flush`]) carries it to the OS in the same
//! syscall. A crash can therefore forget a removal, never an insertion: the
//! task then runs once more after the restart, which at-least-once delivery
//! allows. This halves the syscalls per task.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::engine::{
    DeadLetter, DeadPage, ScheduleRecord, StoreError, StoredTask, StoredWorkflow, TaskKey,
    TaskStore, WorkflowMeta,
};

/// How far a write goes before `put`/`remove` return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Into the OS page cache: survives a process crash, not a power loss.
    Buffer,
    /// Onto the disk (fdatasync per write): survives a power loss too.
    Fsync,
}

/// The durable task store.
///
/// fjall refuses every write once one has failed (its journal's state is
/// then unknown). So a failed write (a full disk, most often) marks the
/// store as failing with its cause, [`TaskStore::condition`] reports it, and
/// at most once a second a call reopens the database, which replays the
/// journal (dropping a torn last entry) and goes on with what was durable:
/// writes resume by themselves once space is back.
pub struct FjallStore {
    dir: std::path::PathBuf,
    sync: SyncMode,
    /// The open database; `None` only while it is being reopened.
    open: RwLock<Option<Arc<Handles>>>,
    /// Why writes fail, since when the store is failing.
    failure: Mutex<Option<Failure>>,
    /// Records whose write failed: it may have reached the journal all the
    /// same. They are deleted as soon as the store is reopened, so that a
    /// submission refused is never stored ("nothing unacknowledged is
    /// half-stored").
    doubtful: Mutex<Vec<(Doubt, Vec<u8>)>>,
    /// Dead letters per queue, counted at open and kept in step.
    dead_counts: Mutex<HashMap<String, usize>>,
}

/// The keyspace of a doubtful record.
#[derive(Debug, Clone, Copy)]
enum Doubt {
    Tasks,
    Due,
    Workflows,
}

#[derive(Debug)]
struct Failure {
    reason: String,
    last_try: std::time::Instant,
}

/// How often a failing store tries to reopen its database.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The database and its keyspaces.
struct Handles {
    db: Database,
    tasks: Keyspace,
    /// Dead letters: `<queue>/` + failed_at_us (8 bytes, big-endian) + task id.
    /// `/` cannot occur in a queue name, so each queue is one key prefix.
    dead: Keyspace,
    /// Schedules: name → [`ScheduleRecord`].
    schedules: Keyspace,
    /// The due-time index: due_us (8 bytes, big-endian) + task key → nothing.
    due: Keyspace,
    /// Workflows: id → meta length (4 bytes, big-endian) + meta JSON + payload.
    workflows: Keyspace,
    /// Member results: workflow id + NUL + member path → result JSON.
    /// Workflow ids hold no NUL, so each workflow is one key prefix.
    member_results: Keyspace,
}

impl Handles {
    fn open(dir: &Path) -> Result<Handles, fjall::Error> {
        // Two background threads are enough for flushes and compaction on a
        // small machine; fjall's default would take every core up to four.
        let db = Database::builder(dir.join("queues"))
            .worker_threads(2)
            .open()?;
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        Ok(Handles {
            tasks: ks("tasks")?,
            dead: ks("dead")?,
            schedules: ks("schedules")?,
            due: ks("due")?,
            workflows: ks("workflows")?,
            member_results: ks("member_results")?,
            db,
        })
    }
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

impl FjallStore {
    /// Opens (or creates) the store under `dir`, replaying its journal.
    ///
    /// # Errors
    ///
    /// Fails when the directory cannot be created or the database is corrupt
    /// or locked by another process.
    pub fn open(dir: &Path, sync: SyncMode) -> Result<FjallStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(Box::new(e)))?;
        let h = Handles::open(dir).map_err(backend)?;
        let mut counts = HashMap::new();
        for guard in h.dead.iter() {
            let k = guard.key().map_err(backend)?;
            if let Some(queue) = dead_queue(&k) {
                *counts.entry(queue.to_string()).or_insert(0) += 1;
            }
        }
        Ok(FjallStore {
            dir: dir.to_path_buf(),
            sync,
            open: RwLock::new(Some(Arc::new(h))),
            failure: Mutex::new(None),
            doubtful: Mutex::new(Vec::new()),
            dead_counts: Mutex::new(counts),
        })
    }

    /// The open database, or, while the store is failing, a fresh one once
    /// a second (the error otherwise).
    fn h(&self) -> Result<Arc<Handles>, StoreError> {
        let mut failure = self.failure.lock();
        let Some(f) = failure.as_mut() else {
            drop(failure);
            if let Some(h) = self.open.read().clone() {
                return Ok(h);
            }
            return Err(StoreError::Unavailable(
                "the queue store is being reopened".into(),
            ));
        };
        if f.last_try.elapsed() < REOPEN_EVERY {
            return Err(StoreError::Unavailable(f.reason.clone()));
        }
        f.last_try = std::time::Instant::now();
        // Every handle of the poisoned database must go before it can be
        // opened again (it holds a lock file); a call still holding one
        // makes this attempt fail, and the next second tries again.
        let mut open = self.open.write();
        *open = None;
        match Handles::open(&self.dir).and_then(|h| self.forget_doubtful(h)) {
            Ok(h) => {
                let h = Arc::new(h);
                *open = Some(h.clone());
                tracing::warn!(was = %f.reason, "queue store reopened; writes resume");
                *failure = None;
                Ok(h)
            }
            Err(e) => {
                f.reason = describe(&e);
                Err(StoreError::Unavailable(f.reason.clone()))
            }
        }
    }

    /// Makes what was written to `h` durable, as `store.sync` says.
    fn persist(&self, h: &Handles) -> Result<(), StoreError> {
        let mode = match self.sync {
            SyncMode::Buffer => PersistMode::Buffer,
            SyncMode::Fsync => PersistMode::SyncData,
        };
        h.db.persist(mode).map_err(|e| self.fail(e))
    }

    /// Deletes, durably, the records whose write failed before the store
    /// was reopened as `h`.
    fn forget_doubtful(&self, h: Handles) -> Result<Handles, fjall::Error> {
        let mut doubtful = self.doubtful.lock();
        if doubtful.is_empty() {
            return Ok(h);
        }
        let mut batch = h.db.batch().durability(Some(PersistMode::Buffer));
        for (ks, key) in doubtful.iter() {
            let keyspace = match ks {
                Doubt::Tasks => &h.tasks,
                Doubt::Due => &h.due,
                Doubt::Workflows => &h.workflows,
            };
            batch.remove(keyspace, key.clone());
        }
        batch.commit()?;
        h.db.persist(PersistMode::Buffer)?;
        tracing::info!(
            records = doubtful.len(),
            "deleted the records whose write had failed"
        );
        doubtful.clear();
        Ok(h)
    }

    /// Passes `written` on; when it failed, remembers the records `keys`
    /// names as doubtful.
    fn doubt_on_error(
        &self,
        written: Result<(), StoreError>,
        keys: impl FnOnce() -> Vec<(Doubt, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        if written.is_err() {
            self.doubtful.lock().extend(keys());
        }
        written
    }

    /// Marks the store as failing for `e` (a write that did not happen) and
    /// returns the error to hand on.
    fn fail(&self, e: fjall::Error) -> StoreError {
        let reason = describe(&e);
        let mut failure = self.failure.lock();
        if failure.is_none() {
            tracing::error!(error = %reason, "the queue store cannot write; submissions are refused until it can");
            *failure = Some(Failure {
                reason: reason.clone(),
                last_try: std::time::Instant::now(),
            });
        }
        StoreError::Unavailable(reason)
    }
}

/// An error with its causes, as an operator reads it ("No space left on
/// device (os error 28)").
fn describe(e: &fjall::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

fn backend(e: fjall::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn due_key(due_us: u64, key: TaskKey) -> Vec<u8> {
    let mut k = due_us.to_be_bytes().to_vec();
    k.extend_from_slice(&key.to_bytes());
    k
}

fn results_prefix(workflow: &str) -> Vec<u8> {
    let mut k = workflow.as_bytes().to_vec();
    k.push(0);
    k
}

fn corrupt(key: &[u8], source: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    }
}

fn dead_prefix(queue: &str) -> Vec<u8> {
    let mut k = queue.as_bytes().to_vec();
    k.push(b'/');
    k
}

fn dead_key(letter: &DeadLetter) -> Vec<u8> {
    let mut k = dead_prefix(&letter.task.queue);
    k.extend_from_slice(&letter.failed_at_us.to_be_bytes());
    k.extend_from_slice(letter.task.id.as_bytes());
    k
}

fn dead_queue(key: &[u8]) -> Option<&str> {
    let slash = key.iter().position(|b| *b == b'/')?;
    std::str::from_utf8(&key[..slash]).ok()
}

impl FjallStore {
    fn dead_count(&self, queue: &str, delta: isize) -> usize {
        let mut counts = self.dead_counts.lock();
        let n = counts.entry(queue.to_string()).or_insert(0);
        *n = n.saturating_add_signed(delta);
        *n
    }

    fn decode_dead(key: &[u8], value: &[u8]) -> Result<DeadLetter, StoreError> {
        serde_json::from_slice(value).map_err(|source| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            source,
        })
    }
}

impl TaskStore for FjallStore {
    fn put(&self, key: TaskKey, task: &StoredTask) -> Result<(), StoreError> {
        let h = self.h()?;
        let value = serde_json::to_vec(task).map_err(StoreError::Encode)?;
        let written = h
            .tasks
            .insert(key.to_bytes(), value)
            .map_err(|e| self.fail(e))
            .and_then(|()| self.persist(&h));
        self.doubt_on_error(written, || vec![(Doubt::Tasks, key.to_bytes().to_vec())])
    }

    fn put_cold(&self, key: TaskKey, task: &StoredTask, due_us: u64) -> Result<(), StoreError> {
        let h = self.h()?;
        let value = serde_json::to_vec(task).map_err(StoreError::Encode)?;
        // Record and due-time entry in one batch, so neither exists alone.
        let mut batch = h.db.batch().durability(Some(PersistMode::Buffer));
        batch.insert(&h.tasks, key.to_bytes(), value);
        batch.insert(&h.due, due_key(due_us, key), []);
        let written = batch
            .commit()
            .map_err(|e| self.fail(e))
            .and_then(|()| self.persist(&h));
        self.doubt_on_error(written, || {
            vec![
                (Doubt::Tasks, key.to_bytes().to_vec()),
                (Doubt::Due, due_key(due_us, key)),
            ]
        })
    }

    fn remove(&self, key: TaskKey) -> Result<(), StoreError> {
        let h = self.h()?;
        h.tasks.remove(key.to_bytes()).map_err(|e| self.fail(e))
    }

    fn flush(&self) -> Result<(), StoreError> {
        let h = self.h()?;
        self.persist(&h)
    }

    fn scan(&self, visit: &mut dyn FnMut(TaskKey, StoredTask)) -> Result<(), StoreError> {
        let h = self.h()?;
        for guard in h.tasks.iter() {
            let (k, v) = guard.into_inner().map_err(|e| self.fail(e))?;
            let Some(key) = TaskKey::from_slice(&k) else {
                tracing::warn!(len = k.len(), "skipping a store key of unexpected length");
                continue;
            };
            let task = serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                key: key.0.to_string(),
                source,
            })?;
            visit(key, task);
        }
        Ok(())
    }

    fn get(&self, key: TaskKey) -> Result<Option<StoredTask>, StoreError> {
        let h = self.h()?;
        let Some(v) = h.tasks.get(key.to_bytes()).map_err(|e| self.fail(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                key: key.0.to_string(),
                source,
            })
    }

    fn due_range(
        &self,
        after_us: u64,
        until_us: u64,
        limit: usize,
    ) -> Result<Vec<(u64, TaskKey)>, StoreError> {
        let h = self.h()?;
        let from = after_us.saturating_add(1).to_be_bytes();
        let mut to = until_us.to_be_bytes().to_vec();
        to.extend_from_slice(&[0xff; 16]);
        let mut out = Vec::new();
        for guard in h.due.range(from.to_vec()..=to) {
            if out.len() >= limit {
                break;
            }
            let k = guard.key().map_err(|e| self.fail(e))?;
            let (Some(due), Some(key)) = (
                k.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes),
                k.get(8..).and_then(TaskKey::from_slice),
            ) else {
                continue;
            };
            out.push((due, key));
        }
        Ok(out)
    }

    fn remove_due(&self, due_us: u64, key: TaskKey) -> Result<(), StoreError> {
        let h = self.h()?;
        h.due.remove(due_key(due_us, key)).map_err(|e| self.fail(e))
    }

    fn put_dead(&self, letter: &DeadLetter, keep: usize) -> Result<(), StoreError> {
        let h = self.h()?;
        let value = serde_json::to_vec(letter).map_err(StoreError::Encode)?;
        h.dead
            .insert(dead_key(letter), value)
            .map_err(|e| self.fail(e))?;
        let mut n = self.dead_count(&letter.task.queue, 1);
        while n > keep.max(1) {
            let oldest = h
                .dead
                .prefix(dead_prefix(&letter.task.queue))
                .next()
                .map(|g| g.key())
                .transpose()
                .map_err(|e| self.fail(e))?;
            let Some(oldest) = oldest else { break };
            h.dead.remove(oldest).map_err(|e| self.fail(e))?;
            n = self.dead_count(&letter.task.queue, -1);
        }
        self.persist(&h)
    }

    fn dead_letters(
        &self,
        queue: &str,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<DeadPage, StoreError> {
        let h = self.h()?;
        let prefix = dead_prefix(queue);
        let mut letters = Vec::new();
        let mut last = None;
        let mut more = false;
        for guard in h.dead.prefix(&prefix).rev() {
            let (k, v) = guard.into_inner().map_err(|e| self.fail(e))?;
            if cursor.is_some_and(|c| k.as_ref() >= c) {
                continue;
            }
            if letters.len() == limit {
                more = true;
                break;
            }
            letters.push(FjallStore::decode_dead(&k, &v)?);
            last = Some(k.to_vec());
        }
        Ok(DeadPage {
            letters,
            next_cursor: if more { last } else { None },
            total: self.dead_count(queue, 0),
        })
    }

    fn put_schedule(&self, record: &ScheduleRecord) -> Result<(), StoreError> {
        let h = self.h()?;
        let value = serde_json::to_vec(record).map_err(StoreError::Encode)?;
        h.schedules
            .insert(record.spec.name.as_bytes(), value)
            .map_err(|e| self.fail(e))?;
        self.persist(&h)
    }

    fn remove_schedule(&self, name: &str) -> Result<(), StoreError> {
        let h = self.h()?;
        h.schedules
            .remove(name.as_bytes())
            .map_err(|e| self.fail(e))?;
        self.persist(&h)
    }

    fn load_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        let h = self.h()?;
        let mut out = Vec::new();
        for guard in h.schedules.iter() {
            let (k, v) = guard.into_inner().map_err(|e| self.fail(e))?;
            out.push(
                serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    source,
                })?,
            );
        }
        Ok(out)
    }

    fn take_dead(&self, queue: &str, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let h = self.h()?;
        for guard in h.dead.prefix(dead_prefix(queue)) {
            let (k, v) = guard.into_inner().map_err(|e| self.fail(e))?;
            if k.ends_with(id.as_bytes()) && k.len() == dead_prefix(queue).len() + 8 + id.len() {
                let letter = FjallStore::decode_dead(&k, &v)?;
                h.dead.remove(k).map_err(|e| self.fail(e))?;
                self.dead_count(queue, -1);
                self.persist(&h)?;
                return Ok(Some(letter));
            }
        }
        Ok(None)
    }

    fn put_workflow(&self, meta: &WorkflowMeta, payload: &[u8]) -> Result<(), StoreError> {
        let h = self.h()?;
        let meta_json = serde_json::to_vec(meta).map_err(StoreError::Encode)?;
        let len = u32::try_from(meta_json.len())
            .map_err(|_| StoreError::Backend("workflow record too large".into()))?;
        let mut value = Vec::with_capacity(4 + meta_json.len() + payload.len());
        value.extend_from_slice(&len.to_be_bytes());
        value.extend_from_slice(&meta_json);
        value.extend_from_slice(payload);
        let written = h
            .workflows
            .insert(meta.id.as_bytes(), value)
            .map_err(|e| self.fail(e))
            .and_then(|()| self.persist(&h));
        self.doubt_on_error(written, || {
            vec![(Doubt::Workflows, meta.id.as_bytes().to_vec())]
        })
    }

    fn put_member_result(
        &self,
        workflow: &str,
        path: &str,
        result: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let h = self.h()?;
        let value = serde_json::to_vec(result).map_err(StoreError::Encode)?;
        let mut key = results_prefix(workflow);
        key.extend_from_slice(path.as_bytes());
        h.member_results
            .insert(key, value)
            .map_err(|e| self.fail(e))?;
        self.persist(&h)
    }

    fn remove_workflow(&self, id: &str) -> Result<(), StoreError> {
        let h = self.h()?;
        h.workflows
            .remove(id.as_bytes())
            .map_err(|e| self.fail(e))?;
        self.persist(&h)
    }

    fn remove_member_results(&self, id: &str) -> Result<(), StoreError> {
        let h = self.h()?;
        let mut batch = h.db.batch().durability(Some(PersistMode::Buffer));
        for guard in h.member_results.prefix(results_prefix(id)) {
            batch.remove(&h.member_results, guard.key().map_err(|e| self.fail(e))?);
        }
        batch.commit().map_err(|e| self.fail(e))
    }

    fn remove_orphan_results(&self) -> Result<usize, StoreError> {
        let h = self.h()?;
        let mut orphans = Vec::new();
        for guard in h.member_results.iter() {
            let k = guard.key().map_err(|e| self.fail(e))?;
            let Some(nul) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            if !h
                .workflows
                .contains_key(&k[..nul])
                .map_err(|e| self.fail(e))?
            {
                orphans.push(k.to_vec());
            }
        }
        let mut batch = h.db.batch().durability(Some(PersistMode::Buffer));
        for k in &orphans {
            batch.remove(&h.member_results, k.clone());
        }
        batch.commit().map_err(|e| self.fail(e))?;
        Ok(orphans.len())
    }

    fn condition(&self) -> Option<String> {
        self.failure.lock().as_ref().map(|f| f.reason.clone())
    }

    fn scan_workflows(&self, visit: &mut dyn FnMut(StoredWorkflow)) -> Result<(), StoreError> {
        let h = self.h()?;
        for guard in h.workflows.iter() {
            let (k, v) = guard.into_inner().map_err(|e| self.fail(e))?;
            let unreadable = || {
                StoreError::Backend(
                    format!(
                        "workflow record `{}` is truncated",
                        String::from_utf8_lossy(&k)
                    )
                    .into(),
                )
            };
            let len = v
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or_else(unreadable)? as usize;
            let meta_json = v.get(4..4 + len).ok_or_else(unreadable)?;
            let meta: WorkflowMeta =
                serde_json::from_slice(meta_json).map_err(|e| corrupt(&k, e))?;
            let prefix = results_prefix(&meta.id);
            let mut results = Vec::new();
            for r in h.member_results.prefix(&prefix) {
                let (rk, rv) = r.into_inner().map_err(|e| self.fail(e))?;
                let path = String::from_utf8_lossy(&rk[prefix.len()..]).into_owned();
                let value = serde_json::from_slice(&rv).map_err(|e| corrupt(&rk, e))?;
                results.push((path, value));
            }
            visit(StoredWorkflow {
                meta,
                payload: v[4 + len..].to_vec(),
                results,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> StoredTask {
        StoredTask::new(id, "q", "t", vec![serde_json::json!(1)])
    }

    #[test]
    fn put_remove_and_reload_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut generator = ulid::Generator::new();
        let keys: Vec<TaskKey> = (0..3)
            .map(|_| TaskKey(generator.generate().unwrap()))
            .collect();
        {
            let store = FjallStore::open(dir.path(), SyncMode::Buffer).unwrap();
            for (i, k) in keys.iter().enumerate() {
                store.put(*k, &task(&format!("t{i}"))).unwrap();
            }
            store.remove(keys[1]).unwrap();
        }
        let store = FjallStore::open(dir.path(), SyncMode::Fsync).unwrap();
        let mut loaded = Vec::new();
        store.scan(&mut |k, t| loaded.push((k, t))).unwrap();
        assert!(
            store
                .dead_letters("q", None, 10)
                .unwrap()
                .letters
                .is_empty()
        );
        let ids: Vec<_> = loaded.iter().map(|(_, t)| t.id.as_str()).collect();
        assert_eq!(ids, ["t0", "t2"]);
        assert_eq!(loaded[0].0, keys[0]);
    }

    #[test]
    fn scheduled_records_enter_the_due_index_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path(), SyncMode::Buffer).unwrap();
        let mut generator = ulid::Generator::new();
        let mut key = || TaskKey(generator.generate().unwrap());
        let (a, b, c) = (key(), key(), key());
        for (k, due) in [(a, Some(300)), (b, Some(100)), (c, None)] {
            let mut t = task("x");
            t.not_before_us = due;
            match due {
                Some(d) => store.put_cold(k, &t, d).unwrap(),
                None => store.put(k, &t).unwrap(),
            }
        }
        assert_eq!(
            store.due_range(0, u64::MAX, 10).unwrap(),
            [(100, b), (300, a)]
        );
        assert_eq!(store.due_range(100, 300, 10).unwrap(), [(300, a)]);
        assert_eq!(store.due_range(0, 299, 10).unwrap(), [(100, b)]);
        assert_eq!(store.due_range(0, u64::MAX, 1).unwrap(), [(100, b)]);
        store.remove_due(100, b).unwrap();
        assert_eq!(store.due_range(0, u64::MAX, 10).unwrap(), [(300, a)]);
        assert_eq!(store.get(c).unwrap().unwrap().id, "x");
        store.remove(c).unwrap();
        assert!(store.get(c).unwrap().is_none());
    }

    #[test]
    fn dead_letters_page_newest_first_keep_their_bound_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let letter = |id: &str, at: u64| DeadLetter {
            task: task(id),
            error: format!("e{id}"),
            attempts: 5,
            failed_at_us: at,
        };
        {
            let store = FjallStore::open(dir.path(), SyncMode::Buffer).unwrap();
            for i in 0..5u64 {
                store
                    .put_dead(&letter(&format!("d{i}"), 10 + i), 4)
                    .unwrap();
            }
            let mut other = letter("x", 1);
            other.task.queue = "q2".into();
            store.put_dead(&other, 4).unwrap();
        }
        let store = FjallStore::open(dir.path(), SyncMode::Buffer).unwrap();
        let page = store.dead_letters("q", None, 3).unwrap();
        let ids: Vec<&str> = page.letters.iter().map(|l| l.task.id.as_str()).collect();
        assert_eq!(
            (ids, page.total),
            (vec!["d4", "d3", "d2"], 4),
            "d0 fell off the bound"
        );
        let rest = store
            .dead_letters("q", page.next_cursor.as_deref(), 3)
            .unwrap();
        assert_eq!(rest.letters.len(), 1);
        assert_eq!(rest.next_cursor, None);
        let taken = store.take_dead("q", "d3").unwrap().unwrap();
        assert_eq!(taken.error, "ed3");
        assert!(store.take_dead("q", "d3").unwrap().is_none());
        assert_eq!(store.dead_letters("q", None, 10).unwrap().total, 3);
        assert_eq!(store.dead_letters("q2", None, 10).unwrap().total, 1);
    }
}
