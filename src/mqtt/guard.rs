//! [`Guard`]: the access layer at the broker's doors.
//!
//! It turns rmqtt's connect, publish and subscribe events into questions to
//! [`Access`] and the answers into MQTT reason codes: CONNACK 0x86 (bad
//! credentials) or 0x87 (not authorized; 3.1.1: 4 or 5), PUBACK and SUBACK
//! 0x87 with a Reason String (3.1.1: SUBACK 0x80, a denied publish dropped
//! after its PUBACK). It also keeps the live connections per identity, so a
//! revoked or rotated identity's connections are closed as soon as the
//! change is seen.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rmqtt::codec::v3::ConnectAckReason as ConnectAckReasonV3;
use rmqtt::codec::v5::{
    ConnectAckReason as ConnectAckReasonV5, PublishAckReason, SubscribeAckReason,
};
use rmqtt::context::ServerContext;
use rmqtt::hook::HookResult;
use rmqtt::session::Session;
use rmqtt::types::{
    AuthResult, ConnectAckReason, ConnectInfo, Id, Message, PublishAclResult, PublishResult,
    Reason, SubscribeAclResult,
};
use tokio_util::sync::CancellationToken;

use crate::access::{Access, Identity, Login, Refusal, Verdict, Who};

/// How often the identities file is looked at for changes.
const RELOAD_EVERY: Duration = Duration::from_millis(250);

/// The client behind a session, as the access layer sees it.
#[derive(Debug, Clone)]
pub(super) enum Caller {
    /// The development profile: nothing is checked.
    Open,
    /// Let in without an identity (`auth.allow_anonymous`).
    Anonymous,
    /// An identity in good standing.
    Known(Arc<Identity>),
    /// Authenticated as an identity that has since been revoked or removed:
    /// refused everything until its connection is closed.
    Gone(String),
}

impl Caller {
    /// The identity's name, if any.
    pub(super) fn name(&self) -> Option<&str> {
        match self {
            Caller::Known(i) => Some(&i.name),
            _ => None,
        }
    }

    /// The identity, if any.
    pub(super) fn identity(&self) -> Option<&Identity> {
        match self {
            Caller::Known(i) => Some(i),
            _ => None,
        }
    }

    /// True when nothing is checked.
    pub(super) fn is_open(&self) -> bool {
        matches!(self, Caller::Open)
    }
}

struct LiveClient {
    id: Id,
    identity: Option<String>,
    fingerprint: Option<String>,
}

/// The access layer, as the broker's hooks use it.
pub(super) struct Guard {
    access: Access,
    live: DashMap<String, LiveClient>,
}

impl Guard {
    pub(super) fn new(access: Access) -> Guard {
        Guard {
            access,
            live: DashMap::new(),
        }
    }

    /// The `ClientAuthenticate` verdict.
    pub(super) async fn authenticate(&self, info: &ConnectInfo) -> HookResult {
        let id = info.id();
        let certificate_name = info.cert().and_then(|c| c.common_name.as_deref());
        let login = Login {
            username: info.username().map(|u| u.as_ref()),
            password: info.password().map(|p| p.as_ref()),
            client_id: &id.client_id,
            addr: id.remote_addr.map(|a| a.ip()),
            certificate_name,
        };
        let v5 = matches!(info, ConnectInfo::V5(..));
        let refused = |v5_code, v3_code| {
            AuthResult::Refused(if v5 {
                ConnectAckReason::V5(v5_code)
            } else {
                ConnectAckReason::V3(v3_code)
            })
        };
        let result = match self.access.authenticate(login).await {
            Ok(_) => AuthResult::Allow(false, None),
            Err((Refusal::BadCredentials, _)) => AuthResult::BadUsernameOrPassword,
            Err((Refusal::NotAuthorized, _)) => AuthResult::NotAuthorized,
            Err((Refusal::ClientIdNotValid, _)) => refused(
                ConnectAckReasonV5::ClientIdentifierNotValid,
                ConnectAckReasonV3::IdentifierRejected,
            ),
            Err((Refusal::QuotaExceeded, _)) => refused(
                ConnectAckReasonV5::QuotaExceeded,
                ConnectAckReasonV3::NotAuthorized,
            ),
        };
        HookResult::AuthResult(result)
    }

    /// Who is behind `session` now.
    pub(super) fn caller(&self, session: &Session) -> Caller {
        // One look at the directory per call: this runs on every publish.
        let directory = self.access.directory();
        if self.access.is_open_in(&directory) {
            return Caller::Open;
        }
        let anonymous = || {
            if self.access.anonymous_allowed_in(&directory) {
                Caller::Anonymous
            } else {
                Caller::Gone("anonymous".into())
            }
        };
        let Some(name) = session.id.username.as_deref() else {
            return anonymous();
        };
        match directory.get(name) {
            Some(i) if !i.is_revoked() => Caller::Known(i.clone()),
            // A username let in while the directory was empty: anonymous.
            None if self.was_anonymous(session) => anonymous(),
            _ => Caller::Gone(name.to_string()),
        }
    }

    fn was_anonymous(&self, session: &Session) -> bool {
        self.live
            .get(session.id.client_id.as_ref() as &str)
            .is_some_and(|c| c.identity.is_none())
    }

    fn who<'a>(caller: &'a Caller, client_id: &'a str) -> Who<'a> {
        Who {
            identity: caller.identity(),
            client_id,
        }
    }

    /// The publish verdict for a denied topic, or `None` to go on.
    pub(super) fn check_publish(
        &self,
        caller: &Caller,
        session: &Session,
        topic: &str,
    ) -> Option<HookResult> {
        let addr = remote_ip(session);
        let reason = match caller {
            Caller::Open => return None,
            Caller::Gone(name) => format!("identity `{name}` is revoked"),
            Caller::Anonymous | Caller::Known(_) => {
                match self
                    .access
                    .may_publish(Self::who(caller, &session.id.client_id), addr, topic)
                {
                    Verdict::Allow => {
                        if let Some(identity) = caller.identity()
                            && !self.access.take_publish(identity)
                        {
                            let reason = format!(
                                "publish_rate: `{}` may publish {} messages/s",
                                identity.name,
                                identity.publish_rate.unwrap_or_default()
                            );
                            self.access.refused(
                                Self::who(caller, &session.id.client_id),
                                addr,
                                "publish_rate",
                                Some(topic),
                                reason.clone(),
                            );
                            return Some(publish_refused(PublishAckReason::QuotaExceeded, reason));
                        }
                        return None;
                    }
                    Verdict::Deny(reason) => reason,
                    Verdict::DenyUnspecified(reason) => {
                        return Some(publish_refused(PublishAckReason::UnspecifiedError, reason));
                    }
                }
            }
        };
        Some(publish_refused(PublishAckReason::NotAuthorized, reason))
    }

    /// True when `caller` may have answers published to `topic`.
    pub(super) fn may_reply_to(&self, caller: &Caller, client_id: &str, topic: &str) -> bool {
        match caller {
            Caller::Open => true,
            Caller::Gone(_) => false,
            _ => self
                .access
                .check_publish(Self::who(caller, client_id), topic)
                .is_allowed(),
        }
    }

    /// False when a deny rule keeps a message on `topic` from `session`
    /// (a broad subscription overlapping a denied filter).
    pub(super) fn may_receive(&self, session: &Session, topic: &str) -> bool {
        if !self.access.checks_deliveries() {
            return true;
        }
        let caller = self.caller(session);
        match &caller {
            Caller::Open => true,
            Caller::Gone(_) => false,
            _ => self
                .access
                .may_receive(Self::who(&caller, &session.id.client_id), topic),
        }
    }

    /// The `ClientSubscribeCheckAcl` verdict for a denied filter, or `None`.
    pub(super) fn check_subscribe(
        &self,
        caller: &Caller,
        session: &Session,
        filter: &str,
        shared_group: Option<&str>,
    ) -> Option<HookResult> {
        let full = match shared_group {
            Some(g) => format!("$share/{g}/{filter}"),
            None => filter.to_string(),
        };
        let code = match caller {
            Caller::Open => return None,
            Caller::Gone(_) => SubscribeAckReason::NotAuthorized,
            _ => match self.access.may_subscribe(
                Self::who(caller, &session.id.client_id),
                remote_ip(session),
                &full,
            ) {
                Verdict::Allow => return None,
                Verdict::Deny(_) => SubscribeAckReason::NotAuthorized,
                Verdict::DenyUnspecified(_) => SubscribeAckReason::UnspecifiedError,
            },
        };
        Some(HookResult::SubscribeAclResult(
            SubscribeAclResult::new_failure(code),
        ))
    }

    /// Notes a refusal decided by the engine or the hooks (an answer from a
    /// client that does not hold the task, another device's task).
    pub(super) fn refused(
        &self,
        caller: &Caller,
        session: &Session,
        action: &'static str,
        topic: Option<&str>,
        reason: String,
    ) {
        self.access.refused(
            Self::who(caller, &session.id.client_id),
            remote_ip(session),
            action,
            topic,
            reason,
        );
    }

    pub(super) async fn connected(&self, session: &Session) {
        let identity = session
            .id
            .username
            .as_deref()
            .and_then(|n| self.access.identity(n));
        if let Some(i) = &identity
            && let Ok(info) = session.connect_info().await
            && let ConnectInfo::V5(_, connect) = info.as_ref()
            && connect.request_response_info
        {
            // MQTT 5 Response Information: where this identity's replies live.
            session.extra_attrs.write().await.insert(
                rmqtt::v5::RESPONSE_INFORMATION_ATTR.into(),
                format!("replies/{}/", i.name),
            );
        }
        if let Some(i) = &identity {
            self.access.connection_opened(&i.name);
        }
        let client = LiveClient {
            id: session.id.clone(),
            identity: identity.as_ref().map(|i| i.name.clone()),
            fingerprint: identity.as_ref().map(|i| i.credential_fingerprint()),
        };
        let old = self.live.insert(session.id.client_id.to_string(), client);
        // A takeover of the same client id: the old connection's count goes.
        if let Some(old) = old
            && let Some(name) = old.identity
        {
            self.access.connection_closed(&name);
        }
    }

    pub(super) fn disconnected(&self, session: &Session) {
        let removed = self
            .live
            .remove_if(session.id.client_id.as_ref() as &str, |_, c| {
                c.id.create_time == session.id.create_time
            });
        if let Some((_, c)) = removed
            && let Some(name) = c.identity
        {
            self.access.connection_closed(&name);
        }
    }

    /// Rereads the identities while the broker runs and closes the
    /// connections of identities that were revoked, rotated or removed.
    pub(super) async fn watch(self: Arc<Self>, scx: ServerContext, token: CancellationToken) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        let mut changes = self.access.changes();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.access.reload_if_changed() {
                        tracing::error!(error = %e, "cannot reread the identities; the ones known stay in force");
                    }
                }
                r = changes.changed() => {
                    if r.is_err() {
                        return;
                    }
                    self.close_stale(&scx).await;
                }
                () = token.cancelled() => return,
            }
        }
    }

    async fn close_stale(&self, scx: &ServerContext) {
        let directory = self.access.directory();
        let stale: Vec<Id> = self
            .live
            .iter()
            .filter(|c| {
                let now = c
                    .identity
                    .as_deref()
                    .and_then(|n| directory.get(n))
                    .map(|i| (!i.is_revoked()).then(|| i.credential_fingerprint()));
                match (&c.fingerprint, now) {
                    // Anonymous in the development profile: stale once
                    // anonymous access ends.
                    (None, _) => !self.access.anonymous_allowed(),
                    (Some(before), Some(Some(now))) => *before != now,
                    (Some(_), _) => true,
                }
            })
            .map(|c| c.id.clone())
            .collect();
        for id in stale {
            tracing::warn!(client_id = %id.client_id, identity = id.username_ref(), "closing the connection of a revoked or changed identity");
            let entry = scx.extends.shared().await.entry(id.clone());
            if let Some(tx) = entry.tx() {
                let _ = tx.unbounded_send(Message::Closed(Reason::from_static(
                    "identity revoked or its credentials changed",
                )));
            }
        }
    }
}

fn remote_ip(session: &Session) -> Option<IpAddr> {
    session.id.remote_addr.map(|a| a.ip())
}

fn publish_refused(code: PublishAckReason, reason: String) -> HookResult {
    HookResult::PublishAclResult(PublishAclResult(PublishResult::reason_code(
        code,
        Some(reason.into()),
        false,
    )))
}
