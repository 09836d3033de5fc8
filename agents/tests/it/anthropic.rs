//! The Anthropic Messages client against a fake Messages API.

use std::time::Duration;

use agents::llm::{
    ANTHROPIC_VERSION, AnthropicClient, AnthropicConfig, Backoff, ChatMessage, ChatRequest, LlmClient, LlmError, Role,
    ToolCall, ToolDefinition, Usage,
};
use serde_json::{Value, json};

use crate::fake_provider::{FakeProvider, Reply};

const KEY: &str = "sk-ant-test-0123456789";

fn client(server: &FakeProvider) -> AnthropicClient {
    let mut config = AnthropicConfig::new(Some(KEY.to_owned()), "claude-sonnet-4-20250514");
    config.base_url = server.url.clone();
    config.timeout = Duration::from_secs(5);
    config.backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    };
    AnthropicClient::new(config).expect("client")
}

fn message(content: Value, usage: Value) -> Value {
    json!({
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": content,
        "stop_reason": "end_turn",
        "usage": usage
    })
}

fn calculator() -> ToolDefinition {
    ToolDefinition {
        name: "calculator".into(),
        description: "Evaluates arithmetic".into(),
        parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}}}),
    }
}

#[tokio::test]
async fn text_answer_system_prompt_and_usage() {
    let usage = json!({"input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0});
    let server = FakeProvider::start(vec![Reply::ok(message(json!([{"type": "text", "text": "Hi!"}]), usage))]).await;
    let request = ChatRequest {
        messages: vec![
            ChatMessage::new(Role::System, "You are the writer agent."),
            ChatMessage::new(Role::User, "Say hi"),
        ],
        ..ChatRequest::default()
    };

    let response = client(&server).chat(&request).await.expect("answer");

    assert_eq!(response.content.as_deref(), Some("Hi!"));
    assert_eq!(response.usage, Usage { prompt_tokens: 120, completion_tokens: 9, cached_tokens: 100 });
    assert_eq!(response.model, "claude-sonnet-4-20250514");
    let received = server.received();
    let sent = &received[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(KEY));
    assert_eq!(sent.header("anthropic-version"), Some(ANTHROPIC_VERSION));
    assert_eq!(sent.body["system"], "You are the writer agent.");
    assert_eq!(sent.body["max_tokens"], AnthropicConfig::DEFAULT_MAX_TOKENS);
    assert_eq!(sent.body["messages"], json!([{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]));
}

#[tokio::test]
async fn tool_use_blocks_become_tool_calls() {
    let content = json!([
        {"type": "text", "text": "Let me compute that."},
        {"type": "tool_use", "id": "toolu_01", "name": "calculator", "input": {"expression": "17 * (3 + 4)"}}
    ]);
    let server =
        FakeProvider::start(vec![Reply::ok(message(content, json!({"input_tokens": 50, "output_tokens": 20})))]).await;
    let request = ChatRequest {
        messages: vec![ChatMessage::new(Role::User, "compute 17 * (3 + 4)")],
        tools: vec![calculator()],
        ..ChatRequest::default()
    };

    let response = client(&server).chat(&request).await.expect("answer");

    assert_eq!(response.content.as_deref(), Some("Let me compute that."));
    assert_eq!(
        response.tool_calls,
        vec![ToolCall {
            id: "toolu_01".into(),
            name: "calculator".into(),
            arguments: json!({"expression": "17 * (3 + 4)"})
        }]
    );
    let tools = &server.received()[0].body["tools"];
    assert_eq!(
        tools,
        &json!([{"name": "calculator", "description": "Evaluates arithmetic", "input_schema": calculator().parameters}])
    );
}

#[tokio::test]
async fn consecutive_tool_results_are_merged_into_one_user_turn() {
    let usage = json!({"input_tokens": 80, "output_tokens": 5});
    let server =
        FakeProvider::start(vec![Reply::ok(message(json!([{"type": "text", "text": "6 and 8"}]), usage))]).await;
    let calls = vec![
        ToolCall { id: "toolu_a".into(), name: "calculator".into(), arguments: json!({"expression": "2 * 3"}) },
        ToolCall { id: "toolu_b".into(), name: "calculator".into(), arguments: json!({"expression": "2 * 4"}) },
    ];
    let request = ChatRequest {
        messages: vec![
            ChatMessage::new(Role::System, "You are the analyst agent."),
            ChatMessage::new(Role::User, "compute 2 * 3 and 2 * 4"),
            ChatMessage { role: Role::Assistant, content: String::new(), tool_calls: calls, tool_call_id: None },
            ChatMessage::tool_result("toolu_a", "6"),
            ChatMessage::tool_result("toolu_b", "8"),
        ],
        tools: vec![calculator()],
        max_tokens: Some(256),
        ..ChatRequest::default()
    };

    client(&server).chat(&request).await.expect("answer");

    let body = &server.received()[0].body;
    assert_eq!(body["max_tokens"], 256);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "compute 2 * 3 and 2 * 4"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_a", "name": "calculator", "input": {"expression": "2 * 3"}},
                {"type": "tool_use", "id": "toolu_b", "name": "calculator", "input": {"expression": "2 * 4"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "6"},
                {"type": "tool_result", "tool_use_id": "toolu_b", "content": "8"}
            ]}
        ])
    );
}

#[tokio::test]
async fn overloaded_is_retried() {
    let overloaded =
        Reply::status(529, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
    let ok =
        Reply::ok(message(json!([{"type": "text", "text": "ok"}]), json!({"input_tokens": 5, "output_tokens": 1})));
    let server = FakeProvider::start(vec![overloaded, ok]).await;

    let response = client(&server)
        .chat(&ChatRequest { messages: vec![ChatMessage::new(Role::User, "hi")], ..Default::default() })
        .await;

    assert_eq!(response.expect("answer after the retry").content.as_deref(), Some("ok"));
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn invalid_request_is_rejected_with_the_providers_message() {
    let body = json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: must be at most 8192"}});
    let server = FakeProvider::start(vec![Reply::status(400, body)]).await;

    let err = client(&server)
        .chat(&ChatRequest { messages: vec![ChatMessage::new(Role::User, "hi")], ..Default::default() })
        .await
        .expect_err("rejected");

    assert_eq!(err, LlmError::Rejected { status: 400, message: "max_tokens: must be at most 8192".into() });
    assert_eq!(server.received().len(), 1);
    assert!(!format!("{err} {err:?}").contains(KEY));
}
