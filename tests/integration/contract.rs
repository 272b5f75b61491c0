//! The wire contract, line by line: submitting, taking, answering, results,
//! bad input. Clients are raw rumqttc (3.1.1 and 5.0) and the SDK.

use rumqttc::v5::mqttbytes::v5::{PubAckReason, PublishProperties};
use serde_json::json;
use swarmq_worker::wire::TaskRequest;
use swarmq_worker::{Client, TaskError};

use crate::support::*;

#[tokio::test]
async fn v5_request_gets_result_with_contract_fields_and_correlation() {
    let broker = TestBroker::start().await;
    let (_w, _) = spawn_worker(
        &broker.url(),
        "w-mapper",
        "word_count",
        4,
        "mapper",
        |t| async move {
            let word: String = t.arg(0)?;
            Ok(json!([word, 1]))
        },
    );
    wait_consumers(&broker, "word_count", 1).await;

    let mut req = V5Peer::connect(broker.mqtt, "requester").await;
    req.subscribe("replies/me").await;
    let code = req
        .publish_acked(
            "tasks/word_count",
            r#"{"task":"mapper","args":["Fables"],"id":"t-1"}"#,
            reply_props("replies/me", "42"),
        )
        .await;
    assert_eq!(code, PubAckReason::Success);
    let p = req.next_publish().await;
    assert_eq!(topic(&p), "replies/me");
    let props = p.properties.clone().unwrap_or_default();
    assert_eq!(props.correlation_data.as_deref(), Some(&b"42"[..]));
    let r = json(&p);
    assert_eq!(r["id"], "t-1");
    assert_eq!(r["queue"], "word_count");
    assert_eq!(r["task"], "mapper");
    assert_eq!(r["status"], "success");
    assert_eq!(r["result"], json!(["Fables", 1]));
    assert_eq!(r["worker"], "w-mapper");
    assert_eq!(r["attempts"], 1);
    assert!(r["queued_ms"].as_f64().is_some_and(|v| v >= 0.0));
    assert!(r["run_ms"].as_f64().is_some_and(|v| v >= 0.0));
}

#[tokio::test]
async fn task_name_defaults_to_queue_and_everything_is_optional() {
    let broker = TestBroker::start().await;
    let (_w, _) = spawn_worker(&broker.url(), "w-echo", "echo", 1, "echo", |t| async move {
        Ok(json!({"args": t.args, "kwargs": t.kwargs, "task": t.task}))
    });
    wait_consumers(&broker, "echo", 1).await;
    let mut req = V5Peer::connect(broker.mqtt, "req-defaults").await;
    req.subscribe("r/defaults").await;
    req.publish_acked("tasks/echo", "{}", reply_props("r/defaults", "c"))
        .await;
    let r = json(&req.next_publish().await);
    assert_eq!(r["status"], "success");
    assert_eq!(
        r["result"],
        json!({"args": [], "kwargs": {}, "task": "echo"})
    );
    assert_eq!(
        r["id"].as_str().map(str::len),
        Some(26),
        "generated ULID id"
    );
}

#[tokio::test]
async fn v311_requester_v311_worker_and_wildcard_observer_together() {
    let broker = TestBroker::start().await;
    // An observer on '#' (3.1.1), as `mosquitto_sub -t '#'` would be.
    let mut observer = V4Peer::connect(broker.mqtt, "observer").await;
    observer.subscribe("#").await;
    // A raw 3.1.1 worker: takes tasks through a shared subscription and
    // answers with the `id` field, as a microcontroller would.
    let mut worker = V4Peer::connect(broker.mqtt, "v4-worker").await;
    worker.subscribe("$share/g/tasks/q311").await;
    wait_consumers(&broker, "q311", 1).await;
    // 3.1.1 has no Receive Maximum: the configured default capacity applies.
    assert_eq!(broker.engine.workers()[0].capacity, 1);
    // A v5 requester and a 3.1.1 requester at once.
    let mut v5 = V5Peer::connect(broker.mqtt, "v5-req").await;
    v5.subscribe("replies/v5").await;
    let mut v4 = V4Peer::connect(broker.mqtt, "v4-req").await;
    v4.subscribe("replies/v4").await;

    v5.publish_acked(
        "tasks/q311",
        r#"{"args":[1]}"#,
        reply_props("replies/v5", "c5"),
    )
    .await;
    v4.publish(
        "tasks/q311",
        r#"{"args":[2],"reply_to":"replies/v4","correlation_id":"c4"}"#,
    )
    .await;

    for _ in 0..2 {
        let task = worker.next_publish().await;
        assert_eq!(task.topic, "tasks/q311");
        let msg: serde_json::Value = serde_json::from_slice(&task.payload).unwrap();
        assert_eq!(msg["reply_to"], "swarmq/results/q311");
        let n = msg["args"][0].as_i64().unwrap();
        let reply = json!({"id": msg["id"], "result": n * 10});
        worker
            .publish(msg["reply_to"].as_str().unwrap(), reply.to_string())
            .await;
    }
    let r5 = v5.next_publish().await;
    assert_eq!(json(&r5)["result"], 10);
    assert_eq!(
        r5.properties
            .unwrap_or_default()
            .correlation_data
            .as_deref(),
        Some(&b"c5"[..])
    );
    let r4: serde_json::Value = serde_json::from_slice(&v4.next_publish().await.payload).unwrap();
    assert_eq!(r4["result"], 20);
    assert_eq!(r4["correlation_id"], "c4");
    assert_eq!(r4["worker"], "v4-worker");

    // The observer saw the task copies and both results, and is still connected.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(observer.next_publish().await.topic);
    }
    assert!(
        seen.iter().filter(|t| *t == "tasks/q311").count() >= 2,
        "{seen:?}"
    );
    assert!(seen.contains(&"replies/v4".to_string()), "{seen:?}");
}

#[tokio::test]
async fn every_qos_is_accepted_for_submission() {
    let broker = TestBroker::start().await;
    let (_w, _) = spawn_worker(&broker.url(), "w-qos", "qos", 3, "qos", |t| async move {
        Ok(json!(t.args[0]))
    });
    wait_consumers(&broker, "qos", 1).await;
    let mut v4 = V4Peer::connect(broker.mqtt, "qos-req").await;
    v4.subscribe("r/qos").await;
    for (i, qos) in [
        rumqttc::QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce,
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({"task": "qos", "args": [i], "reply_to": "r/qos"}).to_string();
        v4.client
            .publish("tasks/qos", qos, false, body)
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let r: serde_json::Value =
            serde_json::from_slice(&v4.next_publish().await.payload).unwrap();
        got.push(r["result"].as_i64().unwrap());
    }
    got.sort();
    assert_eq!(got, [0, 1, 2]);
}

#[tokio::test]
async fn bad_input_is_rejected_with_reason_and_counted_and_nothing_else_breaks() {
    let broker = TestBroker::start_with(&[("tasks.max_payload_bytes", "2048")]).await;
    let (_w, _) = spawn_worker(&broker.url(), "w-bad", "good", 1, "good", |_| async move {
        Ok(json!("ok"))
    });
    wait_consumers(&broker, "good", 1).await;
    let mut req = V5Peer::connect(broker.mqtt, "bad-req").await;
    req.subscribe("r/bad").await;

    let cases: Vec<(&str, Vec<u8>, PubAckReason, &str)> = vec![
        (
            "tasks/good",
            b"not json".to_vec(),
            PubAckReason::PayloadFormatInvalid,
            "not JSON",
        ),
        (
            "tasks/good",
            b"[1,2]".to_vec(),
            PubAckReason::PayloadFormatInvalid,
            "JSON object",
        ),
        (
            "tasks/good",
            br#"{"args":"x"}"#.to_vec(),
            PubAckReason::PayloadFormatInvalid,
            "`args` must be an array",
        ),
        (
            "tasks/good",
            br#"{"kwargs":[1]}"#.to_vec(),
            PubAckReason::PayloadFormatInvalid,
            "`kwargs` must be an object",
        ),
        (
            "tasks/good",
            br#"{"task":7}"#.to_vec(),
            PubAckReason::PayloadFormatInvalid,
            "`task` must be a string",
        ),
        (
            "tasks/good",
            br#"{"id":5}"#.to_vec(),
            PubAckReason::PayloadFormatInvalid,
            "`id` must be a string",
        ),
        (
            "tasks/good",
            format!(r#"{{"args":["{}"]}}"#, "x".repeat(3000)).into_bytes(),
            PubAckReason::PayloadFormatInvalid,
            "exceeds the limit",
        ),
        (
            "tasks/bad name",
            b"{}".to_vec(),
            PubAckReason::TopicNameInvalid,
            "invalid queue name",
        ),
        (
            "tasks/a/b",
            b"{}".to_vec(),
            PubAckReason::TopicNameInvalid,
            "invalid queue name",
        ),
        (
            &*Box::leak(format!("tasks/{}", "q".repeat(65)).into_boxed_str()),
            b"{}".to_vec(),
            PubAckReason::TopicNameInvalid,
            "invalid queue name",
        ),
    ];
    for (i, (topic_name, payload, code, message)) in cases.iter().enumerate() {
        let got = req
            .publish_acked(
                topic_name,
                payload.clone(),
                reply_props("r/bad", &format!("bad{i}")),
            )
            .await;
        assert_eq!(got, *code, "case {i} on {topic_name}");
        let p = req.next_publish().await;
        let r = json(&p);
        assert_eq!(r["status"], "rejected", "case {i}");
        assert!(
            r["error"].as_str().unwrap().contains(message),
            "case {i}: {r}"
        );
        assert_eq!(
            p.properties.unwrap_or_default().correlation_data.as_deref(),
            Some(format!("bad{i}").as_bytes())
        );
    }
    // A 3.1.1 requester whose payload is an object with a bad field still
    // hears why, on its reply_to.
    let mut v4 = V4Peer::connect(broker.mqtt, "bad-v4").await;
    v4.subscribe("r/bad4").await;
    v4.publish(
        "tasks/good",
        r#"{"args":{"no":1},"reply_to":"r/bad4","correlation_id":"k"}"#,
    )
    .await;
    let r: serde_json::Value = serde_json::from_slice(&v4.next_publish().await.payload).unwrap();
    assert_eq!(
        (r["status"].as_str(), r["correlation_id"].as_str()),
        (Some("rejected"), Some("k"))
    );

    // Nothing else was disturbed: a good task still runs.
    req.publish_acked("tasks/good", "{}", reply_props("r/bad", "fine"))
        .await;
    assert_eq!(json(&req.next_publish().await)["status"], "success");
    let (_, metrics) = broker.http_get("/metrics").await;
    assert!(
        metrics.contains("swarmq_tasks_rejected_total{reason=\"invalid_payload\"} 7"),
        "{metrics}"
    );
    assert!(metrics.contains("swarmq_tasks_rejected_total{reason=\"payload_too_large\"} 1"));
    assert!(metrics.contains("swarmq_tasks_rejected_total{reason=\"invalid_queue\"} 3"));
}

#[tokio::test]
async fn full_queue_refuses_instead_of_dropping() {
    let broker = TestBroker::start_with(&[("queues.small.max_length", "3")]).await;
    let mut req = V5Peer::connect(broker.mqtt, "full-req").await;
    req.subscribe("r/full").await;
    for i in 0..3 {
        let code = req
            .publish_acked(
                "tasks/small",
                format!(r#"{{"args":[{i}]}}"#),
                reply_props("r/full", "x"),
            )
            .await;
        assert_eq!(code, PubAckReason::Success);
    }
    let code = req
        .publish_acked("tasks/small", "{}", reply_props("r/full", "over"))
        .await;
    assert_eq!(code, PubAckReason::QuotaExceeded);
    let r = json(&req.next_publish().await);
    assert_eq!(r["status"], "rejected");
    assert!(r["error"].as_str().unwrap().contains("is full"));
    // 3.1.1: a `rejected` result on reply_to.
    let mut v4 = V4Peer::connect(broker.mqtt, "full-v4").await;
    v4.subscribe("r/full4").await;
    v4.publish("tasks/small", r#"{"reply_to":"r/full4"}"#).await;
    let r: serde_json::Value = serde_json::from_slice(&v4.next_publish().await.payload).unwrap();
    assert_eq!(r["status"], "rejected");
    // The three accepted tasks are all still there.
    assert_eq!(broker.engine.queues()[0].waiting, 3);
}

#[tokio::test]
async fn unknown_queue_is_refused_when_auto_create_is_off() {
    let broker = TestBroker::start_with(&[
        ("tasks.auto_create_queues", "false"),
        ("queues.declared.max_attempts", "2"),
    ])
    .await;
    let mut req = V5Peer::connect(broker.mqtt, "unk").await;
    req.subscribe("r/unk").await;
    assert_eq!(
        req.publish_acked("tasks/undeclared", "{}", reply_props("r/unk", "1"))
            .await,
        PubAckReason::TopicNameInvalid
    );
    assert!(
        json(&req.next_publish().await)["error"]
            .as_str()
            .unwrap()
            .contains("unknown queue")
    );
    assert_eq!(
        req.publish_acked("tasks/declared", "{}", PublishProperties::default())
            .await,
        PubAckReason::Success
    );
}

#[tokio::test]
async fn duplicate_id_is_acknowledged_but_not_run_twice() {
    let broker = TestBroker::start().await;
    let mut req = V5Peer::connect(broker.mqtt, "dup").await;
    for _ in 0..3 {
        let code = req
            .publish_acked(
                "tasks/dup",
                r#"{"id":"same"}"#,
                PublishProperties::default(),
            )
            .await;
        assert_eq!(code, PubAckReason::Success);
    }
    assert_eq!(broker.engine.queues()[0].waiting, 1);
    let (_, metrics) = broker.http_get("/metrics").await;
    assert!(metrics.contains("swarmq_tasks_duplicate_total 2"));
}

#[tokio::test]
async fn plain_subscriber_observes_a_copy_without_taking_the_task() {
    let broker = TestBroker::start().await;
    let mut observer = V5Peer::connect(broker.mqtt, "obs").await;
    observer.subscribe("tasks/observed").await;
    let mut req = V5Peer::connect(broker.mqtt, "obs-req").await;
    req.publish_acked(
        "tasks/observed",
        r#"{"args":["a"]}"#,
        PublishProperties::default(),
    )
    .await;
    let copy = observer.next_publish().await;
    assert_eq!(json(&copy)["args"], json!(["a"]));
    // Still waiting for a worker: the observer took nothing.
    assert_eq!(broker.engine.queues()[0].waiting, 1);
    let (_w, _) = spawn_worker(
        &broker.url(),
        "w-obs",
        "observed",
        1,
        "observed",
        |_| async { Ok(json!(1)) },
    );
    eventually("task done", || async {
        broker.engine.queues()[0].waiting == 0 && broker.engine.in_flight() == 0
    })
    .await;
}

#[tokio::test]
async fn worker_may_ask_for_retry_and_errors_and_panics_become_failures() {
    let broker =
        TestBroker::start_with(&[("tasks.max_attempts", "3"), ("tasks.backoff_ms", "50")]).await;
    let (_w, _) = spawn_worker(
        &broker.url(),
        "w-flaky",
        "flaky",
        2,
        "flaky",
        |t| async move {
            match t.arg::<String>(0)?.as_str() {
                "retry-once" if t.attempt == 1 => Err(TaskError::retry("not yet")),
                "retry-once" => Ok(json!(t.attempt)),
                "always-retry" => Err(TaskError::retry("never")),
                "fail" => Err(TaskError::failed("boom")),
                "panic" => panic!("handler bug"),
                other => Ok(json!(other)),
            }
        },
    );
    wait_consumers(&broker, "flaky", 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    let call = |arg: &str| {
        let req = TaskRequest {
            task: Some("flaky".into()),
            args: vec![json!(arg)],
            ..TaskRequest::default()
        };
        client.call("flaky", req, WAIT)
    };
    let r = call("retry-once").await.unwrap();
    assert_eq!(
        (r.status.as_str(), r.result.clone(), r.attempts),
        ("success", Some(json!(2)), 2)
    );
    let r = call("always-retry").await.unwrap();
    assert_eq!(r.status.as_str(), "failure");
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{r:?}"
    );
    let r = call("fail").await.unwrap();
    assert_eq!(
        (r.status.as_str(), r.error.as_deref()),
        ("failure", Some("boom"))
    );
    let r = call("panic").await.unwrap();
    assert_eq!(
        (r.status.as_str(), r.error.as_deref()),
        ("failure", Some("handler panicked"))
    );
    // The worker survived its handler's panic.
    assert_eq!(
        call("still-alive").await.unwrap().result,
        Some(json!("still-alive"))
    );
    // An unknown task name on a served queue fails cleanly.
    let req = TaskRequest {
        task: Some("nope".into()),
        ..TaskRequest::default()
    };
    let r = client.call("flaky", req, WAIT).await.unwrap();
    assert!(r.error.unwrap().contains("no handler for task `nope`"));
}

#[tokio::test]
async fn message_expiry_answers_expired_when_no_worker_took_the_task() {
    let broker = TestBroker::start().await;
    let mut req = V5Peer::connect(broker.mqtt, "exp").await;
    req.subscribe("r/exp").await;
    let props = PublishProperties {
        message_expiry_interval: Some(1),
        ..reply_props("r/exp", "e")
    };
    req.publish_acked("tasks/nobody", "{}", props).await;
    let r = json(&req.next_publish().await);
    assert_eq!(r["status"], "expired");
    assert_eq!(broker.engine.queues()[0].waiting, 0);
}

#[tokio::test]
async fn worker_reply_without_task_id_is_ignored_and_counted() {
    let broker = TestBroker::start().await;
    let mut w = V4Peer::connect(broker.mqtt, "noid").await;
    w.publish("swarmq/results/q", r#"{"result": 1}"#).await;
    w.expect("puback", |p| matches!(p, rumqttc::Packet::PubAck(_)))
        .await;
    let (_, metrics) = broker.http_get("/metrics").await;
    assert!(
        metrics.contains("swarmq_worker_replies_ignored_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn v5_user_properties_travel_with_the_task_to_the_worker() {
    let broker = TestBroker::start().await;
    let (_w, _) = spawn_worker(
        &broker.url(),
        "w-props",
        "props",
        1,
        "props",
        |t| async move { Ok(json!(t.user_properties)) },
    );
    wait_consumers(&broker, "props", 1).await;
    let mut req = V5Peer::connect(broker.mqtt, "props-req").await;
    req.subscribe("r/props").await;
    let props = PublishProperties {
        user_properties: vec![
            ("trace".into(), "abc".into()),
            ("site".into(), "pi-2".into()),
        ],
        ..reply_props("r/props", "p")
    };
    req.publish_acked("tasks/props", "{}", props).await;
    let r = json(&req.next_publish().await);
    assert_eq!(r["result"], json!([["trace", "abc"], ["site", "pi-2"]]));
}
