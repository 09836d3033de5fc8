//! A worker's background duties: its heartbeat, moving due retries into the queue, the
//! reconciler (one active instance per deployment, by a Redis lock), listening for
//! cancelled tasks, and sending webhooks (`crate::webhooks`).
//!
//! The reconciler is what makes Postgres the truth: work that should have a job (a pending
//! task, a ready step, a plan or step whose lease expired) but has none in the queue, after
//! a crash between a commit and its enqueue or a Redis restart that lost every key, is
//! enqueued again. A duplicate job is harmless; a missing one would strand the task.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{WorkerConfig, WorkerDeps, inflight::InFlight};
use crate::backoff::Backoff;
use crate::{coordination::WorkerInfo, domain::ApprovalStatus, queue::Job, store::ApprovalDecision};

const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A worker missing this many heartbeats in a row drops out of the registry.
const HEARTBEAT_TTL: Duration = Duration::from_secs(6);
const PROMOTE_EVERY: Duration = Duration::from_millis(200);
/// Rows looked at per reconciler sweep.
const SWEEP_LIMIT: i64 = 1000;

pub(super) struct Maintenance {
    tasks: JoinSet<()>,
    stop: CancellationToken,
    deps: Arc<WorkerDeps>,
    worker: String,
}

impl Maintenance {
    /// Stops the duties and removes the worker from the registry.
    pub(super) async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        if let Err(e) = self.deps.coordination.deregister(&self.worker).await {
            tracing::debug!(error = %e, "could not deregister; the heartbeat expires on its own");
        }
    }
}

/// Starts the duties; they run until [`Maintenance::stop`]. Heartbeats and cancellations go
/// on while the worker drains, so they stop only when it does.
pub(super) fn spawn(deps: Arc<WorkerDeps>, config: Arc<WorkerConfig>, inflight: InFlight) -> Maintenance {
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let started_at = Utc::now();

    tasks.spawn(every(HEARTBEAT_EVERY, stop.clone(), {
        let (deps, config, inflight) = (deps.clone(), config.clone(), inflight.clone());
        move || {
            let (deps, config, inflight) = (deps.clone(), config.clone(), inflight.clone());
            async move {
                let info = WorkerInfo {
                    id: config.id.clone(),
                    started_at,
                    heartbeat_at: Utc::now(),
                    concurrency: config.concurrency,
                    in_flight: inflight.snapshot(),
                };
                if let Err(e) = deps.coordination.heartbeat(&info, HEARTBEAT_TTL).await {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
            }
        }
    }));

    tasks.spawn(every(PROMOTE_EVERY, stop.clone(), {
        let deps = deps.clone();
        move || {
            let deps = deps.clone();
            async move {
                if let Err(e) = deps.source.promote_due().await {
                    tracing::warn!(error = %e, "could not move due retries into the queue");
                }
            }
        }
    }));

    tasks.spawn(every(config.reconcile_interval, stop.clone(), {
        let (deps, config) = (deps.clone(), config.clone());
        move || {
            let (deps, config) = (deps.clone(), config.clone());
            async move {
                // The lock outlives a few missed sweeps, so leadership does not flap.
                let ttl = config.reconcile_interval * 3;
                match deps.coordination.try_lead("reconciler", &config.id, ttl).await {
                    Ok(true) => {
                        if let Err(e) = reconcile(&deps, &config).await {
                            tracing::warn!(error = %e, "reconciler sweep failed");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "could not take the reconciler lock"),
                }
            }
        }
    }));

    // Webhooks of ended tasks: every worker sends, the outbox's claims keep them apart.
    tasks.spawn(every(crate::webhooks::POLL_EVERY, stop.clone(), {
        let deps = deps.clone();
        move || {
            let deps = deps.clone();
            async move {
                if let Err(e) = deps.webhooks.send_due().await {
                    tracing::warn!(error = %e, "could not read the webhook outbox");
                }
            }
        }
    }));

    tasks.spawn(listen_for_cancellations(deps.clone(), inflight, stop.clone()));

    Maintenance { tasks, stop, deps, worker: config.id.clone() }
}

/// Calls `tick` every `period` until `stop` fires.
async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => tick().await,
            _ = stop.cancelled() => return,
        }
    }
}

/// One sweep: gives back budget reservations whose lease has ended (their worker died),
/// then finds work that should have a job and enqueues the jobs that are missing.
async fn reconcile(deps: &WorkerDeps, config: &WorkerConfig) -> Result<(), super::JobError> {
    match deps.store.release_stale_reservations(SWEEP_LIMIT).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(released = n, "released budget reservations of ended leases"),
        Err(e) => tracing::warn!(error = %e, "could not release stale budget reservations"),
    }
    expire_approvals(deps).await;
    let work =
        deps.store.unfinished_work(config.reconcile_min_age, SWEEP_LIMIT, config.budgets.max_running_tasks).await?;
    if work.is_empty() {
        return Ok(());
    }
    let jobs: Vec<Job> = work
        .iter()
        .map(|w| match w.step {
            Some(step) => Job::step(w.task, step, w.attempt.max(1) as u32, w.priority),
            None => Job::plan(w.task, w.priority),
        })
        .collect();
    let present = deps.dispatcher.has_job(&jobs).await?;
    let missing: Vec<Job> = jobs.into_iter().zip(present).filter_map(|(job, has)| (!has).then_some(job)).collect();
    if !missing.is_empty() {
        tracing::warn!(count = missing.len(), "reconciler re-enqueued work that had no job");
        deps.dispatcher.enqueue(&missing).await?;
    }
    Ok(())
}

/// Denies the tool calls nobody decided on within `APPROVAL_TIMEOUT_SECS`, through the same
/// transition as a person's denial: the model reads why and the step goes on. Each is its
/// own conditional write, so a decision that lands first wins and the expiry does nothing.
async fn expire_approvals(deps: &WorkerDeps) {
    let expired = match deps.store.expired_approvals(SWEEP_LIMIT).await {
        Ok(expired) => expired,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for expired approvals");
            return;
        }
    };
    for (task, call) in expired {
        let decision = ApprovalDecision {
            status: ApprovalStatus::Expired,
            reason: Some("nobody approved or denied this call in time".to_owned()),
            arguments: None,
            decided_by: "system".to_owned(),
        };
        match deps.lifecycle.decide(task, call, &decision).await {
            Ok(_) => tracing::info!(%task, %call, "an unanswered tool call expired; it counts as denied"),
            Err(e) => tracing::warn!(%task, %call, error = %e, "could not expire an unanswered tool call"),
        }
    }
}

/// Cancels this worker's running steps of each task cancelled anywhere in the deployment.
async fn listen_for_cancellations(deps: Arc<WorkerDeps>, inflight: InFlight, stop: CancellationToken) {
    let mut backoff = Backoff::default();
    loop {
        let mut stream = tokio::select! {
            s = deps.coordination.cancellations() => match s {
                Ok(s) => { backoff.reset(); s }
                Err(e) => {
                    let pause = backoff.next();
                    tracing::warn!(error = %e, retry_in = ?pause, "cannot subscribe to cancellations");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = stop.cancelled() => return,
                    }
                }
            },
            _ = stop.cancelled() => return,
        };
        loop {
            tokio::select! {
                next = stream.next() => match next {
                    Some(task) => {
                        let n = inflight.cancel_task(task);
                        if n > 0 {
                            tracing::info!(%task, jobs = n, "stopping the jobs of a cancelled task");
                        }
                    }
                    None => break, // connection lost: subscribe again
                },
                _ = stop.cancelled() => return,
            }
        }
    }
}
