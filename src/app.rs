//! [`App`]: builds every part from [`Settings`] and runs them until shutdown.
//!
//! Build binds everything first (so a test can read the real ports back before
//! any client connects), run serves until the token given to it is cancelled,
//! then drains: stop accepting tasks, wait for the tasks in flight up to the
//! grace period, stop the broker and the HTTP endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::engine::{
    Engine, EngineConfig, EngineError, EngineParts, QueueLimits, RetryPolicy, StoreError,
    SystemClock, now_us,
};
use crate::history::{
    Activity, HistoryError, HistoryStore, LiveFigures, MAX_BACKLOG, Recorder, SERIES_IN_MEMORY,
    Tail,
};
use crate::http::{Auth, AuthError, HttpContext, HttpServer};
use crate::metrics::Metrics;
use crate::mqtt::{self, BrokerError, EmbeddedBroker};
use crate::queue::FjallStore;
use crate::settings::{self, Settings};

/// Errors while building the app.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The queue store could not be opened.
    #[error("cannot open the queue store in `{dir}`")]
    Store {
        /// The data directory.
        dir: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Stored tasks could not be recovered.
    #[error(transparent)]
    Recover(#[from] EngineError),
    /// The identities or access rules are not valid.
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    /// The task history could not be opened.
    #[error("cannot open the task history in `{dir}`")]
    History {
        /// The data directory.
        dir: String,
        /// Why.
        #[source]
        source: HistoryError,
    },
    /// The schedules could not be started.
    #[error("cannot start the schedules: {0}")]
    Schedules(String),
    /// A configured user is unusable.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The history recorder thread could not start.
    #[error("cannot start the history recorder")]
    Recorder(#[source] std::io::Error),
    /// The MQTT broker could not start.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The HTTP listener could not bind.
    #[error("cannot listen for HTTP on {addr}")]
    Http {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A built, bound swarmq instance.
#[derive(Debug)]
pub struct App {
    settings: Settings,
    engine: Engine,
    broker: EmbeddedBroker,
    http: HttpServer,
    http_context: HttpContext,
    recorder: Recorder,
    mqtt_addr: SocketAddr,
    http_addr: SocketAddr,
}

impl App {
    /// Opens the store, recovers its tasks, and binds the MQTT and HTTP listeners.
    ///
    /// # Errors
    ///
    /// Fails when the store cannot be opened or read, or a listener cannot bind.
    pub async fn build(settings: Settings) -> Result<App, AppError> {
        let store =
            FjallStore::open(settings.data_dir(), settings.store.sync).map_err(|source| {
                AppError::Store {
                    dir: settings.data_dir().display().to_string(),
                    source,
                }
            })?;
        let metrics = Arc::new(Metrics::default());
        let access = Access::new(&settings.auth, settings.data_dir())?;
        let auth = Arc::new(Auth::new(&settings.auth, access.clone())?);
        if access.is_open() {
            tracing::warn!(
                "development profile: no identity exists, so any MQTT client may connect and use every topic (`swarmq identity add` creates one)"
            );
        } else if access.anonymous_allowed() {
            tracing::warn!("auth.allow_anonymous = true: clients without a username may connect");
        }
        if auth.is_open() {
            tracing::warn!(
                "no [[auth.users]] configured: the dashboard and API are open to anyone who reaches the HTTP port"
            );
        }

        let history = if settings.history.enabled {
            Some(
                HistoryStore::open(settings.data_dir()).map_err(|source| AppError::History {
                    dir: settings.data_dir().display().to_string(),
                    source,
                })?,
            )
        } else {
            None
        };
        let activity = Arc::new(Activity::default());
        if let Some(h) = &history {
            let since_ms = (now_us() / 1000).saturating_sub(SERIES_IN_MEMORY as u64 * 1000);
            match (h.load_workers(), h.load_points(since_ms)) {
                (Ok(workers), Ok(points)) => activity.restore(workers, points),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot restore workers and series; starting empty");
                }
            }
        }
        let (sink, events, backlog) = Recorder::channel(MAX_BACKLOG);
        if let Some(h) = &history {
            h.attach_backlog(backlog.clone());
        }
        let (outbox, effects) = mqtt::outbox();
        let engine = Engine::recover(EngineParts {
            store: Box::new(store),
            config: engine_config(&settings),
            clock: Box::new(SystemClock),
            metrics: metrics.clone(),
            outbox: Box::new(outbox),
            events: Some(Box::new(sink)),
        })?;
        engine
            .start_schedules(
                settings
                    .schedule_specs()
                    .map_err(|e| AppError::Schedules(e.to_string()))?,
            )
            .map_err(|e| AppError::Schedules(e.to_string()))?;
        // The series samples live figures through a weak handle: the recorder
        // thread must not keep the engine (and its store) open.
        let weak = engine.downgrade();
        let live = Box::new(move || match weak.upgrade() {
            Some(e) => LiveFigures {
                queues: e.queues(),
                workers_online: e.workers().len(),
            },
            None => LiveFigures::default(),
        });
        let tail = Tail::default();
        let recorder = Recorder::spawn(
            events,
            backlog.clone(),
            history.clone(),
            activity.clone(),
            metrics,
            live,
            settings.history.clone(),
            tail.clone(),
        )
        .map_err(AppError::Recorder)?;

        let broker = EmbeddedBroker::bind(
            &settings.mqtt,
            &settings.tasks,
            engine.clone(),
            history.clone(),
            access.clone(),
            effects,
        )
        .await?;
        let http_context = HttpContext {
            access,
            engine: engine.clone(),
            history,
            activity,
            auth,
            history_backlog: backlog,
            tail,
            settings: settings.clone(),
            started: Instant::now(),
            shutdown: CancellationToken::new(),
        };
        let http = HttpServer::bind(settings.http.listen)
            .await
            .map_err(|source| AppError::Http {
                addr: settings.http.listen,
                source,
            })?;
        let mqtt_addr = broker.local_addr();
        let http_addr = http.local_addr().map_err(|source| AppError::Http {
            addr: settings.http.listen,
            source,
        })?;
        Ok(App {
            settings,
            engine,
            broker,
            http,
            http_context,
            recorder,
            mqtt_addr,
            http_addr,
        })
    }

    /// The bound MQTT address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The bound MQTT-over-TLS address, when a certificate is configured.
    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.broker.tls_addr()
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The task engine, for inspection.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Serves until `shutdown` is cancelled, then drains and stops.
    pub async fn run(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let broker_token = CancellationToken::new();
        let http_token = self.http_context.shutdown.clone();
        let serving = Arc::new(AtomicBool::new(true));
        tracing::info!(mqtt = %self.mqtt_addr, http = %self.http_addr, data_dir = %self.settings.data_dir().display(), "swarmq serving");

        tracker.spawn(self.broker.run(broker_token.clone()));
        tracker.spawn(self.engine.clone().run_timers(broker_token.clone()));
        tracker.spawn(
            self.http
                .run(self.http_context, serving.clone(), http_token.clone()),
        );
        tracker.close();

        shutdown.cancelled().await;
        serving.store(false, Ordering::Relaxed);
        self.engine.stop_accepting();
        let grace = Duration::from_millis(self.settings.shutdown.grace_period_ms);
        let deadline = Instant::now() + grace;
        while self.engine.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.engine.in_flight();
        if left > 0 {
            tracing::warn!(
                tasks = left,
                "grace period over; tasks in flight stay stored and run after restart"
            );
        }
        broker_token.cancel();
        http_token.cancel();
        self.engine.flush_store();
        let recorder = self.recorder;
        if tokio::task::spawn_blocking(move || recorder.stop())
            .await
            .is_err()
        {
            tracing::error!("history recorder did not stop cleanly");
        }
        if tokio::time::timeout(grace.max(Duration::from_secs(1)), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("subsystems did not stop in time");
        }
        tracing::info!("swarmq stopped");
    }
}

/// The engine's configuration, from the settings tree.
fn engine_config(settings: &Settings) -> EngineConfig {
    let limits = |l: settings::QueueLimits| QueueLimits {
        max_length: l.max_length,
        lease_timeout_ms: l.lease_timeout_ms,
        max_per_worker: l.max_per_worker,
        max_in_flight: l.max_in_flight,
        rate_limit: crate::engine::RateLimit::parse(&l.rate_limit),
        retry: RetryPolicy {
            max_attempts: l.max_attempts,
            backoff_ms: l.backoff_ms,
            backoff_max_ms: l.backoff_max_ms,
            jitter: l.jitter,
        },
    };
    EngineConfig {
        max_payload_bytes: settings.tasks.max_payload_bytes,
        auto_create_queues: settings.tasks.auto_create_queues,
        dedupe_window: settings.tasks.dedupe_window,
        max_dead_letters: settings.tasks.max_dead_letters,
        default_limits: limits(settings.default_queue_limits()),
        queues: settings
            .queues
            .keys()
            .map(|name| (name.clone(), limits(settings.queue_limits(name))))
            .collect(),
        flapping: crate::engine::FlapPolicy {
            threshold: settings.tasks.flap_threshold,
            window_ms: settings.tasks.flap_window_secs.saturating_mul(1000),
            quarantine_ms: settings.tasks.quarantine_secs.saturating_mul(1000),
            quarantine_max_ms: settings.tasks.quarantine_max_secs.saturating_mul(1000),
        },
        workflow_limits: crate::engine::WorkflowLimits {
            max_bytes: settings.workflows.max_bytes,
            max_members: settings.workflows.max_members,
            max_depth: settings.workflows.max_depth,
        },
    }
}
