//! The agent loop: one step of a task, run by one agent.
//!
//! messages (system prompt, earlier conversation, the step prompt with dependency outputs
//! and relevant memories) → model → tool calls checked and run by the [`ToolRegistry`] →
//! replies fed back, until the model gives a final answer or the agent's iteration limit
//! (model calls per step) is reached. Every `summarize_every` tool calls the older part of
//! the conversation is replaced by a summary the model writes.
//!
//! Invariants: every model call and tool call is handed to the [`RunRecorder`] as it
//! happens, with the loop's [`Checkpoint`] after it (its conversation, the messages not yet
//! stored as short-term memory, its accounts), so cost is kept even when the step later
//! fails, and an attempt that dies is continued from its last checkpoint by the next one
//! without repeating a recorded model or tool call; the system prompt and the step prompt
//! are never summarised away, and a tool reply is never separated from the call it answers;
//! cancellation is checked before every model call and every tool call; every model call is
//! first reserved with the step's [`Budget`] (when it limits anything), and the reservation
//! is settled with the call's record or released when the call fails.

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
pub use crate::checkpoint::Checkpoint;
pub use crate::record::{LlmCallRecord, RecordError, RunRecorder, ToolCallRecord, ToolCallStatus};
pub use crate::warm::WarmContext;
use crate::{
    approval::{self, ApprovalPolicy, ApprovalRequest, Decision},
    budgeted::{BudgetedModel, CallError, Halt},
    llm::{ChatMessage, ChatRequest, ChatResponse, LlmClient, LlmError, Role, ToolCall, Usage},
    pricing::PriceTable,
    spec::AgentSpec,
    tools::{ToolContext, ToolInvocation, ToolRegistry},
    warm::CachedToolResult,
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
    /// Where an earlier attempt of the step stopped: the loop continues from there.
    pub resume: Option<&'a Checkpoint>,
    /// What an earlier run of the same work left (a warm start): its conversation comes
    /// after `history` as earlier context, and its tool results answer identical calls.
    pub warm: Option<&'a WarmContext>,
    /// Which tools wait for a person's approval, and the decisions made so far.
    pub approvals: ApprovalPolicy<'a>,
}

/// How the loop manages a growing conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopSettings {
    /// Summarise older messages after this many tool calls (since the last summary), unless
    /// the agent sets its own `compress_every`;
    /// 0 never summarises.
    pub summarize_every: usize,
    /// Messages at the end of the conversation a summary leaves as they are (more when
    /// needed to keep a tool call with its replies).
    pub keep_recent: usize,
    /// Model turns one attempt makes before it yields ([`AgentError::Yielded`]) so its
    /// worker slot goes to other work and the step continues later from its checkpoint;
    /// 0 never yields.
    pub yield_after_turns: u32,
}

impl Default for LoopSettings {
    fn default() -> Self {
        Self { summarize_every: 8, keep_recent: 6, yield_after_turns: 16 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error("the agent gave no final answer within {0} model calls (its iteration limit)")]
    IterationLimit(u32),
    /// Not a failure: the attempt made `yield_after_turns` turns, everything is in its last
    /// checkpoint, and the host queues the step again to continue from it.
    #[error("the agent yielded after {0} turns; the step continues from its checkpoint")]
    Yielded(u32),
    /// Not a failure: calls of the last turn wait for a person's decision. The last
    /// checkpoint holds the turn; the host continues the step once they are decided.
    #[error("{} tool call(s) wait for a person's approval", .0.len())]
    AwaitingApproval(Vec<ApprovalRequest>),
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
    /// Usage of every model call of the step, summaries included, over every attempt that
    /// the step continued from.
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

/// A call answered from a warm start's recorded result: the tool does not run.
fn cached_invocation(call: &ToolCall, cached: &CachedToolResult) -> ToolInvocation {
    ToolInvocation {
        reply: cached.reply.clone(),
        record: ToolCallRecord {
            tool: call.name.clone(),
            arguments: call.arguments.clone(),
            result: cached.result.clone(),
            status: ToolCallStatus::Cached,
            error: None,
            latency_ms: 0.0,
        },
    }
}

/// A call a person denied: the tool does not run, the model reads the reason.
fn denied_invocation(call: &ToolCall, reason: &str) -> ToolInvocation {
    ToolInvocation {
        reply: approval::denied_reply(reason),
        record: ToolCallRecord {
            tool: call.name.clone(),
            arguments: call.arguments.clone(),
            result: None,
            status: ToolCallStatus::Denied,
            error: Some(reason.to_owned()),
            latency_ms: 0.0,
        },
    }
}

/// The fixed part of one step's conversation, in the order it is sent: `system`, `earlier`
/// (the repaired history, until a summary replaces it) and `prompt`; the checkpoint's `work`
/// follows them.
struct Conversation {
    system: ChatMessage,
    earlier: Vec<ChatMessage>,
    prompt: ChatMessage,
}

impl Conversation {
    /// The history, until a summary replaced it.
    fn earlier(&self, at: &Checkpoint) -> &[ChatMessage] {
        if at.summarised { &[] } else { &self.earlier }
    }

    fn messages(&self, at: &Checkpoint) -> Vec<ChatMessage> {
        let earlier = self.earlier(at);
        let mut all = Vec::with_capacity(earlier.len() + at.work.len() + 2);
        all.push(self.system.clone());
        all.extend(earlier.iter().cloned());
        all.push(self.prompt.clone());
        all.extend(at.work.iter().cloned());
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

    /// Runs one step with `spec` until its final answer, from `input.resume` when an earlier
    /// attempt left a checkpoint.
    pub async fn run(
        &self,
        spec: &AgentSpec,
        input: &StepInput<'_>,
        recorder: &dyn RunRecorder,
    ) -> Result<AgentOutput, AgentError> {
        let ctx = ToolContext { task_id: input.task_id, step_id: Some(input.step_id), owner: input.owner.to_owned() };
        let definitions = self.tools.definitions_for(&spec.tools);
        let mut at = match input.resume {
            Some(checkpoint) => checkpoint.clone(),
            None => {
                let prompt = ChatMessage::new(Role::User, prompt::step_prompt(input));
                Checkpoint { prompt: prompt.content.clone(), transcript: vec![prompt], ..Checkpoint::default() }
            }
        };
        let mut earlier = input.history.to_vec();
        if let Some(warm) = input.warm {
            earlier.extend(warm.messages.iter().cloned());
        }
        let convo = Conversation {
            system: ChatMessage::new(Role::System, spec.system_prompt.clone()),
            earlier: compress::repair_history(&earlier),
            prompt: ChatMessage::new(Role::User, at.prompt.clone()),
        };

        // Model turns of this attempt, for yielding; the iteration limit counts the step's.
        let mut turns = 0;
        loop {
            if let Some(answer) = at.final_answer() {
                return Ok(AgentOutput {
                    text: answer.to_owned(),
                    usage: at.usage,
                    cost_usd: at.cost_usd,
                    model_calls: at.model_calls,
                    tool_calls: at.tool_calls,
                });
            }
            // The last turn's tool calls; a resumed step may stand between two of them. None
            // runs while one of them waits for a person: the turn is decided as a whole.
            let calls = at.unanswered_calls();
            let waiting = self.awaiting_approval(spec, input, &calls, at.turns);
            if !waiting.is_empty() {
                return Err(AgentError::AwaitingApproval(waiting));
            }
            for call in calls {
                if input.cancel.is_cancelled() {
                    return Err(AgentError::Cancelled);
                }
                let invocation = match input.warm.and_then(|w| w.cached(&call.name, &call.arguments)) {
                    Some(cached) => cached_invocation(&call, cached),
                    None => match input.approvals.decision(at.turns, &call) {
                        Some(Decision::Deny { reason }) => denied_invocation(&call, reason),
                        Some(Decision::Approve { arguments: Some(edited) }) => {
                            let edited = ToolCall { arguments: edited.clone(), ..call.clone() };
                            let mut invocation = self.tools.invoke(&spec.tools, &edited, &ctx).await;
                            invocation.reply = approval::edited_reply(&edited.arguments, &invocation.reply);
                            invocation
                        }
                        Some(Decision::Approve { arguments: None }) | None => {
                            self.tools.invoke(&spec.tools, &call, &ctx).await
                        }
                    },
                };
                let reply = ChatMessage::tool_result(&call.id, invocation.reply);
                at.tool_calls += 1;
                at.since_summary += 1;
                at.work.push(reply.clone());
                at.transcript.push(reply);
                recorder.tool_call(invocation.record, &at).await?;
            }
            if at.turns >= spec.max_iterations {
                return Err(AgentError::IterationLimit(spec.max_iterations));
            }
            if self.settings.yield_after_turns > 0 && turns >= self.settings.yield_after_turns {
                return Err(AgentError::Yielded(turns));
            }
            let summarize_every = spec.compress_every.map_or(self.settings.summarize_every, |n| n as usize);
            if summarize_every > 0 && at.since_summary >= summarize_every {
                self.summarise(spec, input, &convo, &mut at, recorder).await?;
            }
            let request = ChatRequest {
                messages: convo.messages(&at),
                tools: definitions.clone(),
                model: spec.model.clone(),
                ..ChatRequest::default()
            };
            let (response, record) = self.call_model(request, input, &mut at).await?;
            turns += 1;
            at.turns += 1;
            let message = ChatMessage {
                role: Role::Assistant,
                content: response.content.unwrap_or_default(),
                tool_calls: response.tool_calls,
                tool_call_id: None,
            };
            at.work.push(message.clone());
            at.transcript.push(message);
            recorder.model_call(record, &at).await?;
        }
    }

    /// The calls of turn `turn` that wait for a person: their tool requires approval, no
    /// decision was made, no warm start answers them, and they would not be refused anyway
    /// (an invalid call goes back to the model without bothering anyone).
    fn awaiting_approval(
        &self,
        spec: &AgentSpec,
        input: &StepInput<'_>,
        calls: &[ToolCall],
        turn: u32,
    ) -> Vec<ApprovalRequest> {
        calls
            .iter()
            .filter(|call| input.approvals.requires(&spec.approval, &call.name))
            .filter(|call| input.approvals.decision(turn, call).is_none())
            .filter(|call| input.warm.and_then(|w| w.cached(&call.name, &call.arguments)).is_none())
            .filter(|call| self.tools.refusal(&spec.tools, call).is_none())
            .map(|call| ApprovalRequest { turn, call: call.clone() })
            .collect()
    }

    /// One model call, made through the step's [`BudgetedModel`] (reserved, made, priced)
    /// and added to the step's accounts; the caller records it with the checkpoint.
    async fn call_model(
        &self,
        request: ChatRequest,
        input: &StepInput<'_>,
        at: &mut Checkpoint,
    ) -> Result<(ChatResponse, LlmCallRecord), AgentError> {
        if input.cancel.is_cancelled() {
            return Err(AgentError::Cancelled);
        }
        let model = BudgetedModel { llm: self.llm.as_ref(), prices: &self.prices, budget: input.budget };
        let priced = model.answer(request).await?;
        at.model_calls += 1;
        at.usage += priced.answered.response.usage;
        at.cost_usd += priced.answered.cost_usd;
        Ok((priced.answered.response, priced.record))
    }

    /// Replaces the history and all but the recent part of this step's turns by one summary
    /// message. Does nothing when there is too little to summarise, and keeps the
    /// conversation whole when the model returns no summary (its call is still recorded).
    async fn summarise(
        &self,
        spec: &AgentSpec,
        input: &StepInput<'_>,
        convo: &Conversation,
        at: &mut Checkpoint,
        recorder: &dyn RunRecorder,
    ) -> Result<(), AgentError> {
        at.since_summary = 0;
        let split = compress::tail_start(&at.work, self.settings.keep_recent);
        let old: Vec<ChatMessage> = convo.earlier(at).iter().chain(&at.work[..split]).cloned().collect();
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
        let (response, record) = self.call_model(request, input, at).await?;
        match response.content.filter(|s| !s.trim().is_empty()) {
            Some(summary) => {
                let message = prompt::summary_message(&summary);
                at.summarised = true;
                at.work.splice(..split, [message.clone()]);
                at.transcript.push(message);
            }
            None => {
                tracing::warn!(agent = %spec.name, "the model returned an empty summary; keeping the full conversation")
            }
        }
        recorder.model_call(record, at).await?;
        Ok(())
    }
}
