//! What the agents crate reports to its host, and the traits it reports through.
//!
//! The agent loop hands over every model call and every tool call (rejected ones included)
//! as it happens, each with the loop's [`Checkpoint`] after it ([`RunRecorder`]), so cost is
//! kept even when the step later fails and a step cut short can be continued from where it
//! stood. A host that makes budgeted model calls outside the loop (the LLM planner) records
//! only those ([`CallRecorder`]).
//!
//! This module sits below both the loop (`crate::run`) and the tool registry, which builds
//! the [`ToolCallRecord`]s, so neither depends on the other for these types.

use crate::{budget::Reservation, checkpoint::Checkpoint, llm::Usage};

/// One model call, as the provider reported it, with its cost.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmCallRecord {
    pub provider: String,
    pub model: String,
    pub usage: Usage,
    pub cost_usd: f64,
    pub latency_ms: f64,
    /// What was reserved for this call; the recorder settles it with `usage` and
    /// `cost_usd` in the same write that records the call.
    pub reservation: Option<Reservation>,
}

/// How a tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCallStatus {
    /// The tool ran and returned a result.
    Ok,
    /// The tool ran and failed, or timed out.
    Error,
    /// The call was refused: unknown tool, not allowed for the agent, invalid arguments or
    /// a policy (e.g. a forbidden address).
    Rejected,
    /// A warm start answered the call from an earlier run's result; the tool did not run.
    Cached,
    /// The tool requires a person's approval: the call waits for a decision and has not run.
    AwaitingApproval,
    /// A person denied the call: the tool did not run and the model was told why.
    Denied,
}

impl ToolCallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Rejected => "rejected",
            Self::Cached => "cached",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Denied => "denied",
        }
    }
}

/// One tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallRecord {
    pub tool: String,
    pub arguments: serde_json::Value,
    /// The result (possibly truncated); `None` unless the status is `Ok`.
    pub result: Option<serde_json::Value>,
    pub status: ToolCallStatus,
    /// Why the call was rejected or failed.
    pub error: Option<String>,
    pub latency_ms: f64,
}

/// Where the loop reports what it did. Implemented by the host (Postgres in `api`).
///
/// Each method writes the call and the checkpoint in one write, fenced like the step's other
/// writes: either both are kept or neither is.
#[async_trait::async_trait]
pub trait RunRecorder: Send + Sync {
    /// A model call of the step (a turn or a summary), settling its reservation if it carries
    /// one, and the checkpoint with its answer.
    async fn model_call(&self, call: LlmCallRecord, checkpoint: &Checkpoint) -> Result<(), RecordError>;
    /// A tool call and the checkpoint with its reply.
    async fn tool_call(&self, call: ToolCallRecord, checkpoint: &Checkpoint) -> Result<(), RecordError>;
}

/// Where a budgeted model call outside the loop is recorded ([`crate::BudgetedModel::call`]):
/// the planner's calls belong to no step and have no checkpoint.
#[async_trait::async_trait]
pub trait CallRecorder: Send + Sync {
    /// Records one call; when it carries a reservation, settles it in the same write.
    async fn record_llm_call(&self, call: LlmCallRecord) -> Result<(), RecordError>;
}

/// The recorder could not persist a record; the step must not go on unaccounted.
#[derive(Debug, thiserror::Error)]
#[error("could not record the agent's activity: {0}")]
pub struct RecordError(pub String);
