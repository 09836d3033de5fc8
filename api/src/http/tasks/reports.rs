//! `GET /tasks/{id}/cost` and `GET /tasks/{id}/tool-calls`: the task's accounting.

use axum::{
    Json,
    extract::{Path, State},
};
use serde::Serialize;

use crate::{
    auth::Caller,
    http::{
        AppState, access,
        error::{ApiError, Problem},
    },
    store::{CostReport, ToolCallRow},
};

/// Get a task's cost
///
/// Totals, the planning share, and breakdowns per step and per model; every figure is a sum
/// of the task's recorded model calls.
#[utoipa::path(
    get,
    path = "/tasks/{id}/cost",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task id (a UUID)."),
    ),
    responses(
        (status = 200, description = "The task's cost report.", body = CostReport),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn task_cost(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CostReport>, ApiError> {
    let id = super::task_id(&id)?;
    access::check_task(state.tasks.as_ref(), &caller, id).await?;
    let report = state.tasks.task_cost(id).await?.ok_or(ApiError::NotFound { resource: "task", id: id.to_string() })?;
    Ok(Json(report))
}

/// Every tool call of a task, in order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolCallList {
    pub items: Vec<ToolCallRow>,
}

/// List a task's tool calls
///
/// Every tool call of the task in order, rejected ones included.
#[utoipa::path(
    get,
    path = "/tasks/{id}/tool-calls",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task id (a UUID)."),
    ),
    responses(
        (status = 200, description = "The task's tool calls.", body = ToolCallList),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn tool_calls(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ToolCallList>, ApiError> {
    let id = super::task_id(&id)?;
    access::check_task(state.tasks.as_ref(), &caller, id).await?;
    let items = state.tasks.tool_calls(id).await?.ok_or(ApiError::NotFound { resource: "task", id: id.to_string() })?;
    Ok(Json(ToolCallList { items }))
}
