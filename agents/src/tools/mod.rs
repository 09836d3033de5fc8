//! Tools: what an agent can do besides talking.
//!
//! A [`Tool`] names itself, describes itself and declares the JSON Schema of its arguments;
//! the [`ToolRegistry`] owns every tool of the process and is the only way the agent loop
//! runs one, so every call is checked (known tool, allowed for the agent, arguments valid
//! against the schema), bounded (timeout, result size) and measured before it is recorded.
//!
//! Tools never learn who they act for from their arguments: the owner, task and step come
//! from the [`ToolContext`] the loop builds, so a model cannot reach another user's data by
//! naming it.

pub mod calculator;
pub mod current_time;
pub mod http_get;
pub mod json_extract;
pub mod memory;
pub mod registry;
mod settings;

use std::sync::Arc;

pub use calculator::Calculator;
pub use current_time::{Clock, CurrentTime, SystemClock};
pub use http_get::{AddressPolicy, HttpGet, is_forbidden};
pub use json_extract::JsonExtract;
pub use memory::{MemorySearch, MemoryStoreTool};
pub use registry::{RegistryError, ToolInfo, ToolInvocation, ToolRegistry};
pub use settings::{HttpGetSettings, ToolSettings};

/// Names of every built-in tool, whether or not this deployment enables it. Agent files may
/// name any of these; a disabled one is allowed but simply not offered to the model.
pub const BUILTIN_TOOL_NAMES: [&str; 6] =
    [calculator::NAME, current_time::NAME, json_extract::NAME, http_get::NAME, memory::SEARCH_NAME, memory::STORE_NAME];

/// Who a tool call acts for. Built by the agent loop from the step it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolContext {
    pub task_id: uuid::Uuid,
    /// `None` outside a step (e.g. during planning).
    pub step_id: Option<uuid::Uuid>,
    /// The user who owns the task; memory tools read and write only this user's items.
    pub owner: String,
}

/// Something an agent can call.
#[async_trait::async_trait]
pub trait Tool: Send + Sync {
    /// Unique name the model uses to call the tool.
    fn name(&self) -> &str;
    /// What the tool does, for the model and for `GET /tools`.
    fn description(&self) -> &str;
    /// JSON Schema of the arguments object.
    fn parameters(&self) -> serde_json::Value;
    /// Whether a call is CPU-bound work (parsing, evaluating, searching) rather than waiting
    /// on I/O. The registry runs such calls on the blocking pool, so they never hold a
    /// runtime thread and the call timeout fires while they run. Such a tool must still bound
    /// its own work: a blocking thread cannot be stopped, only abandoned.
    fn cpu_bound(&self) -> bool {
        false
    }
    /// Runs the tool. `arguments` has already been validated against [`Tool::parameters`].
    async fn call(&self, arguments: serde_json::Value, ctx: &ToolContext) -> Result<serde_json::Value, ToolError>;
}

/// Why a tool call did not produce a result. The message goes back to the model, so it
/// says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The arguments passed the schema but make no sense (bad expression, bad path …).
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool ran and failed (network error, store unavailable …).
    #[error("{0}")]
    Failed(String),
    /// A policy refused the call (host not allowed, private address …).
    #[error("denied: {0}")]
    Denied(String),
}

/// The built-in tools this deployment enables: `calculator`, `current_time` and
/// `json_extract` always; `http_get` when `settings.http.allowed_hosts` is non-empty;
/// `memory_search` and `memory_store` when a memory store is given.
pub fn builtin_tools(
    settings: &ToolSettings,
    memory: Option<Arc<dyn ::memory::MemoryStore>>,
) -> Result<ToolRegistry, RegistryError> {
    let mut registry = ToolRegistry::new(settings);
    registry.register(Arc::new(Calculator))?;
    registry.register(Arc::new(CurrentTime::new(Arc::new(SystemClock))))?;
    registry.register(Arc::new(JsonExtract))?;
    if !settings.http.allowed_hosts.is_empty() {
        registry.register(Arc::new(HttpGet::new(settings.http.clone())?))?;
    }
    if let Some(store) = memory {
        registry.register(Arc::new(MemorySearch::new(store.clone())))?;
        registry.register(Arc::new(MemoryStoreTool::new(store)))?;
    }
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_get_is_registered_only_with_an_allowlist() {
        let plain = builtin_tools(&ToolSettings::default(), None).unwrap();
        assert_eq!(plain.names(), ["calculator", "current_time", "json_extract"]);

        let mut settings = ToolSettings::default();
        settings.http.allowed_hosts = vec!["example.com".into()];
        let with_http = builtin_tools(&settings, None).unwrap();
        assert_eq!(with_http.names(), ["calculator", "current_time", "http_get", "json_extract"]);
    }

    #[test]
    fn every_builtin_name_is_listed() {
        let mut settings = ToolSettings::default();
        settings.http.allowed_hosts = vec!["example.com".into()];
        let store: Arc<dyn ::memory::MemoryStore> = Arc::new(memory::tests::InMemoryStore::default());
        let all = builtin_tools(&settings, Some(store)).unwrap();
        let mut names = BUILTIN_TOOL_NAMES.to_vec();
        names.sort_unstable();
        assert_eq!(all.names(), names);
    }
}
