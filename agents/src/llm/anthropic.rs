//! Anthropic Messages API (`POST {base_url}/v1/messages`).
//!
//! Invariants of the translation: system messages become the top-level `system` text;
//! assistant tool calls become `tool_use` blocks and tool answers `tool_result` blocks of a
//! user message; consecutive messages of one role are merged into a single message (the API
//! wants the roles to alternate), with `tool_result` blocks first as the API requires; every
//! request carries `max_tokens`, which the API makes mandatory. Usage maps Anthropic's split
//! counts onto [`Usage`]: prompt = input + cache reads + cache writes, cached = cache reads.
//! The key travels only in the sensitive `x-api-key` header.

use std::{fmt, time::Duration};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Backoff, ChatMessage, ChatRequest, ChatResponse, LlmClient, LlmConfigError, LlmError, Role, ToolCall, ToolChoice,
    Usage,
    retry::{DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Transport, TransportSettings, max_call_duration, secret_header},
    tokens,
};

/// The API version this client speaks (`anthropic-version` header).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Settings of an [`AnthropicClient`].
#[derive(Clone, PartialEq)]
pub struct AnthropicConfig {
    /// API root without the version, e.g. `https://api.anthropic.com`.
    pub base_url: String,
    /// Sent as `x-api-key`; Anthropic's own API requires one, gateways may not.
    pub api_key: Option<String>,
    /// Default model, used when a request names none.
    pub model: String,
    /// Limit for one attempt, from connecting to reading the whole answer.
    pub timeout: Duration,
    /// Retries after the first attempt on transient failures.
    pub max_retries: u32,
    /// Waits between attempts.
    pub backoff: Backoff,
    /// Answer-length limit when a request sets none (the API requires one).
    pub max_tokens: u32,
}

impl AnthropicConfig {
    /// Anthropic's own endpoint.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.anthropic.com";
    /// Default answer-length limit.
    pub const DEFAULT_MAX_TOKENS: u32 = 4096;

    /// Settings for `model` with `api_key` at Anthropic's endpoint, with default limits.
    pub fn new(api_key: Option<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: Self::DEFAULT_BASE_URL.to_owned(),
            api_key,
            model: model.into(),
            timeout: DEFAULT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff: Backoff::default(),
            max_tokens: Self::DEFAULT_MAX_TOKENS,
        }
    }

    /// The longest one call can take with these settings, retries and waits included.
    pub fn max_call_duration(&self) -> Duration {
        max_call_duration(self.timeout, self.max_retries, &self.backoff)
    }
}

/// Written by hand so the API key can never be printed.
impl fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

/// A client of the Anthropic Messages API.
pub struct AnthropicClient {
    transport: Transport,
    model: String,
    max_tokens: u32,
}

impl fmt::Debug for AnthropicClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicClient")
            .field("endpoint", &self.transport.endpoint().as_str())
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl AnthropicClient {
    /// Provider name recorded with every call.
    pub const PROVIDER: &'static str = "anthropic";

    /// Checks the settings and builds the HTTP client; makes no request.
    pub fn new(config: AnthropicConfig) -> Result<Self, LlmConfigError> {
        if config.model.trim().is_empty() {
            return Err(LlmConfigError::Setting { field: "model", reason: "must not be empty".into() });
        }
        if config.max_tokens == 0 {
            return Err(LlmConfigError::Setting { field: "max_tokens", reason: "must be greater than zero".into() });
        }
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("anthropic-version"), HeaderValue::from_static(ANTHROPIC_VERSION));
        if let Some(key) = config.api_key.as_deref().filter(|k| !k.is_empty()) {
            headers.insert(HeaderName::from_static("x-api-key"), secret_header(key)?);
        }
        let transport = Transport::new(TransportSettings {
            provider: Self::PROVIDER,
            base_url: &config.base_url,
            path: "/v1/messages",
            timeout: config.timeout,
            max_retries: config.max_retries,
            backoff: config.backoff,
            headers,
            secret: config.api_key,
        })?;
        Ok(Self { transport, model: config.model, max_tokens: config.max_tokens })
    }

    fn wire_request<'a>(&'a self, request: &'a ChatRequest) -> WireRequest<'a> {
        let system: Vec<&str> =
            request.messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
        let tools: Vec<WireTool<'_>> = request
            .tools
            .iter()
            .map(|t| WireTool { name: &t.name, description: &t.description, input_schema: &t.parameters })
            .collect();
        let tool_choice = match request.tool_choice {
            ToolChoice::Required if !tools.is_empty() => Some(WireToolChoice { kind: "any" }),
            _ => None,
        };
        WireRequest {
            model: request.model.as_deref().unwrap_or(&self.model),
            max_tokens: request.max_tokens.unwrap_or(self.max_tokens),
            system: Some(system.join("\n\n")).filter(|s| !s.is_empty()),
            messages: wire_messages(&request.messages),
            tools,
            tool_choice,
        }
    }
}

#[async_trait::async_trait]
impl LlmClient for AnthropicClient {
    fn provider(&self) -> &str {
        Self::PROVIDER
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let wire = self.wire_request(request);
        let body = self.transport.post_json(&wire).await?;
        let answer: WireResponse =
            serde_json::from_slice(&body).map_err(|e| LlmError::InvalidResponse(format!("not a message: {e}")))?;
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for block in answer.content {
            match block {
                InBlock::Text { text: part } => text.push_str(&part),
                InBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall { id, name, arguments: input }),
                // Thinking and other block kinds carry nothing the agent loop uses.
                InBlock::Other => {}
            }
        }
        let content = Some(text).filter(|t| !t.is_empty());
        let usage = match answer.usage.and_then(WireUsage::reported) {
            Some(usage) => usage,
            None => tokens::count_call(request, content.as_deref(), &tool_calls).await,
        };
        let model = answer.model.filter(|m| !m.is_empty()).unwrap_or_else(|| wire.model.to_owned());
        Ok(ChatResponse { content, tool_calls, usage, model })
    }
}

/// The conversation without its system messages, as alternating user and assistant turns.
fn wire_messages(messages: &[ChatMessage]) -> Vec<WireMessage<'_>> {
    let mut out: Vec<WireMessage<'_>> = Vec::new();
    for message in messages {
        let (role, blocks) = match message.role {
            Role::System => continue,
            Role::User => ("user", text_block(&message.content).into_iter().collect::<Vec<_>>()),
            Role::Tool => (
                "user",
                vec![OutBlock::ToolResult {
                    tool_use_id: message.tool_call_id.as_deref().unwrap_or_default(),
                    content: &message.content,
                }],
            ),
            Role::Assistant => {
                let calls = message.tool_calls.iter().map(|c| OutBlock::ToolUse {
                    id: &c.id,
                    name: &c.name,
                    input: &c.arguments,
                });
                ("assistant", text_block(&message.content).into_iter().chain(calls).collect())
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => out.push(WireMessage { role, content: blocks }),
        }
    }
    for message in &mut out {
        // Stable: tool results keep their order, and so does the text after them.
        message.content.sort_by_key(|block| !matches!(block, OutBlock::ToolResult { .. }));
    }
    out
}

/// The API rejects empty text blocks.
fn text_block(text: &str) -> Option<OutBlock<'_>> {
    (!text.is_empty()).then_some(OutBlock::Text { text })
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Vec<OutBlock<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutBlock<'a> {
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: &'a Value },
    ToolResult { tool_use_id: &'a str, content: &'a str },
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a Value,
}

#[derive(Serialize)]
struct WireToolChoice {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<InBlock>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    /// The usage as [`Usage`] counts it, unless it is an all-zero placeholder.
    fn reported(self) -> Option<Usage> {
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        // Cache writes are prompt tokens too; they are priced as ordinary input here.
        let prompt = self.input_tokens + cache_read + self.cache_creation_input_tokens.unwrap_or(0);
        if prompt == 0 && self.output_tokens == 0 {
            return None;
        }
        Some(Usage { prompt_tokens: prompt, completion_tokens: self.output_tokens, cached_tokens: cache_read })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_blocks_are_skipped() {
        let answer: WireResponse = serde_json::from_value(json!({
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "text", "text": "hi"}
            ]
        }))
        .unwrap();
        assert!(matches!(answer.content[0], InBlock::Other));
        assert!(matches!(&answer.content[1], InBlock::Text { text } if text == "hi"));
    }

    #[test]
    fn usage_adds_cache_reads_and_writes_to_the_prompt() {
        let usage = WireUsage {
            input_tokens: 10,
            output_tokens: 5,
            cache_read_input_tokens: Some(100),
            cache_creation_input_tokens: Some(7),
        };
        assert_eq!(usage.reported(), Some(Usage { prompt_tokens: 117, completion_tokens: 5, cached_tokens: 100 }));
    }

    #[test]
    fn tool_results_lead_a_merged_user_turn() {
        let messages = vec![
            ChatMessage::new(Role::Tool, "ignored role order"),
            ChatMessage::new(Role::User, "then text"),
            ChatMessage::tool_result("t2", "late result"),
        ];
        let wire = serde_json::to_value(wire_messages(&messages)).unwrap();
        assert_eq!(wire.as_array().unwrap().len(), 1);
        let kinds: Vec<&str> =
            wire[0]["content"].as_array().unwrap().iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["tool_result", "tool_result", "text"]);
    }

    #[test]
    fn config_debug_hides_the_key() {
        let config = AnthropicConfig::new(Some("sk-ant-secret".into()), "claude-sonnet-4-20250514");
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-ant-secret") && shown.contains("[redacted]"), "{shown}");
        let client = AnthropicClient::new(config).unwrap();
        assert!(!format!("{client:?}").contains("sk-ant-secret"));
    }
}
