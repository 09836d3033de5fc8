//! `PUT /tasks/{id}/plan`: a person's edit of the plan, as a new version.
//!
//! An edit is conditional (`If-Match: "<version>"`, 428 without it, 412 when the plan has moved
//! to another version) and replaces the steps that have not started: every step of a task
//! paused for plan approval, or, while the task runs, the steps still waiting for others and
//! those skipped. The steps that have started (ready, running, waiting, completed, failed)
//! must stay in the plan unchanged, named by their `id`; new steps (no `id`, or the id of a
//! step that has not started) may depend on them and on each other. The whole plan is checked
//! as a planner's is (known agents, no cycle, bounded size: 422 naming the step and field at
//! fault) and saved as the next version, made by `user:<id>`; in it the steps that stay come
//! first, in plan order, then the new ones.

use std::collections::{HashMap, HashSet};

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
};
use planner::{Plan, PlanError, PlannedStep, make_title, validate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::plan::{current_plan, with_etag};
use crate::{
    auth::Caller,
    domain::{RequiredAction, StepId, StepStatus, TaskStatus},
    http::{
        AppState, access,
        error::{ApiError, Problem},
        extract::JsonBody,
        validate::invalid,
    },
    store::{EditOutcome, NewStep, PlanEdit, Step, TaskDetail},
};

/// `PUT /tasks/{id}/plan` body: the whole plan as it should be from now on.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"steps": [
    {"title": "Research retry policies", "instruction": "Research retry policies of job queues.", "agent": "researcher", "depends_on": []},
    {"title": "Write the summary", "instruction": "Write a one-page summary.", "agent": "writer", "depends_on": [0]}
]}))]
pub struct EditPlanRequest {
    /// The steps in plan order; `depends_on` are indices into this list.
    pub steps: Vec<EditPlanStep>,
}

/// A step of an edited plan.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditPlanStep {
    /// The id of a step of the current plan that has started: it stays, and must come
    /// unchanged. Absent for a new step; the id of a step that has not started is planned anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<StepId>,
    /// A short label (at most 80 characters); made from the instruction when absent or blank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What the agent must do.
    pub instruction: String,
    /// An agent from `GET /agents` (one of the task's `agent_hints`, when it has them).
    pub agent: String,
    /// Indices into `steps` of the steps whose output this one needs.
    #[serde(default)]
    pub depends_on: Vec<usize>,
    /// Its failure fails the task at once.
    #[serde(default)]
    pub required: bool,
}

/// Edit a task's plan
///
/// Replaces the steps of the plan that have not started with the edited plan's, as the next
/// version (made by `user:<your user id>`), and answers the new plan with its `ETag`. Send the
/// version you edited as `If-Match` (from the `ETag` of `GET /tasks/{id}/plan`). A task paused
/// for plan approval (`start: paused`) can be edited whole and stays paused until
/// `POST /tasks/{id}/start`; a running task's steps that have started (ready, running,
/// waiting, completed, failed) stay, and must be in the body unchanged with their `id`, while
/// the others (waiting for dependencies, or skipped) are replaced. In the saved plan the steps
/// that stay come first. New steps whose dependencies have completed run at once (unless the
/// task is paused).
#[utoipa::path(
    put,
    path = "/tasks/{id}/plan",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task id (a UUID)."),
        ("If-Match" = String, Header, description = "The version edited, as `GET /tasks/{id}/plan` gave it in `ETag`: `\"2\"` (`*`: whatever the current version)."),
    ),
    request_body(content = EditPlanRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The edited plan, now the current version.", body = super::plan::PlanResponse,
            headers(("ETag" = String, description = "The new version, quoted: `\"3\"`."))),
        (status = 400, description = "The id is not a UUID, the body is not JSON of this shape, or `If-Match` names no version.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task is neither paused for plan approval nor running (it is planning, waiting for tool approvals, or ended), or a step the edit would replace started meanwhile: read the plan again.", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The plan is no longer at the `If-Match` version; the `ETag` of `GET /tasks/{id}/plan` is the current one.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The edited plan is not acceptable (an unknown agent, a dependency that is not another step, a cycle, too many steps, a blank or over-long text, a started step changed or left out, a new step waiting for a failed one); `field` names the step and field at fault, e.g. `steps[2].agent`.", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "No `If-Match` header.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn edit_plan(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<EditPlanRequest>,
) -> Result<Response, ApiError> {
    let id = super::task_id(&id)?;
    let wanted = if_match(&headers)?;
    let detail = access::visible_task(state.tasks.as_ref(), &caller, id).await?;
    let task = &detail.task;
    let paused =
        task.status == TaskStatus::RequiresAction && task.required_action == Some(RequiredAction::PlanApproval);
    if !paused && task.status != TaskStatus::Running {
        return Err(not_editable(&detail));
    }
    let current = match state.tasks.current_plan_version(id).await? {
        Some(version) => version.version,
        None => 1, // planned before versions were recorded
    };
    let expected = wanted.unwrap_or(current);
    if expected != current {
        return Err(stale(expected, current));
    }

    let known: Vec<&str> = if task.agent_hints.is_empty() {
        state.agents.names()
    } else {
        task.agent_hints.iter().map(String::as_str).collect()
    };
    let edited = edited_plan(&detail, &request, &known, &state.plan_limits)?;
    let (steps, plan) =
        new_steps(&detail, &edited, |agent| state.agents.get(agent).map(|a| a.max_attempts as i32).unwrap_or(3));
    let editor = caller.user_id.as_deref().unwrap_or(&task.user_id);
    let created_by = format!("user:{editor}");
    let edit = PlanEdit {
        expected_version: expected,
        kept: &edited.kept,
        steps: &steps,
        plan: &plan,
        created_by: &created_by,
    };
    match state.lifecycle.edit_plan(id, edit).await? {
        EditOutcome::Edited { version, .. } => tracing::info!(task = %id, version, %created_by, "plan edited"),
        EditOutcome::NotEditable(status) => {
            return Err(ApiError::Conflict {
                message: format!("task {id} is {status}: its plan cannot be edited now"),
            });
        }
        EditOutcome::StaleVersion { current } => return Err(stale(expected, current)),
        EditOutcome::Moved => {
            return Err(ApiError::Conflict {
                message: format!(
                    "the plan of task {id} moved on while it was edited (a step started, or one the edit builds on \
                     failed): read it again"
                ),
            });
        }
        EditOutcome::NotFound => return Err(ApiError::NotFound { resource: "task", id: id.to_string() }),
    }
    let detail = state.tasks.task(id).await?.ok_or(ApiError::NotFound { resource: "task", id: id.to_string() })?;
    let recorded = state.tasks.current_plan_version(id).await?;
    let plan = current_plan(detail, recorded).ok_or(ApiError::Internal("an edited plan has no steps".into()))?;
    Ok(with_etag(plan))
}

/// The version `If-Match` names (`None` for `*`): 428 without the header, 400 when it names
/// no version.
fn if_match(headers: &HeaderMap) -> Result<Option<i32>, ApiError> {
    let Some(value) = headers.get(axum::http::header::IF_MATCH) else {
        return Err(ApiError::PreconditionRequired {
            header: "If-Match",
            message: "an edit must say which version of the plan it was made from: send the `ETag` of \
                      GET /tasks/{id}/plan"
                .into(),
        });
    };
    let bad = || ApiError::BadParameter {
        field: "If-Match".into(),
        message: "must be a plan version as its ETag gives it (\"2\"), or *".into(),
    };
    let raw = value.to_str().map_err(|_| bad())?.trim();
    if raw == "*" {
        return Ok(None);
    }
    let tag = raw.strip_prefix("W/").unwrap_or(raw);
    let tag = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(tag);
    tag.parse::<i32>().ok().filter(|v| *v >= 1).map(Some).ok_or_else(bad)
}

fn stale(expected: i32, current: i32) -> ApiError {
    ApiError::PreconditionFailed {
        header: "If-Match",
        message: format!("the plan is at version {current}, not {expected}: read it again and edit that"),
    }
}

fn not_editable(detail: &TaskDetail) -> ApiError {
    let task = &detail.task;
    let why = match (task.status, task.required_action) {
        (TaskStatus::RequiresAction, Some(RequiredAction::ToolApproval)) => {
            "it waits for tool approvals; decide them first".to_owned()
        }
        (TaskStatus::Pending | TaskStatus::Planning, _) => "it has no plan yet".to_owned(),
        (status, _) => format!("it is {status}"),
    };
    ApiError::Conflict {
        message: format!(
            "the plan of task {} cannot be edited: {why}; only a task paused for plan approval or running can be",
            task.id
        ),
    }
}

/// The edited plan, checked, in the body's order; which of its steps stay (`kept[i]` is the
/// started step body entry `i` names, if any).
struct Edited {
    plan: Plan,
    /// For each body step, the started step it keeps.
    keeps: Vec<Option<StepId>>,
    /// The started steps, which stay.
    kept: Vec<StepId>,
}

fn edited_plan(
    detail: &TaskDetail,
    request: &EditPlanRequest,
    known: &[&str],
    limits: &planner::PlanLimits,
) -> Result<Edited, ApiError> {
    let started: HashMap<StepId, &Step> = detail
        .steps
        .iter()
        .filter(|s| !matches!(s.status, StepStatus::Pending | StepStatus::Skipped))
        .map(|s| (s.id, s))
        .collect();
    let mut keeps = Vec::with_capacity(request.steps.len());
    let mut named = HashSet::new();
    let mut steps = Vec::with_capacity(request.steps.len());
    for (i, s) in request.steps.iter().enumerate() {
        let keep = s.id.filter(|id| started.contains_key(id));
        if let Some(id) = keep
            && !named.insert(id)
        {
            return Err(invalid(&format!("steps[{i}].id"), format!("step {id} is named twice")));
        }
        keeps.push(keep);
        let instruction = s.instruction.trim().to_owned();
        if instruction.is_empty() {
            return Err(invalid(&format!("steps[{i}].instruction"), "the instruction is blank"));
        }
        let title = s.title.as_deref().map(str::trim).filter(|t| !t.is_empty());
        steps.push(PlannedStep {
            title: title.map(str::to_owned).unwrap_or_else(|| make_title(&instruction)),
            instruction,
            agent: s.agent.trim().to_owned(),
            depends_on: s.depends_on.clone(),
            required: s.required,
        });
    }
    let plan = Plan { steps };
    validate(&plan, known, limits).map_err(plan_error)?;

    // Started steps stay, as they are; new steps cannot wait for a failed one.
    let mut kept: Vec<&Step> = started.values().copied().collect();
    kept.sort_by_key(|s| s.position);
    if let Some(left_out) = kept.iter().find(|s| !named.contains(&s.id)) {
        return Err(invalid(
            "steps",
            format!(
                "step {} ({}) is {}: a step that has started stays in the plan; name it by its id",
                left_out.id, left_out.title, left_out.status
            ),
        ));
    }
    for (i, (step, keep)) in plan.steps.iter().zip(&keeps).enumerate() {
        let depends_on: HashSet<Option<StepId>> = step.depends_on.iter().map(|&d| keeps[d]).collect();
        match keep.map(|id| started[&id]) {
            Some(was) => {
                let same_dependencies = depends_on == was.depends_on.iter().map(|&d| Some(d)).collect::<HashSet<_>>();
                if step.title != was.title
                    || step.instruction != was.instruction
                    || step.agent != was.agent
                    || step.required != was.required
                    || !same_dependencies
                {
                    return Err(invalid(
                        &format!("steps[{i}]"),
                        format!("step {} is {}: a step that has started cannot change", was.id, was.status),
                    ));
                }
            }
            None => {
                if let Some(&d) = step
                    .depends_on
                    .iter()
                    .find(|&&d| keeps[d].is_some_and(|id| started[&id].status == StepStatus::Failed))
                {
                    return Err(invalid(
                        &format!("steps[{i}].depends_on"),
                        format!("step {d} failed: no step can wait for it"),
                    ));
                }
            }
        }
    }
    Ok(Edited { plan, keeps, kept: kept.iter().map(|s| s.id).collect() })
}

/// The new steps to insert, and the whole plan to record: the kept steps first (in plan
/// order), then the new ones in the body's order, placed after every step the task has had.
fn new_steps(detail: &TaskDetail, edited: &Edited, attempts_of: impl Fn(&str) -> i32) -> (Vec<NewStep>, Vec<NewStep>) {
    let first = detail.steps.iter().map(|s| s.position).max().map_or(0, |p| p + 1);
    let new_ids: Vec<Option<StepId>> =
        edited.keeps.iter().map(|keep| if keep.is_some() { None } else { Some(StepId::new()) }).collect();
    let id_of = |i: usize| edited.keeps[i].or(new_ids[i]).expect("each step is kept or new");
    let mut steps = Vec::new();
    for (i, step) in edited.plan.steps.iter().enumerate() {
        let Some(id) = new_ids[i] else { continue };
        steps.push(NewStep {
            id,
            position: first + steps.len() as i32,
            title: step.title.clone(),
            instruction: step.instruction.clone(),
            agent: step.agent.clone(),
            depends_on: step.depends_on.iter().map(|&d| id_of(d)).collect(),
            max_attempts: attempts_of(&step.agent),
            required: step.required,
        });
    }
    let by_id: HashMap<StepId, &Step> = detail.steps.iter().map(|s| (s.id, s)).collect();
    let kept = edited.kept.iter().map(|id| by_id[id]).map(|s| NewStep {
        id: s.id,
        position: s.position,
        title: s.title.clone(),
        instruction: s.instruction.clone(),
        agent: s.agent.clone(),
        depends_on: s.depends_on.clone(),
        max_attempts: s.max_attempts,
        required: s.required,
    });
    let plan = kept.chain(steps.iter().cloned()).collect();
    (steps, plan)
}

/// A planner's verdict as a 422 naming the step and field at fault.
fn plan_error(e: PlanError) -> ApiError {
    let field = match &e {
        PlanError::Empty | PlanError::TooManySteps { .. } => "steps".to_owned(),
        PlanError::BlankField { step, field } => format!("steps[{step}].{field}"),
        PlanError::TitleTooLong { step, .. } => format!("steps[{step}].title"),
        PlanError::InstructionTooLong { step, .. } => format!("steps[{step}].instruction"),
        PlanError::UnknownAgent { step, .. } => format!("steps[{step}].agent"),
        PlanError::BadDependency { step, .. }
        | PlanError::DuplicateDependency { step, .. }
        | PlanError::Cycle { step } => format!("steps[{step}].depends_on"),
        PlanError::EmptyDescription | PlanError::Model(_) => "steps".to_owned(),
    };
    invalid(&field, e.to_string())
}
