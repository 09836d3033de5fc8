//! The `orchestrator eval` command line: `run` a suite, `compare` two reports, `bench`.
//!
//! Exit codes of `run` and `compare` ([`Exit`]): 0 every run passed / no regression beyond
//! the threshold, 1 a run failed / a regression, 2 the suite or a report is invalid, 3 the
//! server is unreachable or refused, or the report could not be written. A command line the
//! binary cannot parse exits 3, like the other client commands.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use chrono::Utc;
use clap::{Args, Subcommand};

use crate::{
    bench::{self, BenchArgs},
    compare::{Thresholds, compare},
    judge::{Judge, JudgeConfig},
    report::{JudgeInfo, REPORT_FORMAT, Report, Totals},
    runner::{self, RunError, RunOptions},
    server::ServerArgs,
    suite,
};

#[derive(Debug, Clone, Subcommand)]
pub enum EvalCommand {
    /// Run a suite of cases against a live server, check each, write report.json and report.md.
    #[command(after_help = RUN_EXIT_CODES)]
    Run(RunArgs),
    /// Compare two report.json files and list regressions and improvements.
    #[command(after_help = COMPARE_EXIT_CODES)]
    Compare(CompareArgs),
    /// Load benchmark, backlog or closed loop: report throughput, latency and CPU per task.
    Bench(BenchArgs),
}

const RUN_EXIT_CODES: &str = "Exit codes: 0 every run passed, 1 a run failed or errored, 2 the suite is invalid \
(or expects an agent or tool the server lacks), 3 the server is unreachable or refused, or the report cannot be written.";
const COMPARE_EXIT_CODES: &str =
    "Exit codes: 0 no regression beyond the threshold, 1 a regression beyond it, 2 a report is unreadable.";

/// How an `eval run` or `eval compare` ended; its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Passed = 0,
    /// A run failed, or a comparison found a regression beyond the threshold.
    Failed = 1,
    /// The suite or a report is invalid.
    BadInput = 2,
    /// The server could not be used, or the report could not be written.
    Unavailable = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The suite: a YAML file (see docs/eval.md), e.g. eval/suites/smoke.yaml.
    pub suite: PathBuf,

    /// Directory for report.json and report.md; created when missing.
    #[arg(long)]
    pub out: PathBuf,

    /// Runs in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,

    /// Longest wait for a task to end, for cases and suites that set no timeout_secs.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_secs: u64,

    /// Fail runs whose case has a judge rubric when no judge is configured (instead of
    /// reporting the judge as skipped).
    #[arg(long)]
    pub require_judge: bool,

    #[command(flatten)]
    pub judge: JudgeArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

/// The LLM-as-judge; off unless a model is named.
#[derive(Debug, Clone, Args)]
pub struct JudgeArgs {
    /// Model that scores results against rubrics; rubrics are skipped when unset.
    #[arg(long, env = "EVAL_JUDGE_MODEL")]
    pub judge_model: Option<String>,

    /// Base URL of the judge's OpenAI-compatible API (e.g. http://localhost:11434/v1 for Ollama).
    #[arg(long, env = "EVAL_JUDGE_BASE_URL", default_value = "https://api.openai.com/v1")]
    pub judge_url: String,

    /// The judge API's key, sent as a bearer token.
    #[arg(long, env = "EVAL_JUDGE_API_KEY", hide_env_values = true)]
    pub judge_api_key: Option<String>,
}

impl JudgeArgs {
    fn judge(&self) -> Option<Judge> {
        let model = self.judge_model.clone().filter(|m| !m.trim().is_empty())?;
        Some(Judge::new(JudgeConfig { base_url: self.judge_url.clone(), model, api_key: self.judge_api_key.clone() }))
    }
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The baseline report.json.
    pub old: PathBuf,
    /// The report.json to judge against it.
    pub new: PathBuf,

    /// Largest tolerated worsening: pass-rate drop in absolute terms (0.1 = ten points), and
    /// relative growth of p95 latency and cost (0.1 = +10%).
    #[arg(long, default_value_t = 0.1, value_parser = fraction)]
    pub threshold: f64,

    /// Overrides --threshold for p95 latency, which is noisier than the rest.
    #[arg(long, value_parser = fraction)]
    pub latency_threshold: Option<f64>,
}

/// A non-negative finite number.
fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a non-negative number (e.g. 0.1 for 10%)")),
    }
}

/// Runs an `eval` command and says how it ended.
pub async fn run(command: EvalCommand) -> ExitCode {
    match command {
        EvalCommand::Run(args) => run_suite(args).await.into(),
        EvalCommand::Compare(args) => compare_reports(args).await.into(),
        EvalCommand::Bench(args) => bench::execute(args).await,
    }
}

/// Runs file work on the blocking pool, off the runtime's threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

async fn run_suite(args: RunArgs) -> Exit {
    let path = args.suite.clone();
    let suite = match blocking(move || suite::load(&path)).await {
        Ok(suite) => suite,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
    };
    // Before any task runs: a long suite must not end unable to write its report.
    let out = args.out.clone();
    if let Err(e) = blocking(move || std::fs::create_dir_all(out)).await {
        eprintln!("error: cannot create {}: {e}", args.out.display());
        return Exit::Unavailable;
    }
    let client = args.server.client();
    match runner::preflight(&client, &suite).await {
        Ok(()) => {}
        Err(e @ RunError::Unknown { .. }) => {
            eprintln!("error: {}: {e}", args.suite.display());
            return Exit::BadInput;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Unavailable;
        }
    }
    let judge = args.judge.judge();
    let options = RunOptions {
        concurrency: args.concurrency as usize,
        default_timeout: Duration::from_secs(args.timeout_secs),
        require_judge: args.require_judge,
    };
    let started_at = Utc::now();
    let results = runner::run_suite(&client, &suite, judge.as_ref(), &options).await;
    let report = Report {
        format: REPORT_FORMAT.to_owned(),
        suite: suite.name.clone(),
        suite_file: args.suite.display().to_string(),
        url: client.base_url().to_owned(),
        started_at,
        finished_at: Utc::now(),
        concurrency: options.concurrency,
        judge: judge.map(|j| JudgeInfo { base_url: j.config().base_url.clone(), model: j.config().model.clone() }),
        totals: Totals::of(suite.cases.len(), &results),
        results,
    };
    let out = args.out.clone();
    let (report, written) = blocking(move || {
        let written = report.write(&out);
        (report, written)
    })
    .await;
    if let Err(e) = written {
        eprintln!("error: {e}");
        return Exit::Unavailable;
    }
    print!("{}", report.markdown());
    println!("\nreport written to {}", args.out.display());
    if report.all_passed() { Exit::Passed } else { Exit::Failed }
}

async fn compare_reports(args: CompareArgs) -> Exit {
    let (old_path, new_path) = (args.old.clone(), args.new.clone());
    let read = blocking(move || (Report::read(&old_path), Report::read(&new_path))).await;
    let (old, new) = match read {
        (Ok(old), Ok(new)) => (old, new),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
    };
    let thresholds = Thresholds {
        pass_rate: args.threshold,
        latency: args.latency_threshold.unwrap_or(args.threshold),
        cost: args.threshold,
    };
    let comparison = compare(&old, &new, &thresholds);
    print!("{}", comparison.markdown(&thresholds));
    if comparison.regressed() { Exit::Failed } else { Exit::Passed }
}
