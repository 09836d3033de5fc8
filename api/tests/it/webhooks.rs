//! Webhooks end to end: a real receiver on 127.0.0.1:0 that checks each call's signature
//! with the shared secret, tasks that complete, fail and are cancelled, retries recorded
//! attempt by attempt, and callback URLs refused at submission and at delivery.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use orchestrator::{
    config::{LlmProvider, Settings},
    domain::TaskId,
    webhooks::{DeliveryStatus, DeliverySummary, Outbox, Received, VerifyError, verify},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    fake_llm::{FakeOpenAi, is_planning, tool_call},
    helpers::{TestApp, eventually, test_settings},
};

const SECRET: &str = "webhook-test-secret-0123456789";
/// How far a call's timestamp may be from the receiver's clock.
const TOLERANCE_SECS: i64 = 300;
const DEADLINE: Duration = Duration::from_secs(20);

/// One call as the receiver saw it.
#[derive(Debug, Clone)]
struct Call {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    /// The receiver's own check, with the shared secret.
    verified: Result<(), VerifyError>,
}

impl Call {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn received(&self) -> Received<'_> {
        Received { id: &self.id, timestamp: &self.timestamp, signature: &self.signature, body: &self.body }
    }
}

type Script = dyn Fn(usize) -> u16 + Send + Sync;

#[derive(Clone)]
struct Shared {
    /// The status to answer the n-th call with (from 0).
    script: Arc<Script>,
    calls: Arc<Mutex<Vec<Call>>>,
}

/// A webhook receiver on port 0 answering with a scripted status.
struct Receiver {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Receiver {
    async fn start(script: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Self {
        let shared = Shared { script: Arc::new(script), calls: Arc::default() };
        let calls = shared.calls.clone();
        let app = Router::new().route("/hook", post(receive)).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, calls }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut call = Call {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        verified: Ok(()),
    };
    call.verified = verify(SECRET.as_bytes(), call.received(), chrono::Utc::now().timestamp(), TOLERANCE_SECS);
    let mut calls = shared.calls.lock().unwrap();
    let status = (shared.script)(calls.len());
    calls.push(call);
    StatusCode::from_u16(status).unwrap()
}

/// Test settings with the shared secret and loopback receivers allowed.
fn settings() -> Settings {
    let mut s = test_settings();
    s.webhook_secret = SECRET.into();
    s.webhook_allow_private = true;
    s
}

async fn submit_with_callback(app: &TestApp, description: &str, url: &str) -> Uuid {
    let body = json!({"user_id": "hook-user", "description": description, "callback_url": url});
    app.client.submit(&body).await.expect("202 Accepted").id
}

/// Waits for the task's one delivery to reach `status`.
async fn delivery(app: &TestApp, task: Uuid, status: DeliveryStatus) -> DeliverySummary {
    eventually(DEADLINE, &format!("a {status:?} webhook delivery"), || async {
        let deliveries = app.app.store.task_webhooks(TaskId(task)).await.unwrap();
        assert!(deliveries.len() <= 1, "one delivery per ended task: {deliveries:?}");
        deliveries.into_iter().find(|d| d.status == status)
    })
    .await
}

/// (attempt, http status, error) of each recorded attempt.
async fn attempts(app: &TestApp, delivery: Uuid) -> Vec<(i32, Option<i32>, Option<String>)> {
    let rows = app.app.store.webhook_attempts(delivery).await.unwrap();
    rows.into_iter().map(|a| (a.attempt, a.http_status, a.error)).collect()
}

#[tokio::test]
async fn a_completed_task_sends_exactly_one_signed_call_with_its_summary() {
    let receiver = Receiver::start(|_| 200).await;
    // Two workers, so two senders compete for the delivery.
    let app = TestApp::spawn_with(settings(), 2).await;
    let id = submit_with_callback(&app, "Write a short note.", &receiver.url()).await;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");

    let delivered = delivery(&app, id, DeliveryStatus::Delivered).await;
    let calls = receiver.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.verified, Ok(()), "the receiver's signature check");
    assert_eq!(call.id, delivered.id.to_string());
    let body = call.json();
    assert_eq!(body["type"], "task.completed", "{body}");
    assert_eq!(body["delivery_id"], call.id, "{body}");
    assert_eq!(body["task_id"], id.to_string(), "{body}");
    assert_eq!(body["user_id"], "hook-user", "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["result"], task["result"], "{body}");
    assert!(body["result"].as_str().is_some_and(|r| !r.is_empty()), "{body}");
    assert_eq!(body["error"], Value::Null, "{body}");
    assert_eq!(body["tokens_in"], task["tokens_in"], "{body}");
    assert_eq!(body["tokens_out"], task["tokens_out"], "{body}");
    assert!(body["completed_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
    assert_eq!((delivered.attempts, delivered.last_status), (1, Some(200)));
    assert_eq!(attempts(&app, delivered.id).await, [(1, Some(200), None)]);
    app.stop().await;
}

#[tokio::test]
async fn a_tampered_body_or_timestamp_fails_the_receivers_check() {
    let receiver = Receiver::start(|_| 200).await;
    let app = TestApp::spawn_with(settings(), 1).await;
    let id = submit_with_callback(&app, "Write a haiku.", &receiver.url()).await;
    delivery(&app, id, DeliveryStatus::Delivered).await;
    let call = receiver.calls().remove(0);
    let now = call.timestamp.parse::<i64>().unwrap();
    assert_eq!(verify(SECRET.as_bytes(), call.received(), now, TOLERANCE_SECS), Ok(()));

    let forged = String::from_utf8(call.body.clone()).unwrap().replace("\"completed\"", "\"failed\"");
    assert_ne!(forged.as_bytes(), call.body.as_slice());
    let tampered_body = Received { body: forged.as_bytes(), ..call.received() };
    assert_eq!(verify(SECRET.as_bytes(), tampered_body, now, TOLERANCE_SECS), Err(VerifyError::Mismatch));

    let later = (now + 60).to_string();
    let tampered_time = Received { timestamp: &later, ..call.received() };
    assert_eq!(verify(SECRET.as_bytes(), tampered_time, now, TOLERANCE_SECS), Err(VerifyError::Mismatch));

    let wrong_key = verify(b"not-the-shared-secret-at-all", call.received(), now, TOLERANCE_SECS);
    assert_eq!(wrong_key, Err(VerifyError::Mismatch));
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_three_attempts_and_the_delivery_ends_delivered() {
    let receiver = Receiver::start(|n| if n < 2 { 500 } else { 200 }).await;
    let app = TestApp::spawn_with(settings(), 1).await;
    let id = submit_with_callback(&app, "Write a short note.", &receiver.url()).await;

    let delivered = delivery(&app, id, DeliveryStatus::Delivered).await;
    assert_eq!((delivered.attempts, delivered.last_status), (3, Some(200)));
    let recorded = attempts(&app, delivered.id).await;
    let statuses: Vec<_> = recorded.iter().map(|(n, status, _)| (*n, *status)).collect();
    assert_eq!(statuses, [(1, Some(500)), (2, Some(500)), (3, Some(200))]);
    assert!(recorded[0].2.as_deref().is_some_and(|e| e.contains("500")), "{recorded:?}");

    let calls = receiver.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for call in &calls {
        assert_eq!(call.verified, Ok(()), "every attempt is signed: {call:?}");
        assert_eq!(call.id, delivered.id.to_string(), "the id is stable across retries");
        assert_eq!(call.body, calls[0].body, "every attempt sends the same body");
    }

    // The client sees the same story over the API.
    let task: Value = app.http.get(app.url(&format!("/tasks/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(task["callback_url"], receiver.url());
    let report: Value =
        app.http.get(app.url(&format!("/tasks/{id}/webhook"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(report["callback_url"], receiver.url());
    let only = &report["deliveries"][0];
    assert_eq!(report["deliveries"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(
        (only["id"].as_str(), only["event"].as_str()),
        (Some(&*delivered.id.to_string()), Some("task.completed"))
    );
    assert_eq!(only["status"], "delivered");
    let codes: Vec<_> = only["attempts"].as_array().unwrap().iter().map(|a| a["http_status"].as_i64()).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)], "{report}");
    let plain = app.submit("No callback here.").await;
    let report: Value =
        app.http.get(app.url(&format!("/tasks/{plain}/webhook"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(report, json!({"callback_url": null, "deliveries": []}));
    app.stop().await;
}

#[tokio::test]
async fn a_failed_task_sends_task_failed_with_its_error() {
    let fake = FakeOpenAi::start(|request| {
        if is_planning(request) {
            let plan =
                json!({"steps": [{"title": "Write", "instruction": "Write.", "agent": "writer", "depends_on": []}]});
            return tool_call("plan-1", "submit_plan", &plan);
        }
        (401, json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}))
    })
    .await;
    let receiver = Receiver::start(|_| 204).await;
    let mut s = settings();
    s.llm_provider = LlmProvider::Openai;
    s.llm_base_url = Some(fake.base_url());
    s.llm_model = Some("gpt-4o-mini".into());
    s.llm_api_key = Some("sk-test-webhooks".into());
    let app = TestApp::spawn_with(s, 1).await;
    let id = submit_with_callback(&app, "Write a poem.", &receiver.url()).await;

    delivery(&app, id, DeliveryStatus::Delivered).await;
    let calls = receiver.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].verified, Ok(()));
    let body = calls[0].json();
    assert_eq!((body["type"].as_str(), body["status"].as_str()), (Some("task.failed"), Some("failed")), "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("Incorrect API key provided")), "{body}");
    assert_eq!(body["result"], Value::Null, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_cancelled_task_sends_task_cancelled() {
    let receiver = Receiver::start(|_| 200).await;
    // No worker yet: the task is still pending when it is cancelled.
    let app = TestApp::spawn_with(settings(), 0).await;
    let id = submit_with_callback(&app, "Write a long report.", &receiver.url()).await;
    let cancelled = app.http.post(app.url(&format!("/tasks/{id}/cancel"))).send().await.unwrap();
    assert_eq!(cancelled.status().as_u16(), 200);

    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(app.app.worker("hook-sender").run(shutdown.clone()));
    delivery(&app, id, DeliveryStatus::Delivered).await;
    let calls = receiver.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].verified, Ok(()));
    let body = calls[0].json();
    assert_eq!(body["type"], "task.cancelled", "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");
    assert_eq!(body["task_id"], id.to_string(), "{body}");
    shutdown.cancel();
    worker.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_or_private_callback_url_is_refused_with_422_naming_it() {
    // The production policy: private targets are not allowed.
    let app = TestApp::spawn(0).await;
    let too_long = format!("https://hooks.example.com/{}", "a".repeat(2000));
    for url in [
        "ftp://hooks.example.com/x",
        "not a url",
        "http://127.0.0.1/hook",
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/hook",
        "http://localhost:9000/hook",
        too_long.as_str(),
    ] {
        let body = json!({"user_id": "u", "description": "d", "callback_url": url});
        let response = app.http.post(app.url("/tasks")).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        let problem: Value = response.json().await.unwrap();
        assert_eq!(status, 422, "{url}: {problem}");
        assert_eq!(problem["field"], "callback_url", "{url}: {problem}");
        assert!(problem["detail"].as_str().unwrap().starts_with("callback_url: "), "{problem}");
    }
    assert_eq!(app.count("SELECT count(*) FROM tasks").await, 0);

    let body = json!({"user_id": "u", "description": "d", "callback_url": "https://hooks.example.com/orchestrator"});
    let id = app.client.submit(&body).await.expect("a public https URL is accepted").id;
    let stored: Option<String> =
        sqlx::query_scalar("SELECT callback_url FROM tasks WHERE id = $1").bind(id).fetch_one(&app.db).await.unwrap();
    assert_eq!(stored.as_deref(), Some("https://hooks.example.com/orchestrator"));
    app.stop().await;
}

#[tokio::test]
async fn a_name_resolving_to_a_private_address_is_refused_at_delivery() {
    let receiver = Receiver::start(|_| 200).await;
    let mut s = test_settings();
    s.webhook_secret = SECRET.into();
    s.webhook_max_attempts = 1;
    let app = TestApp::spawn_with(s, 0).await;
    let id = app.submit("Write a short note.").await;
    // A URL accepted under another policy, or whose name now resolves to loopback: the
    // sender's own lookup must catch it.
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    sqlx::query("UPDATE tasks SET callback_url = $2 WHERE id = $1").bind(id).bind(&url).execute(&app.db).await.unwrap();

    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(app.app.worker("strict-sender").run(shutdown.clone()));
    let failed = delivery(&app, id, DeliveryStatus::Failed).await;
    assert_eq!((failed.attempts, failed.last_status), (1, None));
    let error = failed.last_error.unwrap_or_default();
    assert!(error.contains("not a public address"), "{error}");
    let recorded = attempts(&app, failed.id).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].1, None, "{recorded:?}");
    assert!(receiver.calls().is_empty(), "nothing reached the receiver");
    shutdown.cancel();
    worker.await.unwrap();
    app.stop().await;
}
