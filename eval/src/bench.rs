//! `orchestrator eval bench`: a load benchmark run over the public API only.
//!
//! It submits `--tasks` tasks with at most `--concurrency` submissions in flight, spread
//! round-robin over `--users` users (`bench-user-0` … `bench-user-{N-1}`, so per-user rate
//! limits and running-task caps can be exercised or avoided), waits for all of them to end
//! (paging through each user's task list, newest first, only as far as that user's submitted
//! tasks reach), then reads each task once for its steps and reports:
//!
//! - submission throughput: `POST /tasks` requests per second and their latency percentiles;
//! - end-to-end throughput: tasks and steps per second from the first task's `created_at` to
//!   the last task's `completed_at` (server clocks, as the API reports them);
//! - completion latency percentiles (`completed_at - created_at` of each task);
//! - failures: rejected submissions and tasks that failed, were cancelled or did not end.
//!
//! It writes `bench.json` (every figure and each task's latency), `bench.md` (a table) and
//! `latency.svg` (completion latency over submission time) into `--out`, and exits 0 only when
//! every task completed (1 otherwise, 3 when the server could not be used at all).

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::{
    client::{ApiClient, ClientError, ListQuery, TaskView},
    server::ServerArgs,
    stats::Percentiles,
};

/// A four-step task: the heuristic planner makes one step per numbered line.
pub const DEFAULT_DESCRIPTION: &str =
    "1. Research the topic\n2. Analyze the findings\n3. Implement a prototype\n4. Write a summary";

/// Pause between two rounds of polling the task list.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Reads of one task's steps before it counts 0 steps.
const STEP_READ_ATTEMPTS: u32 = 5;

/// Submission errors kept verbatim in the report; the rest are only counted.
const KEPT_ERRORS: usize = 20;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Tasks to submit.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub tasks: u32,

    /// Submissions in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// Users the tasks are spread over, round-robin: `bench-user-0` … `bench-user-{N-1}`.
    /// Per-user limits (create rate, running-task cap) apply to each of them separately.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub users: u32,

    /// Directory for bench.json, bench.md and latency.svg; created when missing.
    #[arg(long)]
    pub out: PathBuf,

    /// Description of every task.
    #[arg(long, default_value = DEFAULT_DESCRIPTION)]
    pub description: String,

    /// Give up waiting for the tasks after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,

    #[command(flatten)]
    pub server: ServerArgs,
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

#[derive(Debug, Clone, Serialize)]
pub struct SubmissionStats {
    pub ok: usize,
    pub failed: usize,
    /// From the first request sent to the last answer received.
    pub elapsed_s: f64,
    pub requests_per_s: f64,
    pub latency_ms: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndToEndStats {
    pub completed: usize,
    pub failed: usize,
    pub cancelled: usize,
    /// Submitted but not ended when the wait gave up.
    pub unfinished: usize,
    /// First `created_at` to last `completed_at`.
    pub window_s: f64,
    pub tasks_per_s: f64,
    /// Steps of the completed tasks.
    pub steps: usize,
    pub steps_per_s: f64,
    /// `completed_at - created_at` of the completed tasks.
    pub latency_ms: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskSample {
    pub id: Uuid,
    pub status: String,
    pub steps: usize,
    /// Latency of its `POST /tasks`, as the client saw it.
    pub submit_ms: f64,
    /// Its `created_at`, in seconds after the first task's.
    pub created_offset_s: f64,
    /// `completed_at - created_at`; absent when it did not end.
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub url: String,
    /// The first user; the tasks went to `users` users named like it (`bench-user-<n>`).
    pub user_id: String,
    pub users: u32,
    pub tasks: u32,
    pub concurrency: u32,
    pub description: String,
    pub started_at: DateTime<Utc>,
    pub submission: SubmissionStats,
    pub end_to_end: EndToEndStats,
    /// The first few submission errors and every task error message, verbatim.
    pub errors: Vec<String>,
    pub samples: Vec<TaskSample>,
}

impl BenchReport {
    pub fn all_completed(&self) -> bool {
        self.submission.failed == 0 && self.end_to_end.completed == self.tasks as usize
    }

    /// The figures as a Markdown table.
    pub fn markdown(&self) -> String {
        let (s, e) = (&self.submission, &self.end_to_end);
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmark: {} tasks, {} concurrent submissions\n", self.tasks, self.concurrency);
        let users = match self.users {
            1 => format!("user `{}`", self.user_id),
            n => format!("{n} users (`bench-user-0` … `bench-user-{}`)", n - 1),
        };
        let _ = writeln!(md, "Server `{}`, {users}, started {}.\n", self.url, self.started_at);
        let _ = writeln!(md, "| Measure | Value |");
        let _ = writeln!(md, "|---|---|");
        let mut row = |name: &str, value: String| {
            let _ = writeln!(md, "| {name} | {value} |");
        };
        row("Submissions accepted / rejected", format!("{} / {}", s.ok, s.failed));
        row("Submission throughput (POST /tasks)", format!("{:.0} req/s over {:.2} s", s.requests_per_s, s.elapsed_s));
        row(
            "POST /tasks latency p50 / p95 / p99",
            format!("{:.2} / {:.2} / {:.2} ms", s.latency_ms.p50, s.latency_ms.p95, s.latency_ms.p99),
        );
        row(
            "Tasks completed / failed / cancelled / unfinished",
            format!("{} / {} / {} / {}", e.completed, e.failed, e.cancelled, e.unfinished),
        );
        row("End-to-end window (first created → last completed)", format!("{:.2} s", e.window_s));
        row(
            "End-to-end throughput",
            format!("{:.1} tasks/s, {:.1} steps/s ({} steps)", e.tasks_per_s, e.steps_per_s, e.steps),
        );
        row(
            "Completion latency p50 / p95 / p99 / max",
            format!(
                "{:.0} / {:.0} / {:.0} / {:.0} ms",
                e.latency_ms.p50, e.latency_ms.p95, e.latency_ms.p99, e.latency_ms.max
            ),
        );
        if !self.errors.is_empty() {
            let _ = writeln!(md, "\nErrors (first {}):\n", self.errors.len());
            for error in &self.errors {
                let _ = writeln!(md, "- {}", error.replace('\n', " "));
            }
        }
        md
    }
}

/// One finished submission.
struct Submission {
    index: usize,
    result: Result<TaskView, String>,
    elapsed: Duration,
}

/// Runs the benchmark and writes its report into `args.out`.
pub async fn bench(client: &ApiClient, args: &BenchArgs) -> Result<BenchReport, BenchError> {
    std::fs::create_dir_all(&args.out).map_err(|source| BenchError::Io { path: args.out.clone(), source })?;
    let users: Vec<String> = (0..args.users).map(|i| format!("bench-user-{i}")).collect();
    let started_at = Utc::now();
    let total = args.tasks as usize;

    // Submit: `concurrency` workers take the next index until all are taken; task `i` goes to
    // user `i mod N`.
    let next = Arc::new(AtomicUsize::new(0));
    let bodies: Arc<Vec<serde_json::Value>> =
        Arc::new(users.iter().map(|user| json!({"user_id": user, "description": args.description})).collect());
    let submit_start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.min(args.tasks) {
        let (client, next, bodies) = (client.clone(), next.clone(), bodies.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return done;
                }
                let sent = Instant::now();
                let result = client.submit(&bodies[index % bodies.len()]).await.map_err(|e| e.detail());
                done.push(Submission { index, result, elapsed: sent.elapsed() });
            }
        });
    }
    let mut submissions = Vec::with_capacity(total);
    while let Some(done) = workers.join_next().await {
        submissions.extend(done.map_err(|e| BenchError::Client(format!("a submitter panicked: {e}")))?);
    }
    let submit_elapsed = submit_start.elapsed();
    submissions.sort_by_key(|s| s.index);

    let mut errors = Vec::new();
    let mut failed_submissions = 0;
    let mut submitted: HashMap<Uuid, f64> = HashMap::new();
    // Accepted tasks per user, by the user's index.
    let mut per_user = vec![0usize; users.len()];
    for s in &submissions {
        match &s.result {
            Ok(task) => {
                submitted.insert(task.id, s.elapsed.as_secs_f64() * 1000.0);
                per_user[s.index % users.len()] += 1;
            }
            Err(e) => {
                failed_submissions += 1;
                if errors.len() < KEPT_ERRORS {
                    errors.push(format!("POST /tasks #{}: {e}", s.index));
                }
            }
        }
    }
    if submitted.is_empty() {
        return Err(BenchError::Client(errors.first().cloned().unwrap_or_else(|| "no task was accepted".to_owned())));
    }
    let submit_latencies: Vec<f64> =
        submissions.iter().filter(|s| s.result.is_ok()).map(|s| s.elapsed.as_secs_f64() * 1000.0).collect();
    let submission = SubmissionStats {
        ok: submitted.len(),
        failed: failed_submissions,
        elapsed_s: submit_elapsed.as_secs_f64(),
        requests_per_s: submitted.len() as f64 / submit_elapsed.as_secs_f64().max(1e-9),
        latency_ms: Percentiles::of(&submit_latencies),
    };

    // Wait: page through each user's tasks, newest first, until every submitted one has ended.
    // A user's paging stops as soon as all of its submitted tasks were seen, so tasks left by
    // earlier runs are not read again and again.
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut ended: HashMap<Uuid, TaskView> = HashMap::new();
    let mut latest: HashMap<Uuid, TaskView> = HashMap::new();
    // A failed read (e.g. 429 from the server's per-caller read limit) ends the round early;
    // the next round starts over, until the deadline.
    'rounds: loop {
        for (user, &expected) in users.iter().zip(&per_user) {
            let (mut cursor, mut seen) = (None, 0);
            while seen < expected {
                let query =
                    ListQuery { user_id: Some(user.clone()), status: None, limit: Some(100), cursor: cursor.take() };
                let page = match client.list(&query).await {
                    Ok(page) => page,
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(POLL_INTERVAL).await;
                        continue 'rounds;
                    }
                    Err(e) => return Err(e.into()),
                };
                for task in page.items {
                    if submitted.contains_key(&task.id) {
                        seen += 1;
                        if task.is_terminal() {
                            ended.insert(task.id, task);
                        } else {
                            latest.insert(task.id, task);
                        }
                    }
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        if ended.len() >= submitted.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }

    // Steps: read each completed task once, after the measured window.
    let steps = count_steps(client, ended.values().filter(|t| t.status == "completed").map(|t| t.id), args).await;

    // Figures, on the server's clocks.
    let times = |task: &TaskView| {
        let created = parse_time(&task.created_at);
        let completed = task.completed_at.as_deref().and_then(parse_time);
        (created, completed)
    };
    let first_created =
        submitted.keys().filter_map(|id| ended.get(id).or_else(|| latest.get(id))).filter_map(|t| times(t).0).min();
    let mut samples = Vec::with_capacity(submitted.len());
    let (mut completed, mut failed, mut cancelled, mut unfinished) = (0, 0, 0, 0);
    let mut last_completed: Option<DateTime<Utc>> = None;
    let mut completion_latencies = Vec::new();
    let mut total_steps = 0;
    for s in &submissions {
        let Ok(task) = &s.result else { continue };
        let id = task.id;
        let view = ended.get(&id).or_else(|| latest.get(&id)).unwrap_or(task);
        let (created, done) = times(view);
        let latency_ms = match (created, done) {
            (Some(c), Some(d)) if view.is_terminal() => Some((d - c).num_microseconds().unwrap_or(0) as f64 / 1000.0),
            _ => None,
        };
        let task_steps = steps.get(&id).copied().unwrap_or(0);
        match view.status.as_str() {
            "completed" => {
                completed += 1;
                total_steps += task_steps;
                if let Some(l) = latency_ms {
                    completion_latencies.push(l);
                }
                last_completed = last_completed.max(done);
            }
            "failed" => failed += 1,
            "cancelled" => cancelled += 1,
            _ => unfinished += 1,
        }
        if view.is_terminal() && view.status != "completed" {
            errors.push(format!("task {id} {}: {}", view.status, view.error.clone().unwrap_or_default()));
        }
        let created_offset_s = match (created, first_created) {
            (Some(c), Some(f)) => (c - f).num_microseconds().unwrap_or(0) as f64 / 1e6,
            _ => 0.0,
        };
        samples.push(TaskSample {
            id,
            status: view.status.clone(),
            steps: task_steps,
            submit_ms: submitted.get(&id).copied().unwrap_or_default(),
            created_offset_s,
            latency_ms,
        });
    }
    let window_s = match (first_created, last_completed) {
        (Some(f), Some(l)) => (l - f).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => 0.0,
    };
    let per_s = |n: usize| if window_s > 0.0 { n as f64 / window_s } else { 0.0 };
    let end_to_end = EndToEndStats {
        completed,
        failed,
        cancelled,
        unfinished,
        window_s,
        tasks_per_s: per_s(completed),
        steps: total_steps,
        steps_per_s: per_s(total_steps),
        latency_ms: Percentiles::of(&completion_latencies),
    };
    let report = BenchReport {
        url: client.base_url().to_owned(),
        user_id: users[0].clone(),
        users: args.users,
        tasks: args.tasks,
        concurrency: args.concurrency,
        description: args.description.clone(),
        started_at,
        submission,
        end_to_end,
        errors,
        samples,
    };
    write_report(&report, &args.out)?;
    Ok(report)
}

/// Steps of each task, read with at most `args.concurrency` requests in flight; a task that
/// cannot be read counts 0 steps.
async fn count_steps(client: &ApiClient, ids: impl Iterator<Item = Uuid>, args: &BenchArgs) -> HashMap<Uuid, usize> {
    let ids: Arc<Vec<Uuid>> = Arc::new(ids.collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, ids, next) = (client.clone(), ids.clone(), next.clone());
        workers.spawn(async move {
            let mut counts = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(index) else { return counts };
                // A few tries: the server's per-user read limit may answer 429 for a moment.
                for attempt in 1..=STEP_READ_ATTEMPTS {
                    match client.task(*id).await {
                        Ok(task) => {
                            counts.push((*id, task.steps.len()));
                            break;
                        }
                        Err(_) if attempt < STEP_READ_ATTEMPTS => {
                            tokio::time::sleep(POLL_INTERVAL * attempt).await;
                        }
                        Err(_) => {}
                    }
                }
            }
        });
    }
    let mut steps = HashMap::new();
    while let Some(Ok(counts)) = workers.join_next().await {
        steps.extend(counts);
    }
    steps
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

fn write_report(report: &BenchReport, out: &std::path::Path) -> Result<(), BenchError> {
    let write = |name: &str, contents: String| {
        let path = out.join(name);
        std::fs::write(&path, contents).map_err(|source| BenchError::Io { path, source })
    };
    let json = serde_json::to_string_pretty(report).map_err(|e| BenchError::Client(e.to_string()))?;
    write("bench.json", json + "\n")?;
    write("bench.md", report.markdown())?;
    let points: Vec<Point> = report
        .samples
        .iter()
        .filter_map(|s| s.latency_ms.map(|l| Point { x: s.created_offset_s, y: l, ok: s.status == "completed" }))
        .collect();
    let title = format!(
        "Completion latency: {} tasks, {} concurrent submissions ({:.1} tasks/s)",
        report.tasks, report.concurrency, report.end_to_end.tasks_per_s
    );
    write("latency.svg", latency_svg(&title, &points))
}

/// One task in the scatter plot: submitted `x` seconds after the first, done after `y` ms.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    /// Completed (drawn blue) or ended otherwise (drawn red).
    pub ok: bool,
}

const SVG_WIDTH: f64 = 900.0;
const SVG_HEIGHT: f64 = 520.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 30.0;
const MARGIN_TOP: f64 = 50.0;
const MARGIN_BOTTOM: f64 = 60.0;
const TICKS: usize = 5;

/// A scatter plot of completion latency (ms, y) over submission time (s, x), with axes, tick
/// labels, axis titles and a title; one `<circle>` per point.
pub fn latency_svg(title: &str, points: &[Point]) -> String {
    let max_x = nice_max(points.iter().map(|p| p.x).fold(0.0, f64::max));
    let max_y = nice_max(points.iter().map(|p| p.y).fold(0.0, f64::max));
    let (plot_w, plot_h) = (SVG_WIDTH - MARGIN_LEFT - MARGIN_RIGHT, SVG_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM);
    let sx = |x: f64| MARGIN_LEFT + x / max_x * plot_w;
    let sy = |y: f64| MARGIN_TOP + plot_h - y / max_y * plot_h;
    let (x0, y0, x1, y1) = (MARGIN_LEFT, MARGIN_TOP + plot_h, MARGIN_LEFT + plot_w, MARGIN_TOP);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" viewBox="0 0 {SVG_WIDTH} {SVG_HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect x="0" y="0" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="28" text-anchor="middle" font-size="15">{}</text>"#,
        SVG_WIDTH / 2.0,
        escape(title)
    );
    // Grid lines and tick labels.
    for i in 0..=TICKS {
        let f = i as f64 / TICKS as f64;
        let (x, y) = (x0 + f * plot_w, y0 - f * plot_h);
        let _ = writeln!(svg, r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="#e0e0e0"/>"##);
        let _ = writeln!(svg, r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##);
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            y0 + 18.0,
            tick_label(f * max_x)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            x0 - 8.0,
            y + 4.0,
            tick_label(f * max_y)
        );
    }
    // Axes.
    let _ = writeln!(svg, r#"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x1:.1}" y2="{y0:.1}" stroke="black"/>"#);
    let _ = writeln!(svg, r#"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x0:.1}" y2="{y1:.1}" stroke="black"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">submission time (s after the first task was created)</text>"#,
        x0 + plot_w / 2.0,
        SVG_HEIGHT - 15.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">completion latency (ms)</text>"#,
        y1 + plot_h / 2.0,
        y1 + plot_h / 2.0
    );
    // Points.
    let _ = writeln!(svg, r#"<g fill-opacity="0.6">"#);
    for p in points {
        let colour = if p.ok { "#1f77b4" } else { "#d62728" };
        let _ = writeln!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#, sx(p.x), sy(p.y));
    }
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, "</svg>");
    svg
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `max` (1 when nothing is above zero).
fn nice_max(max: f64) -> f64 {
    if !(max > 0.0 && max.is_finite()) {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|v| *v >= max).unwrap_or(10.0 * magnitude)
}

fn tick_label(value: f64) -> String {
    if value == value.trunc() { format!("{value:.0}") } else { format!("{value:.2}") }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_svg_has_axes_labels_and_one_circle_per_point() {
        let points: Vec<Point> =
            (0..37).map(|i| Point { x: f64::from(i) * 0.1, y: f64::from(i * 7 % 50), ok: i % 5 != 0 }).collect();
        let svg = latency_svg("latency <& 'title'>", &points);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle ").count(), 37);
        assert_eq!(svg.matches("fill=\"#d62728\"").count(), 8);
        assert!(svg.contains("completion latency (ms)"));
        assert!(svg.contains("submission time"));
        assert!(svg.contains("latency &lt;&amp; 'title'&gt;"));
        // Every element is closed: self-closing, or opened and closed in equal numbers.
        for tag in ["svg", "g", "text"] {
            assert_eq!(svg.matches(&format!("<{tag} ")).count(), svg.matches(&format!("</{tag}>")).count(), "{tag}");
        }
        for tag in ["line", "circle", "rect"] {
            let opened = svg.matches(&format!("<{tag} ")).count();
            let closed = svg.lines().filter(|l| l.starts_with(&format!("<{tag} ")) && l.ends_with("/>")).count();
            assert_eq!(opened, closed, "{tag}");
        }
        // Every point lies inside the plot area.
        for line in svg.lines().filter(|l| l.starts_with("<circle")) {
            let attr = |name: &str| -> f64 {
                let start = line.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                line[start..].split('"').next().unwrap().parse().unwrap()
            };
            assert!((MARGIN_LEFT..=SVG_WIDTH - MARGIN_RIGHT).contains(&attr("cx")), "{line}");
            assert!((MARGIN_TOP..=SVG_HEIGHT - MARGIN_BOTTOM).contains(&attr("cy")), "{line}");
        }
        // No points still makes a valid, empty plot.
        assert_eq!(latency_svg("empty", &[]).matches("<circle").count(), 0);
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(0.7), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(180.0), 200.0);
        assert_eq!(nice_max(1000.0), 1000.0);
    }
}
