//! [`Recorder`]: the thread that turns engine events into history writes
//! and live figures.
//!
//! The engine sends on an unbounded channel and never blocks or wakes
//! anyone: the recorder is not parked on the channel but polls it every
//! [`RECORD_INTERVAL`], so a send is a plain queue push, with no futex wake-up
//! per task on the publish path. Each poll takes everything queued as one
//! batch: one fjall write batch, one journal write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Activity, HistoryStore, Tail, TaskEvent};
use crate::engine::{EventObserver, now_us};
use crate::metrics::{Metrics, QueueSnapshot};
use crate::settings::HistorySettings;

/// How often the recorder drains the event channel.
pub const RECORD_INTERVAL: Duration = Duration::from_millis(50);

/// How often a point of the metric series is taken.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// How often the age-based retention runs (count-based runs after each batch).
const RETENTION_INTERVAL: Duration = Duration::from_secs(10);

/// Most events folded into one write batch.
const MAX_BATCH: usize = 50_000;

/// Most events waiting for the recorder (~100 bytes each). Beyond it, when
/// the disk cannot keep up, events are dropped and counted rather than
/// letting the broker's memory grow or slowing the publish path: the history
/// is an observation, tasks never depend on it.
pub const MAX_BACKLOG: u64 = 500_000;

/// Events waiting for the recorder, and events dropped because too many were.
#[derive(Debug)]
pub struct Backlog {
    pending: AtomicU64,
    dropped: AtomicU64,
    /// Events queued since start, and events recorded: a reader that saw a
    /// result waits until `recorded` reaches what was `sent` when it asked.
    sent: AtomicU64,
    recorded: AtomicU64,
    /// Set by a reader that wants the recorder to run now rather than at
    /// the end of its interval.
    wake: (Mutex<bool>, Condvar),
    limit: u64,
}

/// Longest a read of the history waits for the recorder to catch up.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(1);

impl Backlog {
    /// Events sent and not yet recorded.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Waits until every event sent before this call is recorded (or
    /// [`READ_YOUR_WRITES_WAIT`] passed), waking the recorder to do it now.
    /// Returns at once when nothing is waiting. This is what makes a read
    /// see every step the engine has told anyone of: the engine sends an
    /// event before the result or acknowledgement it belongs to leaves.
    pub async fn caught_up(&self) {
        let target = self.sent.load(Ordering::Acquire);
        if self.recorded.load(Ordering::Acquire) >= target {
            return;
        }
        {
            let (flag, cv) = &self.wake;
            *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_one();
        }
        let deadline = tokio::time::Instant::now() + READ_YOUR_WRITES_WAIT;
        while self.recorded.load(Ordering::Acquire) < target {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("task history lags; answering from what it holds");
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Sleeps up to `interval` unless a reader asks for a run first.
    fn nap(&self, interval: Duration) {
        let (flag, cv) = &self.wake;
        let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
        let mut guard = cv
            .wait_timeout_while(guard, interval, |woken| !*woken)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        *guard = false;
    }

    /// Events dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The engine's end of the event channel. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: Sender<TaskEvent>,
    backlog: Arc<Backlog>,
}

impl EventSink {
    /// Queues an event for the recorder. Never blocks; drops the event when
    /// the backlog is full.
    pub fn send(&self, event: TaskEvent) {
        let b = &self.backlog;
        if b.pending.load(Ordering::Relaxed) >= b.limit {
            let n = b.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() || n == 0 {
                tracing::warn!(
                    dropped = n + 1,
                    backlog = b.limit,
                    "task history falls behind; dropping history events (tasks are unaffected)"
                );
            }
            return;
        }
        if self.tx.send(event).is_ok() {
            b.pending.fetch_add(1, Ordering::Relaxed);
            b.sent.fetch_add(1, Ordering::Release);
        }
    }
}

impl EventObserver for EventSink {
    fn observe(&self, event: TaskEvent) {
        self.send(event);
    }
}

/// The live figures each sample of the series takes, handed in by whoever
/// wires the recorder (the history reads nothing of the engine itself).
#[derive(Debug, Clone, Default)]
pub struct LiveFigures {
    /// Every queue's depth.
    pub queues: Vec<QueueSnapshot>,
    /// Workers online.
    pub workers_online: usize,
}

/// Reads the live figures, once a second.
pub type LiveSource = Box<dyn Fn() -> LiveFigures + Send>;

/// The recorder thread. Stop it with [`Recorder::stop`], which writes what
/// is still queued.
#[derive(Debug)]
pub struct Recorder {
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// What the recorder thread owns.
struct Worker {
    rx: Receiver<TaskEvent>,
    store: Option<HistoryStore>,
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
    live: LiveSource,
    settings: HistorySettings,
    stop: Arc<AtomicBool>,
    backlog: Arc<Backlog>,
    tail: Tail,
}

impl Recorder {
    /// A new event channel holding at most `limit` events: the sink goes to
    /// the engine, the receiver to [`Recorder::spawn`].
    pub fn channel(limit: u64) -> (EventSink, Receiver<TaskEvent>, Arc<Backlog>) {
        let (tx, rx) = channel();
        let backlog = Arc::new(Backlog {
            pending: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            wake: (Mutex::new(false), Condvar::new()),
            limit,
        });
        (
            EventSink {
                tx,
                backlog: backlog.clone(),
            },
            rx,
            backlog,
        )
    }

    /// Starts the thread. Without a store (history disabled) it still keeps
    /// the live figures; `live` is read once a second for the series.
    ///
    /// # Errors
    ///
    /// Fails when the OS refuses a thread.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        rx: Receiver<TaskEvent>,
        backlog: Arc<Backlog>,
        store: Option<HistoryStore>,
        activity: Arc<Activity>,
        metrics: Arc<Metrics>,
        live: LiveSource,
        settings: HistorySettings,
        tail: Tail,
    ) -> std::io::Result<Recorder> {
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            rx,
            store,
            activity,
            metrics,
            live,
            settings,
            stop: stop.clone(),
            backlog,
            tail,
        };
        let handle = std::thread::Builder::new()
            .name("swarmq-history".into())
            .spawn(move || worker.run())?;
        Ok(Recorder {
            handle: Some(handle),
            stop,
        })
    }

    /// Records what is queued, flushes, and ends the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            tracing::error!("history recorder thread panicked");
        }
    }
}

impl Drop for Recorder {
    /// A recorder dropped without [`Recorder::stop`] (an app built and never
    /// run) still ends its thread, after writing what is queued.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Worker {
    fn run(self) {
        let mut next_sample = Instant::now() + SAMPLE_INTERVAL;
        let mut next_retention = Instant::now();
        let mut batch = Vec::new();
        loop {
            // Read the flag first: everything sent before it was set is then
            // drained below.
            let stopping = self.stop.load(Ordering::Relaxed);
            loop {
                let disconnected = loop {
                    match self.rx.try_recv() {
                        Ok(e) => {
                            batch.push(e);
                            if batch.len() >= MAX_BATCH {
                                break false;
                            }
                        }
                        Err(TryRecvError::Empty) => break false,
                        Err(TryRecvError::Disconnected) => break true,
                    }
                };
                if batch.is_empty() {
                    if disconnected {
                        return self.finish();
                    }
                    break;
                }
                let events = batch.len() as u64;
                self.record(&mut batch);
                self.backlog.pending.fetch_sub(events, Ordering::Relaxed);
                self.backlog.recorded.fetch_add(events, Ordering::Release);
            }
            let now = Instant::now();
            if now >= next_sample {
                self.sample();
                next_sample = now + SAMPLE_INTERVAL;
            }
            if now >= next_retention {
                self.retain(true);
                next_retention = now + RETENTION_INTERVAL;
            }
            if stopping {
                return self.finish();
            }
            self.backlog.nap(RECORD_INTERVAL);
        }
    }

    /// Applies and empties `batch` (keeping its allocation for the next).
    fn record(&self, batch: &mut Vec<TaskEvent>) {
        let changed = self.activity.apply(batch);
        self.tail.send(batch, self.store.as_ref());
        let Some(store) = &self.store else {
            batch.clear();
            return;
        };
        let events = batch.len();
        if let Err(e) = store.apply(batch.drain(..)) {
            tracing::error!(error = %e, events, "cannot write task history");
        }
        if !changed.is_empty()
            && let Err(e) = store.save_workers(&changed)
        {
            tracing::error!(error = %e, "cannot save workers");
        }
        if store.retained() > self.settings.max_tasks {
            self.retain(false);
        }
    }

    fn sample(&self) {
        let live = (self.live)();
        let now_ms = now_us() / 1000;
        let point = self
            .activity
            .sample(&self.metrics, &live.queues, live.workers_online, now_ms);
        if let Some(store) = &self.store {
            let cutoff = now_ms.saturating_sub(self.settings.series_retention_secs * 1000);
            if let Err(e) = store.save_point(&point, cutoff) {
                tracing::error!(error = %e, "cannot save the metric series");
            }
        }
    }

    /// Applies retention; `with_age` also drops old tasks and offline workers.
    fn retain(&self, with_age: bool) {
        let now = now_us();
        let age_cutoff = now.saturating_sub(self.settings.max_age_secs.saturating_mul(1_000_000));
        let gone = if with_age {
            self.activity.prune_workers(age_cutoff)
        } else {
            Vec::new()
        };
        let Some(store) = &self.store else {
            return;
        };
        if !gone.is_empty()
            && let Err(e) = store.remove_workers(&gone)
        {
            tracing::error!(error = %e, "cannot forget old workers");
        }
        let cutoff = if with_age { age_cutoff } else { 0 };
        match store.enforce_retention(self.settings.max_tasks, cutoff) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "history retention"),
            Err(e) => tracing::error!(error = %e, "history retention failed"),
        }
    }

    fn finish(self) {
        if let Some(store) = &self.store
            && let Err(e) = store.flush()
        {
            tracing::error!(error = %e, "cannot flush the task history");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(id: &str) -> TaskEvent {
        TaskEvent::WorkerLeft {
            id: id.into(),
            at_us: 1,
        }
    }

    #[test]
    fn a_full_backlog_drops_and_counts_instead_of_growing() {
        let (sink, rx, backlog) = Recorder::channel(2);
        for i in 0..5 {
            sink.send(left(&i.to_string()));
        }
        assert_eq!((backlog.pending(), backlog.dropped()), (2, 3));
        let kept: Vec<TaskEvent> = rx.try_iter().collect();
        assert_eq!(kept.len(), 2);
    }
}
