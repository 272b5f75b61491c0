//! Workflow builders, named after Celery's canvas: [`chain`], [`group`],
//! [`chord`], [`chunks`] over [`Signature`]s. They build the JSON a client
//! publishes to [`WORKFLOWS_TOPIC`](crate::wire::WORKFLOWS_TOPIC); the broker
//! runs the whole tree and sends one result.
//!
//! ```
//! use serde_json::json;
//! use swarmq_worker::canvas::{Signature, chord};
//!
//! let words = ["Fables", "of", "Fables"];
//! let wc = chord(
//!     words.iter().map(|w| Signature::new("word_count", "mapper").arg(json!(w))),
//!     Signature::new("word_count", "reduce"),
//! );
//! assert_eq!(wc.members(), 4);
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::wire::RetryOptions;

/// One task of a workflow: its queue, name, arguments and options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// Queue it is sent to.
    pub queue: String,
    /// Task name.
    pub task: String,
    /// Positional arguments (the previous node's result is put first,
    /// unless `immutable`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub kwargs: Map<String, Value>,
    /// Takes no result from the node before it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub immutable: bool,
    /// Seconds before it may be delivered, once its turn has come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub countdown: Option<f64>,
    /// Seconds after its start after which, not yet running, it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<f64>,
    /// 0 (lowest) to 9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Its own retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryOptions>,
}

impl Signature {
    /// Task `task` on queue `queue`, without arguments.
    pub fn new(queue: impl Into<String>, task: impl Into<String>) -> Signature {
        Signature {
            queue: queue.into(),
            task: task.into(),
            ..Signature::default()
        }
    }

    /// Adds a positional argument.
    pub fn arg(mut self, value: impl Into<Value>) -> Signature {
        self.args.push(value.into());
        self
    }

    /// Sets the positional arguments.
    pub fn args(mut self, args: impl IntoIterator<Item = Value>) -> Signature {
        self.args = args.into_iter().collect();
        self
    }

    /// Adds a keyword argument.
    pub fn kwarg(mut self, name: impl Into<String>, value: impl Into<Value>) -> Signature {
        self.kwargs.insert(name.into(), value.into());
        self
    }

    /// Makes it take no result from the node before it (Celery's `si()`).
    pub fn immutable(mut self) -> Signature {
        self.immutable = true;
        self
    }

    /// Its priority, 0 to 9.
    pub fn priority(mut self, priority: u8) -> Signature {
        self.priority = Some(priority);
        self
    }

    /// Waits `secs` once its turn has come.
    pub fn countdown(mut self, secs: f64) -> Signature {
        self.countdown = Some(secs);
        self
    }

    /// Its own retry policy.
    pub fn retry(mut self, retry: RetryOptions) -> Signature {
        self.retry = Some(retry);
        self
    }
}

/// A workflow node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Node {
    /// One task.
    Task(Signature),
    /// `{"chain": [...]}`.
    Chain {
        /// Nodes run one after another.
        chain: Vec<Node>,
    },
    /// `{"group": [...]}`.
    Group {
        /// Nodes run at once.
        group: Vec<Node>,
    },
    /// `{"chord": {"header": [...], "body": ...}}`.
    Chord {
        /// Header and body.
        chord: ChordSpec,
    },
    /// `{"chunks": {...}}`.
    Chunks {
        /// Items and size.
        chunks: ChunksSpec,
    },
}

/// A chord's parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChordSpec {
    /// Run at once, as a group.
    pub header: Vec<Node>,
    /// Run on the list of the header's results.
    pub body: Box<Node>,
}

/// A chunks node's parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunksSpec {
    /// Queue of the chunk tasks.
    pub queue: String,
    /// Task run once per item.
    pub task: String,
    /// The items, each a list of arguments.
    pub items: Vec<Vec<Value>>,
    /// Items per chunk task.
    pub size: usize,
}

impl From<Signature> for Node {
    fn from(s: Signature) -> Node {
        Node::Task(s)
    }
}

impl Node {
    /// Member tasks it holds (a chunks node: its chunk tasks).
    pub fn members(&self) -> usize {
        match self {
            Node::Task(_) => 1,
            Node::Chain { chain: nodes } | Node::Group { group: nodes } => {
                nodes.iter().map(Node::members).sum()
            }
            Node::Chord { chord } => {
                chord.header.iter().map(Node::members).sum::<usize>() + chord.body.members()
            }
            Node::Chunks { chunks } => chunks.items.len().div_ceil(chunks.size.max(1)),
        }
    }
}

/// Nodes run one after another, each given the previous result.
pub fn chain<N: Into<Node>>(nodes: impl IntoIterator<Item = N>) -> Node {
    Node::Chain {
        chain: nodes.into_iter().map(Into::into).collect(),
    }
}

/// Nodes run at once; the result is the list of their results.
pub fn group<N: Into<Node>>(nodes: impl IntoIterator<Item = N>) -> Node {
    Node::Group {
        group: nodes.into_iter().map(Into::into).collect(),
    }
}

/// `header` run at once, then `body` on the list of their results.
pub fn chord<N: Into<Node>>(header: impl IntoIterator<Item = N>, body: impl Into<Node>) -> Node {
    Node::Chord {
        chord: ChordSpec {
            header: header.into_iter().map(Into::into).collect(),
            body: Box::new(body.into()),
        },
    }
}

/// `task` on each item, `size` items per task; the result is the flat list
/// of the items' results.
pub fn chunks(
    queue: impl Into<String>,
    task: impl Into<String>,
    items: impl IntoIterator<Item = Vec<Value>>,
    size: usize,
) -> Node {
    Node::Chunks {
        chunks: ChunksSpec {
            queue: queue.into(),
            task: task.into(),
            items: items.into_iter().collect(),
            size,
        },
    }
}

/// What a client publishes to `swarmq/workflows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRequest {
    /// Workflow id, also its idempotency key; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tree.
    pub workflow: Node,
    /// Also send `{"status": "progress", "progress": {"done", "total"}}`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub progress: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builders_write_the_contract_json() {
        let wf = chain([
            Node::from(Signature::new("q", "a").arg(1).priority(3)),
            chord(
                [Signature::new("q", "m").arg("x")],
                Signature::new("q", "r").immutable(),
            ),
            chunks("q", "c", vec![vec![json!(1)], vec![json!(2)]], 1),
        ]);
        assert_eq!(
            serde_json::to_value(&wf).unwrap(),
            json!({"chain": [
                {"queue": "q", "task": "a", "args": [1], "priority": 3},
                {"chord": {"header": [{"queue": "q", "task": "m", "args": ["x"]}],
                           "body": {"queue": "q", "task": "r", "immutable": true}}},
                {"chunks": {"queue": "q", "task": "c", "items": [[1], [2]], "size": 1}},
            ]})
        );
        assert_eq!(wf.members(), 5);
        let back: Node = serde_json::from_value(serde_json::to_value(&wf).unwrap()).unwrap();
        assert_eq!(back, wf);
    }
}
