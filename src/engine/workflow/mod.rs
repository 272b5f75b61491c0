//! Workflows: chain, group, chord and chunks, run by the engine.
//!
//! | file | owns |
//! |---|---|
//! | `tree` | reading a `workflow` node into a [`tree::Tree`], and its limits |
//! | `run` | a workflow's progress over its tree: a pure state machine |
//! | `engine` | accepting, running, failing, revoking and recovering workflows in the engine |
//!
//! How it holds together: a workflow is stored once, whole (its submission
//! payload), before it is acknowledged; each member that succeeds has its
//! result stored before anything follows from it. Member tasks are ordinary
//! tasks with the deterministic ids `<workflow id>/<path>`, which reach the
//! workflow through the engine's one `on_final` seam. After a restart the
//! engine replays every stored workflow from its definition and stored
//! results: members with a result are complete, members whose task is
//! still in the store go on, and only the members whose turn had come and
//! that have neither are created. Nothing polls: a group completes when its
//! last member's result arrives.

pub(super) mod engine;
#[cfg(test)]
mod proptests;
mod run;
mod tree;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use tree::WorkflowLimits;

use super::request::{BadRequest, MAX_TASK_ID_LEN, json_type, read_envelope};
use super::task::ReplyTo;

/// The state of a workflow and its members, for the API and the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowView {
    /// Workflow id.
    pub id: String,
    /// `running`, or the final `success`, `failure`, `revoked`.
    pub status: String,
    /// Member tasks in all.
    pub members: usize,
    /// Members by status: `waiting` (their turn has not come), `scheduled`,
    /// `queued`, `running`, `success`, `failure`, `revoked`.
    pub counts: Map<String, Value>,
    /// The result, once `success`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, once `failure` or `revoked`: it names the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The identity that submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// Submission time, microseconds since the epoch.
    pub submitted_at_us: u64,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_us: Option<u64>,
    /// Its tree, each node with its status.
    pub tree: NodeView,
}

/// One node of a [`WorkflowView`]'s tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// `task`, `chunk`, `chain`, `group`, `chord` or `chunks`.
    pub kind: String,
    /// Member path (`""` for the root of a composite workflow).
    pub path: String,
    /// The node's status (a composite is `running` until it completes).
    pub status: String,
    /// A member's task id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A member's queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// A member's task name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Its children, the first [`LISTED_CHILDREN`] of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<NodeView>,
    /// Children not listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Most children of one node a view lists; the rest are counted in `more`
/// (a chord of 100,000 members is looked at, not read out).
pub const LISTED_CHILDREN: usize = 100;

/// A workflow submission that passed validation.
#[derive(Debug)]
pub(super) struct ParsedWorkflow {
    pub(super) id: Option<String>,
    pub(super) reply_to: Option<ReplyTo>,
    pub(super) progress: bool,
    pub(super) tree: tree::Tree,
}

/// Reads a `swarmq/workflows` payload: `{"id", "workflow", "reply_to",
/// "correlation_id", "progress"}`.
pub(super) fn parse_workflow(
    payload: &[u8],
    limits: &WorkflowLimits,
) -> Result<ParsedWorkflow, BadRequest> {
    let bad = |message: String| BadRequest {
        message,
        id: None,
        reply_to: None,
    };
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| bad(format!("payload is not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(bad(format!(
            "a workflow submission must be a JSON object, got {}",
            json_type(&value)
        )));
    };
    let (id, reply_to, salvage) = read_envelope(&obj, |id| {
        (id.is_empty() || id.len() > MAX_TASK_ID_LEN || id.contains('\0'))
            .then(|| format!("field `id` must be 1 to {MAX_TASK_ID_LEN} bytes, without NUL"))
    })?;
    let fail = |message: String| salvage.fail(message);
    let progress = match obj.get("progress") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(fail(format!(
                "field `progress` must be true or false, got {}",
                json_type(other)
            )));
        }
    };
    let workflow = obj
        .get("workflow")
        .ok_or_else(|| fail("a workflow submission needs a `workflow` node".into()))?;
    let tree = tree::read_tree(workflow, limits).map_err(&fail)?;
    Ok(ParsedWorkflow {
        id,
        reply_to,
        progress,
        tree,
    })
}
