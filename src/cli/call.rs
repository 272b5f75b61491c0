//! `swarmq call` and `swarmq revoke`: a task or a revoke over MQTT.

use std::time::Duration;

use serde_json::{Map, Value, json};
use swarmq_worker::wire::{self, TaskRequest};

use super::mqtt::Session;
use super::{Failure, FailureKind, Target, json_arg};

/// `swarmq call QUEUE TASK [ARGS…]`.
#[derive(Debug, clap::Args)]
pub(crate) struct CallArgs {
    /// The queue (`tasks/<queue>`).
    queue: String,
    /// The task name the worker dispatches on.
    task: String,
    /// Positional arguments, each read as JSON when it is JSON (`3`,
    /// `[1,2]`, `"3"`) and as a string otherwise (`Fables`).
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    /// Keyword arguments, a JSON object.
    #[arg(long, value_name = "JSON")]
    kwargs: Option<String>,
    /// Seconds before the task may run.
    #[arg(long, value_name = "SECS", conflicts_with = "eta")]
    countdown: Option<f64>,
    /// RFC 3339 time before which the task does not run.
    #[arg(long, value_name = "TIME")]
    eta: Option<String>,
    /// Seconds after which a task that has not started expires.
    #[arg(long, value_name = "SECS")]
    expires: Option<f64>,
    /// 0 (lowest, the default) to 9.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    priority: Option<u8>,
    /// Deliveries before the task fails for good.
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// The task id (also its idempotency key); generated when not given.
    #[arg(long)]
    id: Option<String>,
    /// Wait for the result and print it (without: print the task id once
    /// the broker has stored the task).
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (exit 6; the task may still run).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// With --wait: print the whole result object, not only the value.
    #[arg(long)]
    json: bool,
    /// With --wait: print the worker's progress reports on standard error.
    #[arg(long)]
    progress: bool,
    #[command(flatten)]
    target: Target,
}

/// Submits the task; with `--wait`, prints its result (exit 0) or its
/// error (exit 1).
pub(crate) async fn call(a: CallArgs) -> Result<(), Failure> {
    if !wire::is_valid_queue_name(&a.queue) {
        return Err(Failure::usage(format!(
            "invalid queue name `{}`: 1 to 64 of A-Z a-z 0-9 _ . -",
            a.queue
        )));
    }
    let kwargs = match &a.kwargs {
        None => Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(Failure::usage(format!(
                    "--kwargs must be a JSON object, not `{text}`"
                )));
            }
        },
    };
    let id =
        a.id.clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string());
    let request = TaskRequest {
        task: Some(a.task.clone()),
        args: a.args.iter().map(|s| json_arg(s)).collect(),
        kwargs,
        id: Some(id.clone()),
        countdown: a.countdown,
        eta: a.eta.clone(),
        expires: a.expires.map(Value::from),
        priority: a.priority,
        retry: a.max_attempts.map(|n| wire::RetryOptions {
            max_attempts: Some(n),
            ..wire::RetryOptions::default()
        }),
        progress: (a.wait && a.progress).then_some(true),
        ..TaskRequest::default()
    };
    let payload = serde_json::to_vec(&request).map_err(|e| Failure::usage(e.to_string()))?;
    let mut session = Session::connect(&a.target).await?;
    session
        .request(&wire::task_topic(&a.queue), payload, &id)
        .await?;
    if !a.wait {
        println!("{id}");
        session.close().await;
        return Ok(());
    }
    let show_progress = a.progress;
    let answer = tokio::time::timeout(
        a.timeout,
        session.answer(&id, |p| {
            if show_progress {
                eprintln!("progress: {p}");
            }
        }),
    )
    .await;
    session.close().await;
    let result = match answer {
        Ok(r) => r?,
        Err(_) => {
            return Err(Failure::new(
                FailureKind::TimedOut,
                format!(
                    "no result for task {id} within {} (it may still run: swarmq inspect tasks, or GET /api/v1/tasks/{id})",
                    humantime::format_duration(a.timeout)
                ),
            ));
        }
    };
    print_result(&id, &result, a.json)
}

/// Prints a task's result: the value on success (exit 0), the status and
/// error on standard error otherwise (exit 1). `whole` prints the object.
fn print_result(id: &str, result: &Value, whole: bool) -> Result<(), Failure> {
    let status = result.get("status").and_then(Value::as_str).unwrap_or("");
    if whole {
        println!("{result}");
    } else if status == "success" {
        println!("{}", result.get("result").unwrap_or(&Value::Null));
    }
    if status == "success" {
        return Ok(());
    }
    let error = result.get("error").and_then(Value::as_str).unwrap_or("");
    Err(Failure::new(
        FailureKind::NotSucceeded,
        format!("task {id} {status}: {error}"),
    ))
}

/// `swarmq revoke ID`.
#[derive(Debug, clap::Args)]
pub(crate) struct RevokeArgs {
    /// The task's (or workflow's) id.
    id: String,
    /// How long to wait for the broker's answer.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    target: Target,
}

/// Revokes a task or a workflow over `swarmq/revoke` and prints the
/// outcome: `revoked` (exit 0), `finished` (exit 1: too late), `unknown`
/// (exit 5), `denied` (exit 4).
pub(crate) async fn revoke(a: RevokeArgs) -> Result<(), Failure> {
    let correlation = format!("revoke-{}", ulid::Ulid::new());
    let payload = json!({ "id": a.id }).to_string().into_bytes();
    let mut session = Session::connect(&a.target).await?;
    session
        .request(wire::REVOKE_TOPIC, payload, &correlation)
        .await?;
    let answer = tokio::time::timeout(a.timeout, session.answer(&correlation, |_| {})).await;
    session.close().await;
    let answer = match answer {
        Ok(r) => r?,
        Err(_) => {
            return Err(Failure::new(
                FailureKind::TimedOut,
                format!("no answer to the revoke of {} within {:?}", a.id, a.timeout),
            ));
        }
    };
    let status = answer.get("status").and_then(Value::as_str).unwrap_or("");
    let detail = answer.get("error").and_then(Value::as_str);
    let line = match detail {
        Some(d) => format!("{} {status}: {d}", a.id),
        None => format!("{} {status}", a.id),
    };
    let kind = match status {
        "revoked" => {
            println!("{line}");
            return Ok(());
        }
        "finished" => FailureKind::NotSucceeded,
        "unknown" => FailureKind::NotFound,
        "denied" => FailureKind::Denied,
        _ => FailureKind::NotSucceeded,
    };
    println!("{line}");
    Err(Failure::new(
        kind,
        format!("cannot revoke {}: {status}", a.id),
    ))
}
