//! Tests of the loop with scripted in-process models and the real built-in tools.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};

use super::*;
use crate::{
    AgentCatalog,
    approval::DecidedCall,
    llm::{OfflineModel, ToolCall},
    tools::{ToolSettings, builtin_tools},
};

#[derive(Default)]
struct Log {
    llm: Mutex<Vec<LlmCallRecord>>,
    tools: Mutex<Vec<ToolCallRecord>>,
    checkpoints: Mutex<Vec<Checkpoint>>,
}

#[async_trait::async_trait]
impl RunRecorder for Log {
    async fn model_call(&self, call: LlmCallRecord, checkpoint: &Checkpoint) -> Result<(), RecordError> {
        self.llm.lock().unwrap().push(call);
        self.checkpoints.lock().unwrap().push(checkpoint.clone());
        Ok(())
    }
    async fn tool_call(&self, call: ToolCallRecord, checkpoint: &Checkpoint) -> Result<(), RecordError> {
        self.tools.lock().unwrap().push(call);
        self.checkpoints.lock().unwrap().push(checkpoint.clone());
        Ok(())
    }
}

impl Log {
    fn tools(&self) -> Vec<ToolCallRecord> {
        self.tools.lock().unwrap().clone()
    }
    fn checkpoints(&self) -> Vec<Checkpoint> {
        self.checkpoints.lock().unwrap().clone()
    }
    /// The step's messages as the host stores them: the last checkpoint's transcript.
    fn messages(&self) -> Vec<ChatMessage> {
        self.checkpoints().last().map(|c| c.transcript.clone()).unwrap_or_default()
    }
}

const SUMMARY: &str = "Computed 1+1 = 2 with the calculator.";

/// Answers agent turns from a script, in order, and summarisation requests with
/// [`SUMMARY`]; remembers every request. Optionally cancels a token when first called.
#[derive(Default)]
struct Scripted {
    turns: Mutex<VecDeque<ChatResponse>>,
    seen: Mutex<Vec<ChatRequest>>,
    cancel_when_called: Option<CancellationToken>,
}

impl Scripted {
    fn new(turns: impl IntoIterator<Item = ChatResponse>) -> Self {
        Self { turns: Mutex::new(turns.into_iter().collect()), ..Self::default() }
    }
    fn seen(&self) -> Vec<ChatRequest> {
        self.seen.lock().unwrap().clone()
    }
    fn agent_requests(&self) -> Vec<ChatRequest> {
        self.seen().into_iter().filter(|r| !is_summary_request(r)).collect()
    }
}

fn is_summary_request(request: &ChatRequest) -> bool {
    request.messages[0].content == prompt::SUMMARY_SYSTEM_PROMPT
}

fn usage() -> Usage {
    Usage { prompt_tokens: 10, completion_tokens: 2, cached_tokens: 0 }
}

#[async_trait::async_trait]
impl LlmClient for Scripted {
    fn provider(&self) -> &str {
        "scripted"
    }
    fn model(&self) -> &str {
        "scripted-1"
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.seen.lock().unwrap().push(request.clone());
        if let Some(token) = &self.cancel_when_called {
            token.cancel();
        }
        if is_summary_request(request) {
            return Ok(ChatResponse {
                content: Some(SUMMARY.into()),
                tool_calls: Vec::new(),
                usage: usage(),
                model: "scripted-1".into(),
            });
        }
        self.turns.lock().unwrap().pop_front().ok_or_else(|| LlmError::InvalidResponse("the script is over".into()))
    }
}

fn calls(calls: &[(&str, &str, Value)]) -> ChatResponse {
    ChatResponse {
        content: None,
        tool_calls: calls
            .iter()
            .map(|(id, name, arguments)| ToolCall {
                id: (*id).into(),
                name: (*name).into(),
                arguments: arguments.clone(),
            })
            .collect(),
        usage: usage(),
        model: "scripted-1".into(),
    }
}

fn answer(text: &str) -> ChatResponse {
    ChatResponse { content: Some(text.into()), tool_calls: Vec::new(), usage: usage(), model: "scripted-1".into() }
}

fn runner(llm: Arc<dyn LlmClient>, settings: LoopSettings) -> AgentRunner {
    let tools = builtin_tools(&ToolSettings::default(), None).unwrap();
    AgentRunner::new(llm, Arc::new(PriceTable::builtin()), Arc::new(tools), settings)
}

fn spec(name: &str) -> AgentSpec {
    AgentCatalog::builtin().get(name).unwrap().clone()
}

/// The parts of a [`StepInput`] a test owns.
struct Step {
    deps: Vec<(String, String)>,
    memories: Vec<String>,
    history: Vec<ChatMessage>,
    cancel: CancellationToken,
}

impl Step {
    fn new() -> Self {
        Self { deps: Vec::new(), memories: Vec::new(), history: Vec::new(), cancel: CancellationToken::new() }
    }
    fn input(&self) -> StepInput<'_> {
        StepInput {
            task_id: Uuid::from_u128(1),
            step_id: Uuid::from_u128(2),
            owner: "alice",
            task_description: "Ship it",
            step_title: "Build",
            instruction: "Build the API",
            dependency_outputs: &self.deps,
            memories: &self.memories,
            history: &self.history,
            cancel: &self.cancel,
            budget: &Unlimited,
            resume: None,
            warm: None,
            approvals: ApprovalPolicy::default(),
        }
    }
}

fn tool_replies(request: &ChatRequest) -> Vec<&ChatMessage> {
    request.messages.iter().filter(|m| m.role == Role::Tool).collect()
}

#[tokio::test]
async fn offline_step_records_one_model_call() {
    let runner = runner(Arc::new(OfflineModel::default()), LoopSettings::default());
    let mut step = Step::new();
    step.deps = vec![("Plan".to_owned(), "the plan".to_owned())];
    let log = Log::default();
    let out = runner.run(&spec("engineer"), &step.input(), &log).await.unwrap();
    assert_eq!(out.model_calls, 1);
    assert!(out.text.contains("Build"), "{}", out.text);
    let calls = log.llm.lock().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].usage, out.usage);
    assert_eq!(calls[0].provider, "offline");
}

#[tokio::test]
async fn a_calculator_result_is_fed_back_before_the_final_answer() {
    let model = Arc::new(Scripted::new([calls(&[("c1", "calculator", json!({"expression": "6 * 7"}))]), answer("42")]));
    let log = Log::default();
    let out = runner(model.clone(), LoopSettings::default()).run(&spec("analyst"), &Step::new().input(), &log).await;
    let out = out.unwrap();
    assert_eq!((out.text.as_str(), out.model_calls, out.tool_calls), ("42", 2, 1));
    assert_eq!(out.usage.prompt_tokens, 20);

    let tools = log.tools();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].status, ToolCallStatus::Ok);
    assert_eq!(tools[0].result, Some(json!({"expression": "6 * 7", "result": 42})));

    let requests = model.seen();
    // memory_search is allowed for the analyst but not registered here: not offered.
    let offered: Vec<&str> = requests[0].tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(offered, ["calculator", "json_extract", "current_time"]);
    let replies = tool_replies(&requests[1]);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].tool_call_id.as_deref(), Some("c1"));
    assert_eq!(serde_json::from_str::<Value>(&replies[0].content).unwrap()["result"], json!(42));
}

#[tokio::test]
async fn invalid_arguments_are_rejected_with_a_reason_the_model_can_act_on() {
    let model = Arc::new(Scripted::new([
        calls(&[("c1", "calculator", json!({})), ("c2", "calculator", json!({"expression": 12}))]),
        calls(&[("c3", "calculator", json!({"expression": "1 + 1"}))]),
        answer("2"),
    ]));
    let log = Log::default();
    let out = runner(model.clone(), LoopSettings::default()).run(&spec("analyst"), &Step::new().input(), &log).await;
    assert_eq!(out.unwrap().text, "2");

    let tools = log.tools();
    let statuses: Vec<_> = tools.iter().map(|t| t.status).collect();
    assert_eq!(statuses, [ToolCallStatus::Rejected, ToolCallStatus::Rejected, ToolCallStatus::Ok]);
    let missing = tools[0].error.as_deref().unwrap();
    assert!(missing.contains("\"expression\" is a required property"), "{missing}");
    let wrong_type = tools[1].error.as_deref().unwrap();
    assert!(wrong_type.contains("/expression: 12 is not of type \"string\""), "{wrong_type}");

    let second = &model.seen()[1];
    let replies = tool_replies(second);
    assert!(replies[0].content.contains("is a required property"), "{}", replies[0].content);
    assert!(replies[1].content.contains("/expression"), "{}", replies[1].content);
    assert_eq!(tools[2].result.as_ref().unwrap()["result"], json!(2));
}

#[tokio::test]
async fn a_tool_the_agent_may_not_use_is_rejected() {
    let model = Arc::new(Scripted::new([calls(&[("c1", "calculator", json!({"expression": "1"}))]), answer("ok")]));
    let log = Log::default();
    // The writer may use memory_search and current_time only.
    runner(model.clone(), LoopSettings::default()).run(&spec("writer"), &Step::new().input(), &log).await.unwrap();
    let tools = log.tools();
    assert_eq!(tools[0].status, ToolCallStatus::Rejected);
    assert!(tools[0].error.as_deref().unwrap().contains("not allowed for this agent"));
    let seen = model.seen();
    let reply = &tool_replies(&seen[1])[0].content;
    assert!(reply.contains("tools you may call: current_time"), "{reply}");
}

#[tokio::test]
async fn an_unknown_tool_is_rejected() {
    let model = Arc::new(Scripted::new([calls(&[("c1", "shell", json!({"cmd": "ls"}))]), answer("ok")]));
    let log = Log::default();
    runner(model, LoopSettings::default()).run(&spec("engineer"), &Step::new().input(), &log).await.unwrap();
    let tools = log.tools();
    assert_eq!((tools[0].tool.as_str(), tools[0].status), ("shell", ToolCallStatus::Rejected));
    assert!(tools[0].error.as_deref().unwrap().contains("unknown tool `shell`"));
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
        let id = format!("call-{}", request.messages.len());
        Ok(calls(&[(id.as_str(), "calculator", json!({"expression": "1+1"}))]))
    }
}

#[tokio::test]
async fn the_iteration_limit_ends_a_step_that_never_answers() {
    let mut analyst = spec("analyst");
    analyst.max_iterations = 3;
    let log = Log::default();
    let no_summary = LoopSettings { summarize_every: 0, keep_recent: 0, yield_after_turns: 0 };
    let err = runner(Arc::new(ToolHungry), no_summary).run(&analyst, &Step::new().input(), &log).await.unwrap_err();
    assert!(matches!(err, AgentError::IterationLimit(3)), "{err}");
    assert!(err.to_string().contains("within 3 model calls"), "{err}");
    assert_eq!(log.llm.lock().unwrap().len(), 3);
    assert_eq!(log.tools().len(), 3);
}

#[tokio::test]
async fn older_turns_are_summarised_every_n_tool_calls_keeping_pairs_intact() {
    let model = Arc::new(Scripted::new([
        calls(&[("c1", "calculator", json!({"expression": "1 + 1"}))]),
        calls(&[("c2", "calculator", json!({"expression": "2 + 2"})), ("c3", "current_time", json!({}))]),
        calls(&[("c4", "calculator", json!({"expression": "3 + 3"}))]),
        answer("done"),
    ]));
    let log = Log::default();
    let settings = LoopSettings { summarize_every: 3, keep_recent: 1, yield_after_turns: 0 };
    let out = runner(model.clone(), settings).run(&spec("analyst"), &Step::new().input(), &log).await.unwrap();
    // Four turns and one summary, all recorded.
    assert_eq!(out.model_calls, 5);
    assert_eq!(log.llm.lock().unwrap().len(), 5);

    let seen = model.seen();
    let summary_requests: Vec<&ChatRequest> = seen.iter().filter(|r| is_summary_request(r)).collect();
    assert_eq!(summary_requests.len(), 1, "three tool calls since the start, then one more: one summary");
    let summarised = &summary_requests[0].messages[1].content;
    assert!(summarised.contains("{\"expression\":\"1 + 1\"}"), "{summarised}");
    assert!(summarised.contains("\"result\":2"), "{summarised}");
    assert!(summary_requests[0].tools.is_empty());

    // After three tool calls: keep_recent = 1 falls on a reply of the second turn's batch,
    // so the whole batch (assistant + both replies) is kept and only the first turn goes.
    let third = &model.agent_requests()[2];
    let roles: Vec<Role> = third.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::Assistant, Role::Tool, Role::Tool]);
    assert!(third.messages[2].content.contains(SUMMARY));
    assert_eq!(third.messages[3].tool_calls.len(), 2);
    assert!(third.messages[1].content.starts_with("Task: Ship it\nStep: Build\n"));
    for request in model.seen() {
        assert!(compress::pairs_intact(&request.messages), "{:#?}", request.messages);
    }
    let recorded = log.messages();
    assert!(recorded.iter().any(|m| m.role == Role::Assistant && m.content.contains(SUMMARY)));
}

#[tokio::test]
async fn a_cancelled_step_makes_no_model_call() {
    let model = Arc::new(Scripted::new([answer("never")]));
    let step = Step::new();
    step.cancel.cancel();
    let log = Log::default();
    let err = runner(model.clone(), LoopSettings::default()).run(&spec("analyst"), &step.input(), &log).await;
    assert!(matches!(err, Err(AgentError::Cancelled)), "{err:?}");
    assert!(model.seen().is_empty());
    assert!(log.llm.lock().unwrap().is_empty());
}

#[tokio::test]
async fn cancellation_during_a_model_call_stops_before_the_tool_runs() {
    let step = Step::new();
    let model = Arc::new(Scripted {
        cancel_when_called: Some(step.cancel.clone()),
        ..Scripted::new([calls(&[("c1", "calculator", json!({"expression": "1"}))])])
    });
    let log = Log::default();
    let err = runner(model, LoopSettings::default()).run(&spec("analyst"), &step.input(), &log).await;
    assert!(matches!(err, Err(AgentError::Cancelled)), "{err:?}");
    // The model call happened and is accounted; the tool never ran.
    assert_eq!(log.llm.lock().unwrap().len(), 1);
    assert!(log.tools().is_empty());
}

#[tokio::test]
async fn every_message_is_recorded_in_order() {
    let model = Arc::new(Scripted::new([calls(&[("c1", "calculator", json!({"expression": "6 * 7"}))]), answer("42")]));
    let log = Log::default();
    runner(model, LoopSettings::default()).run(&spec("analyst"), &Step::new().input(), &log).await.unwrap();
    let messages = log.messages();
    let roles: Vec<Role> = messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::Assistant]);
    assert!(messages[0].content.starts_with("Task: Ship it\nStep: Build\nInstruction: Build the API\n"));
    assert_eq!(messages[1].tool_calls[0].id, "c1");
    assert_eq!(messages[2].tool_call_id.as_deref(), Some("c1"));
    assert!(messages[2].content.contains("\"result\":42"));
    assert_eq!(messages[3].content, "42");
}

/// Four turns: three calculator calls, then the answer.
fn four_turns() -> Vec<ChatResponse> {
    vec![
        calls(&[("c1", "calculator", json!({"expression": "1 + 1"}))]),
        calls(&[("c2", "calculator", json!({"expression": "2 + 2"}))]),
        calls(&[("c3", "calculator", json!({"expression": "3 + 3"}))]),
        answer("6"),
    ]
}

#[tokio::test]
async fn every_call_is_recorded_with_the_checkpoint_that_includes_it() {
    let model = Arc::new(Scripted::new(four_turns()));
    let log = Log::default();
    runner(model, LoopSettings::default()).run(&spec("analyst"), &Step::new().input(), &log).await.unwrap();
    // turn, tool, turn, tool, turn, tool, answer
    let checkpoints = log.checkpoints();
    assert_eq!(checkpoints.len(), 7);
    let counts: Vec<(u32, u32)> = checkpoints.iter().map(|c| (c.model_calls, c.tool_calls)).collect();
    assert_eq!(counts, [(1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3), (4, 3)]);
    assert_eq!(checkpoints[6].final_answer(), Some("6"));
    assert!(checkpoints[0].prompt.starts_with("Task: Ship it\nStep: Build\n"));
}

#[tokio::test]
async fn a_step_resumed_from_a_checkpoint_repeats_no_recorded_call() {
    // The first attempt dies after its second turn's tool call was recorded.
    let first = Log::default();
    let model = Arc::new(Scripted::new(four_turns()));
    runner(model, LoopSettings::default()).run(&spec("analyst"), &Step::new().input(), &first).await.unwrap();
    let died_at = first.checkpoints()[3].clone();
    assert_eq!((died_at.model_calls, died_at.tool_calls), (2, 2));

    // The next attempt gets only the turns that were not recorded.
    let model = Arc::new(Scripted::new(four_turns().split_off(2)));
    let second = Log::default();
    let step = Step::new();
    let input = StepInput { resume: Some(&died_at), ..step.input() };
    let out = runner(model.clone(), LoopSettings::default()).run(&spec("analyst"), &input, &second).await.unwrap();
    assert_eq!(out.text, "6");
    assert_eq!((out.model_calls, out.tool_calls), (4, 3), "the accounts carry over");
    assert_eq!(out.usage.prompt_tokens, 40);
    assert_eq!(model.seen().len(), 2, "two model calls, not four");
    let tools: Vec<Value> = second.tools().into_iter().map(|t| t.arguments).collect();
    assert_eq!(tools, [json!({"expression": "3 + 3"})], "only the third tool call ran");
    // The model continued the same conversation: the prompt and both earlier replies.
    let resumed = &model.seen()[0];
    assert_eq!(resumed.messages[1].content, died_at.prompt);
    assert_eq!(tool_replies(resumed).len(), 2);
    // The step's messages are complete, each once.
    let roles: Vec<Role> = second.messages().iter().map(|m| m.role).collect();
    assert_eq!(roles.iter().filter(|r| **r == Role::Tool).count(), 3);
    assert_eq!(roles.first(), Some(&Role::User));
    assert_eq!(roles.len(), 8);
}

#[tokio::test]
async fn a_step_resumed_between_a_turn_and_its_tool_calls_runs_the_calls_first() {
    let first = Log::default();
    let model = Arc::new(Scripted::new(four_turns()));
    runner(model, LoopSettings::default()).run(&spec("analyst"), &Step::new().input(), &first).await.unwrap();
    // Recorded: the second turn, not yet its tool call.
    let died_at = first.checkpoints()[2].clone();
    assert_eq!(died_at.unanswered_calls().len(), 1);

    let model = Arc::new(Scripted::new(four_turns().split_off(2)));
    let second = Log::default();
    let step = Step::new();
    let input = StepInput { resume: Some(&died_at), ..step.input() };
    runner(model.clone(), LoopSettings::default()).run(&spec("analyst"), &input, &second).await.unwrap();
    let ran: Vec<Value> = second.tools().into_iter().map(|t| t.arguments).collect();
    assert_eq!(ran, [json!({"expression": "2 + 2"}), json!({"expression": "3 + 3"})]);
    assert_eq!(model.seen().len(), 2);

    // And a step whose final answer was recorded ends without calling anything.
    let done = first.checkpoints().last().unwrap().clone();
    let model = Arc::new(Scripted::new([]));
    let input = StepInput { resume: Some(&done), ..step.input() };
    let out = runner(model.clone(), LoopSettings::default()).run(&spec("analyst"), &input, &Log::default()).await;
    assert_eq!(out.unwrap().text, "6");
    assert!(model.seen().is_empty());
}

#[tokio::test]
async fn a_resumed_step_keeps_its_summary_instead_of_the_history() {
    let mut step = Step::new();
    step.history = vec![ChatMessage::new(Role::User, "earlier context"), ChatMessage::new(Role::Assistant, "noted")];
    let model = Arc::new(Scripted::new(four_turns()));
    let first = Log::default();
    let settings = LoopSettings { summarize_every: 2, keep_recent: 1, yield_after_turns: 0 };
    runner(model, settings).run(&spec("analyst"), &step.input(), &first).await.unwrap();
    let summarised = first.checkpoints().into_iter().find(|c| c.summarised).expect("a summary was made");
    assert!(summarised.work[0].content.contains(SUMMARY));

    let model = Arc::new(Scripted::new([answer("6")]));
    let input = StepInput { resume: Some(&summarised), ..step.input() };
    runner(model.clone(), settings).run(&spec("analyst"), &input, &Log::default()).await.unwrap();
    let request = &model.agent_requests()[0];
    assert!(request.messages.iter().all(|m| m.content != "earlier context"), "the summary replaced the history");
    assert!(request.messages.iter().any(|m| m.content.contains(SUMMARY)));
}

#[tokio::test]
async fn history_memories_and_the_model_override_reach_the_model() {
    let model = Arc::new(Scripted::new([answer("ok")]));
    let mut step = Step::new();
    step.memories = vec!["Alice deploys on Fridays".into()];
    step.history = vec![
        ChatMessage::new(Role::System, "an old system prompt"),
        ChatMessage::new(Role::User, "Use Postgres."),
        ChatMessage::new(Role::Assistant, "Noted."),
    ];
    let mut analyst = spec("analyst");
    analyst.model = Some("gpt-4o-mini".into());
    let log = Log::default();
    runner(model.clone(), LoopSettings::default()).run(&analyst, &step.input(), &log).await.unwrap();

    let request = &model.seen()[0];
    assert_eq!(request.model.as_deref(), Some("gpt-4o-mini"));
    let contents: Vec<&str> = request.messages.iter().map(|m| m.content.as_str()).collect();
    assert!(contents[0].starts_with("You are the analyst agent"));
    assert_eq!(contents[1..3], ["Use Postgres.", "Noted."]);
    assert!(contents[3].contains("Relevant long-term memories:\n- Alice deploys on Fridays"), "{}", contents[3]);
    assert_eq!(contents.len(), 4);
    // The history is the host's already; only the new messages are recorded.
    assert_eq!(log.messages().len(), 2);
}

mod budget;

#[tokio::test]
async fn a_warm_start_shows_the_earlier_run_and_answers_identical_calls_from_it() {
    let warm = WarmContext {
        messages: vec![ChatMessage::new(Role::Assistant, "Last time: 6 * 7 = 42.")],
        tool_results: vec![crate::warm::CachedToolResult {
            tool: "calculator".into(),
            arguments: json!({"expression": "6 * 7"}),
            result: Some(json!({"expression": "6 * 7", "result": 42})),
            reply: "{\"expression\":\"6 * 7\",\"result\":42}".into(),
        }],
        ..WarmContext::default()
    };
    let model = Arc::new(Scripted::new([
        calls(&[
            ("c1", "calculator", json!({"expression": "6 * 7"})),
            ("c2", "calculator", json!({"expression": "1 + 1"})),
        ]),
        answer("42 and 2"),
    ]));
    let log = Log::default();
    let step = Step::new();
    let input = StepInput { warm: Some(&warm), ..step.input() };
    runner(model.clone(), LoopSettings::default()).run(&spec("analyst"), &input, &log).await.unwrap();

    let first = &model.seen()[0];
    assert!(first.messages.iter().any(|m| m.content == "Last time: 6 * 7 = 42."), "{:#?}", first.messages);
    let tools = log.tools();
    assert_eq!((tools[0].status, tools[0].latency_ms), (ToolCallStatus::Cached, 0.0));
    assert_eq!(tools[0].result, Some(json!({"expression": "6 * 7", "result": 42})));
    assert_eq!(tools[1].status, ToolCallStatus::Ok, "another call runs the tool");
    assert_eq!(tool_replies(&model.seen()[1])[0].content, warm.tool_results[0].reply);
}

/// A step whose calculator calls need approval, stopped at its first turn: the checkpoint it
/// left and the calls it waits for.
async fn paused_at_the_first_turn(tools: &[String]) -> (Checkpoint, Vec<ApprovalRequest>, Log) {
    let model = Arc::new(Scripted::new([calls(&[
        ("c1", "calculator", json!({"expression": "6 * 7"})),
        ("c2", "calculator", json!({"formula": "1 + 1"})),
        ("c3", "current_time", json!({})),
    ])]));
    let log = Log::default();
    let step = Step::new();
    let input = StepInput { approvals: ApprovalPolicy { tools, decisions: &[] }, ..step.input() };
    let err = runner(model, LoopSettings::default()).run(&spec("analyst"), &input, &log).await.unwrap_err();
    let AgentError::AwaitingApproval(waiting) = err else { panic!("expected a pause, got {err:?}") };
    let checkpoint = log.checkpoints().last().unwrap().clone();
    (checkpoint, waiting, log)
}

#[tokio::test]
async fn a_call_that_needs_approval_pauses_the_step_before_any_call_of_its_turn_runs() {
    let (checkpoint, waiting, log) = paused_at_the_first_turn(&["calculator".to_owned()]).await;
    // Only the valid calculator call waits: the invalid one will be rejected without a person.
    let ids: Vec<(&str, u32)> = waiting.iter().map(|w| (w.call.id.as_str(), w.turn)).collect();
    assert_eq!(ids, [("c1", 1)]);
    assert!(log.tools().is_empty(), "nothing of the turn ran");
    assert_eq!(checkpoint.unanswered_calls().len(), 3);
    assert_eq!(checkpoint.turns, 1);
}

#[tokio::test]
async fn an_approved_call_runs_a_denied_one_tells_the_model_why() {
    let approval = ["calculator".to_owned()];
    for (decision, status, reply) in [
        (Decision::Approve { arguments: None }, ToolCallStatus::Ok, "42"),
        (
            Decision::Approve { arguments: Some(json!({"expression": "2 * 3"})) },
            ToolCallStatus::Ok,
            "changed its arguments",
        ),
        (Decision::Deny { reason: "not today".into() }, ToolCallStatus::Denied, "denied it: not today"),
    ] {
        let (checkpoint, waiting, _) = paused_at_the_first_turn(&approval).await;
        let decisions = [DecidedCall { turn: waiting[0].turn, call_id: "c1".into(), decision: decision.clone() }];
        let model = Arc::new(Scripted::new([answer("done")]));
        let log = Log::default();
        let step = Step::new();
        let input = StepInput {
            resume: Some(&checkpoint),
            approvals: ApprovalPolicy { tools: &approval, decisions: &decisions },
            ..step.input()
        };
        let out = runner(model.clone(), LoopSettings::default()).run(&spec("analyst"), &input, &log).await.unwrap();
        assert_eq!(out.text, "done");
        let tools = log.tools();
        let statuses: Vec<ToolCallStatus> = tools.iter().map(|t| t.status).collect();
        assert_eq!(statuses, [status, ToolCallStatus::Rejected, ToolCallStatus::Ok], "{decision:?}");
        if let Decision::Approve { arguments: Some(edited) } = &decision {
            assert_eq!(&tools[0].arguments, edited, "the record shows the arguments it ran with");
            assert_eq!(tools[0].result.as_ref().unwrap()["result"], 6);
        }
        let replies = tool_replies(&model.seen()[0]).into_iter().map(|m| m.content.clone()).collect::<Vec<_>>();
        assert!(replies[0].contains(reply), "{decision:?}: {}", replies[0]);
    }
}

#[tokio::test]
async fn an_agent_s_own_approval_list_applies_too() {
    let mut analyst = spec("analyst");
    analyst.approval = vec!["current_time".into()];
    let model = Arc::new(Scripted::new([calls(&[("t1", "current_time", json!({}))])]));
    let err = runner(model, LoopSettings::default()).run(&analyst, &Step::new().input(), &Log::default()).await;
    assert!(matches!(err, Err(AgentError::AwaitingApproval(w)) if w[0].call.name == "current_time"));
}
