//! The worker runtime: reads jobs from the queue and runs up to `concurrency` of them at
//! once (a semaphore bounds them, a join set owns them, a cancellation token stops them).
//!
//! Invariant: a job is acknowledged only after the Postgres transition it caused has
//! committed and its follow-up jobs are enqueued. A job that finds its task or step not in
//! the expected state is acknowledged and dropped: someone else already did the work.

mod plan;
mod recorder;
mod step;

use std::{sync::Arc, time::Duration};

use agents::{AgentCatalog, AgentRunner};
use planner::{PlanLimits, Planner};
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::queue::{Delivery, Dispatcher, JobKind, JobSource};
use crate::store::ExecutionStore;

/// How long one read waits for new jobs before the loop looks around (shutdown, reclaim).
const FETCH_BLOCK: Duration = Duration::from_secs(1);
/// The most jobs taken in one read, so one worker does not hoard a burst.
const FETCH_BATCH: usize = 64;

/// Everything a worker needs, shared by all its jobs.
pub struct WorkerDeps {
    pub store: Arc<dyn ExecutionStore>,
    pub dispatcher: Arc<dyn Dispatcher>,
    pub source: Arc<dyn JobSource>,
    pub planner: Arc<dyn Planner>,
    pub plan_limits: PlanLimits,
    pub agents: Arc<AgentCatalog>,
    pub runner: AgentRunner,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Unique name of this worker: its queue consumer name and lease owner.
    pub id: String,
    pub concurrency: usize,
    pub lease: Duration,
    pub visibility_timeout: Duration,
    pub shutdown_grace: Duration,
}

pub struct Worker {
    deps: Arc<WorkerDeps>,
    config: WorkerConfig,
}

impl Worker {
    pub fn new(deps: Arc<WorkerDeps>, config: WorkerConfig) -> Self {
        Self { deps, config }
    }

    /// Runs until `shutdown` fires, then lets in-flight jobs finish for the grace period.
    pub async fn run(self, shutdown: CancellationToken) {
        let semaphore = Arc::new(Semaphore::new(self.config.concurrency));
        let mut jobs = JoinSet::new();
        // Reclaim at a fraction of the visibility timeout so a dead worker's jobs wait at
        // most about 1.5 timeouts.
        let reclaim_every = self.config.visibility_timeout / 2;
        let mut next_reclaim = Instant::now();
        let mut backoff = Backoff::default();
        tracing::info!(worker = %self.config.id, concurrency = self.config.concurrency, "worker started");

        loop {
            while jobs.try_join_next().is_some() {}
            let first = tokio::select! {
                permit = semaphore.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                _ = shutdown.cancelled() => break,
            };
            let capacity = (1 + semaphore.available_permits()).min(FETCH_BATCH);

            let fetched = if Instant::now() >= next_reclaim {
                next_reclaim = Instant::now() + reclaim_every;
                self.deps.source.reclaim(&self.config.id, capacity).await
            } else {
                tokio::select! {
                    r = self.deps.source.fetch(&self.config.id, capacity, FETCH_BLOCK) => r,
                    _ = shutdown.cancelled() => break,
                }
            };
            let deliveries = match fetched {
                Ok(d) => {
                    backoff.reset();
                    d
                }
                Err(e) => {
                    let pause = backoff.next();
                    tracing::warn!(error = %e, retry_in = ?pause, "cannot read jobs from the queue");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };

            let mut first = Some(first);
            for delivery in deliveries {
                // Only this loop takes permits, so the ones counted above are still free.
                let permit = match first.take() {
                    Some(p) => p,
                    None => semaphore.clone().try_acquire_owned().expect("permits were counted before the read"),
                };
                let deps = self.deps.clone();
                let config = self.config.clone();
                jobs.spawn(async move {
                    handle(&deps, &config, delivery).await;
                    drop(permit);
                });
            }
        }

        tracing::info!(worker = %self.config.id, in_flight = jobs.len(), "worker draining");
        let drained =
            tokio::time::timeout(self.config.shutdown_grace, async { while jobs.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            // Unacknowledged jobs go back to the queue after the visibility timeout and their
            // leases expire, so aborting loses no work.
            tracing::warn!(worker = %self.config.id, aborted = jobs.len(), "drain deadline passed");
            jobs.shutdown().await;
        }
        tracing::info!(worker = %self.config.id, "worker stopped");
    }
}

/// Runs one delivery and acknowledges it unless it must be retried.
async fn handle(deps: &WorkerDeps, config: &WorkerConfig, delivery: Delivery) {
    let job = match delivery.job {
        Ok(job) => job,
        Err(reason) => {
            tracing::error!(delivery = %delivery.id, %reason, "refusing a job that failed verification");
            ack(deps, &delivery.id).await;
            return;
        }
    };
    let outcome = match (job.kind, job.step) {
        (JobKind::Plan, _) => plan::run(deps, config, job.task).await,
        (JobKind::Step, Some(step)) => step::run(deps, config, job.task, step).await,
        (JobKind::Step, None) => Ok(()), // decode() refuses these; nothing to run
    };
    match outcome {
        Ok(()) => ack(deps, &delivery.id).await,
        // Not acknowledged: the queue redelivers it after the visibility timeout, and the
        // conditional transitions make that safe.
        Err(e) => {
            tracing::error!(task = %job.task, step = ?job.step, error = %e, "job failed; it will be redelivered")
        }
    }
}

async fn ack(deps: &WorkerDeps, delivery_id: &str) {
    if let Err(e) = deps.source.ack(delivery_id).await {
        tracing::warn!(delivery = %delivery_id, error = %e, "could not acknowledge a job; it will be redelivered");
    }
}

/// Errors that leave a job unacknowledged, for redelivery.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    #[error(transparent)]
    Record(agents::run::RecordError),
}

/// Exponential backoff with jitter, capped, for infrastructure errors.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let base = Duration::from_millis(100) * 2u32.saturating_pow(self.failures.min(6));
        let capped = base.min(Duration::from_secs(5));
        capped.mul_f64(rand::random_range(0.5..1.0))
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}
