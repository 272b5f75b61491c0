//! Counters, gauges and the latency histogram served on `/metrics`.
//!
//! Every metric name lives here as a constant; nothing else spells one. The
//! counters are plain atomics bumped on the hot path; queue depths and worker
//! counts are read from the engine when `/metrics` is rendered, so they
//! can never drift from the real state.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use swarmq_worker::wire::Status;

/// Tasks accepted into a queue.
pub const TASKS_SUBMITTED: &str = "swarmq_tasks_submitted_total";
/// Tasks finished, by final status.
pub const TASKS_FINISHED: &str = "swarmq_tasks_finished_total";
/// Workers quarantined for dropping their tasks again and again.
pub const WORKERS_QUARANTINED: &str = "swarmq_workers_quarantined_total";
/// Deliveries lost to a flapping worker, not counted as attempts.
pub const TASKS_LOST: &str = "swarmq_tasks_lost_total";
/// Clients disconnected because their waiting messages passed `mqtt.max_mqueue_bytes`.
pub const CLIENTS_OVERFLOWED: &str = "swarmq_clients_overflowed_total";
/// Workflows accepted.
pub const WORKFLOWS_SUBMITTED: &str = "swarmq_workflows_submitted_total";
/// Workflows finished, by final status.
pub const WORKFLOWS_FINISHED: &str = "swarmq_workflows_finished_total";
/// Submissions refused (bad input, full or unknown queue), by reason.
pub const TASKS_REJECTED: &str = "swarmq_tasks_rejected_total";
/// Tasks handed to a worker again after a worker vanished or a lease expired.
pub const TASKS_REDELIVERED: &str = "swarmq_tasks_redelivered_total";
/// Tasks a worker asked to retry.
pub const TASKS_RETRIED: &str = "swarmq_tasks_retried_total";
/// Submissions whose id was already known, acknowledged without running again.
pub const TASKS_DUPLICATE: &str = "swarmq_tasks_duplicate_total";
/// Worker replies that matched no unfinished task (late, duplicate or malformed).
pub const REPLIES_IGNORED: &str = "swarmq_worker_replies_ignored_total";
/// Tasks waiting in each queue.
pub const QUEUE_WAITING: &str = "swarmq_queue_waiting";
/// Tasks waiting for their countdown, ETA or retry backoff, per queue.
pub const QUEUE_SCHEDULED: &str = "swarmq_queue_scheduled";
/// Tasks delivered and not yet answered, per queue.
pub const QUEUE_IN_FLIGHT: &str = "swarmq_queue_in_flight";
/// Workers consuming each queue.
pub const QUEUE_CONSUMERS: &str = "swarmq_queue_consumers";
/// Workers online (clients with at least one task subscription).
pub const WORKERS_ONLINE: &str = "swarmq_workers_online";
/// MQTT connections open.
pub const CONNECTIONS: &str = "swarmq_broker_connections";
/// Time from submission to result, in seconds.
pub const TASK_LATENCY: &str = "swarmq_task_latency_seconds";
/// Tasks per queue since start, by event (submitted, completed, failed).
pub const QUEUE_TASKS: &str = "swarmq_queue_tasks_total";
/// Tasks per worker since start, by status (success, failure).
pub const WORKER_TASKS: &str = "swarmq_worker_tasks_total";
/// Workers known to the dashboard, by state (online, offline).
pub const WORKERS_KNOWN: &str = "swarmq_workers_known";
/// Tasks retained in the history store.
pub const HISTORY_TASKS: &str = "swarmq_history_tasks";
/// Task events sent to the history recorder and not yet written.
pub const HISTORY_BACKLOG: &str = "swarmq_history_backlog";
/// Task events dropped because the history fell too far behind.
pub const HISTORY_DROPPED: &str = "swarmq_history_events_dropped_total";

/// Publishes, subscriptions and other requests refused by the access layer, by action.
pub const ACL_DENIED: &str = "swarmq_acl_denied_total";
/// HTTP connections closed on arrival because `http.max_connections` were open.
pub const HTTP_REFUSED: &str = "swarmq_http_connections_refused_total";
/// Connections refused for their credentials or client id.
pub const AUTH_FAILURES: &str = "swarmq_auth_failures_total";

/// What the access layer refused, for rendering.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenialCounts {
    /// Publishes refused.
    pub publish: u64,
    /// Subscriptions refused.
    pub subscribe: u64,
    /// Answers, reply topics, fetches, revokes and rate limits refused.
    pub other: u64,
    /// Connections refused.
    pub auth_failures: u64,
}

/// Per-queue and per-worker figures kept by the history recorder, for rendering.
#[derive(Debug, Clone, Default)]
pub struct ActivityView {
    /// Queue name, tasks submitted, completed, failed.
    pub queues: Vec<(String, u64, u64, u64)>,
    /// Worker id, online, tasks succeeded, tasks failed.
    pub workers: Vec<(String, bool, u64, u64)>,
    /// Tasks in the history store, when it is enabled.
    pub history_tasks: Option<u64>,
    /// Events not yet recorded.
    pub history_backlog: u64,
    /// Events dropped because the backlog was full.
    pub history_dropped: u64,
}

/// Why a submission was refused; the label of [`TASKS_REJECTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not a JSON object, or a field of the wrong type.
    InvalidPayload,
    /// Payload larger than `tasks.max_payload_bytes`.
    PayloadTooLarge,
    /// The topic level after `tasks/` is not a valid queue name.
    InvalidQueue,
    /// The queue is not declared and `tasks.auto_create_queues` is off.
    UnknownQueue,
    /// The queue holds `max_length` tasks.
    QueueFull,
    /// The broker is shutting down.
    ShuttingDown,
    /// The reply topic is one the requester may not publish to.
    ReplyTopicDenied,
    /// The requester's identity is over its `publish_rate`.
    RateLimited,
    /// The queue store cannot write (a full disk).
    StoreFailed,
}

impl RejectReason {
    const ALL: [RejectReason; 9] = [
        RejectReason::InvalidPayload,
        RejectReason::PayloadTooLarge,
        RejectReason::InvalidQueue,
        RejectReason::UnknownQueue,
        RejectReason::QueueFull,
        RejectReason::ShuttingDown,
        RejectReason::ReplyTopicDenied,
        RejectReason::RateLimited,
        RejectReason::StoreFailed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidPayload => "invalid_payload",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::InvalidQueue => "invalid_queue",
            RejectReason::UnknownQueue => "unknown_queue",
            RejectReason::QueueFull => "queue_full",
            RejectReason::ShuttingDown => "shutting_down",
            RejectReason::ReplyTopicDenied => "reply_topic_denied",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::StoreFailed => "store_failed",
        }
    }
}

const STATUSES: [Status; 5] = [
    Status::Success,
    Status::Failure,
    Status::Rejected,
    Status::Expired,
    Status::Revoked,
];

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
];

/// The process-wide counters. One instance per broker, shared by `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    submitted: AtomicU64,
    finished: [AtomicU64; 5],
    workflows_submitted: AtomicU64,
    workers_quarantined: AtomicU64,
    clients_overflowed: AtomicU64,
    tasks_lost: AtomicU64,
    workflows_finished: [AtomicU64; 5],
    rejected: [AtomicU64; 9],
    redelivered: AtomicU64,
    retried: AtomicU64,
    duplicate: AtomicU64,
    replies_ignored: AtomicU64,
    connections: AtomicI64,
    latency_buckets: [AtomicU64; 14],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

/// A point-in-time view of one queue, for rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSnapshot {
    /// Queue name.
    pub name: String,
    /// Tasks deliverable now, waiting for a worker.
    pub waiting: usize,
    /// Tasks waiting for their countdown, ETA or retry backoff.
    pub scheduled: usize,
    /// Tasks delivered and not yet answered.
    pub in_flight: usize,
    /// Workers consuming the queue.
    pub consumers: usize,
}

impl Metrics {
    /// Counts an accepted task.
    pub fn task_submitted(&self) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a worker put in quarantine.
    pub fn worker_quarantined(&self) {
        self.workers_quarantined.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a client disconnected for passing its waiting-bytes bound.
    pub fn client_overflowed(&self) {
        self.clients_overflowed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a delivery lost to a flapping worker.
    pub fn task_lost(&self) {
        self.tasks_lost.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an accepted workflow.
    pub fn workflow_submitted(&self) {
        self.workflows_submitted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finished workflow.
    pub fn workflow_finished(&self, status: Status) {
        let idx = STATUSES.iter().position(|s| *s == status).unwrap_or(0);
        self.workflows_finished[idx].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finished task and, when known, its submission-to-result latency.
    pub fn task_finished(&self, status: Status, latency_us: Option<u64>) {
        let idx = STATUSES.iter().position(|s| *s == status).unwrap_or(0);
        self.finished[idx].fetch_add(1, Ordering::Relaxed);
        if let Some(us) = latency_us {
            let secs = us as f64 / 1e6;
            if let Some(b) = LATENCY_BUCKETS_S.iter().position(|le| secs <= *le) {
                self.latency_buckets[b].fetch_add(1, Ordering::Relaxed);
            }
            self.latency_count.fetch_add(1, Ordering::Relaxed);
            self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        }
    }

    /// Counts a refused submission.
    pub fn task_rejected(&self, reason: RejectReason) {
        let idx = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.rejected[idx].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a task given to a worker again.
    pub fn task_redelivered(&self) {
        self.redelivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a retry a worker asked for.
    pub fn task_retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a submission with an id already known.
    pub fn task_duplicate(&self) {
        self.duplicate.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a worker reply that matched no unfinished task.
    pub fn reply_ignored(&self) {
        self.replies_ignored.fetch_add(1, Ordering::Relaxed);
    }

    /// Tracks MQTT connections opening (`+1`) and closing (`-1`).
    pub fn connections_add(&self, delta: i64) {
        self.connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// Tasks accepted so far.
    pub fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }

    /// Tasks finished with `status` so far.
    pub fn finished(&self, status: Status) -> u64 {
        let idx = STATUSES.iter().position(|s| *s == status).unwrap_or(0);
        self.finished[idx].load(Ordering::Relaxed)
    }

    /// Submissions refused for `reason` so far.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        let idx = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.rejected[idx].load(Ordering::Relaxed)
    }

    /// Tasks redelivered so far.
    pub fn redelivered(&self) -> u64 {
        self.redelivered.load(Ordering::Relaxed)
    }

    /// MQTT connections open.
    pub fn connections(&self) -> i64 {
        self.connections.load(Ordering::Relaxed).max(0)
    }

    /// Submissions refused so far, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    /// Renders the access layer's refusals.
    pub fn render_denials(out: &mut String, d: DenialCounts) {
        counter(
            out,
            ACL_DENIED,
            "Requests refused by the access rules, by action.",
        );
        for (action, n) in [
            ("publish", d.publish),
            ("subscribe", d.subscribe),
            ("other", d.other),
        ] {
            let _ = writeln!(out, "{ACL_DENIED}{{action=\"{action}\"}} {n}");
        }
        counter(
            out,
            AUTH_FAILURES,
            "Connections refused for their credentials or client id.",
        );
        let _ = writeln!(out, "{AUTH_FAILURES} {}", d.auth_failures);
    }

    /// Renders the recorder's per-queue and per-worker figures, after [`Metrics::render`].
    pub fn render_activity(out: &mut String, view: &ActivityView) {
        counter(out, QUEUE_TASKS, "Tasks per queue since start, by event.");
        for (q, submitted, completed, failed) in &view.queues {
            for (event, n) in [
                ("submitted", submitted),
                ("completed", completed),
                ("failed", failed),
            ] {
                let _ = writeln!(out, "{QUEUE_TASKS}{{queue=\"{q}\",event=\"{event}\"}} {n}");
            }
        }
        counter(
            out,
            WORKER_TASKS,
            "Tasks per worker since start, by status.",
        );
        for (w, _, ok, failed) in &view.workers {
            let w = escape_label(w);
            let _ = writeln!(
                out,
                "{WORKER_TASKS}{{worker=\"{w}\",status=\"success\"}} {ok}"
            );
            let _ = writeln!(
                out,
                "{WORKER_TASKS}{{worker=\"{w}\",status=\"failure\"}} {failed}"
            );
        }
        gauge(
            out,
            WORKERS_KNOWN,
            "Workers known to the dashboard, by state.",
        );
        let online = view.workers.iter().filter(|w| w.1).count();
        let _ = writeln!(out, "{WORKERS_KNOWN}{{state=\"online\"}} {online}");
        let _ = writeln!(
            out,
            "{WORKERS_KNOWN}{{state=\"offline\"}} {}",
            view.workers.len() - online
        );
        if let Some(n) = view.history_tasks {
            gauge(out, HISTORY_TASKS, "Tasks retained in the history store.");
            let _ = writeln!(out, "{HISTORY_TASKS} {n}");
        }
        gauge(
            out,
            HISTORY_BACKLOG,
            "Task events not yet written to the history.",
        );
        let _ = writeln!(out, "{HISTORY_BACKLOG} {}", view.history_backlog);
        counter(
            out,
            HISTORY_DROPPED,
            "Task events dropped because the history fell too far behind.",
        );
        let _ = writeln!(out, "{HISTORY_DROPPED} {}", view.history_dropped);
    }

    /// Renders everything in the Prometheus text exposition format.
    pub fn render(&self, queues: &[QueueSnapshot], workers_online: usize) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        counter(&mut out, TASKS_SUBMITTED, "Tasks accepted into a queue.");
        let _ = writeln!(out, "{TASKS_SUBMITTED} {}", load(&self.submitted));

        counter(&mut out, TASKS_FINISHED, "Tasks finished, by final status.");
        for (status, n) in STATUSES.iter().zip(&self.finished) {
            let _ = writeln!(
                out,
                "{TASKS_FINISHED}{{status=\"{}\"}} {}",
                status.as_str(),
                load(n)
            );
        }

        counter(
            &mut out,
            TASKS_LOST,
            "Deliveries lost to a flapping worker, not counted as attempts.",
        );
        let _ = writeln!(out, "{TASKS_LOST} {}", load(&self.tasks_lost));
        counter(
            &mut out,
            CLIENTS_OVERFLOWED,
            "Clients disconnected because their waiting messages passed mqtt.max_mqueue_bytes.",
        );
        let _ = writeln!(
            out,
            "{CLIENTS_OVERFLOWED} {}",
            load(&self.clients_overflowed)
        );
        counter(
            &mut out,
            WORKERS_QUARANTINED,
            "Workers quarantined for dropping their tasks again and again.",
        );
        let _ = writeln!(
            out,
            "{WORKERS_QUARANTINED} {}",
            load(&self.workers_quarantined)
        );
        counter(&mut out, WORKFLOWS_SUBMITTED, "Workflows accepted.");
        let _ = writeln!(
            out,
            "{WORKFLOWS_SUBMITTED} {}",
            load(&self.workflows_submitted)
        );
        counter(
            &mut out,
            WORKFLOWS_FINISHED,
            "Workflows finished, by final status.",
        );
        for (status, n) in STATUSES.iter().zip(&self.workflows_finished) {
            let _ = writeln!(
                out,
                "{WORKFLOWS_FINISHED}{{status=\"{}\"}} {}",
                status.as_str(),
                load(n)
            );
        }

        counter(&mut out, TASKS_REJECTED, "Submissions refused, by reason.");
        for (reason, n) in RejectReason::ALL.iter().zip(&self.rejected) {
            let _ = writeln!(
                out,
                "{TASKS_REJECTED}{{reason=\"{}\"}} {}",
                reason.as_str(),
                load(n)
            );
        }

        for (name, help, value) in [
            (
                TASKS_REDELIVERED,
                "Tasks handed to a worker again after a worker vanished or a lease expired.",
                &self.redelivered,
            ),
            (
                TASKS_RETRIED,
                "Tasks a worker asked to retry.",
                &self.retried,
            ),
            (
                TASKS_DUPLICATE,
                "Submissions whose id was already known.",
                &self.duplicate,
            ),
            (
                REPLIES_IGNORED,
                "Worker replies that matched no unfinished task.",
                &self.replies_ignored,
            ),
        ] {
            counter(&mut out, name, help);
            let _ = writeln!(out, "{name} {}", load(value));
        }

        for (name, help, pick) in [
            (
                QUEUE_WAITING,
                "Tasks waiting for a worker.",
                (|q: &QueueSnapshot| q.waiting) as fn(&QueueSnapshot) -> usize,
            ),
            (
                QUEUE_SCHEDULED,
                "Tasks waiting for their countdown, ETA or retry backoff.",
                |q| q.scheduled,
            ),
            (
                QUEUE_IN_FLIGHT,
                "Tasks delivered and not yet answered.",
                |q| q.in_flight,
            ),
            (QUEUE_CONSUMERS, "Workers consuming the queue.", |q| {
                q.consumers
            }),
        ] {
            gauge(&mut out, name, help);
            for q in queues {
                let _ = writeln!(out, "{name}{{queue=\"{}\"}} {}", q.name, pick(q));
            }
        }

        gauge(&mut out, WORKERS_ONLINE, "Workers online.");
        let _ = writeln!(out, "{WORKERS_ONLINE} {workers_online}");
        gauge(&mut out, CONNECTIONS, "MQTT connections open.");
        let _ = writeln!(
            out,
            "{CONNECTIONS} {}",
            self.connections.load(Ordering::Relaxed).max(0)
        );

        let _ = writeln!(
            out,
            "# HELP {TASK_LATENCY} Time from submission to result.\n# TYPE {TASK_LATENCY} histogram"
        );
        let mut cumulative = 0;
        for (le, n) in LATENCY_BUCKETS_S.iter().zip(&self.latency_buckets) {
            cumulative += load(n);
            let _ = writeln!(out, "{TASK_LATENCY}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = load(&self.latency_count);
        let _ = writeln!(out, "{TASK_LATENCY}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{TASK_LATENCY}_sum {}",
            load(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "{TASK_LATENCY}_count {count}");
        out
    }
}

/// Escapes a label value: client ids are chosen by clients and may hold
/// quotes, backslashes or newlines.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn counter(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
}

fn gauge(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.task_submitted();
        m.task_finished(Status::Success, Some(700));
        m.task_finished(Status::Failure, None);
        m.task_rejected(RejectReason::QueueFull);
        let text = m.render(
            &[QueueSnapshot {
                name: "q".into(),
                waiting: 3,
                scheduled: 4,
                in_flight: 1,
                consumers: 2,
            }],
            2,
        );
        assert!(text.contains("swarmq_tasks_submitted_total 1\n"));
        assert!(text.contains("swarmq_tasks_finished_total{status=\"success\"} 1\n"));
        assert!(text.contains("swarmq_tasks_finished_total{status=\"failure\"} 1\n"));
        assert!(text.contains("swarmq_tasks_rejected_total{reason=\"queue_full\"} 1\n"));
        assert!(text.contains("swarmq_queue_waiting{queue=\"q\"} 3\n"));
        assert!(text.contains("swarmq_queue_scheduled{queue=\"q\"} 4\n"));
        assert!(text.contains("swarmq_task_latency_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(text.contains("swarmq_task_latency_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("swarmq_task_latency_seconds_count 1\n"));
    }
}
