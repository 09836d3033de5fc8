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

use super::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

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
