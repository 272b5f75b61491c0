//! The engine's logic with a manual clock and an in-memory outbox: no
//! broker, no sockets, no sleeping.

use std::sync::Arc;

use serde_json::{Value, json};
use swarmq_worker::wire::Status;

use super::*;
use crate::metrics::Metrics;
use crate::queue::{FjallStore, SyncMode};

const T0: u64 = 1_800_000_000_000_000;

struct Rig {
    engine: Engine,
    clock: Arc<clock::ManualClock>,
    outbox: Arc<MemoryOutbox>,
    dir: tempfile::TempDir,
}

fn limits() -> QueueLimits {
    QueueLimits {
        max_length: 1_000_000,
        lease_timeout_ms: 300_000,
        max_per_worker: 0,
        max_in_flight: 0,
        rate_limit: None,
        retry: RetryPolicy {
            max_attempts: 5,
            backoff_ms: 1000,
            backoff_max_ms: 600_000,
            jitter: false,
        },
    }
}

fn config(l: QueueLimits) -> EngineConfig {
    EngineConfig {
        max_payload_bytes: 262_144,
        auto_create_queues: true,
        dedupe_window: 1000,
        max_dead_letters: 100,
        default_limits: l,
        queues: Default::default(),
        flapping: FlapPolicy {
            threshold: 3,
            window_ms: 60_000,
            quarantine_ms: 5_000,
            quarantine_max_ms: 300_000,
        },
        workflow_limits: crate::engine::WorkflowLimits {
            max_bytes: 1 << 20,
            max_members: 10_000,
            max_depth: 8,
        },
    }
}

fn rig_with(l: QueueLimits) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(clock::ManualClock::at(T0));
    let outbox = Arc::new(MemoryOutbox::default());
    let engine = start(&dir, &clock, &outbox, l);
    Rig {
        engine,
        clock,
        outbox,
        dir,
    }
}

fn rig() -> Rig {
    rig_with(limits())
}

fn start(
    dir: &tempfile::TempDir,
    clock: &Arc<clock::ManualClock>,
    outbox: &Arc<MemoryOutbox>,
    l: QueueLimits,
) -> Engine {
    Engine::recover(EngineParts {
        store: Box::new(FjallStore::open(dir.path(), SyncMode::Buffer).unwrap()),
        config: config(l),
        clock: Box::new(clock.clone()),
        metrics: Arc::new(Metrics::default()),
        outbox: Box::new(outbox.clone()),
        events: None,
    })
    .unwrap()
}

impl Rig {
    fn submit(&self, queue: &str, payload: &str) {
        match self.engine.submit(Submission {
            queue,
            payload: payload.as_bytes(),
            response_topic: Some("r".into()),
            ..Submission::default()
        }) {
            SubmitOutcome::Accepted => {}
            other => panic!("not accepted: {other:?}"),
        }
    }

    /// Moves the clock and runs the timer.
    fn at_ms(&self, ms: u64) {
        let now = self.clock.now_us();
        let target = T0 + ms * 1000;
        assert!(target >= now, "the clock only moves forward");
        self.clock.advance_ms((target - now) / 1000);
        self.engine.tick();
    }

    fn effects(&self) -> Vec<Effect> {
        self.outbox.take()
    }

    /// Restarts the engine on the same store, as after kill -9 (nothing flushed
    /// beyond what `put` made durable).
    fn restart(self) -> Rig {
        let Rig {
            engine,
            clock,
            outbox,
            dir,
        } = self;
        drop(engine);
        let engine = start(&dir, &clock, &outbox, limits());
        Rig {
            engine,
            clock,
            outbox,
            dir,
        }
    }
}

fn delivered(fx: &[Effect]) -> Vec<(String, String)> {
    fx.iter()
        .filter_map(|o| match o {
            Effect::Deliver {
                worker, task_id, ..
            } => Some((worker.clone(), task_id.clone())),
            _ => None,
        })
        .collect()
}

fn delivered_ids(fx: &[Effect]) -> Vec<String> {
    delivered(fx).into_iter().map(|(_, id)| id).collect()
}

fn replies(fx: &[Effect]) -> Vec<Value> {
    fx.iter()
        .filter_map(|o| match o {
            Effect::Reply { payload, .. } => serde_json::from_slice(payload).ok(),
            _ => None,
        })
        .collect()
}

fn answer(r: &Rig, worker: &str, id: &str, body: Value) {
    r.engine.answer(
        worker,
        None,
        Some(id.as_bytes()),
        body.to_string().as_bytes(),
    );
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
fn least_loaded_worker_first_and_never_over_capacity() {
    let r = rig();
    r.engine.worker_subscribed("small", 1, 1, "tasks/q");
    r.engine.worker_subscribed("big", 2, 3, "tasks/q");
    for i in 0..6 {
        r.submit("q", &format!(r#"{{"args":[{i}]}}"#));
    }
    let got: Vec<String> = delivered(&r.effects())
        .into_iter()
        .map(|(w, _)| w)
        .collect();
    // big (3 free) first, then they alternate as free slots equalise; 4 fit.
    assert_eq!(got.len(), 4);
    assert_eq!(got.iter().filter(|w| *w == "big").count(), 3);
    assert_eq!(got[0], "big");
    assert_eq!(r.engine.queues()[0].waiting, 2);
}

#[test]
fn result_frees_a_slot_and_feeds_the_next_task() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    r.submit("q", r#"{"id":"a"}"#);
    r.submit("q", r#"{"id":"b"}"#);
    assert_eq!(delivered_ids(&r.effects()), ["a"], "capacity 1");
    answer(&r, "w", "a", json!({"result": 7}));
    let fx = r.effects();
    let reply = &replies(&fx)[0];
    assert_eq!(
        (&reply["status"], &reply["result"]),
        (&json!("success"), &json!(7))
    );
    assert_eq!(
        delivered_ids(&fx),
        ["b"],
        "the waiting task follows at once"
    );
    // A second answer to the same task is ignored.
    answer(&r, "w", "a", json!({}));
    assert!(r.effects().is_empty());
}

#[test]
fn expired_lease_goes_back_to_the_front_and_counts_an_attempt() {
    let r = rig_with(QueueLimits {
        lease_timeout_ms: 1000,
        retry: RetryPolicy {
            max_attempts: 2,
            ..limits().retry
        },
        ..limits()
    });
    r.engine.worker_subscribed("hung", 1, 1, "tasks/q");
    r.submit("q", r#"{"id":"a"}"#);
    r.submit("q", r#"{"id":"b"}"#);
    assert_eq!(delivered_ids(&r.effects()), ["a"]);
    r.at_ms(999);
    assert!(r.effects().is_empty());
    // The lease runs out: `a` is redelivered at once, ahead of `b`.
    r.at_ms(1000);
    assert_eq!(delivered_ids(&r.effects()), ["a"]);
    assert!(r.engine.lease_held_by("a", "hung"));
    // Second expiry: attempts used up, the requester gets a failure.
    r.at_ms(2000);
    let fx = r.effects();
    let reply = &replies(&fx)[0];
    assert_eq!(reply["status"], "failure");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("gave up after 2 attempts")
    );
    assert_eq!(reply["attempts"], 2);
    assert_eq!(delivered_ids(&fx), ["b"]);
}

#[test]
fn worker_gone_requeues_in_submission_order_and_ignores_stale_connections() {
    let r = rig();
    r.engine.worker_subscribed("w", 7, 3, "tasks/q");
    for id in ["a", "b", "c"] {
        r.submit("q", &format!(r#"{{"id":"{id}"}}"#));
    }
    r.effects();
    // A disconnect of an older connection with the same client id changes nothing.
    r.engine.worker_gone("w", 6);
    assert_eq!(r.engine.in_flight(), 3);
    r.engine.worker_gone("w", 7);
    assert_eq!(r.engine.in_flight(), 0);
    r.engine.worker_subscribed("w2", 8, 3, "tasks/+");
    assert_eq!(delivered_ids(&r.effects()), ["a", "b", "c"]);
}

#[test]
fn a_new_connection_taking_over_a_worker_id_gets_back_what_the_old_one_held() {
    // The network-fault case: a worker gives up on a dead link and
    // reconnects with its client id before the broker notices the old
    // link died; the old connection's disconnect then comes last.
    let r = rig();
    r.engine.worker_subscribed("w", 7, 2, "tasks/q");
    for id in ["a", "b", "c"] {
        r.submit("q", &format!(r#"{{"id":"{id}"}}"#));
    }
    assert_eq!(delivered_ids(&r.effects()), ["a", "b"]);
    r.engine.worker_subscribed("w", 8, 2, "tasks/q");
    // Sent again on the new connection, in order, not left on its capacity.
    assert_eq!(delivered_ids(&r.effects()), ["a", "b"]);
    assert_eq!(r.engine.in_flight(), 2);
    r.engine.worker_gone("w", 7);
    assert_eq!(r.engine.in_flight(), 2);
}

#[test]
fn tasks_survive_a_restart_of_the_engine() {
    let r = rig();
    r.submit("q", r#"{"id":"x","args":[1]}"#);
    r.submit("q", r#"{"id":"y"}"#);
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    // x is in flight at the "crash"; y waits.
    let r = r.restart();
    assert_eq!(r.engine.queues()[0].waiting, 2);
    r.engine.worker_subscribed("w", 2, 2, "tasks/q");
    let fx = r.effects();
    assert_eq!(delivered_ids(&fx)[1..], ["x", "y"]);
}

#[test]
fn higher_priorities_go_first_and_fifo_within_a_priority() {
    let r = rig();
    for (id, p) in [
        ("low1", 0),
        ("mid1", 5),
        ("low2", 0),
        ("top", 9),
        ("mid2", 5),
    ] {
        r.submit("q", &format!(r#"{{"id":"{id}","priority":{p}}}"#));
    }
    r.engine.worker_subscribed("w", 1, 10, "tasks/q");
    assert_eq!(
        delivered_ids(&r.effects()),
        ["top", "mid1", "mid2", "low1", "low2"]
    );
}

#[test]
fn countdown_and_eta_wait_in_the_schedule_and_fire_on_time() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 10, "tasks/q");
    r.submit("q", r#"{"id":"later","countdown":2.5}"#);
    r.submit(
        "q",
        &format!(
            r#"{{"id":"eta","eta":"{}"}}"#,
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(T0 + 1_000_000)
            )
        ),
    );
    r.submit("q", r#"{"id":"past","eta":"2020-01-01T00:00:00Z"}"#);
    assert_eq!(delivered_ids(&r.effects()), ["past"]);
    assert_eq!(r.engine.queues()[0].scheduled, 2);
    r.at_ms(999);
    assert!(r.effects().is_empty());
    r.at_ms(1000);
    assert_eq!(delivered_ids(&r.effects()), ["eta"]);
    r.at_ms(2499);
    assert!(r.effects().is_empty());
    r.at_ms(2500);
    assert_eq!(delivered_ids(&r.effects()), ["later"]);
    assert_eq!(r.engine.queues()[0].scheduled, 0);
}

#[test]
fn scheduled_tasks_keep_their_time_across_a_restart() {
    let r = rig();
    r.submit("q", r#"{"id":"s","countdown":10}"#);
    r.at_ms(4000);
    let r = r.restart();
    assert_eq!(r.engine.queues()[0].scheduled, 1);
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    r.at_ms(9999);
    assert!(delivered_ids(&r.effects()).is_empty());
    r.at_ms(10_000);
    assert_eq!(delivered_ids(&r.effects()), ["s"]);
}

#[test]
fn a_retry_waits_out_the_backoff_and_the_last_attempt_fails_with_the_error() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    r.submit(
        "q",
        r#"{"id":"t","retry":{"max_attempts":3,"backoff_ms":100}}"#,
    );
    assert_eq!(delivered_ids(&r.effects()), ["t"]);
    answer(&r, "w", "t", json!({"error": "busy", "retry": true}));
    assert!(r.effects().is_empty());
    assert_eq!(r.engine.queues()[0].scheduled, 1);
    // Attempt 2 after backoff_ms x 2^0 = 100 ms (jitter off in this queue).
    r.at_ms(99);
    assert!(r.effects().is_empty());
    r.at_ms(100);
    assert_eq!(delivered_ids(&r.effects()), ["t"]);
    answer(&r, "w", "t", json!({"error": "busy", "retry": true}));
    // Attempt 3 after 200 ms.
    r.at_ms(299);
    assert!(r.effects().is_empty());
    r.at_ms(300);
    assert_eq!(delivered_ids(&r.effects()), ["t"]);
    answer(&r, "w", "t", json!({"error": "still busy", "retry": true}));
    let reply = &replies(&r.effects())[0];
    assert_eq!(reply["status"], "failure");
    assert_eq!(reply["attempts"], 3);
    assert!(reply["error"].as_str().unwrap().starts_with("still busy"));
}

#[test]
fn retry_in_overrides_the_backoff_and_jitter_stays_within_its_bounds() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    r.submit("q", r#"{"id":"t"}"#);
    r.effects();
    answer(
        &r,
        "w",
        "t",
        json!({"error": "later", "retry": true, "retry_in": 0.05}),
    );
    r.at_ms(49);
    assert!(r.effects().is_empty());
    r.at_ms(50);
    assert_eq!(delivered_ids(&r.effects()), ["t"]);

    let p = RetryPolicy {
        max_attempts: 5,
        backoff_ms: 1000,
        backoff_max_ms: 600_000,
        jitter: true,
    };
    let r = rig();
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    r.submit(
        "q",
        &format!(
            r#"{{"id":"j","retry":{}}}"#,
            serde_json::to_string(&p).unwrap()
        ),
    );
    r.effects();
    answer(&r, "w", "j", json!({"error": "x", "retry": true}));
    // The second attempt comes between d/2 = 500 ms and d = 1000 ms.
    let mut fired_at = None;
    for ms in (0..=1000).step_by(10) {
        r.at_ms(ms);
        if !delivered_ids(&r.effects()).is_empty() {
            fired_at = Some(ms);
            break;
        }
    }
    let fired_at = fired_at.expect("the retry fires within the backoff");
    assert!((500..=1000).contains(&fired_at), "fired at {fired_at} ms");
}

#[test]
fn progress_renews_the_lease_and_is_forwarded_only_when_asked() {
    let r = rig_with(QueueLimits {
        lease_timeout_ms: 1000,
        ..limits()
    });
    r.engine.worker_subscribed("w", 1, 2, "tasks/q");
    r.submit("q", r#"{"id":"quiet"}"#);
    r.submit("q", r#"{"id":"loud","progress":true}"#);
    r.effects();
    for ms in [800, 1600, 2400] {
        r.at_ms(ms);
        answer(&r, "w", "quiet", json!({"progress": ms}));
        answer(&r, "w", "loud", json!({"progress": {"done": ms}}));
    }
    let fx = r.effects();
    assert!(delivered_ids(&fx).is_empty(), "no lease ran out");
    let forwarded = replies(&fx);
    assert_eq!(forwarded.len(), 3);
    assert!(
        forwarded
            .iter()
            .all(|p| p["status"] == "progress" && p["id"] == "loud")
    );
    assert_eq!(forwarded[2]["progress"], json!({"done": 2400}));
    // Without progress the lease runs out 1 s after the last report.
    r.at_ms(3400);
    assert_eq!(delivered_ids(&r.effects()).len(), 2);
}

#[test]
fn expires_answers_expired_for_a_task_not_started_in_time() {
    let r = rig();
    r.submit("q", r#"{"id":"e","expires":1}"#);
    r.submit("q", r#"{"id":"s","countdown":5,"expires":2}"#);
    r.at_ms(1000);
    let out = replies(&r.effects());
    assert_eq!(
        (out[0]["id"].as_str(), out[0]["status"].as_str()),
        (Some("e"), Some("expired"))
    );
    r.at_ms(2000);
    let out = replies(&r.effects());
    assert_eq!(
        (out[0]["id"].as_str(), out[0]["status"].as_str()),
        (Some("s"), Some("expired"))
    );
    assert_eq!(
        r.engine.queues()[0].scheduled + r.engine.queues()[0].waiting,
        0
    );
}

#[test]
fn revoke_works_in_every_stage_and_tells_a_running_task_s_worker() {
    let r = rig();
    r.submit("q", r#"{"id":"sched","countdown":60}"#);
    r.submit("q", r#"{"id":"run"}"#);
    r.submit("q", r#"{"id":"wait"}"#);
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    r.effects();
    assert_eq!(r.engine.revoke("sched", "test"), RevokeOutcome::Revoked);
    assert_eq!(r.engine.revoke("wait", "test"), RevokeOutcome::Revoked);
    assert_eq!(r.engine.revoke("run", "test"), RevokeOutcome::Revoked);
    let fx = r.effects();
    let statuses: Vec<(String, String)> = replies(&fx)
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().into(),
                v["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("sched".into(), "revoked".into()),
            ("wait".into(), "revoked".into()),
            ("run".into(), "revoked".into())
        ]
    );
    assert!(fx.iter().any(|e| matches!(e,
        Effect::Control { worker, payload } if worker == "w" && payload.as_ref() == br#"{"cancel":"run"}"#)));
    // The worker's late answer is ignored; a second revoke finds it finished.
    answer(&r, "w", "run", json!({"result": 1}));
    assert!(r.effects().is_empty());
    assert_eq!(r.engine.revoke("run", "test"), RevokeOutcome::Finished);
    assert_eq!(r.engine.revoke("nope", "test"), RevokeOutcome::Unknown);
    let q = &r.engine.queues()[0];
    assert_eq!((q.scheduled, q.waiting, q.in_flight), (0, 0, 0));
    // Durable: nothing comes back after a restart.
    let r = r.restart();
    assert_eq!(
        r.engine
            .queues()
            .iter()
            .map(|q| q.waiting + q.scheduled)
            .sum::<usize>(),
        0
    );
}

#[test]
fn purge_revokes_waiting_and_scheduled_tasks_and_leaves_running_ones() {
    let r = rig();
    for i in 0..5 {
        r.submit("q", &format!(r#"{{"id":"t{i}"}}"#));
    }
    r.submit("q", r#"{"id":"later","countdown":30}"#);
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    r.effects();
    assert_eq!(r.engine.purge("q").unwrap(), 5);
    assert_eq!(replies(&r.effects()).len(), 5);
    let q = &r.engine.queues()[0];
    assert_eq!((q.waiting, q.scheduled, q.in_flight), (0, 0, 1));
    assert!(matches!(
        r.engine.purge("nope"),
        Err(ActionError::UnknownQueue(_))
    ));
}

#[test]
fn resubmit_runs_a_finished_task_again_under_its_id() {
    let r = rig();
    r.submit("q", r#"{"id":"x","args":[1]}"#);
    r.engine.revoke("x", "test");
    let mut task = StoredTask::new("x", "q", "t", vec![json!(1)]);
    task.attempts = 3;
    r.engine.resubmit(task.clone()).unwrap();
    assert!(r.engine.is_unfinished("x"));
    assert!(matches!(
        r.engine.resubmit(task),
        Err(ActionError::Unfinished(_))
    ));
    r.effects();
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    match &r.effects()[..] {
        [Effect::Deliver { payload, .. }] => {
            let m: Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(m["attempt"], 1, "attempts start over");
        }
        other => panic!("expected one delivery, got {other:?}"),
    }
}

#[test]
fn counts_stay_right_through_every_transition() {
    let r = rig_with(QueueLimits {
        lease_timeout_ms: 1000,
        ..limits()
    });
    r.engine.worker_subscribed("w", 1, 2, "tasks/q");
    r.submit("q", r#"{"id":"a"}"#);
    r.submit("q", r#"{"id":"b"}"#);
    r.submit("q", r#"{"id":"c","countdown":1}"#);
    r.submit("q", r#"{"id":"d","expires":0.5}"#);
    let q = |r: &Rig| {
        let q = &r.engine.queues()[0];
        (q.waiting, q.scheduled, q.in_flight)
    };
    assert_eq!(q(&r), (1, 1, 2));
    answer(
        &r,
        "w",
        "a",
        json!({"error": "x", "retry": true, "retry_in": 5}),
    );
    // a scheduled, d delivered in its place.
    assert_eq!(q(&r), (0, 2, 2));
    r.engine.worker_gone("w", 1);
    assert_eq!(q(&r), (2, 2, 0));
    r.at_ms(1000);
    assert_eq!(q(&r), (2, 1, 0), "c is due; d expired");
    assert_eq!(r.engine.purge("q").unwrap(), 3);
    assert_eq!(q(&r), (0, 0, 0));
    assert_eq!(r.engine.metrics().finished(Status::Revoked), 3);
    assert_eq!(r.engine.metrics().finished(Status::Expired), 1);
}

#[test]
fn exhausted_tasks_become_dead_letters_that_replay_with_a_fresh_count() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    r.submit(
        "q",
        r#"{"id":"d","args":[42],"priority":3,"retry":{"max_attempts":1}}"#,
    );
    r.submit("q", r#"{"id":"plain-failure"}"#);
    r.effects();
    answer(&r, "w", "d", json!({"error": "bad luck", "retry": true}));
    answer(&r, "w", "plain-failure", json!({"error": "final"}));
    let fx = replies(&r.effects());
    assert_eq!(fx.len(), 2);
    let page = r.engine.dead_letters("q", None, 10).unwrap();
    assert_eq!(page.total, 1, "only exhausted tasks are dead letters");
    let letter = &page.letters[0];
    assert_eq!((letter.task.id.as_str(), letter.attempts), ("d", 1));
    assert!(letter.error.starts_with("bad luck"));
    assert!(matches!(
        r.engine.replay_dead("q", "nope"),
        Err(ActionError::NotFound(_))
    ));
    r.engine.replay_dead("q", "d").unwrap();
    assert_eq!(r.engine.dead_letters("q", None, 10).unwrap().total, 0);
    match &r.effects()[..] {
        [
            Effect::Deliver {
                task_id, payload, ..
            },
        ] => {
            let m: Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(
                (task_id.as_str(), &m["attempt"], &m["args"]),
                ("d", &json!(1), &json!([42]))
            );
        }
        other => panic!("expected one delivery, got {other:?}"),
    }
    answer(&r, "w", "d", json!({"result": "fine"}));
    let reply = &replies(&r.effects())[0];
    assert_eq!(
        (&reply["id"], &reply["status"]),
        (&json!("d"), &json!("success"))
    );
    // Discard, and the bound: the store keeps the newest 100 of a queue.
    r.submit("q", r#"{"id":"gone","retry":{"max_attempts":1}}"#);
    answer(&r, "w", "gone", json!({"error": "x", "retry": true}));
    r.engine.discard_dead("q", "gone").unwrap();
    assert!(matches!(
        r.engine.discard_dead("q", "gone"),
        Err(ActionError::NotFound(_))
    ));
}

#[test]
fn a_rate_limit_spaces_starts_across_all_workers_and_max_in_flight_caps_them() {
    let r = rig_with(QueueLimits {
        rate_limit: RateLimit::parse("10/s"),
        ..limits()
    });
    for w in ["a", "b", "c"] {
        r.engine.worker_subscribed(w, 1, 10, "tasks/q");
    }
    for i in 0..5 {
        r.submit("q", &format!(r#"{{"id":"t{i}"}}"#));
    }
    // One start now, then one per 100 ms whichever worker is free.
    assert_eq!(delivered_ids(&r.effects()), ["t0"]);
    r.at_ms(99);
    assert!(r.effects().is_empty());
    r.at_ms(100);
    assert_eq!(delivered_ids(&r.effects()), ["t1"]);
    r.at_ms(350);
    assert_eq!(
        delivered_ids(&r.effects()),
        ["t2"],
        "no burst after a pause"
    );
    r.at_ms(450);
    assert_eq!(delivered_ids(&r.effects()), ["t3"]);

    let r = rig_with(QueueLimits {
        max_in_flight: 2,
        ..limits()
    });
    for w in ["a", "b", "c"] {
        r.engine.worker_subscribed(w, 1, 10, "tasks/q");
    }
    for i in 0..5 {
        r.submit("q", &format!(r#"{{"id":"m{i}"}}"#));
    }
    let first = delivered(&r.effects());
    assert_eq!(first.len(), 2);
    assert_eq!(r.engine.in_flight(), 2);
    let (worker, id) = &first[0];
    answer(&r, worker, id, json!({"result": 1}));
    assert_eq!(delivered_ids(&r.effects()), ["m2"]);
    assert_eq!(r.engine.in_flight(), 2);
}

#[test]
fn a_schedule_fires_each_due_time_once_and_after_downtime_only_the_latest_missed() {
    let spec = ScheduleSpec {
        name: "tick".into(),
        queue: "beat".into(),
        task: "tick".into(),
        args: vec![json!(1)],
        kwargs: Default::default(),
        reply_to: None,
        when: When::Every("1s".into()),
        timezone: "UTC".into(),
    };
    let r = rig();
    r.engine.worker_subscribed("w", 1, 100, "tasks/beat");
    r.engine.start_schedules(vec![spec.clone()]).unwrap();
    assert!(
        r.effects().is_empty(),
        "no firing before the first due time"
    );
    let mut seen = Vec::new();
    for ms in (250..=3000).step_by(250) {
        r.at_ms(ms);
        for id in delivered_ids(&r.effects()) {
            answer(&r, "w", &id, json!({"result": "ok"}));
            seen.push(id);
        }
    }
    assert_eq!(
        seen,
        [1, 2, 3].map(|s| firing_id("tick", T0 + s * 1_000_000))
    );
    let views = r.engine.schedules();
    assert_eq!(views[0].next_due_us, Some(T0 + 4_000_000));
    assert_eq!(views[0].record.last_fired_us, Some(T0 + 3_000_000));
    // Down from 3.2 s to 7.5 s: after the restart only 7 s fires, then 8 s.
    r.at_ms(3200);
    let r = r.restart();
    r.clock.advance_ms(4300);
    r.engine.worker_subscribed("w", 1, 100, "tasks/beat");
    r.engine.start_schedules(vec![spec]).unwrap();
    r.at_ms(8000);
    let after: Vec<String> = delivered_ids(&r.effects());
    assert_eq!(after, [7, 8].map(|s| firing_id("tick", T0 + s * 1_000_000)));
}

impl Engine {
    /// Tasks held in memory (not the cold ones on disk).
    fn tasks_in_memory(&self) -> usize {
        self.lock().tasks.len()
    }
}

#[test]
fn tasks_due_beyond_the_hot_window_wait_on_disk_and_come_back_on_time() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 100, "tasks/q");
    r.submit("q", r#"{"id":"hour","countdown":3600}"#);
    r.submit("q", r#"{"countdown":7200}"#);
    r.submit("q", r#"{"id":"soon","countdown":10}"#);
    assert_eq!(r.engine.tasks_in_memory(), 1, "only `soon` is in memory");
    assert_eq!(r.engine.queues()[0].scheduled, 3);
    // A second submit of a cold id is a duplicate; a cold task is unfinished.
    assert!(matches!(
        r.engine.submit(Submission {
            queue: "q",
            payload: br#"{"id":"hour"}"#,
            ..Submission::default()
        }),
        SubmitOutcome::Duplicate
    ));
    assert!(r.engine.is_unfinished("hour"));
    r.at_ms(10_000);
    assert_eq!(delivered_ids(&r.effects()), ["soon"]);
    // Loaded within the window before its time, delivered at it.
    r.at_ms(3_540_500);
    assert_eq!(r.engine.tasks_in_memory(), 2);
    r.effects(); // `soon`, whose lease ran out meanwhile, went out again
    r.at_ms(3_599_999);
    assert!(r.effects().is_empty());
    r.at_ms(3_600_000);
    assert_eq!(delivered_ids(&r.effects()), ["hour"]);
    // The other survives a restart on disk, is revoked there by its
    // generated id, and never runs.
    let r = r.restart();
    assert_eq!(
        r.engine.tasks_in_memory(),
        2,
        "the two delivered ones wait again"
    );
    assert_eq!(r.engine.queues()[0].scheduled, 1);
    let id = r
        .engine
        .waiting_tasks("q", 10)
        .map(|v| v.len())
        .unwrap_or(0);
    assert_eq!(id, 2, "the cold one is not listed");
    let mut cold_id = None;
    r.engine
        .inner
        .store
        .scan(&mut |k, t| {
            if t.not_before_us.is_some_and(|d| d > T0 + 7_000_000_000) {
                cold_id = Some((k, t.id));
            }
        })
        .unwrap();
    let (_, cold_id) = cold_id.expect("the 2 h task is stored");
    assert_eq!(r.engine.revoke(&cold_id, "test"), RevokeOutcome::Revoked);
    assert_eq!(r.engine.revoke(&cold_id, "test"), RevokeOutcome::Finished);
    assert_eq!(r.engine.queues()[0].scheduled, 0);
    r.effects();
    r.engine.worker_subscribed("w", 2, 100, "tasks/q");
    r.at_ms(7_300_000);
    let ids = delivered_ids(&r.effects());
    assert!(!ids.contains(&cold_id), "{ids:?}");
}

#[test]
fn a_long_backoff_goes_to_disk_and_many_cold_tasks_load_in_batches() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    r.submit(
        "q",
        r#"{"id":"slow","retry":{"backoff_ms":120000,"jitter":false}}"#,
    );
    r.effects();
    answer(&r, "w", "slow", json!({"error": "later", "retry": true}));
    assert_eq!(r.engine.tasks_in_memory(), 0, "the retry waits on disk");
    let r = r.restart();
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    r.at_ms(119_999);
    assert!(r.effects().is_empty());
    r.at_ms(120_000);
    assert_eq!(delivered_ids(&r.effects()), ["slow"]);

    // More cold tasks than one tick loads, all due at the same time.
    let r = rig();
    let n = COLD_BATCH + 5;
    for i in 0..n {
        r.submit("q", &format!(r#"{{"id":"c{i}","countdown":600}}"#));
    }
    assert_eq!(r.engine.tasks_in_memory(), 0);
    r.at_ms(550_000);
    r.at_ms(550_001);
    assert_eq!(r.engine.tasks_in_memory(), n);
    r.engine.worker_subscribed("w", 1, 100_000, "tasks/q");
    r.at_ms(600_000);
    assert_eq!(delivered_ids(&r.effects()).len(), n);
}

#[test]
fn countdowns_spread_across_the_hot_window_edge_all_fire_once() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 10_000, "tasks/q");
    let n = 3000u64;
    for i in 0..n {
        r.clock.advance_ms(1);
        let c = 62.0 * ((i * 7919) % n) as f64 / n as f64;
        r.submit("q", &format!(r#"{{"countdown":{c}}}"#));
        if i % 10 == 0 {
            r.engine.tick();
        }
    }
    let mut got = 0;
    for ms in (3000..=70_000).step_by(7) {
        r.at_ms(ms);
        got += delivered_ids(&r.effects()).len();
    }
    let q = &r.engine.queues()[0];
    assert_eq!((got, q.scheduled, q.waiting), (n as usize, 0, 0));
}

#[test]
fn a_cold_task_loaded_after_its_time_is_delivered_in_the_same_tick() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    r.submit("q", r#"{"id":"late","countdown":120}"#);
    assert_eq!(r.engine.tasks_in_memory(), 0);
    // The timer is held up past the whole window and the due time.
    r.at_ms(200_000);
    assert_eq!(delivered_ids(&r.effects()), ["late"]);
}

#[test]
fn a_denied_reply_topic_refuses_the_task_and_answers_nowhere() {
    let r = rig();
    let only_mine = |t: &str| t.starts_with("replies/dev1/");
    let outcome = r.engine.submit(Submission {
        queue: "q",
        payload: br#"{"id": "t", "reply_to": "replies/dev2/x"}"#,
        requester: Some("dev1".into()),
        reply_check: Some(ReplyCheck(&only_mine)),
        ..Submission::default()
    });
    match outcome {
        SubmitOutcome::Rejected { reason, message } => {
            assert_eq!(reason, crate::metrics::RejectReason::ReplyTopicDenied);
            assert!(message.starts_with("reply_topic_denied"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        replies(&r.effects()).is_empty(),
        "nothing published on the denied topic"
    );
    // A malformed payload whose reply_to is denied is not answered there either.
    r.engine.submit(Submission {
        queue: "q",
        payload: br#"{"reply_to": "replies/dev2/x", "priority": "high"}"#,
        reply_check: Some(ReplyCheck(&only_mine)),
        ..Submission::default()
    });
    assert!(replies(&r.effects()).is_empty());
    // Its own topic is fine, and the requester travels with the task.
    let outcome = r.engine.submit(Submission {
        queue: "q",
        payload: br#"{"id": "ok", "reply_to": "replies/dev1/x"}"#,
        requester: Some("dev1".into()),
        reply_check: Some(ReplyCheck(&only_mine)),
        ..Submission::default()
    });
    assert!(matches!(outcome, SubmitOutcome::Accepted), "{outcome:?}");
    assert_eq!(r.engine.requester_of("ok"), Some(Some("dev1".into())));
    r.engine.worker_subscribed("w1", 1, 1, "tasks/q");
    let fx = r.effects();
    let delivery = fx
        .iter()
        .find_map(|e| match e {
            Effect::Deliver {
                payload,
                user_properties,
                ..
            } => Some((payload.clone(), user_properties.clone())),
            _ => None,
        })
        .expect("delivered");
    let task: Value = serde_json::from_slice(&delivery.0).unwrap();
    assert_eq!(task["requester"], "dev1");
    assert!(
        delivery
            .1
            .contains(&(REQUESTER_PROPERTY.into(), "dev1".into()))
    );
}

#[test]
fn an_answer_from_a_client_that_does_not_hold_the_task_changes_nothing() {
    let r = rig();
    r.submit("q", r#"{"id": "t"}"#);
    r.engine.worker_subscribed("w1", 1, 1, "tasks/q");
    assert_eq!(delivered_ids(&r.effects()), ["t"]);
    let holder_is_w1 = |h: Option<&str>| h == Some("w1");
    let nobody = |_: Option<&str>| false;
    let body = json!({"result": "forged"}).to_string();
    let got = r.engine.answer(
        "w2",
        Some(HolderCheck(&nobody)),
        Some(b"t"),
        body.as_bytes(),
    );
    assert_eq!(got, Answered::NotHolder("t".into()));
    assert!(replies(&r.effects()).is_empty());
    assert_eq!(r.engine.in_flight(), 1, "still running");
    let body = json!({"result": "true"}).to_string();
    let got = r.engine.answer(
        "w1",
        Some(HolderCheck(&holder_is_w1)),
        Some(b"t"),
        body.as_bytes(),
    );
    assert_eq!(got, Answered::Taken);
    let out = replies(&r.effects());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["result"], "true");
}

// Workflows.

impl Rig {
    fn submit_workflow(&self, payload: Value) -> SubmitOutcome {
        self.engine.submit_workflow(Submission {
            queue: "swarmq/workflows",
            payload: payload.to_string().as_bytes(),
            response_topic: Some("wf/reply".into()),
            ..Submission::default()
        })
    }
}

/// The task messages delivered, by task id.
fn deliveries(fx: &[Effect]) -> Vec<(String, Value)> {
    fx.iter()
        .filter_map(|o| match o {
            Effect::Deliver {
                task_id, payload, ..
            } => Some((task_id.clone(), serde_json::from_slice(payload).unwrap())),
            _ => None,
        })
        .collect()
}

fn sig(task: &str, args: Value) -> Value {
    json!({"queue": "q", "task": task, "args": args})
}

#[test]
fn a_chord_runs_its_body_on_the_header_results_and_answers_once() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 100, "tasks/q");
    let wf = json!({"id": "wc", "workflow": {"chord": {
        "header": [sig("m", json!(["a"])), sig("m", json!(["b"])), sig("m", json!(["c"]))],
        "body": sig("reduce", json!([])),
    }}});
    assert!(matches!(
        r.submit_workflow(wf.clone()),
        SubmitOutcome::Accepted
    ));
    let got = deliveries(&r.effects());
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["wc/0.0", "wc/0.1", "wc/0.2"]);
    assert_eq!(got[1].1["workflow"], "wc");
    assert!(
        matches!(r.submit_workflow(wf), SubmitOutcome::Duplicate),
        "same id: not run twice"
    );
    for (i, id) in ["wc/0.2", "wc/0.0", "wc/0.1"].iter().enumerate() {
        answer(&r, "w", id, json!({"result": i}));
    }
    let fx = r.effects();
    let body = deliveries(&fx);
    assert_eq!(body.len(), 1);
    assert_eq!(body[0].0, "wc/1");
    assert_eq!(
        body[0].1["args"],
        json!([[1, 2, 0]]),
        "header results in member order"
    );
    assert!(
        replies(&fx).is_empty(),
        "members have no reply topic of their own"
    );
    answer(&r, "w", "wc/1", json!({"result": "done"}));
    let finals = replies(&r.effects());
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0]["id"], "wc");
    assert_eq!(finals[0]["status"], "success");
    assert_eq!(finals[0]["result"], "done");
    assert!(r.engine.workflow("wc").is_none());
    assert!(matches!(
        r.submit_workflow(json!({"id": "wc", "workflow": sig("m", json!([]))})),
        SubmitOutcome::Duplicate
    ));
}

#[test]
fn a_member_that_fails_fails_the_workflow_and_revokes_what_has_not_started() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    let wf = json!({"id": "g", "workflow": {"chain": [
        {"group": [sig("a", json!([])), sig("b", json!([])), sig("c", json!([]))]},
        sig("after", json!([])),
    ]}});
    assert!(matches!(r.submit_workflow(wf), SubmitOutcome::Accepted));
    assert_eq!(delivered_ids(&r.effects()), ["g/0.0"]);
    answer(&r, "w", "g/0.0", json!({"error": "boom"}));
    let fx = r.effects();
    assert!(delivered_ids(&fx).is_empty(), "nothing more runs");
    let finals = replies(&fx);
    assert_eq!(finals.len(), 1, "{finals:?}");
    assert_eq!(finals[0]["status"], "failure");
    let error = finals[0]["error"].as_str().unwrap();
    assert!(error.contains("member `g/0.0` failure: boom"), "{error}");
    assert_eq!(r.engine.queues()[0].waiting, 0, "b and c were revoked");
}

#[test]
fn a_workflow_resumes_after_a_restart_without_running_a_completed_member_again() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 10, "tasks/q");
    let wf = json!({"id": "c", "workflow": {"chain": [
        sig("a", json!([])),
        {"group": [sig("b", json!([])), sig("c", json!([]))]},
        sig("d", json!([])),
    ]}});
    assert!(matches!(r.submit_workflow(wf), SubmitOutcome::Accepted));
    assert_eq!(delivered_ids(&r.effects()), ["c/0"]);
    answer(&r, "w", "c/0", json!({"result": "A"}));
    assert_eq!(delivered_ids(&r.effects()), ["c/1.0", "c/1.1"]);
    answer(&r, "w", "c/1.0", json!({"result": "B"}));
    r.effects();

    let r = r.restart();
    r.engine.worker_subscribed("w2", 2, 10, "tasks/q");
    assert_eq!(
        delivered_ids(&r.effects()),
        ["c/1.1"],
        "only the member that had not completed"
    );
    answer(&r, "w2", "c/1.1", json!({"result": "C"}));
    let next = deliveries(&r.effects());
    assert_eq!(next[0].0, "c/2");
    assert_eq!(next[0].1["args"], json!([["B", "C"]]));
    answer(&r, "w2", "c/2", json!({"result": "D"}));
    let finals = replies(&r.effects());
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0]["result"], "D");

    let r = r.restart();
    r.engine.worker_subscribed("w3", 3, 10, "tasks/q");
    assert!(
        r.effects().is_empty(),
        "a finished workflow is gone from the store"
    );
}

#[test]
fn chunk_tasks_carry_their_items_instead_of_args_and_results_flatten() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 10, "tasks/q");
    let wf = json!({"id": "k", "progress": true, "workflow": {"chunks": {
        "queue": "q", "task": "sq", "items": [[1], [2], [3]], "size": 2,
    }}});
    assert!(matches!(r.submit_workflow(wf), SubmitOutcome::Accepted));
    let got = deliveries(&r.effects());
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1["chunk"], json!([[1], [2]]));
    assert!(got[0].1.get("args").is_none(), "{}", got[0].1);
    answer(&r, "w", "k/1", json!({"result": [9]}));
    let progress = replies(&r.effects());
    assert_eq!(progress[0]["status"], "progress");
    assert_eq!(progress[0]["progress"], json!({"done": 1, "total": 2}));
    answer(&r, "w", "k/0", json!({"result": [1, 4]}));
    let fx = replies(&r.effects());
    let last = fx.last().unwrap();
    assert_eq!(last["status"], "success");
    assert_eq!(last["result"], json!([1, 4, 9]));
}

#[test]
fn revoking_a_workflow_revokes_its_members_and_cancels_the_running_ones() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 1, "tasks/q");
    let wf = json!({"id": "rv", "workflow": {"group": [sig("a", json!([])), sig("b", json!([]))]}});
    assert!(matches!(r.submit_workflow(wf), SubmitOutcome::Accepted));
    assert_eq!(delivered_ids(&r.effects()), ["rv/0"]);
    assert_eq!(r.engine.workflow("rv").unwrap().counts["running"], 1);
    assert_eq!(r.engine.revoke("rv", "test"), RevokeOutcome::Revoked);
    let fx = r.effects();
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Control { payload, .. }
        if payload.as_ref() == br#"{"cancel":"rv/0"}"#))
    );
    let finals = replies(&fx);
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0]["status"], "revoked");
    assert!(delivered_ids(&fx).is_empty(), "b never runs");
    assert_eq!(r.engine.revoke("rv", "again"), RevokeOutcome::Finished);
    answer(&r, "w", "rv/0", json!({"result": 1}));
    assert!(
        replies(&r.effects()).is_empty(),
        "a late answer changes nothing"
    );
}

#[test]
fn bad_workflows_are_rejected_and_nothing_is_stored() {
    let r = rig();
    let cases = [
        json!({"workflow": {"group": []}}),
        json!({"workflow": {"chord": {"header": [sig("m", json!([]))]}}}),
        json!({"workflow": {"bogus": 1}}),
        json!({"id": 5, "workflow": sig("m", json!([]))}),
        json!({"nothing": true}),
    ];
    for wf in cases {
        match r.submit_workflow(wf.clone()) {
            SubmitOutcome::Rejected { reason, .. } => {
                assert_eq!(reason, crate::metrics::RejectReason::InvalidPayload)
            }
            other => panic!("{wf}: {other:?}"),
        }
    }
    let many: Vec<Value> = (0..10_001).map(|_| sig("m", json!([]))).collect();
    match r.submit_workflow(json!({"workflow": {"group": many}})) {
        SubmitOutcome::Rejected { message, .. } => {
            assert!(message.contains("workflows.max_members"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(r.engine.running_workflows().is_empty());
    let r = r.restart();
    assert!(r.engine.running_workflows().is_empty(), "nothing stored");
}

#[test]
fn a_large_group_after_a_chain_step_is_admitted_in_batches_all_of_it() {
    let r = rig();
    r.engine.worker_subscribed("w", 1, 10, "tasks/q");
    let members: Vec<Value> = (0..3_000).map(|i| sig("m", json!([i]))).collect();
    let wf = json!({"id": "big", "workflow": {"chain": [sig("a", json!([])), {"group": members}]}});
    assert!(matches!(r.submit_workflow(wf), SubmitOutcome::Accepted));
    assert_eq!(delivered_ids(&r.effects()), ["big/0"]);
    answer(&r, "w", "big/0", json!({"result": "A"}));
    let got = deliveries(&r.effects());
    assert_eq!(got.len(), 10, "the worker's capacity");
    assert_eq!(got[0].1["args"], json!(["A", 0]));
    let q = &r.engine.queues()[0];
    assert_eq!(
        q.waiting + q.in_flight,
        3_000,
        "every member admitted, over several batches"
    );
    assert_eq!(r.engine.workflow("big").unwrap().counts["queued"], 2_990);
}

#[test]
fn a_flapping_worker_is_quarantined_and_its_drops_do_not_use_up_attempts() {
    let r = rig();
    for i in 0..20 {
        r.submit("q", &format!(r#"{{"id":"t{i}"}}"#));
    }
    // A greedy worker that drops its connection each time it has tasks.
    let mut conn = 0;
    for drop_no in 1..=5 {
        conn += 1;
        r.engine.worker_subscribed("bad", conn, 20, "tasks/q");
        let got = delivered_ids(&r.effects());
        if drop_no <= 3 {
            assert_eq!(got.len(), 20, "drop {drop_no}: it takes every task");
        } else {
            assert!(
                got.is_empty(),
                "drop {drop_no}: quarantined, it gets nothing"
            );
        }
        r.engine.worker_gone("bad", conn);
        r.effects();
    }
    let snap = r.engine.workers();
    assert!(snap.is_empty());
    // Two drops were charged, the third made it flapping: nobody failed.
    r.engine.worker_subscribed("good", 100, 20, "tasks/q");
    let got = deliveries(&r.effects());
    assert_eq!(got.len(), 20);
    assert!(
        got.iter().all(|(_, m)| m["attempt"] == 3),
        "two attempts used, not three"
    );
    conn += 1;
    r.engine.worker_subscribed("bad", conn, 20, "tasks/q");
    let bad = r
        .engine
        .workers()
        .into_iter()
        .find(|w| w.id == "bad")
        .unwrap();
    assert_eq!(bad.quarantined_until_us, Some(T0 + 5_000_000));
    let text = r.engine.metrics().render(&[], 0);
    assert!(text.contains("swarmq_tasks_lost_total 20\n"), "{text}");
    assert!(text.contains("swarmq_workers_quarantined_total 1\n"));
    for (id, _) in &got {
        answer(&r, "good", id, json!({"result": 1}));
    }
    let finals = replies(&r.effects());
    assert_eq!(
        finals.iter().filter(|f| f["status"] == "success").count(),
        20
    );
    // The quarantine ends with its time: the worker is fed again.
    r.submit("q", r#"{"id":"later"}"#);
    r.effects();
    r.engine.worker_gone("good", 100);
    r.at_ms(5_001);
    assert_eq!(delivered_ids(&r.effects()), ["later"]);
}
