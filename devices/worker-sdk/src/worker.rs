//! [`Worker`]: serves tasks by name over MQTT 5.
//!
//! The worker subscribes to `$share/<group>/tasks/<queue>` for each of its
//! queues and announces its concurrency as MQTT 5 Receive Maximum, which the
//! broker takes as its capacity: it never holds more unfinished tasks than that.
//! Each task runs on its own tokio task; its outcome is published to the task's
//! Response Topic with its Correlation Data. A handler error or panic becomes a
//! `failure` result; the worker keeps running.
//!
//! Shutdown is warm: when the token is cancelled the worker unsubscribes (no
//! new tasks), finishes the tasks in hand, publishes their results and
//! disconnects. After the grace period it stops anyway; the broker gives the
//! unfinished tasks to another worker.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::transport::{ConnectSettings, Connection, TlsError};
use crate::url::{BrokerAddr, UrlError};
use crate::wire::{self, TaskMessage, WorkerReply};

/// Default shared-subscription group.
pub const DEFAULT_GROUP: &str = "workers";

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// First wait after a lost connection.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The task a handler runs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Task id.
    pub id: String,
    /// Task name.
    pub task: String,
    /// Queue it came from.
    pub queue: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// 1 on the first delivery, more on retries and redeliveries.
    pub attempt: u32,
    /// MQTT 5 user properties the requester attached.
    pub user_properties: Vec<(String, String)>,
    /// Where progress reports go: the task's reply topic, on this worker's
    /// connection.
    reporter: Option<(AsyncClient, Arc<str>)>,
    /// Cancelled when the broker tells this worker the task was revoked.
    cancel: CancellationToken,
}

/// Two contexts are equal when they describe the same delivery (where its
/// progress goes does not count).
impl PartialEq for TaskContext {
    fn eq(&self, other: &TaskContext) -> bool {
        (
            &self.id,
            &self.task,
            &self.queue,
            &self.args,
            &self.kwargs,
            self.attempt,
            &self.user_properties,
        ) == (
            &other.id,
            &other.task,
            &other.queue,
            &other.args,
            &other.kwargs,
            other.attempt,
            &other.user_properties,
        )
    }
}

impl TaskContext {
    /// A context for calling a handler directly (in a test), with nowhere
    /// to send progress.
    pub fn new(id: &str, task: &str, args: Vec<Value>) -> TaskContext {
        TaskContext {
            id: id.to_string(),
            task: task.to_string(),
            queue: String::new(),
            args,
            kwargs: Map::new(),
            attempt: 1,
            user_properties: Vec::new(),
            reporter: None,
            cancel: CancellationToken::new(),
        }
    }

    /// Reports how far the task got (any JSON value). The broker renews the
    /// task's lease, so a long task that reports is never taken back; keeps
    /// the value as the task's latest progress; and forwards it to a
    /// requester that asked for progress. A report that cannot be sent is
    /// logged and dropped: progress is advisory.
    pub async fn progress(&self, value: impl serde::Serialize) {
        let Some((client, topic)) = &self.reporter else {
            return;
        };
        let value = match serde_json::to_value(value) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(task_id = %self.id, error = %e, "progress is not JSON; not sent");
                return;
            }
        };
        if let Err(e) = answer(client, topic, &self.id, &WorkerReply::Progress(value)).await {
            tracing::warn!(task_id = %self.id, error = %e, "cannot send progress");
        }
    }

    /// Cancelled when the task is revoked while it runs (the broker sends
    /// `{"cancel": <id>}` on `swarmq/control/<client id>`). The broker has
    /// already answered the requester `revoked` and ignores what the handler
    /// returns, so a handler that sees this may stop at once.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether the task was revoked while it runs.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Positional argument `index`, deserialised.
    ///
    /// # Errors
    ///
    /// [`TaskError::Failed`] when it is missing or has another type.
    pub fn arg<T: DeserializeOwned>(&self, index: usize) -> Result<T, TaskError> {
        let v = self
            .args
            .get(index)
            .ok_or_else(|| TaskError::failed(format!("missing argument {index}")))?;
        serde_json::from_value(v.clone())
            .map_err(|e| TaskError::failed(format!("argument {index}: {e}")))
    }

    /// Keyword argument `name`, deserialised; `None` when absent.
    ///
    /// # Errors
    ///
    /// [`TaskError::Failed`] when present with another type.
    pub fn kwarg<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, TaskError> {
        self.kwargs
            .get(name)
            .map(|v| {
                serde_json::from_value(v.clone())
                    .map_err(|e| TaskError::failed(format!("keyword argument `{name}`: {e}")))
            })
            .transpose()
    }
}

/// Why a task did not succeed. The worker reports it as a `failure` result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task failed for good: the requester gets a `failure` result.
    #[error("{0}")]
    Failed(String),
    /// The task failed but may succeed later: the broker gives it to a worker
    /// again after the queue's backoff, up to its `max_attempts`, then
    /// reports the failure and keeps the task in the dead letters.
    #[error("{0}")]
    Retry(String),
    /// As [`TaskError::Retry`], but the next attempt comes after this delay
    /// instead of the queue's backoff.
    #[error("{0} (retry in {1:?})")]
    RetryAfter(String, Duration),
}

impl TaskError {
    /// A final failure.
    pub fn failed(message: impl Into<String>) -> TaskError {
        TaskError::Failed(message.into())
    }

    /// A failure worth another attempt.
    pub fn retry(message: impl Into<String>) -> TaskError {
        TaskError::Retry(message.into())
    }

    /// A failure worth another attempt after `after` (Celery's
    /// `retry(countdown=…)`).
    pub fn retry_after(message: impl Into<String>, after: Duration) -> TaskError {
        TaskError::RetryAfter(message.into(), after)
    }

    /// The same error with its message rewritten.
    fn map_message(self, f: impl FnOnce(String) -> String) -> TaskError {
        match self {
            TaskError::Failed(m) => TaskError::Failed(f(m)),
            TaskError::Retry(m) => TaskError::Retry(f(m)),
            TaskError::RetryAfter(m, after) => TaskError::RetryAfter(f(m), after),
        }
    }

    /// Whether the broker should try the task again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TaskError::Retry(_) | TaskError::RetryAfter(..))
    }
}

/// A worker that could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The broker address is invalid.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// No queue to serve was given.
    #[error("a worker needs at least one queue")]
    NoQueue,
    /// A queue name is invalid.
    #[error("invalid queue name `{0}`")]
    InvalidQueue(String),
    /// TLS was asked for and cannot be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Concurrency must be 1 to 65534 (65535 means "unspecified" in MQTT 5).
    #[error("concurrency must be between 1 and 65534, got {0}")]
    InvalidConcurrency(u32),
}

/// What a worker did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Tasks answered with a result.
    pub completed: u64,
    /// Tasks answered with an error (handler error, panic, unknown task name).
    pub failed: u64,
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>>;
type HandlerFn = Arc<dyn Fn(TaskContext) -> HandlerFuture + Send + Sync>;

/// Builds a [`Worker`].
#[must_use]
pub struct WorkerBuilder {
    addr: Result<BrokerAddr, UrlError>,
    client_id: Option<String>,
    group: String,
    queues: Vec<String>,
    concurrency: u32,
    handlers: HashMap<String, HandlerFn>,
    grace: Duration,
    connect: ConnectSettings,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("addr", &self.addr)
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// MQTT client id; random when not set.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// Shared-subscription group (default `workers`). All groups on a queue
    /// share its tasks; the group name only labels the subscription.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Adds a queue to take tasks from.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queues.push(queue.into());
        self
    }

    /// Tasks run at once (default 1), announced to the broker as capacity.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    crate::transport::connect_settings_methods!();

    /// How long a warm shutdown waits for tasks in hand (default 30 s).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Registers the handler of task name `task`.
    pub fn handler<F, Fut>(mut self, task: impl Into<String>, f: F) -> Self
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.handlers.insert(
            task.into(),
            Arc::new(move |ctx| {
                let f = f.clone();
                Box::pin(async move { f(ctx).await })
            }),
        );
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// [`WorkerError`] for a bad address, no or invalid queues, or bad concurrency.
    pub fn build(self) -> Result<Worker, WorkerError> {
        let addr = self.addr?;
        if self.queues.is_empty() {
            return Err(WorkerError::NoQueue);
        }
        if let Some(bad) = self.queues.iter().find(|q| !wire::is_valid_queue_name(q)) {
            return Err(WorkerError::InvalidQueue(bad.clone()));
        }
        if self.concurrency == 0 || self.concurrency >= 65_535 {
            return Err(WorkerError::InvalidConcurrency(self.concurrency));
        }
        let connection = Connection::new(&addr, &self.connect)?;
        Ok(Worker {
            addr,
            client_id: self
                .client_id
                .unwrap_or_else(|| self.connect.default_client_id()),
            group: self.group,
            queues: self.queues,
            concurrency: self.concurrency as u16,
            handlers: Arc::new(self.handlers),
            grace: self.grace,
            connection,
        })
    }
}

/// A worker, ready to [`run`](Worker::run).
pub struct Worker {
    addr: BrokerAddr,
    client_id: String,
    group: String,
    queues: Vec<String>,
    concurrency: u16,
    handlers: Arc<HashMap<String, HandlerFn>>,
    grace: Duration,
    connection: Connection,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("addr", &self.addr)
            .field("client_id", &self.client_id)
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    failed: AtomicU64,
}

impl Worker {
    /// Starts building a worker for the broker at `url` (`mqtt://host:port`,
    /// or `mqtts://host:port` with the `tls` feature).
    pub fn builder(url: &str) -> WorkerBuilder {
        WorkerBuilder {
            addr: url.parse(),
            client_id: None,
            group: DEFAULT_GROUP.to_string(),
            queues: Vec::new(),
            concurrency: 1,
            handlers: HashMap::new(),
            grace: Duration::from_secs(30),
            connect: ConnectSettings::default(),
        }
    }

    /// The MQTT client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Serves tasks until `shutdown` is cancelled, reconnecting with backoff
    /// whenever the connection drops; then shuts down warmly.
    ///
    /// # Errors
    ///
    /// None at present: connection failures are retried. The `Result` leaves
    /// room for fatal conditions (such as a refused login) without a breaking change.
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerStats, WorkerError> {
        let mut opts = MqttOptions::new(&self.client_id, &self.addr.host, self.addr.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_start(true);
        opts.set_receive_maximum(Some(self.concurrency));
        self.connection.configure(&mut opts);
        // Room for one result per task in hand plus subscriptions, so sends
        // from the main loop never wait on a full channel.
        let (client, mut eventloop) =
            AsyncClient::new(opts, usize::from(self.concurrency) * 2 + 16);

        let filters: Vec<String> = self
            .queues
            .iter()
            .map(|q| wire::worker_filter(&self.group, q))
            .collect();
        let counters = Arc::new(Counters::default());
        let mut running: JoinSet<()> = JoinSet::new();
        // Each task in hand: its id, reply topic and cancellation. A cancel
        // notice looks the id up by a scan: they are rare, and the map is
        // bounded by the concurrency.
        let mut in_hand: HashMap<tokio::task::Id, (String, Arc<str>, CancellationToken)> =
            HashMap::new();
        let control = wire::control_topic(&self.client_id);
        let mut backoff = MIN_BACKOFF;
        let mut draining = false;
        let drain_deadline = tokio::time::sleep(Duration::MAX);
        tokio::pin!(drain_deadline);

        loop {
            tokio::select! {
                () = shutdown.cancelled(), if !draining => {
                    draining = true;
                    tracing::info!(in_hand = running.len(), "worker stopping: taking no new tasks");
                    for f in &filters {
                        let _ = client.try_unsubscribe(f.clone());
                    }
                    if running.is_empty() {
                        break;
                    }
                    drain_deadline.as_mut().reset(tokio::time::Instant::now() + self.grace);
                }
                Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                    let id = match &joined { Ok((id, ())) => *id, Err(e) => e.id() };
                    let task = in_hand.remove(&id);
                    if let (Err(e), Some((task_id, reply_to, _))) = (joined, task) {
                        let error = if e.is_panic() { "handler panicked" } else { "handler was cancelled" };
                        tracing::error!(task_id, error, "task failed");
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        let reply = WorkerReply::Failure { error: error.into(), retry: false, retry_in: None };
                        let _ = client.try_publish_with_properties(
                            reply_to.to_string(), QoS::AtLeastOnce, false,
                            reply.to_json(Some(&task_id)).to_string(),
                            correlation(&task_id),
                        );
                    }
                    if draining && running.is_empty() {
                        break;
                    }
                }
                () = &mut drain_deadline, if draining => {
                    tracing::warn!(unfinished = running.len(), "grace period over; the broker will hand these tasks to another worker");
                    running.abort_all();
                    break;
                }
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff = MIN_BACKOFF;
                        tracing::info!(broker = %self.addr, client_id = %self.client_id, queues = ?self.queues, concurrency = self.concurrency, "worker connected");
                        if let Err(e) = client.try_subscribe(control.clone(), QoS::AtLeastOnce) {
                            tracing::error!(error = %e, topic = control, "cannot subscribe to the control topic");
                        }
                        if !draining {
                            for f in &filters {
                                if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                                    tracing::error!(error = %e, filter = f, "cannot subscribe");
                                }
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic.as_ref() == control.as_bytes() => {
                        let notice: Option<Value> = serde_json::from_slice(&publish.payload).ok();
                        if let Some(id) = notice.as_ref().and_then(|n| n.get("cancel")).and_then(Value::as_str) {
                            match in_hand.values().find(|(t, _, _)| t == id).map(|(_, _, c)| c) {
                                Some(token) => {
                                    tracing::info!(task_id = id, "task revoked while running; cancelling");
                                    token.cancel();
                                }
                                None => tracing::debug!(task_id = id, "cancel notice for a task not in hand"),
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if let Some((task_id, reply_to, cancel, fut)) = self.start(publish, &client, &counters) {
                            let handle = running.spawn(fut);
                            in_hand.insert(handle.id(), (task_id, reply_to, cancel));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if draining && running.is_empty() {
                            break;
                        }
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "broker connection lost");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = shutdown.cancelled(), if !draining => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                },
            }
        }

        // Let the results just queued reach the broker, then say goodbye.
        let _ = client.try_disconnect();
        let flush = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), flush).await;
        let stats = WorkerStats {
            completed: counters.completed.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
        };
        tracing::info!(
            completed = stats.completed,
            failed = stats.failed,
            "worker stopped"
        );
        Ok(stats)
    }

    /// Turns a delivered task into a future that runs it and publishes its reply.
    #[allow(clippy::type_complexity)]
    fn start(
        &self,
        publish: Publish,
        client: &AsyncClient,
        counters: &Arc<Counters>,
    ) -> Option<(
        String,
        Arc<str>,
        CancellationToken,
        Pin<Box<dyn Future<Output = ()> + Send>>,
    )> {
        let props = publish.properties.unwrap_or_default();
        let msg: TaskMessage = match serde_json::from_slice(&publish.payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, topic = ?publish.topic, "not a task message; ignored");
                return None;
            }
        };
        // MQTT 5 properties are authoritative; the JSON fields are the 3.1.1 copy.
        let reply_to: Arc<str> = props
            .response_topic
            .as_deref()
            .unwrap_or(&msg.reply_to)
            .into();
        let task_id = props
            .correlation_data
            .as_ref()
            .and_then(|c| std::str::from_utf8(c).ok())
            .map(str::to_string)
            .unwrap_or_else(|| msg.id.clone());
        let handler = self.handlers.get(&msg.task).cloned();
        let chunk = msg.chunk;
        let cancel = CancellationToken::new();
        let ctx = TaskContext {
            id: task_id.clone(),
            task: msg.task,
            queue: msg.queue,
            args: msg.args,
            kwargs: msg.kwargs,
            attempt: msg.attempt,
            user_properties: props.user_properties,
            reporter: Some((client.clone(), reply_to.clone())),
            cancel: cancel.clone(),
        };
        let client = client.clone();
        let counters = counters.clone();
        let (id, topic) = (task_id.clone(), reply_to.clone());
        let fut = async move {
            let outcome = match (handler, chunk) {
                (None, _) => Err(TaskError::failed(format!(
                    "no handler for task `{}`",
                    ctx.task
                ))),
                (Some(h), None) => h(ctx).await,
                // A workflow's chunk: one handler call per item, answered
                // as the list of their results; the first error is the
                // chunk's, naming the item.
                (Some(h), Some(items)) => {
                    let mut results = Vec::with_capacity(items.len());
                    let mut failed = None;
                    for (i, item) in items.into_iter().enumerate() {
                        let args = match item {
                            Value::Array(args) => args,
                            other => vec![other],
                        };
                        let item_ctx = TaskContext {
                            args,
                            ..ctx.clone()
                        };
                        match h(item_ctx).await {
                            Ok(v) => results.push(v),
                            Err(e) => {
                                failed = Some(e.map_message(|m| format!("chunk item {i}: {m}")));
                                break;
                            }
                        }
                    }
                    match failed {
                        Some(e) => Err(e),
                        None => Ok(Value::Array(results)),
                    }
                }
            };
            let reply = match outcome {
                Ok(v) => {
                    counters.completed.fetch_add(1, Ordering::Relaxed);
                    WorkerReply::Success(v)
                }
                Err(e) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(task_id = %id, error = %e, "task failed");
                    match e {
                        TaskError::Failed(error) => WorkerReply::Failure {
                            error,
                            retry: false,
                            retry_in: None,
                        },
                        TaskError::Retry(error) => WorkerReply::Failure {
                            error,
                            retry: true,
                            retry_in: None,
                        },
                        TaskError::RetryAfter(error, after) => WorkerReply::Failure {
                            error,
                            retry: true,
                            retry_in: Some(after.as_secs_f64()),
                        },
                    }
                }
            };
            if let Err(e) = answer(&client, &topic, &id, &reply).await {
                tracing::error!(task_id = %id, error = %e, "cannot publish the result; the broker will redeliver the task");
            }
        };
        Some((task_id, reply_to, cancel, Box::pin(fut)))
    }
}

/// Publishes `reply` for task `task_id` to its reply topic. QoS 0: a reply
/// lost with its connection needs no resend, because the broker hands the
/// tasks of a disconnected worker to another.
async fn answer(
    client: &AsyncClient,
    topic: &str,
    task_id: &str,
    reply: &WorkerReply,
) -> Result<(), rumqttc::v5::ClientError> {
    let payload = reply.to_json(Some(task_id)).to_string();
    client
        .publish_with_properties(
            topic.to_string(),
            QoS::AtMostOnce,
            false,
            payload,
            correlation(task_id),
        )
        .await
}

fn correlation(task_id: &str) -> PublishProperties {
    PublishProperties {
        correlation_data: Some(task_id.as_bytes().to_vec().into()),
        ..PublishProperties::default()
    }
}

/// A client id unique enough for a fleet: prefix, process id and clock.
pub(crate) fn random_client_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "swarmq-{}-{:x}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_validates() {
        let ok = Worker::builder("mqtt://h:1")
            .queue("q")
            .concurrency(4)
            .build();
        assert!(ok.is_ok());
        assert_eq!(
            Worker::builder("mqtt://h:1").build().unwrap_err(),
            WorkerError::NoQueue
        );
        assert_eq!(
            Worker::builder("h:1").queue("a/b").build().unwrap_err(),
            WorkerError::InvalidQueue("a/b".into())
        );
        assert_eq!(
            Worker::builder("h:1")
                .queue("q")
                .concurrency(0)
                .build()
                .unwrap_err(),
            WorkerError::InvalidConcurrency(0)
        );
        assert!(matches!(
            Worker::builder("http://h").queue("q").build(),
            Err(WorkerError::Url(_))
        ));
    }

    #[test]
    fn task_context_arguments() {
        let ctx = TaskContext {
            kwargs: serde_json::json!({"k": true}).as_object().cloned().unwrap(),
            ..TaskContext::new(
                "1",
                "t",
                vec![serde_json::json!("word"), serde_json::json!(3)],
            )
        };
        assert!(!ctx.is_cancelled());
        assert_eq!(ctx.arg::<String>(0).unwrap(), "word");
        assert_eq!(ctx.arg::<u32>(1).unwrap(), 3);
        assert!(ctx.arg::<u32>(0).is_err());
        assert!(ctx.arg::<u32>(5).is_err());
        assert_eq!(ctx.kwarg::<bool>("k").unwrap(), Some(true));
        assert_eq!(ctx.kwarg::<bool>("missing").unwrap(), None);
    }
}
