//! The agent layer: model clients ([`llm`]), agent specs ([`spec`]), model pricing
//! ([`pricing`]), budgets ([`budget`]) and the budgeted model call ([`budgeted`]), tools and
//! their registry ([`tools`]) and the agent loop ([`run`]).
//!
//! Nothing here knows about HTTP, Postgres or Redis: what the loop needs from the outside
//! world (somewhere to record model calls, tool calls and messages, a budget) it declares as
//! traits ([`record::RunRecorder`], [`record::CallRecorder`], [`budget::Budget`]) which the
//! `api` crate implements; long-term memory comes in as a [`memory::MemoryStore`].
//!
//! Dependencies inside the crate point one way: `llm` and `pricing` at the bottom, then
//! `budget`, `checkpoint`, `record`, `budgeted`, the tools, and the loop on top.

pub mod approval;
pub mod budget;
pub mod budgeted;
pub mod checkpoint;
pub mod llm;
pub mod pricing;
pub mod record;
pub mod run;
pub mod spec;
pub mod storable;
pub mod tools;
pub mod warm;

pub use approval::{ApprovalPolicy, ApprovalRequest, DecidedCall, Decision};
pub use budget::{Budget, BudgetError, BudgetExceeded, BudgetLimit, CallEstimate, Reservation, Unlimited};
pub use budgeted::{Answered, BudgetedModel, CallError, Halt, Priced};
pub use checkpoint::Checkpoint;
pub use llm::{ChatMessage, ChatRequest, ChatResponse, LlmClient, LlmError, Role, ToolCall, UnknownRole, Usage};
pub use pricing::{ModelPrice, PriceTable};
pub use record::{CallRecorder, LlmCallRecord, RecordError, RunRecorder, ToolCallRecord, ToolCallStatus};
pub use run::{AgentError, AgentOutput, AgentRunner, LoopSettings, StepInput};
pub use spec::{AgentCatalog, AgentSpec, CatalogError};
pub use tools::{
    AddressPolicy, HttpGetSettings, RegistryError, Tool, ToolContext, ToolError, ToolInfo, ToolRegistry, ToolSettings,
    builtin_tools,
};
pub use warm::{CachedToolResult, WarmContext};
