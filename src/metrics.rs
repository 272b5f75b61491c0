//! Counters, gauges and the latency histogram served on `/metrics`.
//!
//! Every metric name lives here as a constant; nothing else spells one. The
//! counters are plain atomics bumped on the hot path; queue depths and worker
//! counts are read from the dispatcher when `/metrics` is rendered, so they
//! can never drift from the real state.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use swarmq_worker::wire::Status;

/// Tasks accepted into a queue.
pub const TASKS_SUBMITTED: &str = "swarmq_tasks_submitted_total";
/// Tasks finished, by final status.
pub const TASKS_FINISHED: &str = "swarmq_tasks_finished_total";
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
}

impl RejectReason {
    const ALL: [RejectReason; 6] = [
        RejectReason::InvalidPayload,
        RejectReason::PayloadTooLarge,
        RejectReason::InvalidQueue,
        RejectReason::UnknownQueue,
        RejectReason::QueueFull,
        RejectReason::ShuttingDown,
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
        }
    }
}

const STATUSES: [Status; 4] = [
    Status::Success,
    Status::Failure,
    Status::Rejected,
    Status::Expired,
];

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
];

/// The process-wide counters. One instance per broker, shared by `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    submitted: AtomicU64,
    finished: [AtomicU64; 4],
    rejected: [AtomicU64; 6],
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
    /// Tasks waiting for a worker.
    pub waiting: usize,
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
        assert!(text.contains("swarmq_task_latency_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(text.contains("swarmq_task_latency_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("swarmq_task_latency_seconds_count 1\n"));
    }
}
