//! Persistence. Postgres is the truth: every state transition is one conditional UPDATE
//! (`WHERE status = <expected>`, and for leased work `AND lease_token = <ours>`), so a
//! duplicate or stale job can never run a step twice or move a finished one.
//!
//! Handlers and the worker see only the traits below; `postgres` implements them. An
//! embedded store (SQLite, for a dependency-free dev mode) would implement the same traits.

mod budget;
mod plans;
mod postgres;
mod types;
mod webhooks;

pub use budget::*;
pub use plans::*;
pub use postgres::PgStore;
pub use types::*;
pub use webhooks::{
    AttemptResult, AttemptRow, Claim, ClaimedDelivery, DeliveryStatus, DeliverySummary, NextStep, Outbox, SecretRow,
    SecretStore, WebhookEvent,
};

use std::time::Duration;

use agents::{LlmCallRecord, ToolCallRecord};

use crate::domain::{StepId, TaskId, TaskStatus};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A row violated an invariant the code relies on (e.g. an unknown status string).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The store cannot take writes (its batching task has stopped: the process is exiting).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<crate::domain::UnknownState> for StoreError {
    fn from(e: crate::domain::UnknownState) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// What the HTTP API reads and writes.
#[async_trait::async_trait]
pub trait TaskStore: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), StoreError>;
    /// Inserts the task and its `task_created` event atomically, or finds the task already
    /// created under the same idempotency key.
    async fn create_task(&self, task: &NewTask) -> Result<CreateOutcome, StoreError>;
    async fn task(&self, id: TaskId) -> Result<Option<TaskDetail>, StoreError>;
    /// The user a task belongs to, `None` when it does not exist: the access check of the
    /// routes under `/tasks/{id}`.
    async fn task_owner(&self, id: TaskId) -> Result<Option<String>, StoreError>;
    /// The task's status alone, `None` when it does not exist: what a waiting request checks
    /// on each wake-up, so that only the end costs a full read.
    async fn task_status(&self, id: TaskId) -> Result<Option<TaskStatus>, StoreError>;
    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage, StoreError>;
    /// What a follow-up of `parent` starts from besides the parent itself: up to `earlier`
    /// tasks before it on its branch of the thread, and the last `recent_work` assistant and
    /// tool messages of its steps.
    async fn thread_history(&self, parent: TaskId, earlier: i64, recent_work: i64)
    -> Result<ThreadHistory, StoreError>;
    /// The task's cost from its `llm_calls` rows: totals, per step and per model. `None`
    /// when the task does not exist.
    async fn task_cost(&self, id: TaskId) -> Result<Option<CostReport>, StoreError>;
    /// How many tasks are pending, planning and running (an index-only count).
    async fn unfinished_counts(&self) -> Result<Vec<(TaskStatus, i64)>, StoreError>;
    /// The task's tool calls in the order they were made.
    async fn tool_calls(&self, id: TaskId) -> Result<Option<Vec<ToolCallRow>>, StoreError>;
    /// Appends (role, content) messages to a pending task's context (its short-term memory
    /// that every step sees), keeping it at most [`STEP_CONTEXT_MESSAGES`] long.
    async fn add_context(&self, id: TaskId, messages: &[(String, String)]) -> Result<AddContext, StoreError>;
    /// The task's tool calls that waited (or wait) for a person, oldest first, as `filter`
    /// says.
    async fn approvals(&self, task: TaskId, filter: ApprovalFilter) -> Result<Vec<ApprovalRow>, StoreError>;
    /// Where a stream of the task's events starts: after the event `after` (its id), or from
    /// the first event when `None`.
    async fn event_stream_start(&self, task: TaskId, after: Option<i64>) -> Result<EventStreamStart, StoreError>;
    /// The task's plan versions, oldest first (none before it is planned, nor for a task
    /// planned before versions were recorded).
    async fn plan_versions(&self, id: TaskId) -> Result<Vec<PlanVersion>, StoreError>;
    /// The task's newest plan version, if it has one.
    async fn current_plan_version(&self, id: TaskId) -> Result<Option<PlanVersion>, StoreError>;
    /// Up to `limit` of the task's events after `cursor`, in stream order. Events that a
    /// still-running transaction might yet precede are withheld (see [`EventCursor`]), so a
    /// reader that resumes from the last event it got never skips one.
    async fn task_events_after(&self, task: TaskId, cursor: EventCursor, limit: i64) -> Result<EventBatch, StoreError>;
}

/// What the worker needs: claims, results and accounting (budgets included).
#[async_trait::async_trait]
pub trait ExecutionStore: BudgetStore + Send + Sync + 'static {
    /// `pending → planning` (or takes over a planning whose lease expired).
    async fn claim_planning(&self, id: TaskId, lease: &Lease) -> Result<Option<PlanningClaim>, StoreError>;
    /// `planning → running` with the steps inserted (or, for a task that starts paused,
    /// `planning → requires_action` with none ready), recorded as a plan version made by the
    /// planner, and a fresh plan remembered in the plan cache in the same statement; returns
    /// the steps that are ready.
    async fn save_plan(&self, id: TaskId, lease: &Lease, plan: PlanSave<'_>)
    -> Result<Option<Vec<StepId>>, StoreError>;
    /// A person's edit of the plan: the steps that have not started (those waiting for
    /// others, and those skipped) give way to the edit's new steps, recorded as the next plan
    /// version, in one transaction that holds the task's row, checks the version and that
    /// nothing the edit assumed has moved.
    async fn edit_plan(&self, id: TaskId, edit: PlanEdit<'_>) -> Result<EditOutcome, StoreError>;
    /// `requires_action` (plan approval) → `running`: the steps whose dependencies completed
    /// are ready.
    async fn start_task(&self, id: TaskId) -> Result<StartOutcome, StoreError>;
    /// `planning → failed`.
    async fn fail_planning(&self, id: TaskId, lease: &Lease, error: &str) -> Result<bool, StoreError>;
    /// What a replan of the task starts from (read under its planning lease: nothing moves).
    async fn replan_context(&self, id: TaskId) -> Result<ReplanContext, StoreError>;
    /// `planning → running` with the steps that had not completed replaced by the revision's,
    /// recorded as the next plan version, in one statement fenced by the planning lease;
    /// returns the new version and the steps that are ready. `None` when the lease was lost.
    async fn save_replan(
        &self,
        id: TaskId,
        lease: &Lease,
        revision: ReplanSave<'_>,
    ) -> Result<Option<(i32, Vec<StepId>)>, StoreError>;
    /// A replan that found no revised plan: `planning →` `partial` or `failed`, as the task
    /// would have ended without replanning (fenced by the planning lease; `None` when it was
    /// lost).
    async fn end_unreplanned(&self, id: TaskId, lease: &Lease) -> Result<Option<TaskStatus>, StoreError>;
    /// Ends a task that has not ended: its waiting steps are cancelled at once, its running
    /// steps stop at their next model or tool call.
    /// (`crate::lifecycle` event `Cancel`.)
    async fn cancel_task(&self, id: TaskId) -> Result<CancelOutcome, StoreError>;
    /// Re-drives a failed task from where it failed: completed steps keep their outputs,
    /// failed, skipped and cancelled ones start again with fresh attempts.
    /// (`crate::lifecycle` events `Retry`, `RetryPlanning`.)
    async fn retry_task(&self, id: TaskId) -> Result<RetryOutcome, StoreError>;
    /// Pushes the planning lease's expiry forward; `false` when it is no longer held.
    async fn renew_planning_lease(&self, id: TaskId, lease: &Lease) -> Result<bool, StoreError>;
    /// `ready → running` (or takes over a running step whose lease expired), with what the
    /// agent needs to run it.
    async fn claim_step(&self, id: StepId, lease: &Lease) -> Result<Option<StepClaim>, StoreError>;
    /// Called when [`Self::claim_step`] found nothing to claim: fails the step when its lease
    /// expired with no attempt left (a taken-over lease counts as an attempt, so a step that
    /// kills its worker cannot loop forever), and tells a job of unknown work apart.
    async fn settle_unclaimed_step(&self, task: TaskId, id: StepId) -> Result<Unclaimed, StoreError>;
    /// Tells every process's subscribers of `task` that it ended (after the commit that
    /// ended it): requests waiting for the end read the task then.
    fn announce_end(&self, task: TaskId);
    /// Fails the work a dead-lettered job names (the step, or the task's planning) with
    /// `error` and the code `dead_lettered`, whatever state short of ended it is in; the
    /// step's task fails with it. Returns the task's user when something was failed.
    async fn fail_dead_lettered(
        &self,
        task: TaskId,
        step: Option<StepId>,
        error: &str,
    ) -> Result<Option<String>, StoreError>;
    /// Pushes the lease expiry forward, and says whether the task still runs.
    async fn renew_step_lease(&self, id: StepId, lease: &Lease) -> Result<LeaseState, StoreError>;
    /// `running → completed`, promotes dependants whose dependencies are all completed, and
    /// completes the task after its last step. `None` when the lease was lost.
    async fn complete_step(
        &self,
        claim: &StepClaim,
        lease: &Lease,
        output: &str,
    ) -> Result<Option<StepCompletion>, StoreError> {
        self.complete_step_with_messages(claim, lease, output, &[]).await
    }
    /// [`Self::complete_step`], appending `messages` (role, content) of the attempt to the
    /// task's short-term memory in the same round trip; they are appended even when the
    /// lease was lost, as they would have been one by one.
    async fn complete_step_with_messages(
        &self,
        claim: &StepClaim,
        lease: &Lease,
        output: &str,
        messages: &[(String, String)],
    ) -> Result<Option<StepCompletion>, StoreError>;
    /// A failed attempt: `running → ready` after `retry_after` while attempts remain (and
    /// the error is worth retrying: `Some`), otherwise `running → failed`, failing the task
    /// and skipping its unfinished steps.
    async fn fail_step(
        &self,
        claim: &StepClaim,
        lease: &Lease,
        error: &str,
        retry_after: Option<Duration>,
    ) -> Result<FailOutcome, StoreError>;
    /// `running → cancelled`, for a step that stopped because its task was cancelled.
    async fn cancel_step(&self, claim: &StepClaim, lease: &Lease) -> Result<bool, StoreError>;
    /// `running → ready` without charging an attempt: the worker is shutting down
    /// (`step_released`), or the agent yielded after its turns (`step_yielded`).
    async fn release_step(&self, claim: &StepClaim, lease: &Lease, why: Release) -> Result<bool, StoreError>;
    /// `running → waiting` for a step whose calls wait for a person (no attempt charged),
    /// with the calls recorded (`tool_approvals`, and `tool_calls` as `awaiting_approval`),
    /// the task `requires_action`, an `approval_requested` event per call and a
    /// `task.requires_action` webhook; each call expires after `timeout`.
    /// (`crate::lifecycle` event `AwaitApproval`.)
    async fn await_approval(
        &self,
        claim: &StepClaim,
        lease: &Lease,
        calls: &[NewApproval],
        timeout: Duration,
    ) -> Result<AwaitOutcome, StoreError>;
    /// Records a decision on a waiting call; the step is ready once none of its calls waits,
    /// the task runs once none of its steps does. (`crate::lifecycle` events
    /// `DecideApproval`, `ResumeStep`, `ResumeTask`.)
    async fn decide_approval(
        &self,
        task: TaskId,
        call: uuid::Uuid,
        decision: &ApprovalDecision,
    ) -> Result<DecideOutcome, StoreError>;
    /// Waiting calls past their expiry, oldest first: (task, call).
    async fn expired_approvals(&self, limit: i64) -> Result<Vec<(TaskId, uuid::Uuid)>, StoreError>;
    async fn cached_plan(&self, hash: &str) -> Result<Option<serde_json::Value>, StoreError>;
    /// Pending tasks and ready steps untouched for `min_age`, and planning tasks and running
    /// steps whose lease has expired: each should have a job. A task waiting for capacity is
    /// included only while its user is below the cap (`default_cap` unless the user has
    /// their own; 0 = no cap), oldest first.
    async fn unfinished_work(
        &self,
        min_age: Duration,
        limit: i64,
        default_cap: u32,
    ) -> Result<Vec<Unfinished>, StoreError>;
    /// Records a model call and adds it to its step's and task's totals; with a checkpoint,
    /// stores it on the step in the same statement (see [`StepCheckpoint`]).
    async fn record_llm_call(
        &self,
        task: TaskId,
        step: Option<StepId>,
        call: &LlmCallRecord,
        checkpoint: Option<&StepCheckpoint>,
    ) -> Result<(), StoreError>;
    /// Records a tool call and its `tool_called` event; with a checkpoint, stores it on the
    /// step in the same statement.
    async fn record_tool_call(
        &self,
        task: TaskId,
        step: Option<StepId>,
        call: &ToolCallRecord,
        checkpoint: Option<&StepCheckpoint>,
    ) -> Result<(), StoreError>;
    /// Appends `messages` (role, content), in order, to the task's short-term memory. With a
    /// checkpoint (whose transcript no longer holds them), only while its lease holds the
    /// step, and with the checkpoint in the same statement: a step resumed later writes
    /// each message once.
    async fn record_messages(
        &self,
        task: TaskId,
        step: Option<StepId>,
        messages: &[(String, String)],
        checkpoint: Option<&StepCheckpoint>,
    ) -> Result<(), StoreError>;
}

/// Why a running step goes back to ready without an attempt charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The worker is shutting down.
    Shutdown,
    /// The agent ran its turns for one stay (`STEP_YIELD_AFTER_TURNS`) and gave its slot back.
    Yield,
}

/// Where a step's agent loop stands (`agents::Checkpoint`, as JSON), stored on the step by
/// the statement that records the call it follows, and only while `lease_token` still holds
/// the step: a worker that lost its step cannot move the checkpoint of the one that took it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCheckpoint {
    pub lease_token: uuid::Uuid,
    pub state: serde_json::Value,
}

/// A claim on a task or step held by one worker: the token fences every later write.
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: String,
    pub token: uuid::Uuid,
    pub duration: Duration,
}

impl Lease {
    pub fn new(owner: &str, duration: Duration) -> Self {
        Self { owner: owner.to_owned(), token: uuid::Uuid::new_v4(), duration }
    }

    fn seconds(&self) -> f64 {
        self.duration.as_secs_f64()
    }
}
