//! `GET /tasks/{id}/approvals` and `POST /tasks/{id}/approvals/{call_id}`: the tool calls
//! that wait for a person, and their decisions (`crate::lifecycle` events `DecideApproval`,
//! `ResumeStep`, `ResumeTask`).

use axum::{
    Json,
    extract::{Path, State},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    auth::Caller,
    domain::{ApprovalStatus, StepId, TaskId},
    http::{
        AppState, access,
        error::{ApiError, Problem},
        extract::JsonBody,
    },
    store::{ApprovalDecision, ApprovalFilter, ApprovalRow, DecideOutcome},
};

/// Longest reason a decision may give; the model reads it.
const MAX_REASON_CHARS: usize = 2000;

/// What a person decides about a call.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Approve,
    Deny,
}

/// `POST /tasks/{id}/approvals/{call_id}` body.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"decision": "approve"}))]
pub struct DecideRequest {
    pub decision: DecisionKind,
    /// Why (at most 2000 characters). A denial's reason is what the model reads, so it can
    /// adapt; without one it reads that the call was denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Approve the call with these arguments instead of the model's. They must satisfy the
    /// tool's schema (`GET /tools`). Only with `approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<Value>,
}

/// A tool call that waited (or waits) for a person.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalResponse {
    /// The call's id: `POST /tasks/{id}/approvals/{call_id}` decides it, and it is the id of
    /// its `awaiting_approval` entry in `GET /tasks/{id}/tool-calls`.
    pub call_id: uuid::Uuid,
    pub task_id: TaskId,
    pub step_id: StepId,
    pub agent: String,
    pub tool: String,
    /// The arguments the model called the tool with.
    #[schema(value_type = Object)]
    pub arguments: Value,
    pub status: ApprovalStatus,
    /// The arguments a person changed the call to, when they did.
    #[schema(value_type = Option<Object>)]
    pub edited_arguments: Option<Value>,
    pub reason: Option<String>,
    /// `user:<id>` of whoever decided; `system` for an expiry or a task that ended.
    pub decided_by: Option<String>,
    pub requested_at: DateTime<Utc>,
    /// When an undecided call counts as denied (`APPROVAL_TIMEOUT_SECS` after the request).
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl From<ApprovalRow> for ApprovalResponse {
    fn from(r: ApprovalRow) -> Self {
        Self {
            call_id: r.id,
            task_id: r.task_id,
            step_id: r.step_id,
            agent: r.agent,
            tool: r.tool,
            arguments: r.arguments,
            status: r.status,
            edited_arguments: r.edited_arguments,
            reason: r.reason,
            decided_by: r.decided_by,
            requested_at: r.requested_at,
            expires_at: r.expires_at,
            decided_at: r.decided_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalListResponse {
    /// Every call of the task that waited for a person, oldest first.
    pub items: Vec<ApprovalResponse>,
}

/// List a task's approvals
///
/// The tool calls of the task that waited for a person's approval, pending and decided.
#[utoipa::path(
    get,
    path = "/tasks/{id}/approvals",
    tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task id (a UUID).")),
    responses(
        (status = 200, description = "The task's approvals, oldest first.", body = ApprovalListResponse),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn list_approvals(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ApprovalListResponse>, ApiError> {
    let id = super::task_id(&id)?;
    access::check_task(state.tasks.as_ref(), &caller, id).await?;
    let items = state.tasks.approvals(id, ApprovalFilter::All).await?.into_iter().map(ApprovalResponse::from).collect();
    Ok(Json(ApprovalListResponse { items }))
}

/// Approve or deny a tool call
///
/// Decides a tool call that waits for a person (`status: requires_action`,
/// `required_action: tool_approval`, listed in `pending_approvals`). An approved call runs,
/// with `arguments` instead of the model's when given; a denied one does not, and the model
/// reads the reason. Once none of its step's calls waits, the step continues on any worker
/// from where it stopped. Only the task's owner or an admin may decide; each call is decided
/// once.
#[utoipa::path(
    post,
    path = "/tasks/{id}/approvals/{call_id}",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task id (a UUID)."),
        ("call_id" = uuid::Uuid, Path, description = "The call id, from `pending_approvals`."),
    ),
    request_body(content = DecideRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The call, decided.", body = ApprovalResponse),
        (status = 400, description = "An id is not a UUID, or the body is not JSON of this shape.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task, or no such call in it.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The call was decided already, expired, or its task ended.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`reason` is too long, or `arguments` do not satisfy the tool's schema or come with a denial (`field` says which).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, call_id)): Path<(String, String)>,
    JsonBody(request): JsonBody<DecideRequest>,
) -> Result<Json<ApprovalResponse>, ApiError> {
    let id = super::task_id(&id)?;
    let call_id: uuid::Uuid = call_id
        .parse()
        .map_err(|_| ApiError::BadParameter { field: "call_id".into(), message: "must be a UUID".into() })?;
    access::check_task(state.tasks.as_ref(), &caller, id).await?;
    let not_found = || ApiError::NotFound { resource: "approval", id: call_id.to_string() };
    let one = ApprovalFilter::Call(call_id);
    let call = state.tasks.approvals(id, one).await?.pop().ok_or_else(not_found)?;
    if call.status != ApprovalStatus::Pending {
        return Err(already_decided(call_id, call.status));
    }
    let decision = decision(&state, &caller, &call, request)?;
    match state.lifecycle.decide(id, call_id, &decision).await? {
        DecideOutcome::Decided(_) => {}
        DecideOutcome::AlreadyDecided(status) => return Err(already_decided(call_id, status)),
        DecideOutcome::NotFound => return Err(not_found()),
    }
    let decided = state.tasks.approvals(id, one).await?.pop().ok_or_else(not_found)?;
    Ok(Json(decided.into()))
}

fn already_decided(call: uuid::Uuid, status: ApprovalStatus) -> ApiError {
    ApiError::Conflict { message: format!("call {call} was already decided: it is {status}") }
}

/// The request as a decision, its reason and edited arguments checked.
fn decision(
    state: &AppState,
    caller: &Caller,
    call: &ApprovalRow,
    request: DecideRequest,
) -> Result<ApprovalDecision, ApiError> {
    let invalid = |field: &str, message: String| ApiError::Invalid { field: field.into(), message };
    let reason = request.reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    if let Some(reason) = &reason
        && (reason.chars().count() > MAX_REASON_CHARS || reason.contains('\0'))
    {
        return Err(invalid("reason", format!("must be at most {MAX_REASON_CHARS} characters, without NUL")));
    }
    if let Some(arguments) = &request.arguments {
        if request.decision == DecisionKind::Deny {
            return Err(invalid("arguments", "only an approval may change the arguments".into()));
        }
        let edited = agents::ToolCall { id: String::new(), name: call.tool.clone(), arguments: arguments.clone() };
        if let Some(refusal) = state.tools.refusal(std::slice::from_ref(&call.tool), &edited) {
            return Err(invalid("arguments", refusal));
        }
    }
    let decided_by = match &caller.user_id {
        Some(user) => format!("user:{user}"),
        // Auth is disabled: the decision is the task owner's, as every request is.
        None => "user:anonymous".to_owned(),
    };
    let status = match request.decision {
        DecisionKind::Approve => ApprovalStatus::Approved,
        DecisionKind::Deny => ApprovalStatus::Denied,
    };
    let reason = match (request.decision, reason) {
        (_, Some(reason)) => Some(reason),
        (DecisionKind::Deny, None) => Some("no reason given".to_owned()),
        (DecisionKind::Approve, None) => None,
    };
    Ok(ApprovalDecision { status, reason, arguments: request.arguments, decided_by })
}
