//! `/tasks/{id}/plan`: the task's plan as a versioned resource. Every plan a task gets is a
//! version (`plan_versions`): the planner's first one, each revision of a replan, each edit.
//! `GET /tasks/{id}/plan` is the current version with the state of each step and an `ETag`
//! (`"<version>"`); `GET /tasks/{id}/plan/versions` lists every version, oldest first.
//!
//! Dependencies are indices into the version's `steps`, as a planner writes them, so a plan
//! read here can be edited and sent back as it is.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::Caller,
    domain::{StepId, StepStatus, TaskId},
    http::{
        AppState, access,
        error::{ApiError, Problem},
    },
    store::{NewStep, PlanVersion, ReplacedStep, Step, TaskDetail},
};

/// Who made a plan recorded before versions were: the planner, whichever it was.
const UNRECORDED_PLANNER: &str = "planner";

/// One version of a task's plan.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "task_id": "0193a5b2-7c1e-7d3a-9f10-2b3c4d5e6f70",
    "version": 2,
    "created_by": "heuristic-2",
    "reason": "step Research retry policies (0193a5b2-7c1f-7000-8000-000000000001) failed after 1 attempt(s): …",
    "created_at": "2026-01-01T12:00:03Z",
    "steps": [
        {"id": "0193a5b2-7c1f-7000-8000-000000000000", "title": "Write a haiku", "instruction": "Write a haiku about job queues",
         "agent": "writer", "depends_on": [], "required": false, "status": "completed"},
        {"id": "0193a5b2-7c1f-7000-8000-000000000002", "title": "Research retry policies", "instruction": "Research retry policies",
         "agent": "analyst", "depends_on": [], "required": false, "status": "running"}
    ],
    "replaced": [
        {"id": "0193a5b2-7c1f-7000-8000-000000000001", "title": "Research retry policies", "instruction": "Research retry policies",
         "agent": "researcher", "status": "failed", "error": "…"}
    ]
}))]
pub struct PlanResponse {
    pub task_id: TaskId,
    /// 1 for the task's first plan, one more for each revision (a replan, an edit).
    pub version: i32,
    /// The planner that made it (`heuristic-2`, `llm-1`), or `user:<user id>` for an edit.
    pub created_by: String,
    /// Why this version replaced the one before: the failure a replan answered. Absent from
    /// the first version.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The plan's steps in plan order: steps kept from the version before (they had
    /// completed) and its own.
    pub steps: Vec<PlanStep>,
    /// The steps of the version before that this one replaced, as they ended.
    pub replaced: Vec<ReplacedPlanStep>,
}

/// A step of a plan version.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanStep {
    pub id: StepId,
    pub title: String,
    pub instruction: String,
    pub agent: String,
    /// Indices into the plan's `steps` of the steps whose output this one needs.
    pub depends_on: Vec<u32>,
    /// Its failure fails the task at once.
    pub required: bool,
    /// Where the step stands now; only in the current plan (`GET /tasks/{id}/plan`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StepStatus>,
}

/// A step that a newer plan version replaced.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplacedPlanStep {
    pub id: StepId,
    pub title: String,
    pub instruction: String,
    pub agent: String,
    /// How it ended: `failed`, or `skipped` (a step it needed failed), or never started.
    pub status: StepStatus,
    pub error: Option<String>,
}

/// Every version of a task's plan, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanVersionList {
    pub task_id: TaskId,
    /// The version `GET /tasks/{id}/plan` answers; absent while the task has no plan.
    pub current_version: Option<i32>,
    pub versions: Vec<PlanResponse>,
}

/// Get a task's plan
///
/// The current version of the task's plan: its steps in plan order, each with the agent that
/// runs it, the steps it depends on (indices into `steps`) and where it stands now; who made
/// this version and why. The `ETag` header is the version (`"2"`), for `If-Match`.
#[utoipa::path(
    get,
    path = "/tasks/{id}/plan",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task id (a UUID)."),
    ),
    responses(
        (status = 200, description = "The current plan.", body = PlanResponse,
            headers(("ETag" = String, description = "The plan's version, quoted: `\"2\"`."))),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task, or it has no plan yet (it is pending or planning, or failed while planning).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn get_plan(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = super::task_id(&id)?;
    let detail = access::visible_task(state.tasks.as_ref(), &caller, id).await?;
    let recorded = state.tasks.current_plan_version(id).await?;
    let plan =
        current_plan(detail, recorded).ok_or(ApiError::NotFound { resource: "plan of task", id: id.to_string() })?;
    Ok(with_etag(plan))
}

/// List a task's plan versions
///
/// Every version of the task's plan, oldest first, each as it was saved: the planner's
/// first plan, then each revision (a replan after a step failed for good, with the failure
/// as its `reason`, or a user's edit) with the steps it replaced.
#[utoipa::path(
    get,
    path = "/tasks/{id}/plan/versions",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task id (a UUID)."),
    ),
    responses(
        (status = 200, description = "The plan's versions; none before the task is planned.", body = PlanVersionList),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn plan_versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PlanVersionList>, ApiError> {
    let id = super::task_id(&id)?;
    let detail = access::visible_task(state.tasks.as_ref(), &caller, id).await?;
    let recorded = state.tasks.plan_versions(id).await?;
    let versions: Vec<PlanResponse> = if recorded.is_empty() {
        // Planned before versions were recorded: its steps are its only plan.
        unrecorded_plan(id, &detail.steps).into_iter().collect()
    } else {
        recorded.into_iter().map(|v| version_response(id, v)).collect()
    };
    Ok(Json(PlanVersionList { task_id: id, current_version: versions.last().map(|v| v.version), versions }))
}

/// The plan with its `ETag`.
pub(super) fn with_etag(plan: PlanResponse) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", plan.version)).expect("a number is a header value");
    let mut response = Json(plan).into_response();
    response.headers_mut().insert(header::ETAG, etag);
    response
}

/// The current plan: the task's steps as they are (they are the newest version's, which
/// gives the version, author and reason), or `None` before the task has steps.
pub(super) fn current_plan(detail: TaskDetail, recorded: Option<PlanVersion>) -> Option<PlanResponse> {
    let id = detail.task.id;
    let Some(recorded) = recorded else { return unrecorded_plan(id, &detail.steps) };
    if detail.steps.is_empty() {
        return None;
    }
    let index = indices(detail.steps.iter().map(|s| s.id));
    let steps = detail.steps.into_iter().map(|s| live_step(s, &index)).collect();
    Some(PlanResponse {
        task_id: id,
        version: recorded.version,
        created_by: recorded.created_by,
        reason: recorded.reason,
        created_at: recorded.created_at,
        steps,
        replaced: recorded.replaced.into_iter().map(ReplacedPlanStep::from).collect(),
    })
}

/// Version 1 of a task planned before versions were recorded, from its steps.
fn unrecorded_plan(id: TaskId, steps: &[Step]) -> Option<PlanResponse> {
    let created_at = steps.iter().map(|s| s.created_at).min()?;
    let index = indices(steps.iter().map(|s| s.id));
    Some(PlanResponse {
        task_id: id,
        version: 1,
        created_by: UNRECORDED_PLANNER.into(),
        reason: None,
        created_at,
        steps: steps.iter().cloned().map(|s| live_step(s, &index)).collect(),
        replaced: Vec::new(),
    })
}

fn version_response(id: TaskId, v: PlanVersion) -> PlanResponse {
    let index = indices(v.steps.iter().map(|s| s.id));
    PlanResponse {
        task_id: id,
        version: v.version,
        created_by: v.created_by,
        reason: v.reason,
        created_at: v.created_at,
        steps: v.steps.into_iter().map(|s| saved_step(s, &index)).collect(),
        replaced: v.replaced.into_iter().map(ReplacedPlanStep::from).collect(),
    }
}

/// Each step's index in plan order.
fn indices(ids: impl Iterator<Item = StepId>) -> HashMap<StepId, u32> {
    ids.enumerate().map(|(i, id)| (id, i as u32)).collect()
}

/// Dependencies as indices. A dependency outside the plan cannot be written by the store
/// (steps are saved with the plan they belong to); one would be dropped, not invented.
fn dependency_indices(depends_on: &[StepId], index: &HashMap<StepId, u32>) -> Vec<u32> {
    depends_on.iter().filter_map(|d| index.get(d).copied()).collect()
}

fn live_step(s: Step, index: &HashMap<StepId, u32>) -> PlanStep {
    PlanStep {
        id: s.id,
        depends_on: dependency_indices(&s.depends_on, index),
        title: s.title,
        instruction: s.instruction,
        agent: s.agent,
        required: s.required,
        status: Some(s.status),
    }
}

fn saved_step(s: NewStep, index: &HashMap<StepId, u32>) -> PlanStep {
    PlanStep {
        id: s.id,
        depends_on: dependency_indices(&s.depends_on, index),
        title: s.title,
        instruction: s.instruction,
        agent: s.agent,
        required: s.required,
        status: None,
    }
}

impl From<ReplacedStep> for ReplacedPlanStep {
    fn from(s: ReplacedStep) -> Self {
        Self { id: s.id, title: s.title, instruction: s.instruction, agent: s.agent, status: s.status, error: s.error }
    }
}
