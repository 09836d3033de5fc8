//! A fake OpenAI-compatible chat completions server on port 0. Each test scripts it with a
//! function from the request body to a status and a response body, and can read back the
//! requests it received.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde_json::{Value, json};

type Script = dyn Fn(&Value) -> (u16, Value) + Send + Sync;
type Delay = dyn Fn(&Value) -> Duration + Send + Sync;

#[derive(Clone)]
struct Shared {
    script: Arc<Script>,
    delay: Arc<Delay>,
    requests: Arc<Mutex<Vec<Value>>>,
}

pub struct FakeOpenAi {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl FakeOpenAi {
    pub async fn start(script: impl Fn(&Value) -> (u16, Value) + Send + Sync + 'static) -> Self {
        Self::start_with_delay(|_| Duration::ZERO, script).await
    }

    /// Like [`Self::start`], answering each request after `delay(request)`: a slow model.
    pub async fn start_with_delay(
        delay: impl Fn(&Value) -> Duration + Send + Sync + 'static,
        script: impl Fn(&Value) -> (u16, Value) + Send + Sync + 'static,
    ) -> Self {
        let shared = Shared { script: Arc::new(script), delay: Arc::new(delay), requests: Arc::default() };
        let requests = shared.requests.clone();
        let app = Router::new().route("/chat/completions", post(complete)).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, requests }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Test settings (a fresh database and prefix) whose model provider is this fake.
    pub fn settings(&self) -> orchestrator::config::Settings {
        let mut s = crate::helpers::test_settings();
        s.llm_provider = orchestrator::config::LlmProvider::Openai;
        s.llm_base_url = Some(self.base_url());
        s.llm_model = Some("gpt-4o-mini".into());
        s.llm_api_key = Some("sk-test-fake-provider".into());
        s
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

async fn complete(State(shared): State<Shared>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    shared.requests.lock().unwrap().push(body.clone());
    tokio::time::sleep((shared.delay)(&body)).await;
    let (status, reply) = (shared.script)(&body);
    (StatusCode::from_u16(status).unwrap(), Json(reply))
}

/// Whether the request is the planner's (it offers the `submit_plan` tool).
pub fn is_planning(request: &Value) -> bool {
    request["tools"].as_array().is_some_and(|t| t.iter().any(|t| t["function"]["name"] == "submit_plan"))
}

/// The `Step:` line of a step request.
pub fn step_title(request: &Value) -> String {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_str())
        .find_map(|c| c.lines().find_map(|l| l.strip_prefix("Step: ")).map(str::to_owned))
        .unwrap_or_default()
}

/// Tool replies already in the conversation.
pub fn tool_replies(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

pub fn answer(text: &str, prompt_tokens: u64, completion_tokens: u64) -> (u16, Value) {
    (
        200,
        json!({
            "id": "chatcmpl-test", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
        }),
    )
}

pub fn tool_call(id: &str, name: &str, arguments: &Value) -> (u16, Value) {
    (
        200,
        json!({
            "id": "chatcmpl-test", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        }),
    )
}
