//! Closed mode: `--in-flight` clients, each submitting a task, waiting for it to end and
//! then submitting the next, until `--tasks` tasks were submitted; so the number of tasks in
//! flight stays fixed and throughput is what the server sustains for that many interactive
//! clients.
//!
//! Each client waits the way an interactive client does: the submission carries
//! `Prefer: wait=30` (RFC 7240), so a server that honours it answers `200` with the ended
//! task, steps included; otherwise (`202`, the task still running) the client reads
//! `GET /tasks/{id}` with the same preference until the task has ended. Only when an answer
//! lacks `Preference-Applied` (a server that ignores the preference answers at once) does the
//! client pause before reading again, 10 ms doubling to 100 ms, so it never spins.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{BenchArgs, Bodies, Outcome, Tracked};
use crate::client::{ApiClient, Waited};

/// The wait asked of the server per request.
const PREFER_WAIT: Duration = Duration::from_secs(30);
/// First pause before reading again after an answer that did not honour the wait.
const FALLBACK_FIRST: Duration = Duration::from_millis(10);
/// Longest such pause: a task ends within a few of them at the latencies benchmarked.
const FALLBACK_MAX: Duration = Duration::from_millis(100);

/// How the waiting went, summed over the clients.
#[derive(Debug, Clone, Default)]
pub(super) struct WaitCounts {
    /// Requests sent with `Prefer: wait`, submissions included.
    pub requests: usize,
    /// Answers that carried `Preference-Applied`.
    pub preference_applied: usize,
    /// Reads of a task after its submission.
    pub reads: usize,
    /// Pauses taken because the last answer did not honour the wait (or failed).
    pub fallback_sleeps: usize,
}

impl WaitCounts {
    fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.preference_applied += other.preference_applied;
        self.reads += other.reads;
        self.fallback_sleeps += other.fallback_sleeps;
    }

    fn answered(&mut self, waited: &Waited) {
        self.preference_applied += usize::from(waited.preference_applied);
    }
}

/// One task as its client ran it, with when its submission was sent and answered.
struct Run {
    tracked: Tracked,
    sent: Instant,
    answered: Instant,
}

/// Runs the clients until every task was submitted and has ended, or `--timeout-secs`
/// passed (after which no task is submitted and no client waits).
pub(super) async fn run(client: &ApiClient, args: &BenchArgs, bodies: &Bodies) -> Outcome {
    let total = args.tasks as usize;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let bodies: Arc<Vec<Value>> = Arc::new((0..total).map(|i| bodies.body(i)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.in_flight.min(args.tasks) {
        let (client, bodies, next) = (client.clone(), bodies.clone(), next.clone());
        clients.spawn(async move {
            let (mut runs, mut counts) = (Vec::new(), WaitCounts::default());
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total || Instant::now() >= deadline {
                    return (runs, counts);
                }
                runs.push(run_one(&client, index, &bodies[index], deadline, &mut counts).await);
            }
        });
    }
    let (mut runs, mut counts) = (Vec::with_capacity(total), WaitCounts::default());
    while let Some(joined) = clients.join_next().await {
        match joined {
            Ok((client_runs, client_counts)) => {
                runs.extend(client_runs);
                counts.add(&client_counts);
            }
            // A client that panicked loses its tasks, which then count as not submitted.
            Err(e) => eprintln!("warning: a bench client stopped: {e}"),
        }
    }
    let first_sent = runs.iter().map(|r| r.sent).min();
    let last_answered = runs.iter().map(|r| r.answered).max();
    let submit_elapsed = match (first_sent, last_answered) {
        (Some(first), Some(last)) => last - first,
        _ => Duration::ZERO,
    };
    let mut tasks: Vec<Tracked> = runs.into_iter().map(|r| r.tracked).collect();
    tasks.sort_by_key(|t| t.index);
    Outcome { not_submitted: total - tasks.len(), tasks, submit_elapsed, waits: Some(counts) }
}

/// Submits one task and waits until it has ended or `deadline` passed.
async fn run_one(client: &ApiClient, index: usize, body: &Value, deadline: Instant, counts: &mut WaitCounts) -> Run {
    let sent = Instant::now();
    counts.requests += 1;
    let created = client.create_waiting(body, wait_until(deadline)).await;
    let answered = Instant::now();
    let submit_ms = (answered - sent).as_secs_f64() * 1000.0;
    let mut waited = match created {
        Ok(waited) => waited,
        Err(e) => {
            let tracked = Tracked { index, submit_ms, view: Err(e.detail()), client_latency_ms: None, steps: None };
            return Run { tracked, sent, answered };
        }
    };
    counts.answered(&waited);
    let mut pause = FALLBACK_FIRST;
    while !waited.task.is_terminal() && Instant::now() < deadline {
        if !waited.preference_applied {
            counts.fallback_sleeps += 1;
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(FALLBACK_MAX);
        }
        counts.requests += 1;
        counts.reads += 1;
        match client.task_waiting(waited.task.id, wait_until(deadline)).await {
            Ok(read) => {
                counts.answered(&read);
                waited = read;
            }
            // E.g. a 429 or a restart: read again after a pause, until the deadline.
            Err(_) => waited.preference_applied = false,
        }
    }
    let ended = waited.task.is_terminal();
    let tracked = Tracked {
        index,
        submit_ms,
        client_latency_ms: ended.then(|| sent.elapsed().as_secs_f64() * 1000.0),
        steps: ended.then_some(waited.task.steps.len()),
        view: Ok(waited.task),
    };
    Run { tracked, sent, answered }
}

/// The wait to ask for: [`PREFER_WAIT`], or less when the deadline is nearer.
fn wait_until(deadline: Instant) -> Duration {
    PREFER_WAIT.min(deadline.saturating_duration_since(Instant::now()))
}
