//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`): OpenAI itself,
//! and the servers that speak its protocol (Ollama, vLLM, llama.cpp, LiteLLM …).
//!
//! Invariants: the request carries the whole conversation in OpenAI's shape (assistant
//! turns keep their `tool_calls`, tool answers their `tool_call_id`); tool-call arguments,
//! which the protocol sends as a JSON *string*, are parsed, and passed on as a JSON string
//! value when they are not valid JSON, so a bad call is rejected by the tool registry with
//! a reason rather than failing the step; usage is the server's, counted with the tokenizer
//! only when the server sent none. The key is sent only as a sensitive `Authorization`
//! header, and only when one is configured (local servers need none).

use std::{fmt, time::Duration};

use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Backoff, ChatRequest, ChatResponse, LlmClient, LlmConfigError, LlmError, Role, ToolCall, ToolChoice, Usage,
    retry::{DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Transport, TransportSettings, max_call_duration, secret_header},
    tokens,
};

/// Which request field carries the answer-length limit. OpenAI's reasoning models (o1, o3,
/// o4-mini …) accept only `max_completion_tokens`; most compatible servers know only
/// `max_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MaxTokensField {
    /// `max_tokens`: every OpenAI-compatible server.
    #[default]
    MaxTokens,
    /// `max_completion_tokens`: OpenAI's current name, required by its reasoning models.
    MaxCompletionTokens,
}

/// Settings of an [`OpenAiClient`].
#[derive(Clone, PartialEq)]
pub struct OpenAiConfig {
    /// API root including the version, e.g. `https://api.openai.com/v1` or
    /// `http://localhost:11434/v1` (Ollama).
    pub base_url: String,
    /// Sent as a bearer token when set; local servers usually need none.
    pub api_key: Option<String>,
    /// Default model, used when a request names none.
    pub model: String,
    /// Limit for one attempt, from connecting to reading the whole answer.
    pub timeout: Duration,
    /// Retries after the first attempt on transient failures.
    pub max_retries: u32,
    /// Waits between attempts.
    pub backoff: Backoff,
    /// Answer-length limit when a request sets none; `None` leaves it to the server.
    pub max_tokens: Option<u32>,
    /// Field name of the answer-length limit.
    pub max_tokens_field: MaxTokensField,
}

impl OpenAiConfig {
    /// OpenAI's own endpoint.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.openai.com/v1";
    /// Settings for `model` at `base_url`, with no key and default limits.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            timeout: DEFAULT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff: Backoff::default(),
            max_tokens: None,
            max_tokens_field: MaxTokensField::default(),
        }
    }

    /// The longest one call can take with these settings, retries and waits included.
    pub fn max_call_duration(&self) -> Duration {
        max_call_duration(self.timeout, self.max_retries, &self.backoff)
    }
}

/// Written by hand so the API key can never be printed.
impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .field("max_tokens", &self.max_tokens)
            .field("max_tokens_field", &self.max_tokens_field)
            .finish()
    }
}

/// A client of an OpenAI-compatible chat completions endpoint.
pub struct OpenAiClient {
    transport: Transport,
    model: String,
    max_tokens: Option<u32>,
    max_tokens_field: MaxTokensField,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("endpoint", &self.transport.endpoint().as_str())
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl OpenAiClient {
    /// Provider name recorded with every call.
    pub const PROVIDER: &'static str = "openai";

    /// Checks the settings and builds the HTTP client; makes no request.
    pub fn new(config: OpenAiConfig) -> Result<Self, LlmConfigError> {
        if config.model.trim().is_empty() {
            return Err(LlmConfigError::Setting { field: "model", reason: "must not be empty".into() });
        }
        let mut headers = HeaderMap::new();
        if let Some(key) = config.api_key.as_deref().filter(|k| !k.is_empty()) {
            headers.insert(AUTHORIZATION, secret_header(&format!("Bearer {key}"))?);
        }
        let transport = Transport::new(TransportSettings {
            provider: Self::PROVIDER,
            base_url: &config.base_url,
            path: "/chat/completions",
            timeout: config.timeout,
            max_retries: config.max_retries,
            backoff: config.backoff,
            headers,
            secret: config.api_key,
        })?;
        Ok(Self {
            transport,
            model: config.model,
            max_tokens: config.max_tokens,
            max_tokens_field: config.max_tokens_field,
        })
    }

    fn wire_request<'a>(&'a self, request: &'a ChatRequest) -> WireRequest<'a> {
        let limit = request.max_tokens.or(self.max_tokens);
        let (max_tokens, max_completion_tokens) = match self.max_tokens_field {
            MaxTokensField::MaxTokens => (limit, None),
            MaxTokensField::MaxCompletionTokens => (None, limit),
        };
        let tools: Vec<WireTool<'_>> = request
            .tools
            .iter()
            .map(|t| WireTool {
                kind: "function",
                function: WireFunction { name: &t.name, description: &t.description, parameters: &t.parameters },
            })
            .collect();
        let tool_choice = match request.tool_choice {
            ToolChoice::Required if !tools.is_empty() => Some("required"),
            _ => None,
        };
        WireRequest {
            model: request.model.as_deref().unwrap_or(&self.model),
            messages: request.messages.iter().map(wire_message).collect(),
            tools,
            tool_choice,
            max_tokens,
            max_completion_tokens,
        }
    }
}

#[async_trait::async_trait]
impl LlmClient for OpenAiClient {
    fn provider(&self) -> &str {
        Self::PROVIDER
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let wire = self.wire_request(request);
        let body = self.transport.post_json(&wire).await?;
        let answer: WireResponse = serde_json::from_slice(&body)
            .map_err(|e| LlmError::InvalidResponse(format!("not a chat completion: {e}")))?;
        let Some(choice) = answer.choices.into_iter().next() else {
            let detail = answer.error.map_or_else(|| "no choices in the answer".to_owned(), |e| e.to_string());
            return Err(LlmError::InvalidResponse(detail));
        };
        let content = text_of(choice.message.content).filter(|t| !t.is_empty());
        let tool_calls: Vec<ToolCall> =
            choice.message.tool_calls.unwrap_or_default().into_iter().enumerate().map(tool_call).collect();
        let usage = match answer.usage.and_then(WireUsage::reported) {
            Some(usage) => usage,
            None => tokens::count_call(request, content.as_deref(), &tool_calls).await,
        };
        let model = answer.model.filter(|m| !m.is_empty()).unwrap_or_else(|| wire.model.to_owned());
        Ok(ChatResponse { content, tool_calls, usage, model })
    }
}

fn wire_message(message: &super::ChatMessage) -> WireMessage<'_> {
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    // An assistant turn that only called tools has `content: null` in OpenAI's format.
    let content = if message.role == Role::Assistant && message.content.is_empty() && !message.tool_calls.is_empty() {
        None
    } else {
        Some(message.content.as_str())
    };
    let tool_calls = message
        .tool_calls
        .iter()
        .map(|call| WireCall {
            id: &call.id,
            kind: "function",
            function: WireCallFunction { name: &call.name, arguments: arguments_text(&call.arguments) },
        })
        .collect();
    WireMessage { role, content, tool_calls, tool_call_id: message.tool_call_id.as_deref() }
}

/// Arguments as the protocol wants them: a JSON text. Arguments that arrived as unparseable
/// text (kept as a JSON string) go back exactly as the model wrote them.
fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

/// A tool call of the answer. Servers that omit ids get deterministic ones.
fn tool_call((index, call): (usize, WireAnswerCall)) -> ToolCall {
    let arguments = match call.function.arguments {
        // Standard: a JSON text. Empty text means "no arguments".
        Value::String(raw) if raw.trim().is_empty() => Value::Object(Default::default()),
        Value::String(raw) => serde_json::from_str(&raw).unwrap_or(Value::String(raw)),
        Value::Null => Value::Object(Default::default()),
        // Some compatible servers (older Ollama) send the object itself.
        other => other,
    };
    let id = call.id.filter(|id| !id.is_empty()).unwrap_or_else(|| format!("call-{index}"));
    ToolCall { id, name: call.function.name, arguments }
}

/// Message content is normally a string; some servers send an array of text parts.
fn text_of(content: Option<Value>) -> Option<String> {
    match content? {
        Value::String(text) => Some(text),
        Value::Array(parts) => {
            Some(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(""))
        }
        _ => None,
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
struct WireCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireCallFunction<'a>,
}

#[derive(Serialize)]
struct WireCallFunction<'a> {
    name: &'a str,
    arguments: String,
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireAnswer,
}

#[derive(Deserialize)]
struct WireAnswer {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<WireAnswerCall>>,
}

#[derive(Deserialize)]
struct WireAnswerCall {
    #[serde(default)]
    id: Option<String>,
    function: WireAnswerFunction,
}

#[derive(Deserialize)]
struct WireAnswerFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<WirePromptDetails>,
}

#[derive(Deserialize)]
struct WirePromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl WireUsage {
    /// The usage, unless it is the all-zero placeholder some servers send instead of
    /// counting: a real call always has a prompt.
    fn reported(self) -> Option<Usage> {
        if self.prompt_tokens == 0 && self.completion_tokens == 0 {
            return None;
        }
        let cached = self.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0);
        Some(Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: cached.min(self.prompt_tokens),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer_call(arguments: Value) -> WireAnswerCall {
        WireAnswerCall { id: Some("c1".into()), function: WireAnswerFunction { name: "calculator".into(), arguments } }
    }

    #[test]
    fn tool_arguments_are_parsed_or_passed_on_as_text() {
        assert_eq!(
            tool_call((0, answer_call(json!("{\"expression\":\"1+1\"}")))).arguments,
            json!({"expression": "1+1"})
        );
        assert_eq!(tool_call((0, answer_call(json!("{not json")))).arguments, json!("{not json"));
        assert_eq!(tool_call((0, answer_call(json!("")))).arguments, json!({}));
        assert_eq!(tool_call((0, answer_call(json!({"a": 1})))).arguments, json!({"a": 1}));
        let mut no_id = answer_call(json!("{}"));
        no_id.id = None;
        assert_eq!(tool_call((2, no_id)).id, "call-2");
    }

    #[test]
    fn arguments_go_back_as_the_model_wrote_them() {
        assert_eq!(arguments_text(&json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(arguments_text(&json!("{not json")), "{not json");
    }

    #[test]
    fn config_debug_hides_the_key() {
        let mut config = OpenAiConfig::new(OpenAiConfig::DEFAULT_BASE_URL, "gpt-4o");
        config.api_key = Some("sk-very-secret".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        let client = OpenAiClient::new(config).unwrap();
        assert!(!format!("{client:?}").contains("sk-very-secret"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut config = OpenAiConfig::new("http://localhost:1/v1", "m");
        config.api_key = Some("bad\nkey".into());
        assert!(matches!(OpenAiClient::new(config), Err(LlmConfigError::ApiKey)));
        assert!(matches!(OpenAiClient::new(OpenAiConfig::new("localhost", "m")), Err(LlmConfigError::BaseUrl { .. })));
        let mut zero = OpenAiConfig::new("http://localhost:1/v1", "m");
        zero.timeout = Duration::ZERO;
        assert!(matches!(OpenAiClient::new(zero), Err(LlmConfigError::Setting { field: "timeout", .. })));
    }
}
