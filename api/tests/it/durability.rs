//! Durable execution seen from outside: retries with backoff, cancellation, release on
//! shutdown, priorities, the plan cache, pre-seeded context and the worker registry.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use agents::{ChatRequest, ChatResponse, LlmClient, LlmError, Usage};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestApp, events, eventually, test_settings};

/// Fails the first `failures` calls for each step (by its prompt), then answers.
struct Flaky {
    failures: usize,
    seen: Mutex<HashMap<String, usize>>,
}

#[async_trait::async_trait]
impl LlmClient for Flaky {
    fn provider(&self) -> &str {
        "flaky"
    }
    fn model(&self) -> &str {
        "flaky-1"
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let prompt = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
        let calls = {
            let mut seen = self.seen.lock().unwrap();
            let n = seen.entry(prompt).or_default();
            *n += 1;
            *n
        };
        if calls <= self.failures {
            return Err(LlmError::Unavailable("scripted outage".into()));
        }
        Ok(ChatResponse {
            content: Some("done".into()),
            tool_calls: Vec::new(),
            usage: Usage { prompt_tokens: 3, completion_tokens: 1, cached_tokens: 0 },
            model: "flaky-1".into(),
        })
    }
}

#[tokio::test]
async fn a_failed_attempt_is_retried_with_backoff_and_then_succeeds() {
    let mut settings = test_settings();
    settings.retry_base_ms = 200;
    let app = TestApp::spawn_with(settings, 0).await;
    let shutdown = CancellationToken::new();
    let flaky = Arc::new(Flaky { failures: 1, seen: Mutex::default() });
    let worker = tokio::spawn(app.app.worker_with_llm("flaky-worker", flaky).run(shutdown.clone()));

    let id = app.submit("Write a short note.").await;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    let step = &task["steps"][0];
    assert_eq!(step["attempt"], 2, "{step}");
    assert_eq!(events(&app.db, id, "step_retrying").await.len(), 1);
    assert_eq!(events(&app.db, id, "step_started").await.len(), 2);
    // The retry waited for its backoff (at least half the base, by the jitter's floor).
    let (retried_at, restarted_at): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT (SELECT created_at FROM task_events WHERE task_id = $1 AND kind = 'step_retrying'),
                (SELECT max(created_at) FROM task_events WHERE task_id = $1 AND kind = 'step_started')",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(restarted_at - retried_at >= chrono::Duration::milliseconds(100), "{retried_at} → {restarted_at}");
    shutdown.cancel();
    worker.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn the_last_failed_attempt_fails_the_task_and_skips_the_rest() {
    let mut settings = test_settings();
    settings.retry_base_ms = 50;
    let app = TestApp::spawn_with(settings, 0).await;
    let shutdown = CancellationToken::new();
    let flaky = Arc::new(Flaky { failures: usize::MAX, seen: Mutex::default() });
    let worker = tokio::spawn(app.app.worker_with_llm("failing-worker", flaky).run(shutdown.clone()));

    let body = json!({"user_id": "u", "description": "Research it. Then write it up.", "max_attempts": 2});
    let id = app.client.submit(&body).await.unwrap().id;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert!(task["error"].as_str().unwrap().contains("scripted outage"), "{task}");
    assert!(task["error"].as_str().unwrap().contains("after 2 attempt(s)"), "{task}");
    let steps = task["steps"].as_array().unwrap();
    assert_eq!((steps[0]["status"].as_str(), steps[0]["attempt"].as_i64()), (Some("failed"), Some(2)));
    assert_eq!(steps[0]["max_attempts"], 2);
    assert_eq!(steps[1]["status"], "skipped");
    shutdown.cancel();
    worker.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn cancelling_stops_the_task_and_a_finished_task_answers_409() {
    let mut settings = test_settings();
    settings.offline_llm_delay_ms = 400;
    let app = TestApp::spawn_with(settings, 1).await;
    let id = app.submit("1. Research A\n2. Analyze B\n3. Implement C\n4. Write D").await;
    eventually(Duration::from_secs(10), "the first step to start", || async {
        (!events(&app.db, id, "step_started").await.is_empty()).then_some(())
    })
    .await;

    let response = app.http.post(app.url(&format!("/tasks/{id}/cancel"))).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");

    // The running step stops; nothing after it ever starts.
    let task = eventually(Duration::from_secs(10), "every step to settle", || async {
        let task = app.client.task(id).await.unwrap().raw;
        let settled = task["steps"].as_array().unwrap().iter().all(|s| s["status"] != "running");
        settled.then_some(task)
    })
    .await;
    assert_eq!(task["status"], "cancelled");
    let statuses: Vec<&str> = task["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(&statuses[1..], ["cancelled", "cancelled", "cancelled"], "{statuses:?}");
    assert_eq!(events(&app.db, id, "step_started").await.len(), 1);

    let again = app.http.post(app.url(&format!("/tasks/{id}/cancel"))).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 409);
    let missing = app.http.post(app.url(&format!("/tasks/{}/cancel", Uuid::new_v4()))).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    app.stop().await;
}

#[tokio::test]
async fn a_step_still_running_after_the_grace_period_is_released_to_another_worker() {
    let mut settings = test_settings();
    settings.offline_llm_delay_ms = 1500;
    settings.shutdown_grace_secs = 0;
    let app = TestApp::spawn_with(settings, 0).await;
    let first = CancellationToken::new();
    let worker = tokio::spawn(app.app.worker("leaving").run(first.clone()));
    let id = app.submit("Write a report.").await;
    eventually(Duration::from_secs(10), "the step to start", || async {
        (!events(&app.db, id, "step_started").await.is_empty()).then_some(())
    })
    .await;
    first.cancel();
    worker.await.unwrap();
    assert_eq!(events(&app.db, id, "step_released").await.len(), 1);

    let second = CancellationToken::new();
    let taker = tokio::spawn(app.app.worker("taking-over").run(second.clone()));
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed");
    // The interrupted attempt was not charged.
    assert_eq!(task["steps"][0]["attempt"], 1);
    second.cancel();
    taker.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn high_priority_tasks_are_dispatched_before_low_ones() {
    let mut settings = test_settings();
    settings.worker_concurrency = 1;
    let app = TestApp::spawn_with(settings, 0).await;
    let submit = |priority: &'static str, n: usize| {
        let client = app.client.clone();
        async move {
            let body = json!({"user_id": "p", "description": format!("Write note {n}."), "priority": priority});
            client.submit(&body).await.unwrap().id
        }
    };
    let mut low = Vec::new();
    for n in 0..4 {
        low.push(submit("low", n).await);
    }
    let mut high = Vec::new();
    for n in 0..4 {
        high.push(submit("high", n).await);
    }
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(app.app.worker("one-at-a-time").run(shutdown.clone()));
    for id in low.iter().chain(&high) {
        assert_eq!(app.wait(*id).await["status"], "completed");
    }
    let first_low = sqlx::query_scalar::<_, i64>(
        "SELECT min(id) FROM task_events WHERE kind = 'task_planning' AND task_id = ANY($1)",
    )
    .bind(&low)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let last_high = sqlx::query_scalar::<_, i64>(
        "SELECT max(id) FROM task_events WHERE kind = 'task_completed' AND task_id = ANY($1)",
    )
    .bind(&high)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(last_high < first_low, "every high task finished before any low task was planned");
    shutdown.cancel();
    worker.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn resubmitting_a_task_reuses_its_plan_unless_told_not_to() {
    let app = TestApp::spawn(1).await;
    let description = "Research caching. Then write a summary.";
    let first = app.submit(description).await;
    app.wait(first).await;
    let second = app.submit("Research   caching.  Then write a summary.").await;
    app.wait(second).await;
    let body = json!({"user_id": "u", "description": description, "use_plan_cache": false});
    let third = app.client.submit(&body).await.unwrap().id;
    app.wait(third).await;

    let from_cache = |id: Uuid| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT (data->>'from_cache')::boolean FROM task_events WHERE task_id = $1 AND kind = 'task_planned'",
            )
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    assert!(!from_cache(first).await);
    assert!(from_cache(second).await);
    assert!(!from_cache(third).await);
    app.stop().await;
}

#[tokio::test]
async fn context_given_at_submission_is_the_tasks_short_term_memory() {
    let app = TestApp::spawn(0).await;
    let body = json!({"user_id": "u", "description": "Write a plan.", "context": [
        {"role": "user", "content": "The budget is 5 EUR."},
        {"role": "assistant", "content": "Noted: 5 EUR."}
    ]});
    let id = app.client.submit(&body).await.unwrap().id;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT role, content FROM task_messages WHERE task_id = $1 AND step_id IS NULL ORDER BY id")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [("user".to_owned(), "The budget is 5 EUR.".to_owned()), ("assistant".to_owned(), "Noted: 5 EUR.".to_owned())]
    );
    let bad = json!({"user_id": "u", "description": "d", "context": [{"role": "robot", "content": "x"}]});
    let response = app.http.post(app.url("/tasks")).json(&bad).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 422);
    assert_eq!(response.json::<Value>().await.unwrap()["field"], "context[0].role");
    app.stop().await;
}

#[tokio::test]
async fn live_workers_and_their_jobs_are_listed() {
    let mut settings = test_settings();
    settings.offline_llm_delay_ms = 3000;
    let app = TestApp::spawn_with(settings, 1).await;
    let id = app.submit("Write a long essay.").await;
    let workers = eventually(Duration::from_secs(10), "a heartbeat showing the running step", || async {
        let body: Value = app.http.get(app.url("/workers")).send().await.unwrap().json().await.unwrap();
        let busy = body["workers"].as_array().unwrap().iter().any(|w| {
            w["in_flight"].as_array().unwrap().iter().any(|j| j["task_id"] == id.to_string() && j["kind"] == "step")
        });
        busy.then_some(body)
    })
    .await;
    assert_eq!(workers["workers"].as_array().unwrap().len(), 1, "{workers}");
    app.stop().await;
}
