//! The command-line client (`swarmq call|inspect|purge|revoke|tail`), run
//! as the real binary against the real broker: its output, and the exit
//! codes a script relies on (0 done, 1 not succeeded, 2 usage, 3
//! unreachable, 4 denied, 5 not found, 6 timed out).

use std::time::Duration;

use serde_json::{Value, json};
use swarmq::access::TokenHash;
use swarmq_worker::TaskError;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{TestBroker, eventually, wait_consumers, within};

/// What one run of the binary printed, and its exit status.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `swarmq ARGS…` against `broker`: its addresses (unless `extra`
/// gives others) and `extra` go after the subcommand.
async fn swarmq(broker: &TestBroker, args: &[&str], extra: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmq"));
    command.args(args);
    if !extra.contains(&"--url") {
        command.arg("--url").arg(broker.url());
    }
    if !extra.contains(&"--api") {
        command.arg("--api").arg(format!("http://{}", broker.http));
    }
    command
        .args(extra)
        .env_remove("SWARMQ_USERNAME")
        .env_remove("SWARMQ_PASSWORD")
        .stdin(std::process::Stdio::null());
    let out = within(&format!("swarmq {args:?}"), command.output())
        .await
        .expect("the binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An SDK worker serving `mapper` (`[word, 1]`) and `boom` (fails) on `queue`.
async fn worker(broker: &TestBroker, queue: &str) -> tokio_util::sync::CancellationToken {
    let w = swarmq_worker::Worker::builder(&broker.url())
        .client_id(format!("cli-worker-{queue}"))
        .queue(queue)
        .concurrency(4)
        .handler("mapper", |ctx| async move {
            let word: String = ctx.arg(0)?;
            Ok(json!([word, 1]))
        })
        .handler("boom", |_ctx| async move {
            Err::<Value, _>(TaskError::failed("it broke"))
        })
        .build()
        .unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move { w.run(t).await });
    wait_consumers(broker, queue, 1).await;
    token
}

#[tokio::test]
async fn call_prints_the_id_or_the_result_and_its_exit_code_says_what_happened() {
    let broker = TestBroker::start().await;
    let _w = worker(&broker, "word_count").await;

    let r = swarmq(
        &broker,
        &["call", "word_count", "mapper", "Fables", "--wait"],
        &[],
    )
    .await;
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, r#"["Fables",1]"#),
        "{}",
        r.stderr
    );

    let r = swarmq(
        &broker,
        &[
            "call",
            "word_count",
            "mapper",
            "Gulliver",
            "--wait",
            "--json",
        ],
        &[],
    )
    .await;
    let whole: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(
        (whole["status"].as_str(), &whole["result"]),
        (Some("success"), &json!(["Gulliver", 1]))
    );

    // Without --wait: the id, once the broker has stored the task.
    let r = swarmq(&broker, &["call", "word_count", "mapper", "Lilliput"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id = r.stdout.trim().to_string();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    let api = format!("/api/v1/tasks/{id}");
    eventually("the task ran", || async {
        broker.http_get(&api).await.1.contains("\"success\"")
    })
    .await;

    // The worker's failure: exit 1, status and error on stderr.
    let r = swarmq(&broker, &["call", "word_count", "boom", "--wait"], &[]).await;
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(r.stderr.contains("failure: it broke"), "{}", r.stderr);

    // No worker on this queue: exit 6 when the wait runs out.
    let r = swarmq(
        &broker,
        &[
            "call",
            "idle",
            "mapper",
            "x",
            "--wait",
            "--timeout",
            "300ms",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 6, "{}", r.stderr);
    assert!(r.stderr.contains("no result for task"), "{}", r.stderr);

    // Usage: exit 2, nothing sent.
    for bad in [
        &["call", "bad/queue", "t"][..],
        &["call", "word_count", "t", "--kwargs", "[1]"],
        &["call", "word_count", "t", "--priority", "12"],
    ] {
        let r = swarmq(&broker, bad, &[]).await;
        assert_eq!(r.code, 2, "{bad:?}: {}", r.stderr);
    }

    // A wrong address: exit 3.
    let nowhere = format!("mqtt://127.0.0.1:{}", closed_port());
    let r = swarmq(
        &broker,
        &["call", "word_count", "mapper", "x"],
        &["--url", &nowhere],
    )
    .await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot connect to the broker"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn revoke_says_revoked_finished_or_unknown_with_its_exit_code() {
    let broker = TestBroker::start().await;
    let _w = worker(&broker, "word_count").await;

    let r = swarmq(
        &broker,
        &[
            "call",
            "word_count",
            "mapper",
            "later",
            "--countdown",
            "600",
        ],
        &[],
    )
    .await;
    let id = r.stdout.trim().to_string();
    let r = swarmq(&broker, &["revoke", &id], &[]).await;
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, format!("{id} revoked").as_str()),
        "{}",
        r.stderr
    );

    let r = swarmq(
        &broker,
        &[
            "call",
            "word_count",
            "mapper",
            "now",
            "--id",
            "done-1",
            "--wait",
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 0);
    let r = swarmq(&broker, &["revoke", "done-1"], &[]).await;
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.starts_with("done-1 finished"), "{}", r.stdout);

    let r = swarmq(&broker, &["revoke", "never-submitted"], &[]).await;
    assert_eq!(r.code, 5, "{}", r.stdout);
    assert!(
        r.stdout.starts_with("never-submitted unknown"),
        "{}",
        r.stdout
    );
}

#[tokio::test]
async fn inspect_prints_tables_purge_empties_a_queue_and_unknown_queues_exit_5() {
    let broker = TestBroker::start().await;
    let _w = worker(&broker, "word_count").await;
    let ok = swarmq(
        &broker,
        &[
            "call",
            "word_count",
            "mapper",
            "Fables",
            "--id",
            "seen-1",
            "--wait",
        ],
        &[],
    )
    .await;
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    for i in 0..3 {
        let r = swarmq(
            &broker,
            &[
                "call",
                "parked",
                "mapper",
                &format!("w{i}"),
                "--countdown",
                "600",
            ],
            &[],
        )
        .await;
        assert_eq!(r.code, 0, "{}", r.stderr);
    }

    let r = swarmq(&broker, &["inspect", "queues"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("QUEUE") && lines[0].contains("SCHEDULED"),
        "{}",
        r.stdout
    );
    let parked = lines
        .iter()
        .find(|l| l.starts_with("parked"))
        .expect("parked listed");
    let cells: Vec<&str> = parked.split_whitespace().collect();
    assert_eq!(cells[..3], ["parked", "0", "3"], "{parked}");

    let r = swarmq(&broker, &["inspect", "workers"], &[]).await;
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("cli-worker-word_count") && l.contains("online")),
        "{}",
        r.stdout
    );

    let r = swarmq(&broker, &["inspect", "tasks", "--status", "success"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("seen-1 ") && l.contains("success")),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("scheduled"), "{}", r.stdout);
    let r = swarmq(
        &broker,
        &["inspect", "tasks", "--json", "--queue", "parked"],
        &[],
    )
    .await;
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(3));

    let r = swarmq(&broker, &["inspect", "tasks", "--status", "bogus"], &[]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("status must be one of"), "{}", r.stderr);
    let r = swarmq(&broker, &["inspect", "tasks", "--queue", "nope"], &[]).await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stderr.contains("unknown queue `nope`"), "{}", r.stderr);

    let r = swarmq(&broker, &["purge", "parked"], &[]).await;
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, "purged 3 task(s) from parked"),
        "{}",
        r.stderr
    );
    let r = swarmq(&broker, &["purge", "nope"], &[]).await;
    assert_eq!(r.code, 5, "{}", r.stderr);

    let nowhere = format!("http://127.0.0.1:{}", closed_port());
    let r = swarmq(&broker, &["inspect", "queues"], &["--api", &nowhere]).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("cannot reach the API"), "{}", r.stderr);
}

#[tokio::test]
async fn tail_follows_each_step_of_a_task_live_and_filters_by_queue() {
    let broker = TestBroker::start().await;
    let _w = worker(&broker, "word_count").await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmq"))
        .args(["tail", "--queue", "word_count", "--count", "3", "--api"])
        .arg(format!("http://{}", broker.http))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The stream is open once the broker counts a follower; until then a
    // task would be missed, so submit tasks (on another queue first, which
    // the filter must drop) until the follower's lines come.
    let mut seen = Vec::new();
    within("three lines of tail", async {
        let mut n = 0;
        while seen.len() < 3 {
            n += 1;
            let other = swarmq(
                &broker,
                &["call", "elsewhere", "mapper", "x", "--countdown", "600"],
                &[],
            )
            .await;
            assert_eq!(other.code, 0);
            let r = swarmq(
                &broker,
                &[
                    "call",
                    "word_count",
                    "mapper",
                    "Fables",
                    "--id",
                    &format!("t{n}"),
                    "--wait",
                ],
                &[],
            )
            .await;
            assert_eq!(r.code, 0);
            while let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await
            {
                seen.push(line);
            }
        }
    })
    .await;
    let status = within("tail ends after --count", child.wait())
        .await
        .unwrap();
    assert!(status.success());
    assert!(
        seen.iter().all(|l| l.contains("  word_count  mapper  ")),
        "{seen:?}"
    );
    let events: Vec<&str> = seen
        .iter()
        .map(|l| l.split("  ").nth(4).unwrap_or(""))
        .collect();
    assert_eq!(events, ["submitted", "started", "finished"], "{seen:?}");
    assert!(
        seen[2].contains("success result=[\"Fables\",1]"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn bad_credentials_exit_4_good_ones_work_and_an_unknown_queue_exits_5() {
    let token = |n: &str| format!("sqt_test_{n}_0123456789abcdef0123456789");
    let mut toml = String::from("[tasks]\nauto_create_queues = false\n\n[queues.word_count]\n\n");
    for (name, role) in [("dev1", "device"), ("w1", "worker"), ("ops", "app")] {
        toml.push_str(&format!(
            "[[auth.identities]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_hash = \"{}\"\n\n",
            TokenHash::new(&token(name)).unwrap().as_str()
        ));
    }
    let broker = TestBroker::start_with_config(&toml, &[]).await;
    let w = swarmq_worker::Worker::builder(&broker.url())
        .credentials("w1", token("w1"))
        .queue("word_count")
        .handler("mapper", |ctx| async move {
            let word: String = ctx.arg(0)?;
            Ok(json!([word, 1]))
        })
        .build()
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move { w.run(s).await });
    wait_consumers(&broker, "word_count", 1).await;

    let dev = ["--username", "dev1", "--password", &token("dev1")];
    let r = swarmq(
        &broker,
        &["call", "word_count", "mapper", "Fables", "--wait"],
        &dev,
    )
    .await;
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, r#"["Fables",1]"#),
        "{}",
        r.stderr
    );

    let wrong = ["--username", "dev1", "--password", "sqt_wrong"];
    let r = swarmq(&broker, &["call", "word_count", "mapper", "x"], &wrong).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("bad user name or password"),
        "{}",
        r.stderr
    );
    let r = swarmq(&broker, &["call", "word_count", "mapper", "x"], &[]).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("not authorized"), "{}", r.stderr);
    let r = swarmq(&broker, &["inspect", "queues"], &wrong).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    let r = swarmq(&broker, &["inspect", "queues"], &[]).await;
    assert_eq!(r.code, 4, "{}", r.stderr);

    // The app identity reads the API with its token.
    let ops = ["--username", "ops", "--password", &token("ops")];
    let r = swarmq(&broker, &["inspect", "queues"], &ops).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.lines().any(|l| l.starts_with("word_count")),
        "{}",
        r.stdout
    );

    // Queues are declared, not created: an unknown one exits 5 with the
    // broker's own reason.
    let r = swarmq(&broker, &["call", "nosuch", "mapper", "x", "--wait"], &dev).await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stderr.contains("nosuch"), "{}", r.stderr);
    stop.cancel();
}
