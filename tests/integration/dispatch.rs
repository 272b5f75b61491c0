//! Dispatch guarantees: capacity, least-loaded spreading, redelivery when a
//! worker dies or hangs, backlog while no worker is online, warm shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use swarmq_worker::Client;
use swarmq_worker::wire::TaskRequest;

use crate::support::*;

fn req(i: usize) -> TaskRequest {
    TaskRequest {
        task: Some("job".into()),
        args: vec![json!(i)],
        ..TaskRequest::default()
    }
}

#[tokio::test]
async fn backlog_of_200_waits_for_workers_then_runs_exactly_once() {
    let broker = TestBroker::start().await;
    let client = Client::connect(&broker.url()).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..200 {
        pending.push(client.submit("backlog", req(i)).await.unwrap());
    }
    eventually("200 queued", || async {
        broker
            .engine
            .queues()
            .iter()
            .any(|q| q.name == "backlog" && q.waiting == 200)
    })
    .await;

    let runs: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..3 {
        let runs = runs.clone();
        workers.push(spawn_worker(
            &broker.url(),
            &format!("late-{w}"),
            "backlog",
            4,
            "job",
            move |t| {
                let runs = runs.clone();
                async move {
                    let n: i64 = t.arg(0)?;
                    *runs.lock().unwrap().entry(n).or_default() += 1;
                    Ok(json!(n))
                }
            },
        ));
    }
    let mut seen = Vec::new();
    for p in pending {
        let r = within("result", p).await.unwrap();
        assert_eq!(r.status.as_str(), "success");
        seen.push(r.result.unwrap().as_i64().unwrap());
    }
    seen.sort();
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 200);
    assert!(runs.values().all(|&n| n == 1), "a task ran twice");
}

#[tokio::test]
async fn slow_and_fast_workers_never_exceed_capacity_and_fast_does_more() {
    let broker = TestBroker::start().await;
    let spawn = |id: &str, cap: u32, delay_ms: u64| {
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let (n, p, d) = (now.clone(), peak.clone(), done.clone());
        let w = spawn_worker(&broker.url(), id, "mixed", cap, "job", move |_| {
            let (n, p, d) = (n.clone(), p.clone(), d.clone());
            async move {
                let c = n.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(c, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                d.fetch_add(1, Ordering::SeqCst);
                Ok(json!(null))
            }
        });
        (w, peak, done)
    };
    let (_slow, slow_peak, slow_done) = spawn("slow", 1, 20);
    let (_fast, fast_peak, fast_done) = spawn("fast", 8, 20);
    wait_consumers(&broker, "mixed", 2).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..180 {
        pending.push(client.submit("mixed", req(i)).await.unwrap());
    }
    for p in pending {
        assert_eq!(
            within("result", p).await.unwrap().status.as_str(),
            "success"
        );
    }
    let (sp, fp) = (
        slow_peak.load(Ordering::SeqCst),
        fast_peak.load(Ordering::SeqCst),
    );
    let (sd, fd) = (
        slow_done.load(Ordering::SeqCst),
        fast_done.load(Ordering::SeqCst),
    );
    assert_eq!(sp, 1, "slow worker ran more than its capacity at once");
    assert!((2..=8).contains(&fp), "fast peak {fp}");
    assert_eq!(sd + fd, 180);
    assert!(fd >= 4 * sd, "fast did {fd}, slow did {sd}");
}

#[tokio::test]
async fn killed_worker_tasks_go_to_another_worker_with_one_result_each() {
    let broker = TestBroker::start().await;
    // A raw worker that takes 3 tasks and dies without answering.
    let mut doomed = V5Peer::connect_with(broker.mqtt, "doomed", |o| {
        o.set_receive_maximum(Some(3));
    })
    .await;
    doomed.subscribe("$share/g/tasks/crash").await;
    wait_consumers(&broker, "crash", 1).await;

    let client = Client::connect(&broker.url()).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..10 {
        pending.push(client.submit("crash", req(i)).await.unwrap());
    }
    for _ in 0..3 {
        doomed.next_publish().await;
    }
    eventually("3 in flight on doomed", || async {
        broker.engine.in_flight() == 3
    })
    .await;
    doomed.kill();

    let runs: Arc<Mutex<HashMap<i64, usize>>> = Arc::default();
    let r2 = runs.clone();
    let (_survivor, _) = spawn_worker(&broker.url(), "survivor", "crash", 2, "job", move |t| {
        let runs = r2.clone();
        async move {
            let n: i64 = t.arg(0)?;
            *runs.lock().unwrap().entry(n).or_default() += 1;
            Ok(json!(n))
        }
    });
    let mut results = Vec::new();
    for p in pending {
        results.push(within("result", p).await.unwrap());
    }
    assert!(
        results
            .iter()
            .all(|r| r.worker.as_deref() == Some("survivor"))
    );
    let redelivered = results.iter().filter(|r| r.attempts == 2).count();
    assert_eq!(redelivered, 3, "the three tasks in hand were redelivered");
    assert!(runs.lock().unwrap().values().all(|&n| n == 1));
    assert_eq!(client.pending(), 0);
    let (_, metrics) = broker.http_get("/metrics").await;
    assert!(
        metrics.contains("swarmq_tasks_redelivered_total 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn hung_worker_loses_its_task_after_the_lease_and_late_reply_is_ignored() {
    let broker = TestBroker::start_with(&[("tasks.lease_timeout_ms", "300")]).await;
    let mut hung = V5Peer::connect(broker.mqtt, "hung").await;
    hung.subscribe("$share/g/tasks/lease").await;
    wait_consumers(&broker, "lease", 1).await;
    let mut req_peer = V5Peer::connect(broker.mqtt, "lease-req").await;
    req_peer.subscribe("r/lease").await;
    req_peer
        .publish_acked("tasks/lease", r#"{"id":"L1"}"#, reply_props("r/lease", "c"))
        .await;
    let task = hung.next_publish().await;
    // Another worker joins; the lease expires; the task moves to it.
    let (_ok, _) = spawn_worker(&broker.url(), "healthy", "lease", 1, "lease", |_| async {
        Ok(json!("from healthy"))
    });
    let r = json(&req_peer.next_publish().await);
    assert_eq!(r["worker"], "healthy");
    assert_eq!(r["attempts"], 2);
    // The hung worker wakes up and answers: ignored, no second result.
    let props = task.properties.clone().unwrap_or_default();
    hung.publish_acked(
        props.response_topic.as_deref().unwrap(),
        r#"{"result":"late"}"#,
        rumqttc::v5::mqttbytes::v5::PublishProperties {
            correlation_data: props.correlation_data.clone(),
            ..Default::default()
        },
    )
    .await;
    let (_, metrics) = broker.http_get("/metrics").await;
    assert!(
        metrics.contains("swarmq_worker_replies_ignored_total 1"),
        "{metrics}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), req_peer.rx.recv())
            .await
            .is_err(),
        "a second result arrived"
    );
}

#[tokio::test]
async fn worker_warm_shutdown_finishes_tasks_in_hand() {
    let broker = TestBroker::start().await;
    let started = Arc::new(AtomicUsize::new(0));
    let s2 = started.clone();
    let (stop, handle) = spawn_worker(&broker.url(), "warm", "warm", 2, "job", move |_| {
        let s = s2.clone();
        async move {
            s.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(json!("finished"))
        }
    });
    wait_consumers(&broker, "warm", 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    let a = client.submit("warm", req(1)).await.unwrap();
    let b = client.submit("warm", req(2)).await.unwrap();
    let c = client.submit("warm", req(3)).await.unwrap();
    eventually("two tasks started", || async {
        started.load(Ordering::SeqCst) == 2
    })
    .await;
    stop.cancel();
    let stats = within("worker stops", handle).await.unwrap();
    assert_eq!(stats.completed, 2);
    assert_eq!(
        within("a", a).await.unwrap().result,
        Some(json!("finished"))
    );
    assert_eq!(
        within("b", b).await.unwrap().result,
        Some(json!("finished"))
    );
    // The third was never taken; it waits for the next worker.
    let (_next, _) = spawn_worker(&broker.url(), "next", "warm", 1, "job", |_| async {
        Ok(json!("next"))
    });
    assert_eq!(
        within("c", c).await.unwrap().worker.as_deref(),
        Some("next")
    );
}

#[tokio::test]
async fn sdk_worker_reconnects_after_the_network_drops_and_keeps_serving() {
    let broker = TestBroker::start().await;
    let proxy = CuttableProxy::start(broker.mqtt).await;
    let (_w, _) = spawn_worker(
        &format!("mqtt://{}", proxy.addr),
        "flaky-net",
        "net",
        2,
        "job",
        |t| async move { Ok(json!(t.arg::<i64>(0)?)) },
    );
    wait_consumers(&broker, "net", 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    assert_eq!(
        client.call("net", req(1), WAIT).await.unwrap().result,
        Some(json!(1))
    );

    proxy.cut_all();
    wait_consumers(&broker, "net", 0).await;
    // Submitted while the worker is away: it waits, then runs after the reconnect.
    let pending = client.submit("net", req(2)).await.unwrap();
    wait_consumers(&broker, "net", 1).await;
    let r = within("result after reconnect", pending).await.unwrap();
    assert_eq!(
        (r.result, r.worker.as_deref()),
        (Some(json!(2)), Some("flaky-net"))
    );
}

#[tokio::test]
async fn wildcard_shared_subscriptions_take_tasks_of_every_matching_queue() {
    let broker = TestBroker::start().await;
    let mut req = V5Peer::connect(broker.mqtt, "wild-req").await;
    // `+` in the first level still selects task topics.
    let mut by_level = V5Peer::connect(broker.mqtt, "by-level").await;
    by_level.subscribe("$share/h/+/only_here").await;
    req.publish_acked("tasks/only_here", r#"{"id":"c"}"#, Default::default())
        .await;
    assert_eq!(json(&by_level.next_publish().await)["id"], "c");
    // `tasks/+` takes every queue, including ones created after it subscribed.
    let mut any_queue = V5Peer::connect_with(broker.mqtt, "any-queue", |o| {
        o.set_receive_maximum(Some(5));
    })
    .await;
    any_queue.subscribe("$share/g/tasks/+").await;
    req.publish_acked("tasks/alpha", r#"{"id":"a"}"#, Default::default())
        .await;
    req.publish_acked("tasks/beta", r#"{"id":"b"}"#, Default::default())
        .await;
    let mut got = vec![
        json(&any_queue.next_publish().await)["id"]
            .as_str()
            .unwrap()
            .to_string(),
        json(&any_queue.next_publish().await)["id"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    got.sort();
    assert_eq!(got, ["a", "b"]);
}
