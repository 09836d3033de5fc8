//! People in the loop: tool calls that wait for a person's decision before they run.
//!
//! A tool may require approval (the deployment's list, the agent's `approval`, the task's
//! `require_approval`). When the model calls one, the loop does not run it: it checks the
//! arguments (an invalid call is rejected back to the model as usual, no person is asked)
//! and stops with [`crate::AgentError::AwaitingApproval`], naming every call of the turn that
//! waits. Its last checkpoint already holds the turn, so the host can give the worker slot
//! back and continue the step later, on any worker, with the [`DecidedCall`]s: an approved
//! call runs (with the person's edited arguments, when given), a denied one answers the model
//! with the reason, so it can adapt.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::llm::ToolCall;

/// A person's answer to one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Run the call; with `arguments`, run it with these instead of the model's.
    Approve { arguments: Option<Value> },
    /// Do not run it; the model is told why.
    Deny { reason: String },
}

/// A decision on the call `call_id` (the model's id) of the step's turn `turn`. Model call
/// ids are only unique within a turn for some providers, so the turn is part of the key.
#[derive(Debug, Clone, PartialEq)]
pub struct DecidedCall {
    pub turn: u32,
    pub call_id: String,
    pub decision: Decision,
}

/// A call the loop stopped for.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    /// The step's turn the model made the call in (`Checkpoint::turns` after it).
    pub turn: u32,
    pub call: ToolCall,
}

/// Which tools need a person's approval in one step: the deployment's and the task's lists
/// (the agent's own comes with its spec).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApprovalPolicy<'a> {
    pub tools: &'a [String],
    pub decisions: &'a [DecidedCall],
}

impl ApprovalPolicy<'_> {
    /// The decision on `call` of `turn`, when a person made one.
    pub fn decision(&self, turn: u32, call: &ToolCall) -> Option<&Decision> {
        self.decisions.iter().find(|d| d.turn == turn && d.call_id == call.id).map(|d| &d.decision)
    }

    pub fn requires(&self, agent_approval: &[String], tool: &str) -> bool {
        self.tools.iter().chain(agent_approval).any(|t| t == tool)
    }
}

/// What the model reads when a person denied its call.
pub fn denied_reply(reason: &str) -> String {
    serde_json::json!({
        "error": format!("a person reviewing this call denied it: {reason}"),
        "denied": true,
    })
    .to_string()
}

/// What the model reads when a person changed the arguments before the call ran: the result,
/// and the arguments it ran with, so the model does not assume its own were used.
pub fn edited_reply(arguments: &Value, reply: &str) -> String {
    let result = serde_json::from_str::<Value>(reply).unwrap_or_else(|_| Value::String(reply.to_owned()));
    serde_json::json!({
        "note": "a person reviewing this call changed its arguments before it ran",
        "arguments": arguments,
        "result": result,
    })
    .to_string()
}
