//! The agent layer: model clients ([`llm`]), agent specs ([`spec`]), model pricing
//! ([`pricing`]) and the agent loop ([`run`]).
//!
//! Nothing here knows about HTTP, Postgres or Redis: what the loop needs from the outside
//! world (somewhere to record model and tool calls) it declares as the [`run::RunRecorder`]
//! trait, which the `api` crate implements.

pub mod llm;
pub mod pricing;
pub mod run;
pub mod spec;

pub use llm::{ChatMessage, ChatRequest, ChatResponse, LlmClient, LlmError, Role, ToolCall, Usage};
pub use pricing::{ModelPrice, PriceTable};
pub use run::{
    AgentError, AgentOutput, AgentRunner, LlmCallRecord, RunRecorder, StepInput, ToolCallRecord, ToolCallStatus,
};
pub use spec::{AgentCatalog, AgentSpec};
