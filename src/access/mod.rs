//! [`Access`]: identities, their credentials, and every allow-or-deny
//! decision about who may connect, publish and subscribe.
//!
//! The module knows no broker type: the MQTT layer asks it questions in
//! plain terms (a username and password, a client id, a topic) and turns the
//! answers into CONNACK, PUBACK and SUBACK codes.
//!
//! | file | owns |
//! |---|---|
//! | [`identity`] | the identity record, machine tokens and their keyed hash, passwords |
//! | [`registry`] | `identities.json` in the data directory, and the merged directory |
//! | [`acl`] | `[[auth.acl]]` rules and the role templates |
//! | [`topic`] | MQTT topic-filter matching, covering and overlapping |
//! | [`limits`] | per-identity rates and the delay after failed logins |
//!
//! Profiles: with no identity declared anywhere, and `auth.allow_anonymous`
//! unset, anonymous clients may do anything (the development profile). The
//! first identity turns anonymous access off unless the setting keeps it on.

pub mod acl;
pub mod identity;
pub mod limits;
pub mod registry;
pub mod topic;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;
use serde::Serialize;

pub use acl::{AclRule, Action, Verdict, Who};
pub use identity::{Identity, IdentityRole, Origin, TokenHash};
pub use registry::{Directory, IdentityFile, RegistryError};

use crate::settings::{AuthSettings, IdentitySettings};

/// Denials kept for the dashboard's recent-denials list.
const RECENT_DENIALS: usize = 100;

/// Password checks running at once (argon2 takes ~20 MiB and tens of
/// milliseconds each, by design).
const CONCURRENT_PASSWORD_CHECKS: usize = 2;

/// Errors building the access layer.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The identities file could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// An access rule is not valid.
    #[error("auth.acl[{index}]: {message}")]
    Rule {
        /// Position in the configuration.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A declared identity is not valid.
    #[error("auth.identities[{index}] ({name}): {message}")]
    Identity {
        /// Position in the configuration.
        index: usize,
        /// Its name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown name, wrong token or password (MQTT 5 0x86, 3.1.1 4).
    BadCredentials,
    /// Anonymous outside the development profile, or revoked (0x87, 3.1.1 5).
    NotAuthorized,
    /// A client id that does not belong to the identity (0x85, 3.1.1 2).
    ClientIdNotValid,
    /// The identity has `max_connections` open already (0x97).
    QuotaExceeded,
}

impl Refusal {
    /// The label used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BadCredentials => "bad_credentials",
            Refusal::NotAuthorized => "not_authorized",
            Refusal::ClientIdNotValid => "client_id_not_valid",
            Refusal::QuotaExceeded => "quota_exceeded",
        }
    }
}

/// What a client presents when it connects.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    /// MQTT username.
    pub username: Option<&'a str>,
    /// MQTT password.
    pub password: Option<&'a [u8]>,
    /// Client id (after the broker assigned one to an empty one).
    pub client_id: &'a str,
    /// Remote address.
    pub addr: Option<IpAddr>,
    /// Subject CN of a verified TLS client certificate.
    pub certificate_name: Option<&'a str>,
}

/// One refused publish, subscribe or connection, for the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct Denial {
    /// When, microseconds since the epoch.
    pub at_us: u64,
    /// `connect`, `publish`, `subscribe`, `answer`, `reply_topic`, `fetch` or `revoke`.
    pub action: &'static str,
    /// The identity, if known.
    pub identity: Option<String>,
    /// The client id.
    pub client_id: String,
    /// Remote address.
    pub addr: Option<String>,
    /// Topic or filter, when there is one.
    pub topic: Option<String>,
    /// Why.
    pub reason: String,
}

/// Counters of what was refused.
#[derive(Debug, Default)]
struct Counters {
    denied_publish: AtomicU64,
    denied_subscribe: AtomicU64,
    denied_other: AtomicU64,
    auth_failures: AtomicU64,
}

/// Figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessFigures {
    /// Publishes refused.
    pub denied_publish: u64,
    /// Subscriptions refused.
    pub denied_subscribe: u64,
    /// Answers, reply topics, fetches and revokes refused.
    pub denied_other: u64,
    /// Connections refused for their credentials.
    pub auth_failures: u64,
}

struct Inner {
    file: IdentityFile,
    declared: Vec<Identity>,
    directory: RwLock<Arc<Directory>>,
    stamp: Mutex<registry::Stamp>,
    rules: Vec<AclRule>,
    /// Some rule can refuse a delivery (fixed with the rules at start).
    checks_deliveries: bool,
    allow_anonymous: Option<bool>,
    failures: limits::FailureTracker,
    buckets: DashMap<String, limits::RateBucket>,
    connections: DashMap<String, u32>,
    last_seen: DashMap<String, u64>,
    denials: Mutex<VecDeque<Denial>>,
    counters: Counters,
    password_checks: tokio::sync::Semaphore,
    changes: tokio::sync::watch::Sender<u64>,
}

/// The access layer; cheap to clone.
#[derive(Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("identities", &self.directory().all().count())
            .field("rules", &self.inner.rules.len())
            .finish_non_exhaustive()
    }
}

impl Access {
    /// Loads the declared identities and those in `data_dir`.
    ///
    /// # Errors
    ///
    /// Fails when a declared identity is invalid (a bad hash, an unreadable
    /// token file) or the identities file cannot be read.
    pub fn new(settings: &AuthSettings, data_dir: &Path) -> Result<Access, AccessError> {
        let declared = declared_identities(&settings.identities)?;
        let rules = settings
            .acl
            .iter()
            .enumerate()
            .map(|(index, r)| {
                AclRule::parse(
                    &r.permission,
                    &r.action,
                    &r.topic,
                    r.identity.as_deref(),
                    r.role.as_deref(),
                    r.reason_code.as_deref(),
                )
                .map_err(|message| AccessError::Rule { index, message })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let file = IdentityFile::in_dir(data_dir);
        let stamp = file.stamp();
        let directory = Directory::new(&declared, file.load()?);
        Ok(Access {
            inner: Arc::new(Inner {
                file,
                declared,
                directory: RwLock::new(Arc::new(directory)),
                stamp: Mutex::new(stamp),
                checks_deliveries: acl::has_subscribe_denials(&rules),
                rules,
                allow_anonymous: settings.allow_anonymous,
                failures: limits::FailureTracker::default(),
                buckets: DashMap::new(),
                connections: DashMap::new(),
                last_seen: DashMap::new(),
                denials: Mutex::new(VecDeque::new()),
                counters: Counters::default(),
                password_checks: tokio::sync::Semaphore::new(CONCURRENT_PASSWORD_CHECKS),
                changes: tokio::sync::watch::Sender::new(0),
            }),
        })
    }

    /// The identities now.
    pub fn directory(&self) -> Arc<Directory> {
        self.inner
            .directory
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The identity called `name`, revoked or not.
    pub fn identity(&self, name: &str) -> Option<Arc<Identity>> {
        self.directory().get(name).cloned()
    }

    /// The identities file.
    pub fn file(&self) -> &IdentityFile {
        &self.inner.file
    }

    /// True when anonymous clients may connect.
    pub fn anonymous_allowed(&self) -> bool {
        self.anonymous_allowed_in(&self.directory())
    }

    /// [`Access::anonymous_allowed`] for a directory already in hand.
    pub fn anonymous_allowed_in(&self, directory: &Directory) -> bool {
        self.inner
            .allow_anonymous
            .unwrap_or_else(|| directory.is_empty())
    }

    /// True in the development profile: anonymous clients may connect and
    /// no identity or rule restricts them.
    pub fn is_open(&self) -> bool {
        self.is_open_in(&self.directory())
    }

    /// [`Access::is_open`] for a directory already in hand.
    pub fn is_open_in(&self, directory: &Directory) -> bool {
        self.anonymous_allowed_in(directory) && directory.is_empty() && self.inner.rules.is_empty()
    }

    /// Rereads the identities file if it changed since the last look; true
    /// when it did. Watchers of [`Access::changes`] are told.
    ///
    /// # Errors
    ///
    /// Fails when the changed file cannot be read; the identities known
    /// before stay in force.
    pub fn reload_if_changed(&self) -> Result<bool, RegistryError> {
        let stamp = self.inner.file.stamp();
        {
            let last = self
                .inner
                .stamp
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *last == stamp {
                return Ok(false);
            }
        }
        let directory = Directory::new(&self.inner.declared, self.inner.file.load()?);
        *self
            .inner
            .directory
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(directory);
        *self
            .inner
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = stamp;
        self.inner.changes.send_modify(|g| *g += 1);
        Ok(true)
    }

    /// Ticks each time the identities change.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Checks a client's credentials and client id.
    ///
    /// `Ok(None)` is an anonymous client let in. A failure is counted
    /// and slows the next attempts from the same address.
    ///
    /// # Errors
    ///
    /// The [`Refusal`] to answer, and a message for the log.
    pub async fn authenticate(
        &self,
        login: Login<'_>,
    ) -> Result<Option<Arc<Identity>>, (Refusal, String)> {
        if let Some(addr) = login.addr {
            let delay = self.inner.failures.delay(addr);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        let outcome = self.check_login(login).await;
        if let Some(addr) = login.addr {
            match &outcome {
                Err((Refusal::BadCredentials | Refusal::NotAuthorized, _)) => {
                    self.inner.failures.failed(addr);
                }
                Ok(Some(_)) => self.inner.failures.succeeded(addr),
                _ => {}
            }
        }
        if let Err((refusal, message)) = &outcome {
            self.inner
                .counters
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            self.note(Denial {
                at_us: crate::engine::now_us(),
                action: "connect",
                identity: login.username.map(str::to_string),
                client_id: login.client_id.to_string(),
                addr: login.addr.map(|a| a.to_string()),
                topic: None,
                reason: format!("{}: {message}", refusal.as_str()),
            });
        }
        outcome
    }

    async fn check_login(
        &self,
        login: Login<'_>,
    ) -> Result<Option<Arc<Identity>>, (Refusal, String)> {
        if self.directory().is_empty() && self.anonymous_allowed() {
            // The development profile: any name and password will do, as in
            // mosquitto with no password file.
            return Ok(None);
        }
        let name = match (login.username, login.certificate_name) {
            (Some(u), _) => u,
            (None, Some(cn)) => cn,
            (None, None) => {
                return if self.anonymous_allowed() {
                    Ok(None)
                } else {
                    Err((
                        Refusal::NotAuthorized,
                        "anonymous clients are not allowed: connect with an identity's name and token"
                            .into(),
                    ))
                };
            }
        };
        let Some(identity) = self.identity(name) else {
            return Err((Refusal::BadCredentials, format!("no identity `{name}`")));
        };
        if identity.is_revoked() {
            return Err((
                Refusal::NotAuthorized,
                format!("identity `{name}` is revoked"),
            ));
        }
        let proven = match login.password {
            Some(password) => self.check_secret(&identity, password).await,
            // No password: only a verified certificate naming this identity.
            None => login.certificate_name == Some(name),
        };
        if !proven {
            return Err((
                Refusal::BadCredentials,
                format!("wrong token or password for `{name}`"),
            ));
        }
        if !client_id_belongs(login.client_id, name) {
            return Err((
                Refusal::ClientIdNotValid,
                format!(
                    "client id `{}` does not belong to `{name}`: use `{name}` or `{name}:<anything>`",
                    login.client_id
                ),
            ));
        }
        if let Some(max) = identity.max_connections {
            let open = self.inner.connections.get(name).map_or(0, |n| *n);
            if open >= max {
                return Err((
                    Refusal::QuotaExceeded,
                    format!("`{name}` has {open} connections open, its max_connections"),
                ));
            }
        }
        Ok(Some(identity))
    }

    async fn check_secret(&self, identity: &Identity, secret: &[u8]) -> bool {
        let Ok(secret) = std::str::from_utf8(secret) else {
            return false;
        };
        if let Some(hash) = &identity.token_hash
            && hash.verify(secret)
        {
            return true;
        }
        let Some(phc) = identity.password_hash.clone() else {
            return false;
        };
        let Ok(_permit) = self.inner.password_checks.acquire().await else {
            return false;
        };
        let secret = secret.to_string();
        tokio::task::spawn_blocking(move || identity::verify_password(&phc, &secret))
            .await
            .unwrap_or(false)
    }

    /// Notes that a connection of `name` opened.
    pub fn connection_opened(&self, name: &str) {
        *self.inner.connections.entry(name.to_string()).or_insert(0) += 1;
        self.inner
            .last_seen
            .insert(name.to_string(), crate::engine::now_us());
    }

    /// When `name` last connected or disconnected, since this broker started.
    pub fn last_seen_us(&self, name: &str) -> Option<u64> {
        self.inner.last_seen.get(name).map(|t| *t)
    }

    /// Notes that a connection of `name` closed.
    pub fn connection_closed(&self, name: &str) {
        self.inner
            .last_seen
            .insert(name.to_string(), crate::engine::now_us());
        if let Some(mut n) = self.inner.connections.get_mut(name) {
            *n = n.saturating_sub(1);
        }
        self.inner.connections.remove_if(name, |_, n| *n == 0);
    }

    /// Connections open per identity.
    pub fn live_connections(&self, name: &str) -> u32 {
        self.inner.connections.get(name).map_or(0, |n| *n)
    }

    /// May `who` publish to `topic`? A denial is noted.
    pub fn may_publish(&self, who: Who<'_>, addr: Option<IpAddr>, topic: &str) -> Verdict {
        let verdict = acl::may_publish(&self.inner.rules, who, topic);
        self.count_denial(&verdict, Action::Publish, who, addr, topic);
        verdict
    }

    /// May `who` publish to `topic`? Nothing is noted (the caller decides
    /// what a refusal means, e.g. a reply topic refused on a submission).
    pub fn check_publish(&self, who: Who<'_>, topic: &str) -> Verdict {
        acl::may_publish(&self.inner.rules, who, topic)
    }

    /// May `who` subscribe to `filter`? A denial is noted.
    pub fn may_subscribe(&self, who: Who<'_>, addr: Option<IpAddr>, filter: &str) -> Verdict {
        let verdict = acl::may_subscribe(&self.inner.rules, who, filter);
        self.count_denial(&verdict, Action::Subscribe, who, addr, filter);
        verdict
    }

    /// Counts and notes `verdict` when it is a denial of `action` on `topic`.
    fn count_denial(
        &self,
        verdict: &Verdict,
        action: Action,
        who: Who<'_>,
        addr: Option<IpAddr>,
        topic: &str,
    ) {
        let Some(reason) = verdict.reason() else {
            return;
        };
        let counter = match action {
            Action::Publish => &self.inner.counters.denied_publish,
            Action::Subscribe => &self.inner.counters.denied_subscribe,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.note_for(who, addr, action.as_str(), Some(topic), reason.to_string());
    }

    /// True when deliveries must be checked with [`Access::may_receive`].
    pub fn checks_deliveries(&self) -> bool {
        self.inner.checks_deliveries
    }

    /// May a message on `topic` be delivered to `who`?
    pub fn may_receive(&self, who: Who<'_>, topic: &str) -> bool {
        acl::may_receive(&self.inner.rules, who, topic)
    }

    /// Takes one message from `identity`'s publish rate; false when it is
    /// over `publish_rate`.
    pub fn take_publish(&self, identity: &Identity) -> bool {
        let Some(rate) = identity.publish_rate else {
            return true;
        };
        let mut bucket = self
            .inner
            .buckets
            .entry(identity.name.clone())
            .or_insert_with(|| limits::RateBucket::new(rate));
        bucket.take(rate)
    }

    /// Notes a refusal decided elsewhere (an answer from a client that does
    /// not hold the task, a reply topic, a fetch or revoke of another's task).
    pub fn refused(
        &self,
        who: Who<'_>,
        addr: Option<IpAddr>,
        action: &'static str,
        topic: Option<&str>,
        reason: String,
    ) {
        self.inner
            .counters
            .denied_other
            .fetch_add(1, Ordering::Relaxed);
        self.note_for(who, addr, action, topic, reason);
    }

    fn note_for(
        &self,
        who: Who<'_>,
        addr: Option<IpAddr>,
        action: &'static str,
        topic: Option<&str>,
        reason: String,
    ) {
        self.note(Denial {
            at_us: crate::engine::now_us(),
            action,
            identity: who.identity.map(|i| i.name.clone()),
            client_id: who.client_id.to_string(),
            addr: addr.map(|a| a.to_string()),
            topic: topic.map(str::to_string),
            reason,
        });
    }

    fn note(&self, denial: Denial) {
        tracing::warn!(
            action = denial.action,
            identity = denial.identity.as_deref().unwrap_or("-"),
            client_id = %denial.client_id,
            addr = denial.addr.as_deref().unwrap_or("-"),
            topic = denial.topic.as_deref().unwrap_or("-"),
            reason = %denial.reason,
            "access denied"
        );
        let mut recent = self
            .inner
            .denials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == RECENT_DENIALS {
            recent.pop_front();
        }
        recent.push_back(denial);
    }

    /// The latest denials, newest first.
    pub fn recent_denials(&self) -> Vec<Denial> {
        let recent = self
            .inner
            .denials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.iter().rev().cloned().collect()
    }

    /// What was refused since start.
    pub fn figures(&self) -> AccessFigures {
        let c = &self.inner.counters;
        AccessFigures {
            denied_publish: c.denied_publish.load(Ordering::Relaxed),
            denied_subscribe: c.denied_subscribe.load(Ordering::Relaxed),
            denied_other: c.denied_other.load(Ordering::Relaxed),
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
        }
    }
}

/// True when `client_id` is `name` or begins with `name:`.
pub fn client_id_belongs(client_id: &str, name: &str) -> bool {
    client_id
        .strip_prefix(name)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
}

/// The identity part of a client id: what precedes the first `:`.
pub fn identity_of_client(client_id: &str) -> &str {
    client_id.split_once(':').map_or(client_id, |(n, _)| n)
}

fn declared_identities(settings: &[IdentitySettings]) -> Result<Vec<Identity>, AccessError> {
    let mut out = Vec::with_capacity(settings.len());
    for (index, s) in settings.iter().enumerate() {
        let bad = |message: String| AccessError::Identity {
            index,
            name: s.name.clone(),
            message,
        };
        if !identity::is_valid_name(&s.name) {
            return Err(bad("a name is 1 to 64 of A-Z a-z 0-9 _ . -".into()));
        }
        let role = IdentityRole::parse(&s.role).ok_or_else(|| {
            bad(format!(
                "unknown role `{}`: device, worker, app or admin",
                s.role
            ))
        })?;
        if let Some(q) = s
            .queues
            .iter()
            .find(|q| !identity::is_valid_queue_pattern(q))
        {
            return Err(bad(format!(
                "`{q}` is not a queue name or `prefix*` pattern"
            )));
        }
        let given = [
            s.token_hash.is_some(),
            s.token_file.is_some(),
            s.token_env.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(bad(
                "give one of token_hash, token_file and token_env".into()
            ));
        }
        let from_secret = |token: &str, whence: String| {
            let token = token.trim();
            if token.len() < 22 {
                return Err(bad(format!(
                    "the token in {whence} is too short: at least 128 bits (`swarmq identity hash-token` makes one)"
                )));
            }
            TokenHash::new(token)
                .map(Some)
                .map_err(|e| bad(e.to_string()))
        };
        let token_hash = match (&s.token_hash, &s.token_file, &s.token_env) {
            (Some(h), _, _) => Some(TokenHash::parse(h).ok_or_else(|| {
                bad("token_hash is not a `swarmq identity hash-token` hash".into())
            })?),
            (_, Some(path), _) => {
                let token = std::fs::read_to_string(path)
                    .map_err(|e| bad(format!("cannot read token_file {}: {e}", path.display())))?;
                from_secret(&token, path.display().to_string())?
            }
            (_, _, Some(var)) => {
                let token = std::env::var(var).map_err(|_| {
                    bad(format!(
                        "token_env: the environment variable {var} is not set"
                    ))
                })?;
                from_secret(&token, format!("${var}"))?
            }
            (None, None, None) => None,
        };
        if let Some(h) = &s.password_hash
            && !identity::is_valid_password_hash(h)
        {
            return Err(bad("password_hash is not an argon2 PHC string".into()));
        }
        if token_hash.is_none() && s.password_hash.is_none() {
            tracing::info!(identity = %s.name, "declared identity without a token or password: it connects only with a client certificate");
        }
        out.push(Identity {
            name: s.name.clone(),
            role,
            queues: s.queues.clone(),
            token_hash,
            password_hash: s.password_hash.clone(),
            created_at_us: 0,
            revoked_at_us: None,
            max_connections: s.max_connections,
            publish_rate: s.publish_rate,
            origin: Origin::Config,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_belong_to_their_identity() {
        assert!(client_id_belongs("dev1", "dev1"));
        assert!(client_id_belongs("dev1:sensor-3", "dev1"));
        assert!(!client_id_belongs("dev10", "dev1"));
        assert!(!client_id_belongs("dev", "dev1"));
        assert!(!client_id_belongs("x:dev1", "dev1"));
        assert_eq!(identity_of_client("w1:3"), "w1");
        assert_eq!(identity_of_client("w1"), "w1");
    }
}

#[cfg(test)]
mod proptests;
