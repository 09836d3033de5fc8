//! Budgets and quotas against the real service: every model call is reserved at its worst
//! case first, so the recorded spend never passes a task's `max_cost_usd` / `max_tokens` or
//! a user's daily quota, with sequential or parallel steps.

use std::{path::PathBuf, time::Duration};

use orchestrator::{
    config::{LlmProvider, Settings},
    domain::{TaskId, TaskStatus},
    store::{BudgetStore, Holder, ReserveOutcome, ReserveRequest, UserLimits},
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    fake_llm::{FakeOpenAi, answer, is_planning, tool_call},
    helpers::{TestApp, eventually, test_settings},
};

/// A prices file for `model`: prompts free, output at $1000 per million tokens (so $0.001
/// per output token), which makes each call's worst case `ceiling × $0.001` exactly.
fn output_priced(model: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("orch-prices-{}.toml", Uuid::new_v4().simple()));
    let toml = format!("[models.\"{model}\"]\ninput_per_mtok = 0.0\noutput_per_mtok = 1000.0\n");
    std::fs::write(&path, toml).expect("write the prices file");
    path
}

/// Offline test settings where each call of a limited task may cost up to `ceiling` × $0.001.
pub fn offline_priced(ceiling: u32) -> Settings {
    let mut s = test_settings();
    s.llm_prices_file = Some(output_priced(agents::llm::OfflineModel::MODEL));
    s.budgets.budget_max_output_tokens = ceiling;
    s
}

async fn submit(app: &TestApp, body: Value) -> Uuid {
    app.client.submit(&body).await.expect("202 Accepted").id
}

/// (sum of cost, sum of all tokens) of the task's recorded model calls.
async fn recorded(app: &TestApp, task: Uuid) -> (f64, i64) {
    sqlx::query_as(
        "SELECT coalesce(sum(cost_usd), 0)::float8, coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint
         FROM llm_calls WHERE task_id = $1",
    )
    .bind(task)
    .fetch_one(&app.db)
    .await
    .expect("sums")
}

async fn calls(app: &TestApp, task: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM llm_calls WHERE task_id = $1").bind(task).fetch_one(&app.db).await.unwrap()
}

fn assert_failed_over_budget(task: &Value) {
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error_code"], "budget_exceeded", "{task}");
    assert!(task["error"].as_str().unwrap().contains("budget_exceeded"), "{task}");
}

/// Waits until no step of the task runs and nothing is reserved any more (parallel steps
/// still in flight when the task failed finish their call and settle it).
async fn drained(app: &TestApp, task: Uuid) {
    eventually(Duration::from_secs(30), "the task's reservations to drain", || async {
        let (reserved, running): (f64, i64) = sqlx::query_as(
            "SELECT reserved_cost_usd, (SELECT count(*) FROM steps WHERE task_id = $1 AND status = 'running')
             FROM tasks WHERE id = $1",
        )
        .bind(task)
        .fetch_one(&app.db)
        .await
        .unwrap();
        (reserved == 0.0 && running == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_budget_stops_a_task_before_it_overspends() {
    // Each call may cost up to $0.10 (100 output tokens); an offline answer is ~50 tokens.
    let app = TestApp::spawn_with(offline_priced(100), 1).await;
    let budget = 0.2;
    let id = submit(
        &app,
        json!({"user_id": "alice", "max_cost_usd": budget, "description":
            "Research job queues. Then analyze the options. Then write a summary. Then review it. Then write the final report. Then publish it."}),
    )
    .await;
    let task = app.wait(id).await;
    assert_failed_over_budget(&task);
    assert_eq!((task["reserved_cost_usd"].as_f64(), task["reserved_tokens"].as_i64()), (Some(0.0), Some(0)));

    let (cost, _) = recorded(&app, id).await;
    assert!(cost <= budget, "spent {cost} of {budget}");
    assert!(calls(&app, id).await >= 1, "the budget allowed the first calls");
    assert_eq!(task["cost_usd"].as_f64().unwrap(), cost);
    // The refused step failed at once (no retry), the ones after it were skipped.
    let steps = task["steps"].as_array().unwrap();
    let failed: Vec<&Value> = steps.iter().filter(|s| s["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{task}");
    assert_eq!(failed[0]["attempt"], 1);
    assert!(failed[0]["error"].as_str().unwrap().starts_with("budget_exceeded: "), "{}", failed[0]);
    assert!(steps.iter().any(|s| s["status"] == "skipped"), "{task}");
    // The event carries the code too.
    let code: Value =
        sqlx::query_scalar("SELECT data->'code' FROM task_events WHERE task_id = $1 AND kind = 'task_failed'")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(code, "budget_exceeded");
    app.stop().await;
}

#[tokio::test]
async fn a_task_within_its_budget_completes_and_gives_back_what_it_reserved() {
    let app = TestApp::spawn_with(offline_priced(100), 1).await;
    let id = submit(
        &app,
        json!({"user_id": "alice", "max_cost_usd": 1.0, "max_tokens": 100000,
        "description": "Research job queues. Then write a summary."}),
    )
    .await;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["error_code"], Value::Null);
    assert_eq!((task["reserved_cost_usd"].as_f64(), task["reserved_tokens"].as_i64()), (Some(0.0), Some(0)));
    assert!(task["cost_usd"].as_f64().unwrap() > 0.0, "the priced model cost something: {task}");
    let open = app.count("SELECT count(*) FROM budget_reservations").await;
    assert_eq!(open, 0);
    app.stop().await;
}

/// Six independent steps, then one that needs them all.
fn wide_plan(request: &Value) -> (u16, Value) {
    if is_planning(request) {
        let mut steps: Vec<Value> = (0..6)
            .map(|i| {
                json!({"title": format!("Part {i}"), "instruction": format!("Research part {i}."),
                            "agent": "researcher", "depends_on": []})
            })
            .collect();
        steps.push(json!({"title": "Join", "instruction": "Write it up.", "agent": "writer",
                          "depends_on": [0, 1, 2, 3, 4, 5]}));
        return tool_call("plan-1", "submit_plan", &json!({"steps": steps}));
    }
    // 400 output tokens: within the 1000-token ceiling each call carries.
    let asked = request["max_tokens"].as_u64().unwrap_or(u64::MAX);
    answer("Done.", 50, 400.min(asked))
}

#[tokio::test]
async fn parallel_steps_never_overshoot_the_budget_together() {
    let mut s = test_settings();
    s.llm_provider = LlmProvider::Openai;
    // Slow answers, so that parallel steps' calls are in flight together.
    let fake = FakeOpenAi::start_with_delay(|_| Duration::from_millis(300), wide_plan).await;
    s.llm_base_url = Some(fake.base_url());
    s.llm_model = Some("gpt-4o-mini".into());
    s.llm_api_key = Some("sk-test".into());
    s.llm_prices_file = Some(output_priced("gpt-4o-mini"));
    s.budgets.budget_max_output_tokens = 1000; // worst case $1.00 and prompt + 1000 tokens
    let app = TestApp::spawn_with(s, 1).await;

    // Room for about two calls in flight at once and five in all, not for seven steps.
    let (budget, max_tokens) = (2.5, 6000);
    let id = submit(
        &app,
        json!({"user_id": "alice", "max_cost_usd": budget, "max_tokens": max_tokens,
        "description": "Research six parts of the system, then write them up."}),
    )
    .await;
    let task = app.client.wait(id, Duration::from_secs(60)).await.expect("the task ends").raw;
    assert_failed_over_budget(&task);
    drained(&app, id).await;

    let steps = task["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 7);
    assert!(steps[..6].iter().all(|s| s["depends_on"] == json!([])), "the six parts are independent");
    let (cost, tokens) = recorded(&app, id).await;
    assert!(cost <= budget, "spent {cost} of {budget}");
    assert!(tokens <= max_tokens, "used {tokens} of {max_tokens} tokens");
    assert!(calls(&app, id).await >= 2, "planning and at least one step ran");
    assert_eq!(steps[6]["status"], "skipped", "{task}");
    app.stop().await;
}

#[tokio::test]
async fn a_spent_daily_quota_refuses_the_users_next_task_while_others_run() {
    let mut s = offline_priced(100);
    // A global quota bob stays far from; alice gets her own below.
    s.budgets.daily_cost_quota_usd = Some(100.0);
    let app = TestApp::spawn_with(s, 1).await;

    let first =
        submit(&app, json!({"user_id": "alice", "description": "Research job queues. Then write a summary."})).await;
    assert_eq!(app.wait(first).await["status"], "completed");
    let spent = app.app.store.daily_usage("alice").await.unwrap();
    assert!(spent.spent_usd > 0.0 && spent.reserved_usd == 0.0, "{spent:?}");
    // Less room than one call's worst case ($0.10) is left today.
    let quota = spent.spent_usd + 0.05;
    let limits = UserLimits {
        user_id: "alice".into(),
        daily_cost_usd: Some(quota),
        max_running_tasks: None,
        max_priority: None,
    };
    app.app.store.set_user_limits(&limits).await.unwrap();

    let second = submit(&app, json!({"user_id": "alice", "description": "Research job queues."})).await;
    let other = submit(&app, json!({"user_id": "bob", "description": "Research job queues."})).await;
    let refused = app.wait(second).await;
    assert_failed_over_budget(&refused);
    assert!(refused["error"].as_str().unwrap().contains("daily cost quota"), "{refused}");
    assert_eq!(calls(&app, second).await, 0, "refused at its first call");
    assert_eq!(app.wait(other).await["status"], "completed", "another user's task still runs");
    let after = app.app.store.daily_usage("alice").await.unwrap();
    assert_eq!(after.spent_usd, spent.spent_usd);
    assert!(after.spent_usd <= quota);
    app.stop().await;
}

#[tokio::test]
async fn a_reservation_whose_lease_ended_is_given_back() {
    let mut s = offline_priced(100);
    s.worker_concurrency = 1;
    let app = TestApp::spawn_with(s, 0).await; // no worker: the task stays pending
    let id =
        submit(&app, json!({"user_id": "alice", "max_cost_usd": 1.0, "description": "Research job queues."})).await;
    let store = &app.app.store;
    // As a worker that died mid-call would leave it: made under a lease nobody holds.
    let holder = Holder { task: TaskId(id), step: None, lease_token: Uuid::new_v4() };
    let request = ReserveRequest { id: Uuid::new_v4(), cost_usd: 0.75, tokens: 500, daily_quota_usd: None };
    assert_eq!(store.reserve(&holder, &request).await.unwrap(), ReserveOutcome::Reserved);
    let reserved: f64 = sqlx::query_scalar("SELECT reserved_cost_usd FROM tasks WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(reserved, 0.75);
    // A second reservation that only fits once the stale one is gone purges it first.
    let again = ReserveRequest { id: Uuid::new_v4(), cost_usd: 0.5, tokens: 500, daily_quota_usd: None };
    assert_eq!(store.reserve(&holder, &again).await.unwrap(), ReserveOutcome::Reserved);
    // And the reconciler's sweep gives back the rest.
    assert_eq!(store.release_stale_reservations(100).await.unwrap(), 1);
    let (cost, tokens, open): (f64, i64, i64) = sqlx::query_as(
        "SELECT reserved_cost_usd, reserved_tokens, (SELECT count(*) FROM budget_reservations) FROM tasks WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((cost, tokens, open), (0.0, 0, 0));
    let daily = store.daily_usage("alice").await.unwrap();
    assert_eq!((daily.spent_usd, daily.reserved_usd), (0.0, 0.0));
    let status: String =
        sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1").bind(id).fetch_one(&app.db).await.unwrap();
    assert_eq!(status, TaskStatus::Pending.as_str());
    app.stop().await;
}

#[tokio::test]
async fn user_limits_are_set_and_shown_from_the_command_line() {
    let app = TestApp::spawn(0).await;
    let url = app.app.settings.database_url.clone();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(args)
            .env("DATABASE_URL", &url)
            .output()
            .expect("the binary runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["users", "limits", "set", "carol", "--daily-cost-usd", "2.5", "--max-running", "3"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("user carol: daily_cost_usd=2.5 max_running_tasks=3"), "{out}");
    let stored = app.app.store.user_limits("carol").await.unwrap().unwrap();
    assert_eq!((stored.daily_cost_usd, stored.max_running_tasks), (Some(2.5), Some(3)));

    let (code, _, err) = run(&["users", "limits", "set", "carol", "--max-running=-1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--max-running must not be negative"), "{err}");
    let (code, out, _) = run(&["users", "limits", "show", "dave"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("daily_cost_usd=global max_running_tasks=global"), "{out}");
    app.stop().await;
}
