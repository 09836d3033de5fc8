//! `POST /tasks/{id}/context`: adds to the context of a task that has not started.

use axum::{
    Json,
    extract::{Path, State},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{create::context_messages, dto::ContextMessage};
use crate::{
    auth::Caller,
    http::{
        AppState, access,
        error::{ApiError, Problem},
        extract::JsonBody,
    },
    store::{AddContext, STEP_CONTEXT_MESSAGES},
};

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddContextRequest {
    /// Messages to append, in order (`user`, `assistant` or `system`).
    #[schema(min_items = 1, max_items = 50)]
    pub messages: Vec<ContextMessage>,
}

/// The task's context after the addition.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContextResponse {
    /// Every context message of the task, oldest first.
    pub context: Vec<ContextMessage>,
}

/// Add context to a pending task
///
/// Appends messages to the task's context, the short-term memory every step of the task
/// sees, while the task is still `pending` (submitted, not yet planned): to pre-seed it with
/// what came up after the submission. A task holds at most 50 context messages. The task's
/// `task_hash` is of its submission and does not change.
#[utoipa::path(
    post,
    path = "/tasks/{id}/context",
    tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task id (a UUID).")),
    request_body(content = AddContextRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The task's context, the new messages last.", body = ContextResponse),
        (status = 400, description = "The id is not a UUID, or the body is not JSON of this shape.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task is no longer pending: its steps have started from the context they had.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A message is not acceptable, or the context would hold more than 50 messages (`field` says which).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn add_context(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<AddContextRequest>,
) -> Result<Json<ContextResponse>, ApiError> {
    let id = super::task_id(&id)?;
    access::check_task(state.tasks.as_ref(), &caller, id).await?;
    if request.messages.is_empty() {
        return Err(ApiError::Invalid { field: "messages".into(), message: "must hold at least one message".into() });
    }
    let messages = context_messages("messages", request.messages)?;
    match state.tasks.add_context(id, &messages).await? {
        AddContext::Added(context) => Ok(Json(ContextResponse {
            context: context.into_iter().map(|(role, content)| ContextMessage { role, content }).collect(),
        })),
        AddContext::NotPending(status) => Err(ApiError::Conflict {
            message: format!("task {id} is {status}: context can be added only while it is pending"),
        }),
        AddContext::Full(held) => Err(ApiError::Invalid {
            field: "messages".into(),
            message: format!("the task holds {held} context messages; at most {STEP_CONTEXT_MESSAGES} fit"),
        }),
        AddContext::NotFound => Err(ApiError::NotFound { resource: "task", id: id.to_string() }),
    }
}
