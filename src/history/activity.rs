//! [`Activity`]: the live figures the dashboard shows beside the history:
//! workers (also offline ones), per-queue rates, and a time series of
//! throughput and latency sampled every second.
//!
//! Only the [`Recorder`](super::Recorder) thread writes here; HTTP handlers
//! read. Each lock is taken once per batch or per request, never per task.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use swarmq_worker::wire::Status;

use super::TaskEvent;
use crate::metrics::{Metrics, QueueSnapshot};

/// Points kept in memory: one hour at one per second. Older ones stay on
/// disk until the series retention drops them.
pub(crate) const SERIES_IN_MEMORY: usize = 3600;

/// Latencies kept per sampling interval for the percentiles; beyond this the
/// interval's percentiles come from its first this-many results.
const LATENCY_SAMPLES: usize = 200_000;

/// Most workers remembered (online and offline).
const MAX_WORKERS: usize = 10_000;

/// A worker as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Client id.
    pub id: String,
    /// Queues it consumes (or consumed, when offline).
    pub queues: Vec<String>,
    /// Tasks it may hold at once.
    pub capacity: u32,
    /// Connected with a task subscription now.
    pub online: bool,
    /// Start of its current (or last) connection, microseconds since the epoch.
    pub connected_since_us: u64,
    /// Last delivery, result, subscription or disconnect.
    pub last_seen_us: u64,
    /// Tasks it finished with `success`.
    pub completed: u64,
    /// Tasks it finished with `failure`.
    pub failed: u64,
}

/// One sample of the whole broker, per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Sample time, milliseconds since the epoch.
    pub t_ms: u64,
    /// Tasks accepted per second.
    pub submitted_per_s: f64,
    /// Tasks finished with `success` per second.
    pub completed_per_s: f64,
    /// Tasks finished with `failure` per second.
    pub failed_per_s: f64,
    /// Redeliveries per second.
    pub redelivered_per_s: f64,
    /// Median submission-to-result latency of the tasks finished in the interval.
    pub p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub p99_ms: Option<f64>,
    /// MQTT connections open.
    pub connections: i64,
    /// Workers online.
    pub workers_online: usize,
    /// Tasks waiting, all queues.
    pub waiting: usize,
    /// Tasks in flight, all queues.
    pub in_flight: usize,
}

/// Current rates of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct QueueRates {
    /// Tasks accepted per second.
    pub submitted_per_s: f64,
    /// Tasks finished with `success` per second.
    pub completed_per_s: f64,
    /// Tasks finished with `failure` per second.
    pub failed_per_s: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct QueueCounts {
    submitted: u64,
    completed: u64,
    failed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Totals {
    at_ms: u64,
    submitted: u64,
    completed: u64,
    failed: u64,
    redelivered: u64,
}

/// The live figures. One per broker, shared by `Arc`.
#[derive(Debug, Default)]
pub struct Activity {
    workers: Mutex<BTreeMap<String, WorkerInfo>>,
    queue_counts: Mutex<HashMap<String, QueueCounts>>,
    latencies_us: Mutex<Vec<u64>>,
    series: Mutex<VecDeque<SeriesPoint>>,
    rates: Mutex<HashMap<String, QueueRates>>,
    previous: Mutex<Option<(Totals, HashMap<String, QueueCounts>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few plain collection operations; a
    // panic inside one leaves valid data, so keep going rather than poison.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Activity {
    /// Starts from what an earlier run saved: workers (all offline until
    /// they reconnect) and the recent series.
    pub fn restore(&self, workers: Vec<WorkerInfo>, points: Vec<SeriesPoint>) {
        let mut w = lock(&self.workers);
        for mut info in workers {
            info.online = false;
            w.insert(info.id.clone(), info);
        }
        let mut s = lock(&self.series);
        for p in points {
            s.push_back(p);
        }
        while s.len() > SERIES_IN_MEMORY {
            s.pop_front();
        }
    }

    /// Folds a batch of events in. Returns the workers that changed, to save.
    pub fn apply(&self, events: &[TaskEvent]) -> Vec<WorkerInfo> {
        let mut workers = lock(&self.workers);
        let mut counts = lock(&self.queue_counts);
        let mut latencies = lock(&self.latencies_us);
        let mut touched: Vec<String> = Vec::new();
        let touch = |id: &str, touched: &mut Vec<String>| {
            if !touched.iter().any(|t| t == id) {
                touched.push(id.to_string());
            }
        };
        for event in events {
            match event {
                TaskEvent::Submitted(task) => {
                    counts.entry(task.queue.clone()).or_default().submitted += 1;
                }
                TaskEvent::Started { worker, at_us, .. } => {
                    if let Some(w) = workers.get_mut(worker) {
                        w.last_seen_us = *at_us;
                    }
                }
                TaskEvent::Requeued { .. }
                | TaskEvent::Rejected { .. }
                | TaskEvent::Ready { .. }
                | TaskEvent::Progress { .. }
                | TaskEvent::WorkflowFinished(_) => {}
                TaskEvent::Finished {
                    queue,
                    status,
                    worker,
                    at_us,
                    latency_us,
                    ..
                } => {
                    let c = counts.entry(queue.clone()).or_default();
                    match status {
                        Status::Success => c.completed += 1,
                        Status::Failure => c.failed += 1,
                        _ => {}
                    }
                    if latencies.len() < LATENCY_SAMPLES {
                        latencies.push(*latency_us);
                    }
                    if let Some(id) = worker
                        && let Some(w) = workers.get_mut(id)
                    {
                        match status {
                            Status::Success => w.completed += 1,
                            Status::Failure => w.failed += 1,
                            _ => {}
                        }
                        w.last_seen_us = *at_us;
                        touch(id, &mut touched);
                    }
                }
                TaskEvent::WorkerSeen {
                    id,
                    capacity,
                    queues,
                    at_us,
                } => {
                    let w = workers.entry(id.clone()).or_insert_with(|| WorkerInfo {
                        id: id.clone(),
                        queues: Vec::new(),
                        capacity: *capacity,
                        online: false,
                        connected_since_us: *at_us,
                        last_seen_us: *at_us,
                        completed: 0,
                        failed: 0,
                    });
                    if !w.online {
                        w.connected_since_us = *at_us;
                    }
                    w.online = true;
                    w.capacity = *capacity;
                    w.queues.clone_from(queues);
                    w.last_seen_us = *at_us;
                    touch(id, &mut touched);
                }
                TaskEvent::WorkerLeft { id, at_us } => {
                    if let Some(w) = workers.get_mut(id) {
                        w.online = false;
                        w.last_seen_us = *at_us;
                        touch(id, &mut touched);
                    }
                }
            }
        }
        touched
            .iter()
            .filter_map(|id| workers.get(id).cloned())
            .collect()
    }

    /// Forgets offline workers last seen before `cutoff_us`, and the oldest
    /// offline ones beyond the cap. Returns their ids.
    pub fn prune_workers(&self, cutoff_us: u64) -> Vec<String> {
        let mut workers = lock(&self.workers);
        let mut gone: Vec<String> = workers
            .values()
            .filter(|w| !w.online && w.last_seen_us < cutoff_us)
            .map(|w| w.id.clone())
            .collect();
        let over = workers.len().saturating_sub(gone.len() + MAX_WORKERS);
        if over > 0 {
            let mut offline: Vec<&WorkerInfo> = workers
                .values()
                .filter(|w| !w.online && w.last_seen_us >= cutoff_us)
                .collect();
            offline.sort_by_key(|w| w.last_seen_us);
            gone.extend(offline.iter().take(over).map(|w| w.id.clone()));
        }
        for id in &gone {
            workers.remove(id);
        }
        gone
    }

    /// Takes a sample: rates since the previous one, this interval's latency
    /// percentiles, and the gauges. Appends it to the series and returns it.
    pub fn sample(
        &self,
        metrics: &Metrics,
        queues: &[QueueSnapshot],
        workers_online: usize,
        now_ms: u64,
    ) -> SeriesPoint {
        let totals = Totals {
            at_ms: now_ms,
            submitted: metrics.submitted(),
            completed: metrics.finished(Status::Success),
            failed: metrics.finished(Status::Failure),
            redelivered: metrics.redelivered(),
        };
        let counts = lock(&self.queue_counts).clone();
        let mut latencies = std::mem::take(&mut *lock(&self.latencies_us));
        let mut previous = lock(&self.previous);
        let (p50_ms, p99_ms) = percentiles(&mut latencies);
        let mut point = SeriesPoint {
            t_ms: now_ms,
            submitted_per_s: 0.0,
            completed_per_s: 0.0,
            failed_per_s: 0.0,
            redelivered_per_s: 0.0,
            p50_ms,
            p99_ms,
            connections: metrics.connections(),
            workers_online,
            waiting: queues.iter().map(|q| q.waiting).sum(),
            in_flight: queues.iter().map(|q| q.in_flight).sum(),
        };
        // The first sample counts from zero over one interval, so tasks done
        // before it are not lost from the series.
        let start = (
            Totals {
                at_ms: now_ms.saturating_sub(1000),
                submitted: 0,
                completed: 0,
                failed: 0,
                redelivered: 0,
            },
            HashMap::new(),
        );
        let (prev, prev_counts) = previous.as_ref().unwrap_or(&start);
        let secs = (now_ms.saturating_sub(prev.at_ms) as f64 / 1000.0).max(0.001);
        let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
        point.submitted_per_s = rate(totals.submitted, prev.submitted);
        point.completed_per_s = rate(totals.completed, prev.completed);
        point.failed_per_s = rate(totals.failed, prev.failed);
        point.redelivered_per_s = rate(totals.redelivered, prev.redelivered);
        let mut rates = lock(&self.rates);
        rates.clear();
        for (name, c) in &counts {
            let p = prev_counts.get(name).copied().unwrap_or_default();
            rates.insert(
                name.clone(),
                QueueRates {
                    submitted_per_s: rate(c.submitted, p.submitted),
                    completed_per_s: rate(c.completed, p.completed),
                    failed_per_s: rate(c.failed, p.failed),
                },
            );
        }
        *previous = Some((totals, counts));
        let mut series = lock(&self.series);
        series.push_back(point.clone());
        while series.len() > SERIES_IN_MEMORY {
            series.pop_front();
        }
        point
    }

    /// Points from `since_ms` on, oldest first.
    pub fn series(&self, since_ms: u64) -> Vec<SeriesPoint> {
        lock(&self.series)
            .iter()
            .filter(|p| p.t_ms >= since_ms)
            .cloned()
            .collect()
    }

    /// The latest point, if one was taken.
    pub fn latest(&self) -> Option<SeriesPoint> {
        lock(&self.series).back().cloned()
    }

    /// Every known worker, sorted by id.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        lock(&self.workers).values().cloned().collect()
    }

    /// Queue name, tasks submitted, completed and failed since start, by name.
    pub fn queue_counts(&self) -> Vec<(String, u64, u64, u64)> {
        let mut v: Vec<_> = lock(&self.queue_counts)
            .iter()
            .map(|(n, c)| (n.clone(), c.submitted, c.completed, c.failed))
            .collect();
        v.sort();
        v
    }

    /// Current rates of `queue`.
    pub fn queue_rates(&self, queue: &str) -> QueueRates {
        lock(&self.rates).get(queue).copied().unwrap_or_default()
    }
}

/// p50 and p99 of `us`, in milliseconds.
fn percentiles(us: &mut [u64]) -> (Option<f64>, Option<f64>) {
    if us.is_empty() {
        return (None, None);
    }
    us.sort_unstable();
    let at = |q: f64| {
        let idx = ((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1;
        (us[idx] as f64 / 1000.0 * 1000.0).round() / 1000.0
    };
    (Some(at(0.50)), Some(at(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_set() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentiles(&mut v), (Some(50.0), Some(99.0)));
        assert_eq!(percentiles(&mut []), (None, None));
        assert_eq!(percentiles(&mut [2500]), (Some(2.5), Some(2.5)));
    }

    #[test]
    fn workers_count_results_and_go_offline() {
        let a = Activity::default();
        let seen = TaskEvent::WorkerSeen {
            id: "w".into(),
            capacity: 4,
            queues: vec!["q".into()],
            at_us: 5,
        };
        let done = |status| TaskEvent::Finished {
            id: "t".into(),
            queue: "q".into(),
            status,
            result: None,
            error: None,
            worker: Some("w".into()),
            attempts: 1,
            at_us: 9,
            latency_us: 4,
        };
        let changed = a.apply(&[seen, done(Status::Success), done(Status::Failure)]);
        assert_eq!(changed.len(), 1);
        assert_eq!((changed[0].completed, changed[0].failed), (1, 1));
        a.apply(&[TaskEvent::WorkerLeft {
            id: "w".into(),
            at_us: 20,
        }]);
        let w = &a.workers()[0];
        assert!(!w.online);
        assert_eq!(w.last_seen_us, 20);
        assert_eq!(a.prune_workers(10), Vec::<String>::new());
        assert_eq!(a.prune_workers(21), vec!["w".to_string()]);
        assert!(a.workers().is_empty());
    }
}
