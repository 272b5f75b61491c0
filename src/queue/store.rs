//! [`FjallStore`]: the fjall-backed durable record of accepted tasks.
//!
//! [`FjallStore::put`] appends to fjall's journal and hands it to the operating
//! system before it returns (`PersistMode::Buffer`), so a task whose `put`
//! returned survives `kill -9` of the broker; `SyncMode::Fsync` also flushes it
//! to the disk, for power loss. That is one write syscall of a few
//! microseconds without fsync, which is why the dispatcher may call it on the
//! publish path.
//!
//! [`FjallStore::remove`] only appends to the journal's in-process buffer; the
//! next `put` (or [`FjallStore::flush`]) carries it to the OS in the same
//! syscall. A crash can therefore forget a removal, never an insertion: the
//! task then runs once more after the restart, which at-least-once delivery
//! allows. This halves the syscalls per task.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::engine::{StoreError, StoredTask, TaskKey, TaskStore};

/// How far a write goes before `put`/`remove` return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Into the OS page cache: survives a process crash, not a power loss.
    Buffer,
    /// Onto the disk (fdatasync per write): survives a power loss too.
    Fsync,
}

/// The durable task store. Cheap to clone.
#[derive(Clone)]
pub struct FjallStore {
    db: Database,
    tasks: Keyspace,
    sync: SyncMode,
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
        // Two background threads are enough for flushes and compaction on a
        // small machine; fjall's default would take every core up to four.
        let db = Database::builder(dir.join("queues"))
            .worker_threads(2)
            .open()
            .map_err(backend)?;
        let tasks = db
            .keyspace("tasks", KeyspaceCreateOptions::default)
            .map_err(backend)?;
        Ok(FjallStore { db, tasks, sync })
    }
}

fn backend(e: fjall::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

impl TaskStore for FjallStore {
    fn put(&self, key: TaskKey, task: &StoredTask) -> Result<(), StoreError> {
        let value = serde_json::to_vec(task).map_err(StoreError::Encode)?;
        self.tasks.insert(key.to_bytes(), value).map_err(backend)?;
        self.flush()
    }

    fn remove(&self, key: TaskKey) -> Result<(), StoreError> {
        self.tasks.remove(key.to_bytes()).map_err(backend)
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mode = match self.sync {
            SyncMode::Buffer => PersistMode::Buffer,
            SyncMode::Fsync => PersistMode::SyncData,
        };
        self.db.persist(mode).map_err(backend)
    }

    fn load_all(&self) -> Result<Vec<(TaskKey, StoredTask)>, StoreError> {
        let mut out = Vec::new();
        for guard in self.tasks.iter() {
            let (k, v) = guard.into_inner().map_err(backend)?;
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
        let loaded = store.load_all().unwrap();
        let ids: Vec<_> = loaded.iter().map(|(_, t)| t.id.as_str()).collect();
        assert_eq!(ids, ["t0", "t2"]);
        assert_eq!(loaded[0].0, keys[0]);
    }
}
