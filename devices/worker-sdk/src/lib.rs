//! Worker and client SDK for swarmq, the MQTT task broker.
//!
//! A **worker** serves tasks by name; a **client** submits tasks and awaits
//! their results. Both speak plain MQTT 5 to the broker (any MQTT client could
//! do the same; see docs/PROTOCOL.md), so this crate is a convenience, not a
//! requirement.
//!
//! ```no_run
//! use swarmq_worker::{TaskError, Worker};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let worker = Worker::builder("mqtt://127.0.0.1:1883")
//!     .queue("word_count")
//!     .concurrency(8)
//!     .handler("mapper", |task| async move {
//!         let word: String = task.arg(0)?;
//!         Ok(serde_json::json!([word, 1]))
//!     })
//!     .build()?;
//! worker.run(CancellationToken::new()).await?;
//! # Ok(()) }
//! ```
//!
//! The [`wire`] module (always built) holds the topic names and JSON payloads,
//! and [`BrokerAddr`] (always built) reads broker addresses.
//! Everything else needs the default `client` feature. The `tls` feature adds
//! `mqtts://` addresses: the broker's certificate is checked against the CA
//! file given to the builder (`ca_file`), or the system's roots without one.

pub mod canvas;
pub mod wire;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod transport;
mod url;
#[cfg(feature = "client")]
mod worker;

#[cfg(feature = "client")]
pub use client::{Client, ClientBuilder, PendingResult, RequestError};
#[cfg(feature = "client")]
pub use transport::TlsError;
pub use url::{BrokerAddr, DEFAULT_PORT, DEFAULT_TLS_PORT, UrlError};
#[cfg(feature = "client")]
pub use worker::{
    DEFAULT_GROUP, TaskContext, TaskError, Worker, WorkerBuilder, WorkerError, WorkerStats,
};

#[cfg(feature = "client")]
pub use tokio_util::sync::CancellationToken;
