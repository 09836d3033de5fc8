//! The JSON shapes of the task routes. They are the API contract: store types never leak
//! into responses directly.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::approvals::ApprovalResponse;
use crate::{
    domain::{Priority, RequiredAction, StepId, StepStatus, TaskErrorCode, TaskId, TaskStart, TaskStatus},
    store::{Step, Task, TaskDetail},
};

/// `POST /tasks` body. Unknown fields are refused, so a typo never passes silently.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "user_id": "demo-user",
    "description": "Summarise the three most recent releases of the project.",
    "metadata": {"priority": "high"},
    "max_cost_usd": 0.5
}))]
pub struct CreateTaskRequest {
    /// The user the task belongs to (1 to 200 characters). Defaults to the API key's user;
    /// only admin keys may name another. Required when auth is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// What to do, in plain language (1 to 8000 characters).
    pub description: String,
    /// A JSON object (at most 16 KiB) stored and returned with the task.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Dispatch priority; when absent, `metadata.priority` is used if it names one.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Budget in US dollars. Each model call's worst case is reserved before it is made; a
    /// call that would not fit is not made and the task fails with `budget_exceeded`.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub max_cost_usd: Option<f64>,
    /// Token budget over all the task's model calls (prompt and output), enforced likewise.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub max_tokens: Option<i64>,
    /// Attempts per step (1 to 10), overriding each agent's own retry policy.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    pub max_attempts: Option<i32>,
    /// Reuse the plan of an identical earlier task (default true).
    #[serde(default)]
    pub use_plan_cache: Option<bool>,
    /// Messages that pre-seed the task's short-term memory: every step sees them.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub context: Option<Vec<ContextMessage>>,
    /// An http(s) URL that gets a signed POST of the task's summary when it ends (see
    /// `crate::webhooks`). Omitted from the body when absent, so the request hash of
    /// earlier clients' bodies does not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Agent hints: the only agents the plan may use (1 to 10 names from `GET /agents`);
    /// each step goes to the hinted agent that suits it best.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 10)]
    pub agent_hints: Option<Vec<String>>,
    /// A short name for the kind of work (`report`, `triage.v2`): 1 to 64 characters of
    /// a-z, 0-9, `_`, `.` and `-`. `GET /tasks?task_type=` lists a type's tasks, and it is
    /// part of the `task_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub task_type: Option<String>,
    /// Start each step from what the last run of the same work (the same `task_hash`) left,
    /// when it is still kept (`WARM_CONTEXT_TTL_SECS`): its plan, its conversation as earlier
    /// context, and its tool results for identical calls (recorded as `cached`). Default
    /// false. Without a kept context the start is cold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<bool>,
    /// When a step fails for good, ask the planner for a revised plan of the work that did
    /// not complete (given the goal, the completed steps' outputs and the failure) instead of
    /// ending `failed` or `partial`; each revision is a new plan version
    /// (`GET /tasks/{id}/plan/versions`) and a `task_replanned` event. Default: the
    /// deployment's `REPLAN_ON_FAILURE` (false unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replan: Option<bool>,
    /// Revised plans the task may get (0 to 5, default 2); after them a failure ends the task
    /// as without replanning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 5)]
    pub max_replans: Option<i32>,
    /// `running` (the default): the steps run as soon as the task is planned. `paused`: once
    /// planned, the task waits in `requires_action` (`required_action: plan_approval`) with
    /// no step started; its plan can be read (`GET /tasks/{id}/plan`) and edited
    /// (`PUT /tasks/{id}/plan`), and `POST /tasks/{id}/start` runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<TaskStart>,
    /// Tools whose calls wait for a person's approval in this task (names from
    /// `GET /tools`), besides the deployment's `TOOLS_REQUIRE_APPROVAL` and each agent's own
    /// list. A waiting call puts the task in `requires_action`; see
    /// `POST /tasks/{id}/approvals/{call_id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 32)]
    pub require_approval: Option<Vec<String>>,
}

/// `POST /tasks/{id}/follow-ups` body: what `POST /tasks` takes, without `user_id` (a
/// follow-up belongs to its parent's user). Nothing is inherited from the parent but its user
/// and its thread: priority, budgets, type, hints, approvals and callback are this request's.
/// Unknown fields are refused.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "description": "Now make it shorter, and end with the main risk.",
    "max_cost_usd": 0.5
}))]
pub struct FollowUpRequest {
    /// What to do next, in plain language (1 to 8000 characters). The steps see the thread
    /// before it: the parent's goal and outcome and, condensed, what came before.
    pub description: String,
    /// A JSON object (at most 16 KiB) stored and returned with the task.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Dispatch priority; when absent, `metadata.priority` is used if it names one.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Budget in US dollars, as for `POST /tasks`: the follow-up's own model calls count,
    /// not its parent's.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub max_cost_usd: Option<f64>,
    /// Token budget over the follow-up's model calls (prompt and output); the thread's context
    /// is part of every prompt.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub max_tokens: Option<i64>,
    /// Attempts per step (1 to 10), overriding each agent's own retry policy.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    pub max_attempts: Option<i32>,
    /// Reuse the plan of an identical earlier task (default true).
    #[serde(default)]
    pub use_plan_cache: Option<bool>,
    /// Messages to add after the thread's (at most 47: the thread takes up to 3 of the 50 a
    /// task's context holds).
    #[serde(default)]
    #[schema(max_items = 47)]
    pub context: Option<Vec<ContextMessage>>,
    /// An http(s) URL that gets a signed POST of the follow-up's summary when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The only agents the plan may use (1 to 10 names from `GET /agents`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 10)]
    pub agent_hints: Option<Vec<String>>,
    /// A short name for the kind of work, as for `POST /tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub task_type: Option<String>,
    /// Start each step from what the last run of the same work left, as for `POST /tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<bool>,
    /// Tools whose calls wait for a person's approval in this task, as for `POST /tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 32)]
    pub require_approval: Option<Vec<String>>,
    /// Replan when a step fails for good, as for `POST /tasks` (default `REPLAN_ON_FAILURE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replan: Option<bool>,
    /// Revised plans the follow-up may get (0 to 5, default 2), as for `POST /tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 5)]
    pub max_replans: Option<i32>,
    /// `running` (the default) or `paused` (wait for `POST /tasks/{id}/start` once planned), as
    /// for `POST /tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<TaskStart>,
}

impl From<FollowUpRequest> for CreateTaskRequest {
    /// The same fields, checked by the same code; the user comes from the parent.
    fn from(r: FollowUpRequest) -> Self {
        Self {
            user_id: None,
            description: r.description,
            metadata: r.metadata,
            priority: r.priority,
            max_cost_usd: r.max_cost_usd,
            max_tokens: r.max_tokens,
            max_attempts: r.max_attempts,
            use_plan_cache: r.use_plan_cache,
            context: r.context,
            callback_url: r.callback_url,
            agent_hints: r.agent_hints,
            task_type: r.task_type,
            warm_start: r.warm_start,
            require_approval: r.require_approval,
            replan: r.replan,
            max_replans: r.max_replans,
            start: r.start,
        }
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextMessage {
    /// `user`, `assistant` or `system`.
    pub role: String,
    pub content: String,
}

/// A task, with its totals so far.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5b2-7c1e-7d3a-9f10-2b3c4d5e6f70",
    "user_id": "demo-user",
    "description": "Summarise the three most recent releases of the project.",
    "metadata": {"priority": "high"},
    "status": "pending",
    "priority": "high",
    "max_cost_usd": 0.5,
    "max_tokens": null,
    "result": null,
    "error": null,
    "error_code": null,
    "reserved_cost_usd": 0.0,
    "reserved_tokens": 0,
    "tokens_in": 0,
    "tokens_out": 0,
    "tokens_cached": 0,
    "cost_usd": 0.0,
    "created_at": "2026-01-01T12:00:00Z",
    "started_at": null,
    "completed_at": null,
    "updated_at": "2026-01-01T12:00:00Z",
    "callback_url": null,
    "agent_hints": [],
    "task_type": "report",
    "warm_start": false,
    "replan": false,
    "max_replans": 2,
    "replans": 0,
    "start": "running",
    "required_action": null,
    "require_approval": [],
    "task_hash": "9f2c5e0a4b7d13e8c6a1f0b2d4e6a8c0e2f4a6b8d0c2e4f6a8b0c2d4e6f8a0b2",
    "thread_id": "0193a5b2-7b00-7c2e-8d41-5e6f70819a2b",
    "parent_task_id": "0193a5b2-7b00-7c2e-8d41-5e6f70819a2b"
}))]
pub struct TaskResponse {
    pub id: TaskId,
    pub user_id: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub status: TaskStatus,
    pub priority: Priority,
    pub max_cost_usd: Option<f64>,
    pub max_tokens: Option<i64>,
    pub result: Option<String>,
    pub error: Option<String>,
    /// Why the task failed, for machines: `budget_exceeded` when a model call did not fit
    /// in `max_cost_usd`, `max_tokens` or the user's daily quota.
    pub error_code: Option<TaskErrorCode>,
    /// Worst-case cost of the model calls in flight, held against `max_cost_usd`.
    pub reserved_cost_usd: f64,
    /// Worst-case tokens of the model calls in flight, held against `max_tokens`.
    pub reserved_tokens: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub tokens_cached: i64,
    pub cost_usd: f64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Where the task's summary is POSTed when it ends; `GET /tasks/{id}/webhook` shows the
    /// deliveries.
    pub callback_url: Option<String>,
    /// The only agents the plan may use; empty: any.
    pub agent_hints: Vec<String>,
    /// The kind of work, as submitted.
    pub task_type: Option<String>,
    /// What identifies the task's work: sha256 (hex) over its user, type, normalised
    /// description, context messages and agent hints, and the deployment's agents and
    /// planner version. Equal for the same work submitted again; `null` for tasks created
    /// before task hashes existed.
    pub task_hash: Option<String>,
    /// Whether the task asked to start from the last run of the same work.
    pub warm_start: bool,
    /// Whether a step's failure for good leads to a replan (while `replans < max_replans`).
    pub replan: bool,
    /// Revised plans the task may get.
    pub max_replans: i32,
    /// Revised plans it got.
    pub replans: i32,
    /// `running`, or `paused`: once planned it waited for `POST /tasks/{id}/start`.
    pub start: TaskStart,
    /// Set while the task is `requires_action`: `tool_approval` when tool calls wait for a
    /// decision (`pending_approvals`, `POST /tasks/{id}/approvals/{call_id}`),
    /// `plan_approval` when its plan waits to be started.
    pub required_action: Option<RequiredAction>,
    /// Tools whose calls wait for a person's approval in this task, besides the
    /// deployment's (`TOOLS_REQUIRE_APPROVAL`) and each agent's own.
    pub require_approval: Vec<String>,
    /// Tool calls waiting for a decision; present on `GET /tasks/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_approvals: Option<Vec<ApprovalResponse>>,
    /// The thread the task belongs to: the id of the thread's first task, which is the task's
    /// own id unless it is a follow-up. `GET /tasks?thread_id=` lists the thread.
    pub thread_id: TaskId,
    /// The task this one follows up (`POST /tasks/{id}/follow-ups`); `null` for the first task
    /// of a thread.
    pub parent_task_id: Option<TaskId>,
    /// Present on `GET /tasks/{id}`, absent from lists and from the creation answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepResponse>>,
}

/// One step of a task's plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepResponse {
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
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub tokens_cached: i64,
    pub cost_usd: f64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A page of tasks, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskListResponse {
    pub items: Vec<TaskResponse>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl From<Task> for TaskResponse {
    fn from(t: Task) -> Self {
        Self {
            id: t.id,
            user_id: t.user_id,
            description: t.description,
            metadata: t.metadata,
            status: t.status,
            priority: t.priority,
            max_cost_usd: t.max_cost_usd,
            max_tokens: t.max_tokens,
            result: t.result,
            error: t.error,
            error_code: t.error_code,
            reserved_cost_usd: t.reserved_cost_usd,
            reserved_tokens: t.reserved_tokens,
            tokens_in: t.totals.tokens_in,
            tokens_out: t.totals.tokens_out,
            tokens_cached: t.totals.tokens_cached,
            cost_usd: t.totals.cost_usd,
            created_at: t.created_at,
            started_at: t.started_at,
            completed_at: t.completed_at,
            updated_at: t.updated_at,
            callback_url: t.callback_url,
            agent_hints: t.agent_hints,
            task_type: t.task_type,
            task_hash: t.task_hash,
            warm_start: t.warm_start,
            replan: t.replan,
            max_replans: t.max_replans,
            replans: t.replans,
            start: t.start,
            required_action: t.required_action,
            require_approval: t.require_approval,
            pending_approvals: None,
            thread_id: t.thread_id,
            parent_task_id: t.parent_task_id,
            steps: None,
        }
    }
}

impl From<Step> for StepResponse {
    fn from(s: Step) -> Self {
        Self {
            id: s.id,
            position: s.position,
            title: s.title,
            instruction: s.instruction,
            agent: s.agent,
            depends_on: s.depends_on,
            status: s.status,
            attempt: s.attempt,
            max_attempts: s.max_attempts,
            output: s.output,
            error: s.error,
            tokens_in: s.totals.tokens_in,
            tokens_out: s.totals.tokens_out,
            tokens_cached: s.totals.tokens_cached,
            cost_usd: s.totals.cost_usd,
            created_at: s.created_at,
            started_at: s.started_at,
            completed_at: s.completed_at,
            updated_at: s.updated_at,
        }
    }
}

impl From<TaskDetail> for TaskResponse {
    fn from(d: TaskDetail) -> Self {
        let mut task = TaskResponse::from(d.task);
        task.steps = Some(d.steps.into_iter().map(StepResponse::from).collect());
        task.pending_approvals = Some(d.pending_approvals.into_iter().map(ApprovalResponse::from).collect());
        task
    }
}
