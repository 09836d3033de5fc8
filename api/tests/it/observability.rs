//! What operators see: Prometheus metrics and request ids.

use crate::helpers::TestApp;

/// The value of one sample line of the exposition, e.g. `name{labels}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

#[tokio::test]
async fn metrics_count_a_submitted_task_through_to_its_model_calls() {
    let app = TestApp::spawn(1).await;
    let id = app.submit("Analyze the requirements and build a plan. Then implement core APIs.").await;
    assert_eq!(app.wait(id).await["status"], "completed");

    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let get = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} missing from:\n{text}"));
    assert_eq!(get(r#"orchestrator_tasks_submitted_total{priority="normal"}"#), 1.0);
    assert_eq!(get(r#"orchestrator_tasks_finished_total{status="completed"}"#), 1.0);
    assert_eq!(get(r#"orchestrator_http_requests_total{method="POST",route="/tasks",status="202"}"#), 1.0);
    assert!(get(r#"orchestrator_http_requests_total{method="GET",route="/tasks/{id}",status="200"}"#) >= 1.0);
    assert_eq!(get(r#"orchestrator_steps_finished_total{agent="analyst",status="completed"}"#), 1.0);
    assert_eq!(get(r#"orchestrator_steps_finished_total{agent="engineer",status="completed"}"#), 1.0);
    assert_eq!(get(r#"orchestrator_llm_calls_total{model="offline-deterministic-1",provider="offline"}"#), 2.0);
    assert_eq!(get(r#"orchestrator_tasks{status="running"}"#), 0.0);
    assert_eq!(get(r#"orchestrator_queue_depth{priority="normal"}"#), 0.0);
    assert!(text.contains("orchestrator_http_request_duration_seconds_bucket"));
    app.stop().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_given_one_is_kept() {
    let app = TestApp::spawn(0).await;
    let fresh = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(fresh.headers()["x-request-id"].to_str().unwrap().len(), 36);
    let kept = app.http.get(app.url("/nowhere")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(kept.status().as_u16(), 404);
    assert_eq!(kept.headers()["x-request-id"], "trace-me-42");
    app.stop().await;
}
