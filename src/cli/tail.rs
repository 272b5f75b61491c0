//! `swarmq tail`: task events as they happen, one line each.

use serde_json::Value;
use swarmq_worker::wire;

use super::http::Api;
use super::{Failure, FailureKind, Target};

/// `swarmq tail [--queue Q]`.
#[derive(Debug, clap::Args)]
pub(crate) struct TailArgs {
    /// Only the events of this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Print each event's JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    #[command(flatten)]
    target: Target,
}

/// Follows `GET /api/v1/tail` until interrupted (or `--count` events).
pub(crate) async fn tail(a: TailArgs) -> Result<(), Failure> {
    let mut path = "/tail".to_string();
    if let Some(q) = &a.queue {
        if !wire::is_valid_queue_name(q) {
            return Err(Failure::usage(format!("invalid queue name `{q}`")));
        }
        path.push_str(&format!("?queue={q}"));
    }
    let api = Api::connect(&a.target).await?;
    if let Some(q) = &a.queue {
        // An unknown queue is an error, not a silent stream.
        api.get(&format!("/queues/{q}")).await?;
    }
    let mut seen = 0u64;
    let limit = a.count;
    let json = a.json;
    api.follow(&path, |event, data| {
        match event {
            "task" => {
                seen += 1;
                if json {
                    println!("{data}");
                } else {
                    match serde_json::from_str::<Value>(data) {
                        Ok(v) => println!("{}", line(&v)),
                        Err(_) => println!("{data}"),
                    }
                }
            }
            "lagged" => eprintln!("swarmq: {data} event(s) missed (reading too slowly)"),
            _ => {}
        }
        limit.is_none_or(|n| seen < n)
    })
    .await?;
    if limit.is_some_and(|n| seen < n) {
        return Err(Failure::new(
            FailureKind::Unreachable,
            "the broker ended the stream",
        ));
    }
    Ok(())
}

/// One event as a line: time, queue, task, id, event, and what it says.
fn line(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let at = v["at_us"]
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map_or_else(|| "-".into(), |t| t.format("%H:%M:%S%.3f").to_string());
    let event = s("event");
    let detail = match event.as_str() {
        "submitted" => format!("args={}", v["args"]),
        "started" => format!("worker={} attempt={}", s("worker"), v["attempt"]),
        "progress" => format!("progress={}", v["progress"]),
        "requeued" => format!("reason={:?}", s("reason")),
        "finished" => match v["status"].as_str() {
            Some("success") => format!(
                "success result={} worker={} {}ms",
                v["result"],
                s("worker"),
                v["latency_ms"]
            ),
            Some(other) => format!("{other} error={:?}", s("error")),
            None => String::new(),
        },
        "rejected" => format!("error={:?}", s("error")),
        _ => String::new(),
    };
    format!(
        "{at}  {}  {}  {}  {event}  {detail}",
        s("queue"),
        s("task"),
        s("id")
    )
}
