//! `/tasks`: submit, read and list tasks.

mod create;
mod dto;
mod get;
mod list;

use axum::{Router, routing::get};

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tasks", get(list::list_tasks).post(create::create_task))
        .route("/tasks/{id}", get(get::get_task))
}
