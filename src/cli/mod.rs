//! The command-line client in the `swarmq` binary: `call`, `inspect`,
//! `purge`, `revoke` and `tail`, for people at a terminal and for scripts.
//!
//! It is a client like any other: tasks and revokes go over MQTT (so a
//! refusal is the broker's PUBACK, read as it is), lists and purges over the
//! HTTP API. It is part of the binary, not of the broker library, and uses
//! none of the broker's types.
//!
//! Exit codes, for scripts: [`Failure::code`].

mod call;
mod http;
mod inspect;
mod mqtt;
mod tail;

use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) use call::{CallArgs, RevokeArgs, call, revoke};
pub(crate) use inspect::{InspectArgs, PurgeArgs, inspect, purge};
pub(crate) use tail::{TailArgs, tail};

/// Where the broker is and who is asking: shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Target {
    /// The broker's MQTT address.
    #[arg(
        long,
        value_name = "URL",
        default_value = "mqtt://127.0.0.1:1883",
        env = "SWARMQ_URL"
    )]
    pub(crate) url: String,
    /// The broker's HTTP API.
    #[arg(
        long = "api",
        value_name = "URL",
        default_value = "http://127.0.0.1:8080",
        env = "SWARMQ_API"
    )]
    pub(crate) api: String,
    /// Identity name, when the broker requires one.
    #[arg(long, env = "SWARMQ_USERNAME")]
    pub(crate) username: Option<String>,
    /// The identity's token or password.
    #[arg(
        long,
        env = "SWARMQ_PASSWORD",
        hide_env_values = true,
        conflicts_with = "password_file"
    )]
    pub(crate) password: Option<String>,
    /// A file holding the token (a Docker secret such as /run/secrets/…).
    #[arg(long, env = "SWARMQ_PASSWORD_FILE", value_name = "FILE")]
    pub(crate) password_file: Option<PathBuf>,
}

impl Target {
    /// The password, given or read from its file.
    fn password(&self) -> Result<Option<String>, Failure> {
        match (&self.password, &self.password_file) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|p| Some(p.trim().to_string()))
                .map_err(|e| {
                    Failure::usage(format!(
                        "cannot read the password file {}: {e}",
                        f.display()
                    ))
                }),
            (None, None) => Ok(None),
        }
    }
}

/// Why a command did not do what was asked; each kind has its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    kind: FailureKind,
    message: String,
}

/// What kind of failure, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The task ran and did not succeed (failure, rejected, expired,
    /// revoked), or a revoke found the task already finished: 1.
    NotSucceeded,
    /// Arguments that make no sense (bad JSON, an invalid queue name): 2,
    /// as for arguments the parser refuses.
    Usage,
    /// The broker cannot be reached: 3.
    Unreachable,
    /// Credentials refused, or not permitted: 4.
    Denied,
    /// No such queue or task: 5.
    NotFound,
    /// No result within the time given: 6.
    TimedOut,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Usage, message)
    }

    /// The process exit status for this failure.
    pub(crate) fn code(&self) -> u8 {
        match self.kind {
            FailureKind::NotSucceeded => 1,
            FailureKind::Usage => 2,
            FailureKind::Unreachable => 3,
            FailureKind::Denied => 4,
            FailureKind::NotFound => 5,
            FailureKind::TimedOut => 6,
        }
    }
}

/// Runs a client command on a small runtime and turns its outcome into
/// the exit status, printing the failure on standard error.
pub(crate) fn run<F>(command: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), Failure>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("swarmq: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("swarmq: {}", f.message);
            ExitCode::from(f.code())
        }
    }
}

/// Reads a command-line argument as JSON, or as a string when it is not
/// JSON: `3` is a number, `[1,2]` a list, `Fables` the string "Fables".
pub(crate) fn json_arg(arg: &str) -> serde_json::Value {
    serde_json::from_str(arg).unwrap_or_else(|_| serde_json::Value::String(arg.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_are_json_when_they_parse_and_strings_otherwise() {
        assert_eq!(json_arg("3"), json!(3));
        assert_eq!(json_arg("[1,\"a\"]"), json!([1, "a"]));
        assert_eq!(json_arg("Fables"), json!("Fables"));
        assert_eq!(json_arg("\"3\""), json!("3"));
        assert_eq!(json_arg("{bad"), json!("{bad"));
    }
}
