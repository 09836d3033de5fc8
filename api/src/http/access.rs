//! Which user a request acts as, and whether it may touch a resource: the HTTP face of
//! [`crate::auth::Caller`].

use super::error::ApiError;
use crate::{
    auth::{ActAsError, Caller},
    domain::TaskId,
    store::{TaskDetail, TaskStore},
};

/// Where a request names its user, which decides how a missing one is reported.
#[derive(Debug, Clone, Copy)]
pub enum Named {
    Body,
    Query,
}

/// The user the request acts as, given the `user_id` it names (validated), or 403 when the
/// caller may not act as that user.
pub fn acting_user(caller: &Caller, requested: Option<&str>, named: Named) -> Result<String, ApiError> {
    let requested = requested.map(|raw| super::validate::user_id(raw).map_err(|e| relocate(e, named))).transpose()?;
    caller.act_as(requested.as_deref()).map_err(|e| refusal(e, named))
}

/// The user a listing is limited to (`None`: everyone, for admins).
pub fn list_scope(caller: &Caller, requested: Option<&str>) -> Result<Option<String>, ApiError> {
    let requested =
        requested.map(|raw| super::validate::user_id(raw).map_err(|e| relocate(e, Named::Query))).transpose()?;
    caller.list_scope(requested.as_deref()).map_err(|e| refusal(e, Named::Query))
}

/// The task's owner when the caller may access task `id`; otherwise 404, as for a task
/// that does not exist.
pub async fn check_task(tasks: &dyn TaskStore, caller: &Caller, id: TaskId) -> Result<String, ApiError> {
    match tasks.task_owner(id).await? {
        Some(owner) if caller.may_access(&owner) => Ok(owner),
        _ => Err(ApiError::NotFound { resource: "task", id: id.to_string() }),
    }
}

/// Task `id` with its steps when the caller may see it; otherwise 404, as for a task that
/// does not exist.
pub async fn visible_task(tasks: &dyn TaskStore, caller: &Caller, id: TaskId) -> Result<TaskDetail, ApiError> {
    match tasks.task(id).await? {
        Some(detail) if caller.may_access(&detail.task.user_id) => Ok(detail),
        _ => Err(ApiError::NotFound { resource: "task", id: id.to_string() }),
    }
}

fn refusal(e: ActAsError, named: Named) -> ApiError {
    match (e, named) {
        (ActAsError::OtherUser, _) => ApiError::Forbidden {
            field: "user_id".into(),
            message: "does not match the API key's user; only admin keys act for other users".into(),
        },
        (ActAsError::Missing, Named::Body) => {
            ApiError::Invalid { field: "user_id".into(), message: "is required when auth is disabled".into() }
        }
        (ActAsError::Missing, Named::Query) => {
            ApiError::BadParameter { field: "user_id".into(), message: "is required when auth is disabled".into() }
        }
    }
}

/// A query parameter's error is a 400 naming the parameter, not a body field's 422.
fn relocate(e: ApiError, named: Named) -> ApiError {
    match (e, named) {
        (ApiError::Invalid { field, message }, Named::Query) => ApiError::BadParameter { field, message },
        (e, _) => e,
    }
}
