//! Liveness and readiness.
//!
//! `/healthz` touches nothing: it says the process serves HTTP. `/readyz` asks Postgres and
//! Redis concurrently, each with a short deadline, and names whichever did not answer.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{AppState, error::Problem};

/// `GET /healthz` body.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"status": "ok"}))]
#[allow(dead_code)]
pub struct Health {
    /// Always `ok`.
    status: String,
}

/// `GET /readyz` body when every dependency answers.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}))]
#[allow(dead_code)]
pub struct Readiness {
    /// `ready`.
    status: String,
    checks: ReadinessChecks,
}

/// Each dependency: `ok` or `unavailable`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ReadinessChecks {
    postgres: String,
    redis: String,
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness
///
/// Touches nothing: answers while the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is alive.", body = Health)),
)]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness
///
/// Asks Postgres and Redis, each with a 2 s deadline.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Postgres and Redis answer.", body = Readiness),
        (status = 503, description = "A dependency did not answer: a problem with `checks` naming it.", body = Problem, content_type = "application/problem+json",
            example = json!({
                "type": "urn:orchestrator:problem:unavailable",
                "title": "Not ready",
                "status": 503,
                "detail": "redis not answering",
                "checks": {"postgres": "ok", "redis": "unavailable"}
            })),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (postgres, redis) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, state.tasks.ping()),
        tokio::time::timeout(CHECK_TIMEOUT, state.dispatcher.ping()),
    );
    let postgres_ok = matches!(postgres, Ok(Ok(())));
    let redis_ok = matches!(redis, Ok(Ok(())));
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let checks = json!({"postgres": word(postgres_ok), "redis": word(redis_ok)});
    if postgres_ok && redis_ok {
        return Json(json!({"status": "ready", "checks": checks})).into_response();
    }
    let down: Vec<&str> = [("postgres", postgres_ok), ("redis", redis_ok)]
        .into_iter()
        .filter_map(|(name, ok)| (!ok).then_some(name))
        .collect();
    let body = json!({
        "type": "urn:orchestrator:problem:unavailable",
        "title": "Not ready",
        "status": 503,
        "detail": format!("{} not answering", down.join(" and ")),
        "checks": checks,
    });
    (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string())
        .into_response()
}
