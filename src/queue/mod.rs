//! Durable task records and the store that keeps them across restarts.
//!
//! This module owns what a task *is* once accepted ([`StoredTask`]) and where it
//! is kept ([`QueueStore`]). It knows nothing of MQTT or of workers: the
//! dispatcher decides what to store and when, and keeps the live queues in memory;
//! the store is the write-ahead record it recovers from after a crash.

mod store;

pub use store::{QueueStore, StoreError, SyncMode};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Store key of a task: a ULID, so keys sort in submission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey(pub ulid::Ulid);

impl TaskKey {
    /// The 16 big-endian bytes used as the store key.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// Parses a store key.
    pub fn from_slice(bytes: &[u8]) -> Option<TaskKey> {
        let arr: [u8; 16] = bytes.try_into().ok()?;
        Some(TaskKey(ulid::Ulid::from_bytes(arr)))
    }
}

/// Where and how the requester wants its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    /// The reply topic (MQTT 5 Response Topic, or the `reply_to` field).
    pub topic: String,
    /// MQTT 5 Correlation Data, sent back as the same property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_data: Option<Vec<u8>>,
    /// The `correlation_id` field, echoed in the result JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// A task as accepted: everything needed to run it and answer its requester,
/// and nothing that changes on every delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTask {
    /// Task id (the requester's, or generated).
    pub id: String,
    /// Queue name.
    pub queue: String,
    /// Task name.
    pub task: String,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// Where the result goes, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyTo>,
    /// MQTT 5 user properties of the submission, handed to the worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_properties: Vec<(String, String)>,
    /// Submission time, microseconds since the Unix epoch.
    pub submitted_at_us: u64,
    /// When the task expires if no worker took it (MQTT 5 Message Expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_us: Option<u64>,
    /// Deliveries that ended without a result (worker gone, lease expired,
    /// retry asked). Persisted so `max_attempts` holds across restarts.
    #[serde(default)]
    pub attempts: u32,
}
