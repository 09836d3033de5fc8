//! The worker runtime: reads jobs from the queue and runs up to `concurrency` of them at
//! once (a semaphore bounds them, a join set owns them, a cancellation token stops them).
//!
//! Invariants:
//! - a job is acknowledged only after the Postgres transition it caused has committed and
//!   its follow-up jobs are enqueued; a job that finds its task or step not in the expected
//!   state is acknowledged and dropped, because someone else already did the work;
//! - on shutdown the loop stops reading, in-flight jobs get a grace period, and steps still
//!   running after it are released (ready again, attempt not charged) and re-enqueued, so
//!   another worker takes them at once instead of after a lease expiry;
//! - a plan job whose user is at the running-task cap is acknowledged at once, leaving the
//!   task waiting to be woken (`crate::budget::capacity`), so waiting tasks never hold a
//!   worker slot nor a job.

mod inflight;
mod lease;
mod maintenance;
mod plan;
mod recorder;
mod step;

pub use crate::backoff::delay as backoff_delay;

use std::{sync::Arc, time::Duration};

use agents::{AgentCatalog, AgentRunner, PriceTable};
use planner::PlanLimits;
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::inflight::InFlight;
use crate::backoff::Backoff;
use crate::{
    coordination::Coordination,
    lifecycle::Lifecycle,
    providers::TaskPlanner,
    queue::{Delivery, Dispatcher, Job, JobSource},
    store::ExecutionStore,
};

/// How long one read waits for new jobs before the loop looks around (shutdown, reclaim).
const FETCH_BLOCK: Duration = Duration::from_secs(1);
/// The most jobs taken in one read, so one worker does not hoard a burst.
const FETCH_BATCH: usize = 64;

/// Everything a worker needs, shared by all its jobs.
pub struct WorkerDeps {
    pub store: Arc<dyn ExecutionStore>,
    /// Every transition the worker's jobs cause goes through it.
    pub lifecycle: Arc<Lifecycle>,
    pub dispatcher: Arc<dyn Dispatcher>,
    pub source: Arc<dyn JobSource>,
    pub coordination: Arc<dyn Coordination>,
    pub planner: Arc<TaskPlanner>,
    pub plan_limits: PlanLimits,
    pub agents: Arc<AgentCatalog>,
    /// Prices planning calls; the runner prices the agents' calls itself.
    pub prices: Arc<PriceTable>,
    /// Long-term memory: relevant items go into step prompts, results may be stored.
    pub memory: Arc<dyn memory::MemoryStore>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Memories put in each step's prompt; 0 puts none.
    pub memory_context_items: usize,
    pub runner: AgentRunner,
    /// Tools whose calls wait for a person's approval in every task (`TOOLS_REQUIRE_APPROVAL`).
    pub tools_require_approval: Vec<String>,
    /// Sends the webhooks of ended tasks, as one of the worker's background duties.
    pub webhooks: Arc<crate::webhooks::WebhookSender>,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Unique name of this worker: its queue consumer name and lease owner.
    pub id: String,
    pub concurrency: usize,
    pub lease: Duration,
    pub visibility_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Longest a step attempt may run before it counts as failed.
    pub step_timeout: Duration,
    /// First retry delay of a failed step; doubles per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub reconcile_interval: Duration,
    /// Work untouched this long without a job is re-enqueued by the reconciler.
    pub reconcile_min_age: Duration,
    /// Budgets, quotas and the per-user running-task cap.
    pub budgets: crate::budget::BudgetConfig,
    /// Deliveries of one job before it is dead-lettered and its work failed.
    pub max_deliveries: u64,
}

pub struct Worker {
    deps: Arc<WorkerDeps>,
    config: Arc<WorkerConfig>,
}

/// What one job handler sees.
pub(crate) struct JobContext<'a> {
    deps: &'a WorkerDeps,
    config: &'a WorkerConfig,
    delivery: &'a Delivery,
    /// Fires when the job's task is cancelled.
    cancelled: CancellationToken,
    /// Fires when the worker's grace period is over: let go of the work.
    released: CancellationToken,
}

impl Worker {
    pub fn new(deps: Arc<WorkerDeps>, config: WorkerConfig) -> Self {
        Self { deps, config: Arc::new(config) }
    }

    /// Runs until `shutdown` fires, then lets in-flight jobs finish for the grace period and
    /// releases what is left.
    pub async fn run(self, shutdown: CancellationToken) {
        let semaphore = Arc::new(Semaphore::new(self.config.concurrency));
        let inflight = InFlight::default();
        let release = CancellationToken::new();
        let mut jobs = JoinSet::new();
        let maintenance = maintenance::spawn(self.deps.clone(), self.config.clone(), inflight.clone());
        // Reclaim at a fraction of the visibility timeout, so a dead worker's jobs wait at
        // most about 1.5 timeouts.
        let reclaim_every = self.config.visibility_timeout / 2;
        let mut next_reclaim = Instant::now();
        let mut backoff = Backoff::default();
        tracing::info!(worker = %self.config.id, concurrency = self.config.concurrency, "worker started");

        loop {
            while jobs.try_join_next().is_some() {}
            let first = tokio::select! {
                biased; // shutdown first: a free permit must not keep the loop reading
                _ = shutdown.cancelled() => break,
                permit = semaphore.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let capacity = (1 + semaphore.available_permits()).min(FETCH_BATCH);

            let fetched = if Instant::now() >= next_reclaim {
                next_reclaim = Instant::now() + reclaim_every;
                self.deps.source.reclaim(&self.config.id, capacity).await
            } else {
                // Never abandoned half-way, even at shutdown: Redis would still hand the next
                // job to this blocked read and the job would sit with a consumer that is gone
                // until the visibility timeout. The read ends within FETCH_BLOCK, and what it
                // returns is run as part of the drain.
                self.deps.source.fetch(&self.config.id, capacity, FETCH_BLOCK).await
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
                let (deps, config, inflight, release) =
                    (self.deps.clone(), self.config.clone(), inflight.clone(), release.clone());
                jobs.spawn(async move {
                    handle(&deps, &config, &inflight, delivery, release).await;
                    drop(permit);
                });
            }
        }

        tracing::info!(worker = %self.config.id, in_flight = jobs.len(), "worker draining");
        let drain = async { while jobs.join_next().await.is_some() {} };
        if tokio::time::timeout(self.config.shutdown_grace, drain).await.is_err() {
            tracing::warn!(worker = %self.config.id, left = jobs.len(), "grace period over: releasing running steps");
            release.cancel();
            while jobs.join_next().await.is_some() {}
        }
        maintenance.stop().await;
        tracing::info!(worker = %self.config.id, "worker stopped");
    }
}

/// Runs one delivery and acknowledges it unless it must be retried.
async fn handle(
    deps: &WorkerDeps,
    config: &WorkerConfig,
    inflight: &InFlight,
    delivery: Delivery,
    released: CancellationToken,
) {
    let job = match &delivery.job {
        Ok(job) => *job,
        Err(reason) => {
            tracing::error!(delivery = %delivery.id, %reason, "refusing a job that failed verification");
            ack(deps, &delivery).await;
            return;
        }
    };
    // Handed out more often than allowed: every earlier delivery failed or killed its
    // worker before it could be acknowledged. Set aside without running it again.
    if delivery.deliveries > config.max_deliveries {
        let reason =
            format!("delivered {} times without an outcome; the last worker died with it", delivery.deliveries);
        dead_letter(deps, &delivery, &job, &reason).await;
        return;
    }
    let (_registration, cancelled) = inflight.register(&delivery.id, job);
    let ctx = JobContext { deps, config, delivery: &delivery, cancelled, released };
    // Every log line of the job carries its task and step.
    let span = tracing::info_span!("job", task = %job.task(), step = ?job.step_id().map(|s| s.to_string()), attempt = job.attempt());
    let outcome = async {
        match job {
            Job::Plan { .. } => plan::run(&ctx, &job).await,
            Job::Step { task, step, .. } => step::run(&ctx, task, step).await,
        }
    }
    .instrument(span)
    .await;
    match outcome {
        Ok(()) => ack(deps, &delivery).await,
        // The last delivery allowed failed too: set the job aside and fail its work.
        Err(e) if delivery.deliveries >= config.max_deliveries => {
            let reason = format!("failed on each of {} deliveries; the last error: {e}", delivery.deliveries);
            dead_letter(deps, &delivery, &job, &reason).await;
        }
        // Not acknowledged: the queue redelivers it after the visibility timeout, and the
        // conditional transitions make that safe.
        Err(e) => {
            tracing::error!(task = %job.task(), step = ?job.step_id(), deliveries = delivery.deliveries, error = %e, "job failed; it will be redelivered")
        }
    }
}

/// Fails the work `job` names with a clear error (through the lifecycle), then moves the
/// job to the dead-letter stream (acknowledging it). When the failure cannot be written (the
/// very fault that made the job fail may be the database), the job stays pending for one
/// more try, so no work is dropped without its task saying why.
async fn dead_letter(deps: &WorkerDeps, delivery: &Delivery, job: &Job, reason: &str) {
    let error = format!("the job was dead-lettered: {reason}");
    if let Err(e) = deps.lifecycle.dead_lettered(job, &error).await {
        tracing::error!(task = %job.task(), step = ?job.step_id(), error = %e, "could not fail the work of a poison job; it stays pending");
        return;
    }
    match deps.source.dead_letter(delivery, reason).await {
        Ok(()) => {
            deps.metrics.jobs_dead_lettered.with_label_values(&[job.kind()]).inc();
            tracing::error!(task = %job.task(), step = ?job.step_id(), deliveries = delivery.deliveries, %reason, "job dead-lettered; its work failed");
        }
        Err(e) => {
            tracing::warn!(delivery = %delivery.id, error = %e, "could not move a poison job to the dead letters")
        }
    }
}

async fn ack(deps: &WorkerDeps, delivery: &Delivery) {
    if let Err(e) = deps.source.ack(delivery).await {
        tracing::warn!(delivery = %delivery.id, error = %e, "could not acknowledge a job; it will be redelivered");
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
    Lifecycle(#[from] crate::lifecycle::LifecycleError),
    #[error(transparent)]
    Record(agents::run::RecordError),
}
