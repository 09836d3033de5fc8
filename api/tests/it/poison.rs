//! Poison work ends: text Postgres refuses, steps that kill their workers, jobs that keep
//! failing, two deployments sharing one Redis, and re-driving a failed task.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    fake_llm::{FakeOpenAi, answer, is_planning, tool_call, tool_replies},
    helpers::{TestApp, events, eventually, slow_worker_process, test_settings},
};

#[tokio::test]
async fn nul_from_the_model_and_from_a_tool_is_stored_as_the_replacement_character() {
    // The model passes JSON text whose string holds an escaped NUL, so the tool's result has
    // a real NUL; its answer then has one too.
    let fake = FakeOpenAi::start(|request| {
        if is_planning(request) {
            let plan = json!({"steps": [{"title": "Extract", "instruction": "Extract a.", "agent": "analyst", "depends_on": []}]});
            return tool_call("p", "submit_plan", &plan);
        }
        match tool_replies(request).len() {
            0 => tool_call("c1", "json_extract", &json!({"json": "{\"a\": \"bin\\u0000ary\"}", "path": "$.a"})),
            _ => answer("ok\u{0}", 10, 2),
        }
    })
    .await;
    let app = TestApp::spawn_with(fake.settings(), 1).await;

    let id = app.submit("Extract the field.").await;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"], "ok\u{FFFD}");
    assert_eq!(task["steps"][0]["output"], "ok\u{FFFD}");
    assert_eq!(task["steps"][0]["attempt"], 1, "the step ran once");

    let calls: Value =
        app.http.get(app.url(&format!("/tasks/{id}/tool-calls"))).send().await.unwrap().json().await.unwrap();
    let call = &calls["items"][0];
    assert_eq!(call["status"], "ok", "{call}");
    assert_eq!(call["result"]["matches"], json!(["bin\u{FFFD}ary"]));
    // The conversation was stored with the replacement, and the model got it back.
    let answers: Vec<String> =
        sqlx::query_scalar("SELECT content FROM task_messages WHERE task_id = $1 AND role = 'assistant'")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert!(answers.contains(&"ok\u{FFFD}".to_owned()), "{answers:?}");
    assert!(tool_replies(fake.requests().last().unwrap())[0].contains('\u{FFFD}'));
    app.stop().await;
}

#[tokio::test]
async fn a_step_that_kills_its_worker_on_every_attempt_ends_attempts_exhausted() {
    let mut settings = test_settings();
    settings.lease_secs = 1;
    settings.visibility_timeout_secs = 2;
    settings.reconcile_interval_ms = 300;
    settings.reconcile_min_age_ms = 500;
    let app = TestApp::spawn_with(settings.clone(), 0).await;
    let body = json!({"user_id": "test-user", "description": "Write a report.", "max_attempts": 2});
    let id = app.client.submit(&body).await.expect("202").id;

    // Two attempts, each on a worker process killed mid-step.
    for n in 1..=2 {
        let mut child = slow_worker_process(&settings, &format!("killed-{n}"));
        eventually(Duration::from_secs(20), "the worker process to start an attempt", || async {
            (events(&app.db, id, "step_started").await.len() == n).then_some(())
        })
        .await;
        child.start_kill().unwrap(); // SIGKILL: no drain, no release
        child.wait().await.unwrap();
    }

    // A healthy worker finds the step's last lease expired and no attempt left.
    let shutdown = CancellationToken::new();
    let survivor = tokio::spawn(app.app.worker("survivor").run(shutdown.clone()));
    let task = app.wait(id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error_code"], "attempts_exhausted", "{task}");
    assert_eq!(task["steps"][0]["status"], "failed");
    assert_eq!(task["steps"][0]["attempt"], 2);
    assert_eq!(events(&app.db, id, "step_started").await.len(), 2, "the step ran twice, not a third time");
    shutdown.cancel();
    survivor.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_job_that_fails_on_every_delivery_is_dead_lettered_and_its_work_fails() {
    let mut settings = test_settings();
    settings.lease_secs = 1;
    settings.visibility_timeout_secs = 2;
    settings.job_max_deliveries = 3;
    let app = TestApp::spawn_with(settings, 1).await;
    // A fault the worker cannot get past: every claim of this task's steps errors in Postgres.
    sqlx::raw_sql(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'poisoned step'; END $$;
         CREATE TRIGGER poison BEFORE UPDATE ON steps FOR EACH ROW
         WHEN (NEW.status = 'running' AND NEW.instruction LIKE '%poison-marker%') EXECUTE FUNCTION poison();",
    )
    .execute(&app.db)
    .await
    .unwrap();

    let id = app.submit("Write about poison-marker.").await;
    let task = app.client.wait(id, Duration::from_secs(30)).await.expect("the task ends").raw;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error_code"], "dead_lettered", "{task}");
    assert!(task["error"].as_str().unwrap().contains("3 deliveries"), "{task}");

    let listed: Value = app.http.get(app.url("/admin/dead-letters")).send().await.unwrap().json().await.unwrap();
    let letters = listed["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{listed}");
    assert_eq!(letters[0]["task_id"], json!(id));
    assert_eq!(letters[0]["kind"], "step");
    assert_eq!(letters[0]["deliveries"], 3);
    assert!(letters[0]["reason"].as_str().unwrap().contains("poisoned step"), "{listed}");
    assert_eq!(app.queued_jobs().await, 0, "the job left the dispatch stream");

    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("orchestrator_jobs_dead_lettered_total{kind=\"step\"} 1"), "{metrics}");
    let bad = app.http.get(app.url("/admin/dead-letters?limit=0")).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    app.stop().await;
}

#[tokio::test]
async fn two_deployments_on_one_redis_and_prefix_keep_to_their_own_jobs() {
    // Same Redis, same prefix, different databases, a slow model: each worker takes jobs
    // from its own streams only, so no task waits for a reconciler.
    let mut first = test_settings();
    first.offline_llm_delay_ms = 100;
    first.reconcile_min_age_ms = 60_000;
    let mut second = test_settings();
    second.redis_prefix = first.redis_prefix.clone();
    second.offline_llm_delay_ms = 100;
    second.reconcile_min_age_ms = 60_000;
    let a = TestApp::spawn_with(first, 1).await;
    let b = TestApp::spawn_with(second, 1).await;
    assert_ne!(a.app.redis_namespace, b.app.redis_namespace);

    let (notes, memos): (Vec<String>, Vec<String>) =
        (0..5).map(|n| (format!("Write note {n}."), format!("Write memo {n}."))).unzip();
    let ids_a: Vec<Uuid> = futures_util::future::join_all(notes.iter().map(|d| a.submit(d))).await;
    let ids_b: Vec<Uuid> = futures_util::future::join_all(memos.iter().map(|d| b.submit(d))).await;
    for (app, ids) in [(&a, &ids_a), (&b, &ids_b)] {
        for id in ids {
            let task = app.wait(*id).await;
            assert_eq!(task["status"], "completed", "{task}");
        }
    }
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_failed_task_is_retried_from_where_it_failed() {
    // The second step fails on its first run and succeeds on the second.
    let fail_first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let fail = fail_first.clone();
    let fake = FakeOpenAi::start(move |request| {
        if is_planning(request) {
            let plan = json!({"steps": [
                {"title": "Gather", "instruction": "Gather facts.", "agent": "researcher", "depends_on": []},
                {"title": "Write", "instruction": "Write it.", "agent": "writer", "depends_on": [0]}
            ]});
            return tool_call("p", "submit_plan", &plan);
        }
        if crate::fake_llm::step_title(request) == "Write" && fail.load(std::sync::atomic::Ordering::SeqCst) {
            return (400, json!({"error": {"message": "bad request", "type": "invalid_request_error"}}));
        }
        answer("fine", 10, 2)
    })
    .await;
    let mut settings = fake.settings();
    settings.llm_max_retries = 0;
    let app = TestApp::spawn_with(settings, 1).await;

    let id = app.submit("Gather and write.").await;
    let failed = app.wait(id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let gathered = failed["steps"][0]["output"].clone();
    assert_eq!(failed["steps"][0]["status"], "completed");
    let gather_calls =
        |n: usize| fake.requests().iter().filter(|r| crate::fake_llm::step_title(r) == "Gather").count() == n;
    assert!(gather_calls(1));

    // A failed task that is retried runs only what did not complete.
    fail_first.store(false, std::sync::atomic::Ordering::SeqCst);
    let retried = app.http.post(app.url(&format!("/tasks/{id}/retry"))).send().await.unwrap();
    assert_eq!(retried.status().as_u16(), 202);
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["steps"][0]["output"], gathered, "the completed step kept its output");
    assert_eq!(task["steps"][1]["attempt"], 1, "the failed step started over with fresh attempts");
    assert!(task["error"].is_null(), "{task}");
    assert!(gather_calls(1), "the completed step did not run again");
    assert_eq!(events(&app.db, id, "task_retried").await.len(), 1);

    // Only failed tasks: a completed one is a conflict, an unknown one is not found.
    let again = app.http.post(app.url(&format!("/tasks/{id}/retry"))).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 409);
    let problem: Value = again.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap_or_default().contains("completed"), "{problem}");
    let unknown = app.http.post(app.url(&format!("/tasks/{}/retry", Uuid::new_v4()))).send().await.unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    app.stop().await;
}

#[tokio::test]
async fn a_task_that_failed_while_planning_is_planned_again_on_retry() {
    let app = TestApp::spawn(0).await;
    let id = app.submit("Write a poem.").await;
    // As a planning failure leaves it: failed, with no steps.
    sqlx::query(
        "UPDATE tasks SET status = 'failed', error = 'planning failed: test', completed_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(&app.db)
    .await
    .unwrap();
    let view = app.client.retry(id).await.expect("202");
    assert_eq!(view.status, "pending");
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(app.app.worker("after-retry").run(shutdown.clone()));
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert!(task["error"].is_null(), "{task}");
    shutdown.cancel();
    worker.await.unwrap();
    app.stop().await;
}
