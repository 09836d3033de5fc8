//! The `orchestrator` client commands, run as the real binary against a real server: what
//! they print and the exit codes they promise (0 completed, 1 failed, 2 cancelled, 3 usage,
//! connection or server error).

use std::{process::Output, time::Duration};

use tokio::process::Command;
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, test_settings};

const SEED: &str = "Analyze the requirements and build a plan. Then implement core APIs.";
const DEADLINE: Duration = Duration::from_secs(30);

/// The binary with `args`, pointed at `url`, without the caller's environment leaking in.
fn command(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    command
        .args(args)
        .args(["--url", url])
        .env_remove("ORCHESTRATOR_URL")
        .env_remove("ORCHESTRATOR_API_KEY")
        .kill_on_drop(true);
    command
}

/// Runs the binary to the end and returns exit code, stdout and stderr.
async fn run(url: &str, args: &[&str]) -> (i32, String, String) {
    let output: Output = tokio::time::timeout(DEADLINE, command(url, args).output())
        .await
        .expect("the command finishes before the deadline")
        .expect("the binary runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8 output");
    (output.status.code().expect("an exit code"), text(output.stdout), text(output.stderr))
}

/// The id in `task <id> submitted: …`, the first line of `submit --wait`.
fn submitted_id(stdout: &str) -> Uuid {
    let first = stdout.lines().next().unwrap_or_default();
    first.split_whitespace().nth(1).and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("an id in {stdout}"))
}

#[tokio::test]
async fn submit_wait_follows_the_task_and_exits_0_with_its_result() {
    let app = TestApp::spawn(1).await;
    let (code, out, err) = run(&app.url(""), &["submit", SEED, "--wait", "--user", "cli-user"]).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let task = app.client.task(submitted_id(&out)).await.unwrap();
    assert_eq!(task.status, "completed");
    assert_eq!(task.user_id, "cli-user");
    let result = task.result.expect("a result");
    assert!(out.contains(result.trim_end()), "the result in:\n{out}");
    for line in [
        "planned 2 step(s)",
        "[1/2] step started: ",
        " (analyst)",
        "[2/2] step completed: ",
        " (engineer)",
        "task completed",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    assert!(out.contains("tokens in") && out.contains('$'), "tokens and cost in:\n{out}");
    app.stop().await;
}

#[tokio::test]
async fn submit_wait_exits_1_when_the_task_fails() {
    // The model is slower than a step may take, and there is a single attempt.
    let mut settings = test_settings();
    settings.offline_llm_delay_ms = 1500;
    settings.step_timeout_secs = 1;
    let app = TestApp::spawn_with(settings, 1).await;
    let (code, out, err) = run(&app.url(""), &["submit", "Write a summary.", "--wait", "--max-attempts", "1"]).await;
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("step failed: ") && out.contains("task failed: "), "{out}");
    assert_eq!(app.client.task(submitted_id(&out)).await.unwrap().status, "failed");
    app.stop().await;
}

#[tokio::test]
async fn submit_wait_exits_2_when_the_task_is_cancelled() {
    // No worker: the task waits until the test cancels it.
    let app = TestApp::spawn(0).await;
    let child = command(&app.url(""), &["submit", SEED, "--wait", "--user", "cancel-me"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let id = eventually(DEADLINE, "the task to be submitted", || async {
        let query = eval::client::ListQuery { user_id: Some("cancel-me".into()), ..Default::default() };
        app.client.list(&query).await.ok()?.items.first().map(|t| t.id)
    })
    .await;
    app.client.cancel(id).await.expect("the pending task cancels");
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output()).await.expect("it ends").expect("output");
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "stdout:\n{out}");
    assert!(out.contains("task cancelled"), "{out}");
    app.stop().await;
}

#[tokio::test]
async fn submit_wait_without_its_event_stream_waits_for_the_end_instead_of_polling() {
    // One event stream per user, held by the test, so the command's is refused (429) and it
    // follows the task with reads that wait (`Prefer: wait`) instead.
    let mut settings = test_settings();
    settings.budgets.sse_max_streams_per_user = 1;
    // Each model call takes half a second, so polling would read the task three times or more.
    settings.offline_llm_delay_ms = 500;
    // No worker yet: the held stream's task stays pending.
    let app = TestApp::spawn_with(settings, 0).await;
    let held_task = app.client.submit(&serde_json::json!({"user_id": "one-stream", "description": SEED})).await;
    let held = app.http.get(app.url(&format!("/tasks/{}/events", held_task.unwrap().id))).send().await.unwrap();
    assert_eq!(held.status(), 200);

    let child = command(&app.url(""), &["submit", SEED, "--wait", "--user", "one-stream"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    eventually(DEADLINE, "the command's task to be submitted", || async {
        let query = eval::client::ListQuery { user_id: Some("one-stream".into()), ..Default::default() };
        app.client.list(&query).await.ok().filter(|page| page.items.len() == 2)
    })
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(app.app.worker("cli-test-worker").run(stop.clone()));
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output()).await.expect("it ends").expect("output");
    let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("waiting for the task to end"), "{err}");
    assert!(out.contains("task completed") && out.contains("result:"), "{out}");
    // Only the command read single tasks: one read that waited, perhaps a second if the first
    // was still waiting for its planning to start. Polling every 500 ms would be 3 or more.
    let reads = app.app.metrics.http_requests.with_label_values(&["GET", "/tasks/{id}", "200"]).get();
    assert!((1..=2).contains(&reads), "{reads} reads of the task");
    stop.cancel();
    worker.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn submit_without_wait_prints_the_id_and_the_location() {
    let app = TestApp::spawn(0).await;
    let (code, out, _) = run(&app.url(""), &["submit", SEED, "--priority", "high"]).await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let id: Uuid = lines[0].parse().expect("the id alone on the first line");
    assert_eq!(lines[1], format!("location: {}/tasks/{id}", app.url("")));
    let task = app.client.task(id).await.unwrap();
    assert_eq!((task.status.as_str(), task.priority.as_str()), ("pending", "high"));
    app.stop().await;
}

#[tokio::test]
async fn tasks_list_and_show_print_tasks_and_their_steps() {
    let app = TestApp::spawn(1).await;
    let id = app.submit(SEED).await;
    let task = app.client.wait(id, DEADLINE).await.unwrap();

    let (code, out, err) = run(&app.url(""), &["tasks", "list", "--user", "test-user", "--status", "completed"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ID ") && out.contains(&id.to_string()), "{out}");

    let (code, out, err) = run(&app.url(""), &["tasks", "show", &id.to_string()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("status   completed"), "{out}");
    let steps = app.client.task(id).await.unwrap().steps;
    assert_eq!(steps.len(), 2);
    let table = out.split_once("\nsteps:\n").map(|(_, rest)| rest).unwrap_or_else(|| panic!("a step table in:\n{out}"));
    for step in &steps {
        let row =
            table.lines().find(|l| l.contains(&step.title)).unwrap_or_else(|| panic!("{} in:\n{out}", step.title));
        assert!(row.contains("completed") && row.contains(&step.agent) && row.contains("1/"), "{row}");
    }
    assert!(out.contains(task.result.unwrap().trim_end()), "the result in:\n{out}");
    app.stop().await;
}

#[tokio::test]
async fn cancelling_a_finished_task_exits_3_with_the_servers_reason() {
    let app = TestApp::spawn(1).await;
    let id = app.submit(SEED).await;
    app.wait(id).await;
    let (code, out, err) = run(&app.url(""), &["tasks", "cancel", &id.to_string()]).await;
    assert_eq!(code, 3, "{out}{err}");
    assert_eq!(err, format!("error: task {id} already ended: it is completed\n"));
    assert_eq!(out, "");
    app.stop().await;
}

#[tokio::test]
async fn submit_wait_exits_4_when_the_task_ends_partial_and_stops_at_its_last_event() {
    let app = TestApp::spawn(1).await;
    let goal = "Write a haiku about job queues. Separately, research retry policies [offline: fail].";
    let (code, out, err) = run(&app.url(""), &["submit", goal, "--wait"]).await;
    assert_eq!(code, 4, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("partial result:"), "{out}");
    // The stream's last event ends the wait: no reconnecting to a stream that has closed.
    assert!(!err.contains("live events are unavailable"), "{err}");
    assert_eq!(app.client.task(submitted_id(&out)).await.unwrap().status, "partial");
    app.stop().await;
}

#[tokio::test]
async fn tasks_follow_up_waits_for_the_follow_up_and_the_thread_lists_both() {
    let app = TestApp::spawn(1).await;
    let body = serde_json::json!({"user_id": "cli-thread", "description": "Write a haiku about queues."});
    let parent = app.client.submit(&body).await.unwrap().id;
    app.wait(parent).await;
    let (code, out, err) =
        run(&app.url(""), &["tasks", "follow-up", &parent.to_string(), "Now a shorter one.", "--wait"]).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let id = submitted_id(&out);
    let task = app.client.task(id).await.unwrap();
    assert_eq!((task.status.as_str(), task.user_id.as_str()), ("completed", "cli-thread"));
    assert_eq!((task.parent_task_id, task.thread_id), (Some(parent), Some(parent)));
    assert!(out.contains(task.result.unwrap().trim_end()), "the result in:\n{out}");

    let (code, out, err) = run(&app.url(""), &["tasks", "list", "--thread", &parent.to_string()]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[0].starts_with(&id.to_string()) && rows[1].starts_with(&parent.to_string()), "newest first:\n{out}");

    let (code, out, err) = run(&app.url(""), &["tasks", "show", &id.to_string()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("follows  {parent}")), "{out}");
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_and_a_bad_command_line_exit_3_in_one_line() {
    // Nothing listens on port 9 (discard) on a test machine.
    let (code, out, err) = run("http://127.0.0.1:9", &["tasks", "list"]).await;
    assert_eq!(code, 3, "{out}");
    assert!(err.starts_with("error: cannot reach the server") && err.lines().count() == 1, "{err}");

    let (code, _, err) = run("http://127.0.0.1:9", &["tasks", "show", "not-a-uuid"]).await;
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = run("http://127.0.0.1:9", &["submit", "x", "--max-attempts", "0"]).await;
    assert_eq!(code, 3, "{err}");
}

#[tokio::test]
async fn submit_wait_shows_a_call_waiting_for_approval_and_tasks_approve_decides_it() {
    let app = TestApp::spawn(1).await;
    let url = app.url("");
    let child = command(&url, &["submit", "Compute 17 * (3 + 4).", "--wait", "--user", "cli-approver"])
        .args(["--require-approval", "calculator"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let (id, call) = eventually(DEADLINE, "the calculator call to wait for approval", || async {
        let query = eval::client::ListQuery { user_id: Some("cli-approver".into()), ..Default::default() };
        let id = app.client.list(&query).await.ok()?.items.first().map(|t| t.id)?;
        let pending = app.client.approvals(id).await.ok()?.into_iter().find(|a| a.status == "pending")?;
        Some((id, pending.call_id))
    })
    .await;

    let (code, out, err) = run(&url, &["tasks", "approvals", &id.to_string()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{call}  pending   calculator")), "{out}");
    let (code, _, err) =
        run(&url, &["tasks", "approve", &id.to_string(), &call.to_string(), "--arguments", "[1]"]).await;
    assert_eq!(code, 3, "arguments must be an object: {err}");
    let (code, out, err) = run(&url, &["tasks", "approve", &id.to_string(), &call.to_string()]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("call {call} (calculator) is approved"));
    let (code, _, err) = run(&url, &["tasks", "approve", &id.to_string(), &call.to_string(), "--deny"]).await;
    assert_eq!(code, 3, "a second decision is refused");
    assert!(err.contains("already decided"), "{err}");

    let output = tokio::time::timeout(DEADLINE, child.wait_with_output()).await.expect("it ends").expect("output");
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "stdout:\n{out}");
    // The waiting call was shown with the commands that decide it, then its decision.
    assert!(out.contains("awaiting approval: calculator {\"expression\":\"17 * (3 + 4)\"}"), "{out}");
    assert!(out.contains(&format!("approve: orchestrator tasks approve {id} {call}")), "{out}");
    assert!(out.contains("calculator approved by user:anonymous"), "{out}");
    assert!(out.contains("calculator: 119"), "{out}");
    app.stop().await;
}
