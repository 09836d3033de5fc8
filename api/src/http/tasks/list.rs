//! `GET /tasks`: newest first, filtered by user, status, type and thread, paginated by an opaque
//! cursor.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::dto::{TaskListResponse, TaskResponse};
use crate::{
    auth::Caller,
    domain::{TaskId, TaskStatus},
    http::{
        AppState, access,
        error::{ApiError, Problem},
        extract::QueryParams,
        validate,
    },
    store::TaskQuery,
};

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

/// Every parameter arrives as text so a bad value gets an error naming it.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this user's tasks. A non-admin API key sees only its own user's tasks, whatever
    /// this says (naming another user is a 403).
    user_id: Option<String>,
    /// Only tasks in this status.
    #[param(value_type = Option<TaskStatus>)]
    status: Option<String>,
    /// Only tasks of this type (`task_type` at submission).
    task_type: Option<String>,
    /// Only the tasks of this thread (a task's `thread_id`): its first task and every
    /// follow-up in it. The other filters and the user scope apply too.
    #[param(value_type = Option<uuid::Uuid>)]
    thread_id: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List tasks
///
/// Newest first, optionally filtered by user, status, task type and thread, paginated by an
/// opaque cursor.
#[utoipa::path(
    get,
    path = "/tasks",
    tag = "tasks",
    params(ListParams),
    responses(
        (status = 200, description = "A page of tasks.", body = TaskListResponse),
        (status = 400, description = "A query parameter is not acceptable; `field` names it.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`user_id` names another user than the API key's.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn list_tasks(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(mut params): QueryParams<ListParams>,
) -> Result<Json<TaskListResponse>, ApiError> {
    params.user_id = access::list_scope(&caller, params.user_id.as_deref())?;
    let query = parse(params)?;
    let page = state.tasks.list_tasks(&query).await?;
    Ok(Json(TaskListResponse {
        items: page.tasks.into_iter().map(TaskResponse::from).collect(),
        next_cursor: page.next.map(|(at, id)| encode_cursor(at, id)),
    }))
}

fn bad(field: &str, message: &str) -> ApiError {
    ApiError::BadParameter { field: field.to_owned(), message: message.to_owned() }
}

fn parse(params: ListParams) -> Result<TaskQuery, ApiError> {
    let status = params
        .status
        .map(|s| {
            s.parse::<TaskStatus>()
                .map_err(|_| bad("status", "must be one of pending, planning, running, completed, failed, cancelled"))
        })
        .transpose()?;
    let limit = match params.limit {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| bad("limit", "must be an integer from 1 to 100"))?,
    };
    let after = params
        .cursor
        .map(|c| decode_cursor(&c).ok_or_else(|| bad("cursor", "is not a cursor this API returned")))
        .transpose()?;
    let user_id = params.user_id.filter(|u| !u.is_empty());
    let task_type = params
        .task_type
        .map(|t| validate::task_type(&t).then_some(t).ok_or_else(|| bad("task_type", validate::TASK_TYPE_RULE)))
        .transpose()?;
    let thread_id = params
        .thread_id
        .map(|t| t.trim().parse::<TaskId>().map_err(|_| bad("thread_id", "must be a UUID (a task's `thread_id`)")))
        .transpose()?;
    Ok(TaskQuery { user_id, status, task_type, thread_id, after, limit })
}

/// `<microseconds since epoch>_<task id>`: the position of the last task of a page.
fn encode_cursor(at: DateTime<Utc>, id: TaskId) -> String {
    format!("{}_{}", at.timestamp_micros(), id)
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, TaskId)> {
    let (micros, id) = cursor.split_once('_')?;
    Some((DateTime::from_timestamp_micros(micros.parse().ok()?)?, id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(status: Option<&str>, limit: Option<&str>, cursor: Option<&str>) -> ListParams {
        ListParams {
            user_id: None,
            status: status.map(Into::into),
            task_type: None,
            thread_id: None,
            limit: limit.map(Into::into),
            cursor: cursor.map(Into::into),
        }
    }

    fn field(r: Result<TaskQuery, ApiError>) -> String {
        match r {
            Err(ApiError::BadParameter { field, .. }) => field,
            other => panic!("expected a bad parameter, got {other:?}"),
        }
    }

    #[test]
    fn cursors_round_trip() {
        let at = DateTime::from_timestamp_micros(1_763_700_000_123_456).unwrap();
        let id = TaskId::new();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        assert_eq!(decode_cursor("nope"), None);
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(field(parse(params(Some("done"), None, None))), "status");
        assert_eq!(field(parse(params(None, Some("0"), None))), "limit");
        assert_eq!(field(parse(params(None, Some("101"), None))), "limit");
        assert_eq!(field(parse(params(None, Some("x"), None))), "limit");
        assert_eq!(field(parse(params(None, None, Some("1_2")))), "cursor");
        let typed = |t: &str| ListParams { task_type: Some(t.into()), ..params(None, None, None) };
        assert_eq!(field(parse(typed("Report"))), "task_type");
        assert_eq!(field(parse(typed(""))), "task_type");
        assert_eq!(parse(typed("triage.v2")).unwrap().task_type.as_deref(), Some("triage.v2"));
        let threaded = |t: &str| ListParams { thread_id: Some(t.into()), ..params(None, None, None) };
        assert_eq!(field(parse(threaded("not-a-uuid"))), "thread_id");
        assert_eq!(field(parse(threaded(""))), "thread_id");
        let thread = TaskId::new();
        assert_eq!(parse(threaded(&thread.to_string())).unwrap().thread_id, Some(thread));
        assert_eq!(parse(params(Some("completed"), Some("5"), None)).unwrap().limit, 5);
    }
}
