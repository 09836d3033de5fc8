//! The offline model's tool use: it calls the calculator for an arithmetic instruction, once,
//! and answers with the result.

use agents::llm::{ChatMessage, ChatRequest, LlmClient, OfflineModel, Role, ToolDefinition};
use serde_json::json;

fn calculator() -> ToolDefinition {
    ToolDefinition {
        name: "calculator".into(),
        description: "Evaluates an arithmetic expression".into(),
        parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}),
    }
}

#[tokio::test]
async fn calls_the_calculator_once_then_answers_with_its_result() {
    let model = OfflineModel::default();
    let mut request = ChatRequest {
        messages: vec![
            ChatMessage::new(Role::System, "You are the analyst agent of a team."),
            ChatMessage::new(Role::User, "Task: Budget\nStep: Compute the total\nInstruction: compute 17 * (3 + 4)\n"),
        ],
        tools: vec![calculator()],
        ..ChatRequest::default()
    };

    let first = model.chat(&request).await.expect("tool call");
    assert_eq!(first.content, None);
    assert_eq!(first.tool_calls.len(), 1);
    let call = &first.tool_calls[0];
    assert_eq!((call.id.as_str(), call.name.as_str()), ("offline-call-1", "calculator"));
    assert_eq!(call.arguments, json!({"expression": "17 * (3 + 4)"}));
    assert!(first.usage.prompt_tokens > 0 && first.usage.completion_tokens > 0);
    assert_eq!(model.chat(&request).await.expect("again"), first, "deterministic");

    request.messages.push(ChatMessage {
        role: Role::Assistant,
        content: String::new(),
        tool_calls: first.tool_calls.clone(),
        tool_call_id: None,
    });
    // The reply the calculator tool sends back.
    request.messages.push(ChatMessage::tool_result(&call.id, r#"{"expression":"17 * (3 + 4)","result":119}"#));
    let second = model.chat(&request).await.expect("answer");

    assert!(second.tool_calls.is_empty(), "the calculator is called once per step");
    let answer = second.content.expect("final answer");
    assert!(answer.starts_with("Compute the total: done."), "{answer}");
    assert!(answer.contains("calculator: 119"), "{answer}");
    assert!(answer.contains("analyst answer produced offline"), "{answer}");
}
