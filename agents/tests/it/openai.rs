//! The OpenAI-compatible client against a fake chat completions server.

use std::time::{Duration, Instant};

use agents::llm::{
    Backoff, ChatMessage, ChatRequest, LlmClient, LlmError, MaxTokensField, OpenAiClient, OpenAiConfig, Role, ToolCall,
    ToolChoice, ToolDefinition, Usage, count_tokens,
};
use serde_json::{Value, json};

use crate::fake_provider::{FakeProvider, Reply};

const KEY: &str = "sk-test-0123456789abcdef";

/// Short waits so retry tests take milliseconds, and a timeout well above loopback latency.
fn config(server: &FakeProvider) -> OpenAiConfig {
    let mut config = OpenAiConfig::new(format!("{}/v1", server.url), "gpt-4o");
    config.api_key = Some(KEY.to_owned());
    config.timeout = Duration::from_secs(5);
    config.max_retries = 3;
    config.backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    };
    config
}

fn client(server: &FakeProvider) -> OpenAiClient {
    OpenAiClient::new(config(server)).expect("client")
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new(Role::System, "You are terse."), ChatMessage::new(Role::User, text)],
        max_tokens: Some(64),
        ..ChatRequest::default()
    }
}

fn completion(message: Value, usage: Option<Value>) -> Value {
    let mut body = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]
    });
    if let Some(usage) = usage {
        body["usage"] = usage;
    }
    body
}

fn hello() -> Value {
    completion(
        json!({"role": "assistant", "content": "Hello there"}),
        Some(json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15})),
    )
}

#[tokio::test]
async fn plain_answer_and_usage_are_parsed() {
    let usage = json!({"prompt_tokens": 120, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 64}});
    let server =
        FakeProvider::start(vec![Reply::ok(completion(json!({"role": "assistant", "content": "Hi!"}), Some(usage)))])
            .await;
    let response = client(&server).chat(&ask("Say hi")).await.expect("answer");

    assert_eq!(response.content.as_deref(), Some("Hi!"));
    assert!(response.tool_calls.is_empty());
    assert_eq!(response.usage, Usage { prompt_tokens: 120, completion_tokens: 7, cached_tokens: 64 });
    assert_eq!(response.model, "gpt-4o-2024-08-06");

    let received = server.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(request.body["model"], "gpt-4o");
    assert_eq!(request.body["max_tokens"], 64);
    assert_eq!(
        request.body["messages"],
        json!([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi"}])
    );
    assert!(request.body.get("tools").is_none(), "no tools offered: {}", request.body);
}

#[tokio::test]
async fn tool_calls_are_parsed_and_bad_arguments_passed_on_as_text() {
    let message = json!({
        "role": "assistant",
        "content": null,
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\":\"17 * (3 + 4)\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\": 17 *"}}
        ]
    });
    let server = FakeProvider::start(vec![Reply::ok(completion(message, None))]).await;
    let mut request = ask("compute 17 * (3 + 4)");
    request.tools = vec![ToolDefinition {
        name: "calculator".into(),
        description: "Evaluates arithmetic".into(),
        parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}),
    }];
    request.tool_choice = ToolChoice::Required;
    request.model = Some("gpt-4.1-mini".into());

    let response = client(&server).chat(&request).await.expect("answer");

    assert_eq!(response.content, None);
    assert_eq!(
        response.tool_calls,
        vec![
            ToolCall {
                id: "call_a".into(),
                name: "calculator".into(),
                arguments: json!({"expression": "17 * (3 + 4)"})
            },
            ToolCall { id: "call_b".into(), name: "calculator".into(), arguments: json!("{\"expression\": 17 *") },
        ]
    );
    let body = &server.received()[0].body;
    assert_eq!(body["model"], "gpt-4.1-mini", "the per-request model overrides the default");
    assert_eq!(body["tool_choice"], "required");
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "calculator");
    assert_eq!(body["tools"][0]["function"]["parameters"]["required"], json!(["expression"]));
}

#[tokio::test]
async fn tool_turns_are_sent_in_openai_shape() {
    let server = FakeProvider::start(vec![Reply::ok(hello())]).await;
    let mut request = ask("compute 1 + 1");
    request.messages.push(ChatMessage {
        role: Role::Assistant,
        content: String::new(),
        tool_calls: vec![ToolCall {
            id: "call_1".into(),
            name: "calculator".into(),
            arguments: json!({"expression": "1 + 1"}),
        }],
        tool_call_id: None,
    });
    request.messages.push(ChatMessage::tool_result("call_1", "2"));

    client(&server).chat(&request).await.expect("answer");

    let messages = &server.received()[0].body["messages"];
    assert_eq!(
        messages[2],
        json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\":\"1 + 1\"}"}}]
        })
    );
    assert_eq!(messages[3], json!({"role": "tool", "content": "2", "tool_call_id": "call_1"}));
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after_then_succeeds() {
    let limited = Reply::status(429, json!({"error": {"message": "Rate limit reached"}})).header("retry-after", "1");
    let server = FakeProvider::start(vec![limited, Reply::ok(hello())]).await;
    let started = Instant::now();

    let response = client(&server).chat(&ask("hi")).await.expect("answer after the retry");

    assert_eq!(response.content.as_deref(), Some("Hello there"));
    let received = server.received();
    assert_eq!(received.len(), 2);
    let gap = received[1].at - received[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}, before the 1 s Retry-After");
    assert!(started.elapsed() < Duration::from_secs(4), "waited far longer than asked: {:?}", started.elapsed());
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let failing = || Reply::status(500, json!({"error": {"message": "The server had an error"}}));
    let server = FakeProvider::start(vec![failing(), failing(), Reply::ok(hello())]).await;

    let response = client(&server).chat(&ask("hi")).await.expect("answer after two retries");

    assert_eq!(response.content.as_deref(), Some("Hello there"));
    assert_eq!(server.received().len(), 3);
}

#[tokio::test]
async fn persistent_overload_ends_unavailable_after_the_retry_budget() {
    let busy = || Reply::status(503, json!({"error": {"message": "Service overloaded"}}));
    let server = FakeProvider::start(vec![busy(), busy(), busy(), busy(), Reply::ok(hello())]).await;

    let err = client(&server).chat(&ask("hi")).await.expect_err("retries exhausted");

    match &err {
        LlmError::Unavailable(reason) => assert!(reason.contains("Service overloaded"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(server.received().len(), 4, "one attempt plus max_retries = 3");
}

#[tokio::test]
async fn wrong_key_is_rejected_at_once_without_revealing_it() {
    let denied = Reply::status(
        401,
        json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
    );
    let server = FakeProvider::start(vec![denied, Reply::ok(hello())]).await;

    let err = client(&server).chat(&ask("hi")).await.expect_err("rejected");

    assert_eq!(err, LlmError::Rejected { status: 401, message: "Incorrect API key provided".into() });
    assert_eq!(server.received().len(), 1, "a rejection is not retried");
    assert!(!err.to_string().contains(KEY) && !format!("{err:?}").contains(KEY));
    assert!(!format!("{:?}", config(&server)).contains(KEY));
}

#[tokio::test]
async fn a_key_echoed_by_the_provider_is_scrubbed() {
    let message = format!("Incorrect API key provided: {KEY}. You can find your API key at https://example.test");
    let server = FakeProvider::start(vec![Reply::status(401, json!({"error": {"message": message}}))]).await;

    let err = client(&server).chat(&ask("hi")).await.expect_err("rejected");

    let LlmError::Rejected { status: 401, message } = &err else { panic!("expected a 401 rejection, got {err:?}") };
    assert!(message.starts_with("Incorrect API key provided: [redacted]."), "{message}");
    assert!(!format!("{err} {err:?}").contains(KEY));
}

#[tokio::test]
async fn other_error_shapes_keep_the_providers_message() {
    let server = FakeProvider::start(vec![Reply::status(404, json!({"error": "model \"llama9\" not found"}))]).await;

    let err = client(&server).chat(&ask("hi")).await.expect_err("rejected");

    assert_eq!(err, LlmError::Rejected { status: 404, message: "model \"llama9\" not found".into() });
}

#[tokio::test]
async fn slow_answers_time_out_after_the_retries() {
    let slow = || Reply::ok(hello()).delayed(Duration::from_secs(3));
    let server = FakeProvider::start(vec![slow(), slow(), Reply::ok(hello())]).await;
    let mut config = config(&server);
    config.timeout = Duration::from_millis(250);
    config.max_retries = 1;
    let started = Instant::now();

    let err = OpenAiClient::new(config).expect("client").chat(&ask("hi")).await.expect_err("timed out");

    assert_eq!(err, LlmError::Timeout);
    assert_eq!(server.received().len(), 2, "the timed-out attempt was retried once");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the client waited for the slow server: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("address"));
    drop(listener);
    let mut config = OpenAiConfig::new(url, "gpt-4o");
    config.max_retries = 1;
    config.backoff.initial = Duration::from_millis(5);

    let err = OpenAiClient::new(config).expect("client").chat(&ask("hi")).await.expect_err("nobody listens");

    match err {
        LlmError::Unavailable(reason) => assert!(reason.contains("2 attempts"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_usage_is_counted_with_the_tokenizer() {
    let server =
        FakeProvider::start(vec![Reply::ok(completion(json!({"role": "assistant", "content": "Hello there"}), None))])
            .await;

    let response = client(&server).chat(&ask("Say hello to the team")).await.expect("answer");

    assert_eq!(response.usage.completion_tokens, count_tokens("Hello there"));
    let content_tokens = count_tokens("You are terse.") + count_tokens("Say hello to the team");
    assert!(response.usage.prompt_tokens > content_tokens, "framing is counted too: {:?}", response.usage);
    assert_eq!(response.usage.cached_tokens, 0);
}

#[tokio::test]
async fn no_key_sends_no_authorization() {
    let server = FakeProvider::start(vec![Reply::ok(hello())]).await;
    let mut config = config(&server);
    config.api_key = None;

    OpenAiClient::new(config).expect("client").chat(&ask("hi")).await.expect("answer");

    assert_eq!(server.received()[0].header("authorization"), None);
}

#[tokio::test]
async fn reasoning_models_get_max_completion_tokens() {
    let server = FakeProvider::start(vec![Reply::ok(hello())]).await;
    let mut config = config(&server);
    config.max_tokens = Some(100);
    config.max_tokens_field = MaxTokensField::MaxCompletionTokens;
    let mut request = ask("hi");
    request.max_tokens = None;

    OpenAiClient::new(config).expect("client").chat(&request).await.expect("answer");

    let body = &server.received()[0].body;
    assert_eq!(body["max_completion_tokens"], 100, "the configured default applies: {body}");
    assert!(body.get("max_tokens").is_none(), "{body}");
}
