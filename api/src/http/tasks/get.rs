//! `GET /tasks/{id}`: the task with its steps.

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
};

/// Get a task
///
/// The task with its totals and every step of its plan.
#[utoipa::path(
    get,
    path = "/tasks/{id}",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task id (a UUID)."),
    ),
    responses(
        (status = 200, description = "The task, with `steps`.", body = TaskResponse),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn get_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TaskResponse>, ApiError> {
    let id = super::task_id(&id)?;
    Ok(Json(access::visible_task(state.tasks.as_ref(), &caller, id).await?.into()))
}
