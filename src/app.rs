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

use crate::dispatch::{DispatchError, Dispatcher};
use crate::http::HttpServer;
use crate::metrics::Metrics;
use crate::mqtt::{BrokerError, EmbeddedBroker};
use crate::queue::{QueueStore, StoreError};
use crate::settings::Settings;

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
    Recover(#[from] DispatchError),
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
    dispatcher: Dispatcher,
    broker: EmbeddedBroker,
    http: HttpServer,
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
            QueueStore::open(settings.data_dir(), settings.store.sync).map_err(|source| {
                AppError::Store {
                    dir: settings.data_dir().display().to_string(),
                    source,
                }
            })?;
        let metrics = Arc::new(Metrics::default());
        let dispatcher = Dispatcher::recover(store, settings.clone(), metrics)?;
        let broker =
            EmbeddedBroker::bind(&settings.mqtt, &settings.tasks, dispatcher.clone()).await?;
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
            dispatcher,
            broker,
            http,
            mqtt_addr,
            http_addr,
        })
    }

    /// The bound MQTT address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The dispatcher, for inspection.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Serves until `shutdown` is cancelled, then drains and stops.
    pub async fn run(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let broker_token = CancellationToken::new();
        let http_token = CancellationToken::new();
        let serving = Arc::new(AtomicBool::new(true));
        tracing::info!(mqtt = %self.mqtt_addr, http = %self.http_addr, data_dir = %self.settings.data_dir().display(), "swarmq serving");

        tracker.spawn(
            self.broker
                .run(self.dispatcher.clone(), broker_token.clone()),
        );
        tracker.spawn(
            self.http
                .run(self.dispatcher.clone(), serving.clone(), http_token.clone()),
        );
        tracker.close();

        shutdown.cancelled().await;
        serving.store(false, Ordering::Relaxed);
        self.dispatcher.stop_accepting();
        let grace = Duration::from_millis(self.settings.shutdown.grace_period_ms);
        let deadline = Instant::now() + grace;
        while self.dispatcher.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.dispatcher.in_flight();
        if left > 0 {
            tracing::warn!(
                tasks = left,
                "grace period over; tasks in flight stay stored and run after restart"
            );
        }
        broker_token.cancel();
        http_token.cancel();
        self.dispatcher.flush_store();
        if tokio::time::timeout(grace.max(Duration::from_secs(1)), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("subsystems did not stop in time");
        }
        tracing::info!("swarmq stopped");
    }
}
