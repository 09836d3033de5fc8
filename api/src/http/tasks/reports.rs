//! `GET /tasks/{id}/cost` and `GET /tasks/{id}/tool-calls`: the task's accounting.

use axum::{
    Json,
    extract::{Path, State},
};
use serde::Serialize;

use crate::{
    http::{AppState, error::ApiError},
    store::{CostReport, ToolCallRow},
};

/// Totals, the planning share, and breakdowns per step and per model; every figure is a sum
/// of the task's recorded model calls.
pub async fn task_cost(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<CostReport>, ApiError> {
    let id = super::task_id(&id)?;
    let report = state.tasks.task_cost(id).await?.ok_or(ApiError::NotFound { resource: "task", id: id.to_string() })?;
    Ok(Json(report))
}

#[derive(Debug, Serialize)]
pub struct ToolCallList {
    pub items: Vec<ToolCallRow>,
}

/// Every tool call of the task in order, rejected ones included.
pub async fn tool_calls(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ToolCallList>, ApiError> {
    let id = super::task_id(&id)?;
    let items = state.tasks.tool_calls(id).await?.ok_or(ApiError::NotFound { resource: "task", id: id.to_string() })?;
    Ok(Json(ToolCallList { items }))
}
