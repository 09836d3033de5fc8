//! A client generated from `docs/openapi.json` by a third-party generator works: it submits a
//! task with an API key, waits for it (`Prefer: wait`), and reads its steps, its cost, the task
//! list, a follow-up and its thread, and a typed 404 (`api/tests/client/generated_client_flow.py`).
//!
//! The generator is openapi-python-client, which `.ci/run` installs into a venv outside the
//! clone. The test finds it through `OPENAPI_PYTHON_CLIENT` and the venv's Python (which has
//! the generated package's dependencies: httpx, attrs, python-dateutil) through
//! `ORCHESTRATOR_TEST_PYTHON`, defaulting to the venv `.ci/run` makes. A missing tool fails the
//! test, and so does any warning from the generator: a part of the document it cannot map is
//! a flaw in the document.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use orchestrator::auth::{AuthMode, KeyStore};
use serde_json::Value;
use tokio::process::Command;

use crate::helpers::{TestApp, data_dir, test_settings};

/// Where `.ci/run` puts the venv with the generator.
const DEFAULT_VENV: &str = "/var/tmp/orchestrator-pyenv";
/// The generated package's name: the directory the generator writes with `--meta none`.
const PACKAGE: &str = "orchestrator_client";

/// A path relative to the `api` crate.
fn crate_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A directory that is removed when the test ends, passed or failed.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = data_dir(&format!("{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tool `var` names, else `default` in the CI venv; a clear failure when neither exists.
fn tool(var: &str, default: &str) -> PathBuf {
    let path = match std::env::var_os(var) {
        Some(path) => PathBuf::from(path),
        None => Path::new(DEFAULT_VENV).join("bin").join(default),
    };
    assert!(
        path.is_file(),
        "{} not found: set {var} to it, or run .ci/run, which installs openapi-python-client and its \
         Python into {DEFAULT_VENV}",
        path.display()
    );
    path
}

/// Runs `command` to the end (60 s deadline) and returns its output.
async fn run(what: &str, command: &mut Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("{what} could not start: {e}"))
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Generates the Python client from the checked-in document into `dir`/`PACKAGE`.
async fn generate(dir: &Path) {
    let generator = tool("OPENAPI_PYTHON_CLIENT", "openapi-python-client");
    let output = run(
        "openapi-python-client",
        Command::new(&generator)
            .arg("generate")
            .arg("--path")
            .arg(crate_path("../docs/openapi.json"))
            .arg("--output-path")
            .arg(dir.join(PACKAGE))
            .args(["--meta", "none", "--fail-on-warning"])
            .arg("--config")
            .arg(crate_path("tests/client/generator.yaml")),
    )
    .await;
    // It reports what it cannot map on stdout, as warnings; `--fail-on-warning` turns them
    // into a failed exit, and the check on the text keeps that so if the flag's meaning drifts.
    assert!(
        output.status.success() && !String::from_utf8_lossy(&output.stdout).contains("Warning"),
        "openapi-python-client could not generate a clean client from docs/openapi.json: {}",
        describe(&output)
    );
}

#[tokio::test]
async fn a_generated_python_client_submits_a_task_and_reads_its_steps_and_cost() {
    let mut settings = test_settings();
    settings.auth.mode = Some(AuthMode::Required);
    let app = TestApp::spawn_with(settings, 1).await;
    let key = KeyStore::new(app.db.clone()).create("py-client", "generated client", false).await.unwrap().secret;

    let dir = TempDir::new("generated-client");
    generate(&dir.0).await;
    let python = tool("ORCHESTRATOR_TEST_PYTHON", "python");
    let output = run(
        "generated_client_flow.py",
        Command::new(&python)
            .arg(crate_path("tests/client/generated_client_flow.py"))
            .arg(format!("http://{}", app.addr))
            .arg(&key)
            .env("PYTHONPATH", &dir.0)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    )
    .await;
    assert!(output.status.success(), "the generated client's flow failed: {}", describe(&output));
    let summary: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("the flow prints a JSON summary ({e}): {}", describe(&output)));

    // What the client read through its typed models is what the database holds.
    let id: uuid::Uuid = summary["task_id"].as_str().and_then(|s| s.parse().ok()).expect("a task id");
    let (user, status): (String, String) = sqlx::query_as("SELECT user_id, status FROM tasks WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .expect("the task the client submitted is stored");
    assert_eq!((user.as_str(), status.as_str()), ("py-client", "completed"), "{summary}");
    assert_eq!(summary["user_id"], "py-client", "the key named the user: {summary}");
    assert_eq!(summary["status"], "completed");
    // A tool call that waited for approval, approved through the generated operation.
    let approval = &summary["approval"];
    assert_eq!(approval["status"], "completed", "{summary}");
    assert!(approval["result"].as_str().is_some_and(|r| r.contains("45")), "{summary}");
    assert_eq!(approval["listed"], serde_json::json!(["approved"]), "{summary}");
    let approval_task: uuid::Uuid = approval["task_id"].as_str().and_then(|s| s.parse().ok()).expect("an id");
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM tool_calls WHERE task_id = $1 ORDER BY created_at, id")
            .bind(approval_task)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(statuses, ["awaiting_approval", "ok"], "the call ran once, after its approval");
    // The plan as a versioned resource: the task's steps, at version 1.
    let plan = &summary["plan"];
    assert_eq!((plan["version"].clone(), plan["etag"].clone()), (serde_json::json!(1), serde_json::json!("\"1\"")));
    let versions: Vec<String> =
        sqlx::query_scalar("SELECT created_by FROM plan_versions WHERE task_id = $1 ORDER BY version")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(versions, [plan["created_by"].as_str().unwrap()], "{summary}");
    // A paused task, its plan edited with If-Match (the stale edit refused), then started.
    let paused = &summary["paused"];
    assert_eq!(paused["status"], "completed", "{summary}");
    assert_eq!(paused["created_by"], "user:py-client", "{summary}");
    assert_eq!(paused["agents"], serde_json::json!(["analyst", "writer"]), "{summary}");
    assert_eq!(paused["stale"], 412, "{summary}");
    // The task ended within the create's `Prefer: wait`, which answered it with its steps.
    assert_eq!(summary["created"], 200, "{summary}");

    let steps = summary["steps"].as_array().expect("steps");
    let stored: Vec<(uuid::Uuid, String, String)> =
        sqlx::query_as("SELECT id, agent, status FROM steps WHERE task_id = $1 ORDER BY position")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(steps.len(), stored.len(), "{summary}");
    assert!(!stored.is_empty());
    let plan_steps: Vec<String> = stored.iter().map(|(sid, ..)| sid.to_string()).collect();
    assert_eq!(summary["plan"]["steps"], serde_json::json!(plan_steps), "{summary}");
    for (step, (sid, agent, status)) in steps.iter().zip(&stored) {
        assert_eq!(step["id"], sid.to_string(), "{summary}");
        assert_eq!(step["agent"], agent.as_str(), "{summary}");
        assert_eq!((step["status"].as_str(), status.as_str()), (Some("completed"), "completed"));
    }

    let (calls, tokens_in, tokens_out, cost_usd): (i64, i64, i64, f64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(prompt_tokens), 0)::bigint, coalesce(sum(completion_tokens), 0)::bigint,
                coalesce(sum(cost_usd), 0)
         FROM llm_calls WHERE task_id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let cost = &summary["cost"];
    assert!(tokens_in > 0, "the offline model counts tokens");
    assert_eq!(cost["calls"], calls, "{summary}");
    assert_eq!(cost["tokens_in"], tokens_in, "{summary}");
    assert_eq!(cost["tokens_out"], tokens_out, "{summary}");
    assert!((cost["cost_usd"].as_f64().expect("a cost") - cost_usd).abs() < 1e-9, "{summary}");
    assert_eq!(cost["steps"], stored.len(), "one cost line per step: {summary}");

    assert_eq!(summary["listed"], 1, "{summary}");

    // The follow-up the client made is stored in the task's thread, as the client read it.
    let follow_up = &summary["follow_up"];
    let follow_up_id: uuid::Uuid = follow_up["id"].as_str().and_then(|s| s.parse().ok()).expect("a follow-up id");
    let (user, status, parent, thread, result): (
        String,
        String,
        Option<uuid::Uuid>,
        Option<uuid::Uuid>,
        Option<String>,
    ) = sqlx::query_as("SELECT user_id, status, parent_task_id, thread_id, result FROM tasks WHERE id = $1")
        .bind(follow_up_id)
        .fetch_one(&app.db)
        .await
        .expect("the follow-up is stored");
    assert_eq!((user.as_str(), status.as_str()), ("py-client", "completed"), "{summary}");
    assert_eq!((parent, thread), (Some(id), Some(id)), "{summary}");
    assert_eq!(follow_up["parent_task_id"], id.to_string(), "{summary}");
    assert_eq!(follow_up["thread_id"], id.to_string(), "{summary}");
    assert_eq!(follow_up["result"].as_str(), result.as_deref(), "{summary}");
    assert_eq!(follow_up["thread"], serde_json::json!([follow_up_id.to_string(), id.to_string()]), "{summary}");
    assert_eq!(summary["not_found"]["status"], 404, "{summary}");
    assert_eq!(summary["unauthorized"], 401, "{summary}");

    app.stop().await;
}
