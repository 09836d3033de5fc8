//! The whole service on a real provider protocol: `LLM_PROVIDER=openai` pointed at a local
//! fake server. Plans from the model, tool calls checked against the registry, provider
//! errors, and cost from the price table.

use agents::{PriceTable, Usage};
use orchestrator::config::{LlmProvider, Settings};
use serde_json::{Value, json};

use crate::{
    fake_llm::{FakeOpenAi, answer, is_planning, step_title, tool_call, tool_replies},
    helpers::{TestApp, test_settings},
};

const KEY: &str = "sk-test-do-not-leak-0123456789";

fn openai_settings(fake: &FakeOpenAi) -> Settings {
    let mut s = test_settings();
    s.llm_provider = LlmProvider::Openai;
    s.llm_base_url = Some(fake.base_url());
    s.llm_model = Some("gpt-4o-mini".into());
    s.llm_api_key = Some(KEY.into());
    s.llm_max_retries = 1;
    s.retry_base_ms = 50;
    s
}

/// Research and analysis in parallel, then a write-up of both.
fn branching_plan() -> Value {
    json!({"steps": [
        {"title": "Research queues", "instruction": "Research job queues.", "agent": "researcher", "depends_on": []},
        {"title": "Compute capacity", "instruction": "Compute 17 * (3 + 4).", "agent": "analyst", "depends_on": []},
        {"title": "Write it up", "instruction": "Write the findings.", "agent": "writer", "depends_on": [0, 1]}
    ]})
}

#[tokio::test]
async fn the_seed_flow_runs_on_an_openai_compatible_provider_with_a_branching_plan_and_tools() {
    let fake = FakeOpenAi::start(|request| {
        if is_planning(request) {
            return tool_call("plan-1", "submit_plan", &branching_plan());
        }
        let replies = tool_replies(request);
        if step_title(request) == "Compute capacity" {
            // A valid call, then an invalid one the registry rejects, then the answer.
            return match replies.len() {
                0 => tool_call("c1", "calculator", &json!({"expression": "17 * (3 + 4)"})),
                1 => tool_call("c2", "calculator", &json!({"expr": 5})),
                _ => answer(&format!("Capacity is 119 (tool said {}).", replies[0]), 300, 40),
            };
        }
        answer("Done.", 200, 30)
    })
    .await;
    let app = TestApp::spawn_with(openai_settings(&fake), 1).await;
    let id = app.submit("Analyze the requirements and build a plan. Then implement core APIs.").await;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");

    let steps = task["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["depends_on"], json!([]));
    assert_eq!(steps[1]["depends_on"], json!([]));
    assert_eq!(steps[2]["depends_on"], json!([steps[0]["id"], steps[1]["id"]]));
    assert!(steps[1]["output"].as_str().unwrap().contains("119"), "{}", steps[1]);
    assert_eq!(task["result"], "Done.");

    let calls: Value =
        app.http.get(app.url(&format!("/tasks/{id}/tool-calls"))).send().await.unwrap().json().await.unwrap();
    let calls = calls["items"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!((calls[0]["tool"].as_str(), calls[0]["status"].as_str()), (Some("calculator"), Some("ok")));
    assert_eq!(calls[0]["result"]["result"], 119);
    assert_eq!(calls[1]["status"], "rejected");
    assert!(calls[1]["error"].as_str().unwrap().contains("expression"), "{}", calls[1]);
    // The rejection reason went back to the model, which then answered.
    let requests = fake.requests();
    let last_compute = requests.iter().rev().find(|r| step_title(r) == "Compute capacity").unwrap();
    assert!(tool_replies(last_compute)[1].contains("expression"), "{last_compute}");
    // The key went to the provider, never into a stored row.
    let leaked = app
        .count("SELECT count(*) FROM tool_calls WHERE arguments::text LIKE '%sk-test%' OR error LIKE '%sk-test%'")
        .await;
    assert_eq!(leaked, 0);
    app.stop().await;
}

#[tokio::test]
async fn cost_is_the_price_table_applied_to_the_providers_usage() {
    let fake = FakeOpenAi::start(|request| {
        if is_planning(request) {
            return tool_call(
                "plan-1",
                "submit_plan",
                &json!({"steps": [
                    {"title": "Write", "instruction": "Write a haiku.", "agent": "writer", "depends_on": []}
                ]}),
            );
        }
        answer("An old silent pond.", 1_000_000, 500_000)
    })
    .await;
    let app = TestApp::spawn_with(openai_settings(&fake), 1).await;
    let id = app.submit("Write a haiku.").await;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");

    let cost: Value = app.http.get(app.url(&format!("/tasks/{id}/cost"))).send().await.unwrap().json().await.unwrap();
    let prices = PriceTable::builtin();
    let step = prices
        .cost("gpt-4o-mini", &Usage { prompt_tokens: 1_000_000, completion_tokens: 500_000, cached_tokens: 0 })
        .unwrap();
    let planning =
        prices.cost("gpt-4o-mini", &Usage { prompt_tokens: 100, completion_tokens: 20, cached_tokens: 0 }).unwrap();
    assert!(step > 0.0);
    let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-9;
    assert!(close(&cost["total"]["cost_usd"], step + planning), "{cost}");
    assert!(close(&cost["planning"]["cost_usd"], planning), "{cost}");
    assert!(close(&cost["steps"][0]["cost_usd"], step), "{cost}");
    assert_eq!(cost["models"][0]["model"], "gpt-4o-mini");
    assert_eq!(cost["total"]["calls"], 2);
    // The task's own totals are the same sums.
    assert!(close(&task["cost_usd"], step + planning), "{task}");
    assert_eq!(task["tokens_in"], 1_000_100);
    app.stop().await;
}

#[tokio::test]
async fn a_rejected_request_fails_the_step_with_the_providers_message_and_is_not_retried() {
    let fake = FakeOpenAi::start(|request| {
        if is_planning(request) {
            return tool_call(
                "plan-1",
                "submit_plan",
                &json!({"steps": [
                    {"title": "Write", "instruction": "Write.", "agent": "writer", "depends_on": []}
                ]}),
            );
        }
        (401, json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}))
    })
    .await;
    let app = TestApp::spawn_with(openai_settings(&fake), 1).await;
    let id = app.submit("Write a poem.").await;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "failed", "{task}");
    let error = task["error"].as_str().unwrap();
    assert!(error.contains("Incorrect API key provided"), "{error}");
    assert!(!error.contains(KEY), "the key must not leak: {error}");
    assert_eq!(task["steps"][0]["attempt"], 1, "a rejected request is not retried");
    let step_requests = fake.requests().iter().filter(|r| !is_planning(r)).count();
    assert_eq!(step_requests, 1);
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_plan_from_the_model_falls_back_to_the_heuristic_plan() {
    let fake = FakeOpenAi::start(|request| {
        if is_planning(request) {
            return tool_call(
                "plan-x",
                "submit_plan",
                &json!({"steps": [
                    {"title": "Hack", "instruction": "Do it.", "agent": "wizard", "depends_on": []}
                ]}),
            );
        }
        answer("Done.", 10, 2)
    })
    .await;
    let app = TestApp::spawn_with(openai_settings(&fake), 1).await;
    let id = app.submit("Analyze the requirements and build a plan. Then implement core APIs.").await;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    let agents: Vec<&str> = task["steps"].as_array().unwrap().iter().map(|s| s["agent"].as_str().unwrap()).collect();
    assert_eq!(agents, ["analyst", "engineer"], "the heuristic plan");
    assert_eq!(fake.requests().iter().filter(|r| is_planning(r)).count(), 2, "one retry with the error, then fallback");
    app.stop().await;
}

#[tokio::test]
async fn agents_and_tools_are_listed_with_their_schemas() {
    let app = TestApp::spawn(0).await;
    let agents: Value = app.http.get(app.url("/agents")).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = agents["items"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    for expected in ["researcher", "analyst", "engineer", "writer", "reviewer"] {
        assert!(names.contains(&expected), "{names:?}");
    }
    let tools: Value = app.http.get(app.url("/tools")).send().await.unwrap().json().await.unwrap();
    let calculator = tools["items"].as_array().unwrap().iter().find(|t| t["name"] == "calculator").unwrap();
    assert_eq!(calculator["parameters"]["type"], "object");
    app.stop().await;
}

#[tokio::test]
async fn a_planning_call_slower_than_the_lease_keeps_the_lease_and_plans_once() {
    let slow = std::time::Duration::from_millis(3500);
    let fake = FakeOpenAi::start_with_delay(
        move |request| if is_planning(request) { slow } else { std::time::Duration::ZERO },
        |request| {
            if is_planning(request) {
                return tool_call("plan-1", "submit_plan", &branching_plan());
            }
            answer("Done.", 200, 30)
        },
    )
    .await;
    let mut settings = openai_settings(&fake);
    // The model takes longer than the lease and the visibility timeout together: without
    // renewal, the second worker would take the planning over and plan again.
    settings.lease_secs = 1;
    settings.visibility_timeout_secs = 2;
    let app = TestApp::spawn_with(settings, 2).await;
    let id = app.submit("Research queues and write it up.").await;
    let task = app.client.wait(id, std::time::Duration::from_secs(60)).await.expect("the task ends").raw;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(fake.requests().iter().filter(|r| is_planning(r)).count(), 1, "one planning call");
    let plannings: i64 =
        sqlx::query_scalar("SELECT count(*) FROM task_events WHERE task_id = $1 AND kind = 'task_planning'")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(plannings, 1, "planned by one worker");
    app.stop().await;
}
