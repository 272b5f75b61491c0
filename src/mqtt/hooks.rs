//! [`TaskHooks`]: translates rmqtt hook events into [`Engine`] calls.
//!
//! Every hook runs inline on the session task of the client that caused it,
//! so each handler here does a short, non-blocking engine call; the engine
//! sends what follows through its outbox itself.
//!
//! Access comes first: [`Guard`] authenticates each connection and decides
//! every publish and subscribe before anything else looks at it.
//!
//! | event | topic / condition | action |
//! |---|---|---|
//! | `ClientAuthenticate` | any | the identity's credentials and client id |
//! | `ClientSubscribeCheckAcl` | any | rules and role (0x87 / 0x80 when denied) |
//! | `MessagePublishCheckAcl` | `tasks/<queue>` | submit; PUBACK follows only once stored |
//! | `MessagePublishCheckAcl` | `swarmq/results/<queue>` | worker reply; consumed |
//! | `MessagePublishCheckAcl` | `swarmq/history/get` | answer from the history; consumed |
//! | `MessagePublishCheckAcl` | `swarmq/revoke` | revoke; the outcome to the reply topic; consumed |
//! | `MessagePublishCheckAcl` | `swarmq/workflows` | workflow submission; acknowledged once stored; consumed |
//! | `MessagePublishCheckAcl` | a name with `+`, `#` or NUL | malformed: the connection is closed |
//! | `MessagePublishCheckAcl` | `$SYS/…` | refused (0x87) |
//! | `SessionSubscribed` | `$share/<g>/<filter>` matching a task topic | worker joins |
//! | `SessionUnsubscribed` | same | worker leaves that queue |
//! | `ClientConnected` | restored task subscriptions | worker joins |
//! | `ClientDisconnected` | any | worker gone; its tasks go to others |
//! | `MessageExpiryCheck` | a task delivery | veto stale redeliveries |
//! | `MessageExpiryCheck` | a topic a deny rule names | not delivered to that subscriber |

use std::hash::{Hash, Hasher};

use async_trait::async_trait;
use rmqtt::codec::v5::PublishAckReason;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::session::Session;
use rmqtt::types::{ConnectInfo, PublishAclResult, PublishResult};
use serde_json::{Value, json};
use swarmq_worker::wire::{
    HISTORY_GET_TOPIC, RESULTS_PREFIX, REVOKE_TOPIC, TASKS_PREFIX, WORKFLOWS_TOPIC,
};

use std::sync::Arc;

use super::guard::{Caller, Guard};
use super::{DISPATCHER_CLIENT_ID, Publisher};
use crate::access::{IdentityRole, identity_of_client};
use crate::engine::{
    Answered, ConnectionId, Effect, Engine, HolderCheck, ReplyCheck, RevokeOutcome, Submission,
    SubmitOutcome, WeakEngine,
};
use crate::history::{HistoryStore, TaskState, WeakHistoryStore};
use crate::metrics::RejectReason;

/// Capacity an MQTT 5 client announces by leaving Receive Maximum at its
/// default, which says nothing about how much work it can take.
const SPEC_DEFAULT_RECEIVE_MAXIMUM: u16 = 65_535;

/// The hook handler registered with rmqtt. It holds the engine and the
/// history weakly: rmqtt keeps its context (and so its handlers) alive in
/// background tasks after the broker stops, and the stores must close when
/// the app that owns them is dropped.
#[derive(Clone)]
pub(super) struct TaskHooks {
    guard: Arc<Guard>,
    max_capacity: u32,
    engine: WeakEngine,
    history: Option<WeakHistoryStore>,
    publisher: Publisher,
    default_capacity: u32,
}

/// The handler's state for one hook call, with strong references.
struct Live {
    guard: Arc<Guard>,
    max_capacity: u32,
    engine: Engine,
    history: Option<HistoryStore>,
    publisher: Publisher,
    default_capacity: u32,
}

impl TaskHooks {
    pub(super) const TYPES: [Type; 8] = [
        Type::ClientAuthenticate,
        Type::ClientSubscribeCheckAcl,
        Type::MessagePublishCheckAcl,
        Type::SessionSubscribed,
        Type::SessionUnsubscribed,
        Type::ClientConnected,
        Type::ClientDisconnected,
        Type::MessageExpiryCheck,
    ];

    pub(super) fn new(
        guard: Arc<Guard>,
        engine: Engine,
        history: Option<HistoryStore>,
        publisher: Publisher,
        default_capacity: u32,
        max_capacity: u32,
    ) -> Self {
        TaskHooks {
            guard,
            max_capacity,
            engine: engine.downgrade(),
            history: history.as_ref().map(HistoryStore::downgrade),
            publisher,
            default_capacity,
        }
    }

    /// Strong references for one call; `None` once the app is gone.
    fn live(&self) -> Option<Live> {
        Some(Live {
            guard: self.guard.clone(),
            engine: self.engine.upgrade()?,
            history: self.history.as_ref().and_then(WeakHistoryStore::upgrade),
            publisher: self.publisher.clone(),
            default_capacity: self.default_capacity,
            max_capacity: self.max_capacity,
        })
    }
}

impl Live {
    async fn on_publish(
        &self,
        session: &Session,
        publish: &rmqtt::types::Publish,
    ) -> Option<HookResult> {
        let topic: &str = &publish.topic;
        if topic.contains(['+', '#', '\0']) {
            // A topic name with a wildcard or NUL is a malformed PUBLISH
            // (MQTT 3.1.1 4.7.1, 5.0 4.7.3): close the connection, no PUBACK.
            tracing::warn!(client_id = %session.id.client_id, topic, "PUBLISH to a topic name with a wildcard or NUL; closing the connection");
            return Some(HookResult::PublishAclResult(PublishAclResult(
                PublishResult::reason_code(
                    PublishAckReason::TopicNameInvalid,
                    Some("a topic name must not contain + # or NUL".into()),
                    true,
                ),
            )));
        }
        if crate::engine::is_sys_topic(topic) {
            // `$SYS/…` is the broker's; its own messages do not pass
            // through this hook. Other `$` topics stay open, as in mosquitto.
            tracing::warn!(client_id = %session.id.client_id, topic, "PUBLISH to $SYS refused");
            return Some(HookResult::PublishAclResult(PublishAclResult(
                PublishResult::reason_code(
                    PublishAckReason::NotAuthorized,
                    Some("$SYS topics are the broker's own".into()),
                    false,
                ),
            )));
        }
        let caller = self.guard.caller(session);
        if let Some(denied) = self.guard.check_publish(&caller, session, topic) {
            return Some(denied);
        }
        if let Some(queue) = topic.strip_prefix(TASKS_PREFIX) {
            return Some(self.on_task(queue, publish, &caller, session).await);
        }
        if topic == WORKFLOWS_TOPIC {
            return Some(
                self.on_task(WORKFLOWS_TOPIC, publish, &caller, session)
                    .await,
            );
        }
        if topic.starts_with(RESULTS_PREFIX) {
            self.on_answer(publish, &caller, session).await;
            return Some(consumed());
        }
        if topic == HISTORY_GET_TOPIC {
            self.on_history_get(publish, &caller, session).await;
            return Some(consumed());
        }
        if topic == REVOKE_TOPIC {
            self.on_revoke(publish, &caller, session).await;
            return Some(consumed());
        }
        None
    }

    /// A worker's answer or progress report. Outside the development
    /// profile only the lease holder's connections (its client id, or
    /// another client id of the same identity, such as a shell worker's
    /// `mosquitto_pub`) may answer; anyone else's answer is dropped.
    async fn on_answer(&self, publish: &rmqtt::types::Publish, caller: &Caller, session: &Session) {
        let correlation = publish
            .properties
            .as_ref()
            .and_then(|p| p.correlation_data.as_deref());
        let me: &str = &session.id.client_id;
        let my_name = caller.name();
        let holds = |holder: Option<&str>| {
            holder.is_some_and(|h| h == me || my_name.is_some_and(|n| identity_of_client(h) == n))
        };
        let check = (!caller.is_open()).then_some(HolderCheck(&holds));
        let answered = self
            .publisher
            .inline(|| self.engine.answer(me, check, correlation, &publish.payload))
            .await;
        if let Answered::NotHolder(task_id) = answered {
            self.guard.refused(
                caller,
                session,
                "answer",
                Some(&publish.topic),
                format!("task `{task_id}` is not held by `{me}`"),
            );
        }
    }

    /// Reads a request to the broker's own topics, dropping a reply topic
    /// the caller could not publish to.
    fn request(
        &self,
        publish: &rmqtt::types::Publish,
        caller: &Caller,
        session: &Session,
    ) -> Request {
        let mut request = Request::read(publish);
        if let Some(t) = &request.topic
            && !self.guard.may_reply_to(caller, &session.id.client_id, t)
        {
            self.guard.refused(
                caller,
                session,
                "reply_topic",
                Some(t),
                format!("reply_topic_denied: answers may not go to `{t}`"),
            );
            request.topic = None;
        }
        request
    }

    /// Whether `caller` may see or revoke a task its `requester` submitted:
    /// devices and workers their own only, apps and admins any.
    fn may_touch(&self, caller: &Caller, requester: Option<&str>) -> bool {
        match caller {
            Caller::Open | Caller::Anonymous => true,
            Caller::Gone(_) => false,
            Caller::Known(i) => {
                matches!(i.role, IdentityRole::App | IdentityRole::Admin)
                    || requester == Some(i.name.as_str())
            }
        }
    }

    /// Revokes the task a `{"id": …}` request names and answers the outcome
    /// on the request's reply topic, if it gave one: `revoked`, `finished`
    /// (already final; the engine's memory or the history knows it) or
    /// `unknown`.
    async fn on_revoke(&self, publish: &rmqtt::types::Publish, caller: &Caller, session: &Session) {
        let request = self.request(publish, caller, session);
        let Some(id) = request.field("id") else {
            tracing::warn!("revoke request without a string `id`; ignored");
            request
                .answer(
                    &self.publisher,
                    json!({"status": "invalid_request", "error": "a revoke request is a JSON object with a string `id`"}),
                )
                .await;
            return;
        };
        if !caller.is_open() {
            let requester = match self.engine.requester_of(&id) {
                Some(r) => Some(r),
                None => match &self.history {
                    Some(h) => h
                        .read(&id)
                        .await
                        .ok()
                        .flatten()
                        .map(|r| r.summary.requester),
                    None => None,
                },
            };
            if let Some(requester) = requester
                && !self.may_touch(caller, requester.as_deref())
            {
                let reason = format!("task `{id}` was not submitted by this identity");
                self.guard
                    .refused(caller, session, "revoke", None, reason.clone());
                request
                    .answer(
                        &self.publisher,
                        json!({"id": id, "status": "denied", "error": reason}),
                    )
                    .await;
                return;
            }
        }
        let mut outcome = self
            .publisher
            .inline(|| self.engine.revoke(&id, "revoked by request"))
            .await;
        if outcome == RevokeOutcome::Unknown
            && let Some(h) = &self.history
            && let Ok(Some(record)) = h.read(&id).await
            && !matches!(
                record.summary.status,
                TaskState::Queued | TaskState::Scheduled | TaskState::Running
            )
        {
            outcome = RevokeOutcome::Finished;
        }
        tracing::info!(task_id = %id, outcome = outcome.as_str(), "revoke requested over MQTT");
        request
            .answer(
                &self.publisher,
                json!({"id": id, "status": outcome.as_str()}),
            )
            .await;
    }

    /// Answers a history fetch on the requester's reply topic: the task's
    /// record as `GET /api/v1/tasks/{id}` gives it, or a `status` of
    /// `unknown` (no such task) or `invalid_request` (a malformed request).
    async fn on_history_get(
        &self,
        publish: &rmqtt::types::Publish,
        caller: &Caller,
        session: &Session,
    ) {
        let request = self.request(publish, caller, session);
        let id = request.field("id");
        let answer = match (&id, &self.history) {
            (None, _) => {
                json!({"status": "invalid_request", "error": "a history request is a JSON object with a string `id`"})
            }
            (Some(_), None) => {
                json!({"id": id, "status": "unknown", "error": "the task history is disabled on this broker"})
            }
            (Some(id), Some(h)) => match h.read(id).await {
                Ok(Some(record))
                    if !self.may_touch(caller, record.summary.requester.as_deref()) =>
                {
                    let reason = format!("task `{id}` was not submitted by this identity");
                    self.guard
                        .refused(caller, session, "fetch", None, reason.clone());
                    json!({"id": id, "status": "denied", "error": reason})
                }
                Ok(Some(record)) => record.to_json(),
                Ok(None) => match self.workflow_view(id).await {
                    Some(view) if !self.may_touch(caller, view.requester.as_deref()) => {
                        let reason = format!("workflow `{id}` was not submitted by this identity");
                        self.guard
                            .refused(caller, session, "fetch", None, reason.clone());
                        json!({"id": id, "status": "denied", "error": reason})
                    }
                    Some(view) => serde_json::to_value(view).unwrap_or_default(),
                    None => {
                        json!({"id": id, "status": "unknown", "error": format!("no task or workflow `{id}` in the history")})
                    }
                },
                Err(e) => {
                    json!({"id": id, "status": "unknown", "error": format!("history unavailable: {e}")})
                }
            },
        };
        request.answer(&self.publisher, answer).await;
    }

    /// A task for `tasks/<queue>`, or a workflow when `queue` is
    /// [`WORKFLOWS_TOPIC`].
    /// Workflow `id` as the engine runs it, or its final state from the
    /// history.
    async fn workflow_view(&self, id: &str) -> Option<crate::engine::WorkflowView> {
        if let Some(view) = self.engine.workflow(id) {
            return Some(view);
        }
        self.history
            .as_ref()?
            .read_workflow(id)
            .await
            .ok()
            .flatten()
    }

    async fn on_task(
        &self,
        queue: &str,
        publish: &rmqtt::types::Publish,
        caller: &Caller,
        session: &Session,
    ) -> HookResult {
        let props = publish.properties.as_ref();
        let client_id: &str = &session.id.client_id;
        let may_reply = |topic: &str| self.guard.may_reply_to(caller, client_id, topic);
        let submission = Submission {
            queue,
            payload: &publish.payload,
            response_topic: props
                .and_then(|p| p.response_topic.as_ref())
                .map(|t| t.to_string()),
            correlation_data: props.and_then(|p| p.correlation_data.clone()),
            user_properties: props
                .map(|p| {
                    p.user_properties
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            message_expiry_secs: props
                .and_then(|p| p.message_expiry_interval)
                .map(|n| n.get()),
            requester: caller.name().map(str::to_string),
            reply_check: (!caller.is_open()).then_some(ReplyCheck(&may_reply)),
        };
        let outcome = if queue == WORKFLOWS_TOPIC {
            if publish.payload.len() > INLINE_WORKFLOW_BYTES {
                // Reading and expanding a large workflow takes milliseconds:
                // off this runtime thread, so other sessions keep going
                // (its effects then go through the publisher task).
                tokio::task::block_in_place(|| self.engine.submit_workflow(submission))
            } else {
                self.publisher
                    .inline(|| self.engine.submit_workflow(submission))
                    .await
            }
        } else {
            self.publisher
                .inline(|| self.engine.submit(submission))
                .await
        };
        let acl = match outcome {
            // A workflow is the broker's own: nobody else receives it.
            SubmitOutcome::Accepted | SubmitOutcome::Duplicate if queue == WORKFLOWS_TOPIC => {
                return consumed();
            }
            // Allowed: rmqtt routes a copy to plain (observer) subscribers;
            // the shared-subscription policy keeps it from worker groups.
            SubmitOutcome::Accepted | SubmitOutcome::Duplicate => PublishAclResult::allow(),
            SubmitOutcome::Rejected { reason, message } => {
                if reason == RejectReason::ReplyTopicDenied {
                    self.guard.refused(
                        caller,
                        session,
                        "reply_topic",
                        Some(&publish.topic),
                        message.clone(),
                    );
                }
                let code = match reason {
                    RejectReason::InvalidPayload | RejectReason::PayloadTooLarge => {
                        PublishAckReason::PayloadFormatInvalid
                    }
                    RejectReason::InvalidQueue | RejectReason::UnknownQueue => {
                        PublishAckReason::TopicNameInvalid
                    }
                    RejectReason::QueueFull | RejectReason::RateLimited => {
                        PublishAckReason::QuotaExceeded
                    }
                    RejectReason::ReplyTopicDenied => PublishAckReason::NotAuthorized,
                    RejectReason::ShuttingDown => PublishAckReason::ImplementationSpecificError,
                    RejectReason::StoreFailed => PublishAckReason::UnspecifiedError,
                };
                PublishAclResult(PublishResult::reason_code(
                    code,
                    Some(message.into()),
                    false,
                ))
            }
            // MQTT 5: a PUBACK saying why (0x97 for a full disk), and the
            // connection stays. 3.1.1 has no reason codes: a requester that
            // was sent its `rejected` result is acknowledged; any other is
            // disconnected without a PUBACK, so it sends the task again.
            SubmitOutcome::NotStored { error, answered } => {
                let v5 = matches!(
                    session.connect_info().await.ok().as_deref(),
                    Some(ConnectInfo::V5(..))
                );
                let reason = error.to_string();
                let code = if reason.contains("os error 28") || reason.contains("No space left") {
                    PublishAckReason::QuotaExceeded
                } else {
                    PublishAckReason::UnspecifiedError
                };
                PublishAclResult(PublishResult::reason_code(
                    code,
                    Some(format!("task not stored: {reason}").into()),
                    !v5 && !answered,
                ))
            }
        };
        HookResult::PublishAclResult(acl)
    }

    async fn capacity(&self, session: &Session) -> u32 {
        let announced = match session.connect_info().await.ok().as_deref() {
            Some(ConnectInfo::V5(_, connect)) => connect.receive_max.map(|n| n.get()),
            _ => None,
        };
        match announced {
            Some(n) if n != SPEC_DEFAULT_RECEIVE_MAXIMUM => u32::from(n).min(self.max_capacity),
            _ => self.default_capacity,
        }
    }

    async fn on_subscribed(&self, session: &Session, filter: &str, shared: bool) {
        if !shared || !could_select_tasks(filter) {
            return;
        }
        let capacity = self.capacity(session).await;
        self.publisher
            .inline(|| {
                self.engine.worker_subscribed(
                    &session.id.client_id,
                    connection_id(session),
                    capacity,
                    filter,
                )
            })
            .await;
    }

    /// A persistent session that reconnects keeps its subscriptions without
    /// subscribing again: register the task ones.
    async fn on_connected(&self, session: &Session) {
        self.engine.metrics().connections_add(1);
        let Ok(subs) = session.subscriptions().await else {
            return;
        };
        let filters: Vec<String> = subs
            .read()
            .await
            .iter()
            .filter(|(f, opts)| opts.shared_group().is_some() && could_select_tasks(f))
            .map(|(f, _)| f.to_string())
            .collect();
        for f in filters {
            self.on_subscribed(session, &f, true).await;
        }
    }
}

/// A request to the broker on one of its own topics (history fetch,
/// revoke): its JSON and where the answer goes.
struct Request {
    json: Option<Value>,
    topic: Option<String>,
    correlation_data: Option<bytes::Bytes>,
}

impl Request {
    fn read(publish: &rmqtt::types::Publish) -> Request {
        let props = publish.properties.as_ref();
        let json: Option<Value> = serde_json::from_slice(&publish.payload).ok();
        let mut request = Request {
            json,
            topic: None,
            correlation_data: props.and_then(|p| p.correlation_data.clone()),
        };
        request.topic = props
            .and_then(|p| p.response_topic.as_ref())
            .map(|t| t.to_string())
            .or_else(|| request.field("reply_to"))
            .filter(|t| crate::engine::is_valid_reply_topic(t));
        request
    }

    fn field(&self, name: &str) -> Option<String> {
        self.json
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// Publishes `answer` to the reply topic, with the request's
    /// `correlation_id` (3.1.1) and Correlation Data (MQTT 5).
    async fn answer(&self, publisher: &Publisher, mut answer: Value) {
        let Some(topic) = &self.topic else {
            tracing::debug!("broker request without a usable reply topic; not answered");
            return;
        };
        if let (Some(c), Value::Object(map)) = (self.field("correlation_id"), &mut answer) {
            map.insert("correlation_id".into(), Value::String(c));
        }
        publisher
            .send(Effect::Reply {
                topic: topic.clone(),
                correlation_data: self.correlation_data.clone(),
                payload: answer.to_string().into(),
            })
            .await;
    }
}

/// Workflow submissions up to this size are read on the session's task.
const INLINE_WORKFLOW_BYTES: usize = 64 * 1024;

/// The verdict for a publish the broker answers itself: accepted (a success
/// reason code) and not routed to any subscriber.
fn consumed() -> HookResult {
    HookResult::PublishAclResult(PublishAclResult(PublishResult::reason_code(
        PublishAckReason::NoMatchingSubscribers,
        None,
        false,
    )))
}

/// Whether a subscription filter can match some `tasks/<queue>` topic: its
/// first level is `tasks`, `+` or `#`. The engine matches the filter
/// against each queue's topic; this only skips filters that never could.
fn could_select_tasks(filter: &str) -> bool {
    matches!(filter.split('/').next(), Some("tasks" | "+" | "#"))
}

/// Distinguishes successive connections that use one client id.
fn connection_id(session: &Session) -> ConnectionId {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    session.id.create_time.hash(&mut h);
    session.id.remote_addr.hash(&mut h);
    session.id.client_id.hash(&mut h);
    h.finish()
}

#[async_trait]
impl Handler for TaskHooks {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let Some(live) = self.live() else {
            return (true, acc);
        };
        match param {
            Parameter::ClientAuthenticate(info) => {
                (false, Some(live.guard.authenticate(info).await))
            }
            Parameter::ClientSubscribeCheckAcl(session, sub) => {
                let caller = live.guard.caller(session);
                let group = sub.opts.shared_group().map(|g| g.as_ref() as &str);
                match live
                    .guard
                    .check_subscribe(&caller, session, &sub.topic_filter, group)
                {
                    Some(denied) => (false, Some(denied)),
                    None => (true, acc),
                }
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                match live.on_publish(session, publish).await {
                    // Our verdict is final for task and result topics.
                    Some(result) => (false, Some(result)),
                    None => (true, acc),
                }
            }
            Parameter::SessionSubscribed(session, sub) => {
                live.on_subscribed(
                    session,
                    &sub.topic_filter,
                    sub.opts.shared_group().is_some(),
                )
                .await;
                (true, acc)
            }
            Parameter::SessionUnsubscribed(session, unsub) => {
                if unsub.shared_group.is_some() && could_select_tasks(&unsub.topic_filter) {
                    live.engine
                        .worker_unsubscribed(&session.id.client_id, &unsub.topic_filter);
                }
                (true, acc)
            }
            Parameter::ClientConnected(session) => {
                live.guard.connected(session).await;
                live.on_connected(session).await;
                (true, acc)
            }
            Parameter::ClientDisconnected(session, reason) => {
                if overflowed(reason) {
                    tracing::warn!(
                        client_id = %session.id.client_id,
                        remote = ?session.id.remote_addr,
                        "client disconnected: its waiting messages passed mqtt.max_mqueue_bytes (it reads too slowly)"
                    );
                    live.engine.metrics().client_overflowed();
                }
                live.guard.disconnected(session);
                live.engine.metrics().connections_add(-1);
                live.publisher
                    .inline(|| {
                        live.engine
                            .worker_gone(&session.id.client_id, connection_id(session))
                    })
                    .await;
                (true, acc)
            }
            Parameter::MessageExpiryCheck(session, from, publish) => {
                if !live.guard.may_receive(session, &publish.topic) {
                    // A read denial: this subscriber does not get this topic.
                    return (false, Some(HookResult::MessageExpiry));
                }
                let ours = from.id.client_id.as_ref() as &str == DISPATCHER_CLIENT_ID
                    && publish.topic.starts_with(TASKS_PREFIX)
                    && publish.target_clientid.is_some();
                if ours {
                    let task_id = publish
                        .properties
                        .as_ref()
                        .and_then(|p| p.correlation_data.as_deref())
                        .and_then(|c| std::str::from_utf8(c).ok());
                    if let Some(task_id) = task_id
                        && !live.engine.lease_held_by(task_id, &session.id.client_id)
                    {
                        tracing::debug!(task_id, worker = %session.id.client_id, "stale task redelivery vetoed");
                        return (false, Some(HookResult::MessageExpiry));
                    }
                }
                (true, acc)
            }
            _ => (true, acc),
        }
    }
}

/// Whether a session ended because its waiting messages passed
/// `mqtt.max_mqueue_bytes` (rmqtt may report it among other reasons).
fn overflowed(reason: &rmqtt::types::Reason) -> bool {
    use rmqtt::types::Reason;
    match reason {
        Reason::MessageQueueFull => true,
        Reason::Reasons(all) => all.iter().any(overflowed),
        _ => false,
    }
}
