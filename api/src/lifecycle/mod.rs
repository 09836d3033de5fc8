//! Every transition of a task or a step, and everything that follows from it.
//!
//! [`table::TABLE`] lists the transitions as (event, from) → (to, writes, effects). The
//! worker and the HTTP handlers never change a state themselves: they report what happened
//! (a claim, an agent's outcome, a cancel request) to [`Lifecycle`], which has the store
//! perform the conditional write of the matching rule (its writes commit with it) and then
//! applies the rule's effects in one place, [`Lifecycle::apply`]. A write that finds the work
//! in another state (a lost lease, a duplicate job) changes nothing and has no effects.

pub mod table;

use std::{sync::Arc, time::Duration};

use memory::NewMemory;

pub use self::table::{Effect, Event, Rule, State, Write, rule};
use crate::{
    coordination::Coordination,
    domain::{Priority, StepId, TaskId, TaskStatus},
    metrics::Metrics,
    queue::{Dispatcher, Job, QueueError},
    store::{
        ApprovalDecision, AwaitOutcome, CancelOutcome, CapacityClaim, DecideOutcome, ExecutionStore, FailOutcome,
        Lease, NewApproval, NewStep, PlanOrigin, Release, RetryOutcome, StepClaim, StoreError, Unclaimed,
    },
};

/// Namespace of the memories that completed tasks leave behind.
pub const TASK_RESULTS_NAMESPACE: &str = "task-results";
/// Longest memory a task result becomes (the memory API's own limit).
const MAX_MEMORY_CHARS: usize = 8000;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transition committed but its jobs could not be enqueued: the caller leaves its
    /// own job unacknowledged, and a redelivery (or the reconciler) enqueues them again.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Applies transitions: the store writes them, this applies what follows.
pub struct Lifecycle {
    store: Arc<dyn ExecutionStore>,
    dispatcher: Arc<dyn Dispatcher>,
    coordination: Arc<dyn Coordination>,
    metrics: Arc<Metrics>,
    memory: Arc<dyn memory::MemoryStore>,
    settings: LifecycleSettings,
}

/// The deployment's choices that transitions depend on.
#[derive(Debug, Clone, Copy)]
pub struct LifecycleSettings {
    /// Store each completed task's result as a memory of its user.
    pub remember_results: bool,
    /// How long a completed step's warm context is kept (`WARM_CONTEXT_TTL_SECS`).
    pub warm_context_ttl: Duration,
    /// How long a call waits for a person before it counts as denied
    /// (`APPROVAL_TIMEOUT_SECS`).
    pub approval_timeout: Duration,
}

/// What a committed transition hands to its effects.
#[derive(Debug, Default)]
pub struct Committed<'a> {
    pub task: TaskId,
    pub user: &'a str,
    pub priority: Priority,
    /// The step, its agent and attempt, for step events.
    pub step: Option<(StepId, &'a str, i32)>,
    /// Steps that became ready.
    pub ready: Vec<StepId>,
    /// A retried step's next attempt and backoff.
    pub retry: Option<(i32, Duration)>,
    /// A completed task's description and result.
    pub result: Option<(&'a str, String)>,
    /// The user's oldest task waiting for capacity, when the ending statement already
    /// looked (`None`: `WakeWaiting` looks itself).
    pub waiting: Option<Option<(TaskId, Priority)>>,
    /// A completed step's warm context, with the task hash and the step's position.
    pub warm: Option<(&'a str, i32, agents::WarmContext)>,
}

/// What became of a step's attempt, as the worker saw it.
#[derive(Debug)]
pub enum StepOutcome {
    Completed {
        output: String,
        messages: Vec<(String, String)>,
        /// What the step leaves for a warm start of the same work; `None` keeps nothing.
        warm: Option<agents::WarmContext>,
    },
    /// The attempt failed; `retry_after` is set when another attempt may fix it.
    Failed {
        error: String,
        retry_after: Option<Duration>,
    },
    OverBudget {
        error: String,
    },
    /// The task was cancelled while the step ran.
    Cancelled,
    /// The worker is shutting down: the step goes to another worker.
    Released,
    /// The agent ran its turns for one stay: the step queues again, to continue from its
    /// checkpoint.
    Yielded,
    /// Calls of the agent's last turn wait for a person's decision.
    AwaitingApproval(Vec<agents::ApprovalRequest>),
}

/// How a step outcome was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The rule of this event was applied.
    Applied(Event),
    /// The lease was lost (or the step already moved on): nothing was written.
    Stale,
}

impl Lifecycle {
    pub fn new(
        store: Arc<dyn ExecutionStore>,
        dispatcher: Arc<dyn Dispatcher>,
        coordination: Arc<dyn Coordination>,
        metrics: Arc<Metrics>,
        memory: Arc<dyn memory::MemoryStore>,
        settings: LifecycleSettings,
    ) -> Self {
        Self { store, dispatcher, coordination, metrics, memory, settings }
    }

    /// `Submit`: the task was inserted; it needs its plan job. Should the enqueue fail, the
    /// task is still pending in Postgres and the reconciler enqueues it.
    pub async fn submitted(&self, task: TaskId, user: &str, priority: Priority) -> Result<(), LifecycleError> {
        self.apply(Event::Submit, &Committed { task, user, priority, ..Default::default() }).await
    }

    /// `SavePlan`: planning → running with the steps.
    pub async fn save_plan(
        &self,
        task: TaskId,
        user: &str,
        priority: Priority,
        lease: &Lease,
        steps: &[NewStep],
        origin: PlanOrigin<'_>,
    ) -> Result<Settled, LifecycleError> {
        let Some(ready) = self.store.save_plan(task, lease, steps, origin).await? else {
            return Ok(Settled::Stale);
        };
        self.apply(Event::SavePlan, &Committed { task, user, priority, ready, ..Default::default() }).await?;
        Ok(Settled::Applied(Event::SavePlan))
    }

    /// `FailPlanning` or `PlanningOverBudget`: planning → failed.
    pub async fn fail_planning(
        &self,
        task: TaskId,
        user: &str,
        lease: &Lease,
        error: &str,
        over_budget: bool,
    ) -> Result<Settled, LifecycleError> {
        let (event, failed) = if over_budget {
            (Event::PlanningOverBudget, self.store.fail_planning_over_budget(task, lease, error).await?)
        } else {
            (Event::FailPlanning, self.store.fail_planning(task, lease, error).await?)
        };
        if !failed {
            return Ok(Settled::Stale);
        }
        self.apply(event, &Committed { task, user, ..Default::default() }).await?;
        Ok(Settled::Applied(event))
    }

    /// `ClaimPlanning` within the user's running-task cap, or `WaitForCapacity` when the user
    /// is at it (`cap` 0: no cap). A takeover with no planning attempt left is
    /// `PlanningExhausted` instead, and its effects are applied here.
    pub async fn claim_planning(&self, task: TaskId, lease: &Lease, cap: u32) -> Result<CapacityClaim, LifecycleError> {
        let claimed = self.store.claim_planning_within_cap(task, lease, cap).await?;
        if let CapacityClaim::Exhausted { user_id } = &claimed {
            self.apply(Event::PlanningExhausted, &Committed { task, user: user_id, ..Default::default() }).await?;
        }
        Ok(claimed)
    }

    /// `ClaimStep`: takes the step's lease and charges an attempt. `None` when the step is
    /// not claimable (see [`Self::step_unclaimed`]).
    pub async fn claim_step(&self, step: StepId, lease: &Lease) -> Result<Option<StepClaim>, LifecycleError> {
        Ok(self.store.claim_step(step, lease).await?)
    }

    /// Settles a step attempt: completes, retries, fails, stops or releases it.
    pub async fn settle_step(
        &self,
        claim: &StepClaim,
        lease: &Lease,
        outcome: StepOutcome,
    ) -> Result<Settled, LifecycleError> {
        let mut committed = Committed {
            task: claim.task_id,
            user: &claim.user_id,
            priority: claim.priority,
            step: Some((claim.step_id, &claim.agent, claim.attempt)),
            ..Default::default()
        };
        let event = match outcome {
            StepOutcome::Completed { output, messages, warm } => {
                let Some(done) = self.store.complete_step_with_messages(claim, lease, &output, &messages).await? else {
                    return Ok(Settled::Stale);
                };
                committed.warm = warm.zip(claim.task_hash.as_deref()).map(|(w, hash)| (hash, claim.position, w));
                committed.ready = done.ready;
                committed.waiting = done.waiting;
                match done.task_status {
                    Some(TaskStatus::Completed) => {
                        committed.result = Some((&claim.task_description, done.task_result.unwrap_or_default()));
                        Event::CompleteLastStep
                    }
                    Some(TaskStatus::Partial) => Event::CompleteStepEndsPartial,
                    Some(_) => Event::CompleteStepEndsFailed,
                    None => Event::CompleteStep,
                }
            }
            StepOutcome::Failed { error, retry_after } => {
                match self.store.fail_step(claim, lease, &error, retry_after).await? {
                    FailOutcome::Retrying { next_attempt } => {
                        committed.retry = Some((next_attempt, retry_after.unwrap_or_default()));
                        Event::RetryStep
                    }
                    FailOutcome::Failed => Event::FailStep,
                    FailOutcome::FailedBranch => Event::FailBranch,
                    FailOutcome::FailedPartial => Event::FailStepEndsPartial,
                    FailOutcome::LeaseLost => return Ok(Settled::Stale),
                }
            }
            StepOutcome::OverBudget { error } => match self.store.fail_step_over_budget(claim, lease, &error).await? {
                FailOutcome::Failed => Event::StepOverBudget,
                FailOutcome::Retrying { .. }
                | FailOutcome::FailedBranch
                | FailOutcome::FailedPartial
                | FailOutcome::LeaseLost => return Ok(Settled::Stale),
            },
            StepOutcome::Cancelled => {
                if !self.store.cancel_step(claim, lease).await? {
                    return Ok(Settled::Stale);
                }
                Event::StopCancelledStep
            }
            StepOutcome::Released => {
                if !self.store.release_step(claim, lease, Release::Shutdown).await? {
                    return Ok(Settled::Stale);
                }
                Event::ReleaseStep
            }
            StepOutcome::Yielded => {
                if !self.store.release_step(claim, lease, Release::Yield).await? {
                    return Ok(Settled::Stale);
                }
                Event::YieldStep
            }
            StepOutcome::AwaitingApproval(requests) => {
                let calls: Vec<NewApproval> = requests
                    .into_iter()
                    .map(|r| NewApproval {
                        id: uuid::Uuid::now_v7(),
                        turn: i32::try_from(r.turn).unwrap_or(i32::MAX),
                        tool_call_id: r.call.id,
                        tool: r.call.name,
                        arguments: r.call.arguments,
                    })
                    .collect();
                match self.store.await_approval(claim, lease, &calls, self.settings.approval_timeout).await? {
                    AwaitOutcome::Waiting => Event::AwaitApproval,
                    AwaitOutcome::LeaseLost => return Ok(Settled::Stale),
                    // Nobody will decide for an ended task: the step stops as a cancelled one.
                    AwaitOutcome::TaskEnded => {
                        if !self.store.cancel_step(claim, lease).await? {
                            return Ok(Settled::Stale);
                        }
                        Event::StopCancelledStep
                    }
                }
            }
        };
        self.apply(event, &committed).await?;
        Ok(Settled::Applied(event))
    }

    /// A step job found nothing to claim: `StepExhausted` when the step's lease expired with
    /// no attempt left, otherwise nothing.
    pub async fn step_unclaimed(&self, task: TaskId, step: StepId) -> Result<Unclaimed, LifecycleError> {
        let unclaimed = self.store.settle_unclaimed_step(task, step).await?;
        if let Unclaimed::Exhausted { user_id } = &unclaimed {
            self.apply(Event::StepExhausted, &Committed { task, user: user_id, ..Default::default() }).await?;
        }
        Ok(unclaimed)
    }

    /// `PlanningDeadLettered` or `StepDeadLettered`: the work of a poison job fails. `false`
    /// when there was nothing left to fail.
    pub async fn dead_lettered(&self, job: &Job, error: &str) -> Result<bool, LifecycleError> {
        let Some(user) = self.store.fail_dead_lettered(job.task(), job.step_id(), error).await? else {
            return Ok(false);
        };
        let event = if job.step_id().is_some() { Event::StepDeadLettered } else { Event::PlanningDeadLettered };
        self.apply(event, &Committed { task: job.task(), user: &user, ..Default::default() }).await?;
        Ok(true)
    }

    /// `Cancel`: ends a task that has not ended.
    pub async fn cancel(&self, task: TaskId, user: &str) -> Result<CancelOutcome, LifecycleError> {
        let outcome = self.store.cancel_task(task).await?;
        if outcome == CancelOutcome::Cancelled {
            self.apply(Event::Cancel, &Committed { task, user, ..Default::default() }).await?;
        }
        Ok(outcome)
    }

    /// `Retry` or `RetryPlanning`: runs a failed task again from where it failed. The jobs
    /// are best effort: the task already runs again in Postgres and the reconciler enqueues
    /// its work should they be lost.
    pub async fn retry(&self, task: TaskId, user: &str) -> Result<RetryOutcome, LifecycleError> {
        let outcome = self.store.retry_task(task).await?;
        if let RetryOutcome::Retried { priority, replan, ready, .. } = &outcome {
            let event = if *replan { Event::RetryPlanning } else { Event::Retry };
            let committed = Committed { task, user, priority: *priority, ready: ready.clone(), ..Default::default() };
            if let Err(e) = self.apply(event, &committed).await {
                tracing::warn!(%task, error = %e, "could not enqueue a retried task's work; the reconciler will");
            }
        }
        Ok(outcome)
    }

    /// `DecideApproval`, `ResumeStep` or `ResumeTask`: records a person's decision (or an
    /// expiry) on a waiting call, and queues the step once none of its calls waits.
    pub async fn decide(
        &self,
        task: TaskId,
        call: uuid::Uuid,
        decision: &ApprovalDecision,
    ) -> Result<DecideOutcome, LifecycleError> {
        let outcome = self.store.decide_approval(task, call, decision).await?;
        if let DecideOutcome::Decided(d) = &outcome {
            let event = match (d.step_ready, d.task_running) {
                (false, _) => Event::DecideApproval,
                (true, false) => Event::ResumeStep,
                (true, true) => Event::ResumeTask,
            };
            let ready = if d.step_ready { vec![d.step] } else { Vec::new() };
            self.apply(event, &Committed { task, user: &d.user_id, priority: d.priority, ready, ..Default::default() })
                .await?;
        }
        Ok(outcome)
    }

    /// Applies the effects of `event`'s rule to a transition that has committed. Enqueue
    /// failures are returned (after the other effects): the caller's job stays unacknowledged
    /// so the jobs are enqueued again.
    pub async fn apply(&self, event: Event, c: &Committed<'_>) -> Result<(), LifecycleError> {
        let rule = rule(event);
        let mut enqueue_error = None;
        for effect in rule.effects {
            let enqueued = match *effect {
                Effect::EnqueuePlan => self.dispatcher.enqueue(&[Job::plan(c.task, c.priority)]).await,
                Effect::EnqueueReady => {
                    let jobs: Vec<Job> = c.ready.iter().map(|&s| Job::step(c.task, s, 1, c.priority)).collect();
                    self.dispatcher.enqueue(&jobs).await
                }
                Effect::EnqueueRetry => match (c.step, c.retry) {
                    (Some((step, ..)), Some((attempt, delay))) => {
                        let job = Job::step(c.task, step, attempt as u32, c.priority);
                        self.dispatcher.enqueue_after(&job, delay).await
                    }
                    _ => Ok(()),
                },
                Effect::EnqueueAgain => match c.step {
                    Some((step, _, attempt)) => {
                        self.dispatcher.enqueue(&[Job::step(c.task, step, attempt as u32, c.priority)]).await
                    }
                    None => Ok(()),
                },
                Effect::WakeWaiting => {
                    let dispatcher = self.dispatcher.as_ref();
                    match c.waiting {
                        Some(waiting) => crate::budget::capacity::wake(dispatcher, c.user, waiting).await,
                        None => crate::budget::capacity::wake_waiting(self.store.as_ref(), dispatcher, c.user).await,
                    }
                    Ok(())
                }
                Effect::BroadcastCancel => {
                    // Should this message be lost, the workers' lease renewal notices the
                    // cancelled status.
                    if let Err(e) = self.coordination.publish_cancel(c.task).await {
                        tracing::warn!(task = %c.task, error = %e, "cancel broadcast failed; workers notice at their next lease renewal");
                    }
                    Ok(())
                }
                Effect::RememberResult => {
                    if let Some((description, result)) = &c.result {
                        self.remember(c.task, c.user, description, result).await;
                    }
                    Ok(())
                }
                // Both wake the same waiters, which then read the task's status.
                Effect::AnnounceEnd | Effect::AnnounceAction => {
                    self.store.announce_end(c.task);
                    Ok(())
                }
                Effect::KeepWarmContext => {
                    if let Some((hash, position, warm)) = &c.warm
                        && let Err(e) = self
                            .coordination
                            .save_warm_context(hash, *position, warm, self.settings.warm_context_ttl)
                            .await
                    {
                        // Only the next start of the same work is colder.
                        tracing::warn!(task = %c.task, error = %e, "could not keep the step's warm context");
                    }
                    Ok(())
                }
                Effect::CountSubmit => {
                    self.metrics.tasks_submitted.with_label_values(&[c.priority.as_str()]).inc();
                    Ok(())
                }
                Effect::CountTask => {
                    if let Some(status) = rule.task_status() {
                        self.metrics.tasks_finished.with_label_values(&[status.as_str()]).inc();
                    }
                    Ok(())
                }
                Effect::CountStep(status) => {
                    if let Some((_, agent, _)) = c.step {
                        self.metrics.steps_finished.with_label_values(&[agent, status]).inc();
                    }
                    Ok(())
                }
            };
            if let Err(e) = enqueued {
                enqueue_error.get_or_insert(e);
            }
        }
        match enqueue_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Keeps a completed task's result as a memory of its user, when configured. Memory
    /// helps but is not essential: a failure is logged.
    async fn remember(&self, task: TaskId, user: &str, description: &str, result: &str) {
        if !self.settings.remember_results || result.trim().is_empty() {
            return;
        }
        let mut metadata = serde_json::Map::new();
        metadata.insert("kind".into(), "task_result".into());
        metadata.insert("task_id".into(), task.to_string().into());
        let memory = NewMemory {
            owner: user.to_owned(),
            namespace: TASK_RESULTS_NAMESPACE.into(),
            content: format!("{description}\n\n{result}").chars().take(MAX_MEMORY_CHARS).collect(),
            metadata,
            source_task: Some(task.0),
        };
        if let Err(e) = self.memory.store(memory).await {
            tracing::warn!(%task, error = %e, "could not store the task's result as a memory");
        }
    }
}
