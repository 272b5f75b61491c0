//! Operator and requester actions: revoke a task in any unfinished stage,
//! purge a queue, run a finished task again.

use super::dispatch::cancel_message;
use super::finish::Outcome;
use super::submit::new_key;
use super::task::{StoredTask, TaskKey};
use super::{Engine, Stage};

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No unfinished task has this id.
    #[error("no unfinished task `{0}`")]
    NotFound(String),
    /// The task is still unfinished, so it cannot be run again.
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
    Store(#[from] super::StoreError),
}

/// What a revoke found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The task was scheduled, queued or running and is now revoked; it
    /// never runs again.
    Revoked,
    /// The task had already finished.
    Finished,
    /// No task with this id is known to the engine.
    Unknown,
}

impl RevokeOutcome {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeOutcome::Revoked => "revoked",
            RevokeOutcome::Finished => "finished",
            RevokeOutcome::Unknown => "unknown",
        }
    }
}

impl Engine {
    /// Revokes task `id` in whatever unfinished stage it is: a scheduled or
    /// queued task is taken out; a running task's worker is sent `{"cancel":
    /// id}` on its control topic, and its later answer is ignored. The
    /// requester gets `revoked` at once. The removal is made durable before
    /// this returns, so the task never runs again, not even after a restart.
    pub fn revoke(&self, id: &str, why: &str) -> RevokeOutcome {
        let mut st = self.lock();
        let mut fx = Vec::new();
        if self.revoke_workflow(&mut st, id, &mut fx) {
            self.flush_store();
            self.commit(st, fx);
            return RevokeOutcome::Revoked;
        }
        let Some(&key) = st.ids.get(id) else {
            if let Some(key) = self.cold_key(&st, id) {
                self.revoke_cold(&mut st, key, why, &mut fx);
                self.flush_store();
                self.commit(st, fx);
                return RevokeOutcome::Revoked;
            }
            return if st.recent_done_set.contains(id) {
                RevokeOutcome::Finished
            } else {
                RevokeOutcome::Unknown
            };
        };
        let (queue, holder) = match st.tasks.get(&key) {
            Some(e) => (
                e.task.queue.clone(),
                match &e.stage {
                    Stage::Leased(l) => Some(l.worker.clone()),
                    _ => None,
                },
            ),
            None => return RevokeOutcome::Unknown,
        };
        if let Some(worker) = &holder {
            fx.push(cancel_message(worker, id));
        }
        tracing::info!(task_id = id, queue, running_on = ?holder, "task revoked");
        self.finish(&mut st, key, Outcome::revoked(why), &mut fx);
        if let Err(e) = self.inner.store.flush() {
            tracing::error!(task_id = id, error = %e, "cannot make a revoke durable");
        }
        if holder.is_some() {
            // Its worker's slot is free.
            self.pump(&mut st, &queue, &mut fx);
        }
        self.commit(st, fx);
        RevokeOutcome::Revoked
    }

    /// Revokes every task waiting in `queue`, scheduled or deliverable (tasks
    /// with workers finish normally). Returns how many were removed.
    ///
    /// # Errors
    ///
    /// [`ActionError::UnknownQueue`] when there is no such queue.
    pub fn purge(&self, queue: &str) -> Result<usize, ActionError> {
        let mut st = self.lock();
        if !st.queues.contains_key(queue) {
            return Err(ActionError::UnknownQueue(queue.to_string()));
        }
        let mut keys: Vec<TaskKey> = st
            .tasks
            .iter()
            .filter(|(_, e)| e.task.queue == queue && !matches!(e.stage, Stage::Leased(_)))
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        let mut fx = Vec::new();
        for &key in &keys {
            self.finish(
                &mut st,
                key,
                Outcome::revoked("queue purged by an operator"),
                &mut fx,
            );
        }
        let cold = self.purge_cold(&mut st, queue, &mut fx);
        if let Err(e) = self.inner.store.flush() {
            tracing::error!(queue, error = %e, "cannot make a purge durable");
        }
        tracing::warn!(queue, tasks = keys.len() + cold, "queue purged");
        self.commit(st, fx);
        Ok(keys.len() + cold)
    }

    /// Submits a finished task again under its own id, as new: attempts
    /// start over, options (priority, retry policy) are kept, and the result
    /// goes to its original reply topic.
    ///
    /// # Errors
    ///
    /// [`ActionError::Unfinished`] while the id is still unfinished; the
    /// errors of a submission (unknown or full queue, shutting down, store).
    pub fn resubmit(&self, mut task: StoredTask) -> Result<(), ActionError> {
        let mut st = self.lock();
        if !st.accepting {
            return Err(ActionError::ShuttingDown);
        }
        if st.ids.contains_key(&task.id) || self.cold_key(&st, &task.id).is_some() {
            return Err(ActionError::Unfinished(task.id));
        }
        if !st.queues.contains_key(&task.queue) {
            if !self.inner.config.auto_create_queues {
                return Err(ActionError::UnknownQueue(task.queue));
            }
            self.ensure_queue(&mut st, &task.queue);
        }
        if let Some(q) = st.queues.get(&task.queue)
            && q.len() >= q.limits.max_length
        {
            return Err(ActionError::QueueFull(task.queue));
        }
        let key = new_key(&mut st);
        task.submitted_at_us = self.now_us();
        task.attempts = 0;
        task.expires_at_us = None;
        task.not_before_us = None;
        task.last_error = None;
        st.recent_done_set.remove(&task.id);
        let queue = task.queue.clone();
        tracing::info!(task_id = %task.id, queue, "task run again");
        self.admit(&mut st, key, task)?;
        let mut fx = Vec::new();
        self.pump(&mut st, &queue, &mut fx);
        self.commit(st, fx);
        Ok(())
    }

    /// Stops accepting submissions (they are rejected as `shutting_down`).
    pub fn stop_accepting(&self) {
        self.lock().accepting = false;
    }

    /// Makes pending store writes (buffered removals) durable; called on shutdown.
    pub fn flush_store(&self) {
        if let Err(e) = self.inner.store.flush() {
            tracing::error!(error = %e, "cannot flush the queue store");
        }
    }
}

impl Engine {
    /// Revokes cold task `key` (on disk only): removes it and answers its
    /// requester. Its due-time entry goes stale and is dropped when met.
    pub(super) fn revoke_cold(
        &self,
        st: &mut super::State,
        key: TaskKey,
        why: &str,
        fx: &mut Vec<super::Effect>,
    ) {
        let task = match self.inner.store.get(key) {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot read a scheduled task to revoke it");
                return;
            }
        };
        st.forget_cold(&task);
        if let Err(e) = self.inner.store.remove(key) {
            tracing::error!(task_id = %task.id, error = %e, "cannot remove a revoked task");
        }
        st.remember_done(&task.id, self.inner.config.dedupe_window);
        tracing::info!(task_id = %task.id, queue = %task.queue, "scheduled task revoked");
        self.on_final(st, &task, &Outcome::revoked(why), fx);
    }

    /// Revokes every cold task of `queue`. Reads the whole due-time index:
    /// slow with many cold tasks, and rare.
    fn purge_cold(&self, st: &mut super::State, queue: &str, fx: &mut Vec<super::Effect>) -> usize {
        if st.queues.get(queue).is_none_or(|q| q.cold() == 0) {
            return 0;
        }
        let entries = match self
            .inner
            .store
            .due_range(st.cold_until_us, u64::MAX, usize::MAX)
        {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(queue, error = %e, "cannot read the due-time index to purge");
                return 0;
            }
        };
        let mut n = 0;
        for (_, key) in entries {
            if st.tasks.contains_key(&key) {
                continue;
            }
            if let Ok(Some(task)) = self.inner.store.get(key)
                && task.queue == queue
            {
                self.revoke_cold(st, key, "queue purged by an operator", fx);
                n += 1;
            }
        }
        n
    }

    /// Up to `limit` of `queue`'s dead letters, newest first, after `cursor`.
    ///
    /// # Errors
    ///
    /// [`ActionError::Store`] when the store cannot be read.
    pub fn dead_letters(
        &self,
        queue: &str,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<super::DeadPage, ActionError> {
        Ok(self.inner.store.dead_letters(queue, cursor, limit)?)
    }

    /// Runs dead letter `id` of `queue` again: with its id, arguments,
    /// options and reply topic, and a fresh attempt count. It leaves the
    /// dead letters only once it is queued.
    ///
    /// # Errors
    ///
    /// [`ActionError::NotFound`] when `queue` holds no such dead letter; the
    /// errors of [`Engine::resubmit`].
    pub fn replay_dead(&self, queue: &str, id: &str) -> Result<(), ActionError> {
        let Some(letter) = self.inner.store.take_dead(queue, id)? else {
            return Err(ActionError::NotFound(id.to_string()));
        };
        match self.resubmit(letter.task.clone()) {
            Ok(()) => {
                tracing::info!(task_id = id, queue, "dead letter replayed");
                Ok(())
            }
            Err(e) => {
                // Put it back: a replay that did not happen must lose nothing.
                let keep = self.inner.config.max_dead_letters;
                if let Err(store) = self.inner.store.put_dead(&letter, keep) {
                    tracing::error!(task_id = id, error = %store, "cannot put a dead letter back");
                }
                Err(e)
            }
        }
    }

    /// Deletes dead letter `id` of `queue` for good.
    ///
    /// # Errors
    ///
    /// [`ActionError::NotFound`] when `queue` holds no such dead letter.
    pub fn discard_dead(&self, queue: &str, id: &str) -> Result<(), ActionError> {
        match self.inner.store.take_dead(queue, id)? {
            Some(_) => {
                tracing::info!(task_id = id, queue, "dead letter discarded");
                Ok(())
            }
            None => Err(ActionError::NotFound(id.to_string())),
        }
    }

    /// Replays (`replay = true`) or discards every dead letter of `queue`.
    /// Returns how many were handled and the first error that stopped a
    /// replay (the letters not replayed stay).
    pub fn all_dead(&self, queue: &str, replay: bool) -> (usize, Option<ActionError>) {
        let mut done = 0;
        loop {
            let page = match self.dead_letters(queue, None, 500) {
                Ok(p) => p,
                Err(e) => return (done, Some(e)),
            };
            if page.letters.is_empty() {
                return (done, None);
            }
            for letter in page.letters {
                let id = &letter.task.id;
                let res = if replay {
                    self.replay_dead(queue, id)
                } else {
                    self.discard_dead(queue, id)
                };
                match res {
                    Ok(()) => done += 1,
                    Err(e) => return (done, Some(e)),
                }
            }
        }
    }
}
