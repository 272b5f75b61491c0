//! Property tests of the workflow reader and its run: whatever JSON a
//! client publishes gets an answer without a panic; a well-formed tree of
//! any shape is read with deterministic, unique member paths, and answering
//! every member in any order completes it once, with every member counted.

use std::collections::HashSet;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::parse_workflow;
use super::run::{Known, Run};
use super::tree::{Kind, NodeId, WorkflowLimits, read_tree};
use crate::engine::proptests::any_json;

const LIMITS: WorkflowLimits = WorkflowLimits {
    max_bytes: 1 << 20,
    max_members: 500,
    max_depth: 8,
};

/// A well-formed node and the number of members it holds.
fn node() -> impl Strategy<Value = (Value, usize)> {
    let leaf = prop_oneof![
        (any::<bool>(), 0i64..100).prop_map(|(immutable, a)| (
            json!({"queue": "q", "task": "t", "args": [a], "immutable": immutable}),
            1
        )),
        (1usize..8, 1usize..4).prop_map(|(n, size)| (
            json!({"chunks": {"queue": "q", "task": "c", "items": vec![json!([1]); n], "size": size}}),
            n.div_ceil(size)
        )),
    ];
    leaf.prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(|v| {
                let n = v.iter().map(|(_, n)| n).sum();
                (
                    json!({"chain": v.into_iter().map(|(j, _)| j).collect::<Vec<_>>()}),
                    n,
                )
            }),
            prop::collection::vec(inner.clone(), 1..4).prop_map(|v| {
                let n = v.iter().map(|(_, n)| n).sum();
                (
                    json!({"group": v.into_iter().map(|(j, _)| j).collect::<Vec<_>>()}),
                    n,
                )
            }),
            (prop::collection::vec(inner.clone(), 1..4), inner).prop_map(|(h, (b, nb))| {
                let n = h.iter().map(|(_, n)| n).sum::<usize>() + nb;
                let header: Vec<Value> = h.into_iter().map(|(j, _)| j).collect();
                (json!({"chord": {"header": header, "body": b}}), n)
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_json_submission_gets_an_answer(v in any_json()) {
        let _ = parse_workflow(&serde_json::to_vec(&v).unwrap(), &LIMITS);
        let _ = parse_workflow(&serde_json::to_vec(&json!({"workflow": v})).unwrap(), &LIMITS);
    }

    #[test]
    fn any_bytes_get_an_answer(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_workflow(&bytes, &LIMITS);
    }

    #[test]
    fn a_well_formed_tree_reads_and_runs_to_one_result(
        (wf, members) in node(),
        order in any::<u64>(),
    ) {
        let tree = read_tree(&wf, &WorkflowLimits::NONE)
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(tree.members, members);
        prop_assert_eq!(&read_tree(&wf, &WorkflowLimits::NONE).unwrap(), &tree, "deterministic");
        let paths: Vec<&str> = tree
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, Kind::Task(_)))
            .map(|n| n.path.as_str())
            .collect();
        prop_assert_eq!(paths.iter().collect::<HashSet<_>>().len(), members, "unique paths");
        for (i, n) in tree.nodes.iter().enumerate() {
            if matches!(n.kind, Kind::Task(_)) {
                prop_assert_eq!(tree.find(&n.path), Some(i as NodeId));
            }
        }
        // Answer the started members in a pseudo-random order.
        let mut run = Run::new(tree);
        let mut new = |_: NodeId, _: &str| Known::New;
        let mut pending = Vec::new();
        prop_assert!(run.start(&mut new, &mut pending).is_none());
        let mut rng = order | 1;
        let mut result = None;
        let mut answered = 0;
        while !pending.is_empty() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let m = pending.swap_remove((rng % pending.len() as u64) as usize);
            answered += 1;
            let mut next = Vec::new();
            let done = run.complete(m.node, json!(1), &mut new, &mut next);
            pending.extend(next);
            if done.is_some() {
                prop_assert!(result.is_none(), "completed twice");
                prop_assert!(pending.is_empty(), "completed with members still running");
                result = done;
            }
        }
        prop_assert!(result.is_some(), "never completed");
        prop_assert_eq!(answered, members);
        prop_assert_eq!(run.done, members);
    }
}
