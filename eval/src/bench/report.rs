//! The bench's figures, from what a mode saw of each task: `bench.json` (every figure and
//! each task), `bench.md` (a table), `latency.svg` and `timeline.svg`.
//!
//! End-to-end figures use the server's clocks (`created_at`, `completed_at`), so both modes
//! measure the same thing; closed mode adds the latency its clients saw, from sending the
//! submission to receiving the ended task.

use std::{fmt::Write as _, path::Path};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{
    BenchError, Mode, Outcome,
    cpu::CpuReport,
    svg::{Completion, Point, latency_svg, timeline_svg},
};
use crate::{client::TaskView, stats::Percentiles};

/// Submission errors kept verbatim in the report; the rest are only counted.
const KEPT_ERRORS: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct SubmissionStats {
    pub ok: usize,
    pub failed: usize,
    /// From the first request sent to the last answer received.
    pub elapsed_s: f64,
    pub requests_per_s: f64,
    /// Of the accepted submissions. In closed mode a server that honours `Prefer: wait`
    /// holds the answer until the task ends (or the wait is over).
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
    /// Closed mode: submission sent → ended task received, on the client's clock.
    pub client_latency_ms: Option<Percentiles>,
}

/// How closed mode's waiting went: whether the server honoured `Prefer: wait`.
#[derive(Debug, Clone, Serialize)]
pub struct WaitStats {
    /// Requests sent with `Prefer: wait` (submissions and reads).
    pub requests: usize,
    /// Answers that carried `Preference-Applied`.
    pub preference_applied: usize,
    /// Reads after the submission, per task that ended.
    pub reads_per_task: f64,
    /// Pauses taken before a read because the last answer did not honour the wait.
    pub fallback_sleeps: usize,
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
    /// Its `completed_at`, in seconds after the first task's `created_at`.
    pub completed_offset_s: Option<f64>,
    /// `completed_at - created_at`; absent when it did not end.
    pub latency_ms: Option<f64>,
    /// Closed mode: submission sent → ended task received.
    pub client_latency_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub mode: Mode,
    pub url: String,
    /// The first user; the tasks went to `users` users named like it (`bench-user-<n>`).
    pub user_id: String,
    pub users: u32,
    pub tasks: u32,
    /// Backlog: submissions in flight; closed: tasks in flight.
    pub concurrency: u32,
    /// The description; with `distinct_descriptions` each task's carries its own suffix.
    pub description: String,
    pub distinct_descriptions: bool,
    pub started_at: DateTime<Utc>,
    pub submission: SubmissionStats,
    pub end_to_end: EndToEndStats,
    /// Closed mode only.
    pub waiting: Option<WaitStats>,
    /// CPU per task of the server, Postgres and Redis; absent with `--no-cpu` or when the
    /// server is not on this host (`cpu_unavailable` says why).
    pub cpu: Option<CpuReport>,
    pub cpu_unavailable: Option<String>,
    /// The first few submission errors and every task error message, verbatim.
    pub errors: Vec<String>,
    pub samples: Vec<TaskSample>,
}

/// What the report says about the run besides the tasks.
pub(super) struct RunInfo {
    pub mode: Mode,
    pub url: String,
    pub users: u32,
    pub tasks: u32,
    pub concurrency: u32,
    pub description: String,
    pub distinct_descriptions: bool,
    pub started_at: DateTime<Utc>,
}

impl BenchReport {
    /// The figures of `outcome`.
    pub(super) fn build(
        info: RunInfo,
        outcome: Outcome,
        cpu: Result<Option<CpuReport>, String>,
    ) -> Result<Self, BenchError> {
        let mut errors = Vec::new();
        let mut failed_submissions = outcome.not_submitted;
        let mut submit_latencies = Vec::new();
        for task in &outcome.tasks {
            match &task.view {
                Ok(_) => submit_latencies.push(task.submit_ms),
                Err(e) => {
                    failed_submissions += 1;
                    if errors.len() < KEPT_ERRORS {
                        errors.push(format!("POST /tasks #{}: {e}", task.index));
                    }
                }
            }
        }
        if submit_latencies.is_empty() {
            let first = errors.first().cloned().unwrap_or_else(|| "no task was accepted".to_owned());
            return Err(BenchError::Client(first));
        }
        let elapsed = outcome.submit_elapsed.as_secs_f64();
        let submission = SubmissionStats {
            ok: submit_latencies.len(),
            failed: failed_submissions,
            elapsed_s: elapsed,
            requests_per_s: submit_latencies.len() as f64 / elapsed.max(1e-9),
            latency_ms: Percentiles::of(&submit_latencies),
        };

        let first_created = outcome.tasks.iter().filter_map(|t| t.view.as_ref().ok()).filter_map(created).min();
        let offset = |t: DateTime<Utc>| first_created.map_or(0.0, |f| seconds(t - f));
        let (mut completed, mut failed, mut cancelled, mut unfinished, mut steps) = (0, 0, 0, 0, 0);
        let (mut latencies, mut client_latencies) = (Vec::new(), Vec::new());
        let mut last_completed: Option<DateTime<Utc>> = None;
        let mut samples = Vec::with_capacity(outcome.tasks.len());
        for task in &outcome.tasks {
            let Ok(view) = &task.view else { continue };
            let done = view.completed_at.as_deref().and_then(parse_time).filter(|_| view.is_terminal());
            let latency_ms = match (created(view), done) {
                (Some(c), Some(d)) => Some(seconds(d - c) * 1000.0),
                _ => None,
            };
            let task_steps = task.steps.unwrap_or(0);
            match view.status.as_str() {
                "completed" => {
                    completed += 1;
                    steps += task_steps;
                    latencies.extend(latency_ms);
                    client_latencies.extend(task.client_latency_ms);
                    last_completed = last_completed.max(done);
                }
                "failed" => failed += 1,
                "cancelled" => cancelled += 1,
                _ => unfinished += 1,
            }
            if view.is_terminal() && view.status != "completed" {
                errors.push(format!("task {} {}: {}", view.id, view.status, view.error.clone().unwrap_or_default()));
            }
            samples.push(TaskSample {
                id: view.id,
                status: view.status.clone(),
                steps: task_steps,
                submit_ms: task.submit_ms,
                created_offset_s: created(view).map_or(0.0, offset),
                completed_offset_s: done.map(offset),
                latency_ms,
                client_latency_ms: task.client_latency_ms,
            });
        }
        let window_s = match (first_created, last_completed) {
            (Some(f), Some(l)) => seconds(l - f),
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
            steps,
            steps_per_s: per_s(steps),
            latency_ms: Percentiles::of(&latencies),
            client_latency_ms: (info.mode == Mode::Closed).then(|| Percentiles::of(&client_latencies)),
        };
        let ended = completed + failed + cancelled;
        let waiting = outcome.waits.map(|w| WaitStats {
            requests: w.requests,
            preference_applied: w.preference_applied,
            reads_per_task: if ended > 0 { w.reads as f64 / ended as f64 } else { 0.0 },
            fallback_sleeps: w.fallback_sleeps,
        });
        let (cpu, cpu_unavailable) = match cpu {
            Ok(cpu) => (cpu, None),
            Err(reason) => (None, Some(reason)),
        };
        Ok(Self {
            mode: info.mode,
            url: info.url,
            user_id: super::user_name(0),
            users: info.users,
            tasks: info.tasks,
            concurrency: info.concurrency,
            description: info.description,
            distinct_descriptions: info.distinct_descriptions,
            started_at: info.started_at,
            submission,
            end_to_end,
            waiting,
            cpu,
            cpu_unavailable,
            errors,
            samples,
        })
    }

    pub fn all_completed(&self) -> bool {
        self.submission.failed == 0 && self.end_to_end.completed == self.tasks as usize
    }

    /// Tasks that reached a final state, whatever it was.
    pub fn ended(&self) -> usize {
        let e = &self.end_to_end;
        e.completed + e.failed + e.cancelled
    }

    /// The figures as a Markdown table.
    pub fn markdown(&self) -> String {
        let (s, e) = (&self.submission, &self.end_to_end);
        let mut md = String::new();
        let _ = match self.mode {
            Mode::Backlog => writeln!(
                md,
                "# Benchmark (backlog): {} tasks, {} concurrent submissions\n",
                self.tasks, self.concurrency
            ),
            Mode::Closed => {
                writeln!(md, "# Benchmark (closed loop): {} tasks, {} in flight\n", self.tasks, self.concurrency)
            }
        };
        let users = match self.users {
            1 => format!("user `{}`", self.user_id),
            n => format!("{n} users (`bench-user-0` … `bench-user-{}`)", n - 1),
        };
        let descriptions = if self.distinct_descriptions { "distinct descriptions" } else { "one description" };
        let _ = writeln!(md, "Server `{}`, {users}, {descriptions}, started {}.\n", self.url, self.started_at);
        let _ = writeln!(md, "| Measure | Value |");
        let _ = writeln!(md, "|---|---|");
        let mut row = |name: &str, value: String| {
            let _ = writeln!(md, "| {name} | {value} |");
        };
        row("Submissions accepted / rejected", format!("{} / {}", s.ok, s.failed));
        row("Submission throughput (POST /tasks)", format!("{:.0} req/s over {:.2} s", s.requests_per_s, s.elapsed_s));
        row("POST /tasks latency p50 / p95 / p99", three(&s.latency_ms, 2));
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
        if let Some(client) = &e.client_latency_ms {
            row("Client latency (submit → ended task) p50 / p95 / p99", three(client, 1));
        }
        if let Some(w) = &self.waiting {
            row(
                "Prefer: wait requests / Preference-Applied / fallback pauses",
                format!("{} / {} / {}", w.requests, w.preference_applied, w.fallback_sleeps),
            );
            row("Reads per task after the submission", format!("{:.2}", w.reads_per_task));
        }
        match (&self.cpu, &self.cpu_unavailable) {
            (Some(cpu), _) => {
                let part = |ms: Option<f64>| ms.map_or_else(|| "n/a".to_owned(), |ms| format!("{ms:.2}"));
                row(
                    "CPU per task: server + Postgres + Redis",
                    format!(
                        "{:.2} + {} + {} = {:.2} ms (server pid {}, {} ended tasks, {} ms ticks)",
                        cpu.server_ms_per_task,
                        part(cpu.postgres_ms_per_task),
                        part(cpu.redis_ms_per_task),
                        cpu.total_ms_per_task,
                        cpu.server_pid,
                        cpu.tasks,
                        cpu.tick_ms
                    ),
                );
            }
            (None, Some(reason)) => row("CPU per task", format!("not measured: {reason}")),
            (None, None) => row("CPU per task", "not measured (--no-cpu)".to_owned()),
        }
        if !self.errors.is_empty() {
            let _ = writeln!(md, "\nErrors (first {}):\n", self.errors.len());
            for error in &self.errors {
                let _ = writeln!(md, "- {}", error.replace('\n', " "));
            }
        }
        md
    }

    /// Writes bench.json, bench.md, latency.svg and timeline.svg into `out`. Blocking file
    /// I/O: call it on the blocking pool.
    pub fn write(&self, out: &Path) -> Result<(), BenchError> {
        let write = |name: &str, contents: String| {
            let path = out.join(name);
            std::fs::write(&path, contents).map_err(|source| BenchError::Io { path, source })
        };
        let json = serde_json::to_string_pretty(self).map_err(|e| BenchError::Client(e.to_string()))?;
        write("bench.json", json + "\n")?;
        write("bench.md", self.markdown())?;
        let what = match self.mode {
            Mode::Backlog => format!("{} tasks, {} concurrent submissions", self.tasks, self.concurrency),
            Mode::Closed => format!("{} tasks, {} in flight", self.tasks, self.concurrency),
        };
        let points: Vec<Point> = self
            .samples
            .iter()
            .filter_map(|s| s.latency_ms.map(|l| Point { x: s.created_offset_s, y: l, ok: s.status == "completed" }))
            .collect();
        let title = format!("Completion latency: {what} ({:.1} tasks/s)", self.end_to_end.tasks_per_s);
        write("latency.svg", latency_svg(&title, &points))?;
        let completions: Vec<Completion> = self
            .samples
            .iter()
            .filter(|s| s.status == "completed")
            .filter_map(|s| Some(Completion { at: s.completed_offset_s?, latency_ms: s.latency_ms? }))
            .collect();
        let title = format!("{} mode, {what}: throughput and latency over time", self.mode.name());
        write("timeline.svg", timeline_svg(&title, &completions))
    }
}

/// p50 / p95 / p99 with `decimals`.
fn three(p: &Percentiles, decimals: usize) -> String {
    format!("{:.d$} / {:.d$} / {:.d$} ms", p.p50, p.p95, p.p99, d = decimals)
}

fn created(view: &TaskView) -> Option<DateTime<Utc>> {
    parse_time(&view.created_at)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

fn seconds(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(0) as f64 / 1e6
}
