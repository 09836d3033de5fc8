//! The plan as a versioned resource (`GET /tasks/{id}/plan`, `/plan/versions`) and
//! replanning: a step that fails for good makes the planner revise the plan for the work that
//! did not complete, with the heuristic planner offline (the offline model refuses a step
//! marked `[offline: fail as <agent>]` only when that agent runs it, so the heuristic replan,
//! which gives the step to the next suitable agent, succeeds) and with the fake OpenAI
//! provider (whose replan request must carry the failure and the completed outputs).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    fake_llm::{FakeOpenAi, answer, is_planning, step_title, tool_call},
    helpers::{TestApp, events, test_settings},
};

/// Submits `body` (with the test user) and waits for the task to end.
async fn run(app: &TestApp, mut body: Value) -> Value {
    body["user_id"] = "test-user".into();
    let id = app.client.submit(&body).await.expect("202 Accepted").id;
    app.client.wait(id, Duration::from_secs(20)).await.expect("the task ends").raw
}

async fn get(app: &TestApp, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = app.http.get(app.url(path)).send().await.expect("a response");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

fn id_of(task: &Value) -> Uuid {
    task["id"].as_str().unwrap().parse().unwrap()
}

/// (agent, status) of each step of a plan or a task, in plan order.
fn agents_and_statuses(steps: &Value) -> Vec<(String, String)> {
    steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["agent"].as_str().unwrap().to_owned(), s["status"].as_str().unwrap_or("").to_owned()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[tokio::test]
async fn a_planned_task_has_its_plan_as_version_1_with_an_etag() {
    let app = TestApp::spawn(2).await;
    let task =
        run(&app, json!({"description": "Analyze the requirements and build a plan. Then implement core APIs."})).await;
    assert_eq!(task["status"], "completed", "{task}");
    let id = id_of(&task);

    let (status, headers, plan) = get(&app, &format!("/tasks/{id}/plan")).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(plan["task_id"], id.to_string());
    assert_eq!(plan["version"], 1);
    assert_eq!(plan["created_by"], "heuristic-2");
    assert_eq!(plan["reason"], Value::Null);
    assert_eq!(plan["replaced"], json!([]));
    assert_eq!(agents_and_statuses(&plan["steps"]), pairs(&[("analyst", "completed"), ("engineer", "completed")]));
    let deps: Vec<&Value> = plan["steps"].as_array().unwrap().iter().map(|s| &s["depends_on"]).collect();
    assert_eq!(deps, [&json!([]), &json!([0])]);
    // The plan's steps are the task's.
    let ids: Vec<&Value> = plan["steps"].as_array().unwrap().iter().map(|s| &s["id"]).collect();
    let task_ids: Vec<&Value> = task["steps"].as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, task_ids);

    let (status, _, versions) = get(&app, &format!("/tasks/{id}/plan/versions")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(versions["current_version"], 1);
    let list = versions["versions"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["version"], 1);
    assert_eq!(list[0]["steps"][1]["depends_on"], json!([0]));
    assert!(list[0]["steps"][0].get("status").is_none(), "a version is the plan as saved: {}", list[0]);
    app.stop().await;
}

#[tokio::test]
async fn a_task_without_a_plan_has_no_plan_and_no_versions_and_ids_are_checked() {
    // No worker: the task stays pending.
    let app = TestApp::spawn(0).await;
    let id = app.submit("Write a haiku.").await;
    let (status, _, problem) = get(&app, &format!("/tasks/{id}/plan")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(problem["type"], "urn:orchestrator:problem:not-found");
    let (status, _, versions) = get(&app, &format!("/tasks/{id}/plan/versions")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(versions, json!({"task_id": id.to_string(), "current_version": null, "versions": []}));

    for path in ["/plan", "/plan/versions"] {
        let (status, _, problem) = get(&app, &format!("/tasks/not-a-uuid{path}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert_eq!(problem["field"], "id");
        let (status, _, _) = get(&app, &format!("/tasks/{}{path}", Uuid::now_v7())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_task_planned_before_versions_were_recorded_answers_version_1_from_its_steps() {
    let app = TestApp::spawn(2).await;
    let task = run(&app, json!({"description": "Research job queues. Then write a summary."})).await;
    let id = id_of(&task);
    sqlx::query("DELETE FROM plan_versions WHERE task_id = $1").bind(id).execute(&app.db).await.unwrap();

    let (status, headers, plan) = get(&app, &format!("/tasks/{id}/plan")).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(plan["version"], 1);
    assert_eq!(plan["created_by"], "planner");
    assert_eq!(agents_and_statuses(&plan["steps"]), pairs(&[("researcher", "completed"), ("writer", "completed")]));
    let (_, _, versions) = get(&app, &format!("/tasks/{id}/plan/versions")).await;
    assert_eq!(versions["current_version"], 1);
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn offline_the_heuristic_replan_gives_the_failed_step_to_another_agent_and_the_task_completes() {
    let app = TestApp::spawn(2).await;
    // The researcher cannot do the research; the next suitable agent (the analyst) can. The
    // summary, skipped when the research failed, runs after the new research.
    let task = run(
        &app,
        json!({
            "description": "Write a haiku about job queues. Separately, research retry policies [offline: fail as researcher]. Then summarise them.",
            "replan": true
        }),
    )
    .await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(
        (task["replan"].clone(), task["max_replans"].clone(), task["replans"].clone()),
        (json!(true), json!(2), json!(1))
    );
    let id = id_of(&task);
    assert_eq!(
        agents_and_statuses(&task["steps"]),
        pairs(&[("writer", "completed"), ("analyst", "completed"), ("writer", "completed")])
    );
    assert!(task["result"].as_str().unwrap().starts_with("Summarise them: done."), "{task}");

    let (_, headers, plan) = get(&app, &format!("/tasks/{id}/plan")).await;
    assert_eq!(headers["etag"], "\"2\"");
    assert_eq!(plan["version"], 2);
    assert_eq!(plan["created_by"], "heuristic-2");
    let reason = plan["reason"].as_str().unwrap();
    assert!(reason.contains("Research retry policies") && reason.contains("fail as the researcher"), "{reason}");
    // The kept step first, then the new ones; the new summary depends on the new research.
    let deps: Vec<&Value> = plan["steps"].as_array().unwrap().iter().map(|s| &s["depends_on"]).collect();
    assert_eq!(deps, [&json!([]), &json!([]), &json!([1])]);
    let replaced = agents_and_statuses(&plan["replaced"]);
    assert_eq!(replaced, pairs(&[("researcher", "failed"), ("writer", "skipped")]));

    let (_, _, versions) = get(&app, &format!("/tasks/{id}/plan/versions")).await;
    assert_eq!(versions["current_version"], 2);
    let list = versions["versions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["reason"], Value::Null);
    assert_eq!(list[1]["reason"], plan["reason"]);
    assert_eq!(list[1]["steps"][0]["id"], list[0]["steps"][0]["id"], "the completed step is kept");

    let replanned: Vec<Value> =
        sqlx::query_scalar("SELECT data FROM task_events WHERE task_id = $1 AND kind = 'task_replanned' ORDER BY id")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(replanned.len(), 1);
    assert_eq!(replanned[0]["version"], 2);
    assert_eq!(replanned[0]["reason"], plan["reason"]);
    assert_eq!(events(&app.db, id, "task_replanning").await.len(), 1);
    assert!(events(&app.db, id, "task_failed").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn replanning_stops_after_max_replans_and_the_failure_ends_the_task_as_before() {
    let app = TestApp::spawn(2).await;
    // Every agent fails this step: each replan gives it to another, until none is left.
    let task =
        run(&app, json!({"description": "Research retry policies [offline: fail].", "replan": true, "max_replans": 2}))
            .await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["replans"], 2);
    let id = id_of(&task);
    assert_eq!(events(&app.db, id, "task_replanned").await.len(), 2);
    assert_eq!(events(&app.db, id, "task_failed").await.len(), 1);
    let (_, _, versions) = get(&app, &format!("/tasks/{id}/plan/versions")).await;
    let agents: Vec<&str> =
        versions["versions"].as_array().unwrap().iter().map(|v| v["steps"][0]["agent"].as_str().unwrap()).collect();
    assert_eq!(agents, ["researcher", "analyst", "engineer"], "each version tried another agent");
    assert!(task["error"].as_str().unwrap().contains("[offline: fail]"), "{task}");
    app.stop().await;
}

#[tokio::test]
async fn a_task_that_does_not_replan_fails_as_before_and_the_deployment_default_applies() {
    let mut settings = test_settings();
    settings.replan_on_failure = true;
    let app = TestApp::spawn_with(settings, 2).await;
    let description = "Research retry policies [offline: fail as researcher].";

    let task = run(&app, json!({"description": description, "replan": false})).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!((task["replan"].clone(), task["replans"].clone()), (json!(false), json!(0)));
    let id = id_of(&task);
    assert!(events(&app.db, id, "task_replanning").await.is_empty());
    let (_, _, versions) = get(&app, &format!("/tasks/{id}/plan/versions")).await;
    assert_eq!(versions["current_version"], 1);

    // Without `replan`, REPLAN_ON_FAILURE decides.
    let task = run(&app, json!({"description": description})).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!((task["replan"].clone(), task["replans"].clone()), (json!(true), json!(1)));
    app.stop().await;
}

#[tokio::test]
async fn max_replans_is_validated() {
    let app = TestApp::spawn(0).await;
    for bad in [json!(-1), json!(6), json!("two")] {
        let response = app
            .http
            .post(app.url("/tasks"))
            .json(&json!({"user_id": "u", "description": "d", "replan": true, "max_replans": bad}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let problem: Value = response.json().await.unwrap();
        assert!(status == 422 || status == 400, "{bad}: {status} {problem}");
        assert_eq!(problem["field"], "max_replans", "{problem}");
    }
    assert_eq!(app.count("SELECT count(*) FROM tasks").await, 0, "nothing was written");
    app.stop().await;
}

/// The replan request of the LLM planner (a planning request that reports a failure).
fn is_replan(request: &Value) -> bool {
    is_planning(request) && user_text(request).contains("failed for good")
}

fn user_text(request: &Value) -> String {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn with_a_model_the_replan_request_carries_the_failure_and_the_completed_outputs() {
    let fake = FakeOpenAi::start(|request| {
        if is_replan(request) {
            // Index 0 is the completed "Gather B"; 1 is the first new step.
            return tool_call(
                "replan-1",
                "submit_plan",
                &json!({"steps": [
                    {"title": "Gather A from the mirror", "instruction": "Gather A from the mirror.", "agent": "writer", "depends_on": []},
                    {"title": "Summarise", "instruction": "Summarise A and B.", "agent": "writer", "depends_on": [0, 1]}
                ]}),
            );
        }
        if is_planning(request) {
            return tool_call(
                "plan-1",
                "submit_plan",
                &json!({"steps": [
                    {"title": "Gather B", "instruction": "Gather B.", "agent": "writer", "depends_on": []},
                    {"title": "Gather A", "instruction": "Gather A.", "agent": "writer", "depends_on": []},
                    {"title": "Summarise", "instruction": "Summarise A and B.", "agent": "writer", "depends_on": [0, 1]}
                ]}),
            );
        }
        let title = step_title(request);
        if title == "Gather A" {
            return (401, json!({"error": {"message": "source A is unavailable", "type": "invalid_request_error"}}));
        }
        answer(&format!("{title}: done."), 10, 2)
    })
    .await;
    let app = TestApp::spawn_with(fake.settings(), 2).await;
    let task = run(&app, json!({"description": "Gather A and B, then summarise them.", "replan": true})).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["replans"], 1);
    assert_eq!(task["result"], "Summarise: done.");
    let titles: Vec<&str> = task["steps"].as_array().unwrap().iter().map(|s| s["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Gather B", "Gather A from the mirror", "Summarise"]);

    let replans: Vec<Value> = fake.requests().into_iter().filter(is_replan).collect();
    assert_eq!(replans.len(), 1, "one replan, asked once");
    let prompt = user_text(&replans[0]);
    assert!(prompt.contains("Gather A and B, then summarise them."), "the goal: {prompt}");
    assert!(
        prompt.contains("[0] Gather B") && prompt.contains("Output: Gather B: done."),
        "the completed output: {prompt}"
    );
    assert!(prompt.contains("source A is unavailable"), "the failure: {prompt}");
    assert!(prompt.contains("Summarise (agent writer)"), "what did not run: {prompt}");

    // The replan's model call is planning: recorded with the task, with no step.
    let id = id_of(&task);
    let planning: i64 = sqlx::query_scalar("SELECT count(*) FROM llm_calls WHERE task_id = $1 AND step_id IS NULL")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(planning, 2, "the plan and the replan");
    let (_, _, plan) = get(&app, &format!("/tasks/{id}/plan")).await;
    assert_eq!(plan["created_by"], "llm-1");
    assert_eq!(plan["version"], 2);
    app.stop().await;
}

/// Submits a paused task and waits until its plan waits for approval.
async fn paused(app: &TestApp, description: &str) -> (Uuid, Value) {
    let body = json!({"user_id": "test-user", "description": description, "start": "paused"});
    let id = app.client.submit(&body).await.expect("202 Accepted").id;
    let task = app.client.task_waiting(id, Duration::from_secs(10)).await.expect("the task is read").task.raw;
    assert_eq!(task["status"], "requires_action", "{task}");
    assert_eq!(task["required_action"], "plan_approval", "{task}");
    (id, task)
}

async fn put_plan(
    app: &TestApp,
    id: Uuid,
    if_match: Option<&str>,
    body: &Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = app.http.put(app.url(&format!("/tasks/{id}/plan"))).json(body);
    if let Some(tag) = if_match {
        request = request.header("If-Match", tag);
    }
    let response = request.send().await.expect("a response");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

async fn start(app: &TestApp, id: Uuid) -> (StatusCode, Value) {
    let response = app.http.post(app.url(&format!("/tasks/{id}/start"))).send().await.expect("a response");
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_paused_task_waits_with_its_plan_is_edited_then_started_and_runs_the_edited_plan() {
    let app = TestApp::spawn(2).await;
    let (id, task) = paused(&app, "Research job queues. Then write a summary.").await;
    // Planned, nothing started.
    let statuses: Vec<&str> = task["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["pending", "pending"]);
    assert_eq!(task["start"], "paused");
    assert!(events(&app.db, id, "step_ready").await.is_empty());
    let (_, headers, plan) = get(&app, &format!("/tasks/{id}/plan")).await;
    assert_eq!((headers["etag"].to_str().unwrap(), plan["version"].clone()), ("\"1\"", json!(1)));

    // The edit replaces the whole plan: another agent for the research, a review added.
    let edited = json!({"steps": [
        {"title": "Analyse job queues", "instruction": "Analyse job queues.", "agent": "analyst", "depends_on": []},
        {"instruction": "Write a summary.", "agent": "writer", "depends_on": [0]},
        {"title": "Review it", "instruction": "Review the summary.", "agent": "reviewer", "depends_on": [1], "required": true}
    ]});
    let (status, headers, plan) = put_plan(&app, id, Some("\"1\""), &edited).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(headers["etag"], "\"2\"");
    assert_eq!(plan["version"], 2);
    assert_eq!(plan["created_by"], "user:test-user");
    assert_eq!(
        agents_and_statuses(&plan["steps"]),
        pairs(&[("analyst", "pending"), ("writer", "pending"), ("reviewer", "pending")])
    );
    assert_eq!(plan["steps"][1]["title"], "Write a summary.", "a missing title is made from the instruction");
    assert_eq!(plan["steps"][2]["required"], true);
    assert_eq!(agents_and_statuses(&plan["replaced"]), pairs(&[("researcher", "pending"), ("writer", "pending")]));
    let still: Value = app.client.task(id).await.unwrap().raw;
    assert_eq!(
        (still["status"].clone(), still["required_action"].clone()),
        (json!("requires_action"), json!("plan_approval"))
    );
    assert!(events(&app.db, id, "step_ready").await.is_empty(), "an edit does not start a paused task");

    let (status, started) = start(&app, id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["required_action"], Value::Null);
    let task = app.client.wait(id, Duration::from_secs(20)).await.unwrap().raw;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(
        agents_and_statuses(&task["steps"]),
        pairs(&[("analyst", "completed"), ("writer", "completed"), ("reviewer", "completed")])
    );
    assert!(task["result"].as_str().unwrap().starts_with("Review it: done."), "{task}");
    for kind in ["task_planned", "plan_edited", "task_started"] {
        assert_eq!(events(&app.db, id, kind).await.len(), 1, "{kind}");
    }
    // Started once: a second start, or an edit of the ended task, is a conflict.
    assert_eq!(start(&app, id).await.0, StatusCode::CONFLICT);
    assert_eq!(put_plan(&app, id, Some("\"2\""), &edited).await.0, StatusCode::CONFLICT);
    let (_, _, versions) = get(&app, &format!("/tasks/{id}/plan/versions")).await;
    assert_eq!(versions["current_version"], 2);
    app.stop().await;
}

#[tokio::test]
async fn a_paused_plan_queues_its_requires_action_webhook_once() {
    let mut settings = test_settings();
    settings.webhook_allow_private = true;
    let app = TestApp::spawn_with(settings, 1).await;
    // Nothing listens there: the delivery is queued (and retried), which is what is checked.
    let body = json!({"user_id": "test-user", "description": "Write a haiku.", "start": "paused",
                      "callback_url": "http://127.0.0.1:9/hook"});
    let id = app.client.submit(&body).await.expect("202 Accepted").id;
    let task = app.client.task_waiting(id, Duration::from_secs(10)).await.unwrap().task.raw;
    assert_eq!(task["required_action"], "plan_approval", "{task}");
    let hooks: Vec<(String, Value)> =
        sqlx::query_as("SELECT event, payload FROM webhook_deliveries WHERE task_id = $1 ORDER BY created_at")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].0, "task.requires_action");
    assert_eq!(hooks[0].1["required_action"], "plan_approval");
    // An edit asks nobody anew.
    let edited = json!({"steps": [{"instruction": "Write a limerick.", "agent": "writer"}]});
    assert_eq!(put_plan(&app, id, Some("\"1\""), &edited).await.0, StatusCode::OK);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE task_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 1);
    app.stop().await;
}

#[tokio::test]
async fn an_edit_needs_if_match_and_a_stale_version_is_refused() {
    let app = TestApp::spawn(2).await;
    let (id, _) = paused(&app, "Write a haiku about job queues.").await;
    let body =
        json!({"steps": [{"title": "Haiku", "instruction": "Write a haiku.", "agent": "writer", "depends_on": []}]});

    let (status, _, problem) = put_plan(&app, id, None, &body).await;
    assert_eq!(status, StatusCode::PRECONDITION_REQUIRED, "{problem}");
    assert_eq!(
        (problem["type"].clone(), problem["field"].clone()),
        (json!("urn:orchestrator:problem:precondition-required"), json!("If-Match"))
    );
    let (status, _, problem) = put_plan(&app, id, Some("latest"), &body).await;
    assert_eq!((status, problem["field"].clone()), (StatusCode::BAD_REQUEST, json!("If-Match")), "{problem}");

    let (status, _, _) = put_plan(&app, id, Some("\"1\""), &body).await;
    assert_eq!(status, StatusCode::OK);
    // The same edit again, made from version 1, is stale now.
    let (status, _, problem) = put_plan(&app, id, Some("\"1\""), &body).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{problem}");
    assert_eq!(
        (problem["type"].clone(), problem["field"].clone()),
        (json!("urn:orchestrator:problem:precondition-failed"), json!("If-Match"))
    );
    assert!(problem["detail"].as_str().unwrap().contains("version 2"), "{problem}");
    assert_eq!(put_plan(&app, id, Some("W/\"7\""), &body).await.0, StatusCode::PRECONDITION_FAILED);
    // `*` edits whatever version is current; a weak tag of the current one matches too.
    assert_eq!(put_plan(&app, id, Some("*"), &body).await.0, StatusCode::OK);
    assert_eq!(put_plan(&app, id, Some("W/\"3\""), &body).await.0, StatusCode::OK);
    let (_, headers, _) = get(&app, &format!("/tasks/{id}/plan")).await;
    assert_eq!(headers["etag"], "\"4\"");
    // Unknown and another user's tasks are not found; the body is checked before anything.
    assert_eq!(put_plan(&app, Uuid::now_v7(), Some("\"1\""), &body).await.0, StatusCode::NOT_FOUND);
    let (status, _, problem) = put_plan(&app, id, Some("\"4\""), &json!({"steps": [], "extra": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_edit_is_refused_naming_the_fault_and_changes_nothing() {
    let mut settings = test_settings();
    settings.max_plan_steps = 4;
    let app = TestApp::spawn_with(settings, 2).await;
    let (id, _) = paused(&app, "Research job queues. Then write a summary.").await;
    let step = |agent: &str, depends_on: Value| json!({"title": "T", "instruction": "Do it.", "agent": agent, "depends_on": depends_on});
    let cases = [
        (json!({"steps": [step("writer", json!([])), step("poet", json!([0]))]}), "steps[1].agent", "unknown agent"),
        (json!({"steps": [step("writer", json!([1])), step("writer", json!([0]))]}), "steps[0].depends_on", "cycle"),
        (json!({"steps": [step("writer", json!([5]))]}), "steps[0].depends_on", "not another step"),
        (json!({"steps": [step("writer", json!([0]))]}), "steps[0].depends_on", "not another step"),
        (
            json!({"steps": (0..5).map(|_| step("writer", json!([]))).collect::<Vec<_>>()}),
            "steps",
            "more than the maximum of 4",
        ),
        (json!({"steps": []}), "steps", "no steps"),
        (json!({"steps": [{"instruction": "  ", "agent": "writer"}]}), "steps[0].instruction", "blank"),
        (
            json!({"steps": [{"title": "x".repeat(81), "instruction": "Do it.", "agent": "writer"}]}),
            "steps[0].title",
            "longer",
        ),
    ];
    for (body, field, says) in cases {
        let (status, _, problem) = put_plan(&app, id, Some("\"1\""), &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {problem}");
        assert_eq!(problem["field"], field, "{body}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(says), "{body}: {problem}");
    }
    let (_, headers, plan) = get(&app, &format!("/tasks/{id}/plan")).await;
    assert_eq!(headers["etag"], "\"1\"", "nothing was written");
    assert_eq!(agents_and_statuses(&plan["steps"]), pairs(&[("researcher", "pending"), ("writer", "pending")]));
    assert!(events(&app.db, id, "plan_edited").await.is_empty());
    // A task that is not paused cannot be started.
    let running = app.submit("Write a haiku.").await;
    app.wait(running).await;
    let (status, problem) = start(&app, running).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    app.stop().await;
}

#[tokio::test]
async fn a_running_task_keeps_its_started_steps_and_runs_the_edited_rest() {
    // Each model call takes a while, so the first step is still running while the task is edited.
    let mut settings = test_settings();
    settings.offline_llm_delay_ms = 1500;
    let app = TestApp::spawn_with(settings, 2).await;
    let id = app.submit("Research job queues. Then write a summary. Then review it.").await;
    let plan = crate::helpers::eventually(Duration::from_secs(10), "the first step to start", || async {
        let (status, _, plan) = get(&app, &format!("/tasks/{id}/plan")).await;
        (status == StatusCode::OK && plan["steps"][0]["status"] != "pending").then_some(plan)
    })
    .await;
    let first = plan["steps"][0].clone();
    assert_eq!(agents_and_statuses(&plan["steps"])[1..], pairs(&[("writer", "pending"), ("reviewer", "pending")]));

    // Left out, or changed, the started step is refused.
    let new_summary = json!({"title": "Write a short summary", "instruction": "Write a short summary.", "agent": "writer", "depends_on": [0]});
    let alone = json!({"title": "Write a short summary", "instruction": "Write a short summary.", "agent": "writer"});
    let (status, _, problem) = put_plan(&app, id, Some("\"1\""), &json!({"steps": [alone]})).await;
    assert_eq!((status, problem["field"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("steps")), "{problem}");
    let mut changed = first.clone();
    changed["agent"] = "analyst".into();
    changed.as_object_mut().unwrap().remove("status");
    let (status, _, problem) = put_plan(&app, id, Some("\"1\""), &json!({"steps": [changed, new_summary]})).await;
    assert_eq!((status, problem["field"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("steps[0]")), "{problem}");

    // The started step stays; the two waiting ones give way to one.
    let mut kept = first.clone();
    kept.as_object_mut().unwrap().remove("status");
    let (status, _, plan) = put_plan(&app, id, Some("\"1\""), &json!({"steps": [kept, new_summary]})).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["steps"][0]["id"], first["id"]);
    assert_eq!(plan["steps"][1]["depends_on"], json!([0]));
    assert_eq!(agents_and_statuses(&plan["replaced"]), pairs(&[("writer", "pending"), ("reviewer", "pending")]));

    let task = app.client.wait(id, Duration::from_secs(20)).await.unwrap().raw;
    assert_eq!(task["status"], "completed", "{task}");
    let titles: Vec<&str> = task["steps"].as_array().unwrap().iter().map(|s| s["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Research job queues", "Write a short summary"]);
    assert!(task["result"].as_str().unwrap().starts_with("Write a short summary: done."), "{task}");
    app.stop().await;
}

#[tokio::test]
async fn a_replan_job_delivered_again_replans_once() {
    use orchestrator::{
        domain::{Priority, TaskId},
        queue::{Dispatcher, Job},
    };
    // The replan takes a second, so duplicates of its job arrive while it runs and after.
    let fake = FakeOpenAi::start_with_delay(
        |request| if is_replan(request) { Duration::from_secs(1) } else { Duration::ZERO },
        |request| {
            if is_replan(request) {
                return tool_call(
                    "replan-1",
                    "submit_plan",
                    &json!({"steps": [{"title": "Gather A again", "instruction": "Gather A again.", "agent": "writer", "depends_on": []}]}),
                );
            }
            if is_planning(request) {
                return tool_call(
                    "plan-1",
                    "submit_plan",
                    &json!({"steps": [{"title": "Gather A", "instruction": "Gather A.", "agent": "writer", "depends_on": []}]}),
                );
            }
            let title = step_title(request);
            if title == "Gather A" {
                return (401, json!({"error": {"message": "source A is unavailable", "type": "invalid_request_error"}}));
            }
            answer(&format!("{title}: done."), 10, 2)
        },
    )
    .await;
    let app = TestApp::spawn_with(fake.settings(), 4).await;
    let body = json!({"user_id": "test-user", "description": "Gather A.", "replan": true});
    let id = app.client.submit(&body).await.expect("202 Accepted").id;
    crate::helpers::eventually(Duration::from_secs(10), "the replan to start", || async {
        (!events(&app.db, id, "task_replanning").await.is_empty()).then_some(())
    })
    .await;
    let duplicate = [Job::plan(TaskId(id), Priority::Normal)];
    app.app.queue.enqueue(&duplicate).await.unwrap();
    app.app.queue.enqueue(&duplicate).await.unwrap();
    let task = app.client.wait(id, Duration::from_secs(20)).await.unwrap().raw;
    assert_eq!(task["status"], "completed", "{task}");
    app.app.queue.enqueue(&duplicate).await.unwrap();
    // The late duplicate finds a running task: nothing to claim, nothing written.
    crate::helpers::eventually(Duration::from_secs(10), "the queue to drain", || async {
        (app.queued_jobs().await == 0).then_some(())
    })
    .await;
    assert_eq!(events(&app.db, id, "task_replanned").await.len(), 1);
    assert_eq!(fake.requests().iter().filter(|r| is_replan(r)).count(), 1, "the model was asked once");
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM plan_versions WHERE task_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(versions, 2);
    assert_eq!(app.client.task(id).await.unwrap().raw["replans"], 1);
    app.stop().await;
}
