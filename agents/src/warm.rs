//! Warm starts: what an earlier run of the same work (the same task hash) left for a step, so
//! that the step can start from it instead of from nothing.
//!
//! A [`WarmContext`] holds the step's conversation as it ended (summaries included) and the
//! results of its successful tool calls. A step started warm shows the model that
//! conversation as earlier context, and answers a tool call whose tool and arguments equal a
//! recorded one from the recorded result, without running the tool (recorded with status
//! `cached`). It is a cache: the host may lose it, and the step then starts cold.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::llm::ChatMessage;

/// What a completed step leaves for the next run of the same work.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WarmContext {
    /// The step's conversation after its prompt, as it ended: summaries, turns, tool replies
    /// and the final answer.
    #[serde(default)]
    pub messages: Vec<ChatMessage>,
    /// Results of the step's successful tool calls.
    #[serde(default)]
    pub tool_results: Vec<CachedToolResult>,
    /// How the step ended (`completed`).
    #[serde(default)]
    pub status: String,
    /// Where it came from (task, step, agent, when), for people reading it.
    #[serde(default)]
    pub metadata: Value,
}

/// One successful tool call: what was asked and what came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedToolResult {
    pub tool: String,
    pub arguments: Value,
    /// The result as recorded (`tool_calls.result`).
    pub result: Option<Value>,
    /// The reply the model was given.
    pub reply: String,
}

impl WarmContext {
    /// The recorded result of `tool` called with exactly `arguments`, if any.
    pub fn cached(&self, tool: &str, arguments: &Value) -> Option<&CachedToolResult> {
        self.tool_results.iter().find(|r| r.tool == tool && &r.arguments == arguments)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_cached_result_answers_only_the_same_tool_with_the_same_arguments() {
        let warm = WarmContext {
            tool_results: vec![CachedToolResult {
                tool: "calculator".into(),
                arguments: json!({"expression": "6 * 7"}),
                result: Some(json!({"result": 42})),
                reply: "42".into(),
            }],
            ..WarmContext::default()
        };
        assert_eq!(warm.cached("calculator", &json!({"expression": "6 * 7"})).unwrap().reply, "42");
        assert!(warm.cached("calculator", &json!({"expression": "6*7"})).is_none());
        assert!(warm.cached("current_time", &json!({"expression": "6 * 7"})).is_none());
    }
}
