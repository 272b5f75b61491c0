//! Delivery and its outcomes: handing tasks to workers within their
//! capacity, the answers and progress reports that come back, deliveries
//! lost to a disconnect or an expired lease, retries after a backoff, and
//! the timer that acts on the deadline index.

use bytes::Bytes;
use serde_json::{Value, json};
use swarmq_worker::wire::{self, Status, TaskMessage, TaskResult, WorkerReply};
use tokio_util::sync::CancellationToken;

use super::deadline::Deadline;
use super::finish::Outcome;
use super::task::{StoredTask, TaskKey};
use super::workers::pick_worker;
use super::{Effect, Engine, Lease, MAX_TIMER_SLEEP, Stage, State, TaskEvent};

impl Engine {
    /// Delivers ready tasks of `queue_name` while a consumer has a free slot.
    pub(super) fn pump(&self, st: &mut State, queue_name: &str, fx: &mut Vec<Effect>) {
        let now = self.now_us();
        loop {
            let State {
                queues, workers, ..
            } = &mut *st;
            let Some(queue) = queues.get_mut(queue_name) else {
                return;
            };
            if queue.waiting() == 0 {
                return;
            }
            let limits = queue.limits;
            if limits.max_in_flight > 0 && queue.in_flight() >= limits.max_in_flight as usize {
                // A lease ending on this queue pumps it again.
                return;
            }
            if limits.rate_limit.is_some() && now < queue.next_start_us {
                let at = queue.next_start_us;
                if queue.throttle_at_us != Some(at) {
                    queue.throttle_at_us = Some(at);
                    let id = queue.id;
                    st.deadlines.insert(at, Deadline::Throttle(id));
                    if at < st.timer_armed_us {
                        st.wake_timer = true;
                    }
                }
                return;
            }
            let Some(worker_id) = pick_worker(queue, queue_name, workers, now) else {
                return;
            };
            let lease_ms = queue.limits.lease_timeout_ms;
            let Some(key) = st.pop_ready(queue_name) else {
                return;
            };
            let Some(entry) = st.tasks.get(&key) else {
                continue;
            };
            if entry.task.expires_at_us.is_some_and(|t| t <= now) {
                self.finish(st, key, Outcome::expired(), fx);
                continue;
            }
            if let Some(rate) = limits.rate_limit
                && let Some(q) = st.queues.get_mut(queue_name)
            {
                q.next_start_us = q.next_start_us.max(now) + rate.interval_us();
            }
            let attempt = entry.task.attempts + 1;
            fx.push(deliver_message(&entry.task, &worker_id, attempt));
            self.emit(|| TaskEvent::Started {
                id: entry.task.id.clone(),
                worker: worker_id.clone(),
                attempt,
                at_us: now,
            });
            if attempt > 1 {
                self.inner.metrics.task_redelivered();
            }
            let lease = Lease {
                worker: worker_id,
                delivered_at_us: now,
                deadline_us: now.saturating_add(lease_ms.saturating_mul(1000)),
            };
            st.attach(key, Stage::Leased(lease), false);
        }
    }

    /// Records a worker's answer to a task (a result, an error, or a
    /// progress report) and routes what follows.
    ///
    /// `correlation_data` is the MQTT 5 Correlation Data of the answer; a
    /// 3.1.1 worker puts the task id in the JSON's `id` field instead.
    /// `holder_check`, when given, decides whether `worker` may answer for
    /// the task's current lease holder (`None`: the task is not leased); an
    /// answer it refuses changes nothing and is reported as
    /// [`Answered::NotHolder`].
    pub fn answer(
        &self,
        worker: &str,
        holder_check: Option<HolderCheck<'_>>,
        correlation_data: Option<&[u8]>,
        payload: &[u8],
    ) -> Answered {
        let metrics = &self.inner.metrics;
        let json: Option<Value> = serde_json::from_slice(payload).ok();
        let task_id = correlation_data
            .and_then(|c| std::str::from_utf8(c).ok().map(str::to_string))
            .or_else(|| {
                json.as_ref()
                    .and_then(|v| v.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        let Some(task_id) = task_id else {
            metrics.reply_ignored();
            tracing::warn!(
                worker,
                "worker reply without a task id (no Correlation Data, no `id` field)"
            );
            return Answered::Ignored;
        };
        let reply = match json {
            Some(v) => WorkerReply::from_json(v),
            None => match std::str::from_utf8(payload) {
                Ok(text) => WorkerReply::Success(Value::String(text.to_string())),
                Err(_) => WorkerReply::Failure {
                    error: "worker reply is neither JSON nor UTF-8 text".into(),
                    retry: false,
                    retry_in: None,
                },
            },
        };

        let mut st = self.lock();
        let Some(&key) = st.ids.get(&task_id) else {
            metrics.reply_ignored();
            tracing::debug!(
                worker,
                task_id,
                "answer for a task that is not unfinished; ignored"
            );
            return Answered::Ignored;
        };
        if let Some(check) = holder_check {
            let holder = st.tasks.get(&key).and_then(|e| match &e.stage {
                Stage::Leased(l) => Some(l.worker.as_str()),
                _ => None,
            });
            if !(check.0)(holder) {
                metrics.reply_ignored();
                tracing::warn!(
                    worker,
                    task_id,
                    holder,
                    "answer from a client that does not hold the task; dropped"
                );
                return Answered::NotHolder(task_id);
            }
        }
        let mut fx = Vec::new();
        if let WorkerReply::Progress(progress) = reply {
            self.progress(&mut st, key, progress, &mut fx);
            self.commit(st, fx);
            return Answered::Taken;
        }
        let Some(queue_name) = st.tasks.get(&key).map(|e| e.task.queue.clone()) else {
            return Answered::Ignored;
        };
        // Free the slot of whoever holds the lease now (the answering worker,
        // or another one the task went to after this one's lease ran out).
        let lease = st.detach(key);
        let delivered_at_us = lease.as_ref().map(|l| l.delivered_at_us);
        // A worker may answer through another connection (a shell worker's
        // mosquitto_pub): then the lease holder is the one that ran the task.
        let ran_by = match lease {
            Some(l) if !st.workers.contains_key(worker) => l.worker,
            _ => worker.to_string(),
        };
        match reply {
            WorkerReply::Failure {
                error,
                retry: true,
                retry_in,
            } => {
                self.retry_later(
                    &mut st,
                    key,
                    &ran_by,
                    error,
                    retry_in,
                    delivered_at_us,
                    &mut fx,
                );
            }
            WorkerReply::Failure { error, .. } => {
                let outcome = Outcome::failure(error, Some(ran_by), delivered_at_us);
                self.finish(&mut st, key, outcome, &mut fx);
            }
            WorkerReply::Success(value) => {
                let outcome = Outcome {
                    status: Status::Success,
                    result: Some(value),
                    error: None,
                    worker: Some(ran_by),
                    delivered_at_us,
                    exhausted: false,
                };
                self.finish(&mut st, key, outcome, &mut fx);
            }
            WorkerReply::Progress(_) => {}
        }
        // The answering worker has a free slot now: feed every queue it
        // consumes, and the task's own queue.
        let mut queues = super::workers::queues_of(&st, worker);
        if !queues.contains(&queue_name) {
            queues.push(queue_name);
        }
        for q in queues {
            self.pump(&mut st, &q, &mut fx);
        }
        self.commit(st, fx);
        Answered::Taken
    }

    /// A progress report: renews the lease, tells observers, and forwards
    /// it to a requester that asked for progress.
    fn progress(&self, st: &mut State, key: TaskKey, progress: Value, fx: &mut Vec<Effect>) {
        let now = self.now_us();
        let Some(entry) = st.tasks.get(&key) else {
            return;
        };
        let lease_ms = st
            .queues
            .get(&entry.task.queue)
            .map_or(0, |q| q.limits.lease_timeout_ms);
        if let Stage::Leased(lease) = &entry.stage {
            let renewed = Lease {
                worker: lease.worker.clone(),
                delivered_at_us: lease.delivered_at_us,
                deadline_us: now.saturating_add(lease_ms.saturating_mul(1000)),
            };
            st.detach(key);
            st.attach(key, Stage::Leased(renewed), false);
        }
        let Some(entry) = st.tasks.get(&key) else {
            return;
        };
        let task = &entry.task;
        if task.progress
            && let Some(reply) = &task.reply
        {
            let message = TaskResult {
                id: Some(task.id.clone()),
                queue: task.queue.clone(),
                task: Some(task.task.clone()),
                status: Status::Progress,
                result: None,
                error: None,
                worker: None,
                attempts: task.attempts + 1,
                queued_ms: None,
                run_ms: None,
                correlation_id: reply.correlation_id.clone(),
                progress: Some(progress.clone()),
            };
            fx.push(super::finish::reply_message(reply, &message));
        }
        self.emit(|| TaskEvent::Progress {
            id: task.id.clone(),
            progress,
            at_us: now,
        });
    }

    /// A worker asked for another attempt: schedule it after the backoff
    /// (or `retry_in` seconds), or fail the task when its attempts are used up.
    #[allow(clippy::too_many_arguments)]
    fn retry_later(
        &self,
        st: &mut State,
        key: TaskKey,
        worker: &str,
        error: String,
        retry_in: Option<f64>,
        delivered_at_us: Option<u64>,
        fx: &mut Vec<Effect>,
    ) {
        let Some(entry) = st.tasks.get(&key) else {
            return;
        };
        let policy = st.policy(&entry.task);
        let attempts = entry.task.attempts + 1;
        let task_id = entry.task.id.clone();
        if attempts >= policy.max_attempts {
            if let Some(e) = st.tasks.get_mut(&key) {
                e.task.attempts = attempts - 1;
            }
            let error = format!("{error} (gave up after {attempts} attempts)");
            let outcome = Outcome::exhausted(error, Some(worker.to_string()), delivered_at_us);
            return self.finish(st, key, outcome, fx);
        }
        let delay_ms = match retry_in {
            Some(s) => (s * 1000.0).min(super::config::MAX_DELAY_MS as f64) as u64,
            None => {
                let unit = Engine::unit_random(st);
                policy.delay_ms(attempts, unit)
            }
        };
        let now = self.now_us();
        let due_us = now.saturating_add(delay_ms.saturating_mul(1000));
        self.inner.metrics.task_retried();
        tracing::info!(
            worker,
            task_id,
            attempts,
            delay_ms,
            error,
            "worker asked for a retry"
        );
        let Some(entry) = st.tasks.get_mut(&key) else {
            return;
        };
        entry.task.attempts = attempts;
        entry.task.last_error = Some(error.clone());
        entry.task.not_before_us = (delay_ms > 0).then_some(due_us);
        let scheduled = delay_ms > 0;
        self.emit(|| TaskEvent::Requeued {
            id: task_id,
            reason: error,
            due_us: scheduled.then_some(due_us),
            lost: false,
            at_us: now,
        });
        if due_us > st.cold_until_us {
            // A backoff beyond the hot window: the task waits on disk.
            let Some(entry) = st.tasks.remove(&key) else {
                return;
            };
            st.ids.remove(&entry.task.id);
            if let Err(e) = self.inner.store.put_cold(key, &entry.task, due_us) {
                tracing::error!(task_id = %entry.task.id, error = %e, "cannot store a retry; it is retried at once");
                st.ids.insert(entry.task.id.clone(), key);
                st.tasks.insert(key, entry);
                return st.attach(key, Stage::Ready, false);
            }
            return st.note_cold(key, &entry.task);
        }
        self.persist(&entry.task, key);
        let stage = if scheduled {
            Stage::Scheduled { due_us }
        } else {
            Stage::Ready
        };
        st.attach(key, stage, false);
    }

    /// A delivery of `key` ended without an answer (worker gone, lease
    /// expired): the task goes back to the front of its queue at once, or
    /// fails when its attempts are used up. A delivery lost to a flapping
    /// worker (`charged` false) is counted as lost, not as an attempt.
    /// Returns the queue to pump, as a slot was freed.
    pub(super) fn delivery_lost(
        &self,
        st: &mut State,
        key: TaskKey,
        why: &str,
        charged: bool,
        fx: &mut Vec<Effect>,
    ) -> Option<String> {
        let lease = st.detach(key);
        let entry = st.tasks.get(&key)?;
        let queue = entry.task.queue.clone();
        if !charged {
            let now = self.now_us();
            let entry = st.tasks.get_mut(&key)?;
            entry.task.lost += 1;
            entry.task.not_before_us = None;
            self.persist(&entry.task, key);
            self.inner.metrics.task_lost();
            self.emit(|| TaskEvent::Requeued {
                id: entry.task.id.clone(),
                reason: format!("{why} (a flapping worker: not counted as an attempt)"),
                due_us: None,
                lost: true,
                at_us: now,
            });
            st.attach(key, Stage::Ready, true);
            return Some(queue);
        }
        let attempts = entry.task.attempts + 1;
        if attempts >= st.policy(&entry.task).max_attempts {
            let error = format!("{why}; gave up after {attempts} attempts");
            let worker = lease.as_ref().map(|l| l.worker.clone());
            let outcome = Outcome::exhausted(error, worker, lease.map(|l| l.delivered_at_us));
            self.finish(st, key, outcome, fx);
            return Some(queue);
        }
        let now = self.now_us();
        let entry = st.tasks.get_mut(&key)?;
        entry.task.attempts = attempts;
        entry.task.not_before_us = None;
        self.persist(&entry.task, key);
        self.emit(|| TaskEvent::Requeued {
            id: entry.task.id.clone(),
            reason: why.to_string(),
            due_us: None,
            lost: false,
            at_us: now,
        });
        st.attach(key, Stage::Ready, true);
        Some(queue)
    }

    /// Rewrites a task whose attempts or due time changed.
    fn persist(&self, task: &StoredTask, key: TaskKey) {
        if let Err(e) = self.inner.store.put(key, task) {
            // The task stays in memory; only its attempt count or due time
            // may be stale after a restart.
            tracing::error!(task_id = %task.id, error = %e, "cannot store the task's attempt count");
        }
    }

    /// Whether the broker should still deliver task `task_id` to `worker`. A
    /// persistent session may try to redeliver a copy of a task that has since
    /// gone to someone else; this vetoes it.
    pub fn lease_held_by(&self, task_id: &str, worker: &str) -> bool {
        let st = self.lock();
        st.ids
            .get(task_id)
            .and_then(|k| st.tasks.get(k))
            .is_some_and(|e| matches!(&e.stage, Stage::Leased(l) if l.worker == worker))
    }

    /// Acts on every deadline that is due: takes back tasks whose lease ran
    /// out, makes scheduled tasks deliverable, answers tasks that expired
    /// before they started. Returns the next deadline, if any.
    pub fn tick(&self) -> Option<u64> {
        let mut st = self.lock();
        let now = self.now_us();
        let mut fx = Vec::new();
        let mut touched = std::collections::HashSet::new();
        let more_cold = self.load_cold(&mut st, now, &mut touched);
        for due in st.deadlines.pop_due(now) {
            match due {
                Deadline::Lease(key) => {
                    let Some(Stage::Leased(lease)) = st.tasks.get(&key).map(|e| &e.stage) else {
                        continue;
                    };
                    if lease.deadline_us > now {
                        continue;
                    }
                    tracing::warn!(worker = %lease.worker, "lease expired; taking the task back");
                    if let Some(q) =
                        self.delivery_lost(&mut st, key, "lease expired", true, &mut fx)
                    {
                        touched.insert(q);
                    }
                }
                Deadline::Due(key) => {
                    let Some(entry) = st.tasks.get(&key) else {
                        continue;
                    };
                    let Stage::Scheduled { due_us } = entry.stage else {
                        continue;
                    };
                    if due_us > now {
                        continue;
                    }
                    let (id, queue) = (entry.task.id.clone(), entry.task.queue.clone());
                    st.detach(key);
                    st.attach(key, Stage::Ready, false);
                    self.emit(|| TaskEvent::Ready { id, at_us: now });
                    touched.insert(queue);
                }
                Deadline::Schedule(id) => {
                    let Some(name) = Engine::schedule_name(&st, id) else {
                        continue;
                    };
                    let current = st
                        .schedules
                        .get(&name)
                        .is_some_and(|s| s.id == id && s.due_us.is_some_and(|t| t <= now));
                    if current {
                        self.fire_due(&mut st, &name, now, &mut fx);
                    }
                }
                Deadline::Throttle(id) => {
                    if let Some(name) = st.queue_names.get(id.0 as usize).cloned() {
                        if let Some(q) = st.queues.get_mut(&name) {
                            q.throttle_at_us = None;
                        }
                        touched.insert(name);
                    }
                }
                Deadline::Expiry(key) => {
                    let Some(entry) = st.tasks.get(&key) else {
                        continue;
                    };
                    let Some(t) = entry.task.expires_at_us else {
                        continue;
                    };
                    if matches!(entry.stage, Stage::Leased(_)) || t > now {
                        continue;
                    }
                    touched.insert(entry.task.queue.clone());
                    self.finish(&mut st, key, Outcome::expired(), &mut fx);
                }
            }
        }
        let (released, next_release) = Engine::release_quarantines(&mut st, now);
        touched.extend(released);
        for q in touched {
            self.pump(&mut st, &q, &mut fx);
        }
        let next = if more_cold {
            Some(now)
        } else {
            match (st.deadlines.next_us(), next_release) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        let max_sleep_us = MAX_TIMER_SLEEP.as_micros() as u64;
        st.timer_armed_us = next.map_or(now + max_sleep_us, |t| t.min(now + max_sleep_us));
        st.wake_timer = false;
        self.commit(st, fx);
        next
    }

    /// Loads the cold tasks that came within the hot window from the
    /// store's due-time index into the schedule. Returns whether more are
    /// left for the next tick (a tick loads at most `COLD_BATCH`).
    fn load_cold(
        &self,
        st: &mut State,
        now: u64,
        touched: &mut std::collections::HashSet<String>,
    ) -> bool {
        let until = now + super::HOT_WINDOW_US;
        if until <= st.cold_until_us {
            return false;
        }
        let entries = match self
            .inner
            .store
            .due_range(st.cold_until_us, until, super::COLD_BATCH)
        {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the due-time index; scheduled tasks wait");
                return false;
            }
        };
        let full = entries.len() == super::COLD_BATCH;
        let reached = match (full, entries.last()) {
            (true, Some((due, _))) => *due,
            _ => until,
        };
        for (due, key) in entries {
            // The entry has done its work either way: the task is loaded
            // now, or it is already in memory, or it is gone.
            if let Err(e) = self.inner.store.remove_due(due, key) {
                tracing::warn!(error = %e, "cannot drop a due-time entry");
            }
            if st.tasks.contains_key(&key) {
                continue;
            }
            let task = match self.inner.store.get(key) {
                Ok(Some(t)) if t.not_before_us == Some(due) => t,
                Ok(_) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "cannot load a scheduled task");
                    continue;
                }
            };
            st.forget_cold(&task);
            let stage = if due > now {
                Stage::Scheduled { due_us: due }
            } else {
                // Loaded late (the timer was held up): deliverable at once.
                touched.insert(task.queue.clone());
                Stage::Ready
            };
            st.insert_task(key, task, stage);
        }
        // A full batch ends part way through the range: the next tick reads
        // on from its last due time (the entries read are removed, so none
        // is read twice).
        st.cold_until_us = if full {
            reached.saturating_sub(1)
        } else {
            until
        };
        full
    }

    /// Runs [`Engine::tick`] whenever a deadline falls due, until `token` is
    /// cancelled. An operation that sets an earlier deadline wakes it.
    pub async fn run_timers(self, token: CancellationToken) {
        loop {
            let next = self.tick();
            let now = self.now_us();
            let wait = next.map_or(MAX_TIMER_SLEEP, |t| {
                std::time::Duration::from_micros(t.saturating_sub(now)).min(MAX_TIMER_SLEEP)
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.inner.timer.notified() => {}
                () = token.cancelled() => return,
            }
        }
    }
}

/// Decides whether an answering client may answer for a lease holder (its
/// client id, or `None` when the task is not leased); the access layer's
/// answer, borrowed for one call.
#[derive(Clone, Copy)]
pub struct HolderCheck<'a>(pub &'a (dyn Fn(Option<&str>) -> bool + Sync));

impl std::fmt::Debug for HolderCheck<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HolderCheck")
    }
}

/// What became of a worker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// Recorded (a result, an error or a progress report).
    Taken,
    /// Matched no unfinished task, or carried no task id.
    Ignored,
    /// From a client that does not hold the task (its id): dropped.
    NotHolder(String),
}

pub(super) fn deliver_message(task: &StoredTask, worker: &str, attempt: u32) -> Effect {
    let reply_to = wire::results_topic(&task.queue);
    let msg = TaskMessage {
        id: task.id.clone(),
        task: task.task.clone(),
        args: task.args.clone(),
        kwargs: task.kwargs.clone(),
        reply_to: reply_to.clone(),
        queue: task.queue.clone(),
        attempt,
        requester: task.requester.clone(),
        chunk: task.chunk.clone(),
        workflow: task.workflow.clone(),
    };
    let mut user_properties = task.user_properties.clone();
    if let Some(r) = &task.requester {
        user_properties.push((REQUESTER_PROPERTY.to_string(), r.clone()));
    }
    Effect::Deliver {
        worker: worker.to_string(),
        queue: task.queue.clone(),
        task_id: task.id.clone(),
        reply_to,
        payload: Bytes::from(task_message_json(&msg)),
        user_properties,
    }
}

/// The JSON of a task message; a chunk task's carries `chunk` instead of
/// `args`, as the contract says.
fn task_message_json(msg: &TaskMessage) -> Vec<u8> {
    // Serialising these plain types cannot fail.
    if msg.chunk.is_none() {
        return serde_json::to_vec(msg).unwrap_or_default();
    }
    let mut v = serde_json::to_value(msg).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("args");
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// MQTT 5 user property naming the task's requester on a delivery.
pub const REQUESTER_PROPERTY: &str = "swarmq-requester";

/// The notice that tells a worker to stop running task `id`.
pub(super) fn cancel_message(worker: &str, id: &str) -> Effect {
    Effect::Control {
        worker: worker.to_string(),
        payload: Bytes::from(json!({ "cancel": id }).to_string()),
    }
}
