//! `POST /tasks/{id}/cancel`: ends a task that has not ended.

use axum::{
    Json,
    extract::{Path, State},
};

use super::dto::TaskResponse;
use crate::{
    auth::Caller,
    http::{
        AppState, access,
        error::{ApiError, Problem},
    },
    store::CancelOutcome,
};

/// Cancel a task
///
/// Ends a task that has not ended; workers running its steps stop at their next model or
/// tool call.
#[utoipa::path(
    post,
    path = "/tasks/{id}/cancel",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task id (a UUID)."),
    ),
    responses(
        (status = 200, description = "The task, now `cancelled`, with its steps.", body = TaskResponse),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task already ended.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn cancel_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TaskResponse>, ApiError> {
    let id = super::task_id(&id)?;
    let owner = access::check_task(state.tasks.as_ref(), &caller, id).await?;
    match state.lifecycle.cancel(id, &owner).await? {
        CancelOutcome::Cancelled => {}
        CancelOutcome::AlreadyFinished(status) => {
            return Err(ApiError::Conflict { message: format!("task {id} already ended: it is {status}") });
        }
        CancelOutcome::NotFound => return Err(ApiError::NotFound { resource: "task", id: id.to_string() }),
    }
    let detail = state.tasks.task(id).await?.ok_or(ApiError::NotFound { resource: "task", id: id.to_string() })?;
    Ok(Json(detail.into()))
}
