//! `/tasks`: submit, follow up, read and list tasks.

pub(super) mod approvals;
pub(super) mod cancel;
pub(super) mod context;
pub(super) mod create;
pub(super) mod dto;
pub(super) mod events;
pub(super) mod follow_up;
pub(super) mod get;
pub(super) mod list;
pub(super) mod plan;
pub(super) mod plan_edit;
pub(super) mod reports;
pub(super) mod retry;
pub(super) mod start;
mod wait;
pub(super) mod webhook;

use crate::{domain::TaskId, http::error::ApiError};

/// Parses a task id from the path, or names the parameter.
fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse().map_err(|_| ApiError::BadParameter { field: "id".into(), message: "must be a UUID".into() })
}

use axum::{
    Router,
    routing::{get, post},
};

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tasks", get(list::list_tasks).post(create::create_task))
        .route("/tasks/{id}", get(get::get_task))
        .route("/tasks/{id}/cancel", post(cancel::cancel_task))
        .route("/tasks/{id}/retry", post(retry::retry_task))
        .route("/tasks/{id}/context", post(context::add_context))
        .route("/tasks/{id}/plan", get(plan::get_plan).put(plan_edit::edit_plan))
        .route("/tasks/{id}/start", post(start::start_task))
        .route("/tasks/{id}/plan/versions", get(plan::plan_versions))
        .route("/tasks/{id}/follow-ups", post(follow_up::create_follow_up))
        .route("/tasks/{id}/events", get(events::task_events))
        .route("/tasks/{id}/cost", get(reports::task_cost))
        .route("/tasks/{id}/tool-calls", get(reports::tool_calls))
        .route("/tasks/{id}/webhook", get(webhook::task_webhook))
        .route("/tasks/{id}/approvals", get(approvals::list_approvals))
        .route("/tasks/{id}/approvals/{call_id}", post(approvals::decide))
}
