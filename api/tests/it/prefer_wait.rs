//! `Prefer: wait=N` on `POST /tasks` and `GET /tasks/{id}` on the real server: the answer
//! comes once the task has ended (a completion, a failure, a cancellation), or after N
//! seconds with the task as it is then; malformed preferences change nothing; N is capped at
//! 60; a user's waits are limited; a shutdown ends them.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    fake_llm::{FakeOpenAi, is_planning, tool_call},
    helpers::{TestApp, eventually, test_settings},
};

const SEED: &str = "Analyze the requirements and build a plan. Then implement core APIs.";
const DEADLINE: Duration = Duration::from_secs(20);
/// An answer that did not wait comes well within this, even on a loaded machine.
const AT_ONCE: Duration = Duration::from_secs(2);
/// A wait of one second ends well within this (the request timeout would be 31 s).
const SOON_AFTER_1_S: Duration = Duration::from_secs(4);

/// One answer, with what these tests look at.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
    /// From sending the request to having the whole answer.
    took: Duration,
}

impl Answer {
    async fn from(response: reqwest::Response, started: Instant) -> Self {
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let body = response.json().await.expect("a JSON body");
        Self { status, headers, body, took: started.elapsed() }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII"))
    }

    /// `Preference-Applied`, which says the server waited.
    fn applied(&self) -> Option<&str> {
        self.header("preference-applied")
    }

    fn varies_on_prefer(&self) -> bool {
        self.headers.get_all("vary").iter().any(|v| v.to_str().unwrap_or("").to_ascii_lowercase().contains("prefer"))
    }

    fn task_id(&self) -> Uuid {
        self.body["id"].as_str().expect("an id").parse().expect("a UUID")
    }
}

/// `POST /tasks` for `user` with `prefer` (if any) and extra `headers`.
async fn create(app: &TestApp, user: &str, prefer: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    let mut request = app.http.post(app.url("/tasks")).json(&json!({"user_id": user, "description": SEED}));
    if let Some(prefer) = prefer {
        request = request.header("prefer", prefer);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let started = Instant::now();
    Answer::from(request.send().await.expect("an answer"), started).await
}

/// `GET /tasks/{id}` with `prefer` (if any).
async fn read(http: &reqwest::Client, url: &str, prefer: Option<&str>) -> Answer {
    let mut request = http.get(url);
    if let Some(prefer) = prefer {
        request = request.header("prefer", prefer);
    }
    let started = Instant::now();
    Answer::from(request.send().await.expect("an answer"), started).await
}

fn task_url(app: &TestApp, id: Uuid) -> String {
    app.url(&format!("/tasks/{id}"))
}

/// A worker of `app` started by the test, so the task runs only once the test is ready.
fn start_worker(app: &TestApp) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    (stop.clone(), tokio::spawn(app.app.worker("prefer-wait-test-worker").run(stop)))
}

/// Waits until the process listens for task notifications: it starts with the first
/// subscription, so a request that waits has subscribed by then.
async fn listener_connected(app: &TestApp) {
    eventually(DEADLINE, "the event listener to connect", || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
        )
        .bind(orchestrator::events::LISTENER_APPLICATION_NAME)
        .fetch_optional(&app.db)
        .await
        .expect("pg_stat_activity")
    })
    .await;
}

#[tokio::test]
async fn a_create_that_waits_answers_200_with_the_ended_task_and_its_steps() {
    let app = TestApp::spawn(1).await;
    let answer = create(&app, "test-user", Some("wait=20"), &[]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.applied(), Some("wait=20"));
    assert!(answer.varies_on_prefer(), "{answer:?}");
    let id = answer.task_id();
    assert_eq!(answer.header("location"), Some(format!("/tasks/{id}").as_str()));
    assert_eq!(answer.body["status"], "completed", "{answer:?}");
    let steps = answer.body["steps"].as_array().expect("steps");
    assert!(!steps.is_empty() && steps.iter().all(|s| s["status"] == "completed"), "{steps:?}");
    // The same body as a read of the task.
    let read = read(&app.http, &task_url(&app, id), None).await;
    assert_eq!(read.body, answer.body);
    app.stop().await;
}

#[tokio::test]
async fn a_replayed_create_that_waits_answers_the_ended_task() {
    let app = TestApp::spawn(1).await;
    let key = [("idempotency-key", "prefer-wait-replay")];
    let first = create(&app, "test-user", None, &key).await;
    assert_eq!(first.status, 202, "{first:?}");
    app.wait(first.task_id()).await;
    let replay = create(&app, "test-user", Some("wait=20"), &key).await;
    assert_eq!(replay.status, 200, "{replay:?}");
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.applied(), Some("wait=20"));
    assert_eq!(replay.task_id(), first.task_id());
    assert_eq!(replay.body["status"], "completed");
    assert!(replay.body["steps"].as_array().is_some_and(|s| !s.is_empty()), "{replay:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_read_that_waits_is_woken_when_the_task_completes() {
    // No worker yet: the task can only complete while the read waits.
    let app = TestApp::spawn(0).await;
    let id = app.submit(SEED).await;
    let waiting = tokio::spawn({
        let (http, url) = (app.http.clone(), task_url(&app, id));
        async move { read(&http, &url, Some("wait=20")).await }
    });
    listener_connected(&app).await;
    let (stop, worker) = start_worker(&app);
    let answer = waiting.await.expect("the read");
    let received = chrono::Utc::now();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.applied(), Some("wait=20"));
    assert!(answer.varies_on_prefer());
    assert_eq!(answer.body["status"], "completed", "{answer:?}");
    assert!(answer.body["steps"].as_array().is_some_and(|s| !s.is_empty()));
    // Woken by the notification, not by the fallback re-read every 2 s.
    let ended: chrono::DateTime<chrono::Utc> =
        answer.body["completed_at"].as_str().expect("completed_at").parse().expect("a timestamp");
    assert!(received - ended < chrono::TimeDelta::milliseconds(1000), "answered {} after the end", received - ended);
    stop.cancel();
    worker.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_wait_that_runs_out_answers_the_current_state_soon_after_n_seconds() {
    // No worker: the task stays pending.
    let app = TestApp::spawn(0).await;
    let created = create(&app, "test-user", Some("wait=1"), &[]).await;
    assert_eq!(created.status, 202, "{created:?}");
    assert_eq!(created.applied(), Some("wait=1"));
    assert!(created.varies_on_prefer());
    assert_eq!(created.body["status"], "pending");
    assert!(created.body.get("steps").is_none(), "as a create answers without waiting: {created:?}");
    let id = created.task_id();
    assert_eq!(created.header("location"), Some(format!("/tasks/{id}").as_str()));
    assert!(created.took >= Duration::from_secs(1) && created.took < SOON_AFTER_1_S, "{:?}", created.took);

    let read = read(&app.http, &task_url(&app, id), Some("wait=1")).await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.applied(), Some("wait=1"));
    assert_eq!(read.body["status"], "pending");
    assert_eq!(read.body["steps"], json!([]));
    assert!(read.took >= Duration::from_secs(1) && read.took < SOON_AFTER_1_S, "{:?}", read.took);
    app.stop().await;
}

#[tokio::test]
async fn without_a_usable_preference_the_answers_are_as_before() {
    let app = TestApp::spawn(0).await;
    for prefer in [None, Some("wait=soon"), Some("wait=-5"), Some("wait=0"), Some("respond-async"), Some("wait")] {
        let created = create(&app, "test-user", prefer, &[]).await;
        assert_eq!(created.status, 202, "{prefer:?}: {created:?}");
        assert_eq!(created.applied(), None, "{prefer:?}");
        assert!(created.varies_on_prefer(), "{prefer:?}");
        assert!(created.took < AT_ONCE, "{prefer:?} took {:?}", created.took);
        let read = read(&app.http, &task_url(&app, created.task_id()), prefer).await;
        assert_eq!(read.status, 200, "{prefer:?}: {read:?}");
        assert_eq!(read.applied(), None, "{prefer:?}");
        assert_eq!(read.body["status"], "pending");
        assert!(read.took < AT_ONCE, "{prefer:?} took {:?}", read.took);
    }
    // Errors are unchanged too.
    let missing = read(&app.http, &task_url(&app, Uuid::now_v7()), Some("wait=5")).await;
    assert_eq!(missing.status, 404, "{missing:?}");
    assert!(missing.took < AT_ONCE, "{:?}", missing.took);
    app.stop().await;
}

#[tokio::test]
async fn a_wait_longer_than_60_seconds_is_granted_as_60() {
    let app = TestApp::spawn(1).await;
    let answer = create(&app, "test-user", Some("wait=3600"), &[]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.applied(), Some("wait=60"));
    let read =
        read(&app.http, &task_url(&app, answer.task_id()), Some("respond-async, wait=99999999999999999999")).await;
    assert_eq!(read.applied(), Some("wait=60"));
    app.stop().await;
}

#[tokio::test]
async fn waits_beyond_a_users_limit_are_answered_at_once() {
    let mut settings = test_settings();
    settings.budgets.sse_max_streams_per_user = 1;
    // No worker: tasks stay pending.
    let app = TestApp::spawn_with(settings, 0).await;
    let id = app.submit(SEED).await;
    // Holds the user's only slot. Until it has it, a probe below may hold it for its second:
    // then this read is answered at once, without `Preference-Applied`, and asks again.
    let holding = tokio::spawn({
        let (http, url) = (app.http.clone(), task_url(&app, id));
        async move {
            loop {
                let answer = read(&http, &url, Some("wait=20")).await;
                if answer.applied().is_some() {
                    return answer;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    // Once it waits, a second wait of the same user is answered at once.
    let refused = eventually(DEADLINE, "a wait beyond the limit to be answered at once", || async {
        let answer = read(&app.http, &task_url(&app, id), Some("wait=1")).await;
        answer.applied().is_none().then_some(answer)
    })
    .await;
    assert_eq!(refused.status, 200, "not an error: {refused:?}");
    assert_eq!(refused.body["status"], "pending");
    assert!(refused.took < AT_ONCE, "{:?}", refused.took);
    // Another user has a limit of their own.
    let other = app.client.submit(&json!({"user_id": "other-user", "description": SEED})).await.unwrap().id;
    let theirs = read(&app.http, &task_url(&app, other), Some("wait=1")).await;
    assert_eq!(theirs.applied(), Some("wait=1"), "{theirs:?}");

    // Cancelling the task ends the held wait, and its slot is free again.
    app.client.cancel(id).await.expect("the pending task cancels");
    let held = holding.await.expect("the held read");
    assert_eq!(held.status, 200);
    assert_eq!(held.body["status"], "cancelled", "{held:?}");
    assert_eq!(held.applied(), Some("wait=20"));
    let next = app.submit(SEED).await;
    let again = read(&app.http, &task_url(&app, next), Some("wait=1")).await;
    assert_eq!(again.applied(), Some("wait=1"), "{again:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_task_that_fails_ends_the_wait() {
    // Steps take a moment and are refused: the task fails while the create waits.
    let fake = FakeOpenAi::start_with_delay(
        |request| if is_planning(request) { Duration::ZERO } else { Duration::from_millis(300) },
        |request| {
            if is_planning(request) {
                let plan = json!({"steps": [{"title": "Write", "instruction": "Write.", "agent": "writer", "depends_on": []}]});
                return tool_call("plan-1", "submit_plan", &plan);
            }
            (401, json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}))
        },
    )
    .await;
    let app = TestApp::spawn_with(fake.settings(), 1).await;
    let answer = create(&app, "test-user", Some("wait=20"), &[]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.applied(), Some("wait=20"));
    assert_eq!(answer.body["status"], "failed", "{answer:?}");
    assert_eq!(answer.body["steps"][0]["status"], "failed", "{answer:?}");
    assert!(answer.took < Duration::from_secs(10), "{:?}", answer.took);
    app.stop().await;
}

#[tokio::test]
async fn a_cancellation_ends_the_wait() {
    let app = TestApp::spawn(0).await;
    let id = app.submit(SEED).await;
    let waiting = tokio::spawn({
        let (http, url) = (app.http.clone(), task_url(&app, id));
        async move { read(&http, &url, Some("wait=20")).await }
    });
    listener_connected(&app).await;
    app.client.cancel(id).await.expect("the pending task cancels");
    let answer = waiting.await.expect("the read");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["status"], "cancelled", "{answer:?}");
    assert_eq!(answer.applied(), Some("wait=20"));
    assert!(answer.took < Duration::from_secs(5), "{:?}", answer.took);
    app.stop().await;
}

#[tokio::test]
async fn a_shutdown_ends_the_waits_promptly() {
    let app = TestApp::spawn(0).await;
    let id = app.submit(SEED).await;
    let waiting = tokio::spawn({
        let (http, url) = (app.http.clone(), task_url(&app, id));
        async move { read(&http, &url, Some("wait=60")).await }
    });
    listener_connected(&app).await;
    let stopping = Instant::now();
    let stopped = tokio::spawn(app.stop());
    let answer = waiting.await.expect("the read");
    let answered_after = stopping.elapsed();
    stopped.await.expect("the app stops");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["status"], "pending", "the state when the server stopped: {answer:?}");
    assert!(answered_after < Duration::from_secs(5), "answered {answered_after:?} after the shutdown began");
}
