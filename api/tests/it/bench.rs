//! `orchestrator eval bench`, run as the real binary against a real server: the report it
//! writes and its exit code.

use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::helpers::TestApp;

#[tokio::test]
async fn eval_bench_submits_waits_and_writes_its_report() {
    let app = TestApp::spawn(1).await;
    let out = std::env::temp_dir().join(format!("orchestrator-bench-{}", uuid::Uuid::new_v4().simple()));
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["eval", "bench", "--tasks", "20", "--concurrency", "4", "--timeout-secs", "90", "--out"])
            .arg(&out)
            .args(["--url", &format!("http://{}", app.addr)])
            .env_remove("ORCHESTRATOR_URL")
            .env_remove("ORCHESTRATOR_API_KEY")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the benchmark finishes before the deadline")
    .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("End-to-end throughput"), "{stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).expect("bench.json"))
        .expect("bench.json is JSON");
    assert_eq!(report["tasks"], 20);
    assert_eq!(report["submission"]["ok"], 20);
    assert_eq!(report["submission"]["failed"], 0);
    assert!(report["submission"]["requests_per_s"].as_f64().unwrap() > 0.0, "{report}");
    let e2e = &report["end_to_end"];
    assert_eq!(e2e["completed"], 20, "{report}");
    assert_eq!(e2e["unfinished"], 0);
    assert!(e2e["tasks_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(e2e["steps"].as_u64().unwrap() >= 20 * 4, "four steps per task: {report}");
    assert!(e2e["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{report}");
    let samples = report["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 20);
    assert!(samples.iter().all(|s| s["status"] == "completed" && s["latency_ms"].as_f64().is_some()));

    let svg = std::fs::read_to_string(out.join("latency.svg")).expect("latency.svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<circle ").count(), 20);
    assert!(std::fs::read_to_string(out.join("bench.md")).expect("bench.md").contains("| Measure | Value |"));

    let _ = std::fs::remove_dir_all(&out);
    app.stop().await;
}

#[tokio::test]
async fn eval_bench_closed_loop_keeps_tasks_in_flight_and_measures_the_server() {
    let app = TestApp::spawn(2).await;
    let out = std::env::temp_dir().join(format!("orchestrator-bench-closed-{}", uuid::Uuid::new_v4().simple()));
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(["eval", "bench", "--mode", "closed", "--in-flight", "4", "--tasks", "12", "--timeout-secs", "90"])
            .arg("--out")
            .arg(&out)
            .args(["--url", &format!("http://{}", app.addr)])
            .env_remove("ORCHESTRATOR_URL")
            .env_remove("ORCHESTRATOR_API_KEY")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the benchmark finishes before the deadline")
    .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("closed loop") && stdout.contains("Client latency"), "{stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).expect("bench.json"))
        .expect("bench.json is JSON");
    assert_eq!(report["mode"], "closed");
    assert_eq!(report["concurrency"], 4);
    assert_eq!(report["distinct_descriptions"], true);
    assert_eq!(report["submission"]["ok"], 12);
    let e2e = &report["end_to_end"];
    assert_eq!(e2e["completed"], 12, "{report}");
    assert!(e2e["steps"].as_u64().unwrap() >= 12 * 4, "four steps per task, from the final answers: {report}");
    assert!(e2e["client_latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{report}");
    // Every task was submitted and read with `Prefer: wait`.
    assert!(report["waiting"]["requests"].as_u64().unwrap() >= 12, "{report}");
    // The server is this test process, found through the port it listens on.
    assert_eq!(report["cpu"]["server_pid"], std::process::id(), "{report}");
    assert_eq!(report["cpu"]["tasks"], 12);
    assert!(report["cpu"]["server_ms"].as_f64().unwrap() >= 0.0, "{report}");

    // Distinct descriptions by default: no two tasks share one.
    let samples = report["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 12);
    let mut descriptions = std::collections::HashSet::new();
    for sample in samples {
        let id = sample["id"].as_str().unwrap().parse().unwrap();
        descriptions.insert(app.client.task(id).await.expect("the task").description);
    }
    assert_eq!(descriptions.len(), 12);

    let timeline = std::fs::read_to_string(out.join("timeline.svg")).expect("timeline.svg");
    assert!(timeline.starts_with("<svg") && timeline.trim_end().ends_with("</svg>"));
    assert_eq!(timeline.matches("<polyline ").count(), 3, "throughput, p50 and p95");
    assert!(std::fs::read_to_string(out.join("bench.md")).expect("bench.md").contains("CPU per task"));

    let _ = std::fs::remove_dir_all(&out);
    app.stop().await;
}
