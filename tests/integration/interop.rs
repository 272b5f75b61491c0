//! Devices that use no SDK: mosquitto_pub/mosquitto_sub/mosquitto_rr, the
//! shell worker and the Python (paho-mqtt) worker, against the real broker.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use swarmq_worker::Client;
use swarmq_worker::wire::TaskRequest;

use crate::support::*;

fn mapper_worker(broker: &TestBroker, id: &str) -> tokio_util::sync::CancellationToken {
    let (token, _) = spawn_worker(
        &broker.url(),
        id,
        "word_count",
        4,
        "mapper",
        |t| async move {
            let w: String = t.arg(0)?;
            Ok(if w.chars().count() >= 5 {
                json!([w, 1])
            } else {
                Value::Null
            })
        },
    );
    token
}

/// Runs a client to completion without blocking the broker's runtime;
/// returns its stdout.
async fn run(program: &str, args: &[&str]) -> String {
    let out = within(
        program,
        tokio::process::Command::new(program)
            .args(args)
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("command runs");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {:?}",
        out.status
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// One mosquitto_rr request/response (MQTT 5): the result it printed.
async fn rr(port: &str, reply_topic: &str, payload: &str) -> Value {
    let args = [
        "-p",
        port,
        "-W",
        "20",
        "-t",
        "tasks/word_count",
        "-e",
        reply_topic,
        "-m",
        payload,
    ];
    let out = run("mosquitto_rr", &args).await;
    serde_json::from_str(out.trim()).expect("a JSON result")
}

/// Forwards a child's stdout lines to a channel, from a blocking thread.
fn line_reader(out: std::process::ChildStdout) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    use std::io::BufRead;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test]
async fn contract_example_with_mosquitto_clients_v5_and_v311() {
    let broker = TestBroker::start().await;
    let _w = mapper_worker(&broker, "sdk-mapper");
    wait_consumers(&broker, "word_count", 1).await;
    let port = broker.port().to_string();

    // MQTT 5: mosquitto_sub on the reply topic, mosquitto_pub with Response
    // Topic and Correlation Data: the CONTRACT.md example, verbatim.
    let mut sub = ChildGuard::new(
        Command::new("mosquitto_sub")
            .args(["-p", &port, "-V", "5", "-t", "replies/me", "-F", "%p"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub"),
    );
    let mut lines = line_reader(sub.child.stdout.take().unwrap());
    // Probe until mosquitto_sub is subscribed, so no result can be missed.
    let mut prober = V5Peer::connect(broker.mqtt, "probe").await;
    within("mosquitto_sub subscribed", async {
        loop {
            prober
                .publish_acked("replies/me", "probe", Default::default())
                .await;
            if let Ok(Some(l)) =
                tokio::time::timeout(Duration::from_millis(100), lines.recv()).await
            {
                assert_eq!(l, "probe");
                break;
            }
        }
    })
    .await;
    // Drain any probes still in flight.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), lines.recv()).await {}
    run(
        "mosquitto_pub",
        &[
            "-p",
            &port,
            "-V",
            "5",
            "-t",
            "tasks/word_count",
            "-D",
            "publish",
            "response-topic",
            "replies/me",
            "-D",
            "publish",
            "correlation-data",
            "42",
            "-m",
            r#"{"task":"mapper","args":["Fables"]}"#,
        ],
    )
    .await;
    // MQTT 3.1.1: reply_to and correlation_id in the JSON.
    run(
        "mosquitto_pub",
        &[
            "-p",
            &port,
            "-t",
            "tasks/word_count",
            "-m",
            r#"{"task":"mapper","args":["Fables"],"reply_to":"replies/me","correlation_id":"43"}"#,
        ],
    )
    .await;
    let mut results: Vec<Value> = Vec::new();
    while results.len() < 2 {
        let l = within("a result line", lines.recv())
            .await
            .expect("mosquitto_sub ended early");
        results.push(serde_json::from_str(&l).expect("a JSON result per line"));
    }
    let lines = results;
    assert_eq!(lines.len(), 2, "{lines:?}");
    for r in &lines {
        assert_eq!(r["status"], "success");
        assert_eq!(r["result"], json!(["Fables", 1]));
        assert_eq!(r["worker"], "sdk-mapper");
    }
    assert!(lines.iter().any(|r| r["correlation_id"] == "43"));
}

#[tokio::test]
async fn mosquitto_rr_round_trip_and_rejection() {
    let broker = TestBroker::start().await;
    let _w = mapper_worker(&broker, "rr-mapper");
    wait_consumers(&broker, "word_count", 1).await;
    let port = broker.port().to_string();
    let r = rr(&port, "replies/rr", r#"{"task":"mapper","args":["tiny"]}"#).await;
    assert_eq!(
        (r["status"].as_str(), &r["result"]),
        (Some("success"), &Value::Null)
    );
    // Bad input from a plain client: a `rejected` result on its reply topic.
    let r = rr(&port, "replies/rr2", "not json").await;
    assert_eq!(r["status"], "rejected");
    assert!(r["error"].as_str().unwrap().contains("not JSON"));
}

#[tokio::test]
async fn shell_worker_serves_tasks_with_mosquitto_and_jq() {
    let broker = TestBroker::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/devices/shell/worker.sh");
    let _child = ChildGuard::group_leader(
        Command::new("setsid")
            .args(["sh", script])
            .env("PORT", broker.port().to_string())
            .env("ID", "shell-1")
            .stdout(Stdio::null())
            .spawn()
            .expect("shell worker"),
    );
    wait_consumers(&broker, "word_count", 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    let words = ["Fables", "the", "Farmer", "would"];
    let mut pending = Vec::new();
    for w in words {
        let req = TaskRequest {
            task: Some("mapper".into()),
            args: vec![json!(w)],
            ..TaskRequest::default()
        };
        pending.push(client.submit("word_count", req).await.unwrap());
    }
    let mut results = Vec::new();
    for p in pending {
        let r = within("shell result", p).await.unwrap();
        assert_eq!(
            r.worker.as_deref(),
            Some("shell-1"),
            "the lease holder ran it"
        );
        results.push(r.into_result().expect("success"));
    }
    assert_eq!(
        results,
        [
            json!(["Fables", 1]),
            Value::Null,
            json!(["Farmer", 1]),
            json!(["would", 1])
        ]
    );
}

#[tokio::test]
async fn python_paho_worker_serves_tasks() {
    let broker = TestBroker::start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/devices/python-worker/worker.py"
    );
    let mut child = ChildGuard::group_leader(
        Command::new("setsid")
            .args([
                "python3",
                script,
                "--port",
                &broker.port().to_string(),
                "--client-id",
                "py-1",
                "--max-tasks",
                "5",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("python worker"),
    );
    wait_consumers(&broker, "word_count", 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    let mut pending = Vec::new();
    for w in ["Fables", "fox", "which", "their", "Lion"] {
        let req = TaskRequest {
            task: Some("mapper".into()),
            args: vec![json!(w)],
            ..TaskRequest::default()
        };
        pending.push(client.submit("word_count", req).await.unwrap());
    }
    let mut results = Vec::new();
    for p in pending {
        let r = within("python result", p).await.unwrap();
        assert_eq!(r.worker.as_deref(), Some("py-1"));
        results.push(r.into_result().expect("success"));
    }
    assert_eq!(
        results,
        [
            json!(["Fables", 1]),
            Value::Null,
            json!(["which", 1]),
            json!(["their", 1]),
            Value::Null
        ]
    );
    // --max-tasks 5: the worker disconnects and exits cleanly by itself.
    eventually("python worker exits", || {
        let exited = matches!(child.child.try_wait(), Ok(Some(s)) if s.success());
        async move { exited }
    })
    .await;
}
