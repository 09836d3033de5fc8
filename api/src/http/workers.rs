//! `GET /workers`: the live workers of the deployment and what each is running.

use axum::{Json, extract::State};
use serde::Serialize;

use super::{
    AppState,
    error::{ApiError, Problem},
};
use crate::coordination::WorkerInfo;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

/// List workers
///
/// The live workers of the deployment (those with a recent heartbeat) and what each is running.
#[utoipa::path(
    get,
    path = "/workers",
    tag = "operations",
    responses(
        (status = 200, description = "The live workers.", body = WorkerList),
        (status = 503, description = "Redis is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn list_workers(State(state): State<AppState>) -> Result<Json<WorkerList>, ApiError> {
    let workers = state.coordination.workers().await?;
    Ok(Json(WorkerList { workers }))
}
