//! The shared-subscription policy: which member of a `$share/<group>/…` group
//! gets a message.
//!
//! Task topics (`tasks/<queue>`) are not routed by rmqtt at all: the engine
//! delivers each task to the worker it picked, by client id, so this policy
//! chooses nobody for them. Every other topic is shared round-robin among the
//! group's online members, as an ordinary broker would.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use rmqtt::context::ServerContext;
use rmqtt::subscribe::SharedSubscription;
use rmqtt::types::{
    ClientId, Id, IsOnline, NodeId, SharedGroup, SubscriptionIdentifier, SubscriptionOptions,
    TopicName,
};
use swarmq_worker::wire::TASKS_PREFIX;

type Member = (
    NodeId,
    ClientId,
    SubscriptionOptions,
    Option<Vec<SubscriptionIdentifier>>,
    Option<IsOnline>,
);

#[derive(Default)]
pub(super) struct TaskAwareSharing {
    next: AtomicUsize,
}

#[async_trait]
impl SharedSubscription for TaskAwareSharing {
    fn is_supported(&self) -> bool {
        true
    }

    async fn choice(
        &self,
        _scx: &ServerContext,
        _group: &SharedGroup,
        _publisher: &Id,
        topic: &TopicName,
        members: &[Member],
    ) -> Option<(usize, IsOnline)> {
        if topic.starts_with(TASKS_PREFIX) || members.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = members.len();
        // Prefer an online member; fall back to any (a persistent session
        // queues the message for its return).
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| members[i].4.unwrap_or(true))
            .map(|i| (i, true))
            .or(Some((start % n, false)))
    }
}
