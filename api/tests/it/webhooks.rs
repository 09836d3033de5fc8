//! Webhooks end to end: real receivers on 127.0.0.1:0 that record each call, checked with
//! the task's user's own secret (read over `GET /webhook-secret`) by this crate's verifier and
//! by the Standard Webhooks Python package; rotation; per-user delivery lanes; tasks that
//! complete, fail and are cancelled; retries recorded attempt by attempt; callback URLs
//! refused at submission and at delivery; and `serve` refusing weak secrets.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use orchestrator::{
    auth::{AuthMode, KeyStore},
    config::{LlmProvider, Settings},
    domain::TaskId,
    webhooks::{DeliveryStatus, DeliverySummary, Outbox, Received, SigningSecret, VerifyError, verify},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    fake_llm::{FakeOpenAi, is_planning, tool_call},
    helpers::{TestApp, eventually, test_settings},
};

const SERVER_KEY: &str = "webhook-test-server-key-0123456789abcdef";
const USER: &str = "hook-user";
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
}

impl Call {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn received(&self) -> Received<'_> {
        Received { id: &self.id, timestamp: &self.timestamp, signature: &self.signature, body: &self.body }
    }

    /// The receiver's check with `secret`, now.
    fn verify(&self, secret: &SigningSecret) -> Result<(), VerifyError> {
        verify(secret, self.received(), chrono::Utc::now().timestamp(), TOLERANCE_SECS)
    }
}

type Script = dyn Fn(usize) -> Option<u16> + Send + Sync;

#[derive(Clone)]
struct Shared {
    /// The status to answer the n-th call with (from 0); `None`: never answer.
    script: Arc<Script>,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Calls being answered now, and the most there ever were at once.
    open: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
}

/// A webhook receiver on port 0 answering with a scripted status, or never.
struct Receiver {
    addr: SocketAddr,
    shared: Shared,
}

impl Receiver {
    async fn start(script: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Self {
        Self::scripted(move |n| Some(script(n))).await
    }

    /// A receiver that accepts each call and never answers it.
    async fn hanging() -> Self {
        Self::scripted(|_| None).await
    }

    async fn scripted(script: impl Fn(usize) -> Option<u16> + Send + Sync + 'static) -> Self {
        let shared =
            Shared { script: Arc::new(script), calls: Arc::default(), open: Arc::default(), most_open: Arc::default() };
        let app = Router::new().route("/hook", post(receive)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, shared }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    fn most_open(&self) -> usize {
        self.shared.most_open.load(Ordering::SeqCst)
    }
}

/// Counts the call open until it is answered (or its connection dropped).
struct OpenCall(Arc<AtomicUsize>);

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now_open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
    shared.most_open.fetch_max(now_open, Ordering::SeqCst);
    let _open = OpenCall(shared.open.clone());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let call = Call {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
    };
    let status = {
        let mut calls = shared.calls.lock().unwrap();
        let status = (shared.script)(calls.len());
        calls.push(call);
        status
    };
    match status {
        Some(status) => StatusCode::from_u16(status).unwrap(),
        None => std::future::pending().await,
    }
}

/// Test settings with a server key of the test's own and loopback receivers allowed.
fn settings() -> Settings {
    let mut s = test_settings();
    s.webhook_server_key = Some(SERVER_KEY.into());
    s.webhook_allow_private = true;
    s
}

/// `GET /webhook-secret` for `user` (auth disabled), as a user would read it.
async fn secret_of(app: &TestApp, user: &str) -> (Value, SigningSecret) {
    let response = app.http.get(app.url(&format!("/webhook-secret?user_id={user}"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    let secret = SigningSecret::parse(body["secret"].as_str().unwrap()).expect("a whsec_ secret");
    (body, secret)
}

async fn submit_with_callback(app: &TestApp, description: &str, url: &str) -> Uuid {
    submit_as(app, USER, description, url).await
}

async fn submit_as(app: &TestApp, user: &str, description: &str, url: &str) -> Uuid {
    let body = json!({"user_id": user, "description": description, "callback_url": url});
    app.client.submit(&body).await.expect("202 Accepted").id
}

/// Waits for the task's one delivery to reach `status`.
async fn delivery(app: &TestApp, task: Uuid, status: DeliveryStatus) -> DeliverySummary {
    delivery_within(app, task, status, DEADLINE).await
}

async fn delivery_within(app: &TestApp, task: Uuid, status: DeliveryStatus, deadline: Duration) -> DeliverySummary {
    eventually(deadline, &format!("a {status:?} webhook delivery"), || async {
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
    let (_, secret) = secret_of(&app, USER).await;
    assert_eq!(call.verify(&secret), Ok(()), "the receiver's signature check");
    assert_eq!(call.signature.split(' ').count(), 1, "one secret, one signature: {}", call.signature);
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
    let (_, secret) = secret_of(&app, USER).await;
    let now = call.timestamp.parse::<i64>().unwrap();
    assert_eq!(verify(&secret, call.received(), now, TOLERANCE_SECS), Ok(()));

    let forged = String::from_utf8(call.body.clone()).unwrap().replace("\"completed\"", "\"failed\"");
    assert_ne!(forged.as_bytes(), call.body.as_slice());
    let tampered_body = Received { body: forged.as_bytes(), ..call.received() };
    assert_eq!(verify(&secret, tampered_body, now, TOLERANCE_SECS), Err(VerifyError::Mismatch));

    let later = (now + 60).to_string();
    let tampered_time = Received { timestamp: &later, ..call.received() };
    assert_eq!(verify(&secret, tampered_time, now, TOLERANCE_SECS), Err(VerifyError::Mismatch));

    let (_, other_users) = secret_of(&app, "someone-else").await;
    assert_eq!(verify(&other_users, call.received(), now, TOLERANCE_SECS), Err(VerifyError::Mismatch));
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
    let (_, secret) = secret_of(&app, USER).await;
    for call in &calls {
        assert_eq!(call.verify(&secret), Ok(()), "every attempt is signed: {call:?}");
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

/// A provider that plans one step and refuses every step request with 401.
async fn refusing_provider() -> FakeOpenAi {
    FakeOpenAi::start(|request| {
        if is_planning(request) {
            let plan =
                json!({"steps": [{"title": "Write", "instruction": "Write.", "agent": "writer", "depends_on": []}]});
            return tool_call("plan-1", "submit_plan", &plan);
        }
        (401, json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}))
    })
    .await
}

/// This file's settings, with `fake` as the model provider.
fn with_provider(fake: &FakeOpenAi) -> Settings {
    let mut s = settings();
    s.llm_provider = LlmProvider::Openai;
    s.llm_base_url = Some(fake.base_url());
    s.llm_model = Some("gpt-4o-mini".into());
    s.llm_api_key = Some("sk-test-webhooks".into());
    s
}

#[tokio::test]
async fn a_failed_task_sends_task_failed_with_its_error() {
    let fake = refusing_provider().await;
    let receiver = Receiver::start(|_| 204).await;
    let app = TestApp::spawn_with(with_provider(&fake), 1).await;
    let id = submit_with_callback(&app, "Write a poem.", &receiver.url()).await;

    delivery(&app, id, DeliveryStatus::Delivered).await;
    let calls = receiver.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].verify(&secret_of(&app, USER).await.1), Ok(()));
    let body = calls[0].json();
    assert_eq!((body["type"].as_str(), body["status"].as_str()), (Some("task.failed"), Some("failed")), "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("Incorrect API key provided")), "{body}");
    assert_eq!(body["result"], Value::Null, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_retried_task_that_fails_again_is_reported_again_with_its_run() {
    let fake = refusing_provider().await;
    let receiver = Receiver::start(|_| 204).await;
    let app = TestApp::spawn_with(with_provider(&fake), 1).await;
    let id = submit_with_callback(&app, "Write a poem.", &receiver.url()).await;
    delivery(&app, id, DeliveryStatus::Delivered).await;

    let retried = app.http.post(app.url(&format!("/tasks/{id}/retry"))).send().await.unwrap();
    assert_eq!(retried.status().as_u16(), 202);
    eventually(Duration::from_secs(10), "the second run's webhook", || async {
        (receiver.calls().len() == 2).then_some(())
    })
    .await;
    let calls = receiver.calls();
    let runs: Vec<Value> = calls.iter().map(|c| c.json()["run"].clone()).collect();
    assert_eq!(runs, [json!(1), json!(2)], "{calls:?}");
    assert!(calls.iter().all(|c| c.json()["type"] == "task.failed"), "{calls:?}");
    assert_ne!(calls[0].json()["delivery_id"], calls[1].json()["delivery_id"], "a new delivery per run");
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
    assert_eq!(calls[0].verify(&secret_of(&app, USER).await.1), Ok(()));
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

/// The Python that `.ci/run` installs with the `standardwebhooks` package, or the one
/// `ORCHESTRATOR_TEST_PYTHON` names.
fn python() -> PathBuf {
    let path = std::env::var_os("ORCHESTRATOR_TEST_PYTHON")
        .map_or_else(|| PathBuf::from("/var/tmp/orchestrator-pyenv/bin/python"), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found: set ORCHESTRATOR_TEST_PYTHON to a Python with the `standardwebhooks` package, or run .ci/run",
        path.display()
    );
    path
}

/// Checks each call with each secret using the Standard Webhooks reference package for
/// Python, as a receiver written in Python would; true where it verified.
async fn verified_by_python(checks: &[(&Call, &SigningSecret)]) -> Vec<bool> {
    const SCRIPT: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
results = []
for check in json.load(sys.stdin):
    headers = {"webhook-id": check["id"], "webhook-timestamp": check["timestamp"],
               "webhook-signature": check["signature"]}
    try:
        Webhook(check["secret"]).verify(bytes.fromhex(check["body"]), headers)
        results.append(True)
    except WebhookVerificationError:
        results.append(False)
print(json.dumps(results))
"#;
    use tokio::io::AsyncWriteExt;
    let input: Vec<Value> = checks
        .iter()
        .map(|(call, secret)| {
            json!({"id": call.id, "timestamp": call.timestamp, "signature": call.signature,
                   "body": hex::encode(&call.body), "secret": secret.to_whsec()})
        })
        .collect();
    let mut child = tokio::process::Command::new(python())
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&serde_json::to_vec(&input).unwrap()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("python finishes within 60 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the standardwebhooks check failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

/// The one call whose body names `user`.
fn call_of(receiver: &Receiver, user: &str) -> Call {
    let mut calls: Vec<Call> = receiver.calls().into_iter().filter(|c| c.json()["user_id"] == user).collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    calls.remove(0)
}

#[tokio::test]
async fn the_standard_webhooks_package_verifies_each_users_calls_with_their_secret_only() {
    let receiver = Receiver::start(|_| 200).await;
    let app = TestApp::spawn_with(settings(), 1).await;
    let ann_task = submit_as(&app, "ann", "Write a short note.", &receiver.url()).await;
    let bob_task = submit_as(&app, "bob", "Write a haiku.", &receiver.url()).await;
    delivery(&app, ann_task, DeliveryStatus::Delivered).await;
    delivery(&app, bob_task, DeliveryStatus::Delivered).await;

    let (shown, ann) = secret_of(&app, "ann").await;
    let (_, bob) = secret_of(&app, "bob").await;
    assert_ne!(ann, bob, "each user has a secret of their own");
    assert_eq!(
        (&shown["user_id"], &shown["previous"], &shown["rotated_at"], &shown["previous_expires_at"]),
        (&json!("ann"), &Value::Null, &Value::Null, &Value::Null),
        "{shown}"
    );
    assert_eq!(secret_of(&app, "ann").await.1, ann, "the secret is stable");
    let (ann_call, bob_call) = (call_of(&receiver, "ann"), call_of(&receiver, "bob"));
    assert!(ann_call.signature.starts_with("v1,"), "{}", ann_call.signature);

    let checks = [(&ann_call, &ann), (&ann_call, &bob), (&bob_call, &bob), (&bob_call, &ann)];
    assert_eq!(verified_by_python(&checks).await, [true, false, true, false], "ann, ann as bob, bob, bob as ann");
    let ours: Vec<bool> = checks.iter().map(|(call, secret)| call.verify(secret).is_ok()).collect();
    assert_eq!(ours, [true, false, true, false], "this crate's verifier agrees");
    // Nothing secret is stored: only the random nonces the secrets derive from.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT nonce FROM webhook_secrets WHERE user_id IN ('ann', 'bob')")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|nonce| nonce.as_slice() != ann.key() && nonce.as_slice() != bob.key()));
    app.stop().await;
}

#[tokio::test]
async fn after_a_rotation_both_secrets_sign_for_a_day_then_only_the_new_one() {
    let receiver = Receiver::start(|_| 200).await;
    let app = TestApp::spawn_with(settings(), 1).await;
    let (_, old) = secret_of(&app, USER).await;

    let response = app.http.post(app.url(&format!("/webhook-secret/rotate?user_id={USER}"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let rotated: Value = response.json().await.unwrap();
    let new = SigningSecret::parse(rotated["secret"].as_str().unwrap()).unwrap();
    assert_ne!(new, old);
    assert_eq!(rotated["previous"], old.to_whsec(), "{rotated}");
    let at = |field: &str| rotated[field].as_str().and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok());
    let rotated_at = at("rotated_at").expect("a rotation time");
    assert_eq!(at("previous_expires_at"), Some(rotated_at + chrono::TimeDelta::hours(24)), "{rotated}");
    assert_eq!(secret_of(&app, USER).await.0, rotated, "GET shows the rotation");

    let during = submit_with_callback(&app, "Write a short note.", &receiver.url()).await;
    delivery(&app, during, DeliveryStatus::Delivered).await;
    let call = receiver.calls().remove(0);
    assert_eq!(call.signature.split(' ').count(), 2, "one signature per secret: {}", call.signature);
    let (_, stranger) = secret_of(&app, "someone-else").await;
    let verified = verified_by_python(&[(&call, &new), (&call, &old), (&call, &stranger)]).await;
    assert_eq!(verified, [true, true, false], "new, old, another user's");

    // A day later (moved back in the database): the old secret no longer signs.
    sqlx::query("UPDATE webhook_secrets SET rotated_at = rotated_at - interval '25 hours' WHERE user_id = $1")
        .bind(USER)
        .execute(&app.db)
        .await
        .unwrap();
    let (shown, current) = secret_of(&app, USER).await;
    assert_eq!(current, new);
    assert_eq!((&shown["previous"], &shown["previous_expires_at"]), (&Value::Null, &Value::Null), "{shown}");
    let after = submit_with_callback(&app, "Write a haiku.", &receiver.url()).await;
    delivery(&app, after, DeliveryStatus::Delivered).await;
    let call = receiver.calls().remove(1);
    assert_eq!(call.json()["task_id"], after.to_string());
    assert_eq!(call.signature.split(' ').count(), 1, "{}", call.signature);
    assert_eq!(verified_by_python(&[(&call, &new), (&call, &old)]).await, [true, false]);
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_delays_only_its_own_users_deliveries() {
    let hanging = Receiver::hanging().await;
    let healthy = Receiver::start(|_| 200).await;
    let mut s = settings();
    s.webhook_timeout_secs = 300; // far beyond the test: the slow user's calls stay open
    s.webhook_concurrency_per_user = 2;
    // Two workers: both loops send for the process, through one sender and its lanes.
    let app = TestApp::spawn_with(s, 2).await;
    for n in 0..6 {
        submit_as(&app, "slow-user", &format!("Write note {n}."), &hanging.url()).await;
    }
    eventually(DEADLINE, "the slow user's six deliveries and a full lane", || async {
        let made = app.count("SELECT count(*) FROM webhook_deliveries").await;
        (made == 6 && hanging.open() == 2).then_some(())
    })
    .await;

    let fast = submit_as(&app, "fast-user", "Write a haiku.", &healthy.url()).await;
    let delivered = delivery_within(&app, fast, DeliveryStatus::Delivered, Duration::from_secs(10)).await;
    assert_eq!((delivered.attempts, delivered.last_status), (1, Some(200)));
    assert_eq!(healthy.calls().len(), 1);

    // Meanwhile the slow user's lane held: two calls open, never more, the rest waiting.
    assert_eq!((hanging.open(), hanging.most_open(), hanging.calls().len()), (2, 2, 2));
    let slow_pending = app
        .count(
            "SELECT count(*) FROM webhook_deliveries w JOIN tasks t ON t.id = w.task_id
             WHERE t.user_id = 'slow-user' AND w.status = 'pending'",
        )
        .await;
    assert_eq!(slow_pending, 6, "nothing of the slow user's was given up on");
    app.stop().await;
}

/// A server that requires keys, with keys for ann, bob and an admin.
async fn guarded_app() -> (TestApp, [String; 3]) {
    let mut s = settings();
    s.auth.mode = Some(AuthMode::Required);
    let app = TestApp::spawn_with(s, 0).await;
    let store = KeyStore::new(app.db.clone());
    let mut keys = Vec::new();
    for (user, admin) in [("ann", false), ("bob", false), ("ops", true)] {
        keys.push(store.create(user, "", admin).await.unwrap().secret);
    }
    (app, keys.try_into().unwrap())
}

async fn secret_call(app: &TestApp, method: reqwest::Method, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_key_sees_and_rotates_only_its_own_users_secret() {
    use reqwest::Method;
    let (app, [ann, bob, admin]) = guarded_app().await;
    let (status, own) = secret_call(&app, Method::GET, "/webhook-secret", Some(&ann)).await;
    assert_eq!((status, &own["user_id"]), (StatusCode::OK, &json!("ann")), "{own}");

    for (method, path) in
        [(Method::GET, "/webhook-secret?user_id=bob"), (Method::POST, "/webhook-secret/rotate?user_id=bob")]
    {
        let (status, problem) = secret_call(&app, method, path, Some(&ann)).await;
        assert_eq!((status, &problem["field"]), (StatusCode::FORBIDDEN, &json!("user_id")), "{path}: {problem}");
    }
    let (status, _) = secret_call(&app, Method::GET, "/webhook-secret", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Bob's rotation leaves ann's secret alone; an admin may read anyone's.
    let (status, rotated) = secret_call(&app, Method::POST, "/webhook-secret/rotate", Some(&bob)).await;
    assert_eq!((status, &rotated["user_id"]), (StatusCode::OK, &json!("bob")), "{rotated}");
    let (status, by_admin) = secret_call(&app, Method::GET, "/webhook-secret?user_id=ann", Some(&admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_admin, own, "unchanged, and the same for an admin");
    app.stop().await;
}

#[tokio::test]
async fn without_auth_the_secret_routes_ask_for_a_valid_user_id() {
    let app = TestApp::spawn_with(settings(), 0).await;
    for (path, field) in [
        ("/webhook-secret", "user_id"),
        ("/webhook-secret?user_id=", "user_id"),
        ("/webhook-secret?user_id=ann&shown=all", "shown"),
    ] {
        let (status, problem) = secret_call(&app, reqwest::Method::GET, path, None).await;
        assert_eq!((status, &problem["field"]), (StatusCode::BAD_REQUEST, &json!(field)), "{path}: {problem}");
    }
    let (status, problem) = secret_call(&app, reqwest::Method::POST, "/webhook-secret/rotate", None).await;
    assert_eq!((status, &problem["field"]), (StatusCode::BAD_REQUEST, &json!("user_id")), "{problem}");
    assert_eq!(app.count("SELECT count(*) FROM webhook_secrets").await, 0, "nothing was made");
    app.stop().await;
}

#[test]
fn serve_and_worker_with_auth_required_refuse_weak_secrets() {
    const STRONG: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    // Nothing listens on port 1: a binary that got past the check would fail to connect.
    const UNREACHABLE: &str = "postgres://postgres@127.0.0.1:1/orchestrator";
    let start = |command: &str, auth: &str, dispatch: Option<&str>, webhook: Option<&str>| {
        let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        process
            .arg(command)
            .env("AUTH", auth)
            .env("DATABASE_URL", UNREACHABLE)
            .env("RUST_LOG", "off")
            .env_remove("DISPATCH_SECRET")
            .env_remove("WEBHOOK_SERVER_KEY")
            .env_remove("WEBHOOK_SECRET");
        if let Some(dispatch) = dispatch {
            process.env("DISPATCH_SECRET", dispatch);
        }
        if let Some(webhook) = webhook {
            process.env("WEBHOOK_SERVER_KEY", webhook);
        }
        let output = process.output().unwrap();
        assert!(!output.status.success(), "{command} must not run against an unreachable database");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    for (command, dispatch, webhook, refusal) in [
        ("serve", None, Some(STRONG), "DISPATCH_SECRET is not set"),
        ("serve", Some(STRONG), None, "WEBHOOK_SERVER_KEY is not set"),
        (
            "serve",
            Some(STRONG),
            Some("change-me-to-another-long-random-secret"),
            "WEBHOOK_SERVER_KEY is a published value",
        ),
        ("worker", Some("short-dispatch-secret"), Some(STRONG), "DISPATCH_SECRET is shorter than 32 bytes"),
    ] {
        let stderr = start(command, "required", dispatch, webhook);
        assert!(stderr.contains(refusal) && stderr.contains("AUTH=required"), "{command}: {stderr}");
        assert!(!stderr.contains("cannot reach Postgres"), "refused before connecting: {stderr}");
    }
    // Strong secrets, or no tenants to protect (AUTH=disabled), pass the check and get as far
    // as the database.
    for (auth, dispatch, webhook) in [("required", Some(STRONG), Some(STRONG)), ("disabled", None, None)] {
        let stderr = start("serve", auth, dispatch, webhook);
        assert!(stderr.contains("cannot reach Postgres"), "AUTH={auth}: {stderr}");
    }
}
