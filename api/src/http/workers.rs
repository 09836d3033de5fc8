//! `GET /workers`: the live workers of the deployment and what each is running.

use axum::{Json, extract::State};
use serde::Serialize;

use super::{AppState, error::ApiError};
use crate::coordination::WorkerInfo;

#[derive(Debug, Serialize)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

pub async fn list_workers(State(state): State<AppState>) -> Result<Json<WorkerList>, ApiError> {
    let workers = state.coordination.workers().await?;
    Ok(Json(WorkerList { workers }))
}
