//! `GET /tasks/{id}`: the task with its steps.

use axum::{
    Json,
    extract::{Path, State},
};

use super::dto::TaskResponse;
use crate::http::{AppState, error::ApiError};

pub async fn get_task(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<TaskResponse>, ApiError> {
    let id = super::task_id(&id)?;
    let detail = state.tasks.task(id).await?.ok_or(ApiError::NotFound { resource: "task", id: id.to_string() })?;
    Ok(Json(detail.into()))
}
