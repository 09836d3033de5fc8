//! `POST /tasks`: validate, store the task as `pending`, enqueue its plan job, answer 202;
//! with `Prefer: wait=N`, answer 200 with the ended task if it ends within N seconds.

use std::sync::Arc;

use agents::Role;
use axum::{
    Extension, Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    dto::{ContextMessage, CreateTaskRequest, TaskResponse},
    wait::{self, Waited, Waiter},
};
use crate::{
    auth::Caller,
    domain::{Priority, TaskId},
    http::{
        AppState, WaitSlots,
        access::{self, Named},
        error::{ApiError, Problem},
        extract::JsonBody,
        prefer::Wait,
        validate::{self, invalid},
    },
    store::{CreateOutcome, NewTask, Task, TaskDetail},
    webhooks::{self, TargetPolicy},
};

pub const MAX_DESCRIPTION_CHARS: usize = 8000;
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;
const MAX_CONTEXT_MESSAGES: usize = 50;
const MAX_AGENT_HINTS: usize = 10;
/// Revised plans a task may ask for.
const MAX_REPLANS: i32 = 5;
/// Revised plans a task that does not say may get.
const DEFAULT_MAX_REPLANS: i32 = 2;
/// Tools a task may name in `require_approval` (the schema allows 32).
const MAX_APPROVAL_TOOLS: usize = 32;

/// Submit a task
///
/// Validates the task, stores it as `pending` and queues its planning. The answer is `202`
/// with the task and a `Location` header. With an `Idempotency-Key`, a repeated identical
/// request answers the first task again (with `Idempotent-Replayed: true`); the same key
/// with a different body is a `409`.
///
/// With `Prefer: wait=N` (N seconds, at most 60; RFC 7240) the answer waits until the task
/// has ended, then is `200` with the task and its steps, as `GET /tasks/{id}` answers; if N
/// seconds pass first it is the `202` above, with the task as it is then. Either carries
/// `Preference-Applied: wait=N`. A user may have at most `SSE_MAX_STREAMS_PER_USER` waits
/// open at once; beyond that the answer comes at once, without `Preference-Applied`. A
/// `Prefer` header that does not parse is ignored.
#[utoipa::path(
    post,
    path = "/tasks",
    tag = "tasks",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 200 visible ASCII characters; makes retries of this request safe."),
        ("Prefer" = Option<String>, Header, description = "`wait=N`: answer once the task has ended (`200`), or after N seconds (at most 60) with `202`, whichever comes first."),
    ),
    request_body(content = CreateTaskRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "With `Prefer: wait`: the task ended within the wait; it is answered with its steps.", body = TaskResponse,
            headers(
                ("Location" = String, description = "`/tasks/{id}` of the task."),
                ("Idempotent-Replayed" = String, description = "`true` when the answer replays an earlier request with the same Idempotency-Key."),
                ("Preference-Applied" = String, description = "`wait=N`, N the seconds granted (at most 60)."),
                ("Vary" = String, description = "`Prefer`: the answer depends on it."),
            )),
        (status = 202, description = "The task was accepted (or replayed for the same Idempotency-Key); with `Prefer: wait`, it had not ended when the wait was over.", body = TaskResponse,
            headers(
                ("Location" = String, description = "`/tasks/{id}` of the task."),
                ("Idempotent-Replayed" = String, description = "`true` when the answer replays an earlier request with the same Idempotency-Key."),
                ("Preference-Applied" = String, description = "`wait=N` when the server waited, N the seconds granted (at most 60)."),
                ("Vary" = String, description = "`Prefer`: the answer depends on it."),
            )),
        (status = 400, description = "The body is not JSON of the expected shape, or the Idempotency-Key header is not acceptable.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`user_id` names another user than the API key's, or `priority` is `high` and the key's user may not ask for it (`field` names which).", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The Idempotency-Key was already used with a different body.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 256 KiB.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field has a value that is not acceptable; `field` names it.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres or Redis is unavailable; retry later.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn create_task(
    State(state): State<AppState>,
    Extension(slots): Extension<Arc<WaitSlots>>,
    caller: Caller,
    headers: HeaderMap,
    // Set by the app from WEBHOOK_ALLOW_PRIVATE; without it, private targets are refused.
    policy: Option<Extension<TargetPolicy>>,
    JsonBody(request): JsonBody<CreateTaskRequest>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let policy = policy.map(|Extension(p)| p).unwrap_or_default();
    let agent_hints = agent_hints(request.agent_hints.as_deref(), &state.agents)?;
    // A task that does not say follows the deployment (REPLAN_ON_FAILURE).
    let replan = request.replan.unwrap_or(state.replan_on_failure);
    let require_approval = approval_tools(request.require_approval.as_deref(), &state.tools)?;
    let mut task = validate(request, &caller, idempotency_key, policy)?;
    task.replan = replan;
    task.agent_hints = agent_hints;
    task.require_approval = require_approval;
    submit(&state, &slots, &caller, &headers, task).await
}

/// What `POST /tasks` and `POST /tasks/{id}/follow-ups` do with a validated task: hash its
/// work, check its priority, store it (or find the task its idempotency key made before),
/// start it, and answer `202` with `Location`, or, with `Prefer: wait`, `200` once it ended.
pub(super) async fn submit(
    state: &AppState,
    slots: &Arc<WaitSlots>,
    caller: &Caller,
    headers: &HeaderMap,
    mut task: NewTask,
) -> Result<Response, ApiError> {
    task.task_hash = state.task_hasher.hash(&task);
    may_use_priority(state, caller, &task).await?;

    // Subscribed before the insert: nothing can happen to the task before it exists, so the
    // task as stored is its state when the wait starts, and no end can be missed.
    let waiter = Wait::from_headers(headers).map(|wait| Waiter::subscribe(&state.events, task.id, wait));
    let (task, replayed) = match state.tasks.create_task(&task).await? {
        CreateOutcome::Created(task) => (task, false),
        CreateOutcome::Replayed(task) => (task, true),
        CreateOutcome::KeyConflict(id) => {
            return Err(ApiError::Conflict {
                message: format!("Idempotency-Key was already used for task {id} with a different request body"),
            });
        }
    };
    if !replayed {
        // The task is already durable; if its plan job cannot be enqueued, the client gets
        // 503 and the reconciler enqueues the pending task.
        state.lifecycle.submitted(task.id, &task.user_id, task.priority).await?;
    }
    let location =
        HeaderValue::from_str(&format!("/tasks/{}", task.id)).map_err(|e| ApiError::Internal(e.to_string()))?;

    // Waits count against the key's user; without keys, against the task's user.
    let user = caller.user_id.clone().unwrap_or_else(|| task.user_id.clone());
    let (status, body, applied) = match (waiter, replayed) {
        (Some(waiter), false) => {
            let current = TaskDetail { task, steps: Vec::new(), pending_approvals: Vec::new() };
            answer(waiter.until_ended(state.tasks.as_ref(), slots, &user, current).await)
        }
        (Some(waiter), true) => replayed_wait(state, slots, &user, waiter.retarget(&state.events, task.id), task).await,
        (None, _) => (StatusCode::ACCEPTED, TaskResponse::from(task), None),
    };
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(header::LOCATION, location);
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    wait::mark(&mut response, applied);
    Ok(response)
}

/// The wait of a replayed creation: the earlier task may have ended long ago, so it is read
/// (after subscribing) rather than taken as stored.
async fn replayed_wait(
    state: &AppState,
    slots: &Arc<WaitSlots>,
    user: &str,
    waiter: Waiter,
    task: Task,
) -> (StatusCode, TaskResponse, Option<Wait>) {
    match state.tasks.task(task.id).await {
        Ok(Some(current)) => answer(waiter.until_ended(state.tasks.as_ref(), slots, user, current).await),
        // The replay itself succeeded: answer it as without the preference.
        Ok(None) => (StatusCode::ACCEPTED, TaskResponse::from(task), None),
        Err(e) => {
            tracing::warn!(task = %task.id, error = %e, "reading a replayed task to wait for it failed; answering at once");
            (StatusCode::ACCEPTED, TaskResponse::from(task), None)
        }
    }
}

/// A waited-for creation's status and body: `200` with the ended task and its steps, `202`
/// with its steps and `pending_approvals` when a person must act, or what a creation answers
/// without waiting (`202`, the task without steps) as it is now.
fn answer(waited: Waited) -> (StatusCode, TaskResponse, Option<Wait>) {
    if waited.ended() {
        (StatusCode::OK, TaskResponse::from(waited.detail), waited.applied)
    } else if waited.detail.task.status.awaits_outside() {
        (StatusCode::ACCEPTED, TaskResponse::from(waited.detail), waited.applied)
    } else {
        (StatusCode::ACCEPTED, TaskResponse::from(waited.detail.task), waited.applied)
    }
}

/// `high` jumps every other user's queue: only admin keys (and everyone when auth is
/// disabled, where every caller is an admin) and users an operator allowed it
/// (`orchestrator users limits set <user> --max-priority high`) may ask for it.
async fn may_use_priority(state: &AppState, caller: &Caller, task: &NewTask) -> Result<(), ApiError> {
    if task.priority != Priority::High || caller.admin {
        return Ok(());
    }
    let limits = state.execution.user_limits(&task.user_id).await?;
    if limits.and_then(|l| l.max_priority) == Some(Priority::High) {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        field: "priority".into(),
        message: "`high` is for admin keys and users allowed it (`orchestrator users limits set <user> --max-priority high`); use `normal` or `low`".into(),
    })
}

/// The hinted agents, each known to this deployment, without repeats.
pub(super) fn agent_hints(hints: Option<&[String]>, catalog: &agents::AgentCatalog) -> Result<Vec<String>, ApiError> {
    let Some(hints) = hints else { return Ok(Vec::new()) };
    if hints.is_empty() || hints.len() > MAX_AGENT_HINTS {
        return Err(invalid("agent_hints", format!("must name 1 to {MAX_AGENT_HINTS} agents")));
    }
    let mut chosen: Vec<String> = Vec::with_capacity(hints.len());
    for (i, name) in hints.iter().enumerate() {
        let name = name.trim();
        if catalog.get(name).is_none() {
            let known = catalog.names().join(", ");
            return Err(invalid(
                &format!("agent_hints[{i}]"),
                format!("`{name}` is not an agent here (known: {known})"),
            ));
        }
        if !chosen.iter().any(|c| c == name) {
            chosen.push(name.to_owned());
        }
    }
    Ok(chosen)
}

/// Tools whose calls wait for approval in this task: each a tool of this deployment, without
/// repeats.
pub(super) fn approval_tools(
    tools: Option<&[String]>,
    registry: &agents::ToolRegistry,
) -> Result<Vec<String>, ApiError> {
    let Some(tools) = tools else { return Ok(Vec::new()) };
    if tools.len() > MAX_APPROVAL_TOOLS {
        return Err(invalid("require_approval", format!("must name at most {MAX_APPROVAL_TOOLS} tools")));
    }
    let mut chosen: Vec<String> = Vec::with_capacity(tools.len());
    for (i, name) in tools.iter().enumerate() {
        let name = name.trim();
        if !registry.contains(name) {
            let known = registry.names().join(", ");
            return Err(invalid(
                &format!("require_approval[{i}]"),
                format!("`{name}` is not a tool here (known: {known})"),
            ));
        }
        if !chosen.iter().any(|c| c == name) {
            chosen.push(name.to_owned());
        }
    }
    Ok(chosen)
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = |message: &str| ApiError::BadParameter { field: "Idempotency-Key".into(), message: message.into() };
    let key = value.to_str().map_err(|_| bad("must be visible ASCII"))?.trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(bad("must be 1 to 200 characters"));
    }
    Ok(Some(key.to_owned()))
}

/// Turns a request into a task to store, or names the first field that is wrong.
fn validate(
    request: CreateTaskRequest,
    caller: &Caller,
    idempotency_key: Option<String>,
    callback_policy: TargetPolicy,
) -> Result<NewTask, ApiError> {
    // Hash before normalising, so a replay must be byte-for-byte the same request.
    let request_hash = hex::encode(Sha256::digest(serde_json::to_vec(&request).unwrap_or_default()));
    let user_id = access::acting_user(caller, request.user_id.as_deref(), Named::Body)?;
    new_task(request, user_id, request_hash, idempotency_key, callback_policy)
}

/// The task `request` asks for, as `user_id`'s, or the first field that is wrong: every field
/// but `user_id`, checked the same way for a submission and a follow-up. `request_hash` tells
/// a replay of the request from another use of its idempotency key.
pub(super) fn new_task(
    request: CreateTaskRequest,
    user_id: String,
    request_hash: String,
    idempotency_key: Option<String>,
    callback_policy: TargetPolicy,
) -> Result<NewTask, ApiError> {
    let description = validate::text("description", &request.description, MAX_DESCRIPTION_CHARS)?;
    let metadata = Value::Object(validate::metadata(request.metadata)?.unwrap_or_default());
    let priority = request
        .priority
        .or_else(|| metadata.get("priority").and_then(Value::as_str).and_then(|p| p.parse().ok()))
        .unwrap_or(Priority::Normal);
    if let Some(cost) = request.max_cost_usd
        && !(cost.is_finite() && cost >= 0.0)
    {
        return Err(invalid("max_cost_usd", "must be a non-negative number"));
    }
    if request.max_tokens.is_some_and(|t| t < 0) {
        return Err(invalid("max_tokens", "must not be negative"));
    }
    if request.max_attempts.is_some_and(|a| !(1..=10).contains(&a)) {
        return Err(invalid("max_attempts", "must be from 1 to 10"));
    }
    if request.max_replans.is_some_and(|r| !(0..=MAX_REPLANS).contains(&r)) {
        return Err(invalid("max_replans", format!("must be from 0 to {MAX_REPLANS}")));
    }
    let seeded = context_messages("context", request.context.unwrap_or_default())?;

    let task_type = request
        .task_type
        .map(|t| validate::task_type(&t).then_some(t).ok_or_else(|| invalid("task_type", validate::TASK_TYPE_RULE)))
        .transpose()?;

    let callback_url = request
        .callback_url
        .as_deref()
        .map(|raw| webhooks::parse_callback_url(raw, callback_policy).map(String::from))
        .transpose()
        .map_err(|e| invalid("callback_url", e.to_string()))?;

    Ok(NewTask {
        id: TaskId::new(),
        user_id,
        description,
        metadata,
        priority,
        max_cost_usd: request.max_cost_usd,
        max_tokens: request.max_tokens,
        idempotency_key,
        request_hash,
        max_attempts: request.max_attempts,
        use_plan_cache: request.use_plan_cache.unwrap_or(true),
        context: seeded,
        callback_url,
        agent_hints: Vec::new(), // checked against the catalog by the handler
        task_type,
        task_hash: String::new(), // by the handler, once the hints are known
        warm_start: request.warm_start.unwrap_or(false),
        replan: request.replan.unwrap_or(false), // or the deployment's default, by the handler
        max_replans: request.max_replans.unwrap_or(DEFAULT_MAX_REPLANS),
        start: request.start.unwrap_or_default(),
        require_approval: Vec::new(), // checked against the tools by the handler
        follows: None,
    })
}

/// Context messages as (role, content), checked: at most [`MAX_CONTEXT_MESSAGES`], each of
/// a role a client may speak for and with non-blank text. `field` names the list in errors.
pub(super) fn context_messages(field: &str, messages: Vec<ContextMessage>) -> Result<Vec<(String, String)>, ApiError> {
    if messages.len() > MAX_CONTEXT_MESSAGES {
        return Err(invalid(field, format!("must hold at most {MAX_CONTEXT_MESSAGES} messages")));
    }
    let mut checked = Vec::with_capacity(messages.len());
    for (i, message) in messages.into_iter().enumerate() {
        // A client may not speak for a tool: there was no tool call to answer.
        if !matches!(message.role.parse(), Ok(Role::User | Role::Assistant | Role::System)) {
            return Err(invalid(&format!("{field}[{i}].role"), "must be user, assistant or system"));
        }
        let content = validate::text(&format!("{field}[{i}].content"), &message.content, MAX_DESCRIPTION_CHARS)?;
        checked.push((message.role, content));
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: Value) -> CreateTaskRequest {
        serde_json::from_value(json).unwrap()
    }

    fn field(result: Result<NewTask, ApiError>) -> String {
        match result {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_seed_request_is_accepted_with_priority_from_metadata() {
        let task = validate(
            request(serde_json::json!({"user_id": "demo-user", "description": "  Analyze it. ", "metadata": {"priority": "high"}})),
            &Caller::local(),
            None,
            TargetPolicy::default(),
        )
        .unwrap();
        assert_eq!(task.description, "Analyze it.");
        assert_eq!(task.priority, Priority::High);
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let base = || serde_json::json!({"user_id": "u", "description": "d"});
        let with = |k: &str, v: Value| {
            let mut b = base();
            b[k] = v;
            validate(request(b), &Caller::local(), None, TargetPolicy::default())
        };
        assert_eq!(field(with("description", "   ".into())), "description");
        assert_eq!(field(with("description", "x".repeat(8001).into())), "description");
        assert_eq!(field(with("user_id", "".into())), "user_id");
        assert_eq!(field(with("metadata", serde_json::json!([1]))), "metadata");
        assert_eq!(field(with("metadata", serde_json::json!({"a": "\u{0}"}))), "metadata");
        assert_eq!(field(with("max_tokens", (-1).into())), "max_tokens");
        assert_eq!(field(with("max_attempts", 0.into())), "max_attempts");
        assert_eq!(field(with("max_attempts", 11.into())), "max_attempts");
        assert_eq!(field(with("max_replans", (-1).into())), "max_replans");
        assert_eq!(field(with("max_replans", 6.into())), "max_replans");
        assert_eq!(with("max_replans", 0.into()).unwrap().max_replans, 0);
        assert_eq!(with("replan", true.into()).unwrap().max_replans, 2);
        assert_eq!(field(with("context", serde_json::json!([{"role": "tool", "content": "x"}]))), "context[0].role");
        assert_eq!(
            field(with(
                "context",
                serde_json::json!([{"role": "user", "content": "ok"}, {"role": "user", "content": " "}])
            )),
            "context[1].content"
        );
        assert!(with("description", "x".repeat(8000).into()).is_ok());
    }

    #[test]
    fn a_callback_url_must_be_a_public_http_url_unless_private_targets_are_allowed() {
        let with = |url: &str, allow_private: bool| {
            let body = serde_json::json!({"user_id": "u", "description": "d", "callback_url": url});
            validate(request(body), &Caller::local(), None, TargetPolicy { allow_private })
        };
        for bad in ["ftp://example.com/x", "not a url", "http://127.0.0.1:9/x", "http://[::1]/", "http://10.0.0.1/"] {
            assert_eq!(field(with(bad, false)), "callback_url", "{bad}");
        }
        let kept = with("https://hooks.example.com/t?a=1", false).unwrap().callback_url;
        assert_eq!(kept.as_deref(), Some("https://hooks.example.com/t?a=1"));
        assert_eq!(with("http://127.0.0.1:9/x", true).unwrap().callback_url.as_deref(), Some("http://127.0.0.1:9/x"));
    }

    #[test]
    fn the_same_body_hashes_the_same() {
        let strict = TargetPolicy::default();
        let a =
            validate(request(serde_json::json!({"user_id": "u", "description": "d"})), &Caller::local(), None, strict)
                .unwrap();
        let b =
            validate(request(serde_json::json!({"user_id": "u", "description": "d"})), &Caller::local(), None, strict)
                .unwrap();
        let c =
            validate(request(serde_json::json!({"user_id": "u", "description": "e"})), &Caller::local(), None, strict)
                .unwrap();
        assert_eq!(a.request_hash, b.request_hash);
        assert_ne!(a.request_hash, c.request_hash);
    }
}
