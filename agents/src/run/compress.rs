//! The shape rules of a conversation, as pure functions: which messages a summary may
//! replace, and how a stored history is made acceptable to a provider again.
//!
//! Invariant kept by both: a tool reply always directly follows (with the other replies of
//! its batch) the assistant message whose tool call it answers, and every tool call of an
//! assistant message has its reply. Providers reject conversations that break this.

use crate::llm::{ChatMessage, Role};

/// Where the kept tail of `messages` begins: the last `keep_recent` messages, widened back
/// to the assistant message when the cut would fall between it and its tool replies.
/// Everything before the returned index may be summarised (0: nothing).
pub(super) fn tail_start(messages: &[ChatMessage], keep_recent: usize) -> usize {
    let mut start = messages.len().saturating_sub(keep_recent);
    while start > 0 && messages.get(start).is_some_and(|m| m.role == Role::Tool) {
        start -= 1;
    }
    start
}

/// `history` made well-formed: system messages dropped (the agent's own system prompt
/// leads), tool calls without a reply dropped from their assistant message (and the
/// message with them when nothing else is left), and tool replies that answer no preceding
/// call kept as plain user messages after the batch, so their content is not lost.
///
/// Hosts often store only role and content, and a step may have been interrupted between a
/// tool call and its reply; either would otherwise make the provider refuse the request.
pub(super) fn repair_history(history: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(history.len());
    let mut i = 0;
    while i < history.len() {
        let message = &history[i];
        i += 1;
        match message.role {
            Role::System => {}
            Role::Tool => out.push(orphan_reply(message)),
            Role::Assistant if !message.tool_calls.is_empty() => {
                let batch_end = i + history[i..].iter().take_while(|m| m.role == Role::Tool).count();
                let replies = &history[i..batch_end];
                i = batch_end;

                let answered: Vec<_> = message
                    .tool_calls
                    .iter()
                    .filter(|call| replies.iter().any(|r| r.tool_call_id.as_deref() == Some(call.id.as_str())))
                    .cloned()
                    .collect();
                let mut used: Vec<&str> = Vec::new();
                let mut orphans = Vec::new();
                let mut kept = Vec::new();
                for reply in replies {
                    match reply.tool_call_id.as_deref() {
                        Some(id) if answered.iter().any(|c| c.id == id) && !used.contains(&id) => {
                            used.push(id);
                            kept.push(reply.clone());
                        }
                        _ => orphans.push(orphan_reply(reply)),
                    }
                }
                if !answered.is_empty() || !message.content.trim().is_empty() {
                    out.push(ChatMessage { tool_calls: answered, ..message.clone() });
                }
                out.extend(kept);
                out.extend(orphans);
            }
            Role::User | Role::Assistant => out.push(message.clone()),
        }
    }
    out
}

fn orphan_reply(reply: &ChatMessage) -> ChatMessage {
    ChatMessage::new(Role::User, format!("Result of an earlier tool call:\n{}", reply.content))
}

/// Whether every tool reply in `messages` answers a call of the assistant message that
/// opens its batch, and every call is answered. Used by tests of the loop.
#[cfg(test)]
pub(super) fn pairs_intact(messages: &[ChatMessage]) -> bool {
    let mut open: Vec<&str> = Vec::new();
    for message in messages {
        match message.role {
            Role::Tool => {
                let Some(pos) = open.iter().position(|id| Some(*id) == message.tool_call_id.as_deref()) else {
                    return false;
                };
                open.remove(pos);
            }
            _ if !open.is_empty() => return false,
            Role::Assistant => open = message.tool_calls.iter().map(|c| c.id.as_str()).collect(),
            _ => {}
        }
    }
    open.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ToolCall;

    fn user(text: &str) -> ChatMessage {
        ChatMessage::new(Role::User, text)
    }

    fn calls(ids: &[&str]) -> ChatMessage {
        ChatMessage {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: ids
                .iter()
                .map(|id| ToolCall { id: (*id).into(), name: "calculator".into(), arguments: serde_json::json!({}) })
                .collect(),
            tool_call_id: None,
        }
    }

    fn reply(id: &str) -> ChatMessage {
        ChatMessage::tool_result(id, format!("result {id}"))
    }

    #[test]
    fn the_tail_keeps_the_last_messages() {
        let messages = [calls(&["a"]), reply("a"), calls(&["b"]), reply("b"), calls(&["c"]), reply("c")];
        assert_eq!(tail_start(&messages, 2), 4);
        assert_eq!(tail_start(&messages, 4), 2);
        assert_eq!(tail_start(&messages, 6), 0);
        assert_eq!(tail_start(&messages, 10), 0);
        assert_eq!(tail_start(&messages, 0), 6);
    }

    #[test]
    fn the_tail_never_starts_inside_a_batch_of_replies() {
        let messages = [calls(&["a"]), reply("a"), calls(&["b", "c", "d"]), reply("b"), reply("c"), reply("d")];
        // The last 1, 2 or 3 messages are replies of the batch opened at index 2.
        for keep in 1..=3 {
            assert_eq!(tail_start(&messages, keep), 2, "keep {keep}");
            assert!(pairs_intact(&messages[tail_start(&messages, keep)..]));
        }
        assert_eq!(tail_start(&messages, 5), 0);
    }

    #[test]
    fn pairs_intact_detects_broken_conversations() {
        assert!(pairs_intact(&[user("x"), calls(&["a", "b"]), reply("b"), reply("a"), user("y")]));
        assert!(!pairs_intact(&[reply("a")]));
        assert!(!pairs_intact(&[calls(&["a", "b"]), reply("a")]));
        assert!(!pairs_intact(&[calls(&["a"]), user("x"), reply("a")]));
    }

    #[test]
    fn a_well_formed_history_is_kept_without_its_system_messages() {
        let history = [ChatMessage::new(Role::System, "old"), user("x"), calls(&["a"]), reply("a"), user("y")];
        assert_eq!(repair_history(&history), history[1..]);
    }

    #[test]
    fn unanswered_calls_are_dropped_and_stray_replies_become_user_messages() {
        let history = [
            user("x"),
            calls(&["a", "b"]),
            reply("zzz"),
            reply("a"),
            reply("a"),
            calls(&["lost"]),
            ChatMessage { tool_call_id: None, ..reply("stored without id") },
        ];
        let repaired = repair_history(&history);
        assert!(pairs_intact(&repaired), "{repaired:#?}");
        assert_eq!(repaired[1].tool_calls.len(), 1);
        assert_eq!(repaired[1].tool_calls[0].id, "a");
        assert_eq!(repaired[2], reply("a"));
        assert_eq!(repaired[3].role, Role::User);
        assert!(repaired[3].content.ends_with("result zzz"));
        assert_eq!(repaired[4].role, Role::User);
        // The call to `lost` had no reply and its message no text: gone. Its stray reply stays as text.
        assert_eq!(repaired.len(), 6);
        assert!(repaired[5].content.ends_with("result stored without id"));
    }
}
