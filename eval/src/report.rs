//! The report of a suite run: per-run results and totals, written as `report.json` (read back
//! by `eval compare`) and `report.md` (for people).
//!
//! Totals count runs: a case with `repeat: 3` contributes three runs. A run that errored
//! (the harness could not submit it, or it did not end in time) counts as failed in the pass
//! rate. Latency percentiles cover the runs whose task ended.

use std::{fmt::Write as _, path::Path};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{expect::Check, stats::Percentiles};

/// Names the report's shape; `eval compare` refuses other shapes.
pub const REPORT_FORMAT: &str = "orchestrator-eval-report/1";
/// The JSON report's file name inside `--out`.
pub const JSON_FILE: &str = "report.json";
/// The Markdown report's file name inside `--out`.
pub const MARKDOWN_FILE: &str = "report.md";

/// How one run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every check passed.
    Passed,
    /// The task ended and at least one check failed.
    Failed,
    /// The run could not be checked: the submission was refused, the task did not end in
    /// time, or the server could not be read.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Error => "error",
        }
    }
}

/// What became of a case's rubric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum JudgeOutcome {
    /// The judge scored the result; `passed` is `score >= min_score`.
    Scored { score: f64, min_score: f64, passed: bool, reason: String },
    /// No judge was configured: the rubric was not applied and the run's outcome rests on
    /// its other checks (unless `--require-judge` made this a failure).
    Skipped { reason: String },
    /// The judge was asked and gave no usable verdict; the judge check failed.
    Error { message: String },
}

/// One run of one case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub case: String,
    /// 1-based index among the case's repeats.
    pub run: u32,
    pub outcome: Outcome,
    pub task_id: Option<Uuid>,
    /// The task's last status seen.
    pub status: Option<String>,
    pub steps: usize,
    pub agents: Vec<String>,
    pub tools: Vec<String>,
    /// Submission to final state; absent when the task did not end.
    pub latency_ms: Option<f64>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub result: Option<String>,
    /// The task's error, or why the harness could not check the run.
    pub error: Option<String>,
    pub checks: Vec<Check>,
    pub judge: Option<JudgeOutcome>,
}

impl RunResult {
    pub fn failed_checks(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub cases: usize,
    pub runs: usize,
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    /// `passed / runs`, 0 when nothing ran.
    pub pass_rate: f64,
    /// Runs whose rubric was not applied because no judge was configured.
    pub judge_skipped: usize,
    pub latency_ms: Percentiles,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
}

impl Totals {
    pub fn of(cases: usize, results: &[RunResult]) -> Self {
        let count = |outcome: Outcome| results.iter().filter(|r| r.outcome == outcome).count();
        let passed = count(Outcome::Passed);
        let latencies: Vec<f64> = results.iter().filter_map(|r| r.latency_ms).collect();
        Self {
            cases,
            runs: results.len(),
            passed,
            failed: count(Outcome::Failed),
            errors: count(Outcome::Error),
            pass_rate: if results.is_empty() { 0.0 } else { passed as f64 / results.len() as f64 },
            judge_skipped: results.iter().filter(|r| matches!(r.judge, Some(JudgeOutcome::Skipped { .. }))).count(),
            latency_ms: Percentiles::of(&latencies),
            tokens_in: results.iter().map(|r| r.tokens_in).sum(),
            tokens_out: results.iter().map(|r| r.tokens_out).sum(),
            cost_usd: results.iter().map(|r| r.cost_usd).sum(),
        }
    }
}

/// The judge a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeInfo {
    pub base_url: String,
    pub model: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub format: String,
    pub suite: String,
    pub suite_file: String,
    pub url: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub concurrency: usize,
    /// `None` when no judge was configured.
    pub judge: Option<JudgeInfo>,
    pub totals: Totals,
    /// In suite order, repeats together.
    pub results: Vec<RunResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the report {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an eval report: {reason}")]
    Invalid { path: String, reason: String },
}

impl Report {
    pub fn all_passed(&self) -> bool {
        self.totals.runs > 0 && self.totals.passed == self.totals.runs
    }

    /// Writes `report.json` and `report.md` into `dir`, creating it when missing.
    pub fn write(&self, dir: &Path) -> Result<(), ReportError> {
        let failed = |path: &Path| {
            let path = path.display().to_string();
            move |source| ReportError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(failed(dir))?;
        let json = serde_json::to_string_pretty(self).map_err(|e| ReportError::Write {
            path: dir.join(JSON_FILE).display().to_string(),
            source: std::io::Error::other(e),
        })?;
        let path = dir.join(JSON_FILE);
        std::fs::write(&path, json + "\n").map_err(failed(&path))?;
        let path = dir.join(MARKDOWN_FILE);
        std::fs::write(&path, self.markdown()).map_err(failed(&path))
    }

    /// Reads a `report.json`.
    pub fn read(path: &Path) -> Result<Self, ReportError> {
        let display = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ReportError::Read { path: display.clone(), source })?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ReportError::Invalid { path: display.clone(), reason: format!("not JSON: {e}") })?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(REPORT_FORMAT) => {}
            Some(other) => {
                let reason = format!("format {other:?}, this version reads {REPORT_FORMAT:?}");
                return Err(ReportError::Invalid { path: display, reason });
            }
            None => return Err(ReportError::Invalid { path: display, reason: "no \"format\" field".into() }),
        }
        serde_json::from_value(value).map_err(|e| ReportError::Invalid { path: display, reason: e.to_string() })
    }

    /// The report for people: totals, a table of runs, then what failed and why.
    pub fn markdown(&self) -> String {
        let t = &self.totals;
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# Eval: {} — {}/{} runs passed ({:.1}%)\n",
            self.suite,
            t.passed,
            t.runs,
            t.pass_rate * 100.0
        );
        let duration = (self.finished_at - self.started_at).num_milliseconds() as f64 / 1000.0;
        let _ = writeln!(
            md,
            "Suite `{}` against `{}`, started {}, took {duration:.1} s, {} run(s) at a time.\n",
            self.suite_file, self.url, self.started_at, self.concurrency
        );
        match &self.judge {
            Some(judge) => {
                let _ = writeln!(md, "Judge: `{}` at `{}`.\n", judge.model, judge.base_url);
            }
            None if t.judge_skipped > 0 => {
                let _ = writeln!(
                    md,
                    "**Judge not configured: the rubric of {} run(s) was not applied** (set `--judge-model`).\n",
                    t.judge_skipped
                );
            }
            None => {}
        }
        let _ = writeln!(md, "| Measure | Value |\n|---|---|");
        let _ = writeln!(md, "| Cases / runs | {} / {} |", t.cases, t.runs);
        let _ = writeln!(md, "| Passed / failed / errors | {} / {} / {} |", t.passed, t.failed, t.errors);
        let _ = writeln!(md, "| Pass rate | {:.1}% |", t.pass_rate * 100.0);
        let _ = writeln!(
            md,
            "| Latency p50 / p95 / max | {:.0} / {:.0} / {:.0} ms |",
            t.latency_ms.p50, t.latency_ms.p95, t.latency_ms.max
        );
        let _ = writeln!(md, "| Tokens in / out | {} / {} |", t.tokens_in, t.tokens_out);
        let _ = writeln!(md, "| Cost | ${:.4} |", t.cost_usd);
        let _ = writeln!(md, "| Judge skipped | {} |", t.judge_skipped);

        let _ = writeln!(md, "\n## Runs\n");
        let _ = writeln!(
            md,
            "| Case | Run | Outcome | Status | Steps | Agents | Tools | Latency | Tokens | Cost | Judge |"
        );
        let _ = writeln!(md, "|---|---:|---|---|---:|---|---|---:|---:|---:|---|");
        for r in &self.results {
            let latency = r.latency_ms.map(|l| format!("{l:.0} ms")).unwrap_or_else(|| "–".into());
            let judge = match &r.judge {
                None => "–".to_owned(),
                Some(JudgeOutcome::Scored { score, min_score, .. }) => format!("{score:.2} (≥ {min_score:.2})"),
                Some(JudgeOutcome::Skipped { .. }) => "skipped".to_owned(),
                Some(JudgeOutcome::Error { .. }) => "error".to_owned(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {latency} | {} | ${:.4} | {judge} |",
                cell(&r.case),
                r.run,
                r.outcome.as_str(),
                r.status.as_deref().unwrap_or("–"),
                r.steps,
                cell(&r.agents.join(", ")),
                cell(&r.tools.join(", ")),
                r.tokens_in + r.tokens_out,
                r.cost_usd
            );
        }

        let failing: Vec<&RunResult> = self.results.iter().filter(|r| r.outcome != Outcome::Passed).collect();
        if !failing.is_empty() {
            let _ = writeln!(md, "\n## Failures\n");
            for r in failing {
                let task = r.task_id.map(|id| format!(", task `{id}`")).unwrap_or_default();
                let _ = writeln!(md, "### {} (run {}): {}{task}\n", r.case, r.run, r.outcome.as_str());
                if r.outcome == Outcome::Error
                    && let Some(error) = &r.error
                {
                    let _ = writeln!(md, "- error: {}", one_line(error));
                }
                for check in r.failed_checks() {
                    let _ = writeln!(md, "- `{}`: {}", check.kind.as_str(), one_line(&check.message));
                }
                if let Some(JudgeOutcome::Scored { reason, .. }) = &r.judge
                    && !reason.is_empty()
                {
                    let _ = writeln!(md, "- judge's reason: {}", one_line(reason));
                }
                if let Some(result) = &r.result {
                    let _ = writeln!(md, "\nResult:\n\n```text\n{}\n```", excerpt(result, 1000));
                }
                let _ = writeln!(md);
            }
        }
        md
    }
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    if text.is_empty() { "–".to_owned() } else { one_line(text).replace('|', "\\|") }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters of `text`, marked when cut.
pub fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Results and reports for the tests of this module and of `compare`.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::expect::CheckKind;

    pub(crate) fn result(case: &str, outcome: Outcome, latency_ms: Option<f64>, cost_usd: f64) -> RunResult {
        RunResult {
            case: case.into(),
            run: 1,
            outcome,
            task_id: Some(Uuid::nil()),
            status: Some(if outcome == Outcome::Passed { "completed" } else { "failed" }.into()),
            steps: 2,
            agents: vec!["analyst".into()],
            tools: vec![],
            latency_ms,
            tokens_in: 100,
            tokens_out: 10,
            cost_usd,
            result: Some("done | ok".into()),
            error: None,
            checks: vec![Check::new(CheckKind::Status, outcome == Outcome::Passed, "status check")],
            judge: None,
        }
    }

    pub(crate) fn report(results: Vec<RunResult>) -> Report {
        let cases = results.iter().map(|r| r.case.as_str()).collect::<std::collections::HashSet<_>>().len();
        Report {
            format: REPORT_FORMAT.into(),
            suite: "s".into(),
            suite_file: "s.yaml".into(),
            url: "http://x".into(),
            started_at: DateTime::UNIX_EPOCH,
            finished_at: DateTime::UNIX_EPOCH,
            concurrency: 2,
            judge: None,
            totals: Totals::of(cases, &results),
            results,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fixtures::*, *};
    use crate::expect::CheckKind;

    #[test]
    fn totals_count_runs_and_sum_usage() {
        let mut skipped = result("c", Outcome::Passed, Some(300.0), 0.25);
        skipped.judge = Some(JudgeOutcome::Skipped { reason: "no judge".into() });
        let results = vec![
            result("a", Outcome::Passed, Some(100.0), 0.5),
            result("b", Outcome::Failed, Some(200.0), 0.25),
            result("b", Outcome::Error, None, 0.0),
            skipped,
        ];
        let t = Totals::of(3, &results);
        assert_eq!((t.cases, t.runs, t.passed, t.failed, t.errors, t.judge_skipped), (3, 4, 2, 1, 1, 1));
        assert_eq!(t.pass_rate, 0.5);
        assert_eq!((t.latency_ms.count, t.latency_ms.p50, t.latency_ms.p95), (3, 200.0, 300.0));
        assert_eq!((t.tokens_in, t.tokens_out, t.cost_usd), (400, 40, 1.0));
        assert_eq!(Totals::of(0, &[]).pass_rate, 0.0);
    }

    #[test]
    fn markdown_shows_totals_runs_and_why_runs_failed() {
        let mut failed = result("calc | sum", Outcome::Failed, Some(200.0), 0.0);
        failed.checks.push(Check::new(CheckKind::Tools, false, "no successful call of calculator"));
        let mut errored = result("slow", Outcome::Error, None, 0.0);
        errored.error = Some("task did not finish within 5s".into());
        errored.checks.clear();
        let md = report(vec![result("ok", Outcome::Passed, Some(100.0), 0.0), failed, errored]).markdown();
        assert!(md.starts_with("# Eval: s — 1/3 runs passed (33.3%)"), "{md}");
        assert!(md.contains("| Passed / failed / errors | 1 / 1 / 1 |"), "{md}");
        assert!(md.contains("| calc \\| sum | 1 | failed | failed | 2 |"), "{md}");
        assert!(md.contains("### calc | sum (run 1): failed, task `00000000-0000-0000-0000-000000000000`"), "{md}");
        assert!(md.contains("- `tools`: no successful call of calculator"), "{md}");
        assert!(md.contains("### slow (run 1): error"), "{md}");
        assert!(md.contains("- error: task did not finish within 5s"), "{md}");
        assert!(!md.contains("### ok"), "passed runs are not listed as failures: {md}");
    }

    #[test]
    fn reports_round_trip_and_foreign_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("eval-report-{}", Uuid::new_v4().simple()));
        let original = report(vec![result("a", Outcome::Passed, Some(1.0), 0.0)]);
        original.write(&dir).unwrap();
        let read = Report::read(&dir.join(JSON_FILE)).unwrap();
        assert_eq!(read.totals, original.totals);
        assert_eq!(read.results[0].checks, original.results[0].checks);
        assert!(std::fs::read_to_string(dir.join(MARKDOWN_FILE)).unwrap().starts_with("# Eval: s"));

        let foreign = dir.join("bench.json");
        std::fs::write(&foreign, r#"{"tasks": 3}"#).unwrap();
        let error = Report::read(&foreign).unwrap_err().to_string();
        assert!(error.ends_with("is not an eval report: no \"format\" field"), "{error}");
        std::fs::write(&foreign, r#"{"format": "orchestrator-eval-report/9"}"#).unwrap();
        assert!(Report::read(&foreign).unwrap_err().to_string().contains("this version reads"));
        std::fs::write(&foreign, "[").unwrap();
        assert!(Report::read(&foreign).unwrap_err().to_string().contains("not JSON"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
