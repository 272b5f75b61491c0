//! A workflow's shape: the [`Tree`] its `workflow` node is read into, checked
//! against the contract and the configured [`WorkflowLimits`]. Pure: no
//! state, no time.
//!
//! Nodes sit in one vector in the order they are read (a parent before its
//! children), so the same JSON always gives the same tree, and the tree can
//! be rebuilt from the stored definition after a restart. A chord is stored
//! as two children, its header (a group) and its body; a `chunks` node as
//! one child per chunk task.

use serde_json::{Map, Value};
use swarmq_worker::wire;

use crate::engine::request::{
    Expires, RetryOverride, Start, describe, json_type, parse_options, str_field,
};

/// The configured bounds of one workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkflowLimits {
    /// Largest submission, in bytes (`workflows.max_bytes`).
    pub max_bytes: usize,
    /// Most member tasks, chunk tasks included (`workflows.max_members`).
    pub max_members: usize,
    /// Deepest nesting of chains, groups, chords and chunks (`workflows.max_depth`).
    pub max_depth: usize,
}

impl WorkflowLimits {
    /// No bound: for reading back a workflow that was accepted before the
    /// limits were lowered.
    pub(in crate::engine) const NONE: WorkflowLimits = WorkflowLimits {
        max_bytes: usize::MAX,
        max_members: usize::MAX,
        max_depth: usize::MAX,
    };
}

/// One member task as the workflow names it.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::engine) struct Signature {
    pub(in crate::engine) queue: String,
    pub(in crate::engine) task: String,
    pub(in crate::engine) args: Vec<Value>,
    pub(in crate::engine) kwargs: Map<String, Value>,
    /// Takes no result from the node before it.
    pub(in crate::engine) immutable: bool,
    /// The items of a chunk task, sent as `chunk` instead of `args`.
    pub(in crate::engine) chunk: Option<Vec<Value>>,
    pub(in crate::engine) start: Option<Start>,
    pub(in crate::engine) expires: Option<Expires>,
    pub(in crate::engine) priority: u8,
    pub(in crate::engine) retry: Option<RetryOverride>,
}

/// What a node is.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::engine) enum Kind {
    /// A member task (a signature, or one chunk of a `chunks` node).
    Task(Box<Signature>),
    /// Its children one after another, each given the previous result.
    Chain,
    /// Its children at once; the list of their results.
    Group,
    /// Child 0 (a group) then child 1 with the group's results.
    Chord,
    /// Its chunk tasks at once; the flat list of their item results.
    Chunks,
}

impl Kind {
    /// The name used in views.
    pub(in crate::engine) fn name(&self) -> &'static str {
        match self {
            Kind::Task(s) if s.chunk.is_some() => "chunk",
            Kind::Task(_) => "task",
            Kind::Chain => "chain",
            Kind::Group => "group",
            Kind::Chord => "chord",
            Kind::Chunks => "chunks",
        }
    }
}

/// Index of a node in its [`Tree`].
pub(in crate::engine) type NodeId = u32;

/// One node of a workflow.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::engine) struct Node {
    pub(in crate::engine) kind: Kind,
    pub(in crate::engine) parent: Option<NodeId>,
    /// Position among its parent's children.
    pub(in crate::engine) index: u32,
    pub(in crate::engine) children: Vec<NodeId>,
    /// The member path: child indices from the root joined by dots; a
    /// workflow that is one signature has the path `0`.
    pub(in crate::engine) path: String,
}

/// A workflow read and checked.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::engine) struct Tree {
    pub(in crate::engine) nodes: Vec<Node>,
    /// Member tasks in all.
    pub(in crate::engine) members: usize,
}

/// The root's index.
pub(in crate::engine) const ROOT: NodeId = 0;

impl Tree {
    /// The node with member path `path`, if there is one.
    pub(in crate::engine) fn find(&self, path: &str) -> Option<NodeId> {
        let root = self.nodes.first()?;
        if root.children.is_empty() {
            return (path == "0").then_some(ROOT);
        }
        let mut at = ROOT;
        for part in path.split('.') {
            let i: usize = part.parse().ok()?;
            at = *self.nodes[at as usize].children.get(i)?;
        }
        Some(at)
    }

    pub(in crate::engine) fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    /// The queues its members are sent to, each once.
    pub(in crate::engine) fn queues(&self) -> Vec<&str> {
        let mut queues: Vec<&str> = self
            .nodes
            .iter()
            .filter_map(|n| match &n.kind {
                Kind::Task(s) => Some(s.queue.as_str()),
                _ => None,
            })
            .collect();
        queues.sort_unstable();
        queues.dedup();
        queues
    }
}

/// Reads `workflow` (the submission's `workflow` field) into a tree.
///
/// # Errors
///
/// A message naming the offending path (`workflow.chain[1].group[0]`) or
/// the limit passed.
pub(in crate::engine) fn read_tree(
    workflow: &Value,
    limits: &WorkflowLimits,
) -> Result<Tree, String> {
    let mut reader = Reader {
        tree: Tree {
            nodes: Vec::new(),
            members: 0,
        },
        limits,
    };
    reader.node(workflow, "workflow", None, 0, 1)?;
    if reader.tree.nodes.len() == 1 {
        reader.tree.nodes[0].path = "0".into();
    }
    Ok(reader.tree)
}

struct Reader<'a> {
    tree: Tree,
    limits: &'a WorkflowLimits,
}

const KINDS: [&str; 4] = ["chain", "group", "chord", "chunks"];

impl Reader<'_> {
    /// Adds a node for `v` (read at `loc`) under `parent` and returns its id.
    fn node(
        &mut self,
        v: &Value,
        loc: &str,
        parent: Option<NodeId>,
        index: u32,
        depth: usize,
    ) -> Result<NodeId, String> {
        let Value::Object(obj) = v else {
            return Err(format!(
                "`{loc}` must be a node (an object), got {}",
                json_type(v)
            ));
        };
        let kinds: Vec<&str> = KINDS
            .iter()
            .copied()
            .filter(|k| obj.contains_key(*k))
            .collect();
        if kinds.len() > 1 {
            return Err(format!(
                "`{loc}` has both `{}` and `{}`: a node is one kind",
                kinds[0], kinds[1]
            ));
        }
        let Some(&kind) = kinds.first() else {
            if obj.contains_key("queue") {
                let sig = signature(obj, loc, None)?;
                return self.add(Kind::Task(Box::new(sig)), parent, index, loc);
            }
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.truncate(8);
            return Err(format!(
                "`{loc}` is of no known node kind: expected a signature (with `queue`) or one of chain, group, chord, chunks; got keys [{}]",
                keys.join(", ")
            ));
        };
        if depth > self.limits.max_depth {
            return Err(format!(
                "`{loc}` nests deeper than {} levels (workflows.max_depth)",
                self.limits.max_depth
            ));
        }
        let inner = &obj[kind];
        match kind {
            "chain" | "group" => {
                let list = non_empty_list(inner, &format!("{loc}.{kind}"))?;
                let kind_of = if kind == "chain" {
                    Kind::Chain
                } else {
                    Kind::Group
                };
                let id = self.add(kind_of, parent, index, loc)?;
                for (i, child) in list.iter().enumerate() {
                    self.node(
                        child,
                        &format!("{loc}.{kind}[{i}]"),
                        Some(id),
                        i as u32,
                        depth + 1,
                    )?;
                }
                Ok(id)
            }
            "chord" => {
                let loc = format!("{loc}.chord");
                let Value::Object(chord) = inner else {
                    return Err(format!(
                        "`{loc}` must be an object with `header` and `body`, got {}",
                        json_type(inner)
                    ));
                };
                let header = chord
                    .get("header")
                    .ok_or_else(|| format!("`{loc}` has no `header`"))?;
                let header = non_empty_list(header, &format!("{loc}.header"))?;
                let body = chord
                    .get("body")
                    .filter(|b| !b.is_null())
                    .ok_or_else(|| format!("`{loc}` has no `body`: a chord needs one"))?;
                let id = self.add(Kind::Chord, parent, index, &loc)?;
                let group = self.add(Kind::Group, Some(id), 0, &loc)?;
                for (i, child) in header.iter().enumerate() {
                    self.node(
                        child,
                        &format!("{loc}.header[{i}]"),
                        Some(group),
                        i as u32,
                        depth + 1,
                    )?;
                }
                self.node(body, &format!("{loc}.body"), Some(id), 1, depth + 1)?;
                Ok(id)
            }
            _ => self.chunks(inner, &format!("{loc}.chunks"), parent, index),
        }
    }

    fn chunks(
        &mut self,
        v: &Value,
        loc: &str,
        parent: Option<NodeId>,
        index: u32,
    ) -> Result<NodeId, String> {
        let Value::Object(obj) = v else {
            return Err(format!(
                "`{loc}` must be an object with `queue`, `task`, `items` and `size`, got {}",
                json_type(v)
            ));
        };
        let base = signature(obj, loc, Some(&["items", "size"]))?;
        let items = match obj.get("items") {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(Value::Array(_)) => return Err(format!("`{loc}.items` must not be empty")),
            Some(other) => {
                return Err(format!(
                    "`{loc}.items` must be an array of argument lists, got {}",
                    json_type(other)
                ));
            }
            None => return Err(format!("`{loc}` has no `items`")),
        };
        if let Some((i, bad)) = items.iter().enumerate().find(|(_, it)| !it.is_array()) {
            return Err(format!(
                "`{loc}.items[{i}]` must be an array of arguments, got {}",
                json_type(bad)
            ));
        }
        let size = match obj.get("size") {
            Some(v) => v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                format!(
                    "`{loc}.size` must be an integer of at least 1, got {}",
                    describe(v)
                )
            })?,
            None => return Err(format!("`{loc}` has no `size`")),
        };
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let id = self.add(Kind::Chunks, parent, index, loc)?;
        for (i, part) in items.chunks(size).enumerate() {
            let sig = Signature {
                chunk: Some(part.to_vec()),
                ..base.clone()
            };
            self.add(Kind::Task(Box::new(sig)), Some(id), i as u32, loc)?;
        }
        Ok(id)
    }

    fn add(
        &mut self,
        kind: Kind,
        parent: Option<NodeId>,
        index: u32,
        loc: &str,
    ) -> Result<NodeId, String> {
        if matches!(kind, Kind::Task(_)) {
            self.tree.members += 1;
            if self.tree.members > self.limits.max_members {
                return Err(format!(
                    "`{loc}`: the workflow has more than {} members (workflows.max_members)",
                    self.limits.max_members
                ));
            }
        }
        let id = NodeId::try_from(self.tree.nodes.len())
            .map_err(|_| format!("`{loc}`: the workflow has too many nodes"))?;
        let path = match parent {
            None => String::new(),
            Some(p) => {
                let parent = &mut self.tree.nodes[p as usize];
                parent.children.push(id);
                if parent.path.is_empty() {
                    index.to_string()
                } else {
                    format!("{}.{index}", parent.path)
                }
            }
        };
        self.tree.nodes.push(Node {
            kind,
            parent,
            index,
            children: Vec::new(),
            path,
        });
        Ok(id)
    }
}

fn non_empty_list<'v>(v: &'v Value, loc: &str) -> Result<&'v Vec<Value>, String> {
    match v {
        Value::Array(list) if !list.is_empty() => Ok(list),
        Value::Array(_) => Err(format!("`{loc}` is empty: it needs at least one node")),
        other => Err(format!(
            "`{loc}` must be an array of nodes, got {}",
            json_type(other)
        )),
    }
}

/// Reads a signature (or the common part of a `chunks` node, whose own
/// fields are `extra`).
fn signature(
    obj: &Map<String, Value>,
    loc: &str,
    extra: Option<&[&str]>,
) -> Result<Signature, String> {
    let at = |e: String| format!("`{loc}`: {e}");
    let queue = str_field(obj, "queue")
        .map_err(at)?
        .ok_or_else(|| format!("`{loc}` has no `queue`"))?;
    if !wire::is_valid_queue_name(&queue) {
        return Err(format!(
            "`{loc}.queue` `{queue}` is not a queue name: one topic level of 1 to 64 of A-Z a-z 0-9 _ . -"
        ));
    }
    let task = str_field(obj, "task").map_err(at)?;
    if task.as_deref() == Some("") {
        return Err(format!("`{loc}.task` must not be empty"));
    }
    if obj.contains_key("id") {
        return Err(format!(
            "`{loc}` has an `id`: member ids are given by the broker (`<workflow id>/<path>`)"
        ));
    }
    let args = if extra.is_some() {
        Vec::new()
    } else {
        match obj.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(other) => {
                return Err(format!(
                    "`{loc}.args` must be an array, got {}",
                    json_type(other)
                ));
            }
        }
    };
    let kwargs = match obj.get("kwargs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(format!(
                "`{loc}.kwargs` must be an object, got {}",
                json_type(other)
            ));
        }
    };
    let immutable = match obj.get("immutable") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(format!(
                "`{loc}.immutable` must be true or false, got {}",
                json_type(other)
            ));
        }
    };
    let options = parse_options(obj).map_err(at)?;
    Ok(Signature {
        task: task.unwrap_or_else(|| queue.clone()),
        queue,
        args,
        kwargs,
        immutable,
        chunk: None,
        start: options.start,
        expires: options.expires,
        priority: options.priority,
        retry: options.retry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: WorkflowLimits = WorkflowLimits {
        max_bytes: 1 << 20,
        max_members: 100,
        max_depth: 4,
    };

    fn sig(task: &str) -> Value {
        json!({"queue": "q", "task": task})
    }

    fn paths(tree: &Tree) -> Vec<(String, &'static str)> {
        tree.nodes
            .iter()
            .map(|n| (n.path.clone(), n.kind.name()))
            .collect()
    }

    #[test]
    fn nested_nodes_get_deterministic_paths() {
        let wf = json!({"chain": [
            sig("a"),
            {"chord": {"header": [sig("m"), sig("m")], "body": sig("r")}},
            {"chunks": {"queue": "q", "task": "c", "items": [[1], [2], [3]], "size": 2}},
        ]});
        let tree = read_tree(&wf, &LIMITS).unwrap();
        assert_eq!(
            paths(&tree),
            vec![
                ("".into(), "chain"),
                ("0".into(), "task"),
                ("1".into(), "chord"),
                ("1.0".into(), "group"),
                ("1.0.0".into(), "task"),
                ("1.0.1".into(), "task"),
                ("1.1".into(), "task"),
                ("2".into(), "chunks"),
                ("2.0".into(), "chunk"),
                ("2.1".into(), "chunk"),
            ]
        );
        assert_eq!(tree.members, 6);
        assert_eq!(tree.find("1.0.1"), Some(5));
        assert_eq!(tree.find("2.1"), Some(9));
        assert_eq!(tree.find("7"), None);
        assert_eq!(tree.find("x"), None);
        let Kind::Task(last) = &tree.node(9).kind else {
            panic!("a chunk is a task")
        };
        assert_eq!(last.chunk, Some(vec![json!([3])]));
        assert_eq!(read_tree(&wf, &LIMITS).unwrap(), tree, "deterministic");
    }

    #[test]
    fn a_lone_signature_is_member_zero() {
        let tree = read_tree(&sig("a"), &LIMITS).unwrap();
        assert_eq!(tree.nodes[0].path, "0");
        assert_eq!(tree.find("0"), Some(ROOT));
        assert_eq!(tree.members, 1);
    }

    #[test]
    fn bad_workflows_are_refused_naming_the_path() {
        let cases = [
            (json!({"chian": []}), "`workflow` is of no known node kind"),
            (json!({"group": []}), "`workflow.group` is empty"),
            (
                json!({"chord": {"header": [sig("m")]}}),
                "`workflow.chord` has no `body`",
            ),
            (
                json!({"chain": [sig("a"), {"queue": "q", "args": 3}]}),
                "`workflow.chain[1].args` must be an array",
            ),
            (
                json!({"group": [{"queue": "q", "priority": 12}]}),
                "`workflow.group[0]`: field `priority`",
            ),
            (
                json!({"chunks": {"queue": "q", "items": [[1]], "size": 0}}),
                "`workflow.chunks.size` must be an integer of at least 1",
            ),
            (
                json!({"chunks": {"queue": "q", "items": [1], "size": 1}}),
                "`workflow.chunks.items[0]` must be an array",
            ),
            (json!({"group": "x"}), "`workflow.group` must be an array"),
            (json!([1]), "`workflow` must be a node"),
            (
                json!({"chain": [sig("a")], "group": [sig("b")]}),
                "has both `chain` and `group`",
            ),
            (
                json!({"queue": "bad/queue"}),
                "`workflow.queue` `bad/queue` is not a queue name",
            ),
            (
                json!({"queue": "q", "id": "x"}),
                "member ids are given by the broker",
            ),
            (
                json!({"group": [{"queue": "q", "immutable": "yes"}]}),
                "`workflow.group[0].immutable` must be true or false",
            ),
        ];
        for (wf, expected) in cases {
            let err = read_tree(&wf, &LIMITS).unwrap_err();
            assert!(err.contains(expected), "{wf}: {err}");
        }
    }

    #[test]
    fn limits_are_named() {
        let many: Vec<Value> = (0..101).map(|_| sig("m")).collect();
        let err = read_tree(&json!({ "group": many }), &LIMITS).unwrap_err();
        assert!(
            err.contains("more than 100 members (workflows.max_members)"),
            "{err}"
        );
        let chunks = json!({"chunks": {"queue": "q", "items": vec![json!([1]); 500], "size": 4}});
        let err = read_tree(&chunks, &LIMITS).unwrap_err();
        assert!(err.contains("workflows.max_members"), "{err}");
        let mut deep = sig("a");
        for _ in 0..5 {
            deep = json!({ "chain": [deep] });
        }
        let err = read_tree(&deep, &LIMITS).unwrap_err();
        assert!(
            err.contains("deeper than 4 levels (workflows.max_depth)"),
            "{err}"
        );
    }
}
