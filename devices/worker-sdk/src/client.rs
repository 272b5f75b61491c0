//! [`Client`]: submits tasks and awaits their results over MQTT 5.
//!
//! One MQTT connection carries any number of outstanding requests. Each task is
//! published to `tasks/<queue>` with the client's reply topic as Response Topic
//! and a fresh Correlation Data; one background task reads the reply topic and
//! completes the matching [`PendingResult`] (the `Multiplexer` idea of
//! async-nats). The session is persistent (clean start off, five minutes of
//! expiry), so results published while the connection is down are delivered
//! when it comes back.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::canvas::{Node, WorkflowRequest};
use crate::transport::{ConnectSettings, Connection, TlsError};
use crate::url::{BrokerAddr, UrlError};
use crate::wire::{self, Status, TaskRequest, TaskResult};

/// How long [`ClientBuilder::connect`] waits for the broker by default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Session expiry asked of the broker, in seconds.
const SESSION_EXPIRY_SECS: u32 = 300;

/// Why a request produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The broker address is invalid.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The broker could not be reached in time.
    #[error("cannot connect to the broker at {addr}: {reason}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The last error seen.
        reason: String,
    },
    /// TLS was asked for and cannot be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The queue name is invalid; nothing was sent.
    #[error("invalid queue name `{0}`")]
    InvalidQueue(String),
    /// The request could not be handed to the connection (client closed).
    #[error("the client is closed")]
    Closed,
    /// No result arrived in time. The task may still run.
    #[error("no result within {0:?}")]
    TimedOut(Duration),
}

/// A request waiting for its result, and for its progress reports if it
/// asked for them.
struct Waiter {
    result: oneshot::Sender<TaskResult>,
    progress: Option<mpsc::UnboundedSender<Value>>,
}

type Pending = Arc<Mutex<HashMap<String, Waiter>>>;

/// Builds a [`Client`].
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder {
    addr: Result<BrokerAddr, UrlError>,
    client_id: Option<String>,
    reply_topic: Option<String>,
    inflight: u16,
    connect: ConnectSettings,
}

impl ClientBuilder {
    /// MQTT client id; random when not set.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// Topic results come back on (default `swarmq/replies/<client id>`, or
    /// `replies/<username>/<client id>` with credentials).
    pub fn reply_topic(mut self, topic: impl Into<String>) -> Self {
        self.reply_topic = Some(topic.into());
        self
    }

    crate::transport::connect_settings_methods!();

    /// Most task submissions awaiting their PUBACK at once (default 1000).
    pub fn inflight(mut self, n: u16) -> Self {
        self.inflight = n.max(1);
        self
    }

    /// Connects, subscribes to the reply topic, and returns once both are
    /// acknowledged.
    ///
    /// # Errors
    ///
    /// [`RequestError::Url`], [`RequestError::Tls`] or [`RequestError::Connect`].
    pub async fn connect(self) -> Result<Client, RequestError> {
        let addr = self.addr?;
        let connection = Connection::new(&addr, &self.connect)?;
        let client_id = self
            .client_id
            .unwrap_or_else(|| self.connect.default_client_id());
        // An identity may read only its own `replies/<name>/…`.
        let reply_topic = self
            .reply_topic
            .unwrap_or_else(|| match &self.connect.username {
                Some(u) => format!("replies/{u}/{client_id}"),
                None => format!("swarmq/replies/{client_id}"),
            });
        let mut opts = MqttOptions::new(&client_id, &addr.host, addr.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_start(false);
        opts.set_session_expiry_interval(Some(SESSION_EXPIRY_SECS));
        opts.set_outgoing_inflight_upper_limit(self.inflight);
        connection.configure(&mut opts);
        let (mqtt, eventloop) = AsyncClient::new(opts, usize::from(self.inflight) + 16);

        let pending: Pending = Arc::default();
        let token = CancellationToken::new();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        tokio::spawn(run_connection(
            mqtt.clone(),
            eventloop,
            reply_topic.clone(),
            pending.clone(),
            token.clone(),
            ready_tx,
        ));
        let ready = tokio::time::timeout(CONNECT_TIMEOUT, ready_rx).await;
        let fail = |reason: String| RequestError::Connect {
            addr: addr.to_string(),
            reason,
        };
        match ready {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(reason))) => {
                token.cancel();
                return Err(fail(reason));
            }
            Ok(Err(_)) => return Err(fail("connection task ended".into())),
            Err(_) => {
                token.cancel();
                return Err(fail(format!("no answer within {CONNECT_TIMEOUT:?}")));
            }
        }
        Ok(Client {
            mqtt,
            pending,
            reply_topic,
            next_correlation: AtomicU64::new(1),
            client_id,
            _stop: token.drop_guard(),
        })
    }
}

async fn run_connection(
    mqtt: AsyncClient,
    mut eventloop: rumqttc::v5::EventLoop,
    reply_topic: String,
    pending: Pending,
    token: CancellationToken,
    ready_tx: oneshot::Sender<Result<(), String>>,
) {
    let mut ready_tx = Some(ready_tx);
    let mut backoff = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        let event = tokio::select! {
            () = token.cancelled() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                failures = 0;
                if let Err(e) = mqtt.try_subscribe(reply_topic.clone(), QoS::AtLeastOnce) {
                    tracing::error!(error = %e, "cannot subscribe to the reply topic");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(Ok(()));
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let correlation = p
                    .properties
                    .as_ref()
                    .and_then(|props| props.correlation_data.as_ref())
                    .and_then(|c| std::str::from_utf8(c).ok().map(str::to_string));
                let result: TaskResult = match serde_json::from_slice(&p.payload) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "reply is not a task result; ignored");
                        continue;
                    }
                };
                let key = correlation.or_else(|| result.correlation_id.clone());
                if result.status == Status::Progress {
                    // Not final: hand it on, keep waiting for the result.
                    let map = lock(&pending);
                    if let Some(tx) = key
                        .and_then(|k| map.get(&k))
                        .and_then(|w| w.progress.as_ref())
                    {
                        let _ = tx.send(result.progress.unwrap_or(Value::Null));
                    }
                    continue;
                }
                let waiter = key.and_then(|k| lock(&pending).remove(&k));
                match waiter {
                    Some(w) => {
                        let _ = w.result.send(result);
                    }
                    None => tracing::debug!(id = ?result.id, "result for no pending request"),
                }
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                if ready_tx.is_some() && failures >= 3 {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(Err(e.to_string()));
                    }
                    break;
                }
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "broker connection lost");
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    let _ = mqtt.try_disconnect();
    // Drain the disconnect out of the event loop, briefly.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
    // The map holds plain senders; a panic elsewhere cannot leave it inconsistent.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection for submitting tasks. Dropping it closes the connection.
pub struct Client {
    mqtt: AsyncClient,
    pending: Pending,
    reply_topic: String,
    next_correlation: AtomicU64,
    client_id: String,
    _stop: DropGuard,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("reply_topic", &self.reply_topic)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts building a client for the broker at `url` (`mqtt://host:port`,
    /// or `mqtts://host:port` with the `tls` feature).
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            addr: url.parse(),
            client_id: None,
            reply_topic: None,
            inflight: 1000,
            connect: ConnectSettings::default(),
        }
    }

    /// Connects with default options.
    ///
    /// # Errors
    ///
    /// See [`ClientBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Client, RequestError> {
        Client::builder(url).connect().await
    }

    /// The MQTT client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Publishes a task to `queue` and returns a future of its result. The
    /// request's `reply_to` and `correlation_id` are replaced by this client's.
    ///
    /// # Errors
    ///
    /// [`RequestError::InvalidQueue`] or [`RequestError::Closed`].
    ///
    /// # Cancel safety
    ///
    /// If cancelled while waiting for room in the send queue, the task was
    /// not sent.
    pub async fn submit(
        &self,
        queue: &str,
        request: TaskRequest,
    ) -> Result<PendingResult, RequestError> {
        self.send(queue, request, None).await
    }

    /// Submits a task that reports progress: the requester asks for the
    /// worker's reports (`"progress": true`) and receives each one on the
    /// returned channel until the result arrives.
    ///
    /// # Errors
    ///
    /// As [`Client::submit`].
    pub async fn submit_with_progress(
        &self,
        queue: &str,
        request: TaskRequest,
    ) -> Result<(PendingResult, mpsc::UnboundedReceiver<Value>), RequestError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let request = TaskRequest {
            progress: Some(true),
            ..request
        };
        Ok((self.send(queue, request, Some(tx)).await?, rx))
    }

    async fn send(
        &self,
        queue: &str,
        request: TaskRequest,
        progress: Option<mpsc::UnboundedSender<Value>>,
    ) -> Result<PendingResult, RequestError> {
        if !wire::is_valid_queue_name(queue) {
            return Err(RequestError::InvalidQueue(queue.to_string()));
        }
        let request = TaskRequest {
            reply_to: None,
            correlation_id: None,
            ..request
        };
        let payload = serde_json::to_vec(&request).map_err(|_| RequestError::Closed)?;
        self.request(wire::task_topic(queue), payload, progress)
            .await
    }

    /// Submits a workflow (see [`canvas`](crate::canvas)) and returns a
    /// future of its one final result. `id`, when given, is its
    /// idempotency key: a second submission with it runs nothing.
    ///
    /// # Errors
    ///
    /// [`RequestError::Closed`].
    pub async fn submit_workflow(
        &self,
        workflow: Node,
        id: Option<&str>,
    ) -> Result<PendingResult, RequestError> {
        self.send_workflow(workflow, id, None).await
    }

    /// Submits a workflow asking for progress: each `{"done", "total"}`
    /// report arrives on the returned channel until the result does.
    ///
    /// # Errors
    ///
    /// As [`Client::submit_workflow`].
    pub async fn submit_workflow_with_progress(
        &self,
        workflow: Node,
        id: Option<&str>,
    ) -> Result<(PendingResult, mpsc::UnboundedReceiver<Value>), RequestError> {
        let (tx, rx) = mpsc::unbounded_channel();
        Ok((self.send_workflow(workflow, id, Some(tx)).await?, rx))
    }

    async fn send_workflow(
        &self,
        workflow: Node,
        id: Option<&str>,
        progress: Option<mpsc::UnboundedSender<Value>>,
    ) -> Result<PendingResult, RequestError> {
        let request = WorkflowRequest {
            id: id.map(str::to_string),
            workflow,
            progress: progress.is_some(),
        };
        let payload = serde_json::to_vec(&request).map_err(|_| RequestError::Closed)?;
        self.request(wire::WORKFLOWS_TOPIC.to_string(), payload, progress)
            .await
    }

    /// Publishes `payload` to `topic` with this client's reply topic and a
    /// fresh correlation, and returns the future of its answer.
    async fn request(
        &self,
        topic: String,
        payload: Vec<u8>,
        progress: Option<mpsc::UnboundedSender<Value>>,
    ) -> Result<PendingResult, RequestError> {
        let correlation = self
            .next_correlation
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(
            correlation.clone(),
            Waiter {
                result: tx,
                progress,
            },
        );
        let props = PublishProperties {
            response_topic: Some(self.reply_topic.clone()),
            correlation_data: Some(correlation.clone().into_bytes().into()),
            ..PublishProperties::default()
        };
        if self
            .mqtt
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, props)
            .await
            .is_err()
        {
            lock(&self.pending).remove(&correlation);
            return Err(RequestError::Closed);
        }
        Ok(PendingResult { rx })
    }

    /// Submits a task and waits up to `timeout` for its result.
    ///
    /// # Errors
    ///
    /// As [`Client::submit`], plus [`RequestError::TimedOut`].
    pub async fn call(
        &self,
        queue: &str,
        request: TaskRequest,
        timeout: Duration,
    ) -> Result<TaskResult, RequestError> {
        let pending = self.submit(queue, request).await?;
        match tokio::time::timeout(timeout, pending).await {
            Ok(r) => r,
            Err(_) => Err(RequestError::TimedOut(timeout)),
        }
    }

    /// Requests still waiting for their result.
    pub fn pending(&self) -> usize {
        lock(&self.pending).len()
    }
}

/// The result of one submitted task, when it arrives.
#[derive(Debug)]
#[must_use = "a result arrives only if awaited"]
pub struct PendingResult {
    rx: oneshot::Receiver<TaskResult>,
}

impl Future for PendingResult {
    type Output = Result<TaskResult, RequestError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.map_err(|_| RequestError::Closed))
    }
}
