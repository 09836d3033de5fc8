//! Partial results: a step that fails for good skips only what depends on it, independent
//! branches run to the end, and the task ends `partial` when a final step completed, `failed`
//! when none did; a retry re-runs only what failed or was skipped.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use serde_json::{Value, json};

use crate::{
    fake_llm::{FakeOpenAi, answer, is_planning, step_title, tool_call},
    helpers::{TestApp, events},
};

/// A fake whose plan is `steps` and whose model refuses (401, not retried) every request of
/// the step titled `Gather A` while `refuse` is set.
async fn fake(steps: Value, refuse: Arc<AtomicBool>) -> FakeOpenAi {
    FakeOpenAi::start(move |request| {
        if is_planning(request) {
            return tool_call("plan-1", "submit_plan", &json!({"steps": steps}));
        }
        let title = step_title(request);
        if title == "Gather A" && refuse.load(Ordering::SeqCst) {
            return (401, json!({"error": {"message": "source A is unavailable", "type": "invalid_request_error"}}));
        }
        answer(&format!("{title}: done."), 10, 2)
    })
    .await
}

fn statuses(task: &Value) -> Vec<(String, String)> {
    task["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["title"].as_str().unwrap().to_owned(), s["status"].as_str().unwrap().to_owned()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[tokio::test]
async fn an_independent_branch_completes_and_the_task_ends_partial_then_a_retry_finishes_it() {
    let refuse = Arc::new(AtomicBool::new(true));
    let plan = json!([
        {"title": "Gather A", "instruction": "Gather A.", "agent": "writer", "depends_on": []},
        {"title": "Gather B", "instruction": "Gather B.", "agent": "writer", "depends_on": []},
        {"title": "Summarise A", "instruction": "Summarise A.", "agent": "writer", "depends_on": [0]}
    ]);
    let fake = fake(plan, refuse.clone()).await;
    let app = TestApp::spawn_with(fake.settings(), 2).await;
    let id = app.submit("Gather A and B.").await;
    let task = app.wait(id).await;

    assert_eq!(task["status"], "partial", "{task}");
    assert_eq!(
        statuses(&task),
        pairs(&[("Gather A", "failed"), ("Gather B", "completed"), ("Summarise A", "skipped")])
    );
    // The result is what completed at the ends of the plan; the error says what did not.
    assert_eq!(task["result"], "Gather B: done.");
    let error = task["error"].as_str().unwrap();
    assert!(error.contains("Gather A") && error.contains("source A is unavailable"), "{error}");
    assert_eq!(events(&app.db, id, "task_partial").await.len(), 1);
    assert!(events(&app.db, id, "task_failed").await.is_empty());
    assert_eq!(events(&app.db, id, "step_skipped").await.len(), 1, "only the failed step's dependant");

    // A retry re-runs only what failed or was skipped.
    refuse.store(false, Ordering::SeqCst);
    let retried = app.http.post(app.url(&format!("/tasks/{id}/retry"))).send().await.unwrap();
    assert_eq!(retried.status(), 202);
    let task = app.client.wait(id, std::time::Duration::from_secs(10)).await.expect("ends").raw;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"], "Summarise A: done.");
    let b_runs = fake.requests().iter().filter(|r| !is_planning(r) && step_title(r) == "Gather B").count();
    assert_eq!(b_runs, 1, "the completed branch did not run again");
    app.stop().await;
}

#[tokio::test]
async fn a_failed_dependency_of_the_final_step_fails_the_task_though_a_branch_completed() {
    let refuse = Arc::new(AtomicBool::new(true));
    let plan = json!([
        {"title": "Gather A", "instruction": "Gather A.", "agent": "writer", "depends_on": []},
        {"title": "Gather B", "instruction": "Gather B.", "agent": "writer", "depends_on": []},
        {"title": "Combine", "instruction": "Combine A and B.", "agent": "writer", "depends_on": [0, 1]}
    ]);
    let fake = fake(plan, refuse).await;
    let app = TestApp::spawn_with(fake.settings(), 2).await;
    let id = app.submit("Gather A and B, then combine them.").await;
    let task = app.wait(id).await;

    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(statuses(&task), pairs(&[("Gather A", "failed"), ("Gather B", "completed"), ("Combine", "skipped")]));
    assert_eq!(task["result"], Value::Null);
    assert_eq!(events(&app.db, id, "task_failed").await.len(), 1);
    assert!(events(&app.db, id, "task_partial").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_required_step_that_fails_fails_the_task_at_once() {
    let refuse = Arc::new(AtomicBool::new(true));
    let plan = json!([
        {"title": "Gather A", "instruction": "Gather A.", "agent": "writer", "depends_on": [], "required": true},
        {"title": "Gather B", "instruction": "Gather B.", "agent": "writer", "depends_on": [0]},
        {"title": "Gather C", "instruction": "Gather C.", "agent": "writer", "depends_on": []}
    ]);
    let fake = fake(plan, refuse).await;
    // Whether Gather C completes before or after, the required step's failure fails the task.
    let app = TestApp::spawn_with(fake.settings(), 1).await;
    let id = app.submit("Gather A, B and C.").await;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error_code"], "required_step_failed", "{task}");
    assert_eq!(task["steps"][0]["status"], "failed");
    assert_eq!(task["steps"][1]["status"], "skipped");
    assert_eq!(events(&app.db, id, "task_partial").await.len(), 0);
    app.stop().await;
}
