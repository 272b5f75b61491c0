//! Making a task final, and `on_final`: the one seam every final outcome
//! leaves the engine by (the requester's result, and a workflow's next step).

use bytes::Bytes;
use serde_json::Value;
use swarmq_worker::wire::{Status, TaskResult};

use super::task::{ReplyTo, StoredTask, TaskKey};
use super::{Effect, Engine, State, TaskEvent};

/// How a task ended.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) status: Status,
    pub(super) result: Option<Value>,
    pub(super) error: Option<String>,
    /// Worker that produced the outcome.
    pub(super) worker: Option<String>,
    /// When the last delivery was made, if the task was running.
    pub(super) delivered_at_us: Option<u64>,
    /// The task failed because its attempts were used up: it goes to its
    /// queue's dead letters.
    pub(super) exhausted: bool,
}

impl Outcome {
    pub(super) fn failure(
        error: String,
        worker: Option<String>,
        delivered_at_us: Option<u64>,
    ) -> Outcome {
        Outcome {
            status: Status::Failure,
            result: None,
            error: Some(error),
            worker,
            delivered_at_us,
            exhausted: false,
        }
    }

    /// A failure because the attempts are used up.
    pub(super) fn exhausted(
        error: String,
        worker: Option<String>,
        delivered_at_us: Option<u64>,
    ) -> Outcome {
        Outcome {
            exhausted: true,
            ..Outcome::failure(error, worker, delivered_at_us)
        }
    }

    /// A task that expired before a worker took it.
    pub(super) fn expired() -> Outcome {
        Outcome {
            status: Status::Expired,
            result: None,
            error: Some("the task expired before a worker took it".into()),
            worker: None,
            delivered_at_us: None,
            exhausted: false,
        }
    }

    pub(super) fn revoked(error: &str) -> Outcome {
        Outcome {
            status: Status::Revoked,
            result: None,
            error: Some(error.to_string()),
            worker: None,
            delivered_at_us: None,
            exhausted: false,
        }
    }
}

impl Engine {
    /// Makes task `key` final: out of its stage and the store, its id
    /// remembered for deduplication, counted, observed, and handed to
    /// [`Engine::on_final`].
    pub(super) fn finish(
        &self,
        st: &mut State,
        key: TaskKey,
        mut outcome: Outcome,
        fx: &mut Vec<Effect>,
    ) {
        if let Some(lease) = st.detach(key) {
            outcome.delivered_at_us = outcome.delivered_at_us.or(Some(lease.delivered_at_us));
            if outcome.worker.is_none() && outcome.status != Status::Revoked {
                outcome.worker = Some(lease.worker);
            }
        }
        let Some(entry) = st.tasks.remove(&key) else {
            return;
        };
        let task = entry.task;
        if let Err(e) = self.inner.store.remove(key) {
            // The task is done; at worst it runs once more after a restart.
            tracing::error!(task_id = %task.id, error = %e, "cannot remove a finished task from the store");
        }
        st.ids.remove(&task.id);
        st.remember_done(&task.id, self.inner.config.dedupe_window);
        if outcome.status == Status::Success && outcome.result.is_none() {
            outcome.result = Some(Value::Null);
        }
        self.on_final(st, &task, &outcome, fx);
    }

    /// Where a final outcome leaves the engine: counted, observed, the
    /// result published to the requester's reply topic, and a workflow
    /// member's outcome handed to its workflow.
    pub(super) fn on_final(
        &self,
        st: &mut State,
        task: &StoredTask,
        outcome: &Outcome,
        fx: &mut Vec<Effect>,
    ) {
        let now = self.now_us();
        let latency = now.saturating_sub(task.submitted_at_us);
        self.inner
            .metrics
            .task_finished(outcome.status, Some(latency));
        let attempts = task.attempts + u32::from(outcome.delivered_at_us.is_some());
        if outcome.exhausted {
            let letter = super::DeadLetter {
                task: task.clone(),
                error: outcome.error.clone().unwrap_or_default(),
                attempts,
                failed_at_us: now,
            };
            match self
                .inner
                .store
                .put_dead(&letter, self.inner.config.max_dead_letters)
            {
                Ok(()) => {
                    tracing::warn!(task_id = %task.id, queue = %task.queue, attempts, "attempts used up; task moved to the dead letters")
                }
                Err(e) => {
                    tracing::error!(task_id = %task.id, error = %e, "cannot keep a dead letter")
                }
            }
        }
        self.emit(|| TaskEvent::Finished {
            id: task.id.clone(),
            queue: task.queue.clone(),
            status: outcome.status,
            result: outcome.result.clone(),
            error: outcome.error.clone(),
            worker: outcome.worker.clone(),
            attempts,
            at_us: now,
            latency_us: latency,
        });
        if task.workflow.is_some() {
            self.member_final(st, task, outcome, fx);
        }
        let Some(reply) = &task.reply else {
            return;
        };
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        let delivered = outcome.delivered_at_us;
        let result = TaskResult {
            id: Some(task.id.clone()),
            queue: task.queue.clone(),
            task: Some(task.task.clone()),
            status: outcome.status,
            result: outcome.result.clone(),
            error: outcome.error.clone(),
            worker: outcome.worker.clone(),
            attempts,
            queued_ms: delivered.map(|d| ms(d.saturating_sub(task.submitted_at_us))),
            run_ms: delivered.map(|d| ms(now.saturating_sub(d))),
            correlation_id: reply.correlation_id.clone(),
            progress: None,
        };
        fx.push(reply_message(reply, &result));
    }
}

pub(super) fn reply_message(reply: &ReplyTo, result: &TaskResult) -> Effect {
    Effect::Reply {
        topic: reply.topic.clone(),
        correlation_data: reply.correlation_data.clone().map(Bytes::from),
        // Serialising these plain types cannot fail.
        payload: Bytes::from(serde_json::to_vec(result).unwrap_or_default()),
    }
}
