//! The HTTP API: routes, the shared state they read, and the middleware around them.

mod access;
mod admin;
mod auth;
mod catalog;
pub mod cors;
mod error;
mod extract;
mod health;
mod host;
mod ip_guard;
pub mod listener;
mod memory;
mod observe;
pub mod openapi;
mod prefer;
mod rate_limit;
mod rate_limit_docs;
mod slots;
mod tasks;
mod timeout;
mod validate;
mod webhook_secret;
mod workers;

pub use error::ApiError;
pub use ip_guard::IpGuard;
pub use rate_limit::RateLimits;
pub use slots::{StreamSlots, WaitSlots};

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::HeaderName,
    response::{IntoResponse, Response},
    routing::get,
};
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use agents::{AgentCatalog, ToolRegistry};
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use crate::{coordination::Coordination, queue::Dispatcher, store::TaskStore};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub tasks: Arc<dyn TaskStore>,
    pub dispatcher: Arc<dyn Dispatcher>,
    pub coordination: Arc<dyn Coordination>,
    pub agents: Arc<AgentCatalog>,
    pub tools: Arc<ToolRegistry>,
    pub memory: Arc<dyn ::memory::MemoryStore>,
    pub events: crate::events::EventHub,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub auth: Arc<crate::auth::Authenticator>,
    /// Webhook deliveries, for `GET /tasks/{id}/webhook`.
    pub outbox: Arc<dyn crate::webhooks::Outbox>,
    /// Users' webhook signing secrets, for `GET /webhook-secret` and its rotation.
    pub webhook_secrets: crate::webhooks::WebhookSecrets,
    /// The user's limits, read by `POST /tasks`.
    pub execution: Arc<dyn crate::store::ExecutionStore>,
    /// Cancel and retry go through it, like every transition.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    pub rate_limits: RateLimits,
    /// The `task_hash` of each new task.
    pub task_hasher: crate::task_hash::TaskHasher,
    /// Whether a task that does not say replans when a step fails for good
    /// (`REPLAN_ON_FAILURE`).
    pub replan_on_failure: bool,
    /// What an edited plan must respect (`PUT /tasks/{id}/plan`), as the planner's do.
    pub plan_limits: planner::PlanLimits,
}

pub fn build_router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let ip_guard = state.rate_limits.ip.clone();
    let auth_mode = state.auth.mode();
    // Everything a key guards; health, metrics and the API's own description stay open so
    // probes, scrapers and client generators need no key. The per-user limits sit inside
    // authentication, so they count the key's user.
    let guarded = Router::new()
        .merge(tasks::routes())
        .merge(memory::routes())
        .merge(webhook_secret::routes())
        .route("/workers", get(workers::list_workers))
        .route("/admin/dead-letters", get(admin::dead_letters))
        .route("/agents", get(catalog::list_agents))
        .route("/tools", get(catalog::list_tools))
        .route_layer(axum::middleware::from_fn_with_state(state.rate_limits.http.clone(), rate_limit::enforce))
        .route_layer(axum::middleware::from_fn_with_state(state.auth.clone(), auth::authenticate));
    let router = Router::new()
        .merge(guarded)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(observe::metrics))
        .route(openapi::OPENAPI_PATH, get(openapi_document))
        .merge(SwaggerUi::new(openapi::DOCS_PATH).config(SwaggerConfig::new([openapi::OPENAPI_PATH])))
        .fallback(no_route)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), observe::record))
        .with_state(state)
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        // 30 s, plus what a `Prefer: wait` asks for, so a wait is never cut short.
        .layer(axum::middleware::from_fn(timeout::enforce))
        .layer(CatchPanicLayer::custom(|_| ApiError::Internal("handler panicked".into()).into_response()));
    // The per-IP flood guard: inside the request id and span, before everything else.
    let router = match ip_guard {
        Some(guard) => router.layer(guard.layer()),
        None => router,
    };
    // Without keys, loopback is the only protection: refuse rebound names (see `host`).
    let router = match auth_mode {
        crate::auth::AuthMode::Disabled => router.layer(axum::middleware::from_fn(host::loopback_only)),
        crate::auth::AuthMode::Required => router,
    };
    router
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id);
            crate::telemetry::continue_trace(&span, req.headers());
            span
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// `GET /openapi.json`: the document of [`openapi::ApiDoc`], built once.
async fn openapi_document() -> Response {
    static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(openapi::document_json);
    ([(axum::http::header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

async fn no_route(req: Request) -> Response {
    ApiError::NoRoute { path: req.uri().path().to_owned() }.into_response()
}
