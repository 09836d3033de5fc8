//! Raw rows as Postgres returns them, and their conversion into domain types.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    domain::{StepId, TaskId},
    store::{Step, StoreError, Task, Totals},
};

/// The columns of [`TaskRow`], as a literal so queries stay `&'static str` (`concat!`).
macro_rules! task_columns {
    () => {
        "id, user_id, description, metadata, status, priority, max_cost_usd, max_tokens, result, error, \
         error_code, reserved_cost_usd, reserved_tokens, \
         cost_usd, tokens_in, tokens_out, tokens_cached, callback_url, agent_hints, task_type, task_hash, warm_start, \
         required_action, require_approval, replan, max_replans, replans, start_mode, thread_id, parent_task_id, \
         created_at, started_at, completed_at, updated_at"
    };
}

/// The columns of [`StepRow`].
macro_rules! step_columns {
    () => {
        "id, position, title, instruction, agent, depends_on, status, attempt, max_attempts, output, error, \
         cost_usd, tokens_in, tokens_out, tokens_cached, required, created_at, started_at, completed_at, updated_at"
    };
}

pub(super) use {step_columns, task_columns};

#[derive(sqlx::FromRow)]
pub(super) struct TaskRow {
    pub(super) id: Uuid,
    user_id: String,
    description: String,
    metadata: Value,
    status: String,
    priority: String,
    max_cost_usd: Option<f64>,
    max_tokens: Option<i64>,
    result: Option<String>,
    error: Option<String>,
    error_code: Option<String>,
    reserved_cost_usd: f64,
    reserved_tokens: i64,
    cost_usd: f64,
    tokens_in: i64,
    tokens_out: i64,
    tokens_cached: i64,
    callback_url: Option<String>,
    agent_hints: Vec<String>,
    task_type: Option<String>,
    task_hash: Option<String>,
    warm_start: bool,
    replan: bool,
    max_replans: i32,
    replans: i32,
    start_mode: String,
    required_action: Option<String>,
    require_approval: Vec<String>,
    /// NULL for a thread's first task (migration 25).
    thread_id: Option<Uuid>,
    parent_task_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<TaskRow> for Task {
    type Error = StoreError;

    fn try_from(r: TaskRow) -> Result<Self, StoreError> {
        Ok(Task {
            id: TaskId(r.id),
            user_id: r.user_id,
            description: r.description,
            metadata: r.metadata,
            status: r.status.parse()?,
            priority: r.priority.parse()?,
            max_cost_usd: r.max_cost_usd,
            max_tokens: r.max_tokens,
            result: r.result,
            error: r.error,
            error_code: r.error_code.map(|c| c.parse()).transpose()?,
            reserved_cost_usd: r.reserved_cost_usd,
            reserved_tokens: r.reserved_tokens,
            totals: Totals {
                cost_usd: r.cost_usd,
                tokens_in: r.tokens_in,
                tokens_out: r.tokens_out,
                tokens_cached: r.tokens_cached,
            },
            created_at: r.created_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
            updated_at: r.updated_at,
            callback_url: r.callback_url,
            agent_hints: r.agent_hints,
            task_type: r.task_type,
            task_hash: r.task_hash,
            warm_start: r.warm_start,
            replan: r.replan,
            max_replans: r.max_replans,
            replans: r.replans,
            start: r.start_mode.parse()?,
            required_action: r.required_action.map(|a| a.parse()).transpose()?,
            require_approval: r.require_approval,
            // A task that starts a thread stores no thread: it is its own.
            thread_id: TaskId(r.thread_id.unwrap_or(r.id)),
            parent_task_id: r.parent_task_id.map(TaskId),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct StepRow {
    id: Uuid,
    position: i32,
    title: String,
    instruction: String,
    agent: String,
    depends_on: Vec<Uuid>,
    status: String,
    attempt: i32,
    max_attempts: i32,
    output: Option<String>,
    error: Option<String>,
    cost_usd: f64,
    tokens_in: i64,
    tokens_out: i64,
    tokens_cached: i64,
    required: bool,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<StepRow> for Step {
    type Error = StoreError;

    fn try_from(r: StepRow) -> Result<Self, StoreError> {
        Ok(Step {
            id: StepId(r.id),
            position: r.position,
            title: r.title,
            instruction: r.instruction,
            agent: r.agent,
            depends_on: r.depends_on.into_iter().map(StepId).collect(),
            status: r.status.parse()?,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            output: r.output,
            error: r.error,
            totals: Totals {
                cost_usd: r.cost_usd,
                tokens_in: r.tokens_in,
                tokens_out: r.tokens_out,
                tokens_cached: r.tokens_cached,
            },
            required: r.required,
            created_at: r.created_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
            updated_at: r.updated_at,
        })
    }
}
