//! Workflows against the real broker: each node kind alone and nested,
//! results passed along a chain, `immutable`, failures with and without
//! retries, revoke, bad workflows, `mosquitto_pub`, the API and history,
//! and `kill -9` of the broker in the middle of a 10,000-member chord.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::PubAckReason;
use serde_json::{Value, json};
use swarmq_worker::canvas::{Node, Signature, chain, chord, chunks, group};
use swarmq_worker::wire::{RetryOptions, Status};
use swarmq_worker::{CancellationToken, Client, TaskError, Worker};

use crate::durability::BrokerProcess;
use crate::support::*;

const Q: &str = "wf";

/// A worker on queue `wf` serving `add` (sums its numeric arguments, a list
/// counting as its sum), `echo` (its arguments), `fail` (a final error),
/// `flaky` (asks for a retry on its first attempt) and `wait` (runs until
/// cancelled). Returns its stop token and the executions per task id.
fn worker(url: &str, id: &str) -> (CancellationToken, Arc<Mutex<HashMap<String, u32>>>) {
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let count = |runs: &Arc<Mutex<HashMap<String, u32>>>, id: &str| {
        *runs.lock().unwrap().entry(id.to_string()).or_default() += 1;
    };
    fn sum(v: &Value) -> f64 {
        match v {
            Value::Number(n) => n.as_f64().unwrap_or(0.0),
            Value::Array(items) => items.iter().map(sum).sum(),
            _ => 0.0,
        }
    }
    let (r1, r2, r3, r4, r5) = (
        runs.clone(),
        runs.clone(),
        runs.clone(),
        runs.clone(),
        runs.clone(),
    );
    let worker = Worker::builder(url)
        .client_id(id)
        .queue(Q)
        .concurrency(8)
        .grace_period(Duration::from_secs(1))
        .handler("add", move |t| {
            count(&r1, &t.id);
            async move { Ok(json!(t.args.iter().map(sum).sum::<f64>())) }
        })
        .handler("echo", move |t| {
            count(&r2, &t.id);
            async move { Ok(Value::Array(t.args)) }
        })
        .handler("fail", move |t| {
            count(&r3, &t.id);
            async move { Err(TaskError::failed("it broke")) }
        })
        .handler("flaky", move |t| {
            count(&r4, &t.id);
            async move {
                if t.attempt == 1 {
                    Err(TaskError::retry("first attempt"))
                } else {
                    Ok(json!(t.attempt))
                }
            }
        })
        .handler("wait", move |t| {
            count(&r5, &t.id);
            async move {
                t.cancellation().cancelled().await;
                Ok(json!("cancelled"))
            }
        })
        .build()
        .expect("worker builds");
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move { worker.run(stop).await });
    (token, runs)
}

fn add(args: Value) -> Signature {
    Signature::new(Q, "add").args(args.as_array().cloned().unwrap_or_default())
}

async fn run(client: &Client, wf: Node, id: &str) -> swarmq_worker::wire::TaskResult {
    let pending = client
        .submit_workflow(wf, Some(id))
        .await
        .expect("submitted");
    within(&format!("workflow {id}"), pending)
        .await
        .expect("a result")
}

#[tokio::test]
async fn each_node_kind_alone_and_nested_gives_its_result() {
    let broker = TestBroker::start().await;
    let (_w, runs) = worker(&broker.url(), "wf-worker");
    wait_consumers(&broker, Q, 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();

    let r = run(&client, add(json!([1, 2])).into(), "alone").await;
    assert_eq!((r.status, r.result), (Status::Success, Some(json!(3.0))));
    assert_eq!(r.id.as_deref(), Some("alone"));

    // A chain passes each result on as the first argument, unless immutable.
    let wf = chain([
        add(json!([1, 2])),
        add(json!([10])),
        Signature::new(Q, "echo").arg("fresh").immutable(),
        Signature::new(Q, "echo"),
    ]);
    let r = run(&client, wf, "chain").await;
    assert_eq!(r.result, Some(json!([["fresh"]])), "{r:?}");

    let r = run(
        &client,
        group([add(json!([1])), add(json!([2])), add(json!([3]))]),
        "group",
    )
    .await;
    assert_eq!(r.result, Some(json!([1.0, 2.0, 3.0])));

    let header: Vec<Signature> = (1..=10).map(|i| add(json!([i]))).collect();
    let r = run(&client, chord(header, add(json!([]))), "chord").await;
    assert_eq!(r.result, Some(json!(55.0)));

    let items: Vec<Vec<Value>> = (0..7).map(|i| vec![json!(i), json!(100)]).collect();
    let r = run(&client, chunks(Q, "add", items, 3), "chunks").await;
    let expected: Vec<Value> = (0..7).map(|i| json!(f64::from(i) + 100.0)).collect();
    assert_eq!(r.result, Some(Value::Array(expected)));
    let chunk_runs = runs
        .lock()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("chunks/"))
        .count();
    assert_eq!(chunk_runs, 3, "7 items in chunks of 3: 3 tasks");

    // Nested: a chain of a group (holding a chord and chunks) and a sum.
    let wf = chain([
        group([
            chord([add(json!([1])), add(json!([2]))], add(json!([]))),
            chunks(Q, "add", vec![vec![json!(4)], vec![json!(5)]], 1),
        ]),
        add(json!([1000])).into(),
    ]);
    let r = run(&client, wf, "nested").await;
    assert_eq!(r.result, Some(json!(1012.0)), "{r:?}");
    let nested: Vec<String> = {
        let mut ids: Vec<String> = runs
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("nested/"))
            .cloned()
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        nested,
        [
            "nested/0.0.0.0",
            "nested/0.0.0.1",
            "nested/0.0.1",
            "nested/0.1.0",
            "nested/0.1.1",
            "nested/1"
        ],
        "deterministic member ids"
    );
    // (A chunk task's handler runs once per item, under the chunk's id.)
    let twice: Vec<(String, u32)> = runs
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, n)| **n > 1 && !id.starts_with("chunks/") && !id.starts_with("nested/0.1."))
        .map(|(id, n)| (id.clone(), *n))
        .collect();
    assert!(twice.is_empty(), "members ran twice: {twice:?}");

    // Options on a signature reach its task: a countdown holds it back.
    let started = std::time::Instant::now();
    let r = run(
        &client,
        add(json!([1])).countdown(0.3).priority(5).into(),
        "opts",
    )
    .await;
    assert_eq!(r.status, Status::Success);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let (status, body) = broker.http_get("/api/v1/tasks/opts%2F0").await;
    assert_eq!(status, 200, "{body}");
    let record: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(record["priority"], 5);
    assert_eq!(record["workflow"], "opts");
}

#[tokio::test]
async fn a_failing_member_fails_the_workflow_naming_it_and_retries_come_first() {
    let broker = TestBroker::start().await;
    let (_w, runs) = worker(&broker.url(), "wf-fail");
    wait_consumers(&broker, Q, 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();

    // Without retries: the member's error fails the workflow; the chain's
    // next step never starts.
    let wf = chain([
        group([add(json!([1])), Signature::new(Q, "fail")]),
        add(json!([])).into(),
    ]);
    let r = run(&client, wf, "broken").await;
    assert_eq!(r.status, Status::Failure);
    let error = r.error.unwrap();
    assert!(
        error.contains("member `broken/0.1` failure: it broke"),
        "{error}"
    );
    assert!(!runs.lock().unwrap().contains_key("broken/1"));
    let (_, body) = broker.http_get("/api/v1/workflows/broken").await;
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["status"], "failure", "{view}");
    assert_eq!(view["counts"]["failure"], 1, "{view}");
    assert_eq!(view["counts"]["waiting"], 1, "{view}");

    // With retries: the member's own retry comes first; the workflow succeeds.
    let flaky = Signature::new(Q, "flaky").retry(RetryOptions {
        max_attempts: Some(3),
        backoff_ms: Some(10),
        ..RetryOptions::default()
    });
    let r = run(&client, chain([flaky, add(json!([]))]), "retried").await;
    assert_eq!(r.status, Status::Success, "{r:?}");
    assert_eq!(r.result, Some(json!(2.0)), "attempt 2 answered 2");
    assert_eq!(runs.lock().unwrap()["retried/0"], 2);

    // A member with a final failure after its retries: named with its error.
    let always = Signature::new(Q, "fail").retry(RetryOptions {
        max_attempts: Some(2),
        ..RetryOptions::default()
    });
    let r = run(&client, always.into(), "exhausted").await;
    assert_eq!(r.status, Status::Failure);
    assert!(r.error.unwrap().contains("member `exhausted/0`"));
}

#[tokio::test]
async fn revoking_a_running_workflow_revokes_its_members_and_cancels_the_running_one() {
    let broker = TestBroker::start().await;
    let (_w, runs) = worker(&broker.url(), "wf-revoke");
    wait_consumers(&broker, Q, 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    let wf = chain([Signature::new(Q, "wait"), add(json!([1]))]);
    let pending = client.submit_workflow(wf, Some("rv")).await.unwrap();
    eventually("the first member runs", || async {
        runs.lock().unwrap().contains_key("rv/0")
    })
    .await;
    let (status, body) = broker.http_get("/api/v1/workflows/rv").await;
    assert_eq!(status, 200);
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["status"], "running");
    assert_eq!(view["counts"]["running"], 1, "{view}");
    assert_eq!(view["tree"]["children"][0]["id"], "rv/0");

    // Revoke over MQTT, as any client would.
    let mut revoker = V5Peer::connect(broker.mqtt, "revoker").await;
    revoker.subscribe("replies/revoker").await;
    revoker
        .publish_acked(
            "swarmq/revoke",
            json!({"id": "rv"}).to_string(),
            reply_props("replies/revoker", "1"),
        )
        .await;
    assert_eq!(json(&revoker.next_publish().await)["status"], "revoked");
    let r = within("the revoked result", pending).await.unwrap();
    assert_eq!(r.status, Status::Revoked);
    // The running member was told to stop; its answer changes nothing, and
    // the next step never starts.
    let (_, body) = broker.http_get("/api/v1/tasks/rv%2F0").await;
    let record: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(record["status"], "revoked", "{record}");
    let (_, body) = broker.http_get("/api/v1/workflows/rv").await;
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["status"], "revoked");
    assert!(!runs.lock().unwrap().contains_key("rv/1"));
    // A second revoke finds it finished.
    revoker
        .publish_acked(
            "swarmq/revoke",
            json!({"id": "rv"}).to_string(),
            reply_props("replies/revoker", "2"),
        )
        .await;
    assert_eq!(json(&revoker.next_publish().await)["status"], "finished");
}

#[tokio::test]
async fn a_workflow_from_mosquitto_pub_is_answered_on_its_reply_topic_and_fetched_by_id() {
    let broker = TestBroker::start().await;
    let (_w, _) = worker(&broker.url(), "wf-mosq");
    wait_consumers(&broker, Q, 1).await;
    let mut requester = V5Peer::connect(broker.mqtt, "mosq-reader").await;
    requester.subscribe("replies/wc").await;
    let file = tempfile::NamedTempFile::new().unwrap();
    let body = json!({
        "id": "wc-1",
        "reply_to": "replies/wc",
        "correlation_id": "42",
        "progress": true,
        "workflow": {"chord": {
            "header": [{"queue": Q, "task": "add", "args": [1]}, {"queue": Q, "task": "add", "args": [2]}],
            "body": {"queue": Q, "task": "add"},
        }},
    });
    std::fs::write(file.path(), body.to_string()).unwrap();
    let out = tokio::process::Command::new("mosquitto_pub")
        .args([
            "-p",
            &broker.port().to_string(),
            "-q",
            "1",
            "-t",
            "swarmq/workflows",
            "-f",
        ])
        .arg(file.path())
        .output()
        .await
        .expect("mosquitto_pub runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut progress = Vec::new();
    let last = loop {
        let m = json(&requester.next_publish().await);
        if m["status"] == "progress" {
            progress.push(m["progress"].clone());
            continue;
        }
        break m;
    };
    assert_eq!(last["status"], "success", "{last}");
    assert_eq!(last["result"], 3.0);
    assert_eq!(last["correlation_id"], "42");
    assert_eq!(
        progress,
        [
            json!({"done": 1, "total": 3}),
            json!({"done": 2, "total": 3})
        ],
        "members done / total on the way"
    );
    // The final state by id, over MQTT and HTTP.
    requester
        .publish_acked(
            "swarmq/history/get",
            json!({"id": "wc-1"}).to_string(),
            reply_props("replies/wc", "h"),
        )
        .await;
    let got = json(&requester.next_publish().await);
    assert_eq!(got["status"], "success", "{got}");
    assert_eq!(got["members"], 3);
    assert_eq!(got["counts"]["success"], 3);
    let (_, list) = broker.http_get("/api/v1/workflows").await;
    assert!(list.contains("\"wc-1\""), "{list}");
}

#[tokio::test]
async fn bad_workflows_are_rejected_naming_the_offending_path_and_nothing_is_stored() {
    let broker = TestBroker::start_with(&[
        ("workflows.max_members", "5"),
        ("workflows.max_bytes", "4096"),
        ("workflows.max_depth", "3"),
    ])
    .await;
    let mut p = V5Peer::connect(broker.mqtt, "bad-wf").await;
    p.subscribe("replies/bad").await;
    let sig = json!({"queue": Q, "task": "add"});
    for (wf, expected) in [
        (
            json!({"chian": [sig]}),
            "`workflow` is of no known node kind",
        ),
        (json!({"group": []}), "`workflow.group` is empty"),
        (
            json!({"chord": {"header": [sig]}}),
            "`workflow.chord` has no `body`",
        ),
        (
            json!({"chain": [sig, {"queue": Q, "args": "x"}]}),
            "`workflow.chain[1].args` must be an array",
        ),
        (
            json!({"group": [sig, {"queue": Q, "priority": "high"}]}),
            "`workflow.group[1]`: field `priority`",
        ),
        (
            json!({"chunks": {"queue": Q, "task": "add", "items": [[1]], "size": 0}}),
            "`workflow.chunks.size` must be an integer of at least 1",
        ),
        (
            json!({"group": [sig, sig, sig, sig, sig, sig]}),
            "more than 5 members (workflows.max_members)",
        ),
        (
            json!({"chain": [{"chain": [{"chain": [{"chain": [sig]}]}]}]}),
            "nests deeper than 3 levels (workflows.max_depth)",
        ),
        (
            json!({"queue": Q, "task": "add", "args": ["x".repeat(5000)]}),
            "exceeds the limit of 4096 bytes (workflows.max_bytes)",
        ),
    ] {
        let body = json!({"id": "bad", "workflow": wf});
        let code = p
            .publish_acked(
                "swarmq/workflows",
                body.to_string(),
                reply_props("replies/bad", "x"),
            )
            .await;
        assert_eq!(code, PubAckReason::PayloadFormatInvalid, "{wf}");
        let r = json(&p.next_publish().await);
        assert_eq!(r["status"], "rejected");
        let error = r["error"].as_str().unwrap();
        assert!(error.contains(expected), "{wf}: {error}");
    }
    // Wrong types of the envelope, and not JSON at all.
    for (body, expected) in [
        ("[1]".to_string(), "must be a JSON object"),
        (
            json!({"workflow": sig, "progress": "yes"}).to_string(),
            "`progress`",
        ),
        (
            json!({"id": 7, "workflow": sig}).to_string(),
            "`id` must be a string",
        ),
        ("{".to_string(), "not JSON"),
    ] {
        let code = p
            .publish_acked(
                "swarmq/workflows",
                body.clone(),
                reply_props("replies/bad", "x"),
            )
            .await;
        assert_eq!(code, PubAckReason::PayloadFormatInvalid, "{body}");
        let r = json(&p.next_publish().await);
        assert!(
            r["error"].as_str().unwrap().contains(expected),
            "{body}: {r}"
        );
    }
    assert!(broker.engine.running_workflows().is_empty());
    assert_eq!(
        broker
            .engine
            .queues()
            .iter()
            .map(|q| q.waiting)
            .sum::<usize>(),
        0
    );
    let broker = broker.restart().await;
    assert!(
        broker.engine.running_workflows().is_empty(),
        "nothing was stored"
    );
}

/// A workflow is stored before it is acknowledged and carries on after
/// `kill -9` of the broker: every member runs, none twice but those the
/// worker held at the kill, and the requester gets one final result.
#[tokio::test]
async fn kill_9_in_the_middle_of_a_10000_member_chord_loses_nothing_and_repeats_only_what_was_running()
 {
    const MEMBERS: usize = 10_000;
    const CONCURRENCY: u32 = 16;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path());
    let url = format!("mqtt://{}", broker.mqtt);
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let serve = |url: &str, id: &str| {
        let (r1, r2) = (runs.clone(), runs.clone());
        let worker = Worker::builder(url)
            .client_id(id)
            .queue(Q)
            .concurrency(CONCURRENCY)
            .handler("add", move |t| {
                *r1.lock().unwrap().entry(t.id.clone()).or_default() += 1;
                async move {
                    // Slow enough that the kill lands in the middle.
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    Ok(json!(t.args.first().cloned().unwrap_or(json!(0))))
                }
            })
            .handler("count", move |t| {
                *r2.lock().unwrap().entry(t.id.clone()).or_default() += 1;
                async move {
                    let results: Vec<Value> = t.arg(0)?;
                    Ok(json!(results.len()))
                }
            })
            .build()
            .unwrap();
        let token = CancellationToken::new();
        let stop = token.clone();
        tokio::spawn(async move { worker.run(stop).await });
        token
    };
    let header: Vec<Signature> = (0..MEMBERS).map(|i| add(json!([i]))).collect();
    let wf = json!({
        "id": "big",
        "workflow": chord(header, Signature::new(Q, "count")),
    });
    let mut requester = V5Peer::connect(broker.mqtt, "big-req").await;
    let code = requester
        .publish_acked(
            "swarmq/workflows",
            wf.to_string(),
            reply_props("replies/big", "1"),
        )
        .await;
    assert_eq!(
        code,
        PubAckReason::NoMatchingSubscribers,
        "accepted and consumed"
    );
    drop(requester);
    let first = serve(&url, "big-w1");
    eventually("a third of the members ran", || async {
        runs.lock().unwrap().len() >= MEMBERS / 3
    })
    .await;
    broker.kill_9();
    first.cancel();
    let ran_before: usize = runs.lock().unwrap().len();
    assert!(ran_before < MEMBERS, "the kill came before the end");

    let broker = BrokerProcess::start(dir.path());
    let mut requester = V5Peer::connect(broker.mqtt, "big-req2").await;
    requester.subscribe("replies/big").await;
    let _second = serve(&format!("mqtt://{}", broker.mqtt), "big-w2");
    let result = json(&within("the chord's one result", requester.next_publish()).await);
    assert_eq!(result["status"], "success", "{result}");
    assert_eq!(
        result["result"], MEMBERS as u64,
        "the body saw every header result"
    );

    let runs = runs.lock().unwrap().clone();
    let header_runs: Vec<u32> = (0..MEMBERS)
        .map(|i| runs.get(&format!("big/0.{i}")).copied().unwrap_or(0))
        .collect();
    assert!(header_runs.iter().all(|n| *n >= 1), "every member ran");
    let twice = header_runs.iter().filter(|n| **n > 1).count();
    println!(
        "kill -9 after {ran_before} of {MEMBERS} members had started: {twice} ran twice (the worker held at most {CONCURRENCY})"
    );
    assert!(
        twice <= CONCURRENCY as usize,
        "{twice} members ran twice; only the {CONCURRENCY} in flight at the kill may"
    );
    assert_eq!(runs.get("big/1"), Some(&1), "the body ran once");
    // Exactly one final result.
    let extra = tokio::time::timeout(Duration::from_millis(500), requester.next_publish()).await;
    assert!(extra.is_err(), "a second result arrived");
}
