//! The offline deterministic model: no network, no key, the default provider.
//!
//! It answers from the conversation alone, so the same prompt always gives the same answer
//! and the same token counts; its answer says plainly that it was produced offline. An
//! optional delay models a slow provider in benchmarks.
//!
//! It uses tools the way a careful model would, and only when the step's instruction plainly
//! asks for them (see [`intent`]): an arithmetic expression → `calculator`, a request to
//! recall → `memory_search`, each only when the request offers that tool and at most once
//! per step (earlier calls are visible in the conversation). Then it answers, quoting the
//! tool results. Tool-call ids are deterministic (`offline-call-<n>`).
//!
//! A step whose instruction contains [`FAIL_MARKER`] is refused, as a provider refuses a
//! request it cannot serve (not retried): so failures, partial results and their handling can
//! be shown and tested offline (`eval/suites/smoke.yaml`). `[offline: fail as <agent>]`
//! (see [`FAIL_AS_MARKER`]) is refused only when the named agent runs the step, as an agent
//! that cannot do the work: a replan that gives the step to another agent succeeds.

mod intent;

use std::time::Duration;

use serde_json::{Value, json};

use super::{ChatMessage, ChatRequest, ChatResponse, LlmClient, LlmError, Role, ToolCall, Usage, tokens};

/// Tool the offline model calls for arithmetic.
const CALCULATOR: &str = "calculator";
/// Tool the offline model calls to recall.
const MEMORY_SEARCH: &str = "memory_search";
/// In a step's instruction, makes the offline model refuse the step.
pub const FAIL_MARKER: &str = "[offline: fail]";
/// Opens `[offline: fail as <agent>]`: in a step's instruction, makes the offline model refuse
/// the step when `<agent>` runs it (and answer any other agent).
pub const FAIL_AS_MARKER: &str = "[offline: fail as ";
/// Longest tool result quoted in an answer, in characters.
const MAX_QUOTED_CHARS: usize = 300;

/// The offline model; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct OfflineModel {
    delay: Duration,
}

impl OfflineModel {
    /// Provider name recorded with every call.
    pub const PROVIDER: &'static str = "offline";
    /// The only model; it answers under this name whatever a request asks for.
    pub const MODEL: &'static str = "offline-deterministic-1";

    /// A model that waits `delay` before each answer (`OFFLINE_LLM_DELAY_MS`).
    pub fn new(delay: Duration) -> Self {
        Self { delay }
    }

    /// Either tool calls (content `None`) or the final answer.
    fn respond(request: &ChatRequest) -> (Option<String>, Vec<ToolCall>) {
        let prompt = step_prompt(&request.messages);
        let instruction = intent::instruction_of(prompt);
        // This step's own calls: those after its prompt. Calls in earlier context (a warm
        // start's earlier run) were another run's.
        let since_prompt = step_prompt_index(&request.messages).map_or(0, |i| i + 1);
        let earlier: Vec<&ToolCall> = request.messages[since_prompt..].iter().flat_map(|m| &m.tool_calls).collect();
        let wants =
            |tool: &str| request.tools.iter().any(|t| t.name == tool) && !earlier.iter().any(|call| call.name == tool);
        let mut arguments = Vec::new();
        if wants(CALCULATOR)
            && let Some(expression) = intent::arithmetic_expression(instruction)
        {
            arguments.push((CALCULATOR, json!({ "expression": expression })));
        }
        if wants(MEMORY_SEARCH)
            && let Some(query) = intent::memory_query(instruction)
        {
            arguments.push((MEMORY_SEARCH, json!({ "query": query })));
        }
        if !arguments.is_empty() {
            let calls = arguments
                .into_iter()
                .enumerate()
                .map(|(i, (name, arguments))| ToolCall {
                    id: format!("offline-call-{}", earlier.len() + i + 1),
                    name: name.to_owned(),
                    arguments,
                })
                .collect();
            return (None, calls);
        }
        (Some(answer(request, prompt, &earlier)), Vec::new())
    }
}

/// The user message that states the step: the last one with a `Step:` line, else the last
/// user message (a later user message may be a summary of the history, not the step).
fn step_prompt(messages: &[ChatMessage]) -> &str {
    step_prompt_index(messages).map(|i| messages[i].content.as_str()).unwrap_or_default()
}

/// Where [`step_prompt`] is.
fn step_prompt_index(messages: &[ChatMessage]) -> Option<usize> {
    let users = || messages.iter().enumerate().rev().filter(|(_, m)| m.role == Role::User);
    users().find(|(_, m)| m.content.lines().any(|l| l.starts_with("Step: "))).or_else(|| users().next()).map(|(i, _)| i)
}

fn answer(request: &ChatRequest, prompt: &str, calls: &[&ToolCall]) -> String {
    // The step prompt puts the step title on a line of its own after "Step:".
    let step = prompt.lines().find_map(|l| l.strip_prefix("Step: ")).unwrap_or(prompt).trim();
    let inputs = prompt.matches("\n### ").count();
    let role = agent_of(request).unwrap_or("assistant");
    let results: Vec<String> = calls
        .iter()
        .filter_map(|call| {
            let result = request
                .messages
                .iter()
                .find(|m| m.role == Role::Tool && m.tool_call_id.as_deref() == Some(call.id.as_str()))?;
            Some(format!("{}: {}", call.name, quote(&result.content)))
        })
        .collect();
    let results = if results.is_empty() { String::new() } else { format!(" Tool results: {}.", results.join("; ")) };
    format!(
        "{step}: done.{results} ({role} answer produced offline by the deterministic model from \
         {inputs} earlier step output(s); configure LLM_PROVIDER for real model output.)"
    )
}

/// The agent the request runs as: agent system prompts open with "You are the <name> agent".
fn agent_of(request: &ChatRequest) -> Option<&str> {
    request
        .messages
        .iter()
        .find(|m| m.role == Role::System)
        .and_then(|m| m.content.strip_prefix("You are the "))
        .and_then(|rest| rest.split_whitespace().next())
}

/// Why the offline model refuses the step, when its instruction asks it to: always
/// ([`FAIL_MARKER`]), or when the agent it names runs it ([`FAIL_AS_MARKER`]).
fn refusal(request: &ChatRequest) -> Option<String> {
    let instruction = intent::instruction_of(step_prompt(&request.messages));
    if instruction.contains(FAIL_MARKER) {
        return Some(format!("the step's instruction asks the offline model to fail ({FAIL_MARKER})"));
    }
    let agent = agent_of(request)?;
    instruction.match_indices(FAIL_AS_MARKER).find_map(|(at, _)| {
        let named = instruction[at + FAIL_AS_MARKER.len()..].split(']').next()?.trim();
        (named == agent).then(|| {
            format!("the step's instruction asks the offline model to fail as the {agent} ({FAIL_AS_MARKER}{agent}])")
        })
    })
}

/// A tool result as a person would quote it: the bare value when there is one (`119` for
/// the calculator's `{"expression":"…","result":119}`), `error: …` for a failed call, else
/// the text on one line, cut short.
fn quote(content: &str) -> String {
    let scalar = |v: &Value| match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let parsed = serde_json::from_str::<Value>(content).ok();
    let bare = parsed.as_ref().and_then(|v| match v {
        Value::Object(map) => match (map.get("error").and_then(scalar), map.get("result").and_then(scalar)) {
            (Some(error), _) => Some(format!("error: {error}")),
            (None, Some(result)) => Some(result),
            (None, None) if map.len() == 1 => map.values().next().and_then(scalar),
            (None, None) => None,
        },
        other => scalar(other),
    });
    let text = bare.unwrap_or_else(|| content.split_whitespace().collect::<Vec<_>>().join(" "));
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[async_trait::async_trait]
impl LlmClient for OfflineModel {
    fn provider(&self) -> &str {
        Self::PROVIDER
    }

    fn model(&self) -> &str {
        Self::MODEL
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        tokens::warm_up_tokenizer().await;
        if let Some(message) = refusal(request) {
            return Err(LlmError::Rejected { status: 400, message });
        }
        let (content, tool_calls) = Self::respond(request);
        let usage = Usage {
            prompt_tokens: tokens::prompt_tokens(request),
            completion_tokens: tokens::completion_tokens(content.as_deref(), &tool_calls),
            cached_tokens: 0,
        };
        Ok(ChatResponse { content, tool_calls, usage, model: Self::MODEL.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ToolDefinition;

    fn request(user: &str) -> ChatRequest {
        ChatRequest {
            messages: vec![
                ChatMessage::new(Role::System, "You are the analyst agent.\nBe precise."),
                ChatMessage::new(Role::User, user),
            ],
            ..ChatRequest::default()
        }
    }

    fn tool(name: &str) -> ToolDefinition {
        ToolDefinition { name: name.into(), description: String::new(), parameters: json!({"type": "object"}) }
    }

    #[tokio::test]
    async fn a_step_that_asks_to_fail_is_refused_and_others_are_not() {
        let refused = OfflineModel::default()
            .chat(&request("Task: t\nStep: Fetch\nInstruction: Fetch the feed [offline: fail]\n"))
            .await;
        assert!(matches!(refused, Err(LlmError::Rejected { status: 400, .. })), "{refused:?}");
        let answered =
            OfflineModel::default().chat(&request("Task: t\nStep: Fetch\nInstruction: Fetch the feed\n")).await;
        assert!(answered.is_ok());
    }

    #[tokio::test]
    async fn a_step_marked_to_fail_as_one_agent_is_refused_by_it_alone() {
        let prompt = "Task: t\nStep: Fetch\nInstruction: Fetch the feed [offline: fail as analyst]\n";
        let refused = OfflineModel::default().chat(&request(prompt)).await;
        assert!(matches!(refused, Err(LlmError::Rejected { status: 400, .. })), "{refused:?}");
        let mut as_writer = request(prompt);
        as_writer.messages[0].content = "You are the writer agent.".into();
        assert!(OfflineModel::default().chat(&as_writer).await.is_ok());
    }

    #[tokio::test]
    async fn answers_deterministically_and_says_it_is_offline() {
        let model = OfflineModel::default();
        let req = request("Task: x\nStep: Analyze the requirements\n\n### Earlier\nfoo");
        let a = model.chat(&req).await.unwrap();
        let b = model.chat(&req).await.unwrap();
        assert_eq!(a, b);
        let text = a.content.unwrap();
        assert!(text.starts_with("Analyze the requirements: done."), "{text}");
        assert!(text.contains("produced offline"), "{text}");
        assert!(text.contains("1 earlier step output"), "{text}");
        assert!(a.usage.prompt_tokens > 0 && a.usage.completion_tokens > 0);
    }

    #[tokio::test]
    async fn recalls_from_memory_once_then_quotes_the_result() {
        let model = OfflineModel::default();
        let mut req = request("Task: t\nStep: Recall decisions\nInstruction: Recall the database decision\n");
        req.tools = vec![tool(MEMORY_SEARCH), tool(CALCULATOR)];
        let first = model.chat(&req).await.unwrap();
        assert_eq!(first.content, None);
        assert_eq!(first.tool_calls.len(), 1, "no arithmetic, so only memory: {:?}", first.tool_calls);
        assert_eq!(first.tool_calls[0].id, "offline-call-1");
        assert_eq!(first.tool_calls[0].arguments, json!({"query": "the database decision"}));

        req.messages.push(ChatMessage {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: first.tool_calls.clone(),
            tool_call_id: None,
        });
        req.messages.push(ChatMessage::tool_result("offline-call-1", r#"[{"content":"We chose Postgres"}]"#));
        let second = model.chat(&req).await.unwrap();
        assert!(second.tool_calls.is_empty());
        let text = second.content.unwrap();
        assert!(text.starts_with("Recall decisions: done."), "{text}");
        assert!(text.contains(r#"memory_search: [{"content":"We chose Postgres"}]"#), "{text}");
    }

    #[tokio::test]
    async fn tools_not_offered_are_not_called() {
        let req = request("Task: t\nStep: Sum\nInstruction: compute 1 + 2\n");
        let response = OfflineModel::default().chat(&req).await.unwrap();
        assert!(response.tool_calls.is_empty());
        assert!(response.content.unwrap().starts_with("Sum: done."));
    }

    #[test]
    fn quotes_bare_values() {
        assert_eq!(quote("119"), "119");
        assert_eq!(quote(r#"{"result": 119}"#), "119");
        assert_eq!(quote(r#"{"expression": "17 * (3 + 4)", "result": 119}"#), "119");
        assert_eq!(quote(r#"{"error": "division by zero"}"#), "error: division by zero");
        assert_eq!(quote(r#"{"text": "hi"}"#), "hi");
        assert_eq!(quote(r#"{"a": 1, "b": 2}"#), r#"{"a": 1, "b": 2}"#);
        assert_eq!(quote("error:  not\nallowed"), "error: not allowed");
        assert_eq!(quote(&"x".repeat(400)).chars().count(), MAX_QUOTED_CHARS + 1);
    }
}
