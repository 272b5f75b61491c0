//! `word-count`: the original MapReduce word count over swarmq.
//!
//! - `word-count worker --url mqtt://HOST:PORT [--concurrency N]` serves tasks
//!   `mapper` and `reduce` on queue `word_count`.
//! - `word-count count --url mqtt://HOST:PORT [--words N] FILE` sends one
//!   `mapper(word)` task per word, reduces the results and prints the top 5;
//!   with `--chord` or `--chunks N` it sends one workflow instead, which the
//!   broker runs to the worker's `reduce`.
//! - `word-count latency --url mqtt://HOST:PORT [--tasks N]` measures single
//!   round trips, one task at a time, and prints p50/p99.
//! - `word-count simulate --url mqtt://HOST:PORT --rate R FILE` acts as a
//!   device submitting R tasks per second.
//!
//! Every subcommand takes `mqtts://HOST:PORT` for TLS, with `--ca-file CA.pem`
//! when the broker's certificate is not signed by a system-trusted CA.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use swarmq_worker::canvas::{Signature, chain, chord, chunks};
use swarmq_worker::wire::{Status, TaskRequest};
use swarmq_worker::{CancellationToken, Client, Worker};
use word_count::{MAPPER, QUEUE, REDUCE, decode_latin1, mapper, reduce, reduce_results, tokenize};

#[derive(Parser)]
#[command(
    name = "word-count",
    version,
    about = "The original word count, one mapper(word) task per word, over swarmq"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the broker is, for every subcommand.
#[derive(clap::Args)]
struct BrokerArgs {
    /// Broker address: mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883", env = "SWARMQ_URL")]
    url: String,
    /// PEM file of the CA that signed the broker's TLS certificate (mqtts://
    /// only; the system's trusted roots without it).
    #[arg(long, env = "SWARMQ_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Identity name, when the broker requires one.
    #[arg(long, env = "SWARMQ_USERNAME")]
    username: Option<String>,
    /// The identity's token or password.
    #[arg(
        long,
        env = "SWARMQ_PASSWORD",
        hide_env_values = true,
        conflicts_with = "password_file"
    )]
    password: Option<String>,
    /// A file holding the token (a Docker secret such as /run/secrets/…).
    #[arg(long, env = "SWARMQ_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// PEM client certificate (mqtts:// brokers that authenticate by certificate).
    #[arg(long, env = "SWARMQ_CERT_FILE", requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// Its private key.
    #[arg(long, env = "SWARMQ_KEY_FILE", requires = "cert_file")]
    key_file: Option<PathBuf>,
}

/// What both SDK builders take from [`BrokerArgs`].
macro_rules! connect_with {
    ($builder:expr, $args:expr) => {{
        let mut b = $builder;
        if let Some(ca) = &$args.ca_file {
            b = b.ca_file(ca);
        }
        match (&$args.username, $args.password()?) {
            (Some(u), Some(p)) => b = b.credentials(u, p),
            (Some(u), None) => b = b.username(u),
            _ => {}
        }
        if let (Some(c), Some(k)) = (&$args.cert_file, &$args.key_file) {
            b = b.client_cert(c, k);
        }
        b
    }};
}

impl BrokerArgs {
    /// The password, given or read from its file.
    fn password(&self) -> anyhow::Result<Option<String>> {
        match (&self.password, &self.password_file) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(f)) => {
                let p = std::fs::read_to_string(f).map_err(|e| {
                    anyhow::anyhow!("cannot read the password file {}: {e}", f.display())
                })?;
                Ok(Some(p.trim().to_string()))
            }
            (None, None) => Ok(None),
        }
    }

    async fn client(&self) -> anyhow::Result<Client> {
        let builder = connect_with!(Client::builder(&self.url), self);
        Ok(builder.connect().await?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve `mapper` tasks from queue `word_count` until Ctrl-C or SIGTERM.
    Worker {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Tasks run at once (announced to the broker as capacity).
        #[arg(long, default_value_t = 8)]
        concurrency: u32,
        /// MQTT client id (random by default).
        #[arg(long)]
        client_id: Option<String>,
    },
    /// Count the words of FILE with one task per word; print the top 5.
    Count {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Only the first N words (the original used 2,190).
        #[arg(long)]
        words: Option<usize>,
        /// Submit one workflow instead: a chord of one mapper per word,
        /// with the reduce task as its body, run by the broker.
        #[arg(long, conflicts_with = "chunks")]
        chord: bool,
        /// Submit one workflow instead: chunks of N words (one task maps N
        /// words), then the reduce task.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        chunks: Option<u32>,
        /// Give up when not every result is in after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        /// The text (ASCII / Latin-1).
        file: PathBuf,
    },
    /// Act as a device: submit one mapper task every 1/RATE seconds, forever,
    /// taking words from FILE in turn; log progress every 10 s.
    Simulate {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Tasks per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Stop after this many tasks (0: run until Ctrl-C or SIGTERM).
        #[arg(long, default_value_t = 0)]
        tasks: u64,
        /// The text the words come from.
        file: PathBuf,
    },
    /// Time N single round trips, one task at a time; print p50 and p99.
    Latency {
        #[command(flatten)]
        broker: BrokerArgs,
        /// Round trips to time (after 100 warm-up ones).
        #[arg(long, default_value_t = 2000)]
        tasks: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWARMQ_LOG")
                .unwrap_or_else(|_| "warn,swarmq_worker=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Worker {
            broker,
            concurrency,
            client_id,
        } => worker(&broker, concurrency, client_id).await,
        Command::Count {
            broker,
            words,
            chord,
            chunks,
            timeout_secs,
            file,
        } => {
            let how = match (chord, chunks) {
                (true, _) => How::Chord,
                (false, Some(n)) => How::Chunks(n as usize),
                (false, None) => How::Tasks,
            };
            count(
                &broker,
                words,
                how,
                Duration::from_secs(timeout_secs),
                &file,
            )
            .await
        }
        Command::Latency { broker, tasks } => latency(&broker, tasks).await,
        Command::Simulate {
            broker,
            rate,
            tasks,
            file,
        } => simulate(&broker, rate, tasks, &file).await,
    }
}

async fn worker(
    broker: &BrokerArgs,
    concurrency: u32,
    client_id: Option<String>,
) -> anyhow::Result<()> {
    let mut builder = Worker::builder(&broker.url)
        .queue(QUEUE)
        .concurrency(concurrency)
        .handler(MAPPER, |task| async move {
            let word: String = task.arg(0)?;
            Ok(match mapper(&word) {
                Some((w, n)) => json!([w, n]),
                None => Value::Null,
            })
        })
        .handler(REDUCE, |task| async move {
            let results: Vec<Value> = task.arg(0)?;
            Ok(json!(reduce_results(&results, 5)))
        });
    if let Some(id) = client_id {
        builder = builder.client_id(id);
    }
    let builder = connect_with!(builder, broker);
    let worker = builder.build()?;
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.cancel();
    });
    let stats = worker.run(token).await?;
    eprintln!(
        "worker stopped: {} completed, {} failed",
        stats.completed, stats.failed
    );
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// How `count` sends the work.
#[derive(Debug, Clone, Copy)]
enum How {
    /// One task per word, reduced here.
    Tasks,
    /// One chord workflow: a mapper per word, the reduce as its body.
    Chord,
    /// One workflow: chunks of N words, then the reduce.
    Chunks(usize),
}

async fn count(
    broker: &BrokerArgs,
    words: Option<usize>,
    how: How,
    timeout: Duration,
    file: &PathBuf,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut tokens = tokenize(&decode_latin1(&bytes));
    if let Some(n) = words {
        tokens.truncate(n);
    }
    let client = broker.client().await?;
    if !matches!(how, How::Tasks) {
        return count_workflow(&client, &tokens, how, timeout).await;
    }

    let started = Instant::now();
    let mut pending = Vec::with_capacity(tokens.len());
    let mut submitted = Progress::new(tokens.len() as u64, "submitted", started);
    for word in &tokens {
        let request = TaskRequest {
            task: Some(MAPPER.into()),
            args: vec![Value::String(word.clone())],
            ..TaskRequest::default()
        };
        pending.push(client.submit(QUEUE, request).await?);
        submitted.set(pending.len() as u64);
    }
    submitted.finish();
    // Results arrive while tasks are submitted: both rates count from the
    // start of the run.
    let mut progress = Progress::new(tokens.len() as u64, "results", started);
    let collect = async {
        let mut pairs = Vec::new();
        for (n, p) in pending.into_iter().enumerate() {
            let result = p.await?;
            progress.set(n as u64 + 1);
            match result.into_result() {
                Ok(Value::Null) => {}
                Ok(v) => {
                    let (w, n): (String, u64) = serde_json::from_value(v)
                        .context("mapper returned something else than [word, count]")?;
                    pairs.push((w, n));
                }
                Err((status, error)) => bail!("a task ended {}: {error}", status.as_str()),
            }
        }
        anyhow::Ok(pairs)
    };
    let pairs = tokio::time::timeout(timeout, collect)
        .await
        .with_context(|| format!("not every result arrived within {timeout:?}"))??;
    let wall = started.elapsed();
    progress.finish();
    for (word, n) in reduce(pairs, 5) {
        println!("{word} {n}");
    }
    println!(
        "{} tasks in {:.3} s ({:.0} tasks/s)",
        tokens.len(),
        wall.as_secs_f64(),
        tokens.len() as f64 / wall.as_secs_f64()
    );
    Ok(())
}

/// The count as one workflow the broker runs: one message out, one result back.
async fn count_workflow(
    client: &Client,
    tokens: &[String],
    how: How,
    timeout: Duration,
) -> anyhow::Result<()> {
    let reduce_step = Signature::new(QUEUE, REDUCE);
    let workflow = match how {
        How::Chunks(size) => chain([
            chunks(QUEUE, MAPPER, tokens.iter().map(|w| vec![json!(w)]), size),
            reduce_step.into(),
        ]),
        _ => chord(
            tokens
                .iter()
                .map(|w| Signature::new(QUEUE, MAPPER).arg(json!(w))),
            reduce_step,
        ),
    };
    let members = workflow.members();
    let started = Instant::now();
    let (pending, mut reports) = client.submit_workflow_with_progress(workflow, None).await?;
    let mut progress = Progress::new(members as u64, "members done", started);
    let wait = async {
        tokio::pin!(pending);
        loop {
            tokio::select! {
                result = &mut pending => return result,
                Some(report) = reports.recv() => {
                    if let Some(done) = report.get("done").and_then(Value::as_u64) {
                        progress.set(done);
                    }
                }
            }
        }
    };
    let result = tokio::time::timeout(timeout, wait)
        .await
        .with_context(|| format!("the workflow's result did not arrive within {timeout:?}"))??;
    let wall = started.elapsed();
    progress.finish();
    let top: Vec<(String, u64)> = match result.into_result() {
        Ok(v) => {
            serde_json::from_value(v).context("reduce returned something else than the top 5")?
        }
        Err((status, error)) => bail!("the workflow ended {}: {error}", status.as_str()),
    };
    for (word, n) in top {
        println!("{word} {n}");
    }
    println!(
        "{} words, {members} members in {:.3} s ({:.0} members/s)",
        tokens.len(),
        wall.as_secs_f64(),
        members as f64 / wall.as_secs_f64()
    );
    Ok(())
}

/// Progress of a long count on stderr: a bar with rate and ETA on a
/// terminal, a plain line every tenth otherwise (logs, CI).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    label: &'static str,
    next_line: u64,
    started: Instant,
}

impl Progress {
    /// `total` steps counted from `started` (for the rate).
    fn new(total: u64, label: &'static str, started: Instant) -> Progress {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            let style = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} {msg} {rate} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            // Whole steps per second since `started`, as the plain lines
            // (indicatif's {per_sec} counts from the bar's creation and
            // shows four decimals).
            .with_key(
                "rate",
                move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let secs = started.elapsed().as_secs_f64().max(1e-6);
                    let _ = write!(w, "{:.0}/s", state.pos() as f64 / secs);
                },
            );
            bar.set_style(style);
            bar.set_message(label);
            bar
        });
        Progress {
            bar,
            total,
            label,
            next_line: (total / 10).max(1),
            started,
        }
    }

    fn set(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        if done >= self.next_line && done < self.total {
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-6);
            eprintln!("{}: {done} of {} ({rate:.0}/s)", self.label, self.total);
            self.next_line = done + (self.total / 10).max(1);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

async fn simulate(
    broker: &BrokerArgs,
    rate: f64,
    limit: u64,
    file: &PathBuf,
) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    if !(rate > 0.0 && rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let words = tokenize(&decode_latin1(&bytes));
    if words.is_empty() {
        bail!("{} has no words", file.display());
    }
    let client = broker.client().await?;
    // Devices started together should not all send the same words.
    let start = (std::process::id() as usize * 7919) % words.len();
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(Duration::from_secs(10));
    let stop = wait_for_signal();
    tokio::pin!(stop);
    let mut sent = 0u64;
    eprintln!(
        "device {} submitting {rate} tasks/s to {}",
        client.client_id(),
        broker.url
    );
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = report.tick() => eprintln!(
                "sent {sent}, results {}, failures {}",
                ok.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed)
            ),
            _ = tick.tick() => {
                let word = &words[(start + sent as usize) % words.len()];
                let request = TaskRequest {
                    task: Some(MAPPER.into()),
                    args: vec![Value::String(word.clone())],
                    ..TaskRequest::default()
                };
                let pending = client.submit(QUEUE, request).await?;
                sent += 1;
                let (ok, failed) = (ok.clone(), failed.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(300), pending).await {
                        Ok(Ok(r)) if r.status == Status::Success => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                });
                if limit > 0 && sent >= limit {
                    break;
                }
            }
        }
    }
    // Give the last results a moment to arrive before the final line.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < sent
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "sent {sent}, results {}, failures {}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn latency(broker: &BrokerArgs, tasks: usize) -> anyhow::Result<()> {
    let client = broker.client().await?;
    let mut samples = Vec::with_capacity(tasks);
    for i in 0..(tasks + 100) {
        let request = TaskRequest {
            task: Some(MAPPER.into()),
            args: vec![json!("Fables")],
            ..TaskRequest::default()
        };
        let t = Instant::now();
        let result = client.call(QUEUE, request, Duration::from_secs(30)).await?;
        let elapsed = t.elapsed();
        if result.status != Status::Success {
            bail!("round trip {i} ended {}", result.status.as_str());
        }
        if i >= 100 {
            samples.push(elapsed);
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{} round trips: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        samples.len(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}
