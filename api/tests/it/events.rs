//! `GET /tasks/{id}/events` on the real server: live delivery, replay, resumption after an
//! event id, the end of the stream, refusals, and a listener that loses its connection.
//!
//! The stream is read off the wire with a small parser of its own, so the tests check the
//! SSE format itself rather than the client's reading of it.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestApp, eventually};

const SEED: &str = "Analyze the requirements and build a plan. Then implement core APIs.";
/// The seed task's whole log, as the flow test states it.
const SEED_KINDS: [&str; 10] = [
    "task_created",
    "task_planning",
    "task_planned",
    "step_ready",
    "step_started",
    "step_completed",
    "step_ready",
    "step_started",
    "step_completed",
    "task_completed",
];
const DEADLINE: Duration = Duration::from_secs(20);

/// One event off the wire.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    id: i64,
    event: String,
    data: Value,
}

/// An open event stream, read line by line.
struct SseReader {
    response: reqwest::Response,
    buffer: Vec<u8>,
    until: Instant,
}

impl SseReader {
    /// Opens the stream of `task`, expecting 200 and an event stream.
    async fn open(app: &TestApp, task: Uuid, last_event_id: Option<i64>) -> Self {
        let mut request = app.http.get(app.url(&format!("/tasks/{task}/events")));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("a response");
        assert_eq!(response.status(), 200, "opening the stream of {task}");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self { response, buffer: Vec::new(), until: Instant::now() + DEADLINE }
    }

    /// The next event, or `None` when the server closed the stream. Fails the test past the
    /// reader's deadline.
    async fn next(&mut self) -> Option<SseEvent> {
        let (mut id, mut event, mut data): (Option<String>, Option<String>, Vec<String>) = (None, None, Vec::new());
        loop {
            while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8(line[..end].to_vec()).expect("UTF-8");
                if line.is_empty() {
                    if data.is_empty() {
                        continue; // the end of a keep-alive comment
                    }
                    let data: Value = serde_json::from_str(&data.join("\n")).expect("JSON data");
                    let id = id.expect("every event has an id").parse().expect("a numeric id");
                    return Some(SseEvent { id, event: event.expect("every event has a kind"), data });
                }
                match line.split_once(": ") {
                    Some(("id", v)) => id = Some(v.to_owned()),
                    Some(("event", v)) => event = Some(v.to_owned()),
                    Some(("data", v)) => data.push(v.to_owned()),
                    _ => assert!(line.starts_with(':'), "an unexpected line: {line}"),
                }
            }
            let chunk = tokio::time::timeout_at(self.until, self.response.chunk())
                .await
                .expect("the stream to move on before the deadline")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => {
                    assert!(self.buffer.is_empty() && data.is_empty(), "the stream ended mid-event");
                    return None;
                }
            }
        }
    }

    /// Everything up to the server closing the stream.
    async fn rest(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

fn kinds(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

/// Every event's fields agree with its SSE lines and name the task.
fn assert_well_formed(events: &[SseEvent], task: Uuid) {
    for e in events {
        assert_eq!(e.data["id"], e.id, "{e:?}");
        assert_eq!(e.data["kind"], e.event.as_str(), "{e:?}");
        assert_eq!(e.data["task_id"], task.to_string(), "{e:?}");
        assert!(e.data["created_at"].is_string() && e.data["data"].is_object(), "{e:?}");
        assert!(e.data.get("step_id").is_some(), "{e:?}");
    }
}

/// A worker of `app` started by the test, so that it runs only once the test is ready.
fn start_worker(app: &TestApp) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let worker = app.app.worker("events-test-worker");
    (stop.clone(), tokio::spawn(worker.run(stop)))
}

#[tokio::test]
async fn a_stream_opened_before_the_work_follows_it_live_to_the_completion() {
    // No worker yet: everything after `task_created` can only reach the stream live.
    let app = TestApp::spawn(0).await;
    let id = app.submit(SEED).await;
    let mut stream = SseReader::open(&app, id, None).await;
    let first = stream.next().await.expect("the replayed creation");
    assert_eq!(first.event, "task_created");

    let (stop, worker) = start_worker(&app);
    let mut events = vec![first];
    events.extend(stream.rest().await);
    assert_eq!(kinds(&events), SEED_KINDS);
    assert!(events.windows(2).all(|w| w[0].id < w[1].id), "ids rise: {events:?}");
    assert_well_formed(&events, id);
    let steps: Vec<&Value> =
        events.iter().filter(|e| e.event.starts_with("step_")).map(|e| &e.data["step_id"]).collect();
    assert!(steps.iter().all(|s| s.is_string()), "step events name their step");
    assert_eq!(app.client.task(id).await.unwrap().status, "completed");

    stop.cancel();
    worker.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn resuming_after_an_event_replays_exactly_the_events_after_it() {
    let app = TestApp::spawn(1).await;
    let id = app.submit(SEED).await;
    app.wait(id).await;
    let all = SseReader::open(&app, id, None).await.rest().await;
    assert_eq!(kinds(&all), SEED_KINDS, "a finished task's stream replays its log, then closes");

    let resumed = SseReader::open(&app, id, Some(all[3].id)).await.rest().await;
    assert_eq!(resumed, all[4..]);
    // `?after=` is the same resume point for clients that cannot set the header.
    let response = app.http.get(app.url(&format!("/tasks/{id}/events?after={}", all[6].id))).send().await.unwrap();
    let text = response.text().await.unwrap();
    let ids: Vec<i64> = text.lines().filter_map(|l| l.strip_prefix("id: ")).map(|v| v.parse().unwrap()).collect();
    assert_eq!(ids, all[7..].iter().map(|e| e.id).collect::<Vec<_>>());
    app.stop().await;
}

#[tokio::test]
async fn a_stream_resumed_after_the_final_event_closes_at_once() {
    let app = TestApp::spawn(1).await;
    let id = app.submit(SEED).await;
    app.wait(id).await;
    let last = app.last_event_id(id).await;
    let started = Instant::now();
    let resumed = SseReader::open(&app, id, Some(last)).await.rest().await;
    assert_eq!(resumed, [], "nothing follows the end");
    // It closed on its own, well before the periodic re-read or a keep-alive.
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn tool_calls_appear_in_the_stream_between_the_start_and_the_end_of_their_step() {
    let app = TestApp::spawn(1).await;
    let id = app.submit("Analyze the budget: compute 12 * 7.").await;
    let events = SseReader::open(&app, id, None).await.rest().await;
    let kinds = kinds(&events);
    let at = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap_or_else(|| panic!("{kind} in {kinds:?}"));
    let tool = &events[at("tool_called")];
    assert!(at("step_started") < at("tool_called") && at("tool_called") < at("step_completed"), "{kinds:?}");
    assert_eq!(tool.data["data"]["tool"], "calculator", "{tool:?}");
    assert_eq!(tool.data["data"]["status"], "ok", "{tool:?}");
    assert_eq!(tool.data["step_id"], events[at("step_started")].data["step_id"]);
    assert_eq!(kinds.last(), Some(&"task_completed"));
    app.stop().await;
}

#[tokio::test]
async fn unknown_tasks_and_bad_resume_points_are_refused_with_problems() {
    let app = TestApp::spawn(0).await;
    let id = app.submit(SEED).await;
    let other = app.submit("Write a summary.").await;
    let other_event = app.last_event_id(other).await;
    let cases: Vec<(String, Option<String>, u16, Option<&str>)> = vec![
        (format!("/tasks/{}/events", Uuid::now_v7()), None, 404, None),
        ("/tasks/not-a-uuid/events".into(), None, 400, Some("id")),
        (format!("/tasks/{id}/events"), Some("abc".into()), 400, Some("Last-Event-ID")),
        (format!("/tasks/{id}/events"), Some(other_event.to_string()), 400, Some("Last-Event-ID")),
        (format!("/tasks/{id}/events?after=-3"), None, 400, Some("after")),
    ];
    for (path, header, status, field) in cases {
        let mut request = app.http.get(app.url(&path));
        if let Some(h) = &header {
            request = request.header("last-event-id", h);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{path} {header:?}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{path}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"].as_str(), field, "{path} {header:?}: {problem}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_listener_reconnects_after_losing_its_connection_and_streams_miss_nothing() {
    let app = TestApp::spawn(0).await;
    let id = app.submit(SEED).await;
    let mut stream = SseReader::open(&app, id, None).await;
    let first = stream.next().await.expect("the replayed creation");
    let listener_pid = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
        )
        .bind(orchestrator::events::LISTENER_APPLICATION_NAME)
        .fetch_optional(&app.db)
        .await
        .unwrap()
    };
    let before = eventually(DEADLINE, "the event listener to connect", listener_pid).await;
    let killed: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(before).fetch_one(&app.db).await.unwrap();
    assert!(killed);
    eventually(DEADLINE, "the event listener to reconnect", || async {
        listener_pid().await.filter(|pid| *pid != before)
    })
    .await;

    let (stop, worker) = start_worker(&app);
    let mut events = vec![first];
    events.extend(stream.rest().await);
    assert_eq!(kinds(&events), SEED_KINDS);
    stop.cancel();
    worker.await.unwrap();
    app.stop().await;
}

impl TestApp {
    /// The id of the task's latest event.
    async fn last_event_id(&self, task: Uuid) -> i64 {
        sqlx::query_scalar("SELECT max(id) FROM task_events WHERE task_id = $1")
            .bind(task)
            .fetch_one(&self.db)
            .await
            .expect("the task has events")
    }
}
