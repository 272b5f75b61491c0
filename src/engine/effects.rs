//! [`Effect`]s: the messages the engine wants published, and the one
//! [`Outbox`] port they leave through.
//!
//! The engine pushes every effect of an operation into the outbox itself,
//! in the order it decided them, before it releases its lock; no caller
//! receives effects to pass on, so none can forget to. The broker adapter
//! implements the port; the engine knows only this trait.

use bytes::Bytes;

/// A message to publish on the engine's behalf.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Give a task to one worker, on `tasks/<queue>`.
    Deliver {
        /// Client id of the worker.
        worker: String,
        /// Queue of the task (the topic is `tasks/<queue>`).
        queue: String,
        /// Task id: the MQTT 5 Correlation Data.
        task_id: String,
        /// Where the worker answers: the MQTT 5 Response Topic.
        reply_to: String,
        /// JSON `TaskMessage`.
        payload: Bytes,
        /// The submitter's MQTT 5 user properties.
        user_properties: Vec<(String, String)>,
    },
    /// Publish a result (or a progress report) to a requester's reply topic.
    Reply {
        /// Reply topic.
        topic: String,
        /// MQTT 5 Correlation Data of the request, if it had one.
        correlation_data: Option<Bytes>,
        /// JSON `TaskResult`.
        payload: Bytes,
    },
    /// Tell one worker something on `swarmq/control/<client id>`, such as
    /// `{"cancel": "<task id>"}`.
    Control {
        /// Client id of the worker.
        worker: String,
        /// JSON notice.
        payload: Bytes,
    },
}

/// Where effects go. Implementations must not block: `send` is called with
/// the engine's lock held, which keeps effects in decision order.
pub trait Outbox: Send + Sync + 'static {
    /// Publishes `effects`, in order.
    fn send(&self, effects: Vec<Effect>);
}

/// An outbox that collects effects in memory, for tests and tools.
#[derive(Debug, Default)]
pub struct MemoryOutbox(std::sync::Mutex<Vec<Effect>>);

impl MemoryOutbox {
    /// Takes every effect sent so far.
    pub fn take(&self) -> Vec<Effect> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Outbox for MemoryOutbox {
    fn send(&self, effects: Vec<Effect>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(effects);
    }
}

impl<O: Outbox> Outbox for std::sync::Arc<O> {
    fn send(&self, effects: Vec<Effect>) {
        (**self).send(effects);
    }
}
