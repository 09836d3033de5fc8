//! Running a suite against a live server: every run of every case, at most `concurrency` at
//! a time, each submitted, waited for, read back (steps, tool calls) and checked.
//!
//! A run's failure never stops the others: what went wrong is recorded in its result. A
//! task that does not end within its timeout is cancelled (best effort) so it stops spending.
//! Progress goes to stderr: a bar on a terminal, one line per finished run otherwise.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    client::{ApiClient, ClientError, TaskView},
    expect::{self, Check, CheckKind, Observed, ToolUse},
    judge::Judge,
    report::{JudgeOutcome, Outcome, RunResult},
    suite::{Case, Suite},
};

/// How a suite is run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Runs in flight at once (at least 1).
    pub concurrency: usize,
    /// Wait for cases that set no `timeout_secs` of their own.
    pub default_timeout: Duration,
    /// A rubric with no judge configured fails its run instead of being skipped.
    pub require_judge: bool,
}

/// Why a suite could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot reach the server at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the server at {url} refused {what}: {detail}")]
    Refused { url: String, what: &'static str, detail: String },
    /// The suite expects an agent or tool this deployment does not have.
    #[error("case {case:?}, {field}: this server has no {kind} {name:?} (it has: {known})")]
    Unknown { case: String, field: &'static str, kind: &'static str, name: String, known: String },
}

/// Checks that the server answers and has every agent and tool the suite expects, so a typo
/// or a missing tool is reported before any task is submitted.
pub async fn preflight(client: &ApiClient, suite: &Suite) -> Result<(), RunError> {
    let url = client.base_url().to_owned();
    let failed = |what: &'static str| {
        let url = url.clone();
        move |e: ClientError| {
            if e.is_unreachable() {
                RunError::Unreachable { url, detail: e.to_string() }
            } else {
                RunError::Refused { url, what, detail: e.detail() }
            }
        }
    };
    let agents = client.agent_names().await.map_err(failed("to list its agents"))?;
    let wants_tools = suite
        .cases
        .iter()
        .any(|c| !c.expect.tools.is_empty() || !c.task.require_approval.is_empty() || !c.approve.is_empty());
    let tools = if wants_tools { client.tool_names().await.map_err(failed("to list its tools"))? } else { Vec::new() };
    for case in &suite.cases {
        for (field, kind, wanted, known) in [
            ("expect.agents", "agent", &case.expect.agents, &agents),
            ("task.agent_hints", "agent", &case.task.agent_hints, &agents),
            ("expect.tools", "tool", &case.expect.tools, &tools),
            ("task.require_approval", "tool", &case.task.require_approval, &tools),
            ("approve", "tool", &case.approve, &tools),
        ] {
            if let Some(name) = wanted.iter().find(|n| !known.contains(n)) {
                return Err(RunError::Unknown {
                    case: case.name.clone(),
                    field,
                    kind,
                    name: name.clone(),
                    known: known.join(", "),
                });
            }
        }
    }
    Ok(())
}

/// Runs every case `repeat` times and returns the results in suite order.
pub async fn run_suite(
    client: &ApiClient,
    suite: &Suite,
    judge: Option<&Judge>,
    options: &RunOptions,
) -> Vec<RunResult> {
    let total = suite.runs();
    let mut progress = Progress::new(total);
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut runs = JoinSet::new();
    let mut order = 0;
    for case in &suite.cases {
        if case.warm_up
            && let Err(problem) = warm_up(client, case, case.timeout.unwrap_or(options.default_timeout)).await
        {
            // Its runs then start cold, and their warm-start checks say so.
            progress.line(&format!("warning: the warm-up of case {} failed: {problem}", case.name));
        }
        for run in 1..=case.repeat {
            let (client, case, judge, permits) = (client.clone(), case.clone(), judge.cloned(), permits.clone());
            let timeout = case.timeout.unwrap_or(options.default_timeout);
            let require_judge = options.require_judge;
            let index = order;
            order += 1;
            runs.spawn(async move {
                // The semaphore is never closed, so acquiring only waits.
                let _permit = permits.acquire_owned().await;
                let context =
                    RunContext { client: &client, case: &case, run, timeout, judge: judge.as_ref(), require_judge };
                (index, run_one(context).await)
            });
        }
    }
    let mut results: Vec<(usize, RunResult)> = Vec::with_capacity(total);
    while let Some(joined) = runs.join_next().await {
        match joined {
            Ok((index, result)) => {
                progress.finished(&result);
                results.push((index, result));
            }
            // A run panicking is a bug in the harness; say so instead of losing the run silently.
            Err(e) => progress.line(&format!("error: a run of the harness stopped unexpectedly: {e}")),
        }
    }
    progress.done();
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Runs the case's task once, without a warm start and unchecked, and waits for it to end:
/// what its steps leave is what the case's runs start from.
async fn warm_up(client: &ApiClient, case: &Case, timeout: Duration) -> Result<(), String> {
    let mut body = case.task.body(client.has_api_key());
    if let Some(fields) = body.as_object_mut() {
        fields.remove("warm_start");
    }
    let task = client.submit(&body).await.map_err(|e| format!("the submission was refused: {}", e.detail()))?;
    let ended = client.wait(task.id, timeout).await.map_err(|e| format!("cannot follow the task: {}", e.detail()))?;
    if ended.status != "completed" {
        return Err(format!("the task ended {}", ended.status));
    }
    Ok(())
}

/// Follows a task whose tool calls may wait for a person, deciding as the case's reviewer:
/// waiting calls of the `approve` tools are approved, any other is denied. Returns the task
/// once it has ended.
async fn wait_deciding(
    client: &ApiClient,
    id: uuid::Uuid,
    timeout: Duration,
    approve: &[String],
) -> Result<TaskView, ClientError> {
    let started = Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        // `Prefer: wait` answers at the end or as soon as a person must act.
        let read = client.task_waiting(id, left.min(Duration::from_secs(60))).await?;
        let task = read.task;
        if task.is_terminal() {
            return Ok(task);
        }
        if started.elapsed() >= timeout {
            return Err(ClientError::Timeout { task: id, waited: started.elapsed(), status: task.status });
        }
        if task.status == "requires_action" {
            for call in client.approvals(id).await?.into_iter().filter(|a| a.status == "pending") {
                let decision = if approve.contains(&call.tool) {
                    serde_json::json!({"decision": "approve", "reason": "in the case's approve list"})
                } else {
                    serde_json::json!({"decision": "deny", "reason": "not in the case's approve list"})
                };
                match client.decide(id, call.call_id, &decision).await {
                    // Decided meanwhile (it expired, say): the next read says what became of it.
                    Ok(_) | Err(ClientError::Status { status: 409, .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        } else if !read.preference_applied {
            // The server did not hold the read: do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What one run needs.
struct RunContext<'a> {
    client: &'a ApiClient,
    case: &'a Case,
    run: u32,
    timeout: Duration,
    judge: Option<&'a Judge>,
    require_judge: bool,
}

async fn run_one(cx: RunContext<'_>) -> RunResult {
    let mut result = RunResult {
        case: cx.case.name.clone(),
        run: cx.run,
        outcome: Outcome::Error,
        task_id: None,
        status: None,
        steps: 0,
        agents: Vec::new(),
        tools: Vec::new(),
        latency_ms: None,
        tokens_in: 0,
        tokens_out: 0,
        cost_usd: 0.0,
        result: None,
        error: None,
        checks: Vec::new(),
        judge: None,
    };
    let errored = |mut result: RunResult, error: String| {
        result.error = Some(error);
        result
    };
    let submitted_at = Instant::now();
    let task = match cx.client.submit(&cx.case.task.body(cx.client.has_api_key())).await {
        Ok(task) => task,
        Err(e) => return errored(result, format!("the submission was refused: {}", e.detail())),
    };
    result.task_id = Some(task.id);
    result.status = Some(task.status.clone());
    let ended = if cx.case.task.require_approval.is_empty() {
        cx.client.wait(task.id, cx.timeout).await
    } else {
        wait_deciding(cx.client, task.id, cx.timeout, &cx.case.approve).await
    };
    let task = match ended {
        Ok(task) => task,
        Err(ClientError::Timeout { status, .. }) => {
            // Stop it spending; it may have ended just now, which the server answers with 409.
            let _ = cx.client.cancel(task.id).await;
            result.status = Some(status.clone());
            let error =
                format!("the task did not end within {} s (last status {status}); cancelled it", cx.timeout.as_secs());
            return errored(result, error);
        }
        Err(e) => return errored(result, format!("cannot read the task: {}", e.detail())),
    };
    let waited = submitted_at.elapsed();
    let calls = match cx.client.tool_calls(task.id).await {
        Ok(calls) => calls,
        Err(e) => return errored(result, format!("cannot read the task's tool calls: {}", e.detail())),
    };
    let observed = Observed {
        status: task.status.clone(),
        result: task.result.clone(),
        error: task.error.clone(),
        steps: task.steps.len(),
        agents: agents_that_ran(&task),
        tools: calls.iter().map(|c| ToolUse { tool: c.tool.clone(), status: c.status.clone() }).collect(),
        latency_ms: server_latency_ms(&task).unwrap_or(waited.as_secs_f64() * 1000.0),
        tokens_in: task.tokens_in,
        tokens_out: task.tokens_out,
        cost_usd: task.cost_usd,
    };
    let mut checks = expect::check(&cx.case.expect, &observed);
    if let Some(rubric) = &cx.case.expect.judge {
        let (outcome, check) = judge_run(&cx, &task, &rubric.text, rubric.min_score).await;
        result.judge = Some(outcome);
        checks.extend(check);
    }
    let passed = checks.iter().all(|c| c.passed);
    RunResult {
        outcome: if passed { Outcome::Passed } else { Outcome::Failed },
        status: Some(observed.status),
        steps: observed.steps,
        agents: observed.agents,
        tools: unique(observed.tools.iter().map(|t| t.tool.clone())),
        latency_ms: Some(observed.latency_ms),
        tokens_in: observed.tokens_in,
        tokens_out: observed.tokens_out,
        cost_usd: observed.cost_usd,
        result: observed.result,
        error: observed.error,
        checks,
        ..result
    }
}

/// Applies the case's rubric: the judge's outcome, and the check it adds (none when the
/// judge was skipped and not required).
async fn judge_run(
    cx: &RunContext<'_>,
    task: &TaskView,
    rubric: &str,
    min_score: f64,
) -> (JudgeOutcome, Option<Check>) {
    let Some(judge) = cx.judge else {
        let reason = "no judge configured (--judge-model or EVAL_JUDGE_MODEL)".to_owned();
        let check = cx
            .require_judge
            .then(|| Check::new(CheckKind::Judge, false, format!("--require-judge is set but there is {reason}")));
        return (JudgeOutcome::Skipped { reason }, check);
    };
    let Some(result) = task.result.as_deref() else {
        let message = "the task has no result to judge".to_owned();
        return (JudgeOutcome::Error { message: message.clone() }, Some(Check::new(CheckKind::Judge, false, message)));
    };
    match judge.score(&cx.case.task.description, result, rubric).await {
        Ok(verdict) => {
            let passed = verdict.score >= min_score;
            let message =
                format!("the judge scored {:.2}, at least {min_score:.2} needed: {}", verdict.score, verdict.reason);
            let outcome = JudgeOutcome::Scored { score: verdict.score, min_score, passed, reason: verdict.reason };
            (outcome, Some(Check::new(CheckKind::Judge, passed, message)))
        }
        Err(e) => {
            let message = format!("the judge could not score the result: {e}");
            (JudgeOutcome::Error { message: message.clone() }, Some(Check::new(CheckKind::Judge, false, message)))
        }
    }
}

/// Agents of the steps that were attempted, in plan order, each once. Steps skipped or
/// cancelled before they started did not use their agent.
fn agents_that_ran(task: &TaskView) -> Vec<String> {
    let mut steps: Vec<_> = task.steps.iter().collect();
    steps.sort_by_key(|s| s.position);
    unique(
        steps
            .into_iter()
            .filter(|s| s.attempt > 0 || matches!(s.status.as_str(), "completed" | "failed"))
            .map(|s| s.agent.clone()),
    )
}

fn unique(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

/// `completed_at - created_at` on the server's clock: submission to final state, free of
/// the client's polling interval.
fn server_latency_ms(task: &TaskView) -> Option<f64> {
    let parse = |t: &str| DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&Utc));
    let created = parse(&task.created_at)?;
    let ended = parse(task.completed_at.as_deref()?)?;
    Some((ended - created).num_microseconds()? as f64 / 1000.0)
}

/// Progress on stderr: a bar on a terminal, else one line per finished run (CI logs).
struct Progress {
    bar: ProgressBar,
    not_passed: usize,
}

impl Progress {
    fn new(total: usize) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} runs {msg} [{elapsed}]") {
            bar.set_style(style);
        }
        Self { bar, not_passed: 0 }
    }

    fn finished(&mut self, result: &RunResult) {
        let latency = result.latency_ms.map(|l| format!(" in {:.1} s", l / 1000.0)).unwrap_or_default();
        let mut line = format!("{:<6}  {} (run {}){latency}", result.outcome.as_str(), result.case, result.run);
        if let Some(first) = result.failed_checks().next() {
            line.push_str(&format!(": {}", first.message));
        } else if let (Outcome::Error, Some(error)) = (result.outcome, &result.error) {
            line.push_str(&format!(": {error}"));
        }
        if result.outcome != Outcome::Passed {
            self.not_passed += 1;
            self.bar.set_message(format!("({} not passed)", self.not_passed));
        }
        self.line(&line);
        self.bar.inc(1);
    }

    fn line(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn done(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(steps: serde_json::Value, created: &str, completed: Option<&str>) -> TaskView {
        serde_json::from_value(json!({
            "id": uuid::Uuid::nil(), "status": "completed", "created_at": created, "completed_at": completed,
            "steps": steps,
        }))
        .unwrap()
    }

    fn step(position: i32, agent: &str, status: &str, attempt: i32) -> serde_json::Value {
        json!({"id": uuid::Uuid::new_v4(), "position": position, "title": "t", "agent": agent, "status": status, "attempt": attempt})
    }

    #[test]
    fn agents_are_those_of_attempted_steps_in_plan_order() {
        let t = task(
            json!([
                step(2, "writer", "completed", 1),
                step(0, "researcher", "completed", 1),
                step(1, "researcher", "completed", 1),
                step(3, "reviewer", "skipped", 0),
                step(4, "engineer", "cancelled", 1),
            ]),
            "2026-01-01T00:00:00Z",
            None,
        );
        assert_eq!(agents_that_ran(&t), ["researcher", "writer", "engineer"]);
    }

    #[test]
    fn latency_is_read_from_the_server_clock() {
        let t = task(json!([]), "2026-01-01T00:00:00Z", Some("2026-01-01T00:00:01.250Z"));
        assert_eq!(server_latency_ms(&t), Some(1250.0));
        assert_eq!(server_latency_ms(&task(json!([]), "2026-01-01T00:00:00Z", None)), None);
        assert_eq!(server_latency_ms(&task(json!([]), "garbage", Some("2026-01-01T00:00:00Z"))), None);
    }
}
