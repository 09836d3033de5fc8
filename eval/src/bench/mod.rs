//! `orchestrator eval bench`: a load benchmark run over the public API only, in one of two
//! modes.
//!
//! - **backlog** ([`backlog`]): submit `--tasks` tasks with at most `--concurrency`
//!   submissions in flight, then wait for all of them (paging through each user's task list).
//!   It measures how fast the server drains a queue.
//! - **closed** ([`closed`]): `--in-flight` clients, each submitting a task with
//!   `Prefer: wait=30`, waiting for it to end, then submitting the next, until `--tasks`
//!   tasks ran. It measures what interactive clients get: throughput at a fixed number of
//!   tasks in flight, and the latency each saw.
//!
//! Tasks go round-robin to `--users` users (`bench-user-0` … `bench-user-{N-1}`, so per-user
//! limits can be exercised or avoided). Each task's description ends with its own number
//! unless `--same-description` is given, so by default no plan comes from the plan cache.
//!
//! Both modes report submission and end-to-end throughput, completion latency percentiles,
//! failures and, when the server runs on this host, the CPU time per task of the server,
//! Postgres and Redis ([`cpu`]); they write `bench.json`, `bench.md`, `latency.svg` and
//! `timeline.svg` ([`report`], [`svg`]) into `--out`, and exit 0 only when every task
//! completed (1 otherwise, 3 when the server could not be used at all).

mod backlog;
mod closed;
pub mod cpu;
pub mod report;
pub mod svg;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use chrono::Utc;
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

pub use report::BenchReport;

use crate::{
    client::{ApiClient, ClientError, TaskView},
    server::ServerArgs,
};

/// A four-step task: the heuristic planner makes one step per numbered line.
pub const DEFAULT_DESCRIPTION: &str =
    "1. Research the topic\n2. Analyze the findings\n3. Implement a prototype\n4. Write a summary";

/// How the load is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Submit every task, then wait for all.
    Backlog,
    /// Keep a fixed number of tasks in flight, each client waiting for its task.
    Closed,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Backlog => "backlog",
            Self::Closed => "closed-loop",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// backlog: submit every task, then wait for all; closed: keep --in-flight tasks in
    /// flight, each client submitting its next task once its last one ended.
    #[arg(long, value_enum, default_value_t = Mode::Backlog)]
    pub mode: Mode,

    /// Tasks to run.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub tasks: u32,

    /// Backlog mode: submissions in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// Closed mode: tasks in flight at once (clients, each waiting for its task).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub in_flight: u32,

    /// Users the tasks are spread over, round-robin: `bench-user-0` … `bench-user-{N-1}`.
    /// Per-user limits (create rate, running-task cap) apply to each of them separately.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub users: u32,

    /// Directory for bench.json, bench.md, latency.svg and timeline.svg; created when missing.
    #[arg(long)]
    pub out: PathBuf,

    /// Description of the tasks; each task's ends with its own number unless
    /// --same-description is given.
    #[arg(long, default_value = DEFAULT_DESCRIPTION)]
    pub description: String,

    /// Give every task exactly the same description, so plans come from the plan cache.
    #[arg(long)]
    pub same_description: bool,

    /// Give up waiting for the tasks after this many seconds (closed mode: submits no task
    /// after it either).
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,

    /// The server's pid, for its CPU time; by default the process of this host listening on
    /// the URL's port.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Do not read CPU times from /proc.
    #[arg(long)]
    pub no_cpu: bool,

    #[command(flatten)]
    pub server: ServerArgs,
}

impl BenchArgs {
    fn in_flight(&self) -> u32 {
        match self.mode {
            Mode::Backlog => self.concurrency,
            Mode::Closed => self.in_flight,
        }
    }
}

/// Runs `eval bench` and says how it ended: 0 every task completed, 1 some did not, 3 the
/// server could not be used at all or the report could not be written.
pub async fn execute(args: BenchArgs) -> ExitCode {
    let client = args.server.client();
    match bench(&client, &args).await {
        Ok(report) => {
            print!("{}", report.markdown());
            println!("\nreport written to {}", args.out.display());
            if report.all_completed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Client(String),
    #[error("cannot write the report to {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl From<ClientError> for BenchError {
    fn from(e: ClientError) -> Self {
        Self::Client(e.detail())
    }
}

/// One task of the run, as a mode saw it.
struct Tracked {
    index: usize,
    /// Latency of its `POST /tasks`, as the client saw it.
    submit_ms: f64,
    /// The last view of the task (the final one when it ended), or why it was refused.
    view: Result<TaskView, String>,
    /// Closed mode: submission sent → ended task received.
    client_latency_ms: Option<f64>,
    /// Steps of the task, once read.
    steps: Option<usize>,
}

/// What a mode saw.
struct Outcome {
    /// Every task submitted, by index.
    tasks: Vec<Tracked>,
    /// From the first submission sent to the last answered.
    submit_elapsed: Duration,
    /// Tasks never submitted (closed mode: the deadline passed first).
    not_submitted: usize,
    /// Closed mode: how the waiting went.
    waits: Option<closed::WaitCounts>,
}

impl Outcome {
    fn ended(&self) -> usize {
        self.tasks.iter().filter(|t| t.view.as_ref().is_ok_and(TaskView::is_terminal)).count()
    }
}

/// The submission bodies: task `i` goes to user `i mod users`, with its own description
/// unless every task shares one.
struct Bodies {
    users: u32,
    description: String,
    /// Set when each description carries its own suffix: this run's tag, so two runs on one
    /// database do not share plans either.
    run: Option<String>,
}

impl Bodies {
    fn new(args: &BenchArgs) -> Self {
        let run = (!args.same_description).then(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_owned());
        Self { users: args.users, description: args.description.clone(), run }
    }

    fn body(&self, index: usize) -> Value {
        let user = user_name(index % self.users as usize);
        match &self.run {
            // Appended to the last clause: the heuristic planner still makes one step per
            // numbered line, with the same agents.
            Some(run) => {
                json!({"user_id": user, "description": format!("{} (bench {run}, task {index})", self.description)})
            }
            None => json!({"user_id": user, "description": self.description}),
        }
    }
}

fn user_name(index: usize) -> String {
    format!("bench-user-{index}")
}

/// Runs the benchmark and writes its report into `args.out`.
pub async fn bench(client: &ApiClient, args: &BenchArgs) -> Result<BenchReport, BenchError> {
    let out = args.out.clone();
    blocking(move || std::fs::create_dir_all(&out).map_err(|source| BenchError::Io { path: out, source })).await?;
    let meter = match args.no_cpu {
        true => Ok(None),
        false => start_meter(client.base_url(), args.server_pid).await.map(Some).map_err(|e| e.to_string()),
    };
    let bodies = Bodies::new(args);
    let started_at = Utc::now();
    let mut outcome = match args.mode {
        Mode::Backlog => backlog::run(client, args, &bodies).await?,
        Mode::Closed => closed::run(client, args, &bodies).await,
    };
    // Read before the backlog's step counts, which are not part of the run.
    let cpu = match meter {
        Ok(None) => Ok(None),
        Ok(Some((probe, before))) => match probe.sample().await {
            Ok(after) => Ok(Some(probe.report(&before, &after, outcome.ended()))),
            Err(e) => Err(e.to_string()),
        },
        Err(reason) => Err(reason),
    };
    if let Err(reason) = &cpu {
        eprintln!("warning: CPU time not measured: {reason}");
    }
    if args.mode == Mode::Backlog {
        backlog::count_steps(client, &mut outcome, args.concurrency).await;
    }
    let info = report::RunInfo {
        mode: args.mode,
        url: client.base_url().to_owned(),
        users: args.users,
        tasks: args.tasks,
        concurrency: args.in_flight(),
        description: args.description.clone(),
        distinct_descriptions: !args.same_description,
        started_at,
    };
    let report = BenchReport::build(info, outcome, cpu)?;
    let out = args.out.clone();
    blocking(move || report.write(&out).map(|()| report)).await
}

/// Finds the server's process and takes the first reading.
async fn start_meter(url: &str, pid: Option<u32>) -> Result<(cpu::Probe, cpu::Sample), cpu::CpuError> {
    let probe = cpu::Probe::locate(url, pid).await?;
    let before = probe.sample().await?;
    Ok((probe, before))
}

/// Runs file work on the blocking pool, off the runtime's threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
