//! Countdown lateness: submits tasks due at times spread over a period,
//! serves them with an in-process worker, and prints how late each started
//! against its due time (percentiles). Used by `benches/countdown.sh`.
//!
//! The tasks carry their due time as `eta` (with milliseconds) rather than
//! a `countdown`: the broker turns both into the same due time, but a
//! countdown counts from when the broker received the task, which the
//! worker cannot know, while an `eta` is the due time itself.
//!
//!     cargo run --release -p swarmq-worker --example countdown_bench -- \
//!         mqtt://127.0.0.1:1883 100000 60
//!
//! With a spread of 0 and `park` as a fourth argument it only submits
//! (every task due in an hour) and serves nothing: for measuring what many
//! scheduled tasks cost the broker.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use swarmq_worker::wire::TaskRequest;
use swarmq_worker::{CancellationToken, Client, Worker};

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".into());
    let tasks: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let spread_s: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(60.0);
    let park = args.get(4).is_some_and(|s| s == "park");

    let lateness = Arc::new(Mutex::new(Vec::with_capacity(tasks)));
    let stop = CancellationToken::new();
    let worker = if park {
        None
    } else {
        let l = lateness.clone();
        let w = Worker::builder(&url)
            .client_id("countdown-bench-worker")
            .queue("countdown")
            .concurrency(256)
            .handler("due", move |t| {
                let l = l.clone();
                async move {
                    let due: f64 = t.arg(0)?;
                    l.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(now_ms() - due);
                    Ok(json!(null))
                }
            })
            .build()?;
        Some(tokio::spawn(w.run(stop.clone())))
    };
    let client = Client::builder(&url).inflight(1000).connect().await?;
    let started = now_ms();
    let mut pending = Vec::with_capacity(if park { 0 } else { tasks });
    for i in 0..tasks {
        // Evenly over the spread, interleaved so that due order differs
        // from submission order.
        let countdown = if park {
            3600.0
        } else {
            spread_s * ((i * 7919) % tasks) as f64 / tasks as f64
        };
        let due = SystemTime::now() + Duration::from_secs_f64(countdown);
        let due_ms = due
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_millis() as f64);
        let request = TaskRequest {
            task: Some("due".into()),
            args: vec![json!(due_ms)],
            eta: Some(humantime::format_rfc3339_millis(due).to_string()),
            ..TaskRequest::default()
        };
        let p = client.submit("countdown", request).await?;
        if !park {
            pending.push(p);
        }
    }
    let submitted_s = (now_ms() - started) / 1000.0;
    println!("{tasks} tasks submitted in {submitted_s:.1} s");
    if park {
        // The SDK does not expose acknowledgements: give the last publishes
        // time to leave (benches/countdown.sh counts what the broker took).
        tokio::time::sleep(Duration::from_secs(3)).await;
        return Ok(());
    }
    for p in pending {
        tokio::time::timeout(Duration::from_secs_f64(spread_s + 120.0), p).await??;
    }
    stop.cancel();
    if let Some(w) = worker {
        let _ = w.await;
    }
    let mut l = lateness.lock().unwrap_or_else(|p| p.into_inner()).clone();
    l.sort_by(f64::total_cmp);
    let early = l.iter().filter(|x| **x < -1.0).count();
    println!(
        "lateness ms over {} tasks spread over {spread_s} s: p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}; started more than 1 ms early: {early}",
        l.len(),
        percentile(&l, 0.5),
        percentile(&l, 0.9),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN),
    );
    Ok(())
}
