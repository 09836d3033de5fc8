//! People in the loop, through the service with a fake provider: a tool that requires
//! approval stops its step (no worker slot, no attempt) until a person approves, denies or
//! edits the call, or it expires; the wait survives a restart of every process; a call is
//! decided once and only by its task's owner or an admin.

use std::time::Duration;

use orchestrator::auth::{AuthMode, KeyStore};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    fake_llm::{FakeOpenAi, answer, is_planning, tool_call, tool_replies},
    helpers::{TestApp, events, eventually},
};

/// One analyst step that asks the calculator for `6 * 7`, then answers with what the tool
/// replied (or, denied, with the denial it read).
async fn calculating_provider() -> FakeOpenAi {
    FakeOpenAi::start(|request| {
        if is_planning(request) {
            let step = json!({"title": "Multiply", "instruction": "Compute 6 * 7.", "agent": "analyst",
                              "depends_on": []});
            return tool_call("plan-1", "submit_plan", &json!({"steps": [step]}));
        }
        match tool_replies(request).last() {
            None => tool_call("c1", "calculator", &json!({"expression": "6 * 7"})),
            Some(reply) => answer(&format!("the tool said: {reply}"), 100, 20),
        }
    })
    .await
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn submit_guarded(app: &TestApp, extra: Value) -> Uuid {
    let mut body = json!({"user_id": "test-user", "description": "Multiply six by seven.",
                          "require_approval": ["calculator"]});
    body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    app.client.submit(&body).await.expect("202 Accepted").id
}

/// Waits until the task requires action, and returns it.
async fn until_waiting(app: &TestApp, id: Uuid) -> Value {
    eventually(Duration::from_secs(20), "the task to wait for a person", || async {
        let task = app.client.task(id).await.unwrap().raw;
        (task["status"] == "requires_action").then_some(task)
    })
    .await
}

async fn tool_call_statuses(app: &TestApp, id: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT status FROM tool_calls WHERE task_id = $1 ORDER BY created_at, id")
        .bind(id)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_approved_call_runs_once_a_person_approves_it_and_only_once() {
    let fake = calculating_provider().await;
    let mut settings = fake.settings();
    settings.webhook_allow_private = true;
    let app = TestApp::spawn_with(settings, 1).await;
    let id = submit_guarded(&app, json!({"callback_url": "http://127.0.0.1:9/hook"})).await;

    let task = until_waiting(&app, id).await;
    assert_eq!(task["required_action"], "tool_approval");
    let pending = task["pending_approvals"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{task}");
    assert_eq!(pending[0]["tool"], "calculator");
    assert_eq!(pending[0]["arguments"], json!({"expression": "6 * 7"}));
    assert_eq!(pending[0]["agent"], "analyst");
    assert_eq!(pending[0]["status"], "pending");
    assert_eq!(pending[0]["step_id"], task["steps"][0]["id"]);
    let call_id = pending[0]["call_id"].as_str().unwrap().to_owned();
    // The step waits without a worker: no lease, no attempt charged, the call not run.
    assert_eq!(task["steps"][0]["status"], "waiting");
    let leased: Option<String> = sqlx::query_scalar("SELECT lease_owner FROM steps WHERE task_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(leased, None);
    assert_eq!(tool_call_statuses(&app, id).await, ["awaiting_approval"]);
    assert_eq!(events(&app.db, id, "approval_requested").await.len(), 1);
    let hooks: Vec<String> = sqlx::query_scalar("SELECT event FROM webhook_deliveries WHERE task_id = $1")
        .bind(id)
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(hooks, ["task.requires_action"]);
    let path = format!("/tasks/{id}/approvals/{call_id}");
    let (status, decided) = call(&app, Method::POST, &path, None, Some(json!({"decision": "approve"}))).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["decided_by"], "user:anonymous");
    let (status, again) = call(&app, Method::POST, &path, None, Some(json!({"decision": "deny"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "a second decision: {again}");

    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert!(task["result"].as_str().unwrap().contains("42"), "{task}");
    assert_eq!(task["required_action"], Value::Null);
    assert_eq!(task["steps"][0]["attempt"], 1, "the wait charged no attempt");
    assert_eq!(tool_call_statuses(&app, id).await, ["awaiting_approval", "ok"]);
    assert_eq!(events(&app.db, id, "approval_decided").await.len(), 1);
    // The model was asked once for the call and once after it: nothing asked it again while
    // the call waited, and no turn was repeated.
    let turns = fake.requests().iter().filter(|r| !is_planning(r)).count();
    assert_eq!(turns, 2);
    let (_, listed) = call(&app, Method::GET, &format!("/tasks/{id}/approvals"), None, None).await;
    assert_eq!(listed["items"][0]["status"], "approved", "{listed}");
    app.stop().await;
}

#[tokio::test]
async fn a_denied_call_does_not_run_and_the_model_reads_the_reason() {
    let fake = calculating_provider().await;
    let app = TestApp::spawn_with(fake.settings(), 1).await;
    let id = submit_guarded(&app, json!({})).await;
    let task = until_waiting(&app, id).await;
    let call_id = task["pending_approvals"][0]["call_id"].as_str().unwrap().to_owned();

    let path = format!("/tasks/{id}/approvals/{call_id}");
    let body = json!({"decision": "deny", "reason": "use mental arithmetic", "arguments": {"expression": "1"}});
    let (status, problem) = call(&app, Method::POST, &path, None, Some(body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "arguments with a denial: {problem}");
    assert_eq!(problem["field"], "arguments");
    let body = json!({"decision": "deny", "reason": "use mental arithmetic"});
    let (status, decided) = call(&app, Method::POST, &path, None, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{decided}");

    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    let result = task["result"].as_str().unwrap();
    assert!(result.contains("use mental arithmetic") && !result.contains("42"), "{result}");
    assert_eq!(tool_call_statuses(&app, id).await, ["awaiting_approval", "denied"]);
    app.stop().await;
}

#[tokio::test]
async fn an_approval_may_change_the_arguments_within_the_tool_s_schema() {
    let fake = calculating_provider().await;
    let app = TestApp::spawn_with(fake.settings(), 1).await;
    let id = submit_guarded(&app, json!({})).await;
    let task = until_waiting(&app, id).await;
    let call_id = task["pending_approvals"][0]["call_id"].as_str().unwrap().to_owned();
    let path = format!("/tasks/{id}/approvals/{call_id}");

    for bad in [json!({"formula": "2 * 3"}), json!({"expression": 6})] {
        let body = json!({"decision": "approve", "arguments": bad});
        let (status, problem) = call(&app, Method::POST, &path, None, Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["field"], "arguments");
    }
    let (status, problem) = call(&app, Method::POST, &path, None, Some(json!({"decision": "maybe"}))).await;
    assert!(status.is_client_error(), "{problem}");
    // None of that decided anything.
    assert_eq!(app.client.task(id).await.unwrap().raw["status"], "requires_action");

    let body = json!({"decision": "approve", "arguments": {"expression": "2 * 3"}, "reason": "smaller"});
    let (status, decided) = call(&app, Method::POST, &path, None, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["edited_arguments"], json!({"expression": "2 * 3"}));

    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    let result = task["result"].as_str().unwrap();
    assert!(result.contains("changed its arguments") && result.contains('6') && !result.contains("42"), "{result}");
    let ran: Value = sqlx::query_scalar("SELECT arguments FROM tool_calls WHERE task_id = $1 AND status = 'ok'")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(ran, json!({"expression": "2 * 3"}), "the record shows what ran");
    app.stop().await;
}

#[tokio::test]
async fn an_unanswered_call_expires_as_a_denial() {
    let fake = calculating_provider().await;
    let mut settings = fake.settings();
    settings.approval_timeout_secs = 1;
    settings.reconcile_interval_ms = 200;
    let app = TestApp::spawn_with(settings, 1).await;
    let id = submit_guarded(&app, json!({})).await;
    let task = until_waiting(&app, id).await;
    let call_id = task["pending_approvals"][0]["call_id"].as_str().unwrap().to_owned();

    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert!(task["result"].as_str().unwrap().contains("nobody approved or denied this call in time"), "{task}");
    let (_, listed) = call(&app, Method::GET, &format!("/tasks/{id}/approvals"), None, None).await;
    assert_eq!(listed["items"][0]["status"], "expired", "{listed}");
    assert_eq!(listed["items"][0]["decided_by"], "system");
    let path = format!("/tasks/{id}/approvals/{call_id}");
    let (status, _) = call(&app, Method::POST, &path, None, Some(json!({"decision": "approve"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "too late");
    app.stop().await;
}

#[tokio::test]
async fn a_waiting_task_survives_a_restart_of_every_process() {
    let fake = calculating_provider().await;
    let mut settings = fake.settings();
    settings.reconcile_interval_ms = 200;
    settings.reconcile_min_age_ms = 300;
    let app = TestApp::spawn_with(settings, 1).await;
    let id = submit_guarded(&app, json!({})).await;
    let task = until_waiting(&app, id).await;
    let call_id = task["pending_approvals"][0]["call_id"].as_str().unwrap().to_owned();

    // The API, the workers and Redis (every queue and coordination key) go away.
    let app = app.restart(1, true).await;
    let task = app.client.task(id).await.unwrap().raw;
    assert_eq!(task["status"], "requires_action", "{task}");
    assert_eq!(task["pending_approvals"][0]["call_id"], call_id.as_str());

    let path = format!("/tasks/{id}/approvals/{call_id}");
    let (status, decided) = call(&app, Method::POST, &path, None, Some(json!({"decision": "approve"}))).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert!(task["result"].as_str().unwrap().contains("42"), "{task}");
    assert_eq!(tool_call_statuses(&app, id).await, ["awaiting_approval", "ok"]);
    app.stop().await;
}

#[tokio::test]
async fn only_the_owner_or_an_admin_decides_and_cancelling_ends_the_wait() {
    let fake = calculating_provider().await;
    let mut settings = fake.settings();
    settings.auth.mode = Some(AuthMode::Required);
    settings.auth.cache_secs = 0;
    let app = TestApp::spawn_with(settings, 1).await;
    let store = KeyStore::new(app.db.clone());
    let ann = store.create("ann", "", false).await.unwrap().secret;
    let bob = store.create("bob", "", false).await.unwrap().secret;
    let admin = store.create("ops", "", true).await.unwrap().secret;

    let body = json!({"description": "Multiply six by seven.", "require_approval": ["calculator", "calculator"]});
    let (status, created) = call(&app, Method::POST, "/tasks", Some(&ann), Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(created["require_approval"], json!(["calculator"]), "repeats are dropped");
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let waiting = eventually(Duration::from_secs(20), "the task to wait for a person", || async {
        let (_, task) = call(&app, Method::GET, &format!("/tasks/{id}"), Some(&ann), None).await;
        (task["status"] == "requires_action").then_some(task)
    })
    .await;
    let call_id = waiting["pending_approvals"][0]["call_id"].as_str().unwrap().to_owned();
    let path = format!("/tasks/{id}/approvals/{call_id}");

    let (status, _) = call(&app, Method::POST, &path, Some(&bob), Some(json!({"decision": "approve"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another user does not see the task");
    let (status, _) = call(&app, Method::GET, &format!("/tasks/{id}/approvals"), Some(&bob), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let unknown = format!("/tasks/{id}/approvals/{}", Uuid::now_v7());
    let (status, _) = call(&app, Method::POST, &unknown, Some(&ann), Some(json!({"decision": "approve"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no such call");
    let bad_id = format!("/tasks/{id}/approvals/nope");
    let (status, problem) = call(&app, Method::POST, &bad_id, Some(&ann), Some(json!({"decision": "approve"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["field"], "call_id");

    // An admin may read it; the owner cancels, which ends the wait.
    let (status, listed) = call(&app, Method::GET, &format!("/tasks/{id}/approvals"), Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["items"][0]["status"], "pending");
    let (status, cancelled) = call(&app, Method::POST, &format!("/tasks/{id}/cancel"), Some(&ann), None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["steps"][0]["status"], "cancelled");
    assert_eq!(cancelled["required_action"], Value::Null);
    let (status, _) = call(&app, Method::POST, &path, Some(&admin), Some(json!({"decision": "approve"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "the call was cancelled with its task");
    let (_, listed) = call(&app, Method::GET, &format!("/tasks/{id}/approvals"), Some(&admin), None).await;
    assert_eq!(listed["items"][0]["status"], "cancelled");
    app.stop().await;
}

#[tokio::test]
async fn require_approval_names_tools_of_the_deployment() {
    let app = TestApp::spawn(0).await;
    let body = json!({"user_id": "u", "description": "x", "require_approval": ["calculator", "shell"]});
    let (status, problem) = call(&app, Method::POST, "/tasks", None, Some(body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], "require_approval[1]");
    assert_eq!(app.count("SELECT count(*) FROM tasks").await, 0, "nothing was stored");
    app.stop().await;
}
