//! [`Identity`]: who a client is, what role it has, and how it proves it.
//!
//! Machine tokens are 256 random bits, so a fast hash is as strong as a slow
//! one against guessing: they are kept as a BLAKE2s MAC under a random
//! per-identity key ([`TokenHash`]), checked in well under a microsecond and
//! compared in constant time. A reconnect storm of thousands of devices after
//! a restart then costs nothing. Passwords, which people choose, are kept as
//! argon2id PHC strings and checked on a blocking thread.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use blake2::Blake2sMac256;
use blake2::digest::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

/// Prefix of every machine token, so one is recognisable in a leaked log.
pub const TOKEN_PREFIX: &str = "sqt_";

/// Random bytes in a machine token.
const TOKEN_BYTES: usize = 32;

/// Random bytes of a token hash's key.
const KEY_BYTES: usize = 16;

/// What an identity may do; see the role table in docs/PROTOCOL.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityRole {
    /// Submits tasks to its queues and reads its own replies.
    Device,
    /// A device that also takes tasks from its queues and answers them.
    Worker,
    /// Submits to every queue and observes tasks; read-only on the dashboard.
    App,
    /// Anything, on MQTT and HTTP.
    Admin,
}

impl IdentityRole {
    /// The role's name, as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityRole::Device => "device",
            IdentityRole::Worker => "worker",
            IdentityRole::App => "app",
            IdentityRole::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<IdentityRole> {
        match s {
            "device" => Some(IdentityRole::Device),
            "worker" => Some(IdentityRole::Worker),
            "app" => Some(IdentityRole::App),
            "admin" => Some(IdentityRole::Admin),
            _ => None,
        }
    }
}

/// Where an identity was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `swarmq identity …`, the API or the dashboard: kept in the data directory.
    #[default]
    Registry,
    /// `[[auth.identities]]`: immutable while the broker runs.
    Config,
}

/// One identity, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// `[A-Za-z0-9_.-]{1,64}`: the MQTT username and client id prefix.
    pub name: String,
    /// What it may do.
    pub role: IdentityRole,
    /// Queues it may use (names or `prefix*`); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    /// Hash of its machine token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<TokenHash>,
    /// argon2id PHC string of its password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Created, microseconds since the epoch.
    pub created_at_us: u64,
    /// Revoked, microseconds since the epoch: it can no longer connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_us: Option<u64>,
    /// Most connections at once (none: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Most messages published per second (none: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_rate: Option<f64>,
    /// Where it was declared.
    #[serde(default)]
    pub origin: Origin,
}

impl Identity {
    /// True when it may use `queue`.
    pub fn may_use_queue(&self, queue: &str) -> bool {
        self.queues.is_empty() || self.queues.iter().any(|p| queue_pattern_matches(p, queue))
    }

    /// True when it is revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at_us.is_some()
    }

    /// A fingerprint of its credentials and standing: a live connection
    /// whose identity's fingerprint changed (revoked, rotated, removed) is
    /// closed.
    pub fn credential_fingerprint(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}",
            self.token_hash.as_ref().map(|t| &t.0),
            self.password_hash,
            self.revoked_at_us,
            self.role
        )
    }
}

/// True when a queue pattern (`name` or `prefix*`) matches `queue`.
pub fn queue_pattern_matches(pattern: &str, queue: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => queue.starts_with(prefix),
        None => pattern == queue,
    }
}

/// True when `name` is a valid identity name.
pub fn is_valid_name(name: &str) -> bool {
    swarmq_worker::wire::is_valid_queue_name(name)
}

/// True when `pattern` is a valid queue pattern.
pub fn is_valid_queue_pattern(pattern: &str) -> bool {
    let name = pattern.strip_suffix('*').unwrap_or(pattern);
    (name.is_empty() && pattern == "*") || swarmq_worker::wire::is_valid_queue_name(name)
}

/// A machine token's keyed hash: `blake2s$<key hex>$<mac hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenHash(String);

impl TokenHash {
    /// Hashes `token` under a fresh random key.
    ///
    /// # Errors
    ///
    /// Fails only when the system's random source does.
    pub fn new(token: &str) -> Result<TokenHash, getrandom::Error> {
        let mut key = [0u8; KEY_BYTES];
        getrandom::fill(&mut key)?;
        let mac = mac_of(&key, token);
        Ok(TokenHash(format!(
            "blake2s${}${}",
            hex(&key),
            hex(&mac.finalize().into_bytes())
        )))
    }

    /// Parses a stored hash.
    pub fn parse(s: &str) -> Option<TokenHash> {
        let (key, mac) = split_hash(s)?;
        (key.len() == KEY_BYTES && mac.len() == 32).then(|| TokenHash(s.to_string()))
    }

    /// True when `token` is the one hashed; constant time in the MAC.
    pub fn verify(&self, token: &str) -> bool {
        let Some((key, expected)) = split_hash(&self.0) else {
            return false;
        };
        mac_of(&key, token).verify_slice(&expected).is_ok()
    }

    /// The stored form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn mac_of(key: &[u8], token: &str) -> Blake2sMac256 {
    // A 16-byte key is within BLAKE2s's 32-byte limit: this cannot fail.
    let mut mac = <Blake2sMac256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("BLAKE2s takes keys up to 32 bytes"));
    mac.update(token.as_bytes());
    mac
}

fn split_hash(s: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let rest = s.strip_prefix("blake2s$")?;
    let (key, mac) = rest.split_once('$')?;
    Some((unhex(key)?, unhex(mac)?))
}

/// A new machine token: `sqt_` and 64 hex digits (256 random bits).
///
/// # Errors
///
/// Fails only when the system's random source does.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// Hashes a password with argon2id and a random salt, as a PHC string.
///
/// # Errors
///
/// Fails when the system's random source or argon2 does.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// True when `password` matches the PHC string `hash` (slow by design: call
/// it off the async threads).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// True when `hash` parses as a PHC string.
pub fn is_valid_password_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_against_its_hash_only() {
        let token = new_token().unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == 68);
        let hash = TokenHash::new(&token).unwrap();
        assert!(hash.verify(&token));
        assert!(!hash.verify("sqt_0000"));
        assert!(!hash.verify(&new_token().unwrap()));
        // The same token under another key hashes differently.
        assert_ne!(hash, TokenHash::new(&token).unwrap());
        assert_eq!(TokenHash::parse(hash.as_str()), Some(hash.clone()));
        assert_eq!(TokenHash::parse("blake2s$zz$00"), None);
        assert_eq!(TokenHash::parse("md5$00$00"), None);
    }

    #[test]
    fn passwords_use_argon2id() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "wrong"));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn queue_patterns() {
        assert!(queue_pattern_matches("img*", "img.resize"));
        assert!(!queue_pattern_matches("img*", "video"));
        assert!(queue_pattern_matches("mapper", "mapper"));
        assert!(!queue_pattern_matches("mapper", "mapper2"));
        assert!(is_valid_queue_pattern("img*"));
        assert!(is_valid_queue_pattern("*"));
        assert!(!is_valid_queue_pattern("a/b"));
        assert!(!is_valid_queue_pattern("a*b"));
    }
}
