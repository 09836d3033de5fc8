//! A small typed client for the orchestrator's REST API.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with a status the call did not expect; `body` is its problem+json.
    #[error("unexpected status {status}: {body}")]
    Status { status: u16, body: String },
    #[error("task {task} did not finish within {waited:?} (last status {status})")]
    Timeout { task: Uuid, waited: Duration, status: String },
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
    #[serde(skip)]
    pub raw: Value,
}

impl TaskView {
    /// Whether the task reached a state it never leaves.
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "cancelled")
    }

    fn from_value(raw: Value) -> Result<Self, ClientError> {
        let mut view: TaskView = serde_json::from_value(raw.clone())
            .map_err(|e| ClientError::Status { status: 200, body: format!("unreadable task: {e}") })?;
        view.raw = raw;
        Ok(view)
    }
}

#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self { base: base_url.into().trim_end_matches('/').to_owned(), http: reqwest::Client::new() }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Submits a task; the body is sent as given so callers can test any shape.
    pub async fn submit(&self, body: &Value) -> Result<TaskView, ClientError> {
        let response = self.http.post(format!("{}/tasks", self.base)).json(body).send().await?;
        TaskView::from_value(expect(response, 202).await?)
    }

    pub async fn task(&self, id: Uuid) -> Result<TaskView, ClientError> {
        let response = self.http.get(format!("{}/tasks/{id}", self.base)).send().await?;
        TaskView::from_value(expect(response, 200).await?)
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

/// Returns the JSON body when the status is `expected`, the status and body otherwise.
async fn expect(response: reqwest::Response, expected: u16) -> Result<Value, ClientError> {
    let status = response.status().as_u16();
    if status != expected {
        let body = response.text().await.unwrap_or_default();
        return Err(ClientError::Status { status, body });
    }
    Ok(response.json().await?)
}
