//! `GET /tasks/{id}`: the task with its steps; with `Prefer: wait=N`, once it has ended.

use std::sync::Arc;

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};

use super::{
    dto::TaskResponse,
    wait::{self, Waiter},
};
use crate::{
    auth::Caller,
    http::{
        AppState, WaitSlots, access,
        error::{ApiError, Problem},
        prefer::Wait,
    },
};

/// Get a task
///
/// The task with its totals and every step of its plan. With `Prefer: wait=N` (N seconds,
/// at most 60; RFC 7240) the answer waits until the task has ended or N seconds have passed,
/// whichever comes first, and is the task as it is then; `Preference-Applied: wait=N` says
/// the server waited. A user may have at most `SSE_MAX_STREAMS_PER_USER` waits open at once;
/// beyond that the answer comes at once, without `Preference-Applied`. A `Prefer` header
/// that does not parse is ignored.
#[utoipa::path(
    get,
    path = "/tasks/{id}",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task id (a UUID)."),
        ("Prefer" = Option<String>, Header, description = "`wait=N`: answer once the task has ended, or after N seconds (at most 60), whichever comes first."),
    ),
    responses(
        (status = 200, description = "The task, with `steps`; with `Prefer: wait`, once it has ended or the wait is over.", body = TaskResponse,
            headers(
                ("Preference-Applied" = String, description = "`wait=N` when the server waited (N as granted, at most 60)."),
                ("Vary" = String, description = "`Prefer`: the answer depends on it."),
            )),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn get_task(
    State(state): State<AppState>,
    Extension(slots): Extension<Arc<WaitSlots>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = super::task_id(&id)?;
    // Subscribed before the read, so that an end committed after it still wakes the wait.
    let waiter = Wait::from_headers(&headers).map(|wait| Waiter::subscribe(&state.events, id, wait));
    let detail = access::visible_task(state.tasks.as_ref(), &caller, id).await?;
    let (detail, applied) = match waiter {
        Some(waiter) => {
            // Counted against the key's user; without keys, against the task's user.
            let user = caller.user_id.clone().unwrap_or_else(|| detail.task.user_id.clone());
            let waited = waiter.until_ended(state.tasks.as_ref(), &slots, &user, detail).await;
            (waited.detail, waited.applied)
        }
        None => (detail, None),
    };
    let mut response = Json(TaskResponse::from(detail)).into_response();
    wait::mark(&mut response, applied);
    Ok(response)
}
