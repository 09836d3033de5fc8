//! The LLM planner: asks a model for a plan as structured output (a `submit_plan` tool whose
//! JSON Schema is the plan), checks it, and falls back to the heuristic planner.
//!
//! Invariants: every plan it returns has passed [`validate()`] against the agents and
//! limits it was built with, or comes from the fallback [`HeuristicPlanner`]; the model is
//! asked at most twice per plan (a rejected plan is sent back once, with the reason); every
//! model call that answered is reported with its usage ([`PlanOutcome::calls`]) so the
//! caller can account for planning cost, including calls whose plan was rejected.
//!
//! Under a budget ([`LlmPlanner::plan_within`]) each call goes through the agents crate's
//! [`BudgetedModel`], the same call the agent loop makes: reserved, recorded as it answers,
//! and planning stops at once, without a fallback plan, when a call does not fit or cannot
//! be accounted ([`Halt`]).

use std::{convert::Infallible, sync::Arc, time::Instant};

use agents::{
    BudgetedModel, CallError, CallRecorder, Halt,
    llm::{ChatMessage, ChatRequest, ChatResponse, LlmClient, LlmError, Role, ToolChoice, ToolDefinition, Usage},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    HeuristicPlanner, MAX_TITLE_CHARS, Plan, PlanError, PlanLimits, PlannedStep, Planner, make_title,
    replan::{ReplanRequest, Revision, StepState, validate_revision},
    text::fit,
    validate,
};

/// Version of the LLM planner's prompt and parsing; bump it when the same description could
/// be planned differently.
pub const LLM_PLANNER_VERSION: &str = "llm-1";

/// The tool the model submits its plan with.
const SUBMIT_PLAN: &str = "submit_plan";
/// Model calls per plan: the first answer and one corrected answer.
const MAX_MODEL_CALLS: usize = 2;

/// One model call made while planning, for the caller's cost records (`llm_calls` rows with
/// no step).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCall {
    /// Provider of the client, e.g. `openai`.
    pub provider: String,
    /// The model that answered.
    pub model: String,
    /// Tokens the call used.
    pub usage: Usage,
    /// Wall time of the call, retries included.
    pub latency_ms: f64,
}

/// The result of planning one task, with what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOutcome {
    /// The plan, or why there is none (only a blank description or unsatisfiable limits).
    pub plan: Result<Plan, PlanError>,
    /// The model calls that answered, in order.
    pub calls: Vec<PlannedCall>,
    /// Why the heuristic fallback made the plan, when it did.
    pub fallback_reason: Option<String>,
}

impl PlanOutcome {
    /// True when the plan came from the heuristic fallback rather than the model.
    pub fn used_fallback(&self) -> bool {
        self.fallback_reason.is_some()
    }
}

/// The result of replanning one task, with what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplanOutcome {
    /// The revision; `Ok(None)` when no planner saw another way to do the work.
    pub revision: Result<Option<Revision>, PlanError>,
    /// The model calls that answered, in order.
    pub calls: Vec<PlannedCall>,
    /// Why the heuristic fallback replanned, when it did.
    pub fallback_reason: Option<String>,
}

/// What [`LlmPlanner::ask`] got: the accepted answer or the last problem, and the calls.
struct Asked<T> {
    answer: Result<T, String>,
    calls: Vec<PlannedCall>,
}

/// Longest output of a completed step shown to the model when it replans, in characters.
const MAX_OUTPUT_CHARS_SHOWN: usize = 2000;

/// Plans with a model; see the module docs.
pub struct LlmPlanner {
    llm: Arc<dyn LlmClient>,
    /// (name, description) of each agent the model may assign.
    agents: Vec<(String, String)>,
    limits: PlanLimits,
    fallback: HeuristicPlanner,
    model: Option<String>,
}

impl std::fmt::Debug for LlmPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmPlanner")
            .field("provider", &self.llm.provider())
            .field("model", &self.model.as_deref().unwrap_or(self.llm.model()))
            .field("agents", &self.agents.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl LlmPlanner {
    /// A planner that assigns steps to `agents` (name, description) within `limits`, and
    /// uses `fallback` when the model fails or twice answers with an unacceptable plan.
    pub fn new(
        llm: Arc<dyn LlmClient>,
        agents: Vec<(String, String)>,
        limits: PlanLimits,
        fallback: HeuristicPlanner,
    ) -> Self {
        Self { llm, agents, limits, fallback, model: None }
    }

    /// Plans with `model` instead of the client's default model.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Plans `description` and reports every model call made for it. Use this rather than
    /// [`Planner::plan`] when planning cost must be recorded.
    pub async fn plan_with_usage(&self, description: &str) -> PlanOutcome {
        match self.plan_by(description, &Plain(self.llm.as_ref())).await {
            Ok(outcome) => outcome,
            Err(never) => match never {},
        }
    }

    /// A revised plan for the work that did not complete (see [`crate::replan`]), asked of
    /// the model with the failure in the prompt, and every model call made for it; the
    /// heuristic planner replans when the model twice gives no acceptable revision.
    pub async fn replan_with_usage(&self, request: &ReplanRequest) -> ReplanOutcome {
        match self.replan_by(request, &Plain(self.llm.as_ref())).await {
            Ok(outcome) => outcome,
            Err(never) => match never {},
        }
    }

    /// [`Self::replan_with_usage`] with every model call made through `model` and recorded
    /// with `recorder`, as [`Self::plan_within`] plans.
    pub async fn replan_within(
        &self,
        request: &ReplanRequest,
        model: &BudgetedModel<'_>,
        recorder: &dyn CallRecorder,
    ) -> Result<ReplanOutcome, Halt> {
        self.replan_by(request, &Budgeted { model: *model, recorder }).await
    }

    /// Plans `description` with every model call made through `model`, so reserved against
    /// its budget and recorded with `recorder` as it answers. Stops with the [`Halt`] of the
    /// first call that did not fit or could not be accounted; a model that fails still
    /// leads to the heuristic fallback.
    pub async fn plan_within(
        &self,
        description: &str,
        model: &BudgetedModel<'_>,
        recorder: &dyn CallRecorder,
    ) -> Result<PlanOutcome, Halt> {
        self.plan_by(description, &Budgeted { model: *model, recorder }).await
    }

    async fn plan_by<M: PlanModel>(&self, description: &str, model: &M) -> Result<PlanOutcome, M::Halt> {
        let description = description.trim();
        if description.is_empty() {
            return Ok(PlanOutcome {
                plan: Err(PlanError::EmptyDescription),
                calls: Vec::new(),
                fallback_reason: None,
            });
        }
        let names: Vec<&str> = self.agents.iter().map(|(name, _)| name.as_str()).collect();
        let asked = self
            .ask(self.request(description), model, |plan| {
                validate(&plan, &names, &self.limits).map_err(|e| format!("the plan is invalid: {e}"))?;
                Ok(plan)
            })
            .await?;
        Ok(match asked.answer {
            Ok(plan) => PlanOutcome { plan: Ok(plan), calls: asked.calls, fallback_reason: None },
            Err(problem) => {
                tracing::warn!(reason = %problem, "falling back to the heuristic planner");
                PlanOutcome {
                    plan: self.fallback.plan_description(description),
                    calls: asked.calls,
                    fallback_reason: Some(problem),
                }
            }
        })
    }

    async fn replan_by<M: PlanModel>(&self, request: &ReplanRequest, model: &M) -> Result<ReplanOutcome, M::Halt> {
        let names: Vec<&str> = self.agents.iter().map(|(name, _)| name.as_str()).collect();
        let asked = self
            .ask(self.replan_chat(request), model, |plan| {
                let revision = Revision { steps: plan.steps };
                validate_revision(request, &revision, &names, &self.limits)
                    .map_err(|e| format!("the revised plan is invalid: {e}"))?;
                Ok(revision)
            })
            .await?;
        Ok(match asked.answer {
            Ok(revision) => ReplanOutcome { revision: Ok(Some(revision)), calls: asked.calls, fallback_reason: None },
            Err(problem) => {
                tracing::warn!(reason = %problem, "replanning with the heuristic planner instead");
                ReplanOutcome {
                    revision: self.fallback.replan_request(request),
                    calls: asked.calls,
                    fallback_reason: Some(problem),
                }
            }
        })
    }

    /// Asks the model for a plan at most [`MAX_MODEL_CALLS`] times, sending a refused answer
    /// back once with the reason; `check` accepts a plan (and turns it into what the caller
    /// wants) or says what is wrong with it, worded for the model.
    async fn ask<M: PlanModel, T>(
        &self,
        mut request: ChatRequest,
        model: &M,
        check: impl Fn(Plan) -> Result<T, String>,
    ) -> Result<Asked<T>, M::Halt> {
        let mut calls = Vec::new();
        let mut problem = String::new();
        for attempt in 1..=MAX_MODEL_CALLS {
            let started = Instant::now();
            let response = match model.ask(&request).await {
                Ok(response) => response,
                Err(Failure::Model(err)) => {
                    problem = format!("the planning model failed: {err}");
                    break;
                }
                Err(Failure::Halt(halt)) => return Err(halt),
            };
            calls.push(PlannedCall {
                provider: model.provider().to_owned(),
                model: response.model.clone(),
                usage: response.usage,
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            });
            match self.read_plan(&response).and_then(&check) {
                Ok(answer) => return Ok(Asked { answer: Ok(answer), calls }),
                Err(reason) => {
                    tracing::warn!(attempt, %reason, "the planning model's plan was not acceptable");
                    push_feedback(&mut request, response, &reason);
                    problem = reason;
                }
            }
        }
        Ok(Asked { answer: Err(problem), calls })
    }

    fn request(&self, description: &str) -> ChatRequest {
        ChatRequest {
            messages: vec![
                ChatMessage::new(Role::System, self.system_prompt()),
                ChatMessage::new(Role::User, format!("Task: {description}")),
            ],
            tools: vec![self.submit_plan_tool()],
            max_tokens: None,
            model: self.model.clone(),
            tool_choice: ToolChoice::Required,
        }
    }

    /// The conversation of a replan: the planner's own rules, then the goal, what completed
    /// (with its outputs, which new steps may build on by index), what failed and why, what
    /// did not run, and who failed the same work before.
    fn replan_chat(&self, request: &ReplanRequest) -> ChatRequest {
        let completed: Vec<_> = request.completed().collect();
        let kept = completed.len();
        let mut text = format!("Task: {}\n\nA step of the plan failed for good. ", request.goal.trim());
        text.push_str("Make a revised plan for the work that has not been done.\n\n");
        if completed.is_empty() {
            text.push_str("No step has completed.\n");
        } else {
            text.push_str("Completed steps (they stay; their outputs are available to new steps):\n");
            for (i, (step, output)) in completed.iter().enumerate() {
                let output = fit(output.trim(), MAX_OUTPUT_CHARS_SHOWN);
                text.push_str(&format!(
                    "[{i}] {} (agent {}): {}\n    Output: {output}\n",
                    step.title, step.agent, step.instruction
                ));
            }
        }
        text.push_str("\nFailed steps:\n");
        for (step, error) in request.failed() {
            text.push_str(&format!(
                "- {} (agent {}): {}\n    Error: {error}\n",
                step.title, step.agent, step.instruction
            ));
        }
        let not_run: Vec<_> = request.steps.iter().filter(|s| s.state == StepState::NotRun).collect();
        if !not_run.is_empty() {
            text.push_str("\nSteps that did not run (they needed a failed step):\n");
            for current in not_run {
                let step = &current.step;
                text.push_str(&format!("- {} (agent {}): {}\n", step.title, step.agent, step.instruction));
            }
        }
        if !request.earlier_failures.is_empty() {
            text.push_str("\nFailed in earlier versions of the plan:\n");
            for (instruction, agent) in &request.earlier_failures {
                text.push_str(&format!("- agent {agent}: {instruction}\n"));
            }
        }
        let numbering = match kept {
            0 => "indices count the steps you submit, from 0".to_owned(),
            _ => format!(
                "indices 0 to {} are the completed steps above and {kept} onwards are the steps you submit, in \
                 order (your first step is {kept})",
                kept - 1
            ),
        };
        text.push_str(&format!(
            "\nCall {SUBMIT_PLAN} with only the new steps that do the remaining work; do not repeat the \
             completed steps, and do not give failed work to an agent that already failed it. In \
             depends_on, {numbering}.\n"
        ));
        ChatRequest {
            messages: vec![ChatMessage::new(Role::System, self.system_prompt()), ChatMessage::new(Role::User, text)],
            tools: vec![self.submit_plan_tool()],
            max_tokens: None,
            model: self.model.clone(),
            tool_choice: ToolChoice::Required,
        }
    }

    fn system_prompt(&self) -> String {
        let agents: String =
            self.agents.iter().map(|(name, description)| format!("- {name}: {description}\n")).collect();
        format!(
            "You are the planner of a team of AI agents. Break the user's task into steps that the \
             agents carry out, and submit the plan by calling the {SUBMIT_PLAN} tool exactly once.\n\n\
             Agents:\n{agents}\n\
             Rules:\n\
             - Use 1 to {max_steps} steps; a simple task needs few.\n\
             - title: a short label, at most {MAX_TITLE_CHARS} characters.\n\
             - instruction: exactly what the agent must do, understandable on its own, at most \
             {max_chars} characters.\n\
             - agent: the name of one of the agents above.\n\
             - depends_on: the zero-based indices of the earlier steps whose output this step \
             needs. Steps that do not need each other's output must not depend on each other, so \
             they can run in parallel. Only depend on steps listed before this one.\n\
             - required (optional): true when the task is worthless without this step; its \
             failure then fails the task at once. Otherwise a failed step only stops the steps \
             that depend on it, and the others still deliver their part.\n",
            max_steps = self.limits.max_steps,
            max_chars = self.limits.max_instruction_chars,
        )
    }

    fn submit_plan_tool(&self) -> ToolDefinition {
        let names: Vec<&str> = self.agents.iter().map(|(name, _)| name.as_str()).collect();
        ToolDefinition {
            name: SUBMIT_PLAN.to_owned(),
            description: "Submit the plan for the task: its steps in order.".to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "steps": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": self.limits.max_steps,
                        "items": {
                            "type": "object",
                            "properties": {
                                "title": {"type": "string", "maxLength": MAX_TITLE_CHARS},
                                "instruction": {"type": "string", "maxLength": self.limits.max_instruction_chars},
                                "agent": {"type": "string", "enum": names},
                                "depends_on": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                                "required": {"type": "boolean"}
                            },
                            "required": ["title", "instruction", "agent", "depends_on"],
                            "additionalProperties": false
                        }
                    }
                },
                "required": ["steps"],
                "additionalProperties": false
            }),
        }
    }

    /// The plan in the model's answer, or what is wrong with its form (worded for the model);
    /// the caller validates it.
    fn read_plan(&self, response: &ChatResponse) -> Result<Plan, String> {
        let arguments = match response.tool_calls.iter().find(|c| c.name == SUBMIT_PLAN) {
            Some(call) => call.arguments.clone(),
            // Second chance for models that write the plan as text instead of calling the tool.
            None => response
                .content
                .as_deref()
                .and_then(json_object_in)
                .ok_or_else(|| format!("the answer contains no plan; call the {SUBMIT_PLAN} tool with the plan"))?,
        };
        if let Value::String(raw) = &arguments {
            return Err(format!("the {SUBMIT_PLAN} arguments are not valid JSON: {raw}"));
        }
        let submitted: SubmittedPlan = serde_json::from_value(arguments)
            .map_err(|e| format!("the plan does not match the {SUBMIT_PLAN} schema: {e}"))?;
        Ok(Plan { steps: submitted.steps.into_iter().map(SubmittedStep::into_step).collect() })
    }
}

#[async_trait::async_trait]
impl Planner for LlmPlanner {
    fn version(&self) -> &str {
        LLM_PLANNER_VERSION
    }

    /// Plans without reporting the model calls; see [`LlmPlanner::plan_with_usage`].
    async fn plan(&self, description: &str) -> Result<Plan, PlanError> {
        self.plan_with_usage(description).await.plan
    }

    /// Replans without reporting the model calls; see [`LlmPlanner::replan_with_usage`].
    async fn replan(&self, request: &ReplanRequest) -> Result<Option<Revision>, PlanError> {
        self.replan_with_usage(request).await.revision
    }
}

/// How the planning loop asks its model: directly, or through a [`BudgetedModel`].
#[async_trait::async_trait]
trait PlanModel: Sync {
    /// What stops planning; `Infallible` when nothing can.
    type Halt: Send;

    fn provider(&self) -> &str;

    async fn ask(&self, request: &ChatRequest) -> Result<ChatResponse, Failure<Self::Halt>>;
}

/// Why the planning loop got no answer.
enum Failure<H> {
    /// The model failed: plan with the fallback.
    Model(LlmError),
    /// Stop planning.
    Halt(H),
}

/// The model as it is, for [`LlmPlanner::plan_with_usage`].
struct Plain<'a>(&'a dyn LlmClient);

#[async_trait::async_trait]
impl PlanModel for Plain<'_> {
    type Halt = Infallible;

    fn provider(&self) -> &str {
        self.0.provider()
    }

    async fn ask(&self, request: &ChatRequest) -> Result<ChatResponse, Failure<Infallible>> {
        self.0.chat(request).await.map_err(Failure::Model)
    }
}

/// The model under a budget, for [`LlmPlanner::plan_within`].
struct Budgeted<'a> {
    model: BudgetedModel<'a>,
    recorder: &'a dyn CallRecorder,
}

#[async_trait::async_trait]
impl PlanModel for Budgeted<'_> {
    type Halt = Halt;

    fn provider(&self) -> &str {
        self.model.llm.provider()
    }

    async fn ask(&self, request: &ChatRequest) -> Result<ChatResponse, Failure<Halt>> {
        match self.model.call(request.clone(), self.recorder).await {
            Ok(answered) => Ok(answered.response),
            Err(CallError::Model(e)) => Err(Failure::Model(e)),
            Err(CallError::Halted(halt)) => Err(Failure::Halt(halt)),
        }
    }
}

#[derive(Deserialize)]
struct SubmittedPlan {
    steps: Vec<SubmittedStep>,
}

#[derive(Deserialize)]
struct SubmittedStep {
    #[serde(default)]
    title: String,
    instruction: String,
    agent: String,
    #[serde(default)]
    depends_on: Vec<usize>,
    #[serde(default)]
    required: bool,
}

impl SubmittedStep {
    /// The step with its text tidied: a missing title is made from the instruction, an
    /// over-long one is shortened the way the heuristic planner shortens titles.
    fn into_step(self) -> PlannedStep {
        let instruction = self.instruction.trim().to_owned();
        let title = self.title.trim();
        let title = if title.is_empty() {
            make_title(&instruction)
        } else if title.chars().count() > MAX_TITLE_CHARS {
            make_title(title)
        } else {
            title.to_owned()
        };
        PlannedStep {
            title,
            instruction,
            agent: self.agent.trim().to_owned(),
            depends_on: self.depends_on,
            required: self.required,
        }
    }
}

/// Tells the model why its answer was refused. Tool calls get a tool result each, because
/// providers require every call to be answered before the conversation goes on.
fn push_feedback(request: &mut ChatRequest, response: ChatResponse, reason: &str) {
    let retry = format!("Fix it and call {SUBMIT_PLAN} again with the whole corrected plan.");
    let calls = response.tool_calls;
    let answers: Vec<ChatMessage> = calls
        .iter()
        .map(|call| {
            let text = if call.name == SUBMIT_PLAN {
                format!("Rejected: {reason}. {retry}")
            } else {
                format!("Unknown tool `{}`. {retry}", call.name)
            };
            ChatMessage::tool_result(&call.id, text)
        })
        .collect();
    let answered_with_tools = !answers.is_empty();
    request.messages.push(ChatMessage {
        role: Role::Assistant,
        content: response.content.unwrap_or_default(),
        tool_calls: calls,
        tool_call_id: None,
    });
    request.messages.extend(answers);
    if !answered_with_tools {
        request.messages.push(ChatMessage::new(Role::User, format!("Your answer was not accepted: {reason}. {retry}")));
    }
}

/// The JSON object in a text answer: the whole text, a fenced block, or the span from the
/// first `{` to the last `}`.
fn json_object_in(text: &str) -> Option<Value> {
    let text = text.trim();
    let unfenced = text
        .strip_prefix("```json")
        .or_else(|| text.strip_prefix("```"))
        .and_then(|rest| rest.trim_end().strip_suffix("```"))
        .unwrap_or(text);
    let parse = |candidate: &str| serde_json::from_str::<Value>(candidate).ok().filter(Value::is_object);
    parse(unfenced).or_else(|| {
        let start = text.find('{')?;
        let end = text.rfind('}')?;
        (start < end).then(|| parse(&text[start..=end])).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_json_objects_in_text_answers() {
        assert_eq!(json_object_in(r#"{"steps": []}"#), Some(json!({"steps": []})));
        assert_eq!(json_object_in("```json\n{\"steps\": []}\n```"), Some(json!({"steps": []})));
        assert_eq!(json_object_in("Here is the plan: {\"steps\": []} Done."), Some(json!({"steps": []})));
        assert_eq!(json_object_in("no plan here"), None);
        assert_eq!(json_object_in("[1, 2]"), None);
    }

    #[test]
    fn titles_are_made_or_shortened() {
        let step = |title: &str| SubmittedStep {
            title: title.into(),
            instruction: "  research the market for electric bikes  ".into(),
            agent: " researcher ".into(),
            depends_on: vec![],
            required: false,
        };
        let made = step("").into_step();
        assert_eq!(made.title, "Research the market for electric bikes");
        assert_eq!(
            (made.instruction.as_str(), made.agent.as_str()),
            ("research the market for electric bikes", "researcher")
        );
        let long = "word ".repeat(30);
        let shortened = step(&long).into_step();
        assert_eq!(shortened.title, make_title(&long));
        assert!(shortened.title.chars().count() <= MAX_TITLE_CHARS);
    }
}
