//! The agent layer: model clients ([`llm`]), agent specs ([`spec`]), model pricing
//! ([`pricing`]), tools and their registry ([`tools`]) and the agent loop ([`run`]).
//!
//! Nothing here knows about HTTP, Postgres or Redis: what the loop needs from the outside
//! world (somewhere to record model calls, tool calls and messages) it declares as the
//! [`run::RunRecorder`] trait, which the `api` crate implements; long-term memory comes in
//! as a [`memory::MemoryStore`].

pub mod llm;
pub mod pricing;
pub mod run;
pub mod spec;
pub mod storable;
pub mod tools;

pub use llm::{ChatMessage, ChatRequest, ChatResponse, LlmClient, LlmError, Role, ToolCall, UnknownRole, Usage};
pub use pricing::{ModelPrice, PriceTable};
pub use run::{
    AgentError, AgentOutput, AgentRunner, Budget, BudgetError, BudgetExceeded, BudgetLimit, CallEstimate,
    LlmCallRecord, LoopSettings, RecordError, Reservation, RunRecorder, StepInput, ToolCallRecord, ToolCallStatus,
    Unlimited,
};
pub use spec::{AgentCatalog, AgentSpec, CatalogError};
pub use tools::{
    AddressPolicy, HttpGetSettings, RegistryError, Tool, ToolContext, ToolError, ToolInfo, ToolRegistry, ToolSettings,
    builtin_tools,
};
