//! What a task *is* once accepted: [`StoredTask`], its store key and its
//! reply address. These are the records the [`TaskStore`](super::TaskStore)
//! keeps; every field that a restart must know is here.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::RetryPolicy;

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

/// Highest task priority; 0 is the lowest and the default.
pub const MAX_PRIORITY: u8 = 9;

/// A task as accepted: everything needed to run it and answer its requester.
/// Rewritten in the store whenever a field a restart needs changes (attempts,
/// a retry's due time).
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
    /// A task that has not started by then is answered `expired`
    /// (`expires`, or the MQTT 5 Message Expiry Interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_us: Option<u64>,
    /// Not delivered before this time (`countdown`, `eta`, a retry's backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_us: Option<u64>,
    /// 0 (lowest) to [`MAX_PRIORITY`]; higher is delivered first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u8,
    /// This task's own retry policy, instead of its queue's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The requester also gets the worker's progress reports.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub progress: bool,
    /// Deliveries that ended without a final answer (worker gone, lease
    /// expired, retry asked). Persisted so attempts are counted across restarts.
    #[serde(default)]
    pub attempts: u32,
    /// Deliveries lost to a flapping worker: not counted as attempts.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub lost: u32,
    /// The error of the last attempt, when it asked for a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The identity that submitted it (none in the development profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// The workflow it is a member of; its id is `<workflow>/<path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// A chunk task's items (each a list of arguments), sent instead of `args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<Vec<Value>>,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl StoredTask {
    /// A task with these names and arguments and every option at its default.
    pub fn new(id: &str, queue: &str, task: &str, args: Vec<Value>) -> StoredTask {
        StoredTask {
            id: id.to_string(),
            queue: queue.to_string(),
            task: task.to_string(),
            args,
            kwargs: Map::new(),
            reply: None,
            user_properties: Vec::new(),
            submitted_at_us: 0,
            expires_at_us: None,
            not_before_us: None,
            priority: 0,
            retry: None,
            progress: false,
            attempts: 0,
            lost: 0,
            last_error: None,
            requester: None,
            workflow: None,
            chunk: None,
        }
    }
}
