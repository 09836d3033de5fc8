//! `GET /tasks/{id}`: the task with its steps.

use axum::{
    Json,
    extract::{Path, State},
};

use super::dto::TaskResponse;
use crate::{
    domain::TaskId,
    http::{AppState, error::ApiError},
};

pub async fn get_task(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<TaskResponse>, ApiError> {
    let id: TaskId =
        id.parse().map_err(|_| ApiError::BadParameter { field: "id".into(), message: "must be a UUID".into() })?;
    let detail = state.tasks.task(id).await?.ok_or(ApiError::NotFound { resource: "task", id: id.to_string() })?;
    Ok(Json(detail.into()))
}
