//! The word count end to end, as a user runs it: a real broker, two
//! `word-count worker` processes and `word-count count` on the original text.

use std::process::{Command, Stdio};
use std::time::Duration;

use swarmq::{App, Settings, Sources};
use tokio_util::sync::CancellationToken;

#[path = "../../../tests/integration/certs.rs"]
mod certs;

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `word-count` to completion (within a minute), with `SWARMQ_CA_FILE`
/// set to `ca` or unset.
async fn word_count(args: &[&str], ca: Option<&str>) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_word-count"));
    cmd.args(args).env_remove("SWARMQ_CA_FILE");
    if let Some(ca) = ca {
        cmd.env("SWARMQ_CA_FILE", ca);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("word-count {args:?} did not finish"))
        .expect("word-count runs")
}

/// The stdout of a run that must have succeeded.
fn succeeded(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_prints_the_original_top_five() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::load(&Sources {
        overrides: vec![
            ("mqtt.listen".into(), "127.0.0.1:0".into()),
            ("http.listen".into(), "127.0.0.1:0".into()),
            ("store.data_dir".into(), dir.path().display().to_string()),
        ],
        ..Sources::default()
    })
    .unwrap();
    let app = App::build(settings).await.unwrap();
    let url = format!("mqtt://{}", app.mqtt_addr());
    let engine = app.engine().clone();
    let token = CancellationToken::new();
    tokio::spawn(app.run(token.clone()));

    let bin = env!("CARGO_BIN_EXE_word-count");
    let _workers: Vec<Kill> = (0..2)
        .map(|i| {
            Kill(
                Command::new(bin)
                    .args([
                        "worker",
                        "--url",
                        &url,
                        "--concurrency",
                        "4",
                        "--client-id",
                        &format!("wc-{i}"),
                    ])
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !engine
        .queues()
        .iter()
        .any(|q| q.name == "word_count" && q.consumers == 2)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "workers did not subscribe"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let text = concat!(env!("CARGO_MANIFEST_DIR"), "/text/aesop11.txt");
    let out = word_count(&["count", "--url", &url, "--words", "2190", text], None).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("submitted: 219 of 2190 (") && stderr.contains("results: 219 of 2190 ("),
        "plain progress lines when not on a terminal: {stderr}"
    );
    let stdout = succeeded(out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..5],
        ["would 12", "which 8", "their 8", "caught 6", "Farmer 6"]
    );
    assert!(lines[5].starts_with("2190 tasks in "), "{}", lines[5]);
    assert!(engine.workers().iter().all(|w| w.in_flight == 0));

    // On a terminal (a pseudo-terminal from util-linux's `script`), the
    // progress is a bar with its rate and ETA instead of plain lines.
    let quoted = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let command = [bin, "count", "--url", &url, "--words", "2190", text]
        .map(quoted)
        .join(" ");
    let on_tty = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("script")
            .args(["-qefc", &command, "/dev/null"])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("word-count on a terminal did not finish")
    .expect("util-linux's script runs");
    let screen = String::from_utf8_lossy(&on_tty.stdout);
    assert!(on_tty.status.success(), "{screen}");
    let rate_then_eta = |frame: &str| {
        let Some((_, after)) = frame.split_once("/2190 results ") else {
            return false;
        };
        let Some((rate, _)) = after.split_once("/s ETA ") else {
            return false;
        };
        !rate.is_empty() && rate.bytes().all(|b| b.is_ascii_digit())
    };
    assert!(
        screen.split('\r').any(rate_then_eta),
        "a bar with whole tasks/s and ETA on a terminal: {screen:?}"
    );
    assert!(
        !screen.contains("results: 219 of 2190"),
        "no plain lines on a terminal: {screen:?}"
    );
    assert!(screen.contains("would 12"), "{screen:?}");

    // The same count as one workflow the broker runs to the workers' reduce:
    // a chord of one mapper per word, and chunks of 100 words.
    for (how, members) in [(&["--chord"][..], 2191), (&["--chunks", "100"][..], 23)] {
        let mut args = vec!["count", "--url", &url, "--words", "2190"];
        args.extend_from_slice(how);
        args.push(text);
        let stdout = succeeded(word_count(&args, None).await);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines[..5],
            ["would 12", "which 8", "their 8", "caught 6", "Farmer 6"],
            "{how:?}"
        );
        assert!(
            lines[5].starts_with(&format!("2190 words, {members} members in ")),
            "{}",
            lines[5]
        );
    }
    let bad = word_count(&["count", "--url", &url, "--chunks", "0", text], None).await;
    assert!(!bad.status.success(), "chunks of 0 words are refused");

    // A simulated device at 200 tasks/s, stopped after 50 tasks.
    let args = [
        "simulate", "--url", &url, "--rate", "200", "--tasks", "50", text,
    ];
    assert_eq!(
        succeeded(word_count(&args, None).await).trim(),
        "sent 50, results 50, failures 0"
    );
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_count_over_tls_with_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let tls = certs::make_certs(dir.path());
    let settings = Settings::load(&Sources {
        overrides: vec![
            ("mqtt.listen".into(), "127.0.0.1:0".into()),
            ("mqtt.tls_listen".into(), "127.0.0.1:0".into()),
            ("mqtt.tls_cert_file".into(), tls.cert.display().to_string()),
            ("mqtt.tls_key_file".into(), tls.key.display().to_string()),
            ("http.listen".into(), "127.0.0.1:0".into()),
            (
                "store.data_dir".into(),
                dir.path().join("data").display().to_string(),
            ),
        ],
        ..Sources::default()
    })
    .unwrap();
    let app = App::build(settings).await.unwrap();
    let url = format!("mqtts://localhost:{}", app.mqtt_tls_addr().unwrap().port());
    let ca = tls.ca.display().to_string();
    let token = CancellationToken::new();
    tokio::spawn(app.run(token.clone()));

    let bin = env!("CARGO_BIN_EXE_word-count");
    let _worker = Kill(
        Command::new(bin)
            .args(["worker", "--url", &url, "--ca-file", &ca])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let text = concat!(env!("CARGO_MANIFEST_DIR"), "/text/aesop11.txt");
    // Through the environment, as a container would set it.
    let args = ["count", "--url", &url, "--words", "2190", text];
    let stdout = succeeded(word_count(&args, Some(&ca)).await);
    let top: Vec<&str> = stdout.lines().take(5).collect();
    assert_eq!(
        top,
        ["would 12", "which 8", "their 8", "caught 6", "Farmer 6"]
    );

    // Without the CA the broker cannot be verified: a clear failure.
    let out = word_count(&["latency", "--url", &url, "--tasks", "1"], None).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
    token.cancel();
}
