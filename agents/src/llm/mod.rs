//! The model interface shared by the agents and the planner, and its providers.
//!
//! Providers translate [`ChatRequest`] into their wire format and report usage exactly as
//! the provider counted it; cost is computed later from [`crate::PriceTable`], so a price
//! change never needs a provider change. Only when a provider reports no usage at all is it
//! counted here, with a real tokenizer ([`count_tokens`]).
//!
//! Providers: [`OfflineModel`] (deterministic, no network, the default), [`OpenAiClient`]
//! (OpenAI-compatible chat completions: OpenAI, Ollama, vLLM, llama.cpp …) and
//! [`AnthropicClient`] (Anthropic Messages). The HTTP providers share one retry policy
//! ([`Backoff`]) and never put their API key in a log line, an error or a `Debug` string.

mod anthropic;
mod offline;
mod openai;
mod retry;
mod storable;
mod tokens;

pub use anthropic::{ANTHROPIC_VERSION, AnthropicClient, AnthropicConfig};
pub use offline::OfflineModel;
pub use openai::{MaxTokensField, OpenAiClient, OpenAiConfig};
pub use retry::Backoff;
pub use storable::Storable;
pub use tokens::{count_tokens, prompt_tokens, warm_up_tokenizer};
// A budgeted call is priced before it is made (`crate::budget::CallEstimate`).

use serde::{Deserialize, Serialize};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    /// The name stored with a message (`task_messages.role`) and used by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = UnknownRole;

    fn from_str(name: &str) -> Result<Self, UnknownRole> {
        [Self::System, Self::User, Self::Assistant, Self::Tool]
            .into_iter()
            .find(|role| role.as_str() == name)
            .ok_or_else(|| UnknownRole(name.to_owned()))
    }
}

/// A role name that is none of [`Role`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown message role {0:?}")]
pub struct UnknownRole(pub String);

/// A tool invocation the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Provider-assigned id, echoed back in the tool's answer.
    pub id: String,
    /// Name of the tool to call.
    pub name: String,
    /// The arguments as the model wrote them. Normally an object; when a provider sent
    /// arguments that are not valid JSON they arrive here as a JSON string holding the raw
    /// text, so the tool registry can reject them with a reason instead of the call failing.
    pub arguments: serde_json::Value,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// The text; may be empty on an assistant message that only asked for tools.
    pub content: String,
    /// Set on assistant messages that asked for tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Set on tool messages: the call this message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A plain message with no tool calls.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_calls: Vec::new(), tool_call_id: None }
    }

    /// The answer to tool call `call_id`.
    pub fn tool_result(call_id: &str, content: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.to_owned()),
        }
    }
}

/// A tool the model may call, as advertised to the provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// The name the model calls it by.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// Whether the model may answer in text or must call one of the offered tools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides (the providers' own default; nothing is sent).
    #[default]
    Auto,
    /// The model must call one of the offered tools: used for structured output.
    Required,
}

/// One model call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The conversation so far, system prompt first.
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call.
    pub tools: Vec<ToolDefinition>,
    /// Ceiling on the answer's tokens; `None` uses the client's default.
    pub max_tokens: Option<u32>,
    /// Model for this call (an agent's override); `None` uses the client's default model.
    pub model: Option<String>,
    /// Whether a tool call is mandatory; ignored when `tools` is empty.
    pub tool_choice: ToolChoice,
}

/// Token usage of one model call, as the provider reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// All prompt tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's cache (a subset of `prompt_tokens`).
    pub cached_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Self) {
        self.prompt_tokens += rhs.prompt_tokens;
        self.completion_tokens += rhs.completion_tokens;
        self.cached_tokens += rhs.cached_tokens;
    }
}

/// What the model answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The final answer, when the model gave one.
    pub content: Option<String>,
    /// Tools the model wants called before it answers.
    pub tool_calls: Vec<ToolCall>,
    /// Tokens used, from the provider or counted when it reported none.
    pub usage: Usage,
    /// The model that actually answered (providers may resolve aliases).
    pub model: String,
}

/// Why a model call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LlmError {
    /// The provider refused the request (400, 401, 403 …); retrying will not help.
    #[error("the model provider rejected the request ({status}): {message}")]
    Rejected {
        /// HTTP status of the refusal.
        status: u16,
        /// The provider's own explanation, when it gave one.
        message: String,
    },
    /// Overloaded, rate limited or unreachable after all retries.
    #[error("the model provider is unavailable: {0}")]
    Unavailable(String),
    /// Every attempt ran past the configured timeout.
    #[error("the model call timed out")]
    Timeout,
    /// The provider answered, but not with something this client understands.
    #[error("the model provider sent an invalid response: {0}")]
    InvalidResponse(String),
}

/// A provider client could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum LlmConfigError {
    /// The base URL does not parse or is not http(s).
    #[error("invalid model provider base URL `{url}`: {reason}")]
    BaseUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API key cannot be sent as an HTTP header (the key itself is never shown).
    #[error("the model provider API key contains characters that cannot be sent in an HTTP header")]
    ApiKey,
    /// A setting is out of range.
    #[error("invalid model provider setting `{field}`: {reason}")]
    Setting {
        /// The offending setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be created (TLS backend initialisation).
    #[error("cannot create the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// A chat model. Implementations must be cheap to share (`Arc<dyn LlmClient>`).
#[async_trait::async_trait]
pub trait LlmClient: Send + Sync {
    /// Provider name recorded with every call, e.g. `offline`, `openai`.
    fn provider(&self) -> &str;
    /// Default model of this client.
    fn model(&self) -> &str;
    /// One model call; HTTP providers retry transient failures inside it.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError>;
    /// Whether this client already makes its answers storable ([`Storable`]), so wrapping
    /// it again would only copy.
    fn is_storable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod role_tests {
    use super::{Role, UnknownRole};

    #[test]
    fn a_role_reads_back_from_its_name_and_serde_agrees() {
        for role in [Role::System, Role::User, Role::Assistant, Role::Tool] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
        assert_eq!("robot".parse::<Role>(), Err(UnknownRole("robot".into())));
    }
}
