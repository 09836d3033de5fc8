//! `GET /tasks/{id}/webhook`: the task's callback deliveries and every attempt at each, so a
//! client can see why its receiver did not get a call.

use axum::{
    Json,
    extract::{Path, State},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    auth::Caller,
    http::{
        AppState, access,
        error::{ApiError, Problem},
    },
    webhooks::{AttemptRow, DeliverySummary},
};

/// The task's callback URL and its deliveries: at most one, made when the task ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "callback_url": "https://example.com/hooks/orchestrator",
    "deliveries": [{
        "id": "6c0b2f1e-2f59-4a7e-9d1c-0a8b4c2d9e11",
        "event": "task.completed",
        "url": "https://example.com/hooks/orchestrator",
        "status": "delivered",
        "attempts": [
            {"attempt": 1, "http_status": 503, "error": null, "latency_ms": 12.5, "created_at": "2026-01-01T12:00:01Z"},
            {"attempt": 2, "http_status": 200, "error": null, "latency_ms": 9.1, "created_at": "2026-01-01T12:00:03Z"}
        ],
        "created_at": "2026-01-01T12:00:01Z",
        "delivered_at": "2026-01-01T12:00:03Z"
    }]
}))]
pub struct WebhookReport {
    /// `null` when the task was submitted without one.
    pub callback_url: Option<String>,
    pub deliveries: Vec<Delivery>,
}

/// One signed call (with its retries) reporting how the task ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// Also the `Webhook-Id` header of every attempt.
    pub id: Uuid,
    /// `task.completed`, `task.failed` or `task.cancelled`.
    pub event: String,
    pub url: String,
    /// `pending` (waiting for its next attempt), `delivered` or `failed` (no attempts left).
    pub status: String,
    /// Every attempt, oldest first.
    pub attempts: Vec<Attempt>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: i32,
    /// The receiver's status code, when it answered.
    pub http_status: Option<i32>,
    /// Why there was no acceptable answer: refused address, timeout, connection error.
    pub error: Option<String>,
    pub latency_ms: f64,
    pub created_at: DateTime<Utc>,
}

/// Get a task's webhook deliveries
///
/// The callback URL the task was submitted with, and the signed call reporting how it ended,
/// with every attempt at delivering it.
#[utoipa::path(
    get,
    path = "/tasks/{id}/webhook",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task id (a UUID)."),
    ),
    responses(
        (status = 200, description = "The task's callback URL and deliveries.", body = WebhookReport),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn task_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookReport>, ApiError> {
    let id = super::task_id(&id)?;
    let task = access::visible_task(state.tasks.as_ref(), &caller, id).await?.task;
    let mut deliveries = Vec::new();
    for summary in state.outbox.task_webhooks(id).await? {
        let attempts = state.outbox.webhook_attempts(summary.id).await?;
        deliveries.push(Delivery::new(summary, attempts));
    }
    Ok(Json(WebhookReport { callback_url: task.callback_url, deliveries }))
}

impl Delivery {
    fn new(summary: DeliverySummary, attempts: Vec<AttemptRow>) -> Self {
        Self {
            id: summary.id,
            event: summary.event.as_str().to_owned(),
            url: summary.url,
            status: summary.status.as_str().to_owned(),
            attempts: attempts
                .into_iter()
                .map(|a| Attempt {
                    attempt: a.attempt,
                    http_status: a.http_status,
                    error: a.error,
                    latency_ms: a.latency_ms,
                    created_at: a.created_at,
                })
                .collect(),
            created_at: summary.created_at,
            delivered_at: summary.delivered_at,
        }
    }
}
