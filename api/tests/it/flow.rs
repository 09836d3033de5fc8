//! A task through every layer: API → Redis → planner → agents → Postgres → API.

use serde_json::Value;

use crate::helpers::TestApp;

const SEED: &str = "Analyze the requirements and build a plan. Then implement core APIs.";

#[tokio::test]
async fn the_seed_task_completes_with_steps_result_and_totals() {
    let app = TestApp::spawn(1).await;
    let id = app.submit(SEED).await;
    let task = app.wait(id).await;

    assert_eq!(task["status"], "completed", "{task}");
    let steps = task["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{task}");
    assert_eq!(steps[0]["agent"], "analyst");
    assert_eq!(steps[1]["agent"], "engineer");
    assert_eq!(steps[0]["depends_on"], serde_json::json!([]));
    assert_eq!(steps[1]["depends_on"], serde_json::json!([steps[0]["id"]]));
    for step in steps {
        assert_eq!(step["status"], "completed");
        assert_eq!(step["attempt"], 1);
        assert!(step["output"].as_str().is_some_and(|o| !o.is_empty()), "{step}");
        for ts in ["created_at", "started_at", "completed_at"] {
            assert!(step[ts].is_string(), "{ts} in {step}");
        }
    }
    assert_eq!(task["result"], steps[1]["output"]);
    assert!(task["result"].as_str().unwrap().contains("produced offline"));
    assert!(task["tokens_in"].as_i64().unwrap() > 0);
    assert!(task["tokens_out"].as_i64().unwrap() > 0);
    assert_eq!(task["cost_usd"], 0.0);

    // Totals are the sums of the llm_calls rows, for the task and for each step.
    let (calls, tokens_in, tokens_out): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(prompt_tokens), 0)::bigint, coalesce(sum(completion_tokens), 0)::bigint
         FROM llm_calls WHERE task_id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(calls, 2);
    assert_eq!(task["tokens_in"], tokens_in);
    assert_eq!(task["tokens_out"], tokens_out);
    let step_in: i64 = steps.iter().map(|s| s["tokens_in"].as_i64().unwrap()).sum();
    assert_eq!(step_in, tokens_in);
    app.stop().await;
}

#[tokio::test]
async fn every_transition_is_in_the_event_log_in_order() {
    let app = TestApp::spawn(1).await;
    let id = app.submit(SEED).await;
    app.wait(id).await;
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM task_events WHERE task_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        kinds,
        [
            "task_created",
            "task_planning",
            "task_planned",
            "step_ready",
            "step_started",
            "step_completed",
            "step_ready",
            "step_started",
            "step_completed",
            "task_completed"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_numbered_list_becomes_a_chain_of_specialised_steps() {
    let app = TestApp::spawn(1).await;
    let id = app
        .submit("1. Research existing job queues\n2. Analyze their trade-offs\n3. Implement a prototype\n4. Write a summary")
        .await;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    let agents: Vec<&str> = task["steps"].as_array().unwrap().iter().map(|s| s["agent"].as_str().unwrap()).collect();
    assert_eq!(agents, ["researcher", "analyst", "engineer", "writer"]);
    let listed: Value = app
        .http
        .get(app.url("/tasks?user_id=test-user&status=completed&limit=20"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], task["id"]);
    app.stop().await;
}
