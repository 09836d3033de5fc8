//! The LLM planner: structured plans accepted, invalid plans sent back once, then the
//! heuristic fallback; every answered model call reported with its usage.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use agents::llm::{ChatRequest, ChatResponse, LlmClient, LlmError, Role, ToolCall, ToolChoice, Usage};
use planner::{HeuristicPlanner, LlmPlanner, Plan, PlanError, PlanLimits, PlannedStep, Planner};
use serde_json::{Value, json};

/// A model that answers from a script and records what it was asked.
struct ScriptedModel {
    answers: Mutex<VecDeque<Result<ChatResponse, LlmError>>>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl ScriptedModel {
    fn new(answers: Vec<Result<ChatResponse, LlmError>>) -> Arc<Self> {
        Arc::new(Self { answers: Mutex::new(answers.into()), requests: Mutex::default() })
    }

    fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().expect("lock").clone()
    }
}

#[async_trait::async_trait]
impl LlmClient for ScriptedModel {
    fn provider(&self) -> &str {
        "scripted"
    }

    fn model(&self) -> &str {
        "scripted-1"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.requests.lock().expect("lock").push(request.clone());
        self.answers
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or_else(|| Err(LlmError::Unavailable("script exhausted".into())))
    }
}

const TASK: &str = "Compare three electric bikes and write a buying guide";

fn usage(prompt: u64) -> Usage {
    Usage { prompt_tokens: prompt, completion_tokens: 50, cached_tokens: 0 }
}

fn submit(id: &str, plan: Value, prompt_tokens: u64) -> Result<ChatResponse, LlmError> {
    Ok(ChatResponse {
        content: None,
        tool_calls: vec![ToolCall { id: id.into(), name: "submit_plan".into(), arguments: plan }],
        usage: usage(prompt_tokens),
        model: "scripted-1-2025".into(),
    })
}

fn step(title: &str, agent: &str, depends_on: &[usize]) -> Value {
    json!({"title": title, "instruction": format!("{title} for the task"), "agent": agent, "depends_on": depends_on})
}

/// Steps 1 and 2 both depend only on step 0: two branches that can run in parallel.
fn branching_plan() -> Value {
    json!({"steps": [
        step("Research the bikes", "researcher", &[]),
        step("Analyse the trade-offs", "analyst", &[0]),
        step("Draft the guide", "writer", &[0]),
    ]})
}

fn agents() -> Vec<(String, String)> {
    [
        ("researcher", "Finds and gathers information relevant to the task."),
        ("analyst", "Analyses requirements, data and options."),
        ("writer", "Writes, summarises and documents results for people."),
    ]
    .into_iter()
    .map(|(n, d)| (n.to_owned(), d.to_owned()))
    .collect()
}

fn planner(model: &Arc<ScriptedModel>) -> LlmPlanner {
    LlmPlanner::new(model.clone(), agents(), PlanLimits::default(), HeuristicPlanner::new(PlanLimits::default()))
}

fn expected_branching_plan() -> Plan {
    let step = |title: &str, agent: &str, depends_on: Vec<usize>| PlannedStep {
        title: title.into(),
        instruction: format!("{title} for the task"),
        agent: agent.into(),
        depends_on,
        required: false,
    };
    Plan {
        steps: vec![
            step("Research the bikes", "researcher", vec![]),
            step("Analyse the trade-offs", "analyst", vec![0]),
            step("Draft the guide", "writer", vec![0]),
        ],
    }
}

#[tokio::test]
async fn a_valid_branching_plan_is_accepted_and_its_call_reported() {
    let model = ScriptedModel::new(vec![submit("call-1", branching_plan(), 900)]);

    let outcome = planner(&model).plan_with_usage(TASK).await;

    assert_eq!(outcome.plan, Ok(expected_branching_plan()));
    assert!(!outcome.used_fallback());
    assert_eq!(outcome.calls.len(), 1);
    assert_eq!(outcome.calls[0].usage, usage(900));
    assert_eq!((outcome.calls[0].provider.as_str(), outcome.calls[0].model.as_str()), ("scripted", "scripted-1-2025"));

    let requests = model.requests();
    let request = &requests[0];
    assert_eq!(request.tool_choice, ToolChoice::Required);
    assert_eq!(request.tools.len(), 1);
    let schema = &request.tools[0].parameters;
    assert_eq!(request.tools[0].name, "submit_plan");
    assert_eq!(
        schema["properties"]["steps"]["items"]["properties"]["agent"]["enum"],
        json!(["researcher", "analyst", "writer"])
    );
    assert_eq!(schema["properties"]["steps"]["items"]["properties"]["depends_on"]["items"]["type"], "integer");
    let system = &request.messages[0];
    assert_eq!(system.role, Role::System);
    assert!(system.content.contains("- analyst: Analyses requirements, data and options."), "{}", system.content);
    assert!(request.messages[1].content.contains(TASK));
}

async fn rejected_then_fixed(bad_plan: Value, expected_error: &str) {
    let model = ScriptedModel::new(vec![submit("call-1", bad_plan, 900), submit("call-2", branching_plan(), 1400)]);

    let outcome = planner(&model).plan_with_usage(TASK).await;

    assert_eq!(outcome.plan, Ok(expected_branching_plan()));
    assert!(!outcome.used_fallback());
    assert_eq!(outcome.calls.iter().map(|c| c.usage).collect::<Vec<_>>(), vec![usage(900), usage(1400)]);
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let feedback = requests[1].messages.last().expect("feedback message");
    assert_eq!(feedback.role, Role::Tool);
    assert_eq!(feedback.tool_call_id.as_deref(), Some("call-1"));
    assert!(feedback.content.contains(expected_error), "{}", feedback.content);
    let asked = &requests[1].messages[requests[1].messages.len() - 2];
    assert_eq!(asked.role, Role::Assistant);
    assert_eq!(asked.tool_calls[0].id, "call-1", "the rejected call stays in the conversation");
}

#[tokio::test]
async fn an_unknown_agent_is_sent_back_once_then_the_fixed_plan_accepted() {
    let bad = json!({"steps": [step("Research", "researcher", &[]), step("Predict", "astrologer", &[0])]});
    rejected_then_fixed(bad, "step 1: unknown agent \"astrologer\"").await;
}

#[tokio::test]
async fn a_cycle_is_sent_back_once_then_the_fixed_plan_accepted() {
    let bad = json!({"steps": [step("A", "researcher", &[1]), step("B", "analyst", &[0])]});
    rejected_then_fixed(bad, "step 0 is part of a dependency cycle").await;
}

#[tokio::test]
async fn two_invalid_plans_fall_back_to_the_heuristic_planner() {
    let cyclic = json!({"steps": [step("A", "researcher", &[1]), step("B", "analyst", &[0])]});
    let model = ScriptedModel::new(vec![submit("call-1", cyclic.clone(), 900), submit("call-2", cyclic, 1400)]);

    let outcome = planner(&model).plan_with_usage(TASK).await;

    let heuristic = HeuristicPlanner::new(PlanLimits::default()).plan_description(TASK);
    assert_eq!(outcome.plan, heuristic);
    assert!(outcome.used_fallback());
    assert!(outcome.fallback_reason.as_deref().is_some_and(|r| r.contains("cycle")), "{:?}", outcome.fallback_reason);
    assert_eq!(outcome.calls.len(), 2, "both answered calls are accounted for");
    assert_eq!(model.requests().len(), 2, "the model is asked at most twice");
}

#[tokio::test]
async fn a_failing_model_falls_back_without_reporting_calls() {
    let model = ScriptedModel::new(vec![Err(LlmError::Timeout)]);

    let outcome = planner(&model).plan_with_usage(TASK).await;

    assert!(outcome.used_fallback());
    assert!(outcome.plan.is_ok());
    assert!(outcome.calls.is_empty());
    assert_eq!(model.requests().len(), 1, "a failed call is not repeated: the client already retried");
}

#[tokio::test]
async fn a_plan_written_as_text_is_accepted() {
    let text = format!("Here is the plan:\n```json\n{}\n```", branching_plan());
    let model = ScriptedModel::new(vec![Ok(ChatResponse {
        content: Some(text),
        tool_calls: vec![],
        usage: usage(700),
        model: "scripted-1".into(),
    })]);

    let outcome = planner(&model).plan_with_usage(TASK).await;

    assert_eq!(outcome.plan, Ok(expected_branching_plan()));
}

#[tokio::test]
async fn a_text_answer_without_a_plan_is_answered_with_a_user_message() {
    let chatty = Ok(ChatResponse {
        content: Some("I think we should research first.".into()),
        tool_calls: vec![],
        usage: usage(700),
        model: "scripted-1".into(),
    });
    let model = ScriptedModel::new(vec![chatty, submit("call-2", branching_plan(), 900)]);

    let outcome = planner(&model).plan_with_usage(TASK).await;

    assert_eq!(outcome.plan, Ok(expected_branching_plan()));
    let requests = model.requests();
    let feedback = requests[1].messages.last().expect("feedback");
    assert_eq!(feedback.role, Role::User);
    assert!(feedback.content.contains("no plan"), "{}", feedback.content);
}

#[tokio::test]
async fn the_planner_trait_reports_its_version_and_plans() {
    let model = ScriptedModel::new(vec![submit("call-1", branching_plan(), 900)]);
    let planner = planner(&model);

    assert_eq!(planner.version(), "llm-1");
    assert_eq!(planner.plan(TASK).await, Ok(expected_branching_plan()));
    assert_eq!(planner.plan("   ").await, Err(PlanError::EmptyDescription));
    assert_eq!(model.requests().len(), 1, "a blank description asks no model");
}
