//! [`Auth`]: dashboard and API users, their roles, and login sessions.
//!
//! Passwords are stored as argon2id PHC strings (`swarmq hash-password`
//! makes one) and checked on a blocking thread, since argon2 is slow by
//! design. A login gives an opaque random token, sent back either as the
//! `swarmq_session` cookie (HttpOnly, SameSite=Strict, so other sites cannot
//! ride it) or as `Authorization: Bearer <token>` for scripts. Sessions live
//! in memory: a broker restart logs everyone out, and nothing secret is on disk.
//!
//! The identities of the access layer log in too: an `admin` identity's
//! password (or token, as a bearer token) gives the admin role, an `app`
//! identity's the viewer role; devices and workers have no business here.
//! `[[auth.users]]` keep working beside them.
//!
//! With no users and no identities, everything is open and every caller is
//! an admin (the development profile); the dashboard says so on every page.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHash;
use dashmap::DashMap;

use crate::access::{Access, Identity, IdentityRole};
use crate::settings::{AuthSettings, Role};

/// Password checks running at once. argon2 takes ~20 MiB and tens of
/// milliseconds per check by design; a flood of logins waits in line instead
/// of taking every core from the broker.
const CONCURRENT_CHECKS: usize = 2;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "swarmq_session";

/// A settings user whose hash cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("password hash of user `{user}` is not a valid argon2 PHC string: {reason}")]
pub struct AuthError {
    user: String,
    reason: String,
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// User name; `None` when access is open.
    pub user: Option<String>,
    /// What they may do.
    pub role: Role,
}

struct Session {
    user: String,
    role: Role,
    expires: Instant,
    /// Opened with an identity's password: ends when it is revoked.
    identity: bool,
}

struct User {
    role: Role,
    hash: String,
}

/// Users and sessions.
pub struct Auth {
    users: HashMap<String, User>,
    sessions: DashMap<String, Session>,
    ttl: Duration,
    cookie_secure: bool,
    /// Checked when the user name is unknown, so a wrong name costs the same
    /// time as a wrong password and names cannot be probed.
    decoy_hash: String,
    checks: tokio::sync::Semaphore,
    access: Access,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Loads users from settings.
    ///
    /// # Errors
    ///
    /// Fails when a password hash does not parse.
    pub fn new(settings: &AuthSettings, access: Access) -> Result<Auth, AuthError> {
        let mut users = HashMap::new();
        for u in &settings.users {
            PasswordHash::new(&u.password_hash).map_err(|e| AuthError {
                user: u.name.clone(),
                reason: e.to_string(),
            })?;
            users.insert(
                u.name.clone(),
                User {
                    role: u.role,
                    hash: u.password_hash.clone(),
                },
            );
        }
        let decoy_hash = hash_password("decoy").unwrap_or_default();
        Ok(Auth {
            users,
            sessions: DashMap::new(),
            ttl: Duration::from_secs(settings.session_ttl_secs),
            cookie_secure: settings.cookie_secure,
            decoy_hash,
            checks: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
            access,
        })
    }

    /// True when no users and no identities exist: anyone may do anything.
    pub fn is_open(&self) -> bool {
        self.users.is_empty() && self.access.is_open()
    }

    /// Session lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Waits for a turn to check a password; hold the permit while checking.
    pub async fn check_permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.checks.acquire().await.ok()
    }

    /// Checks a password (slow: call from a blocking thread, holding a
    /// [`Auth::check_permit`]) and opens a session. Returns the token and the
    /// user's role.
    pub fn login(&self, name: &str, password: &str) -> Option<(String, Role)> {
        let identity = self.access.identity(name);
        let (hash, role, by_identity) = match (self.users.get(name), &identity) {
            (Some(u), _) => (u.hash.as_str(), Some(u.role), false),
            (None, Some(i)) => match (&i.password_hash, dashboard_role(i)) {
                (Some(h), Some(role)) => (h.as_str(), Some(role), true),
                _ => (self.decoy_hash.as_str(), None, false),
            },
            (None, None) => (self.decoy_hash.as_str(), None, false),
        };
        let ok = crate::access::identity::verify_password(hash, password);
        // An admin or app identity may also log in with its machine token.
        let by_token = !ok
            && !self.users.contains_key(name)
            && identity.as_ref().is_some_and(|i| {
                dashboard_role(i).is_some()
                    && i.token_hash.as_ref().is_some_and(|t| t.verify(password))
            });
        let (ok, by_identity, role) = if by_token {
            (
                true,
                true,
                identity.as_ref().and_then(|i| dashboard_role(i)),
            )
        } else {
            (ok, by_identity, role)
        };
        let role = role.filter(|_| ok)?;
        let now = Instant::now();
        self.sessions.retain(|_, s| s.expires > now);
        let token = random_token()?;
        self.sessions.insert(
            token.clone(),
            Session {
                user: name.to_string(),
                role,
                expires: now + self.ttl,
                identity: by_identity,
            },
        );
        Some((token, role))
    }

    /// The caller an identity's machine token belongs to, when it is an
    /// `admin` or `app` identity's. Every such identity's keyed hash is
    /// tried: a few MACs, each compared in constant time.
    fn token_caller(&self, token: &str) -> Option<Caller> {
        if !token.starts_with(crate::access::identity::TOKEN_PREFIX) {
            return None;
        }
        let directory = self.access.directory();
        directory.all().find_map(|i| {
            let role = dashboard_role(i)?;
            let hash = i.token_hash.as_ref()?;
            hash.verify(token).then(|| Caller {
                user: Some(i.name.clone()),
                role,
            })
        })
    }

    /// The caller a token belongs to, if its session is live.
    pub fn session(&self, token: &str) -> Option<Caller> {
        let Some(s) = self.sessions.get(token) else {
            return self.token_caller(token);
        };
        let revoked = s.identity
            && self
                .access
                .identity(&s.user)
                .is_none_or(|i| dashboard_role(&i) != Some(s.role));
        if s.expires <= Instant::now() || revoked {
            drop(s);
            self.sessions.remove(token);
            return None;
        }
        Some(Caller {
            user: Some(s.user.clone()),
            role: s.role,
        })
    }

    /// Ends a session.
    pub fn logout(&self, token: &str) {
        self.sessions.remove(token);
    }

    /// The `Set-Cookie` value that carries `token`.
    pub fn cookie(&self, token: &str) -> String {
        format!(
            "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.ttl.as_secs(),
            if self.cookie_secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn expired_cookie(&self) -> String {
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

/// The dashboard role of an identity in good standing: admins administer,
/// apps view; devices and workers get none.
fn dashboard_role(identity: &Identity) -> Option<Role> {
    if identity.is_revoked() {
        return None;
    }
    match identity.role {
        IdentityRole::Admin => Some(Role::Admin),
        IdentityRole::App => Some(Role::Viewer),
        IdentityRole::Device | IdentityRole::Worker => None,
    }
}

/// Hashes `password` as an argon2id PHC string with a random salt (the
/// access layer's, so users and identities share one scheme).
pub use crate::access::identity::hash_password;

/// 32 random bytes, hex.
fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(crate::history::hex_string(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::UserSettings;

    fn open_access(settings: &AuthSettings) -> (Access, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (Access::new(settings, dir.path()).unwrap(), dir)
    }

    fn auth() -> Auth {
        let settings = AuthSettings {
            allow_anonymous: None,
            identities: vec![],
            acl: vec![],
            users: vec![
                UserSettings {
                    name: "ada".into(),
                    role: Role::Admin,
                    password_hash: hash_password("secret").unwrap(),
                },
                UserSettings {
                    name: "vic".into(),
                    role: Role::Viewer,
                    password_hash: hash_password("look").unwrap(),
                },
            ],
            session_ttl_secs: 3600,
            cookie_secure: true,
        };
        let (access, _dir) = open_access(&settings);
        Auth::new(&settings, access).unwrap()
    }

    #[test]
    fn admin_and_app_identities_log_in_and_their_tokens_are_bearer_tokens() {
        use crate::access::registry::NewIdentity;
        let settings = AuthSettings {
            allow_anonymous: None,
            identities: vec![],
            acl: vec![],
            users: vec![],
            session_ttl_secs: 3600,
            cookie_secure: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let file = crate::access::IdentityFile::in_dir(dir.path());
        let add = |name: &str, role| {
            file.add(
                NewIdentity {
                    name: name.into(),
                    role,
                    queues: vec![],
                    password: Some(format!("{name}-pw")),
                    max_connections: None,
                    publish_rate: None,
                },
                1,
            )
            .unwrap()
        };
        let root_token = add("root", IdentityRole::Admin);
        add("ops", IdentityRole::App);
        let dev_token = add("dev", IdentityRole::Device);
        let access = Access::new(&settings, dir.path()).unwrap();
        let a = Auth::new(&settings, access.clone()).unwrap();
        assert!(!a.is_open(), "identities close the dashboard");
        assert_eq!(a.login("root", "root-pw").map(|l| l.1), Some(Role::Admin));
        let (viewer, role) = a.login("ops", "ops-pw").unwrap();
        assert_eq!(role, Role::Viewer);
        assert!(a.login("dev", "dev-pw").is_none(), "devices do not log in");
        assert!(a.login("root", "wrong").is_none());
        assert_eq!(
            a.session(&root_token),
            Some(Caller {
                user: Some("root".into()),
                role: Role::Admin
            })
        );
        assert!(a.session(&dev_token).is_none());
        // Revoking the identity ends its sessions.
        file.revoke("ops", 2).unwrap();
        access.reload_if_changed().unwrap();
        assert!(a.session(&viewer).is_none());
    }

    #[test]
    fn login_checks_passwords_and_roles() {
        let a = auth();
        assert!(!a.is_open());
        assert!(a.login("ada", "wrong").is_none());
        assert!(a.login("nobody", "secret").is_none());
        let (token, role) = a.login("vic", "look").unwrap();
        assert_eq!(role, Role::Viewer);
        assert_eq!(
            a.session(&token),
            Some(Caller {
                user: Some("vic".into()),
                role: Role::Viewer
            })
        );
        assert!(a.cookie(&token).contains("HttpOnly; SameSite=Strict"));
        assert!(a.cookie(&token).ends_with("; Secure"));
        a.logout(&token);
        assert!(a.session(&token).is_none());
        assert!(a.session("forged").is_none());
    }

    #[test]
    fn a_bad_hash_is_refused_at_start() {
        let settings = AuthSettings {
            allow_anonymous: None,
            identities: vec![],
            acl: vec![],
            users: vec![UserSettings {
                name: "x".into(),
                role: Role::Admin,
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$!!$!!".into(),
            }],
            session_ttl_secs: 3600,
            cookie_secure: false,
        };
        let (access, _dir) = open_access(&settings);
        let e = Auth::new(&settings, access).unwrap_err();
        assert!(e.to_string().contains("user `x`"));
    }
}
