//! The offline deterministic model: no network, no key, the default provider.
//!
//! It answers from the conversation alone, so the same prompt always gives the same answer
//! and the same token counts; its answer says plainly that it was produced offline. An
//! optional delay models a slow provider in benchmarks.

use std::time::Duration;

use super::{ChatRequest, ChatResponse, LlmClient, LlmError, Role, Usage, estimate_tokens};

#[derive(Debug, Clone, Default)]
pub struct OfflineModel {
    delay: Duration,
}

impl OfflineModel {
    pub const PROVIDER: &'static str = "offline";
    pub const MODEL: &'static str = "offline-deterministic-1";

    pub fn new(delay: Duration) -> Self {
        Self { delay }
    }

    fn answer(request: &ChatRequest) -> String {
        let instruction = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or_default();
        // The step prompt puts the instruction on a line of its own after "Step:".
        let step = instruction.lines().find_map(|l| l.strip_prefix("Step: ")).unwrap_or(instruction).trim();
        let inputs = instruction.matches("\n### ").count();
        // Agent system prompts open with "You are the <name> agent".
        let role = request
            .messages
            .iter()
            .find(|m| m.role == Role::System)
            .and_then(|m| m.content.strip_prefix("You are the "))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("assistant");
        format!(
            "{step}: done. ({role} answer produced offline by the deterministic model from \
             {inputs} earlier step output(s); configure LLM_PROVIDER for real model output.)"
        )
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
        let content = Self::answer(request);
        let prompt_tokens = request.messages.iter().map(|m| estimate_tokens(&m.content) + 4).sum();
        let usage = Usage { prompt_tokens, completion_tokens: estimate_tokens(&content), cached_tokens: 0 };
        Ok(ChatResponse { content: Some(content), tool_calls: Vec::new(), usage, model: Self::MODEL.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChatMessage;

    fn request(user: &str) -> ChatRequest {
        ChatRequest {
            messages: vec![
                ChatMessage::new(Role::System, "You are the analyst agent.\nBe precise."),
                ChatMessage::new(Role::User, user),
            ],
            ..ChatRequest::default()
        }
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
}
