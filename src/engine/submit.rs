//! Accepting a task: validate, deduplicate, check the queue's limits, store
//! it, and only then queue it (or schedule it, for a countdown or ETA).

use swarmq_worker::wire::{self, Status, TaskResult};

use super::finish::reply_message;
use super::request::{Submission, parse_request};
use super::task::{ReplyTo, StoredTask, TaskKey};
use super::{Engine, Stage, State, TaskEvent};
use crate::metrics::RejectReason;

/// What became of a submission.
#[derive(Debug)]
pub enum SubmitOutcome {
    /// Stored: acknowledge it.
    Accepted,
    /// The id is already known: acknowledge it and run nothing.
    Duplicate,
    /// Refused; the requester (if it gave a reply topic) has been sent a
    /// `rejected` result.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// Human-readable detail.
        message: String,
    },
    /// The task could not be stored (nothing of it was). A requester with
    /// a reply topic has been sent a `rejected` result saying why
    /// (`answered`); one without should not be acknowledged, so it retries.
    NotStored {
        /// What the store said.
        error: super::StoreError,
        /// A `rejected` result went to the requester's reply topic.
        answered: bool,
    },
}

impl Engine {
    /// Validates, stores and queues a task, and hands it to a free worker.
    pub fn submit(&self, mut sub: Submission<'_>) -> SubmitOutcome {
        let config = &self.inner.config;
        let v5_reply = sub.v5_reply();
        if !wire::is_valid_queue_name(sub.queue) {
            let msg = format!(
                "invalid queue name `{}`: one topic level of 1 to 64 of A-Z a-z 0-9 _ . -",
                sub.queue
            );
            return self.reject(
                &sub,
                RejectReason::InvalidQueue,
                msg,
                v5_reply.as_ref(),
                None,
            );
        }
        if let Some(msg) = sub.response_topic_error() {
            // Nothing can be answered there: the refusal goes back on the
            // PUBACK only (MQTT 5 has a Response Topic, so it has reason codes).
            return self.reject(&sub, RejectReason::InvalidPayload, msg, None, None);
        }
        if sub.payload.len() > config.max_payload_bytes {
            let msg = format!(
                "payload of {} bytes exceeds the limit of {} bytes",
                sub.payload.len(),
                config.max_payload_bytes
            );
            return self.reject(
                &sub,
                RejectReason::PayloadTooLarge,
                msg,
                v5_reply.as_ref(),
                None,
            );
        }
        let parsed = match parse_request(sub.payload) {
            Ok(p) => p,
            Err(bad) => {
                // The 3.1.1 reply_to is usable when the payload was an object
                // with a well-formed reply_to, even if another field was wrong.
                let reply = v5_reply.clone().or(bad.reply_to);
                return self.reject(
                    &sub,
                    RejectReason::InvalidPayload,
                    bad.message,
                    reply.as_ref(),
                    bad.id,
                );
            }
        };
        let reply = sub.reply_with(parsed.reply_to);
        if let Some(msg) = sub.reply_denied(reply.as_ref()) {
            return self.reject(&sub, RejectReason::ReplyTopicDenied, msg, None, parsed.id);
        }

        let mut st = self.lock();
        let now = self.now_us();
        if !st.accepting {
            drop(st);
            let msg = "the broker is shutting down".to_string();
            return self.reject(
                &sub,
                RejectReason::ShuttingDown,
                msg,
                reply.as_ref(),
                parsed.id,
            );
        }
        if !st.queues.contains_key(sub.queue) && !config.auto_create_queues {
            drop(st);
            let msg = format!("unknown queue `{}`", sub.queue);
            return self.reject(
                &sub,
                RejectReason::UnknownQueue,
                msg,
                reply.as_ref(),
                parsed.id,
            );
        }
        if let Some(id) = &parsed.id
            && (st.ids.contains_key(id)
                || st.recent_done_set.contains(id)
                || self.cold_key(&st, id).is_some())
        {
            self.inner.metrics.task_duplicate();
            tracing::info!(queue = sub.queue, task_id = %id, "duplicate task id, not run again");
            return SubmitOutcome::Duplicate;
        }
        self.ensure_queue(&mut st, sub.queue);
        let (queue_len, max_length) = st
            .queues
            .get(sub.queue)
            .map_or((0, usize::MAX), |q| (q.len(), q.limits.max_length));
        if queue_len >= max_length {
            drop(st);
            let msg = format!("queue `{}` is full ({max_length} tasks)", sub.queue);
            return self.reject(
                &sub,
                RejectReason::QueueFull,
                msg,
                reply.as_ref(),
                parsed.id,
            );
        }
        let key = new_key(&mut st);
        let not_before_us = parsed.start.and_then(|s| s.due_us(now));
        let expires_json = parsed.expires.map(|e| e.at_us(now));
        let expires_mqtt = sub
            .message_expiry_secs
            .map(|s| now.saturating_add(u64::from(s) * 1_000_000));
        let expires_at_us = match (expires_json, expires_mqtt) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let queue_retry = st
            .queues
            .get(sub.queue)
            .map(|q| q.limits.retry)
            .unwrap_or(config.default_limits.retry);
        let task = StoredTask {
            id: parsed.id.unwrap_or_else(|| key.0.to_string()),
            queue: sub.queue.to_string(),
            task: parsed.task.unwrap_or_else(|| sub.queue.to_string()),
            args: parsed.args,
            kwargs: parsed.kwargs,
            reply,
            user_properties: std::mem::take(&mut sub.user_properties),
            submitted_at_us: now,
            expires_at_us,
            not_before_us,
            priority: parsed.priority,
            retry: parsed.retry.map(|r| r.apply(queue_retry)),
            progress: parsed.progress,
            attempts: 0,
            lost: 0,
            last_error: None,
            requester: sub.requester.take(),
            workflow: None,
            chunk: None,
        };
        let queue = task.queue.clone();
        let (id, reply) = (task.id.clone(), task.reply.clone());
        if let Err(error) = self.admit(&mut st, key, task) {
            drop(st);
            return self.not_stored(&sub, error, reply, id);
        }
        let mut fx = Vec::new();
        self.pump(&mut st, &queue, &mut fx);
        self.commit(st, fx);
        SubmitOutcome::Accepted
    }

    /// Stores `task` and puts it in its queue (which must exist), or in the
    /// schedule when its `not_before_us` is still to come.
    pub(super) fn admit(
        &self,
        st: &mut State,
        key: TaskKey,
        task: StoredTask,
    ) -> Result<(), super::StoreError> {
        let cold = task.not_before_us.filter(|t| *t > st.cold_until_us);
        match cold {
            Some(due) => self.inner.store.put_cold(key, &task, due)?,
            None => self.inner.store.put(key, &task)?,
        }
        self.inner.metrics.task_submitted();
        self.emit(|| TaskEvent::Submitted(Box::new(task.clone())));
        if cold.is_some() {
            // Due beyond the hot window: it stays on disk until then.
            st.note_cold(key, &task);
            return Ok(());
        }
        let stage = match task.not_before_us {
            Some(due_us) => Stage::Scheduled { due_us },
            None => Stage::Ready,
        };
        st.insert_task(key, task, stage);
        Ok(())
    }

    /// Refuses a submission: logs, counts, keeps a record when it had an id,
    /// and answers a requester that gave a reply topic.
    pub(super) fn reject(
        &self,
        sub: &Submission<'_>,
        reason: RejectReason,
        message: String,
        reply: Option<&ReplyTo>,
        id: Option<String>,
    ) -> SubmitOutcome {
        tracing::warn!(queue = sub.queue, reason = reason.as_str(), error = %message, "task rejected");
        // Never answer where the requester could not publish itself.
        let reply = reply.filter(|r| sub.may_reply_to(&r.topic));
        let now = self.now_us();
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
                at_us: now,
            });
        }
        self.inner.metrics.task_rejected(reason);
        if let Some(r) = reply {
            let result = TaskResult {
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
                progress: None,
            };
            self.inner.outbox.send(vec![reply_message(r, &result)]);
        }
        SubmitOutcome::Rejected { reason, message }
    }
}

impl Engine {
    /// A submission the store could not take: logged, counted, and answered
    /// `rejected` (status `rejected`, the store's reason) where a reply
    /// topic is known.
    pub(super) fn not_stored(
        &self,
        sub: &Submission<'_>,
        error: super::StoreError,
        reply: Option<ReplyTo>,
        id: String,
    ) -> SubmitOutcome {
        let message = format!("not stored: {error}");
        let answered = reply.is_some();
        let _ = self.reject(
            sub,
            RejectReason::StoreFailed,
            message,
            reply.as_ref(),
            Some(id),
        );
        SubmitOutcome::NotStored { error, answered }
    }

    /// Why the queue store cannot write now, if it cannot (`/healthz`, the
    /// dashboard).
    pub fn store_condition(&self) -> Option<String> {
        self.inner.store.condition()
    }

    /// The key of cold task `id` (on disk only), if there is one.
    pub(super) fn cold_key(&self, st: &State, id: &str) -> Option<TaskKey> {
        if let Some(key) = st.cold_ids.get(id) {
            return Some(*key);
        }
        // A generated id is its key: look for it only while some task is
        // cold and the id has the shape of one.
        if !st.has_cold() {
            return None;
        }
        let key = TaskKey(ulid::Ulid::from_string(id).ok()?);
        if st.tasks.contains_key(&key) {
            return None;
        }
        match self.inner.store.get(key) {
            Ok(Some(task)) if task.id == id => Some(key),
            _ => None,
        }
    }
}

/// A fresh, time-ordered store key.
pub(super) fn new_key(st: &mut State) -> TaskKey {
    match st.keys.generate() {
        Ok(ulid) => TaskKey(ulid),
        // The generator overflows only after 2^80 ids in one millisecond;
        // a fresh ULID from the clock is then still unique enough.
        Err(_) => TaskKey(ulid::Ulid::new()),
    }
}
