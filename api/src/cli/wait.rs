//! Reading a task with `Prefer: wait` (RFC 7240): the server answers once the task has ended,
//! or after [`WAIT_SECS`] with the task as it is then, so following a task without its event
//! stream takes one request a minute rather than one every half second.
//!
//! [`eval::ApiClient`] has no such read, so this sends it itself, with the same base URL and
//! key, and reads the answer into the same [`TaskView`].

use std::time::Duration;

use eval::{ClientError, TaskView};
use serde_json::Value;
use uuid::Uuid;

use super::{Result, ServerArgs};

/// How long each read asks the server to wait: its maximum.
pub const WAIT_SECS: u64 = 60;
/// How long connecting to the server may take before the read fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads tasks with `Prefer: wait`.
#[derive(Debug, Clone)]
pub struct TaskWaiter {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

/// One answer: the task, and whether the server waited (it says so with `Preference-Applied`;
/// a server at this user's limit of waits, or one that predates the header, does not).
#[derive(Debug)]
pub struct Read {
    pub task: TaskView,
    pub waited: bool,
}

impl TaskWaiter {
    pub fn new(server: &ServerArgs) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            // Building fails only when a TLS backend cannot start; fall back to the defaults.
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            http,
            base: server.url.trim_end_matches('/').to_owned(),
            api_key: server.api_key.clone().filter(|k| !k.is_empty()),
        }
    }

    /// `GET /tasks/{id}` with `Prefer: wait=60`.
    pub async fn read(&self, id: Uuid) -> Result<Read> {
        let mut request =
            self.http.get(format!("{}/tasks/{id}", self.base)).header("prefer", format!("wait={WAIT_SECS}"));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(ClientError::Status { status, body: response.text().await.unwrap_or_default() });
        }
        let waited = response.headers().contains_key("preference-applied");
        let raw: Value = response.json().await?;
        let mut task: TaskView = serde_json::from_value(raw.clone())
            .map_err(|e| ClientError::Status { status, body: format!("unreadable task: {e}") })?;
        task.raw = raw;
        Ok(Read { task, waited })
    }
}
