//! What operators see: Prometheus metrics and request ids.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use orchestrator::config::LlmProvider;
use serde_json::json;

use crate::{
    fake_llm::{FakeOpenAi, answer, is_planning, tool_call, tool_replies},
    helpers::{TestApp, test_settings},
};

/// The value of one sample line of the exposition, e.g. `name{labels}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

#[tokio::test]
async fn metrics_count_a_submitted_task_through_to_its_model_calls() {
    let app = TestApp::spawn(1).await;
    let id = app.submit("Analyze the requirements and build a plan. Then implement core APIs.").await;
    assert_eq!(app.wait(id).await["status"], "completed");

    // A job is acknowledged after the transition it caused commits, so the last step's job
    // may still be in the stream for a moment after the task reads completed.
    let text = crate::helpers::eventually(Duration::from_secs(10), "the last job to be acknowledged", || async {
        let response = app.http.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = response.text().await.unwrap();
        (sample(&text, r#"orchestrator_queue_depth{priority="normal"}"#) == Some(0.0)).then_some(text)
    })
    .await;
    let get = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} missing from:\n{text}"));
    assert_eq!(get(r#"orchestrator_tasks_submitted_total{priority="normal"}"#), 1.0);
    assert_eq!(get(r#"orchestrator_tasks_finished_total{status="completed"}"#), 1.0);
    assert_eq!(get(r#"orchestrator_http_requests_total{method="POST",route="/tasks",status="202"}"#), 1.0);
    assert!(get(r#"orchestrator_http_requests_total{method="GET",route="/tasks/{id}",status="200"}"#) >= 1.0);
    assert_eq!(get(r#"orchestrator_steps_finished_total{agent="analyst",status="completed"}"#), 1.0);
    assert_eq!(get(r#"orchestrator_steps_finished_total{agent="engineer",status="completed"}"#), 1.0);
    assert_eq!(get(r#"orchestrator_llm_calls_total{model="offline-deterministic-1",provider="offline"}"#), 2.0);
    assert_eq!(get(r#"orchestrator_tasks{status="running"}"#), 0.0);
    assert!(text.contains("orchestrator_http_request_duration_seconds_bucket"));
    app.stop().await;
}

/// The `label="value"` pairs of every sample of `metric`.
fn label_sets(text: &str, metric: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter_map(|line| line.strip_prefix(metric)?.strip_prefix('{'))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            let labels = labels
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect();
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

async fn metrics_text(app: &TestApp) -> String {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn made_up_methods_share_one_label_value() {
    let app = TestApp::spawn(0).await;
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
        for path in ["/healthz", "/tasks"] {
            let response = app.http.request(method.clone(), app.url(path)).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 405, "M{i} {path}");
        }
    }
    let text = metrics_text(&app).await;
    let samples = label_sets(&text, "orchestrator_http_requests_total");
    let methods: BTreeSet<&str> = samples.iter().map(|(labels, _)| labels["method"].as_str()).collect();
    assert!(methods.len() <= 10, "{methods:?}");
    assert!(methods.iter().all(|m| !m.starts_with('M')), "{methods:?}");
    // Counted, not dropped: all 600 are there under `OTHER`, by route template.
    let other: f64 = samples.iter().filter(|(labels, _)| labels["method"] == "OTHER").map(|(_, n)| n).sum();
    assert_eq!(other, 600.0, "{text}");
    let routes: BTreeSet<&str> = samples.iter().map(|(labels, _)| labels["route"].as_str()).collect();
    assert!(routes.len() <= 3, "{routes:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_tool_name_the_model_made_up_is_counted_as_unknown() {
    let fake = FakeOpenAi::start(|request| {
        if is_planning(request) {
            return tool_call(
                "plan-1",
                "submit_plan",
                &json!({"steps": [{"title": "Run", "instruction": "Run it.", "agent": "analyst", "depends_on": []}]}),
            );
        }
        match tool_replies(request).len() {
            0 => tool_call("c1", "rm_rf_4f9c2a", &json!({"path": "/"})),
            1 => tool_call("c2", "calculator", &json!({"expression": "6 * 7"})),
            _ => answer("Done.", 100, 20),
        }
    })
    .await;
    let mut settings = test_settings();
    settings.llm_provider = LlmProvider::Openai;
    settings.llm_base_url = Some(fake.base_url());
    settings.llm_model = Some("gpt-4o-mini".into());
    settings.llm_api_key = Some("sk-test-observability".into());
    let app = TestApp::spawn_with(settings, 1).await;
    let id = app.submit("Run the thing.").await;
    assert_eq!(app.wait(id).await["status"], "completed");

    let text = metrics_text(&app).await;
    assert!(!text.contains("rm_rf_4f9c2a"), "{text}");
    let get = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} missing from:\n{text}"));
    assert_eq!(get(r#"orchestrator_tool_calls_total{status="rejected",tool="unknown"}"#), 1.0);
    assert_eq!(get(r#"orchestrator_tool_calls_total{status="ok",tool="calculator"}"#), 1.0);
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
