//! Rows and queries exchanged with the store.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::{Priority, StepId, StepStatus, TaskId, TaskStatus};

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
    pub totals: Totals,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
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
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct TaskDetail {
    pub task: Task,
    pub steps: Vec<Step>,
}

/// Newest first; the cursor is the (created_at, id) of the last task of the previous page.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub user_id: Option<String>,
    pub status: Option<TaskStatus>,
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
}

/// A step of a validated plan, ready to insert.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewStep {
    pub id: StepId,
    pub position: i32,
    pub title: String,
    pub instruction: String,
    pub agent: String,
    pub depends_on: Vec<StepId>,
    pub max_attempts: i32,
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
    pub task_description: String,
    /// (title, output) of each dependency, in plan order.
    pub dependency_outputs: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct StepCompletion {
    /// Dependants that became ready and need a job.
    pub ready: Vec<StepId>,
    pub task_completed: bool,
}
