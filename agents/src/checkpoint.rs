//! Where an agent loop stands, so that another worker can continue a step instead of
//! starting it again.
//!
//! The loop hands a [`Checkpoint`] to its [`crate::RunRecorder`] with every model call and
//! every tool call it records, and the host writes both in one statement: a checkpoint never
//! claims a call that was not recorded, and a recorded call is never missing from the
//! checkpoint. A step resumed from it makes no recorded model call again and runs no recorded
//! tool call again; what was lost is at most the call in flight when the worker died.

use serde::{Deserialize, Serialize};

use crate::llm::{ChatMessage, Role, ToolCall, Usage};

/// The loop's state after its last recorded call. Stored as JSON by the host: fields added
/// later must have serde defaults, so checkpoints written by an older build still load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The step prompt the conversation was started with. A resumed step keeps it rather than
    /// building it again (its memories, for one, come from a search that may answer otherwise).
    pub prompt: String,
    /// This step's turns after the prompt, opened by a summary once one was made: assistant
    /// messages, tool replies and, last, the final answer.
    pub work: Vec<ChatMessage>,
    /// Whether a summary replaced the history the step was given (it then opens `work`).
    #[serde(default)]
    pub summarised: bool,
    /// Tool calls since the last summary, which decides when the next one is due.
    #[serde(default)]
    pub since_summary: usize,
    /// The step's model turns (summaries not included), over every attempt: the agent's
    /// iteration limit counts these.
    #[serde(default)]
    pub turns: u32,
    /// Messages the step added (prompt, turns, replies, summaries) that the host has not yet
    /// written to the task's short-term memory. Unlike `work`, summaries do not shorten it.
    #[serde(default)]
    pub transcript: Vec<ChatMessage>,
    /// The step's accounts so far, over every attempt that contributed to this checkpoint.
    #[serde(default)]
    pub usage: Usage,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default)]
    pub model_calls: u32,
    #[serde(default)]
    pub tool_calls: u32,
}

impl Checkpoint {
    /// The final answer, when the last recorded turn gave one.
    pub fn final_answer(&self) -> Option<&str> {
        self.work.last().filter(|m| m.role == Role::Assistant && m.tool_calls.is_empty()).map(|m| m.content.as_str())
    }

    /// The tool calls of the last assistant message that have no reply yet, in order: the
    /// ones to run before the model is asked again.
    pub fn unanswered_calls(&self) -> Vec<ToolCall> {
        let Some(at) = self.work.iter().rposition(|m| m.role == Role::Assistant) else { return Vec::new() };
        let replies = &self.work[at + 1..];
        self.work[at]
            .tool_calls
            .iter()
            .filter(|call| !replies.iter().any(|r| r.tool_call_id.as_deref() == Some(call.id.as_str())))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn asking(ids: &[&str]) -> ChatMessage {
        ChatMessage {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: ids
                .iter()
                .map(|id| ToolCall { id: (*id).into(), name: "calculator".into(), arguments: json!({}) })
                .collect(),
            tool_call_id: None,
        }
    }

    #[test]
    fn the_calls_left_to_run_are_those_of_the_last_turn_without_a_reply() {
        let mut checkpoint =
            Checkpoint { work: vec![asking(&["a"]), ChatMessage::tool_result("a", "1")], ..Default::default() };
        assert!(checkpoint.unanswered_calls().is_empty());
        checkpoint.work.push(asking(&["b", "c"]));
        checkpoint.work.push(ChatMessage::tool_result("b", "2"));
        let left: Vec<String> = checkpoint.unanswered_calls().into_iter().map(|c| c.id).collect();
        assert_eq!(left, ["c"]);
        assert_eq!(checkpoint.final_answer(), None);
        checkpoint.work.push(ChatMessage::tool_result("c", "3"));
        checkpoint.work.push(ChatMessage::new(Role::Assistant, "done"));
        assert_eq!(checkpoint.final_answer(), Some("done"));
        assert!(checkpoint.unanswered_calls().is_empty());
    }

    #[test]
    fn a_checkpoint_of_an_older_shape_still_loads() {
        let old = json!({"prompt": "p", "work": [{"role": "assistant", "content": "x"}]});
        let checkpoint: Checkpoint = serde_json::from_value(old).unwrap();
        assert_eq!(checkpoint.final_answer(), Some("x"));
        assert_eq!(checkpoint.model_calls, 0);
    }
}
