//! [`Auth`]: dashboard and API users, their roles, and login sessions.
//!
//! Passwords are stored as argon2id PHC strings (`swarmq hash-password`
//! makes one) and checked on a blocking thread, since argon2 is slow by
//! design. A login gives an opaque random token, sent back either as the
//! `swarmq_session` cookie (HttpOnly, SameSite=Strict, so other sites cannot
//! ride it) or as `Authorization: Bearer <token>` for scripts. Sessions live
//! in memory: a broker restart logs everyone out, and nothing secret is on disk.
//!
//! With no users configured, everything is open and every caller is an admin
//! (the development profile); the dashboard says so on every page.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use dashmap::DashMap;

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
    pub fn new(settings: &AuthSettings) -> Result<Auth, AuthError> {
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
        let decoy_hash = if users.is_empty() {
            String::new()
        } else {
            hash_password("decoy").unwrap_or_default()
        };
        Ok(Auth {
            users,
            sessions: DashMap::new(),
            ttl: Duration::from_secs(settings.session_ttl_secs),
            cookie_secure: settings.cookie_secure,
            decoy_hash,
            checks: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
        })
    }

    /// True when no users are configured: anyone may do anything.
    pub fn is_open(&self) -> bool {
        self.users.is_empty()
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
        let (hash, role) = match self.users.get(name) {
            Some(u) => (u.hash.as_str(), Some(u.role)),
            None => (self.decoy_hash.as_str(), None),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
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
            },
        );
        Some((token, role))
    }

    /// The caller a token belongs to, if its session is live.
    pub fn session(&self, token: &str) -> Option<Caller> {
        let s = self.sessions.get(token)?;
        if s.expires <= Instant::now() {
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

/// Hashes `password` as an argon2id PHC string with a random salt.
///
/// # Errors
///
/// Fails only when the OS has no randomness to give.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

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

    fn auth() -> Auth {
        Auth::new(&AuthSettings {
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
        })
        .unwrap()
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
        let e = Auth::new(&AuthSettings {
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
        })
        .unwrap_err();
        assert!(e.to_string().contains("user `x`"));
    }
}
