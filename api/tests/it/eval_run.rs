//! `orchestrator eval run` and `eval compare`, run as the real binary against a real server:
//! the smoke suite passes against the offline model (this is how CI runs it), failed checks
//! and regressions exit non-zero and are named, and rubrics are scored by a judge (a fake
//! OpenAI-compatible server here).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::process::Command;

use crate::{
    fake_llm::{FakeOpenAi, answer},
    helpers::TestApp,
};

const DEADLINE: Duration = Duration::from_secs(180);

/// A fresh scratch directory for one test's suites and reports.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orchestrator-eval-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn smoke_suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval/suites/smoke.yaml")
}

/// Runs the binary with `args` to the end, without the caller's environment leaking in.
async fn orchestrator(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    command.args(args).kill_on_drop(true);
    for name in
        ["ORCHESTRATOR_URL", "ORCHESTRATOR_API_KEY", "EVAL_JUDGE_MODEL", "EVAL_JUDGE_BASE_URL", "EVAL_JUDGE_API_KEY"]
    {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("the command finishes before the deadline")
        .expect("the binary runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8 output");
    (output.status.code().expect("an exit code"), text(output.stdout), text(output.stderr))
}

/// `eval run SUITE --url APP --out OUT` plus `extra`.
async fn eval_run(app: &TestApp, suite: &Path, out: &Path, extra: &[&str]) -> (i32, String, String) {
    let (suite, out, url) = (suite.to_str().unwrap(), out.to_str().unwrap(), app.url(""));
    let mut args = vec!["eval", "run", suite, "--url", &url, "--out", out, "--timeout-secs", "90"];
    args.extend_from_slice(extra);
    orchestrator(&args, &[]).await
}

fn read_report(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("report.json")).expect("report.json is written");
    serde_json::from_str(&text).expect("report.json is JSON")
}

fn write_suite(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("the suite is written");
    path
}

/// The result of `case`'s first run in a report.
fn run_of<'a>(report: &'a Value, case: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["case"] == case)
        .unwrap_or_else(|| panic!("{case} in {report}"))
}

#[tokio::test]
async fn the_smoke_suite_passes_against_the_offline_model() {
    let app = TestApp::spawn(1).await;
    let dir = scratch();
    let out = dir.join("report");
    let (code, stdout, stderr) = eval_run(&app, &smoke_suite(), &out, &["--concurrency", "3"]).await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");

    let report = read_report(&out);
    let totals = &report["totals"];
    assert_eq!(report["suite"], "smoke");
    assert_eq!((totals["cases"].as_u64(), totals["runs"].as_u64()), (Some(11), Some(12)), "{totals}");
    assert_eq!(totals["passed"], 12, "{totals}");
    assert_eq!((totals["failed"].as_u64(), totals["errors"].as_u64()), (Some(0), Some(0)));
    assert_eq!(totals["pass_rate"], 1.0);
    assert!(totals["latency_ms"]["p95"].as_f64().unwrap() >= totals["latency_ms"]["p50"].as_f64().unwrap());
    assert!(totals["tokens_in"].as_i64().unwrap() > 0 && totals["tokens_out"].as_i64().unwrap() > 0);
    for result in report["results"].as_array().unwrap() {
        assert_eq!(result["outcome"], "passed", "{result}");
        assert!(result["checks"].as_array().unwrap().iter().all(|c| c["passed"] == true), "{result}");
        // Every run is a real task on this server.
        let id = result["task_id"].as_str().unwrap().parse().unwrap();
        let wanted = if result["case"] == "partial-result" { "partial" } else { "completed" };
        assert_eq!(app.client.task(id).await.unwrap().status, wanted);
    }
    // What the suite claims is what happened: tools and agents come from the server's records.
    assert_eq!(run_of(&report, "calculator-tool")["tools"], json!(["calculator"]));
    assert_eq!(
        run_of(&report, "five-agent-pipeline")["agents"],
        json!(["researcher", "analyst", "engineer", "writer", "reviewer"])
    );
    assert_eq!(run_of(&report, "hinted-agents")["agents"], json!(["writer", "reviewer"]));
    // No judge configured: the rubric is reported as skipped, not as passed.
    assert_eq!(totals["judge_skipped"], 1);
    assert_eq!(run_of(&report, "judged-explanation")["judge"]["status"], "skipped");
    assert_eq!(report["judge"], Value::Null);

    let markdown = std::fs::read_to_string(out.join("report.md")).expect("report.md is written");
    assert!(markdown.starts_with("# Eval: smoke — 12/12 runs passed (100.0%)"), "{markdown}");
    assert!(markdown.contains("Judge not configured"), "{markdown}");
    assert!(stdout.contains("| Pass rate | 100.0% |"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_expectation_exits_1_and_the_report_names_the_check() {
    let app = TestApp::spawn(1).await;
    let dir = scratch();
    let suite = write_suite(
        &dir,
        "failing.yaml",
        "name: failing\ncases:\n  - name: passes\n    task: {description: Write docs}\n  - name: impossible\n    \
         task: {description: Write docs}\n    expect: {tools: [calculator], result_contains: [no such words]}\n",
    );
    let out = dir.join("report");
    let (code, stdout, stderr) = eval_run(&app, &suite, &out, &[]).await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");

    let report = read_report(&out);
    assert_eq!((report["totals"]["passed"].as_u64(), report["totals"]["failed"].as_u64()), (Some(1), Some(1)));
    assert_eq!(report["totals"]["pass_rate"], 0.5);
    let failed = run_of(&report, "impossible");
    assert_eq!((failed["outcome"].as_str(), failed["status"].as_str()), (Some("failed"), Some("completed")));
    let failures: Vec<(&str, &str)> = failed["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| (c["kind"].as_str().unwrap(), c["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        failures,
        [
            ("tools", "no successful call of calculator; calls made: none"),
            ("result_contains", "the result lacks \"no such words\""),
        ]
    );
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.contains("### impossible (run 1): failed"), "{markdown}");
    assert!(markdown.contains("- `tools`: no successful call of calculator"), "{markdown}");
    assert!(stderr.contains("failed  impossible (run 1)"), "one progress line per run off a terminal:\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
    app.stop().await;
}

#[tokio::test]
async fn compare_exits_1_on_a_regression_and_0_without() {
    let app = TestApp::spawn(1).await;
    let dir = scratch();
    // The same case, first with expectations the offline model meets, then with one it cannot.
    let case = |expect: &str| {
        format!("name: cmp\ncases:\n  - name: sum\n    task: {{description: Compute 2 + 3.}}\n    expect: {expect}\n")
    };
    let good = write_suite(&dir, "good.yaml", &case("{tools: [calculator], result_contains: ['5']}"));
    let bad = write_suite(&dir, "bad.yaml", &case("{tools: [calculator], result_contains: ['six']}"));
    let (before, after) = (dir.join("before"), dir.join("after"));
    assert_eq!(eval_run(&app, &good, &before, &[]).await.0, 0);
    assert_eq!(eval_run(&app, &bad, &after, &[]).await.0, 1);
    let (before, after) = (before.join("report.json"), after.join("report.json"));
    let (before, after) = (before.to_str().unwrap(), after.to_str().unwrap());

    // Latency of one offline task is noise: only pass/fail decides here.
    let compare = |old: &str, new: &str| {
        let args = ["eval", "compare", old, new, "--latency-threshold", "1000"].map(str::to_owned);
        async move { orchestrator(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await }
    };
    let (code, stdout, stderr) = compare(before, after).await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("- case \"sum\": passed 1/1 → 0/1 runs"), "{stdout}");
    assert!(stdout.contains("- pass rate: 100.0% → 0.0%"), "{stdout}");
    assert!(stdout.contains("Verdict: REGRESSED."), "{stdout}");

    let (code, stdout, _) = compare(before, before).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("## Regressions beyond the threshold (0)"), "{stdout}");
    // The other way round, the same change is an improvement.
    let (code, stdout, _) = compare(after, before).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("- case \"sum\": passed 0/1 → 1/1 runs"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
    app.stop().await;
}

#[tokio::test]
async fn rubrics_are_scored_by_the_configured_judge() {
    // The judge gives a low score to rubrics that ask for French, a high one otherwise.
    let judge = FakeOpenAi::start(|request| {
        let prompt = request["messages"][1]["content"].as_str().unwrap_or_default();
        if prompt.contains("in French") {
            answer(r#"{"score": 0.2, "reason": "The answer is in English."}"#, 50, 10)
        } else {
            answer("```json\n{\"score\": 0.9, \"reason\": \"It addresses the request.\"}\n```", 50, 10)
        }
    })
    .await;
    let app = TestApp::spawn(1).await;
    let dir = scratch();
    let suite = write_suite(
        &dir,
        "judged.yaml",
        "name: judged\ncases:\n  - name: on-topic\n    task: {description: Write a haiku about queues.}\n    \
         expect: {judge: {rubric: Addresses the request., min_score: 0.5}}\n  - name: wrong-language\n    \
         task: {description: Write a haiku about queues.}\n    expect: {judge: {rubric: Is written in French.}}\n",
    );
    let out = dir.join("report");
    let url = judge.base_url();
    let (code, stdout, stderr) = eval_run(&app, &suite, &out, &["--judge-url", &url, "--judge-model", "judge-1"]).await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");

    let report = read_report(&out);
    assert_eq!(report["judge"], json!({"base_url": url, "model": "judge-1"}));
    assert_eq!(report["totals"]["judge_skipped"], 0);
    let on_topic = run_of(&report, "on-topic");
    assert_eq!(on_topic["outcome"], "passed", "{on_topic}");
    assert_eq!(
        on_topic["judge"],
        json!({"status": "scored", "score": 0.9, "min_score": 0.5, "passed": true, "reason": "It addresses the request."})
    );
    let wrong = run_of(&report, "wrong-language");
    assert_eq!(wrong["outcome"], "failed", "{wrong}");
    assert_eq!(wrong["judge"]["score"], 0.2);
    assert_eq!(wrong["judge"]["min_score"], 0.7, "the default minimum score");
    let judge_check = wrong["checks"].as_array().unwrap().iter().find(|c| c["kind"] == "judge").expect("a judge check");
    assert_eq!(judge_check["passed"], false);
    assert_eq!(judge_check["message"], "the judge scored 0.20, at least 0.70 needed: The answer is in English.");

    // The judge saw the task, the task's real result and the rubric, and was asked by model name.
    let requests = judge.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request["model"], "judge-1");
        let prompt = request["messages"][1]["content"].as_str().unwrap();
        assert!(prompt.starts_with("## Task\nWrite a haiku about queues.\n\n## Result\n"), "{prompt}");
        assert!(prompt.contains("produced offline"), "the task's result: {prompt}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    app.stop().await;
}

#[tokio::test]
async fn a_busy_judge_is_retried_and_an_unusable_verdict_fails_the_check() {
    // Haikus: the judge is busy once, then scores. Limericks: it never answers with a score.
    let busy_once = std::sync::atomic::AtomicBool::new(true);
    let judge = FakeOpenAi::start(move |request| {
        let prompt = request["messages"][1]["content"].as_str().unwrap_or_default();
        if prompt.contains("limerick") {
            answer("I liked it a lot!", 50, 10)
        } else if busy_once.swap(false, std::sync::atomic::Ordering::SeqCst) {
            (503, json!({"error": {"message": "overloaded"}}))
        } else {
            answer(r#"{"score": 1, "reason": "Fine."}"#, 50, 10)
        }
    })
    .await;
    let app = TestApp::spawn(1).await;
    let dir = scratch();
    let suite = write_suite(
        &dir,
        "judged.yaml",
        "name: judged\ncases:\n  - name: haiku\n    task: {description: Write a haiku about queues.}\n    \
         expect: {judge: {rubric: A haiku.}}\n  - name: limerick\n    \
         task: {description: Write a limerick about queues.}\n    expect: {judge: {rubric: A limerick.}}\n",
    );
    let out = dir.join("report");
    let url = judge.base_url();
    let (code, stdout, stderr) = eval_run(&app, &suite, &out, &["--judge-url", &url, "--judge-model", "judge-1"]).await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");

    let report = read_report(&out);
    let haiku = run_of(&report, "haiku");
    assert_eq!(haiku["outcome"], "passed", "{haiku}");
    assert_eq!(haiku["judge"]["score"], 1.0);
    let limerick = run_of(&report, "limerick");
    assert_eq!(limerick["outcome"], "failed", "{limerick}");
    assert_eq!(limerick["judge"]["status"], "error");
    let message = limerick["judge"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the judge could not score the result: unreadable judge answer: no JSON object"),
        "{message}"
    );
    // One haiku call refused, one retried; one limerick call, not retried.
    assert_eq!(judge.requests().len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
    app.stop().await;
}

#[tokio::test]
async fn a_rubric_without_a_judge_fails_when_the_judge_is_required() {
    let app = TestApp::spawn(1).await;
    let dir = scratch();
    let suite = write_suite(
        &dir,
        "judged.yaml",
        "name: judged\ncases:\n  - name: needs-judge\n    task: {description: Write docs}\n    expect: {judge: {rubric: Good docs.}}\n",
    );
    let out = dir.join("report");
    let (code, stdout, stderr) = eval_run(&app, &suite, &out, &["--require-judge"]).await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let run = run_of(&read_report(&out), "needs-judge").clone();
    assert_eq!(run["judge"]["status"], "skipped");
    let failed: Vec<&Value> = run["checks"].as_array().unwrap().iter().filter(|c| c["passed"] == false).collect();
    assert_eq!(failed.len(), 1, "{run}");
    assert_eq!(failed[0]["kind"], "judge");
    let _ = std::fs::remove_dir_all(&dir);
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_suite_exits_2_naming_the_case_and_field() {
    let dir = scratch();
    let suite = write_suite(
        &dir,
        "typo.yaml",
        "name: typo\ncases:\n  - name: misspelt\n    task: {description: x}\n    expect: {max_step: 2}\n",
    );
    // Nothing listens on port 1: the suite is refused before the server is needed.
    let args = ["eval", "run", suite.to_str().unwrap(), "--url", "http://127.0.0.1:1", "--out"];
    let (code, stdout, stderr) = orchestrator(&[&args[..], &[dir.join("out").to_str().unwrap()]].concat(), &[]).await;
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("case \"misspelt\" (cases[0]), expect: unknown field `max_step`"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unreachable_server_exits_3() {
    let dir = scratch();
    let out = dir.join("out");
    let (code, stdout, stderr) = orchestrator(
        &["eval", "run", smoke_suite().to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[("ORCHESTRATOR_URL", "http://127.0.0.1:1")],
    )
    .await;
    assert_eq!(code, 3, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.starts_with("error: cannot reach the server at http://127.0.0.1:1"), "{stderr}");
    assert!(!out.join("report.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_expected_agent_the_server_lacks_exits_2() {
    let app = TestApp::spawn(0).await;
    let dir = scratch();
    let suite = write_suite(
        &dir,
        "agents.yaml",
        "name: agents\ncases:\n  - name: translator\n    task: {description: x}\n    expect: {agents: [translator]}\n",
    );
    let (code, stdout, stderr) = eval_run(&app, &suite, &dir.join("out"), &[]).await;
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("case \"translator\", expect.agents: this server has no agent \"translator\""), "{stderr}");
    // Refused before anything was submitted.
    assert_eq!(app.count("SELECT count(*) FROM tasks").await, 0);
    let _ = std::fs::remove_dir_all(&dir);
    app.stop().await;
}

#[tokio::test]
async fn with_a_users_key_the_smoke_suite_runs_as_that_user() {
    let mut settings = crate::helpers::test_settings();
    settings.auth.mode = Some(orchestrator::auth::AuthMode::Required);
    let app = TestApp::spawn_with(settings, 1).await;
    let key = orchestrator::auth::KeyStore::new(app.db.clone()).create("qa", "", false).await.unwrap().secret;
    // The smoke suite has a high-priority case, which a user's key may ask for only when an
    // operator allowed it.
    sqlx::query("INSERT INTO user_limits (user_id, max_priority) VALUES ('qa', 'high')")
        .execute(&app.db)
        .await
        .unwrap();
    let dir = scratch();
    let out = dir.join("report");
    let (suite, out_arg, url) = (smoke_suite(), out.to_str().unwrap().to_owned(), app.url(""));
    let args = ["eval", "run", suite.to_str().unwrap(), "--url", &url, "--out", &out_arg, "--concurrency", "3"];
    let (code, stdout, stderr) = orchestrator(&args, &[("ORCHESTRATOR_API_KEY", &key)]).await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(read_report(&out)["totals"]["passed"], 12);
    assert_eq!(
        app.count("SELECT count(*) FROM tasks WHERE user_id <> 'qa'").await,
        0,
        "every case ran as the key's user"
    );
    let _ = std::fs::remove_dir_all(dir);
    app.stop().await;
}
