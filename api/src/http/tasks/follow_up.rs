//! `POST /tasks/{id}/follow-ups`: a task that continues an ended one, in the same thread.
//!
//! A follow-up is submitted the way `POST /tasks` submits a task (the same field checks,
//! idempotency keys, rate limit class, quotas and running-task cap, `Prefer: wait`, lifecycle
//! event and webhook), as a task of the parent's user, with its thread (`crate::thread`) before
//! its own context. It needs the parent's outcome, so a parent that has not ended is a 409.

use std::sync::Arc;

use axum::{
    Extension,
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
};
use sha2::{Digest, Sha256};

use super::{
    create,
    dto::{FollowUpRequest, TaskResponse},
};
use crate::{
    auth::Caller,
    domain::TaskId,
    http::{
        AppState, WaitSlots, access,
        error::{ApiError, Problem},
        extract::JsonBody,
        validate::invalid,
    },
    store::FollowsUp,
    thread,
    webhooks::TargetPolicy,
};

/// Follow up on a task
///
/// Creates a task that continues task `id` in its thread. Its steps see, before the follow-up's
/// own `context`, the parent's goal (its description) as a user message and how it ended as
/// an assistant message (its result; for a partial, failed or cancelled parent, what completed
/// and what did not), preceded, when there is any, by the thread so far, condensed: the goals
/// and outcomes of the tasks before the parent and the last messages of the parent's work (at
/// most 4000 characters). Its `thread_id` is the parent's and its `parent_task_id` the parent;
/// it belongs to the parent's user. Nothing else is inherited: priority, budgets, type, agent
/// hints and callback come from this request.
///
/// Only the parent's user (or an admin key) may follow it up; for anyone else the parent does
/// not exist (404). The parent must have ended (`completed`, `partial`, `failed` or
/// `cancelled`): a follow-up needs its outcome, so one that is still under way is a 409.
///
/// Otherwise it behaves as `POST /tasks`: the same fields (without `user_id`) checked the same
/// way, `Idempotency-Key`, the task-creation rate limit, budgets, quotas and the running-task
/// cap, `Prefer: wait=N`, webhooks, and the same answers (`202` with `Location`, `200` when
/// waited for and ended).
#[utoipa::path(
    post,
    path = "/tasks/{id}/follow-ups",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task to follow up (a UUID)."),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 200 visible ASCII characters; makes retries of this request safe."),
        ("Prefer" = Option<String>, Header, description = "`wait=N`: answer once the follow-up has ended (`200`), or after N seconds (at most 60) with `202`, whichever comes first."),
    ),
    request_body(content = FollowUpRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "With `Prefer: wait`: the follow-up ended within the wait; it is answered with its steps.", body = TaskResponse,
            headers(
                ("Location" = String, description = "`/tasks/{id}` of the follow-up."),
                ("Idempotent-Replayed" = String, description = "`true` when the answer replays an earlier request with the same Idempotency-Key."),
                ("Preference-Applied" = String, description = "`wait=N`, N the seconds granted (at most 60)."),
                ("Vary" = String, description = "`Prefer`: the answer depends on it."),
            )),
        (status = 202, description = "The follow-up was accepted (or replayed for the same Idempotency-Key); with `Prefer: wait`, it had not ended when the wait was over.", body = TaskResponse,
            headers(
                ("Location" = String, description = "`/tasks/{id}` of the follow-up."),
                ("Idempotent-Replayed" = String, description = "`true` when the answer replays an earlier request with the same Idempotency-Key."),
                ("Preference-Applied" = String, description = "`wait=N` when the server waited, N the seconds granted (at most 60)."),
                ("Vary" = String, description = "`Prefer`: the answer depends on it."),
            )),
        (status = 400, description = "The id is not a UUID, the body is not JSON of the expected shape (`user_id` included: the follow-up is the parent's user's), or the Idempotency-Key header is not acceptable.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`priority` is `high` and the key's user may not ask for it.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task, or it is another user's.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The parent has not ended yet (its outcome is what a follow-up continues from), or the Idempotency-Key was already used with a different body or parent.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 256 KiB.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field has a value that is not acceptable; `field` names it.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres or Redis is unavailable; retry later.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn create_follow_up(
    State(state): State<AppState>,
    Extension(slots): Extension<Arc<WaitSlots>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    // Set by the app from WEBHOOK_ALLOW_PRIVATE; without it, private targets are refused.
    policy: Option<Extension<TargetPolicy>>,
    JsonBody(request): JsonBody<FollowUpRequest>,
) -> Result<Response, ApiError> {
    let parent_id = super::task_id(&id)?;
    let idempotency_key = create::idempotency_key(&headers)?;
    let policy = policy.map(|Extension(p)| p).unwrap_or_default();
    let request_hash = request_hash(parent_id, &request);
    let parent = access::visible_task(state.tasks.as_ref(), &caller, parent_id).await?;

    // Checked before the fields, so the limit a follow-up has is the one it is told about.
    if request.context.as_ref().is_some_and(|c| c.len() > thread::OWN_CONTEXT_MESSAGES) {
        return Err(invalid(
            "context",
            format!(
                "must hold at most {} messages: a follow-up's thread takes {} of a task's {}",
                thread::OWN_CONTEXT_MESSAGES,
                thread::SEED_MESSAGES,
                crate::store::STEP_CONTEXT_MESSAGES
            ),
        ));
    }
    let agent_hints = create::agent_hints(request.agent_hints.as_deref(), &state.agents)?;
    let require_approval = create::approval_tools(request.require_approval.as_deref(), &state.tools)?;
    let owner = parent.task.user_id.clone();
    // A follow-up that does not say follows the deployment (REPLAN_ON_FAILURE), as a task does.
    let replan = request.replan.unwrap_or(state.replan_on_failure);
    let mut task = create::new_task(request.into(), owner, request_hash, idempotency_key, policy)?;
    task.replan = replan;
    task.agent_hints = agent_hints;
    task.require_approval = require_approval;

    if !parent.task.status.is_terminal() {
        return Err(ApiError::Conflict {
            message: format!(
                "task {parent_id} is {}: a follow-up continues from a task's outcome, so it can follow only a task that has ended (completed, partial, failed or cancelled)",
                parent.task.status
            ),
        });
    }
    let history = state.tasks.thread_history(parent_id, thread::EARLIER_TASKS, thread::RECENT_WORK_MESSAGES).await?;
    let mut context = thread::seed(&parent, &history);
    context.append(&mut task.context);
    task.context = context;
    task.follows = Some(FollowsUp { parent: parent_id, thread: parent.task.thread_id });
    create::submit(&state, &slots, &caller, &headers, task).await
}

/// Tells a replay from another use of the idempotency key: the body byte for byte, and the
/// parent, so that the same key and body sent to another parent is a conflict, not a replay.
fn request_hash(parent: TaskId, request: &FollowUpRequest) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"follow-up\0");
    hasher.update(parent.0.as_bytes());
    hasher.update(serde_json::to_vec(request).unwrap_or_default());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> FollowUpRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_request_hash_covers_the_body_and_the_parent() {
        let (a, b) = (TaskId::new(), TaskId::new());
        let hash =
            |parent, description: &str| request_hash(parent, &body(serde_json::json!({"description": description})));
        assert_eq!(hash(a, "Shorter."), hash(a, "Shorter."));
        assert_ne!(hash(a, "Shorter."), hash(b, "Shorter."));
        assert_ne!(hash(a, "Shorter."), hash(a, "Longer."));
    }

    #[test]
    fn a_user_id_is_not_part_of_a_follow_up() {
        let refused =
            serde_json::from_value::<FollowUpRequest>(serde_json::json!({"description": "d", "user_id": "u"}));
        assert!(refused.unwrap_err().to_string().contains("user_id"));
    }
}
