//! The agent loop: one step of a task, run by one agent.
//!
//! messages (system prompt, task, step, dependency outputs) → model → tool calls → fed back,
//! until the model gives a final answer or the iteration limit is reached. Every model call
//! and every tool call is handed to the [`RunRecorder`] as it happens, so cost is recorded
//! even when the step later fails.
//!
//! Tool execution arrives with the tool registry; until then every tool call is rejected
//! (and recorded as such) and the reason goes back to the model, which is exactly what a
//! call to a tool the agent may not use gets.

use std::{sync::Arc, time::Instant};

use crate::{
    llm::{ChatMessage, ChatRequest, LlmClient, LlmError, Role, Usage},
    pricing::PriceTable,
    spec::AgentSpec,
};

/// What one step gives its agent.
#[derive(Debug, Clone)]
pub struct StepInput<'a> {
    pub task_description: &'a str,
    pub step_title: &'a str,
    pub instruction: &'a str,
    /// (title, output) of each completed dependency, in plan order.
    pub dependency_outputs: &'a [(String, String)],
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlmCallRecord {
    pub provider: String,
    pub model: String,
    pub usage: Usage,
    pub cost_usd: f64,
    pub latency_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCallStatus {
    Ok,
    Error,
    Rejected,
}

impl ToolCallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallRecord {
    pub tool: String,
    pub arguments: serde_json::Value,
    pub result: Option<serde_json::Value>,
    pub status: ToolCallStatus,
    pub error: Option<String>,
    pub latency_ms: f64,
}

/// Where the loop reports what it did. Implemented by the host (Postgres in `api`).
#[async_trait::async_trait]
pub trait RunRecorder: Send + Sync {
    async fn llm_call(&self, call: LlmCallRecord) -> Result<(), RecordError>;
    async fn tool_call(&self, call: ToolCallRecord) -> Result<(), RecordError>;
}

/// The recorder could not persist a record; the step must not go on unaccounted.
#[derive(Debug, thiserror::Error)]
#[error("could not record the agent's activity: {0}")]
pub struct RecordError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error("the agent gave no final answer within {0} model calls")]
    IterationLimit(u32),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("no agent named `{0}` is configured")]
    UnknownAgent(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentOutput {
    pub text: String,
    pub usage: Usage,
    pub cost_usd: f64,
    pub model_calls: u32,
}

/// Runs agent specs against one model client.
#[derive(Clone)]
pub struct AgentRunner {
    llm: Arc<dyn LlmClient>,
    prices: Arc<PriceTable>,
}

impl AgentRunner {
    pub fn new(llm: Arc<dyn LlmClient>, prices: Arc<PriceTable>) -> Self {
        Self { llm, prices }
    }

    pub fn llm(&self) -> &Arc<dyn LlmClient> {
        &self.llm
    }

    pub async fn run(
        &self,
        spec: &AgentSpec,
        input: &StepInput<'_>,
        recorder: &dyn RunRecorder,
    ) -> Result<AgentOutput, AgentError> {
        let mut request = ChatRequest {
            messages: vec![
                ChatMessage::new(Role::System, spec.system_prompt.clone()),
                ChatMessage::new(Role::User, step_prompt(input)),
            ],
            tools: Vec::new(),
            max_tokens: None,
        };
        let mut output = AgentOutput { text: String::new(), usage: Usage::default(), cost_usd: 0.0, model_calls: 0 };

        while output.model_calls < spec.max_iterations {
            let started = Instant::now();
            let response = self.llm.chat(&request).await?;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            output.model_calls += 1;
            let cost_usd = self.prices.cost(&response.model, &response.usage).unwrap_or_else(|| {
                tracing::warn!(model = %response.model, "model has no price; its calls are recorded at zero cost");
                0.0
            });
            output.usage += response.usage;
            output.cost_usd += cost_usd;
            recorder
                .llm_call(LlmCallRecord {
                    provider: self.llm.provider().to_owned(),
                    model: response.model.clone(),
                    usage: response.usage,
                    cost_usd,
                    latency_ms,
                })
                .await?;

            if response.tool_calls.is_empty() {
                output.text = response.content.unwrap_or_default();
                return Ok(output);
            }

            request.messages.push(ChatMessage {
                role: Role::Assistant,
                content: response.content.unwrap_or_default(),
                tool_calls: response.tool_calls.clone(),
                tool_call_id: None,
            });
            for call in response.tool_calls {
                let reason = format!("tool `{}` is not available to the {} agent", call.name, spec.name);
                recorder
                    .tool_call(ToolCallRecord {
                        tool: call.name.clone(),
                        arguments: call.arguments.clone(),
                        result: None,
                        status: ToolCallStatus::Rejected,
                        error: Some(reason.clone()),
                        latency_ms: 0.0,
                    })
                    .await?;
                request.messages.push(ChatMessage::tool_result(&call.id, format!("error: {reason}")));
            }
        }
        Err(AgentError::IterationLimit(spec.max_iterations))
    }
}

/// The user message of a step: the task, this step, then each dependency's output under a
/// `### title` heading.
fn step_prompt(input: &StepInput<'_>) -> String {
    let mut prompt =
        format!("Task: {}\nStep: {}\nInstruction: {}\n", input.task_description, input.step_title, input.instruction);
    if !input.dependency_outputs.is_empty() {
        prompt.push_str("\nOutputs of earlier steps:\n");
        for (title, output) in input.dependency_outputs {
            prompt.push_str(&format!("\n### {title}\n{output}\n"));
        }
    }
    prompt
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::llm::{ChatResponse, ToolCall};
    use crate::{AgentCatalog, llm::OfflineModel};

    #[derive(Default)]
    struct Log {
        llm: Mutex<Vec<LlmCallRecord>>,
        tools: Mutex<Vec<ToolCallRecord>>,
    }

    #[async_trait::async_trait]
    impl RunRecorder for Log {
        async fn llm_call(&self, call: LlmCallRecord) -> Result<(), RecordError> {
            self.llm.lock().unwrap().push(call);
            Ok(())
        }
        async fn tool_call(&self, call: ToolCallRecord) -> Result<(), RecordError> {
            self.tools.lock().unwrap().push(call);
            Ok(())
        }
    }

    /// Always asks for a tool, never answers.
    struct ToolHungry;

    #[async_trait::async_trait]
    impl LlmClient for ToolHungry {
        fn provider(&self) -> &str {
            "test"
        }
        fn model(&self) -> &str {
            "hungry"
        }
        async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
            Ok(ChatResponse {
                content: None,
                tool_calls: vec![ToolCall {
                    id: format!("call-{}", request.messages.len()),
                    name: "calculator".into(),
                    arguments: serde_json::json!({"expression": "1+1"}),
                }],
                usage: Usage { prompt_tokens: 10, completion_tokens: 2, cached_tokens: 0 },
                model: "hungry".into(),
            })
        }
    }

    fn input<'a>(deps: &'a [(String, String)]) -> StepInput<'a> {
        StepInput {
            task_description: "Ship it",
            step_title: "Build",
            instruction: "Build the API",
            dependency_outputs: deps,
        }
    }

    #[tokio::test]
    async fn offline_step_records_one_model_call() {
        let runner = AgentRunner::new(Arc::new(OfflineModel::default()), Arc::new(PriceTable::builtin()));
        let spec = AgentCatalog::builtin().get("engineer").unwrap().clone();
        let deps = vec![("Plan".to_owned(), "the plan".to_owned())];
        let log = Log::default();
        let out = runner.run(&spec, &input(&deps), &log).await.unwrap();
        assert_eq!(out.model_calls, 1);
        assert!(out.text.starts_with("Build: done."), "{}", out.text);
        assert!(out.text.contains("1 earlier step output"), "{}", out.text);
        let calls = log.llm.lock().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].usage, out.usage);
        assert_eq!(calls[0].provider, "offline");
    }

    #[tokio::test]
    async fn unavailable_tools_are_rejected_and_the_loop_is_bounded() {
        let runner = AgentRunner::new(Arc::new(ToolHungry), Arc::new(PriceTable::builtin()));
        let mut spec = AgentCatalog::builtin().get("analyst").unwrap().clone();
        spec.max_iterations = 3;
        let log = Log::default();
        let err = runner.run(&spec, &input(&[]), &log).await.unwrap_err();
        assert!(matches!(err, AgentError::IterationLimit(3)), "{err}");
        assert_eq!(log.llm.lock().unwrap().len(), 3);
        let tools = log.tools.lock().unwrap();
        assert_eq!(tools.len(), 3);
        assert!(tools.iter().all(|t| t.status == ToolCallStatus::Rejected));
    }
}
