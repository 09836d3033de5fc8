//! OTLP trace export, with the real binary and a fake collector: the spans of a request and
//! of the job it caused reach the collector by the time the process exits on SIGTERM, under
//! the service's name, and the request's span continues the caller's W3C trace.

#![cfg(unix)] // SIGTERM

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value as AnyValue,
};
use prost::Message;
use tokio::{net::TcpListener, process::Command};

use crate::helpers::{drop_database, eventually, redis_url, test_settings};

const DEADLINE: Duration = Duration::from_secs(60);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP collector on port 0 that keeps the body of every `POST /v1/traces`.
struct FakeCollector {
    endpoint: String,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl FakeCollector {
    async fn start() -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/v1/traces",
                // An empty body is an empty ExportTraceServiceResponse: everything accepted.
                post(|State(bodies): State<Arc<Mutex<Vec<Bytes>>>>, body: Bytes| async move {
                    bodies.lock().unwrap().push(body);
                }),
            )
            .with_state(bodies.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, bodies }
    }

    /// Every exported span as (service.name, service.version, span name, trace id, parent id).
    fn spans(&self) -> Vec<ExportedSpan> {
        let bodies = self.bodies.lock().unwrap().clone();
        let mut spans = Vec::new();
        for body in bodies {
            let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
            for resource_spans in request.resource_spans {
                let attribute = |key: &str| {
                    let attributes = resource_spans.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
                    attributes.iter().find(|kv| kv.key == key).and_then(|kv| match &kv.value.as_ref()?.value {
                        Some(AnyValue::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                };
                let (service, version) = (attribute("service.name"), attribute("service.version"));
                for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                    spans.push(ExportedSpan {
                        service: service.clone(),
                        version: version.clone(),
                        name: span.name.clone(),
                        trace_id: hex::encode(&span.trace_id),
                        parent_span_id: hex::encode(&span.parent_span_id),
                    });
                }
            }
        }
        spans
    }
}

#[derive(Debug)]
struct ExportedSpan {
    service: Option<String>,
    version: Option<String>,
    name: String,
    trace_id: String,
    parent_span_id: String,
}

#[tokio::test]
async fn spans_of_requests_and_jobs_reach_the_collector_by_exit_and_continue_the_callers_trace() {
    let collector = FakeCollector::start().await;
    let settings = test_settings();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");

    let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    command
        .arg("run")
        .env("DATABASE_URL", &settings.database_url)
        .env("REDIS_URL", &settings.redis_url)
        .env("REDIS_PREFIX", &settings.redis_prefix)
        .env("DATA_DIR", &settings.data_dir)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint)
        // The spans are `info`: a quieter filter would keep them from the exporter too.
        .env("RUST_LOG", "info")
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for name in ["OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_EXPORTER_OTLP_HEADERS", "AUTH"] {
        command.env_remove(name);
    }
    let mut child = command.spawn().expect("the binary starts");

    let http = reqwest::Client::new();
    eventually(DEADLINE, "the server to answer", || async {
        let response = http.get(format!("{base}/healthz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    let response = http
        .post(format!("{base}/tasks"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        .json(&serde_json::json!({"user_id": "otel-user", "description": "Write a note."}))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status().as_u16(), 202);
    let id = response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let task = eval::ApiClient::new(base.as_str()).wait(id, DEADLINE).await.expect("the task finishes");
    assert_eq!(task.status, "completed");

    let pid = child.id().expect("still running").to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill runs");
    assert!(kill.success());
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("the process exits").unwrap();
    assert!(status.success(), "{status}");

    let spans = collector.spans();
    let http_span = spans.iter().find(|s| s.name == "http" && s.trace_id == TRACE_ID);
    let http_span = http_span.unwrap_or_else(|| panic!("the POST's span in the caller's trace in {spans:#?}"));
    assert_eq!(http_span.parent_span_id, PARENT_SPAN_ID, "{http_span:?}");
    assert_eq!(http_span.service.as_deref(), Some("orchestrator"), "{http_span:?}");
    assert_eq!(http_span.version.as_deref(), Some(env!("CARGO_PKG_VERSION")), "{http_span:?}");
    assert!(spans.iter().any(|s| s.name == "job"), "a worker job's span in {spans:#?}");

    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}:*", settings.redis_prefix)).query_async(&mut redis).await.unwrap();
    if !keys.is_empty() {
        redis::cmd("DEL").arg(keys).query_async::<()>(&mut redis).await.unwrap();
    }
    drop_database(&settings.database_url).await;
    let _ = std::fs::remove_dir_all(&settings.data_dir);
}
