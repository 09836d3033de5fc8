//! `POST /tasks/{id}/start`: runs a task that was paused for plan approval.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};

use super::dto::TaskResponse;
use crate::{
    auth::Caller,
    http::{
        AppState, access,
        error::{ApiError, Problem},
    },
    store::StartOutcome,
};

/// Start a paused task
///
/// Runs a task submitted with `start: paused` once its plan is approved: the task leaves
/// `requires_action` (`plan_approval`) for `running`, its steps whose dependencies are done
/// (the plan's roots) are queued, and a `task_started` event is written. The plan that runs is
/// the current version (`GET /tasks/{id}/plan`), edits included.
#[utoipa::path(
    post,
    path = "/tasks/{id}/start",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task id (a UUID)."),
    ),
    responses(
        (status = 202, description = "The task, now running, with its steps.", body = TaskResponse),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task is not paused for plan approval: it is still being planned, already started, waiting for tool approvals, or ended.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres or Redis is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn start_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TaskResponse>), ApiError> {
    let id = super::task_id(&id)?;
    access::check_task(state.tasks.as_ref(), &caller, id).await?;
    // Should the jobs not be enqueued, the steps are ready in Postgres and the reconciler
    // enqueues them within RECONCILE_MIN_AGE_MS.
    match state.lifecycle.start(id).await? {
        StartOutcome::Started { ready, .. } => tracing::info!(task = %id, ready = ready.len(), "paused task started"),
        StartOutcome::NotPaused(status) => {
            return Err(ApiError::Conflict {
                message: format!(
                    "task {id} is {status}: only a task paused for plan approval (requires_action, plan_approval) \
                     can be started"
                ),
            });
        }
        StartOutcome::NotFound => return Err(ApiError::NotFound { resource: "task", id: id.to_string() }),
    }
    let detail = state.tasks.task(id).await?.ok_or(ApiError::NotFound { resource: "task", id: id.to_string() })?;
    Ok((StatusCode::ACCEPTED, Json(detail.into())))
}
