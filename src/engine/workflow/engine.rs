//! Workflows in the engine: accepted from `swarmq/workflows`, their members
//! admitted as tasks, advanced from `on_final`, failed, revoked, recovered
//! after a restart, and viewed.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use swarmq_worker::wire::Status;

use super::run::{Known, NewMember, NodeState, Run};
use super::tree::{Kind, NodeId, ROOT, Tree, WorkflowLimits};
use super::{LISTED_CHILDREN, NodeView, WorkflowView, parse_workflow};
use crate::engine::dispatch::cancel_message;
use crate::engine::finish::Outcome;
use crate::engine::store::WorkflowMeta;
use crate::engine::submit::{SubmitOutcome, new_key};
use crate::engine::task::{ReplyTo, StoredTask, TaskKey};
use crate::engine::{Effect, Engine, EngineError, Stage, State, Submission, TaskEvent};
use crate::metrics::RejectReason;

/// Members admitted per hold of the engine's lock while a large workflow
/// (or a large group after a chain's step) starts: other clients' tasks get
/// through between batches.
const ADMIT_BATCH: usize = 512;

/// A workflow the engine is running.
#[derive(Debug)]
pub(in crate::engine) struct Flow {
    meta: WorkflowMeta,
    run: Run,
    /// The last progress sent, in percent of the members.
    progress_sent: usize,
}

impl Flow {
    /// The identity that submitted it.
    pub(in crate::engine) fn requester(&self) -> Option<String> {
        self.meta.requester.clone()
    }
}

impl Engine {
    /// Validates and stores a workflow, then admits its first members. The
    /// workflow is durable when this returns [`SubmitOutcome::Accepted`];
    /// its result goes, once, to the reply topic.
    pub fn submit_workflow(&self, sub: Submission<'_>) -> SubmitOutcome {
        let limits = self.inner.config.workflow_limits;
        let v5_reply = sub.v5_reply();
        if let Some(msg) = sub.response_topic_error() {
            return self.reject(&sub, RejectReason::InvalidPayload, msg, None, None);
        }
        if sub.payload.len() > limits.max_bytes {
            let msg = format!(
                "workflow of {} bytes exceeds the limit of {} bytes (workflows.max_bytes)",
                sub.payload.len(),
                limits.max_bytes
            );
            return self.reject(
                &sub,
                RejectReason::PayloadTooLarge,
                msg,
                v5_reply.as_ref(),
                None,
            );
        }
        let parsed = match parse_workflow(sub.payload, &limits) {
            Ok(p) => p,
            Err(bad) => {
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
        if !self.inner.config.auto_create_queues
            && let Some(q) = parsed
                .tree
                .queues()
                .into_iter()
                .find(|q| !st.queues.contains_key(*q))
        {
            drop(st);
            let msg = format!("unknown queue `{q}` in the workflow");
            return self.reject(
                &sub,
                RejectReason::UnknownQueue,
                msg,
                reply.as_ref(),
                parsed.id,
            );
        }
        if let Some(id) = &parsed.id
            && (st.workflows.contains_key(id)
                || st.workflows_storing.contains(id)
                || st.recent_done_set.contains(id))
        {
            self.inner.metrics.task_duplicate();
            tracing::info!(workflow_id = %id, "duplicate workflow id, not run again");
            return SubmitOutcome::Duplicate;
        }
        let id = parsed.id.unwrap_or_else(|| new_key(&mut st).0.to_string());
        st.workflows_storing.insert(id.clone());
        drop(st);

        let meta = WorkflowMeta {
            id: id.clone(),
            reply,
            requester: sub.requester.clone(),
            progress: parsed.progress,
            submitted_at_us: self.now_us(),
        };
        // Stored whole, before anything of it runs, without holding the
        // lock: a 6 MB definition is one write.
        if let Err(e) = self.inner.store.put_workflow(&meta, sub.payload) {
            self.lock().workflows_storing.remove(&id);
            return self.not_stored(&sub, e, meta.reply, id);
        }
        // Expanded outside the lock too: the first members are known
        // without looking at anything else.
        let mut run = Run::new(parsed.tree);
        let mut first = Vec::new();
        run.start(&mut |_, _| Known::New, &mut first);
        let members = run.tree.members;
        let tasks: Vec<StoredTask> = first
            .into_iter()
            .map(|m| self.member_task(&meta, &run.tree, m))
            .collect();
        tracing::info!(workflow_id = %id, members, starting = tasks.len(), "workflow accepted");
        self.inner.metrics.workflow_submitted();

        let mut st = self.lock();
        st.workflows_storing.remove(&id);
        st.workflows.insert(
            id,
            Flow {
                meta,
                run,
                progress_sent: 0,
            },
        );
        st.pending_members.extend(tasks);
        self.commit(st, Vec::new());
        SubmitOutcome::Accepted
    }

    /// The task of a member about to start.
    fn member_task(&self, meta: &WorkflowMeta, tree: &Tree, m: NewMember) -> StoredTask {
        let node = tree.node(m.node);
        let Kind::Task(sig) = &node.kind else {
            // Only tasks are members; the run never starts anything else.
            unreachable!("a workflow member is a task");
        };
        let now = self.now_us();
        let queue_retry = self.inner.config.limits(&sig.queue).retry;
        StoredTask {
            kwargs: sig.kwargs.clone(),
            submitted_at_us: now,
            expires_at_us: sig.expires.map(|e| e.at_us(now)),
            not_before_us: sig.start.and_then(|s| s.due_us(now)),
            priority: sig.priority,
            retry: sig.retry.map(|r| r.apply(queue_retry)),
            requester: meta.requester.clone(),
            workflow: Some(meta.id.clone()),
            chunk: sig.chunk.clone(),
            ..StoredTask::new(
                &member_id(&meta.id, &node.path),
                &sig.queue,
                &sig.task,
                m.args,
            )
        }
    }

    /// Admits up to [`ADMIT_BATCH`] of the members waiting to be, and feeds
    /// their queues' workers; members of a workflow that has ended since
    /// are dropped. Returns the effects.
    pub(in crate::engine) fn admit_pending_members(&self, st: &mut State) -> Vec<Effect> {
        let mut fx = Vec::new();
        let mut queues = BTreeSet::new();
        for _ in 0..ADMIT_BATCH {
            let Some(task) = st.pending_members.pop_front() else {
                break;
            };
            if !task
                .workflow
                .as_ref()
                .is_some_and(|w| st.workflows.contains_key(w))
            {
                continue;
            }
            queues.insert(task.queue.clone());
            self.admit_member(st, task);
        }
        for q in &queues {
            self.pump(st, q, &mut fx);
        }
        fx
    }

    /// Admits a member task. Only one with a due time or an expiry is
    /// written on its own (those times are counted from now); the others
    /// are rebuilt from the workflow's definition after a restart.
    fn admit_member(&self, st: &mut State, task: StoredTask) {
        self.ensure_queue(st, &task.queue);
        let key = new_key(st);
        if task.not_before_us.is_some() || task.expires_at_us.is_some() {
            match self.admit(st, key, task.clone()) {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(task_id = %task.id, error = %e, "cannot store a workflow member's due time; it is kept in memory");
                }
            }
        }
        self.inner.metrics.task_submitted();
        self.emit(|| TaskEvent::Submitted(Box::new(task.clone())));
        let stage = match task.not_before_us {
            Some(due_us) => Stage::Scheduled { due_us },
            None => Stage::Ready,
        };
        st.insert_task(key, task, stage);
    }

    /// A member of a workflow is final: its result moves the workflow on;
    /// any other outcome fails it. Called from `on_final`.
    pub(in crate::engine) fn member_final(
        &self,
        st: &mut State,
        task: &StoredTask,
        outcome: &Outcome,
        fx: &mut Vec<Effect>,
    ) {
        let Some(wf) = &task.workflow else {
            return;
        };
        // Taken out while it moves, and put back unless it ended; a member
        // of a workflow that ended already (its late result) finds nothing.
        let Some(mut flow) = st.workflows.remove(wf) else {
            return;
        };
        let path = task.id.get(wf.len() + 1..).unwrap_or_default();
        let Some(node) = flow.run.tree.find(path) else {
            tracing::warn!(task_id = %task.id, "member path not in its workflow; ignored");
            st.workflows.insert(wf.clone(), flow);
            return;
        };
        if outcome.status != Status::Success {
            flow.run.set_state(node, NodeState::Failed);
            let error = format!(
                "member `{}` {}: {}",
                task.id,
                outcome.status.as_str(),
                outcome.error.as_deref().unwrap_or("no error given")
            );
            self.fail_workflow(st, flow, Status::Failure, error, fx);
            return;
        }
        let value = outcome.result.clone().unwrap_or(Value::Null);
        if let Err(e) = self.inner.store.put_member_result(wf, path, &value) {
            // It is complete here; after a restart it would run again.
            tracing::error!(task_id = %task.id, error = %e, "cannot store a workflow member's result");
        }
        let mut next = Vec::new();
        let result = flow
            .run
            .complete(node, value, &mut |_, _| Known::New, &mut next);
        if result.is_none() {
            // The last member's progress is the result itself.
            self.send_progress(&mut flow, fx);
        }
        for m in next {
            let member = self.member_task(&flow.meta, &flow.run.tree, m);
            st.pending_members.push_back(member);
        }
        match result {
            Some(result) => self.finish_workflow(st, flow, Status::Success, Some(result), None, fx),
            None => {
                st.workflows.insert(wf.clone(), flow);
            }
        }
    }

    /// Sends `{"status": "progress", "progress": {"done", "total"}}` when
    /// the requester asked for it and another percent is done (every member
    /// for workflows of up to 100).
    fn send_progress(&self, flow: &mut Flow, fx: &mut Vec<Effect>) {
        let Some(reply) = flow.meta.reply.as_ref().filter(|_| flow.meta.progress) else {
            return;
        };
        let (done, total) = (flow.run.done, flow.run.tree.members);
        let step = done * 100 / total.max(1);
        if total > 100 && step <= flow.progress_sent {
            return;
        }
        flow.progress_sent = step;
        let mut message = json!({
            "id": flow.meta.id,
            "status": "progress",
            "progress": {"done": done, "total": total},
        });
        if let Some(c) = &reply.correlation_id {
            message["correlation_id"] = json!(c);
        }
        fx.push(reply_effect(reply, &message));
    }

    /// Ends `flow` with `status`: revokes its members that have not started
    /// (a failure) or all of them (a revoke; running ones are told to
    /// cancel), then finishes it.
    fn fail_workflow(
        &self,
        st: &mut State,
        mut flow: Flow,
        status: Status,
        error: String,
        fx: &mut Vec<Effect>,
    ) {
        let revoke_running = status == Status::Revoked;
        let why = if revoke_running {
            "its workflow was revoked"
        } else {
            "its workflow failed"
        };
        let running: Vec<NodeId> = flow.run.running_members().collect();
        let mut freed = BTreeSet::new();
        for node in running {
            let id = member_id(&flow.meta.id, &flow.run.tree.node(node).path);
            let Some(&key) = st.ids.get(&id) else {
                if let Some(key) = self.cold_key(st, &id) {
                    self.revoke_cold(st, key, why, fx);
                    flow.run.set_state(node, NodeState::Revoked);
                }
                continue;
            };
            let (holder, queue) = match st.tasks.get(&key) {
                Some(e) => (
                    match &e.stage {
                        Stage::Leased(l) => Some(l.worker.clone()),
                        _ => None,
                    },
                    e.task.queue.clone(),
                ),
                None => continue,
            };
            match holder {
                Some(_) if !revoke_running => continue,
                Some(worker) => {
                    fx.push(cancel_message(&worker, &id));
                    freed.insert(queue);
                }
                None => {}
            }
            self.finish(st, key, Outcome::revoked(why), fx);
            flow.run.set_state(node, NodeState::Revoked);
        }
        tracing::warn!(workflow_id = %flow.meta.id, status = status.as_str(), error, "workflow ended");
        self.finish_workflow(st, flow, status, None, Some(error), fx);
        for q in &freed {
            self.pump(st, q, fx);
        }
    }

    /// Makes `flow` final: removed from the store (durably, before its
    /// result leaves, so a restart never answers twice), remembered for
    /// deduplication, counted, observed, and answered.
    fn finish_workflow(
        &self,
        st: &mut State,
        flow: Flow,
        status: Status,
        result: Option<Value>,
        error: Option<String>,
        fx: &mut Vec<Effect>,
    ) {
        let now = self.now_us();
        let id = flow.meta.id.clone();
        if let Err(e) = self.inner.store.remove_workflow(&id) {
            tracing::error!(workflow_id = %id, error = %e, "cannot remove a finished workflow from the store");
        }
        st.ended_workflows.push(id.clone());
        st.remember_done(&id, self.inner.config.dedupe_window);
        self.inner.metrics.workflow_finished(status);
        let mut view = self.view_of(st, &flow);
        view.status = status.as_str().to_string();
        view.result = result.clone();
        view.error = error.clone();
        view.finished_at_us = Some(now);
        if status == Status::Success {
            tracing::info!(workflow_id = %id, members = view.members, "workflow succeeded");
        }
        self.emit(|| TaskEvent::WorkflowFinished(Box::new(view)));
        let Some(reply) = &flow.meta.reply else {
            return;
        };
        let mut message = json!({
            "id": id,
            "status": status.as_str(),
            "workflow": true,
            "members": flow.run.tree.members,
            "run_ms": (now.saturating_sub(flow.meta.submitted_at_us) as f64 / 1000.0),
        });
        match (result, error) {
            (Some(r), _) => message["result"] = r,
            (None, Some(e)) => message["error"] = json!(e),
            (None, None) => {}
        }
        if let Some(c) = &reply.correlation_id {
            message["correlation_id"] = json!(c);
        }
        fx.push(reply_effect(reply, &message));
    }

    /// Revokes workflow `id` and every member of it, if it is running.
    /// Returns `None` when no such workflow runs (it may be a task).
    pub(in crate::engine) fn revoke_workflow(
        &self,
        st: &mut State,
        id: &str,
        fx: &mut Vec<Effect>,
    ) -> bool {
        let Some(flow) = st.workflows.remove(id) else {
            return false;
        };
        self.fail_workflow(st, flow, Status::Revoked, "revoked by request".into(), fx);
        true
    }

    /// The state of workflow `id`, while the engine runs it.
    pub fn workflow(&self, id: &str) -> Option<WorkflowView> {
        let st = self.lock();
        let flow = st.workflows.get(id)?;
        Some(self.view_of(&st, flow))
    }

    /// Ids of the workflows running now.
    pub fn running_workflows(&self) -> Vec<String> {
        let st = self.lock();
        let mut ids: Vec<String> = st.workflows.keys().cloned().collect();
        ids.sort_unstable();
        ids
    }

    fn view_of(&self, st: &State, flow: &Flow) -> WorkflowView {
        let mut counts: HashMap<&'static str, usize> = HashMap::new();
        let tree = &flow.run.tree;
        let status_of = |node: NodeId| -> &'static str {
            let n = tree.node(node);
            match (flow.run.state(node), &n.kind) {
                (NodeState::Waiting, _) => "waiting",
                (NodeState::Done, _) => "success",
                (NodeState::Failed, _) => "failure",
                (NodeState::Revoked, _) => "revoked",
                (NodeState::Started, Kind::Task(_)) => {
                    let id = member_id(&flow.meta.id, &n.path);
                    match st
                        .ids
                        .get(&id)
                        .and_then(|k| st.tasks.get(k))
                        .map(|e| &e.stage)
                    {
                        Some(Stage::Scheduled { .. }) => "scheduled",
                        Some(Stage::Leased(_)) => "running",
                        _ => "queued",
                    }
                }
                (NodeState::Started, _) => "running",
            }
        };
        for (i, n) in tree.nodes.iter().enumerate() {
            if matches!(n.kind, Kind::Task(_)) {
                *counts.entry(status_of(i as NodeId)).or_default() += 1;
            }
        }
        let mut counts: Vec<(&str, usize)> = counts.into_iter().collect();
        counts.sort_unstable();
        WorkflowView {
            id: flow.meta.id.clone(),
            status: "running".into(),
            members: tree.members,
            counts: counts
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<Map<String, Value>>(),
            result: None,
            error: None,
            requester: flow.meta.requester.clone(),
            submitted_at_us: flow.meta.submitted_at_us,
            finished_at_us: None,
            tree: node_view(&flow.meta.id, tree, ROOT, &status_of),
        }
    }

    /// Rebuilds every stored workflow after a restart (see the module
    /// docs), then drops member tasks whose workflow has ended.
    pub(in crate::engine) fn recover_workflows(&self) -> Result<(), EngineError> {
        let orphans = self.inner.store.remove_orphan_results()?;
        if orphans > 0 {
            tracing::info!(
                results = orphans,
                "dropped member results of ended workflows"
            );
        }
        let mut stored = Vec::new();
        self.inner.store.scan_workflows(&mut |w| stored.push(w))?;
        let mut st = self.lock();
        let mut fx = Vec::new();
        let mut resumed = 0usize;
        for w in stored {
            let id = w.meta.id.clone();
            let tree = serde_json::from_slice::<Value>(&w.payload)
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    let node = v.get("workflow").cloned().unwrap_or(Value::Null);
                    super::tree::read_tree(&node, &WorkflowLimits::NONE)
                });
            let tree = match tree {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(workflow_id = %id, error = %e, "stored workflow unreadable; dropped");
                    let _ = self.inner.store.remove_workflow(&id);
                    continue;
                }
            };
            let mut results: HashMap<String, Value> = w.results.into_iter().collect();
            let mut run = Run::new(tree);
            let mut new = Vec::new();
            let done = {
                let st_ref = &*st;
                let mut known = |_: NodeId, path: &str| {
                    if let Some(v) = results.remove(path) {
                        return Known::Result(v);
                    }
                    let member = member_id(&id, path);
                    if st_ref.ids.contains_key(&member) || self.cold_key(st_ref, &member).is_some()
                    {
                        Known::Exists
                    } else {
                        Known::New
                    }
                };
                run.start(&mut known, &mut new)
            };
            let mut flow = Flow {
                meta: w.meta,
                run,
                progress_sent: 0,
            };
            flow.progress_sent = flow.run.done * 100 / flow.run.tree.members.max(1);
            let tasks: Vec<StoredTask> = new
                .into_iter()
                .map(|m| self.member_task(&flow.meta, &flow.run.tree, m))
                .collect();
            for task in tasks {
                self.admit_member(&mut st, task);
            }
            resumed += 1;
            match done {
                // Every member had its result: only the answer was missing.
                Some(result) => self.finish_workflow(
                    &mut st,
                    flow,
                    Status::Success,
                    Some(result),
                    None,
                    &mut fx,
                ),
                None => {
                    st.workflows.insert(id, flow);
                }
            }
        }
        // Members whose workflow ended, or whose result is stored, but
        // whose removal a crash forgot.
        let stale: Vec<TaskKey> = st
            .tasks
            .iter()
            .filter(|(_, e)| {
                e.task
                    .workflow
                    .as_ref()
                    .is_some_and(|w| match st.workflows.get(w) {
                        None => true,
                        Some(flow) => {
                            let path = e.task.id.get(w.len() + 1..).unwrap_or_default();
                            flow.run
                                .tree
                                .find(path)
                                .is_none_or(|n| flow.run.state(n) != NodeState::Started)
                        }
                    })
            })
            .map(|(k, _)| *k)
            .collect();
        for key in &stale {
            st.detach(*key);
            if let Some(entry) = st.tasks.remove(key) {
                st.ids.remove(&entry.task.id);
            }
            let _ = self.inner.store.remove(*key);
        }
        if resumed > 0 || !stale.is_empty() {
            tracing::info!(
                workflows = resumed,
                stale_members = stale.len(),
                "recovered workflows"
            );
        }
        self.commit(st, fx);
        Ok(())
    }
}

/// The task id of the member at `path` of workflow `workflow`.
pub(in crate::engine) fn member_id(workflow: &str, path: &str) -> String {
    format!("{workflow}/{path}")
}

fn node_view(
    workflow: &str,
    tree: &Tree,
    node: NodeId,
    status_of: &dyn Fn(NodeId) -> &'static str,
) -> NodeView {
    let n = tree.node(node);
    let (id, queue, task) = match &n.kind {
        Kind::Task(sig) => (
            Some(member_id(workflow, &n.path)),
            Some(sig.queue.clone()),
            Some(sig.task.clone()),
        ),
        _ => (None, None, None),
    };
    NodeView {
        kind: n.kind.name().to_string(),
        path: n.path.clone(),
        status: status_of(node).to_string(),
        id,
        queue,
        task,
        children: n
            .children
            .iter()
            .take(LISTED_CHILDREN)
            .map(|c| node_view(workflow, tree, *c, status_of))
            .collect(),
        more: n.children.len().saturating_sub(LISTED_CHILDREN),
    }
}

fn reply_effect(reply: &ReplyTo, message: &Value) -> Effect {
    Effect::Reply {
        topic: reply.topic.clone(),
        correlation_data: reply.correlation_data.clone().map(Bytes::from),
        payload: Bytes::from(message.to_string()),
    }
}
