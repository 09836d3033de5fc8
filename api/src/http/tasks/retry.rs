//! `POST /tasks/{id}/retry`: re-drives a failed task from where it failed.

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
    store::RetryOutcome,
};

/// Retry a failed or partial task
///
/// Runs a `failed` or `partial` task again from where it failed: completed steps keep their outputs;
/// failed, skipped and cancelled steps start over with fresh attempts (a task that failed
/// while planning is planned again). The task's `run` goes up by one, a `task_retried` event
/// starts the new run on the event stream, and its ending sends its webhook again. A retry
/// does not wait for the user's running-task cap.
#[utoipa::path(
    post,
    path = "/tasks/{id}/retry",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task id (a UUID)."),
    ),
    responses(
        (status = 202, description = "The task, running (or pending) again, with its steps.", body = TaskResponse),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task is neither failed nor partial: it is still under way, or it completed or was cancelled.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres or Redis is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn retry_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TaskResponse>), ApiError> {
    let id = super::task_id(&id)?;
    let owner = access::check_task(state.tasks.as_ref(), &caller, id).await?;
    // Should the jobs not be enqueued, the task already runs again in Postgres and the
    // reconciler enqueues its ready work within RECONCILE_MIN_AGE_MS.
    match state.lifecycle.retry(id, &owner).await? {
        RetryOutcome::Retried { run, .. } => tracing::info!(task = %id, run, "task retried"),
        RetryOutcome::NotRetryable(status) => {
            return Err(ApiError::Conflict {
                message: format!("task {id} is {status}: only a failed or partial task can be retried"),
            });
        }
        RetryOutcome::NotFound => return Err(ApiError::NotFound { resource: "task", id: id.to_string() }),
    }
    let detail = state.tasks.task(id).await?.ok_or(ApiError::NotFound { resource: "task", id: id.to_string() })?;
    Ok((StatusCode::ACCEPTED, Json(detail.into())))
}
