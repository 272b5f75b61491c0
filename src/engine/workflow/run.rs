//! [`Run`]: a workflow's progress over its [`Tree`], as a pure state
//! machine. Starting a node and completing a member are the only two moves;
//! each returns the member tasks to create and, once the root completes,
//! the workflow's result. The engine turns those into tasks; a restart
//! replays the same moves from the stored member results, which is why
//! nothing here reads a clock or the store.

use std::collections::VecDeque;

use serde_json::Value;

use super::tree::{Kind, NodeId, ROOT, Tree};

/// Where a node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::engine) enum NodeState {
    /// Not started: its turn in a chain or chord has not come.
    Waiting,
    /// Started: a member task exists, or some of a composite's children run.
    Started,
    /// Completed with a result.
    Done,
    /// A member that failed for good (the workflow failed with it).
    Failed,
    /// A member revoked when its workflow failed or was revoked.
    Revoked,
}

/// What the engine knows of a member about to start.
#[derive(Debug)]
pub(in crate::engine) enum Known {
    /// Its result is stored (a replay after a restart).
    Result(Value),
    /// Its task exists already (recovered from the store).
    Exists,
    /// Nothing: its task must be created.
    New,
}

/// A member task to create: its node and its arguments.
#[derive(Debug, PartialEq)]
pub(in crate::engine) struct NewMember {
    pub(in crate::engine) node: NodeId,
    pub(in crate::engine) args: Vec<Value>,
}

/// A workflow's state of play.
#[derive(Debug)]
pub(in crate::engine) struct Run {
    pub(in crate::engine) tree: Tree,
    states: Vec<NodeState>,
    /// Results of completed children kept until their group completes.
    results: Vec<Option<Value>>,
    /// Completed children, for groups and chunks.
    done_children: Vec<u32>,
    /// Members completed.
    pub(in crate::engine) done: usize,
}

enum Step {
    Start(NodeId, Option<Value>),
    Complete(NodeId, Value),
}

impl Run {
    pub(in crate::engine) fn new(tree: Tree) -> Run {
        let n = tree.nodes.len();
        Run {
            tree,
            states: vec![NodeState::Waiting; n],
            results: vec![None; n],
            done_children: vec![0; n],
            done: 0,
        }
    }

    pub(in crate::engine) fn state(&self, node: NodeId) -> NodeState {
        self.states[node as usize]
    }

    /// Starts the workflow: its first members. Returns the result when the
    /// whole workflow is already complete (a replay).
    pub(in crate::engine) fn start(
        &mut self,
        known: &mut dyn FnMut(NodeId, &str) -> Known,
        out: &mut Vec<NewMember>,
    ) -> Option<Value> {
        self.drive(VecDeque::from([Step::Start(ROOT, None)]), known, out)
    }

    /// Member `node` succeeded with `result`: starts what follows it.
    /// Returns the workflow's result when this completed it. A member that
    /// is not running (completed already) changes nothing.
    pub(in crate::engine) fn complete(
        &mut self,
        node: NodeId,
        result: Value,
        known: &mut dyn FnMut(NodeId, &str) -> Known,
        out: &mut Vec<NewMember>,
    ) -> Option<Value> {
        if self.states.get(node as usize) != Some(&NodeState::Started)
            || !matches!(self.tree.node(node).kind, Kind::Task(_))
        {
            return None;
        }
        self.drive(VecDeque::from([Step::Complete(node, result)]), known, out)
    }

    /// Marks member `node` as failed or revoked.
    pub(in crate::engine) fn set_state(&mut self, node: NodeId, state: NodeState) {
        if let Some(s) = self.states.get_mut(node as usize) {
            *s = state;
        }
    }

    /// Members started and not completed.
    pub(in crate::engine) fn running_members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.tree
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| {
                matches!(n.kind, Kind::Task(_)) && self.states[*i] == NodeState::Started
            })
            .map(|(i, _)| i as NodeId)
    }

    fn drive(
        &mut self,
        mut steps: VecDeque<Step>,
        known: &mut dyn FnMut(NodeId, &str) -> Known,
        out: &mut Vec<NewMember>,
    ) -> Option<Value> {
        // A queue, not recursion: a group of 100,000 members, or a long
        // chain replayed after a restart, must not grow the stack.
        while let Some(step) = steps.pop_front() {
            match step {
                Step::Start(id, input) => {
                    let i = id as usize;
                    if self.states[i] != NodeState::Waiting {
                        continue;
                    }
                    self.states[i] = NodeState::Started;
                    let node = &self.tree.nodes[i];
                    match &node.kind {
                        Kind::Task(sig) => match known(id, &node.path) {
                            Known::Result(v) => steps.push_back(Step::Complete(id, v)),
                            Known::Exists => {}
                            Known::New => {
                                let mut args = Vec::with_capacity(sig.args.len() + 1);
                                if let Some(v) = input.filter(|_| !sig.immutable) {
                                    args.push(v);
                                }
                                args.extend(sig.args.iter().cloned());
                                out.push(NewMember { node: id, args });
                            }
                        },
                        Kind::Chain | Kind::Chord => {
                            steps.push_back(Step::Start(node.children[0], input));
                        }
                        Kind::Group => {
                            for &child in &node.children {
                                steps.push_back(Step::Start(child, input.clone()));
                            }
                        }
                        // Chunk tasks take their items, not the result before.
                        Kind::Chunks => {
                            for &child in &node.children {
                                steps.push_back(Step::Start(child, None));
                            }
                        }
                    }
                }
                Step::Complete(id, value) => {
                    let i = id as usize;
                    self.states[i] = NodeState::Done;
                    let node = &self.tree.nodes[i];
                    if matches!(node.kind, Kind::Task(_)) {
                        self.done += 1;
                    }
                    let Some(parent) = node.parent else {
                        return Some(value);
                    };
                    let index = node.index as usize;
                    let p = &self.tree.nodes[parent as usize];
                    match p.kind {
                        Kind::Chain | Kind::Chord => match p.children.get(index + 1) {
                            Some(&next) => steps.push_back(Step::Start(next, Some(value))),
                            None => steps.push_back(Step::Complete(parent, value)),
                        },
                        Kind::Group | Kind::Chunks => {
                            self.results[i] = Some(value);
                            let done = &mut self.done_children[parent as usize];
                            *done += 1;
                            if *done as usize == p.children.len() {
                                let flat = p.kind == Kind::Chunks;
                                let mut list = Vec::with_capacity(p.children.len());
                                for &c in &p.children {
                                    match self.results[c as usize].take() {
                                        Some(Value::Array(items)) if flat => list.extend(items),
                                        Some(v) => list.push(v),
                                        None => list.push(Value::Null),
                                    }
                                }
                                steps.push_back(Step::Complete(parent, Value::Array(list)));
                            }
                        }
                        Kind::Task(_) => {}
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::workflow::tree::{WorkflowLimits, read_tree};
    use serde_json::json;

    fn run(wf: Value) -> Run {
        Run::new(read_tree(&wf, &WorkflowLimits::NONE).unwrap())
    }

    fn sig(task: &str) -> Value {
        json!({"queue": "q", "task": task, "args": [task]})
    }

    /// Completes each started member with `answer(task, args)` until the
    /// workflow ends; returns its result and the members in start order.
    fn play(
        r: &mut Run,
        answer: impl Fn(&str, &[Value]) -> Value,
    ) -> (Value, Vec<(String, Vec<Value>)>) {
        let mut out = Vec::new();
        let mut new = |_: NodeId, _: &str| Known::New;
        assert_eq!(r.start(&mut new, &mut out), None);
        let mut started = Vec::new();
        let mut pending: VecDeque<NewMember> = out.drain(..).collect();
        while let Some(m) = pending.pop_front() {
            let Kind::Task(s) = &r.tree.node(m.node).kind else {
                panic!("members are tasks")
            };
            let args = s.chunk.clone().unwrap_or(m.args);
            started.push((r.tree.node(m.node).path.clone(), args.clone()));
            let v = answer(&s.task, &args);
            if let Some(result) = r.complete(m.node, v, &mut new, &mut out) {
                assert!(pending.is_empty() && out.is_empty());
                return (result, started);
            }
            pending.extend(out.drain(..));
        }
        panic!("the workflow never completed")
    }

    #[test]
    fn a_chain_passes_each_result_on_unless_immutable() {
        let mut r = run(json!({"chain": [
            sig("a"),
            sig("b"),
            {"queue": "q", "task": "c", "args": [1], "immutable": true},
            sig("d"),
        ]}));
        let (result, started) = play(&mut r, |t, args| json!(format!("{t}{}", args.len())));
        assert_eq!(result, json!("d2"));
        assert_eq!(started[1].1, vec![json!("a1"), json!("b")]);
        assert_eq!(started[2].1, vec![json!(1)], "immutable takes nothing");
        assert_eq!(started[3].1, vec![json!("c1"), json!("d")]);
    }

    #[test]
    fn a_group_answers_its_results_in_member_order() {
        let mut r = run(json!({"group": [sig("a"), sig("b"), sig("c")]}));
        let mut out = Vec::new();
        let mut new = |_: NodeId, _: &str| Known::New;
        r.start(&mut new, &mut out);
        assert_eq!(out.len(), 3, "every member at once");
        let nodes: Vec<NodeId> = out.iter().map(|m| m.node).collect();
        // Out of order: c, a, b.
        assert_eq!(r.complete(nodes[2], json!(3), &mut new, &mut out), None);
        assert_eq!(r.complete(nodes[0], json!(1), &mut new, &mut out), None);
        assert_eq!(
            r.complete(nodes[0], json!(9), &mut new, &mut out),
            None,
            "a second answer changes nothing"
        );
        assert_eq!(
            r.complete(nodes[1], json!(2), &mut new, &mut out),
            Some(json!([1, 2, 3]))
        );
        assert_eq!(r.done, 3);
    }

    #[test]
    fn a_chord_runs_its_body_on_the_header_results_and_chunks_flatten() {
        let mut r = run(json!({"chain": [
            {"chord": {"header": [sig("m1"), sig("m2")], "body": sig("sum")}},
            {"chunks": {"queue": "q", "task": "sq", "items": [[1], [2], [3]], "size": 2}},
        ]}));
        let (result, started) = play(&mut r, |t, args| match t {
            "sum" => json!(args[0].as_array().unwrap().len()),
            "sq" => Value::Array(
                args.iter()
                    .map(|item| json!(item[0].as_i64().unwrap() * 10))
                    .collect(),
            ),
            _ => json!(t),
        });
        assert_eq!(result, json!([10, 20, 30]));
        let body = started.iter().find(|(p, _)| p == "0.1").unwrap();
        assert_eq!(body.1, vec![json!(["m1", "m2"]), json!("sum")]);
        let chunks: Vec<_> = started
            .iter()
            .filter(|(p, _)| p.starts_with("1."))
            .collect();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].1, vec![json!([1]), json!([2])]);
    }

    #[test]
    fn a_replay_from_stored_results_starts_only_what_was_missing() {
        let wf = json!({"chain": [sig("a"), {"group": [sig("b"), sig("c")]}, sig("d")]});
        let mut r = run(wf.clone());
        let mut out = Vec::new();
        // After a restart: a done, b done, c's task recovered from the store.
        let stored = |path: &str| match path {
            "0" => Known::Result(json!("A")),
            "1.0" => Known::Result(json!("B")),
            "1.1" => Known::Exists,
            _ => Known::New,
        };
        let mut known = |_: NodeId, path: &str| stored(path);
        assert_eq!(r.start(&mut known, &mut out), None);
        assert!(
            out.is_empty(),
            "nothing new: c exists, d's turn has not come"
        );
        let c = r.tree.find("1.1").unwrap();
        assert_eq!(r.running_members().collect::<Vec<_>>(), vec![c]);
        assert_eq!(r.complete(c, json!("C"), &mut known, &mut out), None);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].args, vec![json!(["B", "C"]), json!("d")]);
        let d = out[0].node;
        assert_eq!(
            r.complete(d, json!("D"), &mut known, &mut out),
            Some(json!("D"))
        );

        // A replay of a workflow whose every member is stored completes at once.
        let mut r = run(wf);
        let mut all = |_: NodeId, _: &str| Known::Result(json!(1));
        assert_eq!(r.start(&mut all, &mut out), Some(json!(1)));
    }

    #[test]
    fn a_large_group_does_not_recurse() {
        let members: Vec<Value> = (0..200_000).map(|_| sig("m")).collect();
        let mut r = run(json!({ "group": members }));
        let mut out = Vec::new();
        let mut done = |_: NodeId, _: &str| Known::Result(json!(0));
        let result = r.start(&mut done, &mut out).unwrap();
        assert_eq!(result.as_array().unwrap().len(), 200_000);
    }
}
