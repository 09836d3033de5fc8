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
