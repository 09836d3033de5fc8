//! Backlog mode: submit every task (at most `--concurrency` submissions in flight), then
//! wait for all of them by paging through each user's task list, newest first, only as far
//! as that user's submitted tasks reach; after the run, read each completed task once for
//! its steps.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

use super::{BenchArgs, BenchError, Bodies, Outcome, Tracked, user_name};
use crate::client::{ApiClient, ListQuery, TaskView};

/// Pause between two rounds of polling the task list.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Reads of one task's steps before it counts 0 steps.
const STEP_READ_ATTEMPTS: u32 = 5;

/// Submits every task, then waits until all ended or `--timeout-secs` passed.
pub(super) async fn run(client: &ApiClient, args: &BenchArgs, bodies: &Bodies) -> Result<Outcome, BenchError> {
    let total = args.tasks as usize;
    let users = args.users as usize;

    // Submit: `concurrency` workers take the next index until all are taken.
    let next = Arc::new(AtomicUsize::new(0));
    let bodies: Arc<Vec<serde_json::Value>> = Arc::new((0..total).map(|i| bodies.body(i)).collect());
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
                let view = client.submit(&bodies[index]).await.map_err(|e| e.detail());
                let submit_ms = sent.elapsed().as_secs_f64() * 1000.0;
                done.push(Tracked { index, submit_ms, view, client_latency_ms: None, steps: None });
            }
        });
    }
    let mut tasks = Vec::with_capacity(total);
    while let Some(done) = workers.join_next().await {
        tasks.extend(done.map_err(|e| BenchError::Client(format!("a submitter panicked: {e}")))?);
    }
    let submit_elapsed = submit_start.elapsed();
    tasks.sort_by_key(|t| t.index);

    // Accepted tasks per user, by the user's index.
    let mut per_user = vec![0usize; users];
    let mut submitted: HashMap<Uuid, usize> = HashMap::new();
    for (position, task) in tasks.iter().enumerate() {
        if let Ok(view) = &task.view {
            submitted.insert(view.id, position);
            per_user[task.index % users] += 1;
        }
    }
    if !submitted.is_empty() {
        wait(client, args, &submitted, &per_user, &mut tasks).await?;
    }
    Ok(Outcome { tasks, submit_elapsed, not_submitted: 0, waits: None })
}

/// Pages through each user's tasks, newest first, until every submitted one has ended,
/// updating `tasks` with what it reads. A user's paging stops as soon as all of its
/// submitted tasks were seen, so tasks left by earlier runs are not read again and again.
async fn wait(
    client: &ApiClient,
    args: &BenchArgs,
    submitted: &HashMap<Uuid, usize>,
    per_user: &[usize],
    tasks: &mut [Tracked],
) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut ended = 0;
    // A failed read (e.g. 429 from the server's per-caller read limit) ends the round early;
    // the next round starts over, until the deadline.
    'rounds: loop {
        for (user, &expected) in per_user.iter().enumerate() {
            let (mut cursor, mut seen) = (None, 0);
            while seen < expected {
                let query = ListQuery {
                    user_id: Some(user_name(user)),
                    limit: Some(100),
                    cursor: cursor.take(),
                    ..Default::default()
                };
                let page = match client.list(&query).await {
                    Ok(page) => page,
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(POLL_INTERVAL).await;
                        continue 'rounds;
                    }
                    Err(e) => return Err(e.into()),
                };
                for view in page.items {
                    let Some(&position) = submitted.get(&view.id) else { continue };
                    seen += 1;
                    let task = &mut tasks[position];
                    let was_ended = task.view.as_ref().is_ok_and(TaskView::is_terminal);
                    if !was_ended {
                        ended += usize::from(view.is_terminal());
                        task.view = Ok(view);
                    }
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        if ended >= submitted.len() || Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Reads the steps of each completed task, with at most `concurrency` requests in flight;
/// a task that cannot be read counts 0 steps.
pub(super) async fn count_steps(client: &ApiClient, outcome: &mut Outcome, concurrency: u32) {
    let ids: Arc<Vec<(usize, Uuid)>> = Arc::new(
        outcome
            .tasks
            .iter()
            .enumerate()
            .filter_map(|(position, t)| {
                t.view.as_ref().ok().filter(|v| v.status == "completed").map(|v| (position, v.id))
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, ids, next) = (client.clone(), ids.clone(), next.clone());
        workers.spawn(async move {
            let mut counts = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(position, id)) = ids.get(index) else { return counts };
                // A few tries: the server's per-user read limit may answer 429 for a moment.
                for attempt in 1..=STEP_READ_ATTEMPTS {
                    match client.task(id).await {
                        Ok(task) => {
                            counts.push((position, task.steps.len()));
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
    while let Some(Ok(counts)) = workers.join_next().await {
        for (position, steps) in counts {
            outcome.tasks[position].steps = Some(steps);
        }
    }
}
