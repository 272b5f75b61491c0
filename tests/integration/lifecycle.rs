//! The task lifecycle against the real broker: countdown and ETA (also
//! across `kill -9`), retries with backoff, priorities, progress that renews
//! a lease, revoke in every stage, and refusals of bad options.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties};
use serde_json::{Value, json};

use crate::durability::BrokerProcess;
use crate::support::*;

/// Most a scheduled task may be late, as the issue asks.
const LATENESS: Duration = Duration::from_millis(100);

/// A raw MQTT 5 worker on `queue` that records when each task arrives.
async fn raw_worker(broker: std::net::SocketAddr, id: &str, queue: &str, capacity: u16) -> V5Peer {
    let mut w = V5Peer::connect_with(broker, id, |o| {
        o.set_receive_maximum(Some(capacity));
    })
    .await;
    w.subscribe(&format!("$share/g/tasks/{queue}")).await;
    w
}

/// The next task message a raw worker receives: (arrival, JSON, response
/// topic, correlation data).
async fn next_task(w: &mut V5Peer) -> (Instant, Value, String, Vec<u8>) {
    let p = w.next_publish().await;
    let props = p.properties.clone().unwrap_or_default();
    (
        Instant::now(),
        json(&p),
        props.response_topic.unwrap_or_default(),
        props
            .correlation_data
            .map(|c| c.to_vec())
            .unwrap_or_default(),
    )
}

async fn answer(w: &V5Peer, topic: &str, correlation: &[u8], body: Value) {
    w.client
        .publish_with_properties(
            topic,
            QoS::AtLeastOnce,
            false,
            body.to_string(),
            PublishProperties {
                correlation_data: Some(correlation.to_vec().into()),
                ..PublishProperties::default()
            },
        )
        .await
        .expect("answer");
}

#[tokio::test]
async fn countdown_and_eta_are_honoured_within_100_ms() {
    let broker = TestBroker::start().await;
    let mut worker = raw_worker(broker.mqtt, "cd-worker", "later", 10).await;
    wait_consumers(&broker, "later", 1).await;
    let mut requester = V5Peer::connect(broker.mqtt, "cd-req").await;
    let eta = std::time::SystemTime::now() + Duration::from_millis(700);
    let eta = humantime::format_rfc3339_millis(eta).to_string();
    let sent = Instant::now();
    for body in [
        json!({"id": "cd", "countdown": 0.4}),
        json!({"id": "eta", "eta": eta}),
    ] {
        let reason = requester
            .publish_acked(
                "tasks/later",
                body.to_string(),
                PublishProperties::default(),
            )
            .await;
        assert_eq!(reason, PubAckReason::Success);
    }
    let q = &broker.engine.queues()[0];
    assert_eq!((q.scheduled, q.waiting), (2, 0));
    for (id, due) in [("cd", 400), ("eta", 700)] {
        let (at, task, _, _) = next_task(&mut worker).await;
        assert_eq!(task["id"], id);
        let after = at.duration_since(sent);
        let due = Duration::from_millis(due);
        println!("{id}: delivered {after:?} after submission, due at {due:?}");
        // The ETA was rounded to milliseconds and taken after `sent`.
        assert!(
            after + Duration::from_millis(2) >= due,
            "{id} early: {after:?}"
        );
        assert!(after < due + LATENESS, "{id} late: {after:?}");
    }
}

#[tokio::test]
async fn a_countdown_survives_kill_9_and_fires_on_time_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path());
    let mut requester = V5Peer::connect(broker.mqtt, "k9-req").await;
    // The broker starts the countdown when the PUBLISH arrives, between
    // `sent` and `acked`; the PUBACK follows the durable write, which can
    // take tens of milliseconds on a busy machine. So the earliest allowed
    // delivery counts from `sent` and the latest from `acked`.
    let countdown = Duration::from_secs(3);
    let sent = Instant::now();
    let reason = requester
        .publish_acked(
            "tasks/k9",
            json!({"id": "k9-task", "countdown": 3}).to_string(),
            PublishProperties::default(),
        )
        .await;
    assert_eq!(reason, PubAckReason::Success);
    let acked = Instant::now();
    drop(requester);
    broker.kill_9();
    let broker = BrokerProcess::start(dir.path());
    let mut worker = raw_worker(broker.mqtt, "k9-worker", "k9", 1).await;
    let (at, task, _, _) = next_task(&mut worker).await;
    assert_eq!(task["id"], "k9-task");
    println!(
        "delivered {:?} after submission (acknowledged after {:?}), countdown {countdown:?}",
        at.duration_since(sent),
        acked.duration_since(sent)
    );
    // The due time is stored in whole milliseconds.
    assert!(
        at + Duration::from_millis(2) >= sent + countdown,
        "delivered before its countdown"
    );
    assert!(at < acked + countdown + LATENESS, "late after the restart");
}

#[tokio::test]
async fn retries_wait_out_the_contract_backoff_and_the_last_error_is_final() {
    let broker = TestBroker::start().await;
    let mut worker = raw_worker(broker.mqtt, "bo-worker", "flaky", 1).await;
    wait_consumers(&broker, "flaky", 1).await;
    let mut requester = V5Peer::connect(broker.mqtt, "bo-req").await;
    requester.subscribe("replies/bo").await;
    requester
        .publish_acked(
            "tasks/flaky",
            json!({"id": "bo", "retry": {"max_attempts": 4, "backoff_ms": 200, "jitter": true}})
                .to_string(),
            reply_props("replies/bo", "c-bo"),
        )
        .await;
    let mut arrivals = Vec::new();
    for attempt in 1..=4 {
        let (at, task, topic, corr) = next_task(&mut worker).await;
        assert_eq!(task["attempt"], attempt);
        arrivals.push(at);
        answer(
            &worker,
            &topic,
            &corr,
            json!({"error": format!("no luck {attempt}"), "retry": true}),
        )
        .await;
    }
    // After attempt n the delay d = 200 ms x 2^(n-1), jittered into [d/2, d].
    for (n, pair) in arrivals.windows(2).enumerate() {
        let gap = pair[1].duration_since(pair[0]);
        let d = Duration::from_millis(200 << n);
        println!(
            "gap after attempt {}: {gap:?} (bounds {:?}..{:?})",
            n + 1,
            d / 2,
            d
        );
        assert!(gap >= d / 2, "attempt {} came early: {gap:?}", n + 2);
        assert!(gap < d + LATENESS, "attempt {} came late: {gap:?}", n + 2);
    }
    let reply = json(&requester.next_publish().await);
    assert_eq!(reply["status"], "failure");
    assert_eq!(reply["attempts"], 4);
    assert!(
        reply["error"].as_str().unwrap().starts_with("no luck 4"),
        "{reply}"
    );
}

#[tokio::test]
async fn priorities_order_delivery_fifo_within_each() {
    let broker = TestBroker::start().await;
    let mut requester = V5Peer::connect(broker.mqtt, "prio-req").await;
    let tasks = [
        ("a", 0),
        ("b", 3),
        ("c", 9),
        ("d", 3),
        ("e", 0),
        ("f", 9),
        ("g", 1),
    ];
    for (id, priority) in tasks {
        requester
            .publish_acked(
                "tasks/prio",
                json!({"id": id, "priority": priority}).to_string(),
                PublishProperties::default(),
            )
            .await;
    }
    let mut worker = raw_worker(broker.mqtt, "prio-worker", "prio", 1).await;
    let mut order = Vec::new();
    for _ in tasks {
        let (_, task, topic, corr) = next_task(&mut worker).await;
        order.push(task["id"].as_str().unwrap().to_string());
        answer(&worker, &topic, &corr, json!({"result": null})).await;
    }
    assert_eq!(order, ["c", "f", "b", "d", "g", "a", "e"]);
}

#[tokio::test]
async fn progress_renews_a_lease_shorter_than_the_task_and_reaches_the_requester() {
    let broker = TestBroker::start_with(&[("tasks.lease_timeout_ms", "300")]).await;
    let mut worker = raw_worker(broker.mqtt, "long-worker", "long", 1).await;
    wait_consumers(&broker, "long", 1).await;
    let mut requester = V5Peer::connect(broker.mqtt, "long-req").await;
    requester.subscribe("replies/long").await;
    requester
        .publish_acked(
            "tasks/long",
            json!({"id": "long-1", "progress": true}).to_string(),
            reply_props("replies/long", "c-long"),
        )
        .await;
    let (_, task, topic, corr) = next_task(&mut worker).await;
    assert_eq!(task["attempt"], 1);
    // 1.2 s of work, four times the lease, reported every 100 ms.
    for step in 1..=12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer(
            &worker,
            &topic,
            &corr,
            json!({"progress": {"step": step, "of": 12}}),
        )
        .await;
    }
    answer(&worker, &topic, &corr, json!({"result": "done"})).await;
    let mut progress = Vec::new();
    let result = loop {
        let p = requester.next_publish().await;
        let v = json(&p);
        assert_eq!(
            p.properties.and_then(|p| p.correlation_data).as_deref(),
            Some(&b"c-long"[..])
        );
        if v["status"] == "progress" {
            progress.push(v["progress"]["step"].as_u64().unwrap());
        } else {
            break v;
        }
    };
    assert_eq!(progress, (1..=12).collect::<Vec<_>>());
    assert_eq!(
        (result["status"].as_str(), result["attempts"].as_u64()),
        (Some("success"), Some(1))
    );
    assert_eq!(
        broker.engine.metrics().redelivered(),
        0,
        "the lease never ran out"
    );
    // The history keeps the latest report.
    let body = eventually_json(&broker, "/api/v1/tasks/long-1", |v| {
        v["status"] == "success"
    })
    .await;
    assert_eq!(body["progress"], json!({"step": 12, "of": 12}));
}

async fn eventually_json(broker: &TestBroker, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let found = Arc::new(Mutex::new(Value::Null));
    let http = broker.http;
    let f = found.clone();
    let path = path.to_string();
    let done = Arc::new(done);
    eventually(&format!("{path} as expected"), move || {
        let (f, path, done) = (f.clone(), path.clone(), done.clone());
        async move {
            let (status, body) = http_get(http, &path).await;
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let ok = status == 200 && done(&v);
            *f.lock().unwrap() = v;
            ok
        }
    })
    .await;
    found.lock().unwrap().clone()
}

#[tokio::test]
async fn revoke_over_mqtt_in_every_stage_cancels_the_worker_and_holds_after_a_restart() {
    let broker = TestBroker::start().await;
    let mut worker = raw_worker(broker.mqtt, "rv-worker", "rv", 1).await;
    worker.subscribe("swarmq/control/rv-worker").await;
    wait_consumers(&broker, "rv", 1).await;
    let mut requester = V5Peer::connect(broker.mqtt, "rv-req").await;
    requester.subscribe("replies/rv").await;
    for body in [
        json!({"id": "running"}),
        json!({"id": "queued"}),
        json!({"id": "scheduled", "countdown": 60}),
    ] {
        requester
            .publish_acked(
                "tasks/rv",
                body.to_string(),
                reply_props("replies/rv", "task"),
            )
            .await;
    }
    let (_, task, _, _) = next_task(&mut worker).await;
    assert_eq!(task["id"], "running");
    let mut outcomes = Vec::new();
    for id in ["scheduled", "queued", "running", "running", "nobody"] {
        requester
            .publish_acked(
                "swarmq/revoke",
                json!({"id": id}).to_string(),
                reply_props("replies/rv", "revoke"),
            )
            .await;
        // The task's own `revoked` result and the revoke's answer both come
        // to replies/rv; keep the answers.
        loop {
            let p = requester.next_publish().await;
            let corr = p.properties.clone().and_then(|p| p.correlation_data);
            let v = json(&p);
            if corr.as_deref() == Some(&b"task"[..]) {
                assert_eq!(v["status"], "revoked");
                continue;
            }
            outcomes.push((
                v["id"].as_str().unwrap().to_string(),
                v["status"].as_str().unwrap().to_string(),
            ));
            break;
        }
    }
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        outcomes,
        [
            s("scheduled", "revoked"),
            s("queued", "revoked"),
            s("running", "revoked"),
            s("running", "finished"),
            s("nobody", "unknown"),
        ]
    );
    // The worker holding `running` is told to cancel it.
    let cancel = worker
        .expect(
            "cancel notice",
            |p| matches!(p, Packet::Publish(p) if p.topic.as_ref() == b"swarmq/control/rv-worker"),
        )
        .await;
    let Packet::Publish(cancel) = cancel else {
        unreachable!()
    };
    assert_eq!(json(&cancel), json!({"cancel": "running"}));
    let q = &broker.engine.queues()[0];
    assert_eq!((q.scheduled, q.waiting, q.in_flight), (0, 0, 0));
    // Durable: after a restart nothing of them runs.
    drop(worker);
    let broker = broker.restart().await;
    let q = broker.engine.queues();
    assert_eq!(q.iter().map(|q| q.waiting + q.scheduled).sum::<usize>(), 0);
}

#[tokio::test]
async fn mosquitto_pub_submits_with_options_and_bad_options_are_rejected_by_name() {
    let broker = TestBroker::start().await;
    let mut requester = V5Peer::connect(broker.mqtt, "opt-req").await;
    requester.subscribe("replies/opt").await;
    for (body, field) in [
        (json!({"countdown": -1}), "`countdown`"),
        (
            json!({"countdown": 1, "eta": "2030-01-01T00:00:00Z"}),
            "not both",
        ),
        (json!({"eta": "next tuesday"}), "`eta`"),
        (json!({"expires": []}), "`expires`"),
        (json!({"priority": 12}), "`priority`"),
        (
            json!({"retry": {"max_attempts": 0}}),
            "`retry.max_attempts`",
        ),
        (json!({"retry": {"backoff": 5}}), "`retry.backoff`"),
        (json!({"progress": 1}), "`progress`"),
    ] {
        let reason = requester
            .publish_acked(
                "tasks/opt",
                body.to_string(),
                reply_props("replies/opt", "x"),
            )
            .await;
        assert_eq!(reason, PubAckReason::PayloadFormatInvalid, "{body}");
        let r = json(&requester.next_publish().await);
        assert_eq!(r["status"], "rejected");
        assert!(r["error"].as_str().unwrap().contains(field), "{body}: {r}");
    }
    assert_eq!(
        broker
            .engine
            .queues()
            .iter()
            .map(|q| q.waiting + q.scheduled)
            .sum::<usize>(),
        0
    );
    // The same options from mosquitto_pub (MQTT 3.1.1, reply_to in the JSON).
    let out = tokio::process::Command::new("mosquitto_pub")
        .args([
            "-p",
            &broker.port().to_string(),
            "-t",
            "tasks/opt",
            "-q",
            "1",
            "-m",
        ])
        .arg(r#"{"id":"from-mosquitto","priority":7,"countdown":30,"retry":{"max_attempts":2}}"#)
        .output()
        .await
        .expect("mosquitto_pub runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = eventually_json(&broker, "/api/v1/tasks/from-mosquitto", |v| {
        v["status"] == "scheduled"
    })
    .await;
    assert_eq!(body["priority"], 7);
    assert_eq!(body["retry"]["max_attempts"], 2);
    assert!(
        body["due_at_us"].as_u64().unwrap()
            > body["submitted_at_us"].as_u64().unwrap() + 29_000_000
    );
}

#[tokio::test]
async fn an_exhausted_task_lands_in_dead_letters_and_replays_to_success_for_the_same_requester() {
    use crate::api::{Api, error_code};
    let broker =
        TestBroker::start_with(&[("tasks.backoff_ms", "20"), ("tasks.max_attempts", "2")]).await;
    let api = Api::new(&broker);
    let mut worker = raw_worker(broker.mqtt, "dl-worker", "dl", 4).await;
    wait_consumers(&broker, "dl", 1).await;
    let mut requester = V5Peer::connect(broker.mqtt, "dl-req").await;
    requester.subscribe("replies/dl").await;
    for id in ["dl-1", "dl-2", "dl-3"] {
        requester
            .publish_acked(
                "tasks/dl",
                json!({"id": id, "args": [id]}).to_string(),
                reply_props("replies/dl", id),
            )
            .await;
    }
    // Each fails twice with a retry asked: its attempts are used up.
    for _ in 0..6 {
        let (_, _, topic, corr) = next_task(&mut worker).await;
        answer(
            &worker,
            &topic,
            &corr,
            json!({"error": "disk on fire", "retry": true}),
        )
        .await;
    }
    for _ in 0..3 {
        let r = json(&requester.next_publish().await);
        assert_eq!(
            (r["status"].as_str(), r["attempts"].as_u64()),
            (Some("failure"), Some(2))
        );
    }
    let (status, page) = api.get("/queues/dl/dead?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 3);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = api
        .get(&format!("/queues/dl/dead?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest["next_cursor"], Value::Null);
    let all: Vec<&Value> = page["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["dead_letters"].as_array().unwrap())
        .collect();
    let mut ids: Vec<&str> = all.iter().map(|l| l["id"].as_str().unwrap()).collect();
    let times: Vec<u64> = all
        .iter()
        .map(|l| l["failed_at_us"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    assert!(
        all[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("disk on fire")
    );
    assert!(all.iter().all(|l| l["attempts"] == 2));
    ids.sort();
    assert_eq!(ids, ["dl-1", "dl-2", "dl-3"]);
    assert_eq!(api.get("/queues/dl").await.1["dead_letters"], 3);

    // Replay dl-2: it runs again from attempt 1; the requester gets its
    // second result on the same reply topic and correlation.
    let (status, v) = api.post("/queues/dl/dead/dl-2/replay").await;
    assert_eq!(
        (status, v),
        (200, json!({"id": "dl-2", "status": "queued"}))
    );
    let (_, task, topic, corr) = next_task(&mut worker).await;
    assert_eq!(
        (task["id"].as_str(), task["attempt"].as_u64()),
        (Some("dl-2"), Some(1))
    );
    answer(&worker, &topic, &corr, json!({"result": "fixed"})).await;
    let p = requester.next_publish().await;
    assert_eq!(
        p.properties
            .clone()
            .and_then(|p| p.correlation_data)
            .as_deref(),
        Some(&b"dl-2"[..])
    );
    let r = json(&p);
    assert_eq!(
        (r["status"].as_str(), r["result"].as_str()),
        (Some("success"), Some("fixed"))
    );
    let (status, v) = api.post("/queues/dl/dead/dl-2/replay").await;
    assert_eq!((status, error_code(&v)), (404, "not_found"));

    // Discard one, replay the rest.
    let (status, _) = api.delete("/queues/dl/dead/dl-1").await;
    assert_eq!(status, 200);
    let (status, v) = api.post("/queues/dl/dead/replay").await;
    assert_eq!((status, v), (200, json!({"queue": "dl", "replayed": 1})));
    let (_, task, _, _) = next_task(&mut worker).await;
    assert_eq!(
        (task["id"].as_str(), task["attempt"].as_u64()),
        (Some("dl-3"), Some(1))
    );
    assert_eq!(api.get("/queues/dl/dead").await.1["total"], 0);
    let (status, v) = api.delete("/queues/dl/dead").await;
    assert_eq!((status, v), (200, json!({"queue": "dl", "discarded": 0})));
}

#[tokio::test]
async fn rate_limit_and_max_in_flight_hold_across_three_workers() {
    let config = "[queues.slowly]\nrate_limit = \"20/s\"\n[queues.narrow]\nmax_in_flight = 2\n";
    let broker = TestBroker::start_with_config(config, &[]).await;
    let starts = Arc::new(Mutex::new(Vec::new()));
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for i in 0..3 {
        let s = starts.clone();
        workers.push(spawn_worker(
            &broker.url(),
            &format!("rl-{i}"),
            "slowly",
            8,
            "slowly",
            move |_| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(Instant::now());
                    Ok(json!(null))
                }
            },
        ));
        let (running, peak) = (running.clone(), peak.clone());
        workers.push(spawn_worker(
            &broker.url(),
            &format!("mif-{i}"),
            "narrow",
            8,
            "narrow",
            move |_| {
                let (running, peak) = (running.clone(), peak.clone());
                async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    peak.fetch_max(running.fetch_add(1, SeqCst) + 1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    running.fetch_sub(1, SeqCst);
                    Ok(json!(null))
                }
            },
        ));
    }
    wait_consumers(&broker, "slowly", 3).await;
    wait_consumers(&broker, "narrow", 3).await;
    let client = swarmq_worker::Client::connect(&broker.url()).await.unwrap();
    let mut pending = Vec::new();
    for queue in ["slowly", "narrow"] {
        for _ in 0..20 {
            let req = swarmq_worker::wire::TaskRequest {
                task: Some(queue.into()),
                ..Default::default()
            };
            pending.push(client.submit(queue, req).await.unwrap());
        }
    }
    for p in pending {
        assert_eq!(
            within("result", p).await.unwrap().status.as_str(),
            "success"
        );
    }
    let starts = starts.lock().unwrap().clone();
    let span = *starts.iter().max().unwrap() - *starts.iter().min().unwrap();
    let mut sorted = starts.clone();
    sorted.sort();
    let min_gap = sorted.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    println!(
        "20 starts at 20/s over 3 workers: first to last {span:?}, smallest gap {min_gap:?}; narrow peak {}",
        peak.load(std::sync::atomic::Ordering::SeqCst)
    );
    // 19 intervals of 50 ms at the least; the workers see a start a little
    // after the broker makes it, so allow a few ms of jitter per gap.
    assert!(span >= Duration::from_millis(19 * 50 - 20), "{span:?}");
    assert!(min_gap >= Duration::from_millis(35), "{min_gap:?}");
    assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    assert_eq!(
        peak.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "two did run together"
    );
}

#[tokio::test]
async fn the_sdk_reports_progress_retries_after_a_delay_sees_cancellation_and_sends_options() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use swarmq_worker::wire::{RetryOptions, TaskRequest};
    use swarmq_worker::{Client, TaskError};
    let broker = TestBroker::start().await;
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let seen = saw_cancel.clone();
    let worker = swarmq_worker::Worker::builder(&broker.url())
        .client_id("sdk-life")
        .queue("life")
        .concurrency(4)
        .handler("long", |t| async move {
            for step in 1..=3 {
                t.progress(json!({"step": step})).await;
            }
            Ok(json!("long done"))
        })
        .handler("later", |t| async move {
            if t.attempt == 1 {
                return Err(TaskError::retry_after(
                    "not yet",
                    Duration::from_millis(300),
                ));
            }
            Ok(json!(t.attempt))
        })
        .handler("stuck", move |t| {
            let seen = seen.clone();
            async move {
                t.cancellation().cancelled().await;
                seen.store(true, SeqCst);
                Ok(json!("stopped"))
            }
        })
        .handler("echo", |t| async move { Ok(json!(t.id)) })
        .build()
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    wait_consumers(&broker, "life", 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    let req = |task: &str| TaskRequest {
        task: Some(task.into()),
        ..TaskRequest::default()
    };

    let (pending, mut progress) = client
        .submit_with_progress("life", req("long"))
        .await
        .unwrap();
    let result = within("long result", pending).await.unwrap();
    assert_eq!(result.result, Some(json!("long done")));
    let mut steps = Vec::new();
    while let Ok(p) = progress.try_recv() {
        steps.push(p["step"].as_u64().unwrap());
    }
    assert_eq!(steps, [1, 2, 3]);

    let sent = Instant::now();
    let r = within("later", client.call("life", req("later"), WAIT))
        .await
        .unwrap();
    assert_eq!((r.status.as_str(), r.attempts), ("success", 2));
    assert!(
        sent.elapsed() >= Duration::from_millis(300),
        "{:?}",
        sent.elapsed()
    );

    let stuck = client
        .submit(
            "life",
            TaskRequest {
                id: Some("stuck-1".into()),
                ..req("stuck")
            },
        )
        .await
        .unwrap();
    let engine = broker.engine.clone();
    eventually("stuck running", move || {
        let e = engine.clone();
        async move { e.in_flight() == 1 }
    })
    .await;
    assert_eq!(
        broker.engine.revoke("stuck-1", "test"),
        swarmq::engine::RevokeOutcome::Revoked
    );
    assert_eq!(
        within("stuck result", stuck).await.unwrap().status.as_str(),
        "revoked"
    );
    let seen = saw_cancel.clone();
    eventually("the handler saw the cancellation", move || {
        let seen = seen.clone();
        async move { seen.load(SeqCst) }
    })
    .await;

    // Options travel with the request: a countdown, a priority, a retry policy.
    let sent = Instant::now();
    let r = within(
        "options",
        client.call(
            "life",
            TaskRequest {
                countdown: Some(0.3),
                priority: Some(4),
                retry: Some(RetryOptions {
                    max_attempts: Some(2),
                    ..RetryOptions::default()
                }),
                ..req("echo")
            },
            WAIT,
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status.as_str(), "success");
    assert!(sent.elapsed() >= Duration::from_millis(300));
    let id = r.id.unwrap();
    let body = eventually_json(&broker, &format!("/api/v1/tasks/{id}"), |v| {
        v["status"] == "success"
    })
    .await;
    assert_eq!(
        (
            body["priority"].as_u64(),
            body["retry"]["max_attempts"].as_u64()
        ),
        (Some(4), Some(2))
    );
    stop.cancel();
    within("worker stops", run).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_schedule_fires_each_second_across_a_restart_and_no_firing_runs_twice() {
    use crate::api::{Api, error_code};
    let config =
        "[[schedules]]\nname = \"tick\"\nqueue = \"beat\"\nevery = \"1s\"\nargs = [\"tock\"]\n";
    let broker = TestBroker::start_with_config(config, &[]).await;
    let runs = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = |runs: Arc<Mutex<Vec<String>>>| {
        move |t: swarmq_worker::TaskContext| {
            let runs = runs.clone();
            async move {
                assert_eq!(t.args, vec![json!("tock")]);
                runs.lock().unwrap().push(t.id.clone());
                Ok(json!(null))
            }
        }
    };
    let (w, _) = spawn_worker(
        &broker.url(),
        "beat-1",
        "beat",
        4,
        "beat",
        record(runs.clone()),
    );
    let enough = |n: usize| {
        let runs = runs.clone();
        move || {
            let runs = runs.clone();
            async move { runs.lock().unwrap().len() >= n }
        }
    };
    eventually("three firings", enough(3)).await;
    // The API lists it; a bad one is refused naming the expression.
    let api = Api::new(&broker);
    let (_, list) = api.get("/schedules").await;
    assert_eq!(list["schedules"][0]["name"], "tick");
    assert_eq!(list["schedules"][0]["source"], "config");
    let http = reqwest::Client::new();
    let post = |body: Value| {
        http.post(broker.http_url("/api/v1/schedules"))
            .json(&body)
            .send()
    };
    let bad = post(json!({"name": "bad", "queue": "beat", "cron": "0 0 31 2 * * *"}))
        .await
        .unwrap();
    let bad_status = bad.status().as_u16();
    let bad_body: Value = bad.json().await.unwrap();
    println!("refused: {bad_body}");
    assert_eq!(bad_status, 400);
    let bad = post(json!({"name": "worse", "queue": "beat", "cron": "every day"}))
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let msg: Value = bad.json().await.unwrap();
    assert!(
        msg["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`every day` does not parse"),
        "{msg}"
    );
    let ok = post(json!({"name": "api-tick", "queue": "beat", "every": "1h"}))
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 201);
    let (status, v) = api.delete("/schedules/tick").await;
    assert_eq!(
        (status, error_code(&v)),
        (409, "conflict"),
        "declared in the configuration"
    );

    w.cancel();
    let broker = broker.restart().await;
    let (w2, _) = spawn_worker(
        &broker.url(),
        "beat-2",
        "beat",
        4,
        "beat",
        record(runs.clone()),
    );
    let before = runs.lock().unwrap().len();
    eventually("three more firings after the restart", enough(before + 3)).await;
    w2.cancel();
    let ids = runs.lock().unwrap().clone();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    println!("{} firings, {} distinct: {ids:?}", ids.len(), unique.len());
    assert_eq!(unique.len(), ids.len(), "a firing ran twice: {ids:?}");
    assert!(
        ids.iter()
            .all(|id| id.starts_with("tick@") && id.ends_with('Z')),
        "{ids:?}"
    );
    let (_, list) = Api::new(&broker).get("/schedules").await;
    let names: Vec<&str> = list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["api-tick", "tick"],
        "the API schedule survived the restart"
    );
    let (status, _) = Api::new(&broker).delete("/schedules/api-tick").await;
    assert_eq!(status, 200);
}
