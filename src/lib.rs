//! swarmq: an MQTT broker whose `tasks/<queue>` topics are durable task queues.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`access`] | identities, credentials, ACL rules and role templates, limits |
//! | [`app`] | building every part from [`Settings`] and running them until shutdown |
//! | [`settings`] | the configuration tree, its layers and validation |
//! | [`mqtt`] | the embedded rmqtt broker and its hooks (the only module naming rmqtt) |
//! | [`engine`] | queues, workers, leases, timers, retries, results: every task decision |
//! | [`queue`] | the durable queue store (fjall), behind the engine's `TaskStore` port |
//! | [`history`] | task history and results on disk, live worker and rate figures |
//! | [`http`] | the HTTP port: dashboard, JSON API (`/api/v1`), `/healthz`, `/metrics` |
//! | [`metrics`] | counter names and rendering |
//! | [`shutdown`] | the SIGINT/SIGTERM signal |
//!
//! # Data flow
//!
//! A device publishes a task to `tasks/<queue>`. The broker's publish hook
//! hands it to the [`Engine`], which validates it, writes it to the
//! [`TaskStore`](engine::TaskStore), and only then lets the broker send the
//! PUBACK. The engine picks the subscribed worker (`$share/<group>/tasks/<queue>`)
//! with the most free capacity and the broker delivers the task to that one
//! client, with a Response Topic `swarmq/results/<queue>` and the task id as
//! Correlation Data. The worker's reply comes back through the same hook; the
//! engine removes the task from the store and publishes the result to the
//! requester's reply topic, through its outbox, which the broker implements.
//! A task with a countdown, an ETA or a retry's backoff waits in the
//! engine's deadline index instead of its queue until its time.
//!
//! ```text
//! device ──PUBLISH tasks/q──▶ hook ──▶ Engine ──▶ TaskStore (fsync-free journal)
//!    ▲                                   │  picks least-loaded worker
//!    │                                   ▼
//!  reply topic ◀── result ◀── Engine ◀── swarmq/results/q ◀── worker
//! ```

pub mod access;
pub mod app;
pub mod engine;
pub mod history;
pub mod http;
pub mod metrics;
pub mod mqtt;
pub mod queue;
pub mod settings;
pub mod shutdown;

pub use app::{App, AppError};
pub use engine::Engine;
pub use settings::{Settings, SettingsError, Sources};
