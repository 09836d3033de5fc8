//! Checking a finished task against a case's expectations.
//!
//! [`Observed`] is what the harness saw of one run (read over the API); [`check`] turns each
//! stated expectation into a [`Check`], passed or not, with a message a person can act on.
//! Nothing here talks to the network, so every rule is unit-tested.

use serde::{Deserialize, Serialize};

use crate::suite::Expectations;

/// Which expectation a check is about; the names are the suite's field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Status,
    MinSteps,
    MaxSteps,
    Agents,
    Tools,
    CachedTools,
    ResultContains,
    ResultMatches,
    MaxCostUsd,
    MaxLatencyMs,
    MaxTokens,
    Replans,
    Judge,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::MinSteps => "min_steps",
            Self::MaxSteps => "max_steps",
            Self::Agents => "agents",
            Self::Tools => "tools",
            Self::CachedTools => "cached_tools",
            Self::ResultContains => "result_contains",
            Self::ResultMatches => "result_matches",
            Self::MaxCostUsd => "max_cost_usd",
            Self::MaxLatencyMs => "max_latency_ms",
            Self::MaxTokens => "max_tokens",
            Self::Replans => "replans",
            Self::Judge => "judge",
        }
    }
}

/// One expectation, checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub kind: CheckKind,
    pub passed: bool,
    /// What was expected and what was seen.
    pub message: String,
}

impl Check {
    pub fn new(kind: CheckKind, passed: bool, message: impl Into<String>) -> Self {
        Self { kind, passed, message: message.into() }
    }
}

/// One tool call as the task recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolUse {
    pub tool: String,
    /// `ok`, `error` or `rejected`.
    pub status: String,
}

/// What the harness saw of a run whose task ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub status: String,
    pub result: Option<String>,
    pub error: Option<String>,
    /// Steps in the task's plan.
    pub steps: usize,
    /// Agents of the steps that ran (were attempted), without repeats, in plan order.
    pub agents: Vec<String>,
    pub tools: Vec<ToolUse>,
    /// From submission to the final state.
    pub latency_ms: f64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    /// Revised plans the task got.
    pub replans: u32,
}

/// Every stated expectation of `expect`, checked against `seen` (the judge is checked apart).
pub fn check(expect: &Expectations, seen: &Observed) -> Vec<Check> {
    let mut checks = Vec::new();
    let wanted = expect.status.as_str();
    let status_message = match (&seen.error, seen.status == wanted) {
        (_, true) => format!("status is {wanted}"),
        (Some(error), false) => format!("expected status {wanted}, got {} ({error})", seen.status),
        (None, false) => format!("expected status {wanted}, got {}", seen.status),
    };
    checks.push(Check::new(CheckKind::Status, seen.status == wanted, status_message));

    if let Some(min) = expect.min_steps {
        let passed = seen.steps >= min as usize;
        checks.push(Check::new(
            CheckKind::MinSteps,
            passed,
            format!("{} step(s), at least {min} expected", seen.steps),
        ));
    }
    if let Some(max) = expect.max_steps {
        let passed = seen.steps <= max as usize;
        checks.push(Check::new(CheckKind::MaxSteps, passed, format!("{} step(s), at most {max} expected", seen.steps)));
    }

    if !expect.agents.is_empty() {
        let missing: Vec<&str> =
            expect.agents.iter().filter(|a| !seen.agents.contains(a)).map(String::as_str).collect();
        let ran = list_or_none(&seen.agents.iter().map(String::as_str).collect::<Vec<_>>());
        let message = if missing.is_empty() {
            format!("agents {} ran", expect.agents.join(", "))
        } else {
            format!("agent(s) {} ran no step; agents that ran: {ran}", missing.join(", "))
        };
        checks.push(Check::new(CheckKind::Agents, missing.is_empty(), message));
    }

    if !expect.tools.is_empty() {
        let succeeded = |tool: &str| seen.tools.iter().any(|t| t.tool == tool && t.status == "ok");
        let missing: Vec<&str> = expect.tools.iter().map(String::as_str).filter(|t| !succeeded(t)).collect();
        let calls: Vec<String> = seen.tools.iter().map(|t| format!("{} ({})", t.tool, t.status)).collect();
        let message = if missing.is_empty() {
            format!("tools {} were called", expect.tools.join(", "))
        } else {
            format!(
                "no successful call of {}; calls made: {}",
                missing.join(", "),
                list_or_none(&calls.iter().map(String::as_str).collect::<Vec<_>>())
            )
        };
        checks.push(Check::new(CheckKind::Tools, missing.is_empty(), message));
    }

    if !expect.cached_tools.is_empty() {
        let cached = |tool: &str| seen.tools.iter().any(|t| t.tool == tool && t.status == "cached");
        let missing: Vec<&str> = expect.cached_tools.iter().map(String::as_str).filter(|t| !cached(t)).collect();
        let message = if missing.is_empty() {
            format!("tools {} were answered from the warm start", expect.cached_tools.join(", "))
        } else {
            format!("no call of {} was answered from a warm start", missing.join(", "))
        };
        checks.push(Check::new(CheckKind::CachedTools, missing.is_empty(), message));
    }

    let result = seen.result.as_deref().unwrap_or_default();
    if !expect.result_contains.is_empty() {
        let lower = result.to_lowercase();
        let missing: Vec<String> = expect
            .result_contains
            .iter()
            .filter(|s| !lower.contains(&s.to_lowercase()))
            .map(|s| format!("{s:?}"))
            .collect();
        let message = match (&seen.result, missing.is_empty()) {
            (None, _) => "the task has no result".to_owned(),
            (Some(_), true) => "the result contains every expected text".to_owned(),
            (Some(_), false) => format!("the result lacks {}", missing.join(", ")),
        };
        checks.push(Check::new(CheckKind::ResultContains, seen.result.is_some() && missing.is_empty(), message));
    }
    if !expect.result_matches.is_empty() {
        let unmatched: Vec<String> =
            expect.result_matches.iter().filter(|r| !r.is_match(result)).map(|r| format!("/{}/", r.as_str())).collect();
        let message = match (&seen.result, unmatched.is_empty()) {
            (None, _) => "the task has no result".to_owned(),
            (Some(_), true) => "the result matches every pattern".to_owned(),
            (Some(_), false) => format!("the result does not match {}", unmatched.join(", ")),
        };
        checks.push(Check::new(CheckKind::ResultMatches, seen.result.is_some() && unmatched.is_empty(), message));
    }

    if let Some(max) = expect.max_cost_usd {
        let passed = seen.cost_usd <= max;
        checks.push(Check::new(
            CheckKind::MaxCostUsd,
            passed,
            format!("cost ${:.6}, at most ${max} allowed", seen.cost_usd),
        ));
    }
    if let Some(max) = expect.max_latency_ms {
        let passed = seen.latency_ms <= max as f64;
        let message = format!("latency {:.0} ms, at most {max} ms allowed", seen.latency_ms);
        checks.push(Check::new(CheckKind::MaxLatencyMs, passed, message));
    }
    if let Some(max) = expect.max_tokens {
        let tokens = seen.tokens_in.saturating_add(seen.tokens_out);
        let passed = tokens <= i64::try_from(max).unwrap_or(i64::MAX);
        checks.push(Check::new(CheckKind::MaxTokens, passed, format!("{tokens} tokens, at most {max} allowed")));
    }
    if let Some(wanted) = expect.replans {
        let message = format!("{} revised plan(s), {wanted} expected", seen.replans);
        checks.push(Check::new(CheckKind::Replans, seen.replans == wanted, message));
    }
    checks
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() { "none".to_owned() } else { items.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::parse;

    fn expectations(yaml: &str) -> Expectations {
        let text = format!("name: s\ncases:\n  - name: c\n    task: {{description: x}}\n    expect: {yaml}\n");
        parse(&text, "s.yaml").unwrap().cases.remove(0).expect
    }

    fn seen() -> Observed {
        Observed {
            status: "completed".into(),
            result: Some("Compute 17 * (3 + 4): done. Tool results: calculator: 119.".into()),
            error: None,
            steps: 2,
            agents: vec!["analyst".into(), "writer".into()],
            tools: vec![
                ToolUse { tool: "calculator".into(), status: "ok".into() },
                ToolUse { tool: "http_get".into(), status: "rejected".into() },
            ],
            latency_ms: 1200.0,
            tokens_in: 300,
            tokens_out: 50,
            cost_usd: 0.002,
            replans: 0,
        }
    }

    fn failures(checks: &[Check]) -> Vec<(CheckKind, &str)> {
        checks.iter().filter(|c| !c.passed).map(|c| (c.kind, c.message.as_str())).collect()
    }

    #[test]
    fn a_run_meeting_every_expectation_passes_every_check() {
        let expect = expectations(
            "{status: completed, min_steps: 2, max_steps: 2, agents: [writer], tools: [calculator], \
             result_contains: ['CALCULATOR: 119'], result_matches: ['^Compute .*119'], max_cost_usd: 0.002, \
             max_latency_ms: 1200, max_tokens: 350}",
        );
        let checks = check(&expect, &seen());
        assert_eq!(checks.len(), 10);
        assert_eq!(failures(&checks), []);
    }

    #[test]
    fn only_stated_expectations_are_checked() {
        let checks = check(&expectations("{}"), &seen());
        assert_eq!(checks, [Check::new(CheckKind::Status, true, "status is completed")]);
    }

    #[test]
    fn each_unmet_expectation_fails_with_what_was_seen() {
        let expect = expectations(
            "{status: completed, min_steps: 3, max_steps: 3, agents: [writer, reviewer], tools: [calculator, http_get], \
             result_contains: ['119', 'seventeen'], result_matches: ['^Done'], max_cost_usd: 0.001, \
             max_latency_ms: 1000, max_tokens: 349, replans: 1}",
        );
        let mut observed = seen();
        observed.status = "failed".into();
        observed.error = Some("step 2 timed out".into());
        let checks = check(&expect, &observed);
        assert_eq!(
            failures(&checks),
            [
                (CheckKind::Status, "expected status completed, got failed (step 2 timed out)"),
                (CheckKind::MinSteps, "2 step(s), at least 3 expected"),
                (CheckKind::Agents, "agent(s) reviewer ran no step; agents that ran: analyst, writer"),
                (CheckKind::Tools, "no successful call of http_get; calls made: calculator (ok), http_get (rejected)"),
                (CheckKind::ResultContains, "the result lacks \"seventeen\""),
                (CheckKind::ResultMatches, "the result does not match /^Done/"),
                (CheckKind::MaxCostUsd, "cost $0.002000, at most $0.001 allowed"),
                (CheckKind::MaxLatencyMs, "latency 1200 ms, at most 1000 ms allowed"),
                (CheckKind::MaxTokens, "350 tokens, at most 349 allowed"),
                (CheckKind::Replans, "0 revised plan(s), 1 expected"),
            ]
        );
        // max_steps 3 holds for 2 steps.
        assert!(checks.iter().any(|c| c.kind == CheckKind::MaxSteps && c.passed));
    }

    #[test]
    fn a_missing_result_fails_the_result_checks_and_other_statuses_can_be_expected() {
        let expect = expectations("{status: failed, max_steps: 1, result_contains: [x], result_matches: ['.*']}");
        let mut observed = seen();
        observed.status = "failed".into();
        observed.result = None;
        observed.tools.clear();
        let checks = check(&expect, &observed);
        assert_eq!(
            failures(&checks),
            [
                (CheckKind::MaxSteps, "2 step(s), at most 1 expected"),
                (CheckKind::ResultContains, "the task has no result"),
                (CheckKind::ResultMatches, "the task has no result"),
            ]
        );
        let tools = expectations("{tools: [calculator]}");
        assert_eq!(
            failures(&check(&tools, &observed)),
            [
                (CheckKind::Status, "expected status completed, got failed"),
                (CheckKind::Tools, "no successful call of calculator; calls made: none")
            ]
        );
    }
}
