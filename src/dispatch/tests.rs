//! Pure dispatcher logic, with time passed in: no broker, no sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::metrics::Metrics;
use crate::queue::{QueueStore, SyncMode};
use crate::settings::{Settings, Sources};

fn dispatcher(overrides: &[(&str, &str)]) -> (Dispatcher, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::load(&Sources {
        overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Sources::default()
    })
    .unwrap();
    let store = QueueStore::open(dir.path(), SyncMode::Buffer).unwrap();
    let d = Dispatcher::recover(store, settings, Arc::new(Metrics::default())).unwrap();
    (d, dir)
}

fn submit(d: &Dispatcher, queue: &str, payload: &str, now: Instant) -> Vec<Outbound> {
    match d.submit(
        Submission {
            queue,
            payload: payload.as_bytes(),
            response_topic: Some("r".into()),
            ..Submission::default()
        },
        now,
    ) {
        SubmitOutcome::Accepted(out) => out,
        other => panic!("not accepted: {other:?}"),
    }
}

fn delivered_to(out: &[Outbound]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Outbound::Deliver { worker, .. } => Some(worker.clone()),
            Outbound::Reply { .. } => None,
        })
        .collect()
}

fn task_id(out: &Outbound) -> String {
    match out {
        Outbound::Deliver { task_id, .. } => task_id.clone(),
        Outbound::Reply { .. } => panic!("not a delivery"),
    }
}

fn reply_json(out: &[Outbound]) -> serde_json::Value {
    out.iter()
        .find_map(|o| match o {
            Outbound::Reply { payload, .. } => serde_json::from_slice(payload).ok(),
            Outbound::Deliver { .. } => None,
        })
        .expect("a reply")
}

#[test]
fn topic_filters_match_like_mqtt() {
    assert!(filter_matches("tasks/q", "tasks/q"));
    assert!(filter_matches("tasks/+", "tasks/q"));
    assert!(filter_matches("tasks/#", "tasks/q"));
    assert!(filter_matches("#", "tasks/q"));
    assert!(!filter_matches("tasks/q", "tasks/r"));
    assert!(!filter_matches("tasks/+", "tasks/q/x"));
    assert!(!filter_matches("tasks", "tasks/q"));
}

#[test]
fn request_validation_names_the_field() {
    assert!(parse_request(br#"{"task":"t","args":[1],"kwargs":{"a":1},"id":"x"}"#).is_ok());
    let e = parse_request(br#"{"args":"x","reply_to":"r","correlation_id":"c"}"#).unwrap_err();
    assert!(e.message.contains("`args` must be an array, got a string"));
    assert_eq!(e.reply_to.unwrap().correlation_id.as_deref(), Some("c"));
    assert!(parse_request(br#"{"reply_to":"a/+"}"#).is_err());
    assert!(parse_request(br#"{"task":""}"#).is_err());
    assert!(parse_request(format!(r#"{{"id":"{}"}}"#, "x".repeat(300)).as_bytes()).is_err());
    assert!(
        parse_request(b"12")
            .unwrap_err()
            .message
            .contains("got a number")
    );
}

#[test]
fn least_loaded_worker_first_and_never_over_capacity() {
    let (d, _dir) = dispatcher(&[]);
    let now = Instant::now();
    assert!(
        d.worker_subscribed("small", 1, 1, "tasks/q", now)
            .is_empty()
    );
    assert!(d.worker_subscribed("big", 2, 3, "tasks/q", now).is_empty());
    let mut got = Vec::new();
    for i in 0..6 {
        got.extend(delivered_to(&submit(
            &d,
            "q",
            &format!(r#"{{"args":[{i}]}}"#),
            now,
        )));
    }
    // big (3 free) first, then they alternate as free slots equalise; 4 fit.
    assert_eq!(got.len(), 4);
    assert_eq!(got.iter().filter(|w| *w == "big").count(), 3);
    assert_eq!(got.iter().filter(|w| *w == "small").count(), 1);
    assert_eq!(got[0], "big");
    assert_eq!(d.queues()[0].waiting, 2);
}

#[test]
fn result_frees_a_slot_and_feeds_the_next_task() {
    let (d, _dir) = dispatcher(&[]);
    let now = Instant::now();
    d.worker_subscribed("w", 1, 1, "tasks/q", now);
    let first = submit(&d, "q", "{}", now);
    assert!(submit(&d, "q", "{}", now).is_empty(), "capacity 1");
    let id = task_id(&first[0]);
    let out = d.complete("w", Some(id.as_bytes()), br#"{"result":7}"#, now);
    let r = reply_json(&out);
    assert_eq!(
        (r["status"].clone(), r["result"].clone()),
        (json!("success"), json!(7))
    );
    assert_eq!(
        delivered_to(&out),
        ["w"],
        "the waiting task follows at once"
    );
    // A second reply to the same task is ignored.
    assert!(d.complete("w", Some(id.as_bytes()), b"{}", now).is_empty());
}

#[test]
fn expired_lease_goes_back_to_the_front_and_counts_an_attempt() {
    let (d, _dir) = dispatcher(&[
        ("tasks.lease_timeout_ms", "1000"),
        ("tasks.max_attempts", "2"),
    ]);
    let t0 = Instant::now();
    d.worker_subscribed("hung", 1, 1, "tasks/q", t0);
    let first = submit(&d, "q", r#"{"id":"a"}"#, t0);
    submit(&d, "q", r#"{"id":"b"}"#, t0);
    assert_eq!(task_id(&first[0]), "a");
    assert!(d.tick(t0 + Duration::from_millis(999)).is_empty());
    // The lease runs out: `a` is redelivered (to the same, only worker) first.
    let out = d.tick(t0 + Duration::from_millis(1000));
    assert_eq!(out.len(), 1);
    assert_eq!(task_id(&out[0]), "a");
    assert!(d.lease_held_by("a", "hung"));
    // Second expiry: max_attempts reached, the requester gets a failure.
    let out = d.tick(t0 + Duration::from_millis(2000));
    let r = reply_json(&out);
    assert_eq!(r["status"], "failure");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("gave up after 2 attempts")
    );
    assert_eq!(r["attempts"], 2);
    assert_eq!(
        task_id(
            out.iter()
                .find(|o| matches!(o, Outbound::Deliver { .. }))
                .unwrap()
        ),
        "b"
    );
}

#[test]
fn worker_gone_requeues_in_submission_order_and_ignores_stale_connections() {
    let (d, _dir) = dispatcher(&[]);
    let now = Instant::now();
    d.worker_subscribed("w", 7, 3, "tasks/q", now);
    for id in ["a", "b", "c"] {
        submit(&d, "q", &format!(r#"{{"id":"{id}"}}"#), now);
    }
    // A disconnect of an older connection with the same client id changes nothing.
    assert!(d.worker_gone("w", 6, now).is_empty());
    assert_eq!(d.in_flight(), 3);
    assert!(d.worker_gone("w", 7, now).is_empty());
    assert_eq!(d.in_flight(), 0);
    let out = d.worker_subscribed("w2", 8, 3, "tasks/+", now);
    let ids: Vec<String> = out.iter().map(task_id).collect();
    assert_eq!(ids, ["a", "b", "c"]);
}

#[test]
fn tasks_survive_a_restart_of_the_dispatcher() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::defaults().unwrap();
    let now = Instant::now();
    {
        let store = QueueStore::open(dir.path(), SyncMode::Buffer).unwrap();
        let d = Dispatcher::recover(store, settings.clone(), Arc::new(Metrics::default())).unwrap();
        submit(&d, "q", r#"{"id":"x","args":[1]}"#, now);
        submit(&d, "q", r#"{"id":"y"}"#, now);
        d.worker_subscribed("w", 1, 1, "tasks/q", now);
        // x is in flight at the "crash"; y waits.
    }
    let store = QueueStore::open(dir.path(), SyncMode::Buffer).unwrap();
    let d = Dispatcher::recover(store, settings, Arc::new(Metrics::default())).unwrap();
    assert_eq!(d.queues()[0].waiting, 2);
    let out = d.worker_subscribed("w", 2, 2, "tasks/q", now);
    let ids: Vec<String> = out.iter().map(task_id).collect();
    assert_eq!(ids, ["x", "y"]);
}

#[test]
fn revoke_takes_a_waiting_task_out_and_answers_revoked() {
    let (d, _dir) = dispatcher(&[]);
    let now = Instant::now();
    submit(&d, "q", r#"{"id":"a"}"#, now);
    submit(&d, "q", r#"{"id":"b"}"#, now);
    let out = d.revoke("a").unwrap();
    let r = reply_json(&out);
    assert_eq!(
        (r["id"].as_str(), r["status"].as_str()),
        (Some("a"), Some("revoked"))
    );
    let waiting: Vec<String> = d
        .waiting_tasks("q", 10)
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(waiting, ["b"]);
    assert!(matches!(d.revoke("a"), Err(ActionError::NotFound(_))));
    // A leased task is with a worker: not revocable.
    let out = d.worker_subscribed("w", 1, 1, "tasks/q", now);
    assert_eq!(delivered_to(&out), ["w"]);
    assert!(matches!(d.revoke("b"), Err(ActionError::Running(_))));
    assert_eq!(d.metrics().finished(Status::Revoked), 1);
}

#[test]
fn purge_revokes_every_waiting_task_and_leaves_leased_ones() {
    let (d, _dir) = dispatcher(&[]);
    let now = Instant::now();
    for i in 0..5 {
        submit(&d, "q", &format!(r#"{{"id":"t{i}"}}"#), now);
    }
    d.worker_subscribed("w", 1, 1, "tasks/q", now);
    let (n, out) = d.purge("q").unwrap();
    assert_eq!(n, 4);
    assert_eq!(out.len(), 4);
    assert_eq!(d.queues()[0].waiting, 0);
    assert_eq!(d.queues()[0].in_flight, 1);
    assert!(matches!(d.purge("nope"), Err(ActionError::UnknownQueue(_))));
}

#[test]
fn resubmit_runs_a_finished_task_again_under_its_id() {
    let (d, _dir) = dispatcher(&[]);
    let now = Instant::now();
    submit(&d, "q", r#"{"id":"x","args":[1]}"#, now);
    d.revoke("x").unwrap();
    let task = StoredTask {
        id: "x".into(),
        queue: "q".into(),
        task: "t".into(),
        args: vec![json!(1)],
        kwargs: Map::new(),
        reply: None,
        user_properties: vec![],
        submitted_at_us: 0,
        expires_at_us: None,
        attempts: 3,
    };
    assert!(d.resubmit(task.clone(), now).unwrap().is_empty());
    assert!(d.is_unfinished("x"));
    assert!(matches!(
        d.resubmit(task.clone(), now),
        Err(ActionError::Unfinished(_))
    ));
    let out = d.worker_subscribed("w", 1, 1, "tasks/q", now);
    assert_eq!(delivered_to(&out), ["w"]);
    // Attempts start over.
    match &out[0] {
        Outbound::Deliver { payload, .. } => {
            let m: serde_json::Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(m["attempt"], 1);
        }
        Outbound::Reply { .. } => unreachable!(),
    }
}
