//! A small typed client for the orchestrator's REST API: tasks (submit, follow up, read, list,
//! cancel) and their live event stream (Server-Sent Events).
//!
//! Every call states the status it expects; any other answer is a [`ClientError::Status`]
//! carrying the server's problem+json body, whose `detail` [`ClientError::detail`] extracts.

use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, Url, header};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// How long connecting to the server may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with a status the call did not expect; `body` is its problem+json.
    #[error("unexpected status {status}: {body}")]
    Status { status: u16, body: String },
    #[error("task {task} did not finish within {waited:?} (last status {status})")]
    Timeout { task: Uuid, waited: Duration, status: String },
    #[error("invalid server URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The event stream sent something that is not an event of the API.
    #[error("unreadable event stream: {0}")]
    Stream(String),
}

impl ClientError {
    /// One line for a person: the problem's `detail` when the server sent one.
    pub fn detail(&self) -> String {
        match self {
            Self::Status { status, body } => serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|problem| problem.get("detail").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| format!("the server answered {status}: {}", body.trim())),
            Self::Http(e) if e.is_connect() || e.is_timeout() => format!("cannot reach the server: {e}"),
            other => other.to_string(),
        }
    }

    /// Whether the server could not be reached at all (as opposed to answering with an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Http(e) if e.is_connect() || e.is_timeout())
    }

    /// The HTTP status the server answered with, when it answered one the call did not expect.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The parts of a task every caller needs; the full document is in `raw`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskView {
    pub id: Uuid,
    pub status: String,
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub priority: String,
    #[serde(default)]
    pub tokens_in: i64,
    #[serde(default)]
    pub tokens_out: i64,
    #[serde(default)]
    pub cost_usd: f64,
    /// Revised plans the task got (0 from servers before replanning).
    #[serde(default)]
    pub replans: i64,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub completed_at: Option<String>,
    /// The thread's first task: the task itself unless it is a follow-up (absent from servers
    /// that predate follow-ups).
    #[serde(default)]
    pub thread_id: Option<Uuid>,
    /// The task a follow-up continues.
    #[serde(default)]
    pub parent_task_id: Option<Uuid>,
    /// Present when the task was read on its own (`GET /tasks/{id}`), empty in lists.
    #[serde(default)]
    pub steps: Vec<StepView>,
    #[serde(skip)]
    pub raw: Value,
}

/// One step of a task, in plan order.
#[derive(Debug, Clone, Deserialize)]
pub struct StepView {
    pub id: Uuid,
    pub position: i32,
    pub title: String,
    pub agent: String,
    pub status: String,
    #[serde(default)]
    pub attempt: i32,
    #[serde(default)]
    pub max_attempts: i32,
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub tokens_in: i64,
    #[serde(default)]
    pub tokens_out: i64,
    #[serde(default)]
    pub cost_usd: f64,
}

impl TaskView {
    /// Whether the task reached a state it never leaves.
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "cancelled" | "partial")
    }

    fn from_value(raw: Value) -> Result<Self, ClientError> {
        let mut view: TaskView = serde_json::from_value(raw.clone())
            .map_err(|e| ClientError::Status { status: 200, body: format!("unreadable task: {e}") })?;
        view.raw = raw;
        Ok(view)
    }
}

/// One tool call of a task, as `GET /tasks/{id}/tool-calls` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolCallView {
    pub tool: String,
    /// `ok`, `error` or `rejected`.
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
}

/// A tool call that waited (or waits) for a person: an entry of `GET /tasks/{id}/approvals`.
#[derive(Debug, Clone, Deserialize)]
pub struct ApprovalView {
    pub call_id: Uuid,
    pub tool: String,
    pub agent: String,
    pub arguments: Value,
    /// `pending`, `approved`, `denied`, `expired` or `cancelled`.
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// The name of an entry of `GET /agents` or `GET /tools`.
#[derive(Debug, Clone, Deserialize)]
struct Named {
    name: String,
}

/// The answer to a submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub task: TaskView,
    /// The `Location` header: where the task can be read.
    pub location: Option<String>,
    /// The same Idempotency-Key and body were submitted before; this is that task.
    pub replayed: bool,
}

/// The answer to a request sent with `Prefer: wait=N` (RFC 7240).
#[derive(Debug, Clone)]
pub struct Waited {
    /// The ended task, or its state when the wait was over (or not honoured).
    pub task: TaskView,
    /// The answer carried `Preference-Applied`: the server held it until the task ended or
    /// the N seconds passed, so asking again at once does not spin. A server that ignores
    /// the preference answers at once, without it.
    pub preference_applied: bool,
}

/// Filters of `GET /tasks`; `None` leaves a filter out.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub user_id: Option<String>,
    pub status: Option<String>,
    /// Only tasks of this `task_type`.
    pub task_type: Option<String>,
    /// Only the tasks of this thread (a task's `thread_id`).
    pub thread_id: Option<Uuid>,
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of tasks, newest first.
#[derive(Debug, Clone)]
pub struct TaskPage {
    pub items: Vec<TaskView>,
    pub next_cursor: Option<String>,
}

/// One event of a task's log, as the event stream sends it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventView {
    pub id: i64,
    pub task_id: Uuid,
    pub step_id: Option<Uuid>,
    /// `task_created`, `step_started`, `tool_called`, `task_completed`, …
    pub kind: String,
    #[serde(default)]
    pub data: Value,
    pub created_at: String,
}

impl EventView {
    /// Whether this is the task's final event.
    pub fn ends_task(&self) -> bool {
        matches!(self.kind.as_str(), "task_completed" | "task_failed" | "task_cancelled" | "task_partial")
    }
}

#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base_url: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            // Building only fails when a TLS backend cannot start; this build has none.
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { base: base_url.into().trim_end_matches('/').to_owned(), api_key: None, http }
    }

    /// Sends `Authorization: Bearer <key>` with every request when `key` is set.
    pub fn with_api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }

    /// Whether requests carry a key, which then names their user.
    pub fn has_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, url: impl reqwest::IntoUrl) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Submits a task; the body is sent as given so callers can test any shape.
    pub async fn submit(&self, body: &Value) -> Result<TaskView, ClientError> {
        Ok(self.create(body).await?.task)
    }

    /// Submits a task and returns it with its `Location`.
    pub async fn create(&self, body: &Value) -> Result<Submitted, ClientError> {
        submitted(self.request(Method::POST, self.url("/tasks")).json(body).send().await?).await
    }

    /// Follows up on the ended task `parent` (`POST /tasks/{id}/follow-ups`): a task in its
    /// thread, returned with its `Location`. The body is sent as given.
    pub async fn follow_up(&self, parent: Uuid, body: &Value) -> Result<Submitted, ClientError> {
        let url = self.url(&format!("/tasks/{parent}/follow-ups"));
        submitted(self.request(Method::POST, url).json(body).send().await?).await
    }

    /// Submits a task with `Prefer: wait=N`: the answer is `200` with the ended task, or
    /// `202` with its state once `wait` passed (or at once, from a server that ignores it).
    pub async fn create_waiting(&self, body: &Value, wait: Duration) -> Result<Waited, ClientError> {
        let request = self.request(Method::POST, self.url("/tasks")).json(body);
        waited(request, wait, &[200, 202]).await
    }

    /// Reads a task with `Prefer: wait=N`: the answer comes when it has ended or `wait`
    /// passed (at once from a server that ignores the preference).
    pub async fn task_waiting(&self, id: Uuid, wait: Duration) -> Result<Waited, ClientError> {
        let request = self.request(Method::GET, self.url(&format!("/tasks/{id}")));
        waited(request, wait, &[200]).await
    }

    pub async fn task(&self, id: Uuid) -> Result<TaskView, ClientError> {
        let response = self.request(Method::GET, self.url(&format!("/tasks/{id}"))).send().await?;
        TaskView::from_value(expect(response, 200).await?)
    }

    /// One page of tasks matching `query`, newest first.
    pub async fn list(&self, query: &ListQuery) -> Result<TaskPage, ClientError> {
        let mut url = Url::parse(&self.url("/tasks"))
            .map_err(|e| ClientError::BadUrl { url: self.base.clone(), reason: e.to_string() })?;
        {
            let mut pairs = url.query_pairs_mut();
            let limit = query.limit.map(|l| l.to_string());
            let thread_id = query.thread_id.map(|t| t.to_string());
            for (name, value) in [
                ("user_id", query.user_id.as_deref()),
                ("status", query.status.as_deref()),
                ("task_type", query.task_type.as_deref()),
                ("thread_id", thread_id.as_deref()),
                ("limit", limit.as_deref()),
                ("cursor", query.cursor.as_deref()),
            ] {
                if let Some(value) = value {
                    pairs.append_pair(name, value);
                }
            }
        }
        let response = self.request(Method::GET, url).send().await?;
        let mut page = expect(response, 200).await?;
        let items = match page.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items.into_iter().map(TaskView::from_value).collect::<Result<_, _>>()?,
            _ => return Err(ClientError::Status { status: 200, body: "a task list without items".into() }),
        };
        let next_cursor = page.get("next_cursor").and_then(Value::as_str).map(str::to_owned);
        Ok(TaskPage { items, next_cursor })
    }

    /// Cancels a task that has not ended; the server answers 409 for one that has.
    pub async fn cancel(&self, id: Uuid) -> Result<TaskView, ClientError> {
        let response = self.request(Method::POST, self.url(&format!("/tasks/{id}/cancel"))).send().await?;
        TaskView::from_value(expect(response, 200).await?)
    }

    /// Runs a failed task again from where it failed (202).
    pub async fn retry(&self, id: Uuid) -> Result<TaskView, ClientError> {
        let response = self.request(Method::POST, self.url(&format!("/tasks/{id}/retry"))).send().await?;
        TaskView::from_value(expect(response, 202).await?)
    }

    /// The task's tool calls that waited (or wait) for a person, oldest first.
    pub async fn approvals(&self, id: Uuid) -> Result<Vec<ApprovalView>, ClientError> {
        let response = self.request(Method::GET, self.url(&format!("/tasks/{id}/approvals"))).send().await?;
        items(expect(response, 200).await?)
    }

    /// Approves or denies a waiting call (`decision` is the body of
    /// `POST /tasks/{id}/approvals/{call_id}`).
    pub async fn decide(&self, id: Uuid, call: Uuid, decision: &Value) -> Result<ApprovalView, ClientError> {
        let url = self.url(&format!("/tasks/{id}/approvals/{call}"));
        let response = self.request(Method::POST, url).json(decision).send().await?;
        serde_json::from_value(expect(response, 200).await?)
            .map_err(|e| ClientError::Status { status: 200, body: format!("unreadable approval: {e}") })
    }

    /// Every tool call of the task, in order, rejected ones included.
    pub async fn tool_calls(&self, id: Uuid) -> Result<Vec<ToolCallView>, ClientError> {
        let response = self.request(Method::GET, self.url(&format!("/tasks/{id}/tool-calls"))).send().await?;
        items(expect(response, 200).await?)
    }

    /// The names of the deployment's agents.
    pub async fn agent_names(&self) -> Result<Vec<String>, ClientError> {
        let response = self.request(Method::GET, self.url("/agents")).send().await?;
        Ok(items::<Named>(expect(response, 200).await?)?.into_iter().map(|a| a.name).collect())
    }

    /// The names of the deployment's tools.
    pub async fn tool_names(&self) -> Result<Vec<String>, ClientError> {
        let response = self.request(Method::GET, self.url("/tools")).send().await?;
        Ok(items::<Named>(expect(response, 200).await?)?.into_iter().map(|t| t.name).collect())
    }

    /// Opens the task's event stream: the events after `after` (an event id; from the first
    /// event when `None`), then new ones as they happen, ending after the task's final event.
    pub async fn events(&self, id: Uuid, after: Option<i64>) -> Result<EventStream, ClientError> {
        let mut request = self
            .request(Method::GET, self.url(&format!("/tasks/{id}/events")))
            .header(header::ACCEPT, "text/event-stream");
        if let Some(after) = after {
            request = request.header("last-event-id", after.to_string());
        }
        let response = request.send().await?;
        if response.status().as_u16() != 200 {
            let status = response.status().as_u16();
            return Err(ClientError::Status { status, body: response.text().await.unwrap_or_default() });
        }
        Ok(EventStream { response, parser: SseParser::default() })
    }

    /// Polls the task until it reaches a terminal state or `deadline` passes.
    pub async fn wait(&self, id: Uuid, deadline: Duration) -> Result<TaskView, ClientError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            let task = self.task(id).await?;
            if task.is_terminal() {
                return Ok(task);
            }
            if started.elapsed() >= deadline {
                return Err(ClientError::Timeout { task: id, waited: started.elapsed(), status: task.status });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

/// A creation's answer (`202`): the task, its `Location` and whether it was a replay.
async fn submitted(response: reqwest::Response) -> Result<Submitted, ClientError> {
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let location = header(header::LOCATION.as_str());
    let replayed = header("idempotent-replayed").as_deref() == Some("true");
    let task = TaskView::from_value(expect(response, 202).await?)?;
    Ok(Submitted { task, location, replayed })
}

/// Returns the JSON body when the status is `expected`, the status and body otherwise.
async fn expect(response: reqwest::Response, expected: u16) -> Result<Value, ClientError> {
    let status = response.status().as_u16();
    if status != expected {
        let body = response.text().await.unwrap_or_default();
        return Err(ClientError::Status { status, body });
    }
    Ok(response.json().await?)
}

/// Sends `request` with `Prefer: wait=<whole seconds, at least 1>` and reads the task it
/// answers with, in one of the `expected` statuses.
async fn waited(request: RequestBuilder, wait: Duration, expected: &[u16]) -> Result<Waited, ClientError> {
    let seconds = wait.as_secs().max(1);
    let response = request.header("prefer", format!("wait={seconds}")).send().await?;
    let preference_applied = response.headers().contains_key("preference-applied");
    let status = response.status().as_u16();
    let body = if expected.contains(&status) {
        expect(response, status).await?
    } else {
        expect(response, expected[0]).await?
    };
    Ok(Waited { task: TaskView::from_value(body)?, preference_applied })
}

/// The `items` of a list answer.
fn items<T: serde::de::DeserializeOwned>(mut body: Value) -> Result<Vec<T>, ClientError> {
    let items = body.get_mut("items").map(Value::take).unwrap_or(Value::Null);
    serde_json::from_value(items)
        .map_err(|e| ClientError::Status { status: 200, body: format!("unreadable list: {e}") })
}

/// A task's events as they arrive; see [`ApiClient::events`].
pub struct EventStream {
    response: reqwest::Response,
    parser: SseParser,
}

impl EventStream {
    /// The next event; `None` once the server closed the stream (after the task's final
    /// event, or early when it shut down: resume from the last id seen).
    pub async fn next(&mut self) -> Result<Option<EventView>, ClientError> {
        loop {
            if let Some(frame) = self.parser.next_frame() {
                return serde_json::from_str(&frame.data)
                    .map(Some)
                    .map_err(|e| ClientError::Stream(format!("event {:?}: {e}", frame.id)));
            }
            match self.response.chunk().await? {
                Some(bytes) => self.parser.push(&bytes),
                None => return Ok(None),
            }
        }
    }
}

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseFrame {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Splits a `text/event-stream` body into events; comments (keep-alives) are skipped.
#[derive(Debug, Default)]
struct SseParser {
    buffer: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete event in what was pushed so far.
    fn next_frame(&mut self) -> Option<SseFrame> {
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                let (id, event, data) = (self.id.take(), self.event.take(), std::mem::take(&mut self.data));
                if !data.is_empty() {
                    return Some(SseFrame { id, event, data: data.join("\n") });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => self.id = Some(value),
                "event" => self.event = Some(value),
                "data" => self.data.push(value),
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_across_chunk_boundaries_and_keep_alives_are_skipped() {
        let mut parser = SseParser::default();
        parser.push(b": keep-alive\n\nid: 7\nevent: step_started\nda");
        assert_eq!(parser.next_frame(), None);
        parser.push(b"ta: {\"a\":1}\r\ndata: {\"b\":2}\n\nid: 8\ndata:x\n\n");
        assert_eq!(
            parser.next_frame(),
            Some(SseFrame {
                id: Some("7".into()),
                event: Some("step_started".into()),
                data: "{\"a\":1}\n{\"b\":2}".into()
            })
        );
        assert_eq!(parser.next_frame(), Some(SseFrame { id: Some("8".into()), event: None, data: "x".into() }));
        assert_eq!(parser.next_frame(), None);
    }

    #[test]
    fn every_ending_ends_the_task() {
        let event = |kind: &str| EventView {
            id: 1,
            task_id: Uuid::nil(),
            step_id: None,
            kind: kind.into(),
            data: Value::Null,
            created_at: String::new(),
        };
        for kind in ["task_completed", "task_failed", "task_cancelled", "task_partial"] {
            assert!(event(kind).ends_task(), "{kind}");
        }
        assert!(!event("task_retried").ends_task());
    }

    #[test]
    fn the_problem_detail_is_the_message() {
        let error = ClientError::Status {
            status: 409,
            body: r#"{"type":"urn:orchestrator:problem:conflict","status":409,"detail":"task x already ended"}"#.into(),
        };
        assert_eq!(error.detail(), "task x already ended");
        assert_eq!(error.status(), Some(409));
        let plain = ClientError::Status { status: 502, body: "Bad Gateway\n".into() };
        assert_eq!(plain.detail(), "the server answered 502: Bad Gateway");
    }
}
