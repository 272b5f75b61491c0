//! [`Settings`]: the typed configuration tree, its layered loading and validation.
//!
//! `config/default.toml` is compiled in and is the only place default values
//! live. [`Settings::load`] stacks, lowest first: that file, an optional file
//! given with `--config`, environment variables `SWARMQ__SECTION__KEY`, and
//! overrides from command-line flags. The environment is passed in as a map, so
//! tests never touch the process environment.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

use crate::queue::SyncMode;

/// The built-in default configuration, commented.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// Prefix of environment variables (followed by `__`).
pub const ENV_PREFIX: &str = "SWARMQ";

/// Everything swarmq can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The embedded MQTT broker.
    pub mqtt: MqttSettings,
    /// The HTTP endpoint.
    pub http: HttpSettings,
    /// The durable queue store.
    pub store: StoreSettings,
    /// Defaults for tasks and queues.
    pub tasks: TaskSettings,
    /// Declared queues, by name.
    #[serde(default)]
    pub queues: BTreeMap<String, QueueSettings>,
    /// Shutdown behaviour.
    pub shutdown: ShutdownSettings,
    /// Task history, results and the metric series.
    pub history: HistorySettings,
    /// Dashboard and API users.
    pub auth: AuthSettings,
    /// Declared schedules.
    #[serde(default)]
    pub schedules: Vec<ScheduleSettings>,
    /// Workflow limits.
    pub workflows: WorkflowSettings,
}

/// `[workflows]`: the bounds of one workflow submitted to `swarmq/workflows`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSettings {
    /// Largest submission, in bytes (at most `mqtt.max_packet_size_bytes`).
    pub max_bytes: usize,
    /// Most member tasks (chunk tasks count one each).
    pub max_members: usize,
    /// Deepest nesting of chain, group, chord and chunks.
    pub max_depth: usize,
}

/// `[[schedules]]`: a task submitted on a fixed interval or a cron expression.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Unique name; each firing's task id is `<name>@<due time>`.
    pub name: String,
    /// Queue each firing goes to.
    pub queue: String,
    /// Task name (default: the queue name).
    #[serde(default)]
    pub task: Option<String>,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<serde_json::Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: serde_json::Map<String, serde_json::Value>,
    /// Topic for each firing's result.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// An interval such as `"30s"` or `"1h"` (whole seconds).
    #[serde(default)]
    pub every: Option<String>,
    /// A cron expression of 5 or 6 fields (seconds first).
    #[serde(default)]
    pub cron: Option<String>,
    /// The IANA time zone of `cron` (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
}

/// `[history]`: the task history and result store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    /// Keep task records on disk (the dashboard's Tasks page, result fetches).
    pub enabled: bool,
    /// Most tasks kept; the oldest go first.
    pub max_tasks: u64,
    /// Tasks submitted longer ago than this are removed, in seconds.
    pub max_age_secs: u64,
    /// How long the per-second metric series is kept on disk, in seconds.
    pub series_retention_secs: u64,
}

/// `[auth]`: identities, access rules, and dashboard and API users.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Let clients without a username connect; unset, they may while no
    /// identity exists (the development profile).
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// Identities declared here rather than with `swarmq identity`.
    #[serde(default)]
    pub identities: Vec<IdentitySettings>,
    /// Access rules, checked before the role templates.
    #[serde(default)]
    pub acl: Vec<AclSettings>,
    /// Users; none means open access (the development profile).
    #[serde(default)]
    pub users: Vec<UserSettings>,
    /// Lifetime of a login session, in seconds.
    pub session_ttl_secs: u64,
    /// Mark the session cookie `Secure` (set when served behind HTTPS).
    pub cookie_secure: bool,
}

/// `[[auth.identities]]`: an identity declared in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    /// Name: the MQTT username and client id prefix.
    pub name: String,
    /// `device`, `worker`, `app` or `admin`.
    pub role: String,
    /// Queues it may use (names or `prefix*`); empty means all.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Hash of its token, from `swarmq identity hash-token`.
    #[serde(default)]
    pub token_hash: Option<String>,
    /// A file holding its token (a Docker secret), hashed at start.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding its token (docker-compose's env
    /// file), hashed at start.
    #[serde(default)]
    pub token_env: Option<String>,
    /// argon2id PHC string of its password, from `swarmq hash-password`.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Most connections at once.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Most messages published per second.
    #[serde(default)]
    pub publish_rate: Option<f64>,
}

/// `[[auth.acl]]`: one access rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclSettings {
    /// `allow` or `deny`.
    pub permission: String,
    /// `publish`, `subscribe` or `all`.
    pub action: String,
    /// A topic filter; `%u` is the identity's name, `%c` the client id.
    pub topic: String,
    /// Applies to this identity only.
    #[serde(default)]
    pub identity: Option<String>,
    /// Applies to this role only.
    #[serde(default)]
    pub role: Option<String>,
    /// MQTT 5 reason code of its denials: `not_authorized` (0x87, the
    /// default) or `unspecified_error` (0x80).
    #[serde(default)]
    pub reason_code: Option<String>,
}

/// `[[auth.users]]`: one dashboard/API user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSettings {
    /// Login name.
    pub name: String,
    /// `viewer` (read-only) or `admin`.
    pub role: Role,
    /// Argon2 PHC string, from `swarmq hash-password`.
    pub password_hash: String,
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything, change nothing.
    Viewer,
    /// Also revoke, retry and purge.
    Admin,
}

/// `[mqtt]`: the embedded broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSettings {
    /// Listener address.
    pub listen: SocketAddr,
    /// Largest MQTT packet accepted.
    pub max_packet_size_bytes: u32,
    /// In-flight window per client, and the announced Receive Maximum.
    pub max_inflight: u16,
    /// Messages queued per session beyond the in-flight window.
    pub max_mqueue_len: usize,
    /// Bytes of messages waiting for one client; a client past it is
    /// disconnected (MQTT 5: Quota exceeded).
    pub max_mqueue_bytes: usize,
    /// Most connections at once.
    pub max_connections: usize,
    /// Session expiry for persistent sessions that ask for none.
    pub session_expiry_interval_secs: u64,
    /// Expiry of undelivered ordinary messages (0 = none).
    pub message_expiry_interval_secs: u64,
    /// TCP_NODELAY on accepted sockets.
    pub tcp_nodelay: bool,
    /// Longest keep-alive a client may ask for, in seconds.
    pub max_keep_alive_secs: u16,
    /// MQTT 5 topic aliases per connection, each way.
    pub max_topic_aliases: u16,
    /// A connection that has not completed its CONNECT (and TLS handshake)
    /// within this time is closed, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Address of the TLS listener, served when a certificate is configured.
    pub tls_listen: SocketAddr,
    /// PEM certificate chain of the TLS listener (server certificate first).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the TLS listener.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates; a verified
    /// certificate's subject CN names the identity.
    #[serde(default)]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Refuse TLS clients without a certificate signed by `tls_client_ca_file`.
    #[serde(default)]
    pub tls_require_client_cert: bool,
}

impl MqttSettings {
    /// The TLS listener's certificate and key, when one is configured.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        }
    }
}

/// `[http]`: the HTTP endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Listener address.
    pub listen: SocketAddr,
    /// Most HTTP connections at once; more are closed as they arrive.
    pub max_connections: usize,
    /// A request whose headers have not all arrived by then is dropped, in milliseconds.
    pub header_timeout_ms: u64,
    /// A request body that has not all arrived by then is answered 408, in milliseconds.
    pub body_timeout_ms: u64,
}

/// `[store]`: the durable queue store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Durability of each write.
    pub sync: SyncMode,
}

/// `[tasks]`: task and queue defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSettings {
    /// Capacity of a worker that announces none.
    pub default_capacity: u32,
    /// Most capacity any worker is given, whatever it announces.
    pub max_capacity: u32,
    /// Largest task payload.
    pub max_payload_bytes: usize,
    /// Create queues on first use.
    pub auto_create_queues: bool,
    /// Default `max_length` of every queue.
    pub max_length: usize,
    /// Default `lease_timeout_ms` of every queue.
    pub lease_timeout_ms: u64,
    /// Default `max_attempts` of every queue.
    pub max_attempts: u32,
    /// Default `backoff_ms` of every queue.
    pub backoff_ms: u64,
    /// Default `backoff_max_ms` of every queue.
    pub backoff_max_ms: u64,
    /// Default `jitter` of every queue.
    pub jitter: bool,
    /// Default `max_per_worker` of every queue.
    pub max_per_worker: u32,
    /// Default `max_in_flight` of every queue (0 = no cap).
    pub max_in_flight: u32,
    /// Default `rate_limit` of every queue (`N/s`, `N/m`, `N/h`; empty = none).
    pub rate_limit: String,
    /// Completed task ids remembered for deduplication.
    pub dedupe_window: usize,
    /// Dead letters kept per queue.
    pub max_dead_letters: usize,
    /// QoS of task messages to workers (0 or 1).
    pub delivery_qos: u8,
    /// Disconnects holding tasks within `flap_window_secs` that quarantine
    /// a worker (0: never).
    pub flap_threshold: u32,
    /// The window those disconnects are counted in.
    pub flap_window_secs: u64,
    /// The first quarantine; doubled at each further one.
    pub quarantine_secs: u64,
    /// The longest quarantine.
    pub quarantine_max_secs: u64,
}

/// `[queues.<name>]`: overrides for one declared queue; each falls back to
/// the `[tasks]` key of the same name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Most tasks held (scheduled + waiting + in flight).
    pub max_length: Option<usize>,
    /// Lease of a delivered task, in milliseconds.
    pub lease_timeout_ms: Option<u64>,
    /// Deliveries before a task fails for good.
    pub max_attempts: Option<u32>,
    /// Delay before the attempt after the first failed one, in milliseconds.
    pub backoff_ms: Option<u64>,
    /// Longest delay between attempts, in milliseconds.
    pub backoff_max_ms: Option<u64>,
    /// Spread each delay over its upper half.
    pub jitter: Option<bool>,
    /// Most unfinished tasks of this queue per worker (0 = no cap).
    pub max_per_worker: Option<u32>,
    /// Most running tasks of this queue across all workers (0 = no cap).
    pub max_in_flight: Option<u32>,
    /// Most task starts of this queue per period across all workers:
    /// `N/s`, `N/m` or `N/h` (empty = none).
    pub rate_limit: Option<String>,
}

/// The limits of one queue after defaults are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most tasks held.
    pub max_length: usize,
    /// Lease of a delivered task, in milliseconds.
    pub lease_timeout_ms: u64,
    /// Deliveries before a task fails for good.
    pub max_attempts: u32,
    /// First backoff, in milliseconds.
    pub backoff_ms: u64,
    /// Longest backoff, in milliseconds.
    pub backoff_max_ms: u64,
    /// Jittered backoff.
    pub jitter: bool,
    /// Most unfinished tasks of this queue per worker (0 = no cap).
    pub max_per_worker: u32,
    /// Most running tasks across all workers (0 = no cap).
    pub max_in_flight: u32,
    /// Most starts per period, as written (empty = none).
    pub rate_limit: String,
}

/// `[shutdown]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    /// Longest wait for in-flight tasks on shutdown.
    pub grace_period_ms: u64,
}

/// A configuration that could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A source could not be read or parsed, or a value has the wrong type.
    #[error("cannot load configuration")]
    Load(#[from] config::ConfigError),
    /// A value is out of range.
    #[error("invalid setting `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the offending key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where settings come from, besides the built-in defaults.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A TOML file given with `--config`.
    pub file: Option<PathBuf>,
    /// Environment variables; only those starting with `SWARMQ__` are read.
    pub env: HashMap<String, String>,
    /// Final overrides (command-line flags), as dotted key → value.
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// Sources with the process environment and no file or overrides.
    pub fn from_process_env() -> Sources {
        Sources {
            env: std::env::vars().collect(),
            ..Sources::default()
        }
    }
}

impl Settings {
    /// Loads and validates settings from `sources` layered on the defaults.
    ///
    /// # Errors
    ///
    /// Returns [`SettingsError`] naming the file, key or value at fault.
    pub fn load(sources: &Sources) -> Result<Settings, SettingsError> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_CONFIG, FileFormat::Toml));
        if let Some(path) = &sources.file {
            builder = builder.add_source(File::from(path.as_path()).required(true));
        }
        let env: HashMap<String, String> = sources
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("SWARMQ__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        for (key, value) in &sources.overrides {
            builder = builder.set_override(key.as_str(), value.as_str())?;
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Loads the built-in defaults alone.
    ///
    /// # Errors
    ///
    /// Only if the built-in file is broken, which a unit test rules out.
    pub fn defaults() -> Result<Settings, SettingsError> {
        Settings::load(&Sources::default())
    }

    /// Checks ranges and names that the types alone do not.
    ///
    /// # Errors
    ///
    /// Returns [`SettingsError::Invalid`] with the key path.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: &str, reason: &str| {
            Err(SettingsError::Invalid {
                key: key.into(),
                reason: reason.into(),
            })
        };
        if self.mqtt.max_inflight == 0 {
            return invalid("mqtt.max_inflight", "must be at least 1");
        }
        match (&self.mqtt.tls_cert_file, &self.mqtt.tls_key_file) {
            (Some(_), None) => {
                return invalid("mqtt.tls_key_file", "is required with mqtt.tls_cert_file");
            }
            (None, Some(_)) => {
                return invalid("mqtt.tls_cert_file", "is required with mqtt.tls_key_file");
            }
            _ => {}
        }
        if self.mqtt.connect_timeout_ms < 100 {
            return invalid("mqtt.connect_timeout_ms", "must be at least 100");
        }
        if self.mqtt.max_packet_size_bytes < 1024 {
            return invalid("mqtt.max_packet_size_bytes", "must be at least 1024");
        }
        if self.tasks.default_capacity == 0 || self.tasks.default_capacity > 65_535 {
            return invalid("tasks.default_capacity", "must be between 1 and 65535");
        }
        if self.tasks.max_capacity < self.tasks.default_capacity || self.tasks.max_capacity > 65_535
        {
            return invalid(
                "tasks.max_capacity",
                "must be between tasks.default_capacity and 65535",
            );
        }
        if self.tasks.max_payload_bytes == 0
            || self.tasks.max_payload_bytes > self.mqtt.max_packet_size_bytes as usize
        {
            return invalid(
                "tasks.max_payload_bytes",
                "must be between 1 and mqtt.max_packet_size_bytes",
            );
        }
        if self.workflows.max_bytes == 0
            || self.workflows.max_bytes > self.mqtt.max_packet_size_bytes as usize
        {
            return invalid(
                "workflows.max_bytes",
                "must be between 1 and mqtt.max_packet_size_bytes",
            );
        }
        if self.workflows.max_members == 0 {
            return invalid("workflows.max_members", "must be at least 1");
        }
        if !(1..=256).contains(&self.workflows.max_depth) {
            return invalid("workflows.max_depth", "must be between 1 and 256");
        }
        if self.tasks.delivery_qos > 1 {
            return invalid("tasks.delivery_qos", "must be 0 or 1");
        }
        check_limits("tasks", &self.queue_limits_of(&QueueSettings::default()))?;
        for (name, q) in &self.queues {
            if !swarmq_worker::wire::is_valid_queue_name(name) {
                return invalid(
                    &format!("queues.{name}"),
                    "a queue name is 1 to 64 of A-Z a-z 0-9 _ . -",
                );
            }
            check_limits(&format!("queues.{name}"), &self.queue_limits_of(q))?;
        }
        if self.store.data_dir.as_os_str().is_empty() {
            return invalid("store.data_dir", "must not be empty");
        }
        if self.history.max_tasks == 0 {
            return invalid("history.max_tasks", "must be at least 1");
        }
        if self.mqtt.tls_require_client_cert && self.mqtt.tls_client_ca_file.is_none() {
            return invalid(
                "mqtt.tls_require_client_cert",
                "needs mqtt.tls_client_ca_file, the CA that signs client certificates",
            );
        }
        if self.auth.session_ttl_secs < 60 {
            return invalid("auth.session_ttl_secs", "must be at least 60");
        }
        self.schedule_specs()?;
        let mut names = std::collections::HashSet::new();
        for (i, u) in self.auth.users.iter().enumerate() {
            if u.name.is_empty() || !names.insert(u.name.as_str()) {
                return invalid(
                    &format!("auth.users[{i}].name"),
                    "must be non-empty and unique",
                );
            }
            if !u.password_hash.starts_with("$argon2") {
                return invalid(
                    &format!("auth.users[{i}].password_hash"),
                    "must be an argon2 hash from `swarmq hash-password`",
                );
            }
        }
        Ok(())
    }

    /// Limits for queue `name`: its declared overrides on top of `[tasks]`.
    pub fn queue_limits(&self, name: &str) -> QueueLimits {
        match self.queues.get(name) {
            Some(q) => self.queue_limits_of(q),
            None => self.default_queue_limits(),
        }
    }

    /// Limits of a queue that is not declared: `[tasks]` alone.
    pub fn default_queue_limits(&self) -> QueueLimits {
        self.queue_limits_of(&QueueSettings::default())
    }

    fn queue_limits_of(&self, q: &QueueSettings) -> QueueLimits {
        let d = &self.tasks;
        QueueLimits {
            max_length: q.max_length.unwrap_or(d.max_length),
            lease_timeout_ms: q.lease_timeout_ms.unwrap_or(d.lease_timeout_ms),
            max_attempts: q.max_attempts.unwrap_or(d.max_attempts),
            backoff_ms: q.backoff_ms.unwrap_or(d.backoff_ms),
            backoff_max_ms: q.backoff_max_ms.unwrap_or(d.backoff_max_ms),
            jitter: q.jitter.unwrap_or(d.jitter),
            max_per_worker: q.max_per_worker.unwrap_or(d.max_per_worker),
            max_in_flight: q.max_in_flight.unwrap_or(d.max_in_flight),
            rate_limit: q.rate_limit.clone().unwrap_or_else(|| d.rate_limit.clone()),
        }
    }

    /// The declared schedules as the engine takes them.
    ///
    /// # Errors
    ///
    /// [`SettingsError::Invalid`] naming `schedules[i]` and what is wrong
    /// (neither or both of `every` and `cron`, a cron expression that does
    /// not parse, an unknown time zone, a duplicate name).
    pub fn schedule_specs(&self) -> Result<Vec<crate::engine::ScheduleSpec>, SettingsError> {
        use crate::engine::{ScheduleSpec, When};
        let mut names = std::collections::HashSet::new();
        let mut specs = Vec::new();
        for (i, s) in self.schedules.iter().enumerate() {
            let invalid = |reason: String| SettingsError::Invalid {
                key: format!("schedules[{i}]"),
                reason,
            };
            let when = match (&s.every, &s.cron) {
                (Some(e), None) => When::Every(e.clone()),
                (None, Some(c)) => When::Cron(c.clone()),
                _ => {
                    return Err(invalid(format!(
                        "schedule `{}` needs one of `every` and `cron`",
                        s.name
                    )));
                }
            };
            if !names.insert(s.name.as_str()) {
                return Err(invalid(format!("schedule name `{}` is used twice", s.name)));
            }
            let spec = ScheduleSpec {
                name: s.name.clone(),
                queue: s.queue.clone(),
                task: s.task.clone().unwrap_or_else(|| s.queue.clone()),
                args: s.args.clone(),
                kwargs: s.kwargs.clone(),
                reply_to: s.reply_to.clone(),
                when,
                timezone: s.timezone.clone().unwrap_or_else(|| "UTC".into()),
            };
            spec.check().map_err(|e| invalid(e.to_string()))?;
            specs.push(spec);
        }
        Ok(specs)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.store.data_dir
    }
}

fn check_limits(section: &str, l: &QueueLimits) -> Result<(), SettingsError> {
    let invalid = |key: &str, reason: &str| {
        Err(SettingsError::Invalid {
            key: format!("{section}.{key}"),
            reason: reason.into(),
        })
    };
    if l.max_length == 0 {
        return invalid("max_length", "must be at least 1");
    }
    if l.lease_timeout_ms < 100 {
        return invalid("lease_timeout_ms", "must be at least 100");
    }
    if l.max_attempts == 0 || l.max_attempts > 100 {
        return invalid("max_attempts", "must be between 1 and 100");
    }
    if l.backoff_ms > l.backoff_max_ms {
        return invalid("backoff_ms", "must not exceed backoff_max_ms");
    }
    if !l.rate_limit.is_empty() && crate::engine::RateLimit::parse(&l.rate_limit).is_none() {
        return invalid(
            "rate_limit",
            &format!(
                "`{}` is not a rate: write N/s, N/m or N/h with N at least 1",
                l.rate_limit
            ),
        );
    }
    if l.backoff_max_ms > 31_536_000_000 {
        return invalid("backoff_max_ms", "must be at most one year (31536000000)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_defaults_load_and_validate() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.mqtt.listen, "127.0.0.1:1883".parse().unwrap());
        assert_eq!(s.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.store.data_dir, PathBuf::from("./data"));
        assert_eq!(s.tasks.default_capacity, 1);
        assert_eq!(s.auth.allow_anonymous, None);
        assert!(s.queues.is_empty());
    }

    #[test]
    fn env_overrides_defaults_and_declares_queues() {
        let env = HashMap::from([
            ("SWARMQ__MQTT__LISTEN".to_string(), "0.0.0.0:0".to_string()),
            ("SWARMQ__TASKS__DEFAULT_CAPACITY".into(), "4".into()),
            ("SWARMQ__QUEUES__WORD_COUNT__MAX_LENGTH".into(), "10".into()),
            ("UNRELATED".into(), "x".into()),
        ]);
        let s = Settings::load(&Sources {
            env,
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(s.mqtt.listen.port(), 0);
        assert_eq!(s.tasks.default_capacity, 4);
        assert_eq!(s.queue_limits("word_count").max_length, 10);
        assert_eq!(
            s.queue_limits("word_count").max_attempts,
            s.tasks.max_attempts
        );
        assert_eq!(s.queue_limits("other").max_length, s.tasks.max_length);
        assert_eq!(s.queue_limits("other").backoff_ms, 1000);
    }

    #[test]
    fn file_then_overrides_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swarmq.toml");
        std::fs::write(
            &path,
            "[http]\nlisten = \"127.0.0.1:9999\"\n[queues.q1]\nmax_attempts = 2\n",
        )
        .unwrap();
        let s = Settings::load(&Sources {
            file: Some(path),
            env: HashMap::from([("SWARMQ__HTTP__LISTEN".into(), "127.0.0.1:7777".into())]),
            overrides: vec![("store.data_dir".into(), "/tmp/x".into())],
        })
        .unwrap();
        assert_eq!(s.http.listen.port(), 7777);
        assert_eq!(s.queue_limits("q1").max_attempts, 2);
        assert_eq!(s.store.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn invalid_values_name_their_key() {
        let bad = |k: &str, v: &str| {
            Settings::load(&Sources {
                overrides: vec![(k.into(), v.into())],
                ..Sources::default()
            })
            .unwrap_err()
            .to_string()
        };
        assert!(bad("tasks.default_capacity", "0").contains("tasks.default_capacity"));
        assert!(bad("tasks.max_attempts", "0").contains("tasks.max_attempts"));
        assert!(bad("tasks.max_attempts", "101").contains("tasks.max_attempts"));
        assert!(bad("tasks.backoff_ms", "700000").contains("tasks.backoff_ms"));
        assert!(bad("tasks.rate_limit", "10/d").contains("tasks.rate_limit"));
        assert!(bad("queues.q.rate_limit", "fast").contains("queues.q.rate_limit"));
        assert!(bad("tasks.delivery_qos", "2").contains("tasks.delivery_qos"));
        assert!(bad("mqtt.listen", "nonsense").contains("cannot load"));
        let e = Settings::load(&Sources {
            env: HashMap::from([("SWARMQ__QUEUES__BAD$NAME__MAX_LENGTH".into(), "1".into())]),
            ..Sources::default()
        });
        assert!(e.is_err());
    }

    #[test]
    fn schedules_are_checked_at_start_naming_the_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let load = |toml: &str| {
            let path = dir.path().join("s.toml");
            std::fs::write(&path, toml).unwrap();
            Settings::load(&Sources {
                file: Some(path),
                ..Sources::default()
            })
        };
        let ok = load(
            "[[schedules]]\nname = \"tick\"\nqueue = \"q\"\nevery = \"10s\"\nargs = [1, \"a\"]\n",
        )
        .unwrap();
        let specs = ok.schedule_specs().unwrap();
        assert_eq!(specs[0].task, "q");
        assert_eq!(
            specs[0].args,
            vec![serde_json::json!(1), serde_json::json!("a")]
        );
        let e = load("[[schedules]]\nname = \"nightly\"\nqueue = \"q\"\ncron = \"0 25 * * *\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("schedules[0]") && e.contains("`0 25 * * *` does not parse"),
            "{e}"
        );
        let e = load("[[schedules]]\nname = \"x\"\nqueue = \"q\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs one of `every` and `cron`"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.toml");
        std::fs::write(&path, "[mqtt]\nlisten_typo = 1\n").unwrap();
        assert!(
            Settings::load(&Sources {
                file: Some(path),
                ..Sources::default()
            })
            .is_err()
        );
    }
}
