//! `GET /workers`: the live workers of the deployment and what each is running.

use axum::{Json, extract::State};
use serde::Serialize;

use super::{
    AppState,
    error::{ApiError, Problem},
};
use crate::{auth::Caller, coordination::WorkerInfo};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

/// List workers
///
/// The live workers of the deployment (those with a recent heartbeat) and what each is running.
/// Admin keys only: it shows every user's work.
#[utoipa::path(
    get,
    path = "/workers",
    tag = "operations",
    responses(
        (status = 200, description = "The live workers.", body = WorkerList),
        (status = 403, description = "The API key is not an admin key.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn list_workers(State(state): State<AppState>, caller: Caller) -> Result<Json<WorkerList>, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden { field: "Authorization".into(), message: "needs an admin API key".into() });
    }
    let workers = state.coordination.workers().await?;
    Ok(Json(WorkerList { workers }))
}
