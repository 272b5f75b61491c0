//! Property tests of the parsers a client's bytes reach: the task payload
//! (`parse_request`) and the worker's answer (`WorkerReply::from_json`).
//! Whatever arrives, they return an answer and never panic; what the
//! contract allows is read back as sent; a known field of the wrong type is
//! refused with a reason that names it.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use swarmq_worker::wire::WorkerReply;

use super::request::parse_request;

/// Any JSON value, a few levels deep, its object keys mostly the ones the
/// parsers look for (the task's and the workflow's).
pub(super) fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("task".to_string()),
                    Just("args".to_string()),
                    Just("kwargs".to_string()),
                    Just("id".to_string()),
                    Just("reply_to".to_string()),
                    Just("countdown".to_string()),
                    Just("eta".to_string()),
                    Just("expires".to_string()),
                    Just("priority".to_string()),
                    Just("retry".to_string()),
                    Just("progress".to_string()),
                    Just("result".to_string()),
                    Just("error".to_string()),
                    Just("workflow".to_string()),
                    Just("chain".to_string()),
                    Just("group".to_string()),
                    Just("chord".to_string()),
                    Just("chunks".to_string()),
                    Just("header".to_string()),
                    Just("body".to_string()),
                    Just("queue".to_string()),
                    Just("items".to_string()),
                    Just("size".to_string()),
                    Just("immutable".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_bytes_get_an_answer(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_request(&bytes);
    }

    #[test]
    fn any_json_gets_an_answer_and_a_worker_reply_is_always_read(v in any_json()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Err(bad) = parse_request(&bytes) {
            prop_assert!(!bad.message.is_empty());
        }
        let _ = WorkerReply::from_json(v);
    }

    #[test]
    fn a_well_formed_request_is_read_back_as_sent(
        task in "[a-z_]{1,12}",
        args in prop::collection::vec(any::<i32>(), 0..5),
        id in "[A-Za-z0-9-]{1,20}",
        priority in 0u8..=9,
        progress in any::<bool>(),
        countdown in 0.0f64..86_400.0,
    ) {
        let payload = json!({
            "task": task, "args": args, "id": id, "priority": priority,
            "progress": progress, "countdown": countdown,
        });
        let parsed = parse_request(payload.to_string().as_bytes());
        let parsed = match parsed {
            Ok(p) => p,
            Err(bad) => return Err(TestCaseError::fail(bad.message)),
        };
        prop_assert_eq!(parsed.task.as_deref(), Some(task.as_str()));
        prop_assert_eq!(parsed.args, args.iter().map(|a| json!(a)).collect::<Vec<_>>());
        prop_assert_eq!(parsed.id.as_deref(), Some(id.as_str()));
        prop_assert_eq!(parsed.priority, priority);
        prop_assert_eq!(parsed.progress, progress);
    }

    #[test]
    fn a_known_field_of_the_wrong_type_is_refused_by_name(
        field in prop_oneof![
            Just("task"), Just("args"), Just("kwargs"), Just("id"), Just("reply_to"),
            Just("countdown"), Just("priority"), Just("progress"), Just("retry"),
        ],
        wrong in prop_oneof![
            Just(json!({"nested": 1})), Just(json!([1, 2])), Just(json!(true)), Just(json!(-3.5)),
        ],
    ) {
        // Skip the combinations that are the right type for the field.
        let right = matches!(
            (field, &wrong),
            ("kwargs" | "retry", Value::Object(_))
                | ("args", Value::Array(_))
                | ("progress", Value::Bool(_))
        );
        prop_assume!(!right);
        let payload = json!({ field: wrong });
        match parse_request(payload.to_string().as_bytes()) {
            Ok(_) => return Err(TestCaseError::fail(format!("{payload} was accepted"))),
            Err(bad) => prop_assert!(
                bad.message.contains(field),
                "{} does not name {}", bad.message, field
            ),
        }
    }
}
