//! The durable queue store: [`FjallStore`], the fjall implementation of the
//! engine's [`TaskStore`](crate::engine::TaskStore) port.
//!
//! It knows nothing of MQTT or of workers: the engine decides what to store
//! and when, and keeps the live queues in memory; the store is the
//! write-ahead record it recovers from after a crash.

mod store;

pub use store::{FjallStore, SyncMode};
