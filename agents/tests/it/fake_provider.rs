//! A scripted model provider: a real HTTP server on 127.0.0.1 port 0 that answers each
//! request with the next scripted reply and records every request it receives.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
    delay: Duration,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn ok(body: Value) -> Self {
        Self::status(200, body)
    }

    /// Any status with a JSON body.
    pub fn status(status: u16, body: Value) -> Self {
        Self { status, headers: Vec::new(), body, delay: Duration::ZERO }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Answers only after `delay`: a slow provider.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
}

/// The running fake; stops when dropped.
pub struct FakeProvider {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    script: Arc<Script>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeProvider {
    pub async fn start(replies: Vec<Reply>) -> Self {
        let script = Arc::new(Script { replies: Mutex::new(replies.into()), received: Mutex::default() });
        let app = Router::new().fallback(answer).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake provider");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake provider server");
        });
        Self { url, script, server }
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.script.received.lock().expect("lock").clone()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(State(script): State<Arc<Script>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    script.received.lock().expect("lock").push(Received {
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    });
    let next = script.replies.lock().expect("lock").pop_front();
    let Some(reply) = next else {
        let body = json!({"error": {"message": "fake provider: no scripted reply left"}});
        return (StatusCode::IM_A_TEAPOT, axum::Json(body)).into_response();
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut headers = HeaderMap::new();
    for (name, value) in reply.headers {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_str(&value).expect("header value"));
    }
    let status = StatusCode::from_u16(reply.status).expect("status");
    (status, headers, axum::Json(reply.body)).into_response()
}
