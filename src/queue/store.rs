//! [`QueueStore`]: the fjall-backed durable record of accepted tasks.
//!
//! [`QueueStore::put`] appends to fjall's journal and hands it to the operating
//! system before it returns (`PersistMode::Buffer`), so a task whose `put`
//! returned survives `kill -9` of the broker; `SyncMode::Fsync` also flushes it
//! to the disk, for power loss. That is one write syscall of a few
//! microseconds without fsync, which is why the dispatcher may call it on the
//! publish path.
//!
//! [`QueueStore::remove`] only appends to the journal's in-process buffer; the
//! next `put` (or [`QueueStore::flush`]) carries it to the OS in the same
//! syscall. A crash can therefore forget a removal, never an insertion: the
//! task then runs once more after the restart, which at-least-once delivery
//! allows. This halves the syscalls per task.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{StoredTask, TaskKey};

/// How far a write goes before `put`/`remove` return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Into the OS page cache: survives a process crash, not a power loss.
    Buffer,
    /// Onto the disk (fdatasync per write): survives a power loss too.
    Fsync,
}

/// Errors of the task store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed (I/O, corruption, a poisoned journal).
    #[error("queue store failed")]
    Engine(#[from] fjall::Error),
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
}

/// The durable task store. Cheap to clone.
#[derive(Clone)]
pub struct QueueStore {
    db: Database,
    tasks: Keyspace,
    sync: SyncMode,
}

impl std::fmt::Debug for QueueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStore")
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

impl QueueStore {
    /// Opens (or creates) the store under `dir`, replaying its journal.
    ///
    /// # Errors
    ///
    /// Fails when the directory cannot be created or the database is corrupt
    /// or locked by another process.
    pub fn open(dir: &Path, sync: SyncMode) -> Result<QueueStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Engine(e.into()))?;
        // Two background threads are enough for flushes and compaction on a
        // small machine; fjall's default would take every core up to four.
        let db = Database::builder(dir.join("queues"))
            .worker_threads(2)
            .open()?;
        let tasks = db.keyspace("tasks", KeyspaceCreateOptions::default)?;
        Ok(QueueStore { db, tasks, sync })
    }

    /// Writes `task` under `key`, replacing any previous version.
    ///
    /// # Errors
    ///
    /// Fails when the journal write fails; the task is then not stored.
    pub fn put(&self, key: TaskKey, task: &StoredTask) -> Result<(), StoreError> {
        let value = serde_json::to_vec(task).map_err(StoreError::Encode)?;
        self.tasks.insert(key.to_bytes(), value)?;
        self.flush()
    }

    /// Deletes the task under `key`. The deletion reaches the OS with the next
    /// `put` or `flush`.
    ///
    /// # Errors
    ///
    /// Fails when the journal write fails.
    pub fn remove(&self, key: TaskKey) -> Result<(), StoreError> {
        self.tasks.remove(key.to_bytes())?;
        Ok(())
    }

    /// Hands everything written so far to the OS (and to the disk in
    /// `SyncMode::Fsync`).
    ///
    /// # Errors
    ///
    /// Fails when the journal cannot be written.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mode = match self.sync {
            SyncMode::Buffer => PersistMode::Buffer,
            SyncMode::Fsync => PersistMode::SyncData,
        };
        self.db.persist(mode)?;
        Ok(())
    }

    /// Reads every stored task, oldest first.
    ///
    /// # Errors
    ///
    /// Fails on an engine error or an undecodable record.
    pub fn load_all(&self) -> Result<Vec<(TaskKey, StoredTask)>, StoreError> {
        let mut out = Vec::new();
        for guard in self.tasks.iter() {
            let (k, v) = guard.into_inner()?;
            let Some(key) = TaskKey::from_slice(&k) else {
                tracing::warn!(len = k.len(), "skipping a store key of unexpected length");
                continue;
            };
            let task = serde_json::from_slice(&v).map_err(|source| StoreError::Corrupt {
                key: key.0.to_string(),
                source,
            })?;
            out.push((key, task));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> StoredTask {
        StoredTask {
            id: id.into(),
            queue: "q".into(),
            task: "t".into(),
            args: vec![serde_json::json!(1)],
            kwargs: Default::default(),
            reply: None,
            user_properties: vec![],
            submitted_at_us: 1,
            expires_at_us: None,
            attempts: 0,
        }
    }

    #[test]
    fn put_remove_and_reload_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut generator = ulid::Generator::new();
        let keys: Vec<TaskKey> = (0..3)
            .map(|_| TaskKey(generator.generate().unwrap()))
            .collect();
        {
            let store = QueueStore::open(dir.path(), SyncMode::Buffer).unwrap();
            for (i, k) in keys.iter().enumerate() {
                store.put(*k, &task(&format!("t{i}"))).unwrap();
            }
            store.remove(keys[1]).unwrap();
        }
        let store = QueueStore::open(dir.path(), SyncMode::Fsync).unwrap();
        let loaded = store.load_all().unwrap();
        let ids: Vec<_> = loaded.iter().map(|(_, t)| t.id.as_str()).collect();
        assert_eq!(ids, ["t0", "t2"]);
        assert_eq!(loaded[0].0, keys[0]);
    }
}
