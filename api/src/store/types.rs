//! Rows and queries exchanged with the store.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::{
    ApprovalStatus, Priority, RequiredAction, StepId, StepStatus, TaskErrorCode, TaskId, TaskStart, TaskStatus,
};

/// A validated task submission.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: TaskId,
    pub user_id: String,
    pub description: String,
    pub metadata: Value,
    pub priority: Priority,
    pub max_cost_usd: Option<f64>,
    pub max_tokens: Option<i64>,
    pub idempotency_key: Option<String>,
    /// Hash of the request body, to tell a replay from a conflicting reuse of a key.
    pub request_hash: String,
    /// Overrides the agents' retry policy for every step of this task.
    pub max_attempts: Option<i32>,
    pub use_plan_cache: bool,
    /// Messages that pre-seed the task's short-term memory, as (role, content).
    pub context: Vec<(String, String)>,
    /// Where the task's summary is POSTed when it ends (see `crate::webhooks`); validated.
    pub callback_url: Option<String>,
    /// The only agents the plan may use (checked against the catalog); empty: any.
    pub agent_hints: Vec<String>,
    /// A short name the client gives the kind of work (`GET /tasks?task_type=` filters on it).
    pub task_type: Option<String>,
    /// What identifies the task's work (`crate::task_hash`).
    pub task_hash: String,
    /// Start each step from what the last run of the same work left (`agents::WarmContext`).
    pub warm_start: bool,
    /// Replan when a step fails for good (the request's, or `REPLAN_ON_FAILURE`).
    pub replan: bool,
    /// Revised plans the task may get.
    pub max_replans: i32,
    /// Run once planned, or wait for `POST /tasks/{id}/start`.
    pub start: TaskStart,
    /// Tools whose calls wait for a person's approval in this task (checked against the
    /// deployment's tools).
    pub require_approval: Vec<String>,
    /// Set for a follow-up (`POST /tasks/{id}/follow-ups`): where it continues a thread.
    pub follows: Option<FollowsUp>,
}

/// Where a follow-up continues its thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowsUp {
    /// The task it follows up.
    pub parent: TaskId,
    /// The thread's first task (the parent's thread).
    pub thread: TaskId,
}

#[derive(Debug, Clone)]
pub enum CreateOutcome {
    Created(Task),
    /// The idempotency key was used before with the same body.
    Replayed(Task),
    /// The idempotency key was used before with a different body.
    KeyConflict(TaskId),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub cost_usd: f64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub tokens_cached: i64,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: TaskId,
    pub user_id: String,
    pub description: String,
    pub metadata: Value,
    pub status: TaskStatus,
    pub priority: Priority,
    pub max_cost_usd: Option<f64>,
    pub max_tokens: Option<i64>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub error_code: Option<TaskErrorCode>,
    /// Held by model calls in flight (see `crate::budget`).
    pub reserved_cost_usd: f64,
    pub reserved_tokens: i64,
    pub totals: Totals,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Where the task's summary is POSTed when it ends.
    pub callback_url: Option<String>,
    pub agent_hints: Vec<String>,
    pub task_type: Option<String>,
    pub task_hash: Option<String>,
    pub warm_start: bool,
    /// Replans when a step fails for good.
    pub replan: bool,
    pub max_replans: i32,
    /// Revised plans saved so far.
    pub replans: i32,
    pub start: TaskStart,
    /// What a person must do while the task is `requires_action`.
    pub required_action: Option<RequiredAction>,
    /// Tools whose calls wait for a person's approval in this task.
    pub require_approval: Vec<String>,
    /// The thread's first task: the task itself unless it is a follow-up.
    pub thread_id: TaskId,
    /// The task a follow-up continues; `None` for a thread's first task.
    pub parent_task_id: Option<TaskId>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: StepId,
    pub position: i32,
    pub title: String,
    pub instruction: String,
    pub agent: String,
    pub depends_on: Vec<StepId>,
    pub status: StepStatus,
    pub attempt: i32,
    pub max_attempts: i32,
    pub output: Option<String>,
    pub error: Option<String>,
    pub totals: Totals,
    /// Its failure fails the task at once.
    pub required: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct TaskDetail {
    pub task: Task,
    pub steps: Vec<Step>,
    /// The calls waiting for a person (read only while the task requires action).
    pub pending_approvals: Vec<ApprovalRow>,
}

/// Newest first; the cursor is the (created_at, id) of the last task of the previous page.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub user_id: Option<String>,
    pub status: Option<TaskStatus>,
    pub task_type: Option<String>,
    /// Only the tasks of this thread: its first task and every follow-up in it.
    pub thread_id: Option<TaskId>,
    pub after: Option<(DateTime<Utc>, TaskId)>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// Position of the last task returned, when more may follow.
    pub next: Option<(DateTime<Utc>, TaskId)>,
}

#[derive(Debug, Clone)]
pub struct PlanningClaim {
    pub description: String,
    pub priority: Priority,
    pub max_attempts: Option<i32>,
    pub use_plan_cache: bool,
    /// The only agents the plan may use; empty: any.
    pub agent_hints: Vec<String>,
    /// Set when the task owes a replan (`tasks.replan_reason`): the failure it answers. The
    /// plan job then revises the plan instead of making one.
    pub replan_reason: Option<String>,
    /// The task starts paused: once planned it waits for plan approval.
    pub paused: bool,
}

/// A step of a validated plan, ready to insert; also a step of a plan version as saved
/// (`plan_versions.steps`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewStep {
    pub id: StepId,
    pub position: i32,
    pub title: String,
    pub instruction: String,
    pub agent: String,
    pub depends_on: Vec<StepId>,
    pub max_attempts: i32,
    /// Its failure fails the task at once (see `planner::PlannedStep::required`).
    #[serde(default)]
    pub required: bool,
}

/// Everything an agent needs to run a claimed step.
#[derive(Debug, Clone)]
pub struct StepClaim {
    pub step_id: StepId,
    pub task_id: TaskId,
    pub title: String,
    pub instruction: String,
    pub agent: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub priority: Priority,
    pub user_id: String,
    /// Whether the user had any long-term memory when the step was claimed.
    pub user_has_memories: bool,
    pub task_description: String,
    /// (title, output) of each dependency, in plan order.
    pub dependency_outputs: Vec<(String, String)>,
    /// (role, content) of the task-level short-term memory (the context given at
    /// submission), oldest first, at most [`STEP_CONTEXT_MESSAGES`] of the most recent.
    pub context: Vec<(String, String)>,
    /// The task's limits, read with the claim so that a step's budget costs no extra read.
    pub limits: super::TaskLimits,
    /// Where an earlier attempt's agent loop stood (`agents::Checkpoint` as JSON), if one
    /// recorded anything before it ended.
    pub checkpoint: Option<serde_json::Value>,
    /// The step's place in the plan: with the task hash, the key of its warm context.
    pub position: i32,
    /// Its failure fails the task at once.
    pub required: bool,
    pub task_type: Option<String>,
    pub task_hash: Option<String>,
    pub warm_start: bool,
    /// Tools whose calls wait for a person's approval in this task (`require_approval`).
    pub require_approval: Vec<String>,
    /// Decisions on the calls the step waited for.
    pub decisions: Vec<agents::DecidedCall>,
}

/// Task-level context messages a step claim carries.
pub const STEP_CONTEXT_MESSAGES: i64 = 50;

#[derive(Debug, Clone, Default)]
pub struct StepCompletion {
    /// Dependants that became ready and need a job.
    pub ready: Vec<StepId>,
    /// Set when this step ended its task: the task's result (what completed, for a
    /// `partial` task; none for a `failed` one).
    pub task_result: Option<String>,
    /// Set when this step ended its task: how (`completed`, or `partial` or `failed` when
    /// other branches had failed).
    pub task_status: Option<TaskStatus>,
    /// Set when this step completed its task: the user's oldest task waiting for capacity,
    /// if any, which the task's end should wake.
    pub waiting: Option<Option<(TaskId, Priority)>>,
}

/// What a follow-up's context is built from (`crate::thread`), besides the parent itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadHistory {
    /// The tasks before the parent on its branch of the thread, newest first (the parent's
    /// parent first), at most as many as asked for.
    pub earlier: Vec<EarlierTask>,
    /// The last assistant and tool messages of the parent's steps, newest first, as
    /// (role, content), at most as many as asked for.
    pub recent_work: Vec<(String, String)>,
}

/// A task earlier in a thread: what was asked and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlierTask {
    pub description: String,
    pub status: TaskStatus,
    pub result: Option<String>,
    pub error: Option<String>,
}

/// Where a plan to save came from.
#[derive(Debug, Clone, Copy)]
pub enum PlanOrigin<'a> {
    /// Reused from the plan cache.
    Cache,
    /// Made now; remembered in the plan cache under `hash` with the plan.
    Fresh { hash: &'a str, planner: &'a str, plan: &'a serde_json::Value },
    /// Made now and not to be remembered.
    Uncached,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Attempts remain: the step is ready again once the backoff has passed.
    Retrying { next_attempt: i32 },
    /// The last attempt failed and so did the task: a budget's failure fails the task and
    /// skips its unfinished steps; an ordinary one, when nothing useful could run any more.
    Failed,
    /// The last attempt failed; the steps that depend on it were skipped, and other branches
    /// still run.
    FailedBranch,
    /// The last attempt failed, nothing else could run, and a final step had completed: the
    /// task ended `partial`.
    FailedPartial,
    /// The last attempt failed and nothing else could run, and the task replans: it is
    /// pending again, owing a replan.
    Replanning,
    /// The lease was no longer ours; nothing was written.
    LeaseLost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    /// The task had already ended in this state.
    AlreadyFinished(TaskStatus),
    NotFound,
}

/// What `POST /tasks/{id}/context` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddContext {
    /// The task's context, the new messages last, as (role, content).
    Added(Vec<(String, String)>),
    /// Only a pending task's context may grow: its steps read it when they start.
    NotPending(TaskStatus),
    /// The context would pass [`STEP_CONTEXT_MESSAGES`]; it holds this many.
    Full(i64),
    NotFound,
}

/// What `POST /tasks/{id}/retry` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// The task runs again as its `run`-th run: `ready` steps need a job, or, when it
    /// failed while planning, the task is pending again and needs a plan job (`replan`).
    Retried {
        run: i32,
        priority: Priority,
        replan: bool,
        ready: Vec<StepId>,
    },
    /// Only failed and partial tasks are retried; this one is in the given state.
    NotRetryable(crate::domain::TaskStatus),
    NotFound,
}

/// Why a job's work could not be claimed, when that is worth acting on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unclaimed {
    /// Its lease expired with no attempt left (its worker died or hung on every attempt):
    /// it failed now, and its task (of `user_id`) with `attempts_exhausted`.
    Exhausted { user_id: String },
    /// The database knows no such task or step: the job belongs to another deployment or
    /// names deleted work.
    Unknown,
    /// Someone else holds it, it is not ready yet, or it already ended: nothing to do.
    Elsewhere,
}

/// Work that should have a job, for the reconciler to check against the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfinished {
    pub task: TaskId,
    /// `None` for a task waiting to be planned.
    pub step: Option<StepId>,
    /// The attempt the next job would run (for a step; 1 for plans).
    pub attempt: i32,
    pub priority: Priority,
}

/// A step lease after a renewal attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Still ours; `task_running` is false once the task was cancelled or failed.
    Held { task_running: bool },
    /// Another worker holds the step, or it already ended.
    Lost,
}

/// Token and cost sums over some `llm_calls` rows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Usage {
    pub calls: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub tokens_cached: i64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StepCost {
    pub step_id: StepId,
    pub position: i32,
    pub title: String,
    pub agent: String,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ModelCost {
    pub provider: String,
    pub model: String,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct CostReport {
    pub task_id: TaskId,
    pub total: Usage,
    /// Calls made to plan the task, outside any step.
    pub planning: Usage,
    pub steps: Vec<StepCost>,
    pub models: Vec<ModelCost>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ToolCallRow {
    pub id: uuid::Uuid,
    pub step_id: Option<StepId>,
    pub tool: String,
    pub arguments: Value,
    pub result: Option<Value>,
    /// `ok`, `error`, `rejected`, or `cached` (answered from a warm start's earlier result; the tool did not run).
    pub status: String,
    pub error: Option<String>,
    pub latency_ms: f64,
    pub created_at: DateTime<Utc>,
}

use crate::domain::EventKind;

/// A position in a task's event stream. Events are read in (writing transaction, id) order
/// rather than by id alone: ids are taken before commit, so a lower id can become visible
/// after a higher one, while a transaction older than every running one can no longer be
/// preceded by anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventCursor {
    /// The writing transaction's id (`task_events.xact_id`); 0 before the first event.
    pub xact: i64,
    /// The event's id; 0 before the first event.
    pub id: i64,
}

/// Events after which a task has ended.
pub const TASK_END_EVENTS: [EventKind; 4] =
    [EventKind::TaskCompleted, EventKind::TaskFailed, EventKind::TaskCancelled, EventKind::TaskPartial];

/// One `task_events` row.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    pub id: i64,
    pub task_id: TaskId,
    pub step_id: Option<StepId>,
    pub kind: EventKind,
    pub data: Value,
    pub created_at: DateTime<Utc>,
    /// Where a stream that delivered this event resumes.
    pub cursor: EventCursor,
}

impl TaskEvent {
    /// Whether this is the task's final event (completed, failed or cancelled).
    pub fn ends_task(&self) -> bool {
        TASK_END_EVENTS.contains(&self.kind)
    }
}

/// Where a stream of a task's events starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventStreamStart {
    /// The task does not exist.
    NoTask,
    /// The event to resume after is not one of the task's events.
    NoSuchEvent,
    /// Resume after `cursor`. `ended` when the task's final event lies at or before it: the
    /// client has seen the end already.
    Resume { cursor: EventCursor, ended: bool },
}

/// A page of a task's events, oldest first.
#[derive(Debug, Clone, Default)]
pub struct EventBatch {
    pub events: Vec<TaskEvent>,
    /// Later events exist but were written by a transaction that a still-running one might
    /// precede: they are withheld until it ends, so read again shortly.
    pub held_back: bool,
}

/// A tool call a step stops for, until a person decides ([`ExecutionStore::await_approval`]).
#[derive(Debug, Clone)]
pub struct NewApproval {
    /// Also the id of the `tool_calls` row that records the request.
    pub id: uuid::Uuid,
    /// The step's turn the model made the call in.
    pub turn: i32,
    /// The model's id of the call.
    pub tool_call_id: String,
    pub tool: String,
    pub arguments: Value,
}

/// How [`ExecutionStore::await_approval`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwaitOutcome {
    /// The step waits and the task requires action.
    Waiting,
    /// The task ended meanwhile (cancelled, or failed on another branch): nothing was written
    /// and the step should stop.
    TaskEnded,
    /// The lease was lost: nothing was written.
    LeaseLost,
}

/// A decision on one waiting call.
#[derive(Debug, Clone)]
pub struct ApprovalDecision {
    /// `Approved`, `Denied` or `Expired`.
    pub status: ApprovalStatus,
    pub reason: Option<String>,
    /// Arguments the person changed the call to (already checked against the tool's schema).
    pub arguments: Option<Value>,
    /// `user:<id>` of whoever decided, or `system` for an expiry.
    pub decided_by: String,
}

/// How a decision went.
#[derive(Debug, Clone, PartialEq)]
pub enum DecideOutcome {
    /// No such call in this task.
    NotFound,
    /// The call was decided already (or expired, or its task ended): its status.
    AlreadyDecided(ApprovalStatus),
    /// The decision was recorded.
    Decided(Decided),
}

/// What a recorded decision changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub user_id: String,
    pub priority: Priority,
    pub step: StepId,
    /// The step's last waiting call was decided: it is ready again.
    pub step_ready: bool,
    /// No step of the task waits any more: it runs again.
    pub task_running: bool,
}

/// Which of a task's calls that waited for a person to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalFilter {
    All,
    /// Those still waiting.
    Pending,
    /// The one call.
    Call(uuid::Uuid),
}

/// A call that waited (or waits) for a person, as `GET /tasks/{id}/approvals` shows it.
#[derive(Debug, Clone)]
pub struct ApprovalRow {
    pub id: uuid::Uuid,
    pub task_id: TaskId,
    pub step_id: StepId,
    pub agent: String,
    pub tool: String,
    pub arguments: Value,
    pub status: ApprovalStatus,
    pub edited_arguments: Option<Value>,
    pub reason: Option<String>,
    pub decided_by: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}
