//! Long-term memory through the API and in the agents' work: the `/memory` routes, owner
//! isolation, memories in step prompts, task results remembered, and switching embedders.

use std::time::Duration;

use orchestrator::{app::App, config::EmbedderKind};
use serde_json::{Value, json};

use crate::helpers::TestApp;

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = app.http.post(app.url(path)).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn memories_are_stored_found_read_and_deleted_by_their_owner_only() {
    let app = TestApp::spawn(0).await;
    let response = app
        .http
        .post(app.url("/memory"))
        .json(&json!({"user_id": "ann", "content": "Ann prefers Postgres for queues.", "metadata": {"topic": "db"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(location, format!("/memory/{id}"));
    assert_eq!(created["namespace"], "default");
    post(&app, "/memory", json!({"user_id": "ann", "content": "The office plant needs water on Fridays."})).await;
    post(&app, "/memory", json!({"user_id": "bob", "content": "Bob prefers Postgres for queues too."})).await;

    let (status, found) =
        post(&app, "/memory/search", json!({"user_id": "ann", "query": "which database for queues", "limit": 5})).await;
    assert_eq!(status, 200, "{found}");
    let items = found["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "both of ann's items, none of bob's: {found}");
    assert_eq!(items[0]["id"], id, "the closest first: {found}");
    assert!(items[0]["score"].as_f64().unwrap() > items[1]["score"].as_f64().unwrap());
    assert!(items.iter().all(|i| i["user_id"] == "ann"));

    let (_, filtered) =
        post(&app, "/memory/search", json!({"user_id": "ann", "query": "anything", "metadata": {"topic": "db"}})).await;
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1, "{filtered}");

    let get = |user: &'static str| app.http.get(app.url(&format!("/memory/{id}?user_id={user}"))).send();
    assert_eq!(get("ann").await.unwrap().status().as_u16(), 200);
    assert_eq!(get("bob").await.unwrap().status().as_u16(), 404, "another user's id answers 404");
    let delete = |user: &'static str| app.http.delete(app.url(&format!("/memory/{id}?user_id={user}"))).send();
    assert_eq!(delete("bob").await.unwrap().status().as_u16(), 404);
    assert_eq!(delete("ann").await.unwrap().status().as_u16(), 204);
    assert_eq!(get("ann").await.unwrap().status().as_u16(), 404);
    let (_, after) = post(&app, "/memory/search", json!({"user_id": "ann", "query": "database for queues"})).await;
    assert!(after["items"].as_array().unwrap().iter().all(|i| i["id"] != id), "deleted items are not found: {after}");
    app.stop().await;
}

#[tokio::test]
async fn bad_memory_requests_name_the_field_and_store_nothing() {
    let app = TestApp::spawn(0).await;
    let long = "x".repeat(8001);
    let cases = [
        ("/memory", json!({"user_id": "u", "content": "  "}), 422, "content"),
        ("/memory", json!({"user_id": "u", "content": long}), 422, "content"),
        ("/memory", json!({"user_id": "u", "content": "c", "metadata": [1]}), 422, "metadata"),
        ("/memory", json!({"user_id": "u", "content": "c", "namespace": "no spaces"}), 422, "namespace"),
        ("/memory", json!({"content": "c"}), 422, "user_id"),
        ("/memory/search", json!({"user_id": "u", "query": ""}), 422, "query"),
        ("/memory/search", json!({"user_id": "u", "query": "q", "limit": 0}), 422, "limit"),
        ("/memory/search", json!({"user_id": "u", "query": "q", "limit": 101}), 422, "limit"),
        ("/memory/search", json!({"user_id": "u", "query": "q", "colour": 1}), 400, "colour"),
    ];
    for (path, body, status, field) in cases {
        let (got, problem) = post(&app, path, body.clone()).await;
        assert_eq!(got, status, "{path} {body}: {problem}");
        assert_eq!(problem["field"], field, "{path} {body}: {problem}");
    }
    let bad_id = app.http.get(app.url("/memory/abc?user_id=u")).send().await.unwrap();
    assert_eq!(bad_id.status().as_u16(), 400);
    let no_user = app.http.get(app.url("/memory/1")).send().await.unwrap();
    assert_eq!(no_user.status().as_u16(), 400);
    assert_eq!(app.count("SELECT count(*) FROM memory_items").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn steps_see_their_users_memories_and_results_are_remembered() {
    let app = TestApp::spawn(1).await;
    post(&app, "/memory", json!({"user_id": "test-user", "content": "The launch codename is BLUEBIRD."})).await;
    post(&app, "/memory", json!({"user_id": "someone-else", "content": "The launch codename is REDFOX."})).await;

    let id = app.submit("Recall the launch codename. Then write a one-line summary.").await;
    // A request woken by the task's end finds its result remembered (a poller may read the
    // completed status a moment before).
    let task = app.client.task_waiting(id, Duration::from_secs(10)).await.unwrap().task.raw;
    assert_eq!(task["status"], "completed", "{task}");
    let prompts: Vec<String> = sqlx::query_scalar(
        "SELECT content FROM task_messages WHERE task_id = $1 AND role = 'user' AND step_id IS NOT NULL ORDER BY id",
    )
    .bind(id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(prompts[0].contains("BLUEBIRD"), "the user's memory is in the prompt: {}", prompts[0]);
    assert!(!prompts.iter().any(|p| p.contains("REDFOX")), "another user's memory never is");

    let (_, found) = post(
        &app,
        "/memory/search",
        json!({"user_id": "test-user", "query": "launch codename summary", "namespace": "task-results"}),
    )
    .await;
    let items = found["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{found}");
    assert_eq!(items[0]["source_task_id"], id.to_string());
    app.stop().await;
}

#[tokio::test]
async fn a_new_embedder_is_refused_until_memories_are_re_embedded() {
    let app = TestApp::spawn(0).await;
    post(&app, "/memory", json!({"user_id": "u", "content": "Keep the receipts."})).await;
    let mut settings = app.app.settings.clone();
    settings.data_dir = crate::helpers::data_dir(&format!("{}-second", settings.redis_prefix));
    settings.embedder = EmbedderKind::Hashing;
    settings.embedding_dim = 256;

    let err = App::connect(settings.clone()).await.err().expect("a different embedder is refused");
    let message = format!("{err:#}");
    assert!(message.contains("orchestrator memory reembed"), "{message}");

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["memory", "reembed"])
        .env("DATABASE_URL", &settings.database_url)
        .env("EMBEDDING_DIM", "256")
        .env("RUST_LOG", "off")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "re-embedded 1 memories");

    let reopened = App::connect(settings.clone()).await.expect("starts with the new embedder");
    reopened.memory.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&settings.data_dir);
    app.stop().await;
}
