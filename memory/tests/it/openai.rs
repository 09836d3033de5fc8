//! The OpenAI-compatible embedder against a fake embeddings server on a random port.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use memory::{Embedder, MemoryError, OpenAiEmbedder, OpenAiEmbedderConfig};
use serde_json::{Value, json};

const DIM: usize = 4;

/// What the fake answers to one request.
#[derive(Clone)]
enum Reply {
    /// Embeddings of the inputs, listed in reverse order.
    Embeddings,
    /// Embeddings with one element too many.
    WrongDimension,
    Status {
        status: u16,
        retry_after: Option<&'static str>,
        body: &'static str,
    },
}

#[derive(Default)]
struct Fake {
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<(Option<String>, Value)>>,
}

/// A deterministic vector for a text: its length and its first byte.
fn vector_of(text: &str) -> Vec<f32> {
    vec![text.len() as f32, f32::from(text.as_bytes()[0]), 1.0, 0.0]
}

async fn embeddings(State(fake): State<Arc<Fake>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    fake.requests.lock().expect("lock").push((auth, body.clone()));
    let reply = fake.script.lock().expect("lock").pop_front().unwrap_or(Reply::Embeddings);
    let inputs: Vec<String> =
        body["input"].as_array().expect("input array").iter().map(|v| v.as_str().expect("string").to_owned()).collect();
    match reply {
        Reply::Embeddings | Reply::WrongDimension => {
            let mut data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(index, text)| {
                    let mut embedding = vector_of(text);
                    if matches!(reply, Reply::WrongDimension) {
                        embedding.push(0.0);
                    }
                    json!({"object": "embedding", "index": index, "embedding": embedding})
                })
                .collect();
            data.reverse();
            Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
        }
        Reply::Status { status, retry_after, body } => {
            let mut response = (StatusCode::from_u16(status).expect("status"), body).into_response();
            if let Some(value) = retry_after {
                response.headers_mut().insert("retry-after", value.parse().expect("header"));
            }
            response
        }
    }
}

async fn serve(script: Vec<Reply>) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake { script: Mutex::new(script.into()), ..Fake::default() });
    let app = axum::Router::new().route("/v1/embeddings", axum::routing::post(embeddings)).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), fake)
}

fn config(base_url: &str) -> OpenAiEmbedderConfig {
    OpenAiEmbedderConfig {
        api_key: Some("sk-test-key".into()),
        batch_size: 3,
        max_retries: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..OpenAiEmbedderConfig::new(base_url, "text-embedding-test", DIM)
    }
}

fn texts(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn batches_in_order_with_the_bearer_key_and_skips_blank_texts() {
    let (url, fake) = serve(vec![]).await;
    let embedder = OpenAiEmbedder::new(config(&url)).expect("embedder");
    assert_eq!(embedder.name(), "openai:text-embedding-test:4");
    let inputs = texts(&["alpha", "", "bravo", "charlie", "  ", "delta", "echo", "foxtrot", "golf"]);
    let vectors = embedder.embed(&inputs).await.expect("embed");
    assert_eq!(vectors.len(), inputs.len());
    for (text, vector) in inputs.iter().zip(&vectors) {
        if text.trim().is_empty() {
            assert_eq!(vector, &vec![0.0; DIM], "blank texts are not sent");
        } else {
            assert_eq!(vector, &vector_of(text), "{text}");
        }
    }
    let requests = fake.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 3, "7 texts in batches of 3");
    for (auth, body) in &requests {
        assert_eq!(auth.as_deref(), Some("Bearer sk-test-key"));
        assert_eq!(body["model"], "text-embedding-test");
        assert!(body.get("dimensions").is_none(), "not requested");
    }
    assert_eq!(requests[2].1["input"], json!(["golf"]));
    assert!(embedder.embed(&[]).await.expect("nothing").is_empty());
    assert_eq!(fake.requests.lock().expect("lock").len(), 3, "no request for no input");
}

#[tokio::test]
async fn a_dimension_other_than_configured_is_an_error() {
    let (url, _fake) = serve(vec![Reply::WrongDimension]).await;
    let embedder = OpenAiEmbedder::new(config(&url)).expect("embedder");
    match embedder.embed(&texts(&["alpha"])).await {
        Err(MemoryError::DimensionMismatch { expected: 4, actual: 5 }) => {}
        other => panic!("accepted a wrong dimension: {other:?}"),
    }
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_honouring_retry_after() {
    let script = vec![
        Reply::Status { status: 429, retry_after: Some("1"), body: r#"{"error":{"message":"slow down"}}"# },
        Reply::Status { status: 503, retry_after: None, body: "overloaded" },
    ];
    let (url, fake) = serve(script).await;
    let embedder = OpenAiEmbedder::new(config(&url)).expect("embedder");
    let started = Instant::now();
    let vectors = embedder.embed(&texts(&["alpha"])).await.expect("third attempt succeeds");
    assert_eq!(vectors, vec![vector_of("alpha")]);
    assert!(started.elapsed() >= Duration::from_secs(1), "waited for Retry-After: {:?}", started.elapsed());
    assert_eq!(fake.requests.lock().expect("lock").len(), 3);
}

#[tokio::test]
async fn retries_stop_at_the_limit() {
    let script = vec![Reply::Status { status: 500, retry_after: None, body: "boom" }; 5];
    let (url, fake) = serve(script).await;
    let embedder = OpenAiEmbedder::new(config(&url)).expect("embedder");
    match embedder.embed(&texts(&["alpha"])).await {
        Err(MemoryError::Backend(message)) => {
            assert!(message.contains("3 attempts") && message.contains("boom"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.requests.lock().expect("lock").len(), 3, "one attempt and two retries");
}

#[tokio::test]
async fn a_retry_after_beyond_the_ceiling_fails_at_once() {
    let script = vec![Reply::Status { status: 429, retry_after: Some("3600"), body: "quota" }];
    let (url, fake) = serve(script).await;
    let embedder = OpenAiEmbedder::new(config(&url)).expect("embedder");
    let started = Instant::now();
    assert!(matches!(embedder.embed(&texts(&["alpha"])).await, Err(MemoryError::Backend(_))));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(fake.requests.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn client_errors_are_typed_and_not_retried() {
    let script = vec![Reply::Status {
        status: 401,
        retry_after: None,
        body: r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#,
    }];
    let (url, fake) = serve(script).await;
    let embedder = OpenAiEmbedder::new(config(&url)).expect("embedder");
    match embedder.embed(&texts(&["alpha"])).await {
        Err(MemoryError::EmbeddingRejected { status: 401, message }) => {
            assert_eq!(message, "Incorrect API key provided")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.requests.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn connection_failures_are_retried_then_reported() {
    // A port that was just free: nothing listens there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let embedder = OpenAiEmbedder::new(config(&format!("http://{addr}/v1"))).expect("embedder");
    match embedder.embed(&texts(&["alpha"])).await {
        Err(MemoryError::Backend(message)) => assert!(message.contains("3 attempts"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn dimensions_are_sent_when_asked() {
    let (url, fake) = serve(vec![]).await;
    let embedder =
        OpenAiEmbedder::new(OpenAiEmbedderConfig { request_dimensions: true, ..config(&url) }).expect("embedder");
    embedder.embed(&texts(&["alpha"])).await.expect("embed");
    assert_eq!(fake.requests.lock().expect("lock")[0].1["dimensions"], json!(DIM));
}
