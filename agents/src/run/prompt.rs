//! The text the loop writes for the model: the step prompt and the summarisation request.
//!
//! The step prompt's first lines are a contract: "Task: …", "Step: <title>",
//! "Instruction: …", then each dependency output under "### <title>". The offline model
//! parses "Step: " and counts the "### " headings, so memories are listed under a heading of
//! another form and their continuation lines are indented.

use std::fmt::Write as _;

use super::StepInput;
use crate::llm::{ChatMessage, Role};

/// The user message of a step.
pub(super) fn step_prompt(input: &StepInput<'_>) -> String {
    let mut prompt =
        format!("Task: {}\nStep: {}\nInstruction: {}\n", input.task_description, input.step_title, input.instruction);
    if !input.dependency_outputs.is_empty() {
        prompt.push_str("\nOutputs of earlier steps:\n");
        for (title, output) in input.dependency_outputs {
            let _ = write!(prompt, "\n### {title}\n{output}\n");
        }
    }
    if !input.memories.is_empty() {
        prompt.push_str("\nRelevant long-term memories:\n");
        for memory in input.memories {
            let _ = writeln!(prompt, "- {}", memory.trim().replace('\n', "\n  "));
        }
    }
    prompt
}

/// System prompt of the summarisation call.
pub(super) const SUMMARY_SYSTEM_PROMPT: &str = "You summarise the work in progress of an agent so that it can \
     continue with a shorter context. Keep every fact, number, tool result, decision and open question that \
     the rest of the work may need; drop repetition and chatter. Answer with the summary only.";

/// Characters of one message kept in the transcript to summarise: bounds the summarisation
/// prompt whatever the history holds (tool results are already capped by the registry).
const MAX_TRANSCRIPT_CHARS_PER_MESSAGE: usize = 4000;

/// The user message of the summarisation call: the step it is about and a plain-text
/// transcript of `messages` (plain text, so no tool-call structure needs to stay valid).
pub(super) fn summary_request(step_title: &str, messages: &[ChatMessage]) -> String {
    let mut text = format!(
        "Summarise the work so far on the step \"{step_title}\": what was done, what was found and what is \
         left. The conversation to summarise:\n"
    );
    for message in messages {
        let who = match message.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool result",
        };
        let _ = write!(text, "\n[{who}] {}", clip(&message.content, MAX_TRANSCRIPT_CHARS_PER_MESSAGE));
        for call in &message.tool_calls {
            let _ = write!(text, "\n[assistant calls {}] {}", call.name, call.arguments);
        }
    }
    text
}

/// The message that replaces the summarised ones. An assistant message: it is the agent's
/// own account of its work, and the step prompt stays the last user message.
pub(super) fn summary_message(summary: &str) -> ChatMessage {
    ChatMessage::new(Role::Assistant, format!("Summary of my work on this step so far:\n{}", summary.trim()))
}

fn clip(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{} […]", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ToolCall;

    #[test]
    fn the_prompt_lists_dependencies_and_memories_under_their_headings() {
        let cancel = tokio_util::sync::CancellationToken::new();
        let deps = vec![("Plan".to_owned(), "the plan".to_owned())];
        let memories = vec!["Alice likes Rust".to_owned(), "two\n### lines".to_owned()];
        let input = StepInput {
            task_id: uuid::Uuid::nil(),
            step_id: uuid::Uuid::nil(),
            owner: "alice",
            task_description: "Ship it",
            step_title: "Build",
            instruction: "Build the API",
            dependency_outputs: &deps,
            memories: &memories,
            history: &[],
            cancel: &cancel,
            budget: &crate::run::Unlimited,
            resume: None,
            warm: None,
            approvals: Default::default(),
        };
        let prompt = step_prompt(&input);
        assert!(prompt.starts_with("Task: Ship it\nStep: Build\nInstruction: Build the API\n"), "{prompt}");
        assert!(prompt.contains("\n### Plan\nthe plan\n"), "{prompt}");
        assert!(
            prompt.contains("\nRelevant long-term memories:\n- Alice likes Rust\n- two\n  ### lines\n"),
            "{prompt}"
        );
        // Only the dependency heading counts as an earlier step output.
        assert_eq!(prompt.matches("\n### ").count(), 1);
    }

    #[test]
    fn the_summary_request_is_a_plain_transcript() {
        let call =
            ToolCall { id: "1".into(), name: "calculator".into(), arguments: serde_json::json!({"expression": "2+2"}) };
        let messages = [
            ChatMessage { tool_calls: vec![call], ..ChatMessage::new(Role::Assistant, "") },
            ChatMessage::tool_result("1", "x".repeat(5000)),
        ];
        let text = summary_request("Build", &messages);
        assert!(text.starts_with("Summarise the work so far on the step \"Build\""), "{text}");
        assert!(text.contains("[assistant calls calculator] {\"expression\":\"2+2\"}"), "{text}");
        assert!(text.contains(&format!("[tool result] {} […]", "x".repeat(4000))), "{text}");
        assert!(!text.contains(&"x".repeat(4001)));
    }
}
