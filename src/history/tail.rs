//! The live tail: each task event as one JSON line, for whoever follows
//! them (`GET /api/v1/tasks/tail`, `swarmq tail`).
//!
//! The recorder thread feeds it with the events it records, so following
//! costs the engine nothing; with nobody following, it costs the recorder
//! one atomic read per batch. A follower that reads too slowly misses
//! events (it is told how many) instead of holding memory.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::HistoryStore;
use crate::engine::TaskEvent;

/// Events a follower may fall behind by before it misses some.
const TAIL_BUFFER: usize = 4096;

/// One task event, ready to send.
#[derive(Debug)]
pub struct TailEvent {
    /// The task's queue, when known (for a follower's filter).
    pub queue: Option<String>,
    /// The event as a JSON object: `event`, `id`, `queue`, `task`, `at_us`
    /// and the event's own fields.
    pub json: String,
}

/// The feed. Cheap to clone; every clone sends to the same followers.
#[derive(Debug, Clone)]
pub struct Tail {
    tx: broadcast::Sender<Arc<TailEvent>>,
}

impl Default for Tail {
    fn default() -> Tail {
        Tail {
            tx: broadcast::channel(TAIL_BUFFER).0,
        }
    }
}

impl Tail {
    /// Follows the events from now on.
    pub fn follow(&self) -> broadcast::Receiver<Arc<TailEvent>> {
        self.tx.subscribe()
    }

    /// Sends a batch's task events to the followers, if there are any.
    /// Events that do not name their queue (a start, a progress report)
    /// take it from an earlier event of the batch or from the history's
    /// record, read before the batch is applied.
    pub(crate) fn send(&self, batch: &[TaskEvent], store: Option<&HistoryStore>) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        // id -> (queue, task), for the events of this batch that lack them.
        let mut known: HashMap<&str, (String, String)> = HashMap::new();
        for event in batch {
            let Some((id, mut line)) = describe(event) else {
                continue;
            };
            if let TaskEvent::Submitted(t) = event {
                known.insert(&t.id, (t.queue.clone(), t.task.clone()));
            }
            let (queue, task) = match known.get(id) {
                Some(qt) => (Some(qt.0.clone()), Some(qt.1.clone())),
                None => match store.and_then(|s| s.get(id).ok().flatten()) {
                    Some(r) => {
                        let qt = (r.summary.queue.clone(), r.summary.task.clone());
                        known.insert(id, qt.clone());
                        (Some(qt.0), Some(qt.1))
                    }
                    None => (
                        line.get("queue").and_then(Value::as_str).map(String::from),
                        None,
                    ),
                },
            };
            if let Some(q) = &queue {
                line["queue"] = json!(q);
            }
            if let Some(t) = task {
                line["task"] = json!(t);
            }
            let _ = self.tx.send(Arc::new(TailEvent {
                queue,
                json: line.to_string(),
            }));
        }
    }
}

/// The event's task id and its line (without the queue and task it may
/// lack); `None` for worker and workflow events.
fn describe(event: &TaskEvent) -> Option<(&str, Value)> {
    let (id, line) = match event {
        TaskEvent::Submitted(t) => (
            t.id.as_str(),
            json!({"event": "submitted", "args": t.args, "kwargs": t.kwargs,
                   "priority": t.priority, "due_us": t.not_before_us,
                   "workflow": t.workflow, "at_us": t.submitted_at_us}),
        ),
        TaskEvent::Ready { id, at_us } => (id.as_str(), json!({"event": "ready", "at_us": at_us})),
        TaskEvent::Started {
            id,
            worker,
            attempt,
            at_us,
        } => (
            id.as_str(),
            json!({"event": "started", "worker": worker, "attempt": attempt, "at_us": at_us}),
        ),
        TaskEvent::Progress {
            id,
            progress,
            at_us,
        } => (
            id.as_str(),
            json!({"event": "progress", "progress": progress, "at_us": at_us}),
        ),
        TaskEvent::Requeued {
            id,
            reason,
            due_us,
            lost,
            at_us,
        } => (
            id.as_str(),
            json!({"event": "requeued", "reason": reason, "due_us": due_us, "lost": lost,
                   "at_us": at_us}),
        ),
        TaskEvent::Finished {
            id,
            queue,
            status,
            result,
            error,
            worker,
            attempts,
            at_us,
            latency_us,
        } => (
            id.as_str(),
            json!({"event": "finished", "queue": queue, "status": status, "result": result,
                   "error": error, "worker": worker, "attempts": attempts,
                   "latency_ms": *latency_us as f64 / 1000.0, "at_us": at_us}),
        ),
        TaskEvent::Rejected {
            id,
            queue,
            error,
            at_us,
            ..
        } => (
            id.as_str(),
            json!({"event": "rejected", "queue": queue, "error": error, "at_us": at_us}),
        ),
        TaskEvent::WorkerSeen { .. }
        | TaskEvent::WorkerLeft { .. }
        | TaskEvent::WorkflowFinished(_) => return None,
    };
    let mut line = line;
    line["id"] = json!(id);
    Some((id, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_takes_its_queue_from_the_submission_in_the_same_batch() {
        let tail = Tail::default();
        let mut rx = tail.follow();
        let task: crate::engine::StoredTask = serde_json::from_value(json!({
            "id": "t1", "queue": "word_count", "task": "mapper", "args": ["Fables"],
            "submitted_at_us": 5
        }))
        .unwrap();
        let batch = vec![
            TaskEvent::Submitted(Box::new(task)),
            TaskEvent::Started {
                id: "t1".into(),
                worker: "w1".into(),
                attempt: 1,
                at_us: 6,
            },
            TaskEvent::WorkerLeft {
                id: "w1".into(),
                at_us: 7,
            },
        ];
        tail.send(&batch, None);
        let first: Value = serde_json::from_str(&rx.try_recv().unwrap().json).unwrap();
        assert_eq!(first["event"], "submitted");
        assert_eq!(first["args"], json!(["Fables"]));
        let second = rx.try_recv().unwrap();
        assert_eq!(second.queue.as_deref(), Some("word_count"));
        let line: Value = serde_json::from_str(&second.json).unwrap();
        assert_eq!(
            (
                line["event"].as_str(),
                line["task"].as_str(),
                line["worker"].as_str()
            ),
            (Some("started"), Some("mapper"), Some("w1"))
        );
        assert!(rx.try_recv().is_err(), "worker events are not task events");
    }
}
