//! The agent loop: one step of a task, run by one agent.
//!
//! messages (system prompt, earlier conversation, the step prompt with dependency outputs
//! and relevant memories) → model → tool calls checked and run by the [`ToolRegistry`] →
//! replies fed back, until the model gives a final answer or the agent's iteration limit
//! (model calls per step) is reached. Every `summarize_every` tool calls the older part of
//! the conversation is replaced by a summary the model writes.
//!
//! Invariants: every model call, tool call and conversation message is handed to the
//! [`RunRecorder`] as it happens, so cost and short-term memory are kept even when the step
//! later fails; the system prompt and the step prompt are never summarised away, and a tool
//! reply is never separated from the call it answers; cancellation is checked before every
//! model call and every tool call; every model call is first reserved with the step's
//! [`Budget`] (when it limits anything), and the reservation is settled with the call's
//! record or released when the call fails.

mod compress;
mod prompt;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

// The loop's vocabulary, under the paths the host has always used (`agents::run::…`); they
// live below the loop so the tool registry can use them without depending on it.
pub use crate::budget::{Budget, BudgetError, BudgetExceeded, BudgetLimit, CallEstimate, Reservation, Unlimited};
pub use crate::record::{LlmCallRecord, RecordError, RunRecorder, ToolCallRecord, ToolCallStatus};
use crate::{
    budgeted::{BudgetedModel, CallError, Halt},
    llm::{ChatMessage, ChatRequest, ChatResponse, LlmClient, LlmError, Role, Usage},
    pricing::PriceTable,
    spec::AgentSpec,
    tools::{ToolContext, ToolRegistry},
};

/// What one step gives its agent.
#[derive(Clone)]
pub struct StepInput<'a> {
    pub task_id: Uuid,
    pub step_id: Uuid,
    /// The task's user: tools act for them (memory is scoped to them).
    pub owner: &'a str,
    pub task_description: &'a str,
    pub step_title: &'a str,
    pub instruction: &'a str,
    /// (title, output) of each completed dependency, in plan order.
    pub dependency_outputs: &'a [(String, String)],
    /// Relevant long-term memories, listed in the step prompt.
    pub memories: &'a [String],
    /// The task's short-term memory so far (earlier attempts, context the user gave), put
    /// before the step prompt as earlier conversation. System messages in it are ignored.
    pub history: &'a [ChatMessage],
    /// Set when the task is cancelled; the loop stops before its next model or tool call.
    pub cancel: &'a CancellationToken,
    /// Reserves each model call's worst case before it is made.
    pub budget: &'a dyn Budget,
}

/// How the loop manages a growing conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopSettings {
    /// Summarise older messages after this many tool calls (since the last summary);
    /// 0 never summarises.
    pub summarize_every: usize,
    /// Messages at the end of the conversation a summary leaves as they are (more when
    /// needed to keep a tool call with its replies).
    pub keep_recent: usize,
}

impl Default for LoopSettings {
    fn default() -> Self {
        Self { summarize_every: 8, keep_recent: 6 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error("the agent gave no final answer within {0} model calls (its iteration limit)")]
    IterationLimit(u32),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("no agent named `{0}` is configured")]
    UnknownAgent(String),
    #[error("the step was cancelled")]
    Cancelled,
    /// The next model call did not fit in the task's budget or the user's quota.
    #[error(transparent)]
    BudgetExceeded(BudgetExceeded),
}

impl From<BudgetError> for AgentError {
    fn from(e: BudgetError) -> Self {
        Halt::from(e).into()
    }
}

impl From<Halt> for AgentError {
    fn from(halt: Halt) -> Self {
        match halt {
            Halt::OverBudget(e) => Self::BudgetExceeded(e),
            // Like a recorder that cannot write: the step must not go on unaccounted.
            Halt::BudgetUnavailable(reason) => Self::Record(RecordError(reason)),
            Halt::Unrecorded(e) => Self::Record(e),
        }
    }
}

impl From<CallError> for AgentError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Model(e) => Self::Llm(e),
            CallError::Halted(halt) => halt.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentOutput {
    pub text: String,
    /// Usage of every model call of the step, summaries included.
    pub usage: Usage,
    pub cost_usd: f64,
    /// Model calls of the step, summaries included.
    pub model_calls: u32,
    /// Tool calls the model asked for, rejected ones included.
    pub tool_calls: u32,
}

/// Runs agent specs against one model client and one tool registry.
#[derive(Clone)]
pub struct AgentRunner {
    llm: Arc<dyn LlmClient>,
    prices: Arc<PriceTable>,
    tools: Arc<ToolRegistry>,
    settings: LoopSettings,
}

/// The conversation of one step, in the order it is sent: `system`, `earlier` (the repaired
/// history), `prompt`, `work` (this step's turns, possibly opened by a summary).
struct Conversation {
    system: ChatMessage,
    earlier: Vec<ChatMessage>,
    prompt: ChatMessage,
    work: Vec<ChatMessage>,
}

impl Conversation {
    fn messages(&self) -> Vec<ChatMessage> {
        let mut all = Vec::with_capacity(self.earlier.len() + self.work.len() + 2);
        all.push(self.system.clone());
        all.extend(self.earlier.iter().cloned());
        all.push(self.prompt.clone());
        all.extend(self.work.iter().cloned());
        all
    }
}

impl AgentRunner {
    pub fn new(
        llm: Arc<dyn LlmClient>,
        prices: Arc<PriceTable>,
        tools: Arc<ToolRegistry>,
        settings: LoopSettings,
    ) -> Self {
        // Every answer the loop (and the planner, through `llm()`) gets is storable.
        Self { llm: crate::llm::Storable::wrap(llm), prices, tools, settings }
    }

    pub fn llm(&self) -> &Arc<dyn LlmClient> {
        &self.llm
    }

    pub fn tools(&self) -> &Arc<ToolRegistry> {
        &self.tools
    }

    /// Runs one step with `spec` until its final answer.
    pub async fn run(
        &self,
        spec: &AgentSpec,
        input: &StepInput<'_>,
        recorder: &dyn RunRecorder,
    ) -> Result<AgentOutput, AgentError> {
        let ctx = ToolContext { task_id: input.task_id, step_id: Some(input.step_id), owner: input.owner.to_owned() };
        let definitions = self.tools.definitions_for(&spec.tools);
        let mut convo = Conversation {
            system: ChatMessage::new(Role::System, spec.system_prompt.clone()),
            earlier: compress::repair_history(input.history),
            prompt: ChatMessage::new(Role::User, prompt::step_prompt(input)),
            work: Vec::new(),
        };
        recorder.message(&convo.prompt).await?;

        let mut output =
            AgentOutput { text: String::new(), usage: Usage::default(), cost_usd: 0.0, model_calls: 0, tool_calls: 0 };
        let mut turns = 0;
        let mut since_summary = 0;
        loop {
            if turns >= spec.max_iterations {
                return Err(AgentError::IterationLimit(spec.max_iterations));
            }
            if self.settings.summarize_every > 0 && since_summary >= self.settings.summarize_every {
                self.summarise(spec, input, &mut convo, &mut output, recorder).await?;
                since_summary = 0;
            }
            let request = ChatRequest {
                messages: convo.messages(),
                tools: definitions.clone(),
                model: spec.model.clone(),
                ..ChatRequest::default()
            };
            let response = self.call_model(request, input, &mut output, recorder).await?;
            turns += 1;

            if response.tool_calls.is_empty() {
                let answer = ChatMessage::new(Role::Assistant, response.content.unwrap_or_default());
                recorder.message(&answer).await?;
                output.text = answer.content;
                return Ok(output);
            }

            let assistant = ChatMessage {
                role: Role::Assistant,
                content: response.content.unwrap_or_default(),
                tool_calls: response.tool_calls,
                tool_call_id: None,
            };
            recorder.message(&assistant).await?;
            convo.work.push(assistant.clone());
            for call in &assistant.tool_calls {
                if input.cancel.is_cancelled() {
                    return Err(AgentError::Cancelled);
                }
                let invocation = self.tools.invoke(&spec.tools, call, &ctx).await;
                output.tool_calls += 1;
                since_summary += 1;
                recorder.tool_call(invocation.record).await?;
                let reply = ChatMessage::tool_result(&call.id, invocation.reply);
                recorder.message(&reply).await?;
                convo.work.push(reply);
            }
        }
    }

    /// One model call, made through the step's [`BudgetedModel`] (reserved, made, recorded,
    /// which settles the reservation), and added to the step's accounts.
    async fn call_model(
        &self,
        request: ChatRequest,
        input: &StepInput<'_>,
        output: &mut AgentOutput,
        recorder: &dyn RunRecorder,
    ) -> Result<ChatResponse, AgentError> {
        if input.cancel.is_cancelled() {
            return Err(AgentError::Cancelled);
        }
        let model = BudgetedModel { llm: self.llm.as_ref(), prices: &self.prices, budget: input.budget };
        let answered = model.call(request, recorder).await?;
        output.model_calls += 1;
        output.usage += answered.response.usage;
        output.cost_usd += answered.cost_usd;
        Ok(answered.response)
    }

    /// Replaces the history and all but the recent part of this step's turns by one summary
    /// message. Does nothing when there is too little to summarise, or when the model
    /// returns no summary (the conversation is then kept whole rather than lost).
    async fn summarise(
        &self,
        spec: &AgentSpec,
        input: &StepInput<'_>,
        convo: &mut Conversation,
        output: &mut AgentOutput,
        recorder: &dyn RunRecorder,
    ) -> Result<(), AgentError> {
        let split = compress::tail_start(&convo.work, self.settings.keep_recent);
        let old: Vec<ChatMessage> = convo.earlier.iter().chain(&convo.work[..split]).cloned().collect();
        if old.len() < 2 {
            return Ok(());
        }
        let request = ChatRequest {
            messages: vec![
                ChatMessage::new(Role::System, prompt::SUMMARY_SYSTEM_PROMPT),
                ChatMessage::new(Role::User, prompt::summary_request(input.step_title, &old)),
            ],
            model: spec.model.clone(),
            ..ChatRequest::default()
        };
        let response = self.call_model(request, input, output, recorder).await?;
        let Some(summary) = response.content.filter(|s| !s.trim().is_empty()) else {
            tracing::warn!(agent = %spec.name, "the model returned an empty summary; keeping the full conversation");
            return Ok(());
        };
        let message = prompt::summary_message(&summary);
        recorder.message(&message).await?;
        convo.earlier.clear();
        convo.work.splice(..split, [message]);
        Ok(())
    }
}
