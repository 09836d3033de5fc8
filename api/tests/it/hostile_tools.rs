//! Tool input chosen to hurt: a model (here the fake OpenAI provider) asks `json_extract` for
//! the query that used to pin a runtime thread until the process ran out of memory, or for a
//! result far over `TOOL_MAX_RESULT_BYTES`. The call must end with an error (or a cut
//! result) within the tool timeout, and the server must keep answering meanwhile.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use orchestrator::config::{LlmProvider, Settings};
use serde_json::{Value, json};

use crate::{
    fake_llm::{FakeOpenAi, answer, is_planning, tool_call, tool_replies},
    helpers::{TestApp, test_settings},
};

/// The hostile path: six descendant segments, billions of nodes on a deep document.
const HOSTILE_PATH: &str = "$..*..*..*..*..*..*";

fn settings(fake: &FakeOpenAi) -> Settings {
    let mut s = test_settings();
    s.llm_provider = LlmProvider::Openai;
    s.llm_base_url = Some(fake.base_url());
    s.llm_model = Some("gpt-4o-mini".into());
    s.llm_api_key = Some("sk-test-hostile-tools".into());
    s.llm_max_retries = 1;
    s.tool_timeout_secs = 1;
    s
}

/// One analyst step (the analyst may use `json_extract`).
fn one_step_plan() -> (u16, Value) {
    tool_call(
        "plan-1",
        "submit_plan",
        &json!({"steps": [{"title": "Extract", "instruction": "Extract the values.", "agent": "analyst", "depends_on": []}]}),
    )
}

/// `[[[…[1]…]]]`, 100 arrays deep: 201 bytes.
fn nested_100() -> Value {
    serde_json::from_str(&format!("{}1{}", "[".repeat(100), "]".repeat(100))).unwrap()
}

/// Probes `GET /healthz` from its own OS thread, outside the server's runtime, so a runtime
/// whose threads are all pinned shows up as a probe that times out.
struct HealthProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Option<u16>, Duration)>>,
}

impl HealthProbe {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut probes = Vec::new();
                // At least one probe, however fast the task ends.
                loop {
                    let started = Instant::now();
                    probes.push((healthz(addr), started.elapsed()));
                    if stop.load(Ordering::Relaxed) {
                        return probes;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Self { stop, thread }
    }

    /// Every probe's status (`None`: no answer within 2 s) and latency. Joins off the
    /// runtime, which must stay free to answer the probe in flight.
    async fn finish(self) -> Vec<(Option<u16>, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join().expect("the probe thread")).await.unwrap()
    }
}

fn healthz(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

async fn tool_calls(app: &TestApp, task: uuid::Uuid) -> Vec<Value> {
    let response = app.http.get(app.url(&format!("/tasks/{task}/tool-calls"))).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json::<Value>().await.unwrap()["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_exponential_json_path_ends_in_a_tool_error_while_the_server_keeps_answering() {
    let fake = FakeOpenAi::start(|request| {
        if is_planning(request) {
            return one_step_plan();
        }
        let replies = tool_replies(request);
        match replies.len() {
            0 => tool_call("c1", "json_extract", &json!({"json": nested_100(), "path": HOSTILE_PATH})),
            1 => tool_call("c2", "json_extract", &json!({"json": nested_100().to_string(), "path": "$..*"})),
            _ => answer(&format!("The tool said: {} / {}", replies[0], replies[1]), 100, 20),
        }
    })
    .await;
    let app = TestApp::spawn_with(settings(&fake), 1).await;
    let probe = HealthProbe::start(app.addr);
    let id = app.submit("Extract every value from this deeply nested document.").await;
    let task = app.wait(id).await;
    let probes = probe.finish().await;
    assert_eq!(task["status"], "completed", "{task}");

    let calls = tool_calls(&app, id).await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    for call in &calls {
        assert_eq!((call["tool"].as_str(), call["status"].as_str()), (Some("json_extract"), Some("error")), "{call}");
        assert!(call["latency_ms"].as_f64().unwrap() < 1000.0, "within TOOL_TIMEOUT_SECS: {call}");
    }
    let path_error = calls[0]["error"].as_str().unwrap();
    assert!(path_error.contains("6 descendant (`..`) segments; at most 2"), "{path_error}");
    let depth_error = calls[1]["error"].as_str().unwrap();
    assert!(depth_error.contains("nested 100 deep"), "{depth_error}");
    // The model was told why, and could answer.
    assert!(task["result"].as_str().unwrap().contains("descendant"), "{task}");

    assert!(!probes.is_empty());
    for (status, latency) in &probes {
        assert_eq!(*status, Some(200), "/healthz answered {status:?} after {latency:?}");
        assert!(*latency < Duration::from_secs(1), "/healthz took {latency:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_huge_tool_result_is_cut_before_it_is_stored_or_sent_back() {
    let text = "x".repeat(50_000);
    let fake = FakeOpenAi::start(move |request| {
        if is_planning(request) {
            return one_step_plan();
        }
        match tool_replies(request).as_slice() {
            [] => tool_call("c1", "json_extract", &json!({"json": {"text": text}, "path": "$.text"})),
            [reply, ..] => answer(&format!("The reply had {} bytes: {reply}", reply.len()), 100, 20),
        }
    })
    .await;
    let mut settings = settings(&fake);
    settings.tool_max_result_bytes = 1000;
    let app = TestApp::spawn_with(settings, 1).await;
    let id = app.submit("Extract the text.").await;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");

    let calls = tool_calls(&app, id).await;
    assert_eq!(calls[0]["status"], "ok", "{calls:?}");
    let result = &calls[0]["result"];
    assert_eq!(result["truncated"], json!(true), "{result}");
    let cut = result["text"].as_str().unwrap();
    assert!(cut.len() <= 1000 && cut.starts_with(r#"{"matches":["xxx"#), "{} bytes", cut.len());
    // The model got the same cut result, not the 50 000 bytes.
    let reply = serde_json::from_str::<Value>(task["result"].as_str().unwrap().split_once(": ").unwrap().1).unwrap();
    assert_eq!(&reply, result);
    app.stop().await;
}
