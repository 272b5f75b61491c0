//! `swarmq inspect` and `swarmq purge`: the API's lists as tables, and a
//! queue emptied.

use std::io::IsTerminal as _;

use serde_json::Value;
use swarmq_worker::wire;

use super::http::Api;
use super::{Failure, FailureKind, Target};

/// What `swarmq inspect` lists.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum What {
    /// Every queue: waiting, scheduled, running, dead letters, consumers.
    Queues,
    /// Every worker seen: online, queues, capacity, tasks in hand, done.
    Workers,
    /// Recent tasks, newest first (from the history).
    Tasks,
}

/// `swarmq inspect queues|workers|tasks`.
#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// What to list.
    #[arg(value_enum)]
    what: What,
    /// Tasks: only those with this status (queued, running, success, failure, …).
    #[arg(long)]
    status: Option<String>,
    /// Tasks: only those of this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Tasks: how many at most.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

/// Prints the list asked for as a table (or JSON).
pub(crate) async fn inspect(a: InspectArgs) -> Result<(), Failure> {
    let api = Api::connect(&a.target).await?;
    match a.what {
        What::Queues => {
            let v = api.get("/queues").await?;
            if a.json {
                println!("{v}");
                return Ok(());
            }
            let rows = list(&v, "queues")
                .map(|q| {
                    vec![
                        text(&q["name"]),
                        text(&q["waiting"]),
                        text(&q["scheduled"]),
                        text(&q["in_flight"]),
                        text(&q["dead_letters"]),
                        text(&q["consumer_count"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "QUEUE",
                    "WAITING",
                    "SCHEDULED",
                    "RUNNING",
                    "DEAD",
                    "WORKERS",
                ],
                rows,
            );
        }
        What::Workers => {
            let v = api.get("/workers").await?;
            if a.json {
                println!("{v}");
                return Ok(());
            }
            let rows = list(&v, "workers")
                .map(|w| {
                    let queues = w["queues"]
                        .as_array()
                        .map(|q| q.iter().map(text).collect::<Vec<_>>().join(","))
                        .unwrap_or_default();
                    vec![
                        text(&w["id"]),
                        if w["online"].as_bool() == Some(true) {
                            "online".into()
                        } else {
                            "offline".into()
                        },
                        queues,
                        text(&w["capacity"]),
                        text(&w["in_flight"]),
                        text(&w["completed"]),
                        text(&w["failed"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "WORKER", "STATE", "QUEUES", "CAPACITY", "RUNNING", "DONE", "FAILED",
                ],
                rows,
            );
        }
        What::Tasks => {
            let mut query = format!("/tasks?limit={}", a.limit);
            if let Some(q) = &a.queue {
                if !wire::is_valid_queue_name(q) {
                    return Err(Failure::usage(format!("invalid queue name `{q}`")));
                }
                // An unknown queue is an error, not an empty list.
                api.get(&format!("/queues/{q}")).await?;
                query.push_str(&format!("&queue={q}"));
            }
            if let Some(s) = &a.status {
                query.push_str(&format!("&status={}", encode(s)));
            }
            let v = api.get(&query).await?;
            if a.json {
                println!("{v}");
                return Ok(());
            }
            let rows = list(&v, "tasks")
                .map(|t| {
                    vec![
                        text(&t["id"]),
                        text(&t["queue"]),
                        text(&t["task"]),
                        text(&t["status"]),
                        text(&t["attempts"]),
                        text(&t["worker"]),
                        time(&t["submitted_at_us"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "QUEUE",
                    "TASK",
                    "STATUS",
                    "ATTEMPTS",
                    "WORKER",
                    "SUBMITTED",
                ],
                rows,
            );
        }
    }
    Ok(())
}

/// `swarmq purge QUEUE`.
#[derive(Debug, clap::Args)]
pub(crate) struct PurgeArgs {
    /// The queue to empty.
    queue: String,
    /// Do not ask first (asked only when standard input is a terminal).
    #[arg(long, short)]
    force: bool,
    #[command(flatten)]
    target: Target,
}

/// Removes every waiting task of a queue (their requesters get `revoked`)
/// and prints how many.
pub(crate) async fn purge(a: PurgeArgs) -> Result<(), Failure> {
    if !wire::is_valid_queue_name(&a.queue) {
        return Err(Failure::usage(format!("invalid queue name `{}`", a.queue)));
    }
    if !a.force && std::io::stdin().is_terminal() {
        eprint!("purge every waiting task of queue `{}`? [y/N] ", a.queue);
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Failure::new(FailureKind::NotSucceeded, "not purged"));
        }
    }
    let api = Api::connect(&a.target).await?;
    let v = api.post(&format!("/queues/{}/purge", a.queue)).await?;
    println!("purged {} task(s) from {}", text(&v["purged"]), a.queue);
    Ok(())
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v[key].as_array().into_iter().flatten()
}

/// A JSON value as a table cell: strings bare, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Microseconds since the epoch as UTC time to the second.
fn time(v: &Value) -> String {
    v.as_i64()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map_or_else(
            || "-".into(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

/// Percent-encodes a query value (statuses are plain words; anything else
/// is sent safely).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Prints rows under a header, each column as wide as its widest cell.
fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}
