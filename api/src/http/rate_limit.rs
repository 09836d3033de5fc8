//! The rate limits as the HTTP API applies them ([`RateLimits`]): which route class a request
//! pays from, the per-user middleware and its headers.
//!
//! Every limited response carries `RateLimit-Limit` (the burst), `RateLimit-Remaining` and
//! `RateLimit-Reset` (seconds until the bucket is full); a refusal is a 429 problem+json with
//! `Retry-After`. When Redis cannot be asked, writes are refused with 503 (nothing was done,
//! so retrying is safe) and reads pass, unless `RATE_LIMIT_FAIL_OPEN` lets everything pass.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{ApiError, ip_guard::IpGuard, openapi};
use crate::{
    auth::Caller,
    config::RateLimitSettings,
    metrics::Metrics,
    ratelimit::{Decision, GcraLimiter, HttpLimiter, Limit, RouteClass},
};

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Paths never limited per user: probes, scrapes and docs must work while a user is throttled.
const EXEMPT: &[&str] = &["/healthz", "/readyz", "/metrics", openapi::OPENAPI_PATH];

/// The limits the HTTP API enforces: per user in Redis, per IP in memory (when on).
#[derive(Clone)]
pub struct RateLimits {
    pub http: Arc<HttpLimiter>,
    pub ip: Option<IpGuard>,
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings, gcra: GcraLimiter, metrics: &Arc<Metrics>) -> Self {
        Self {
            http: Arc::new(HttpLimiter::new(settings, gcra, metrics.clone())),
            ip: IpGuard::new(settings, metrics.clone()),
        }
    }
}

// Which routes share a budget is a question about this router's paths, so it is answered
// here rather than in `crate::ratelimit`, which knows no routes.
impl RouteClass {
    /// The class of a request; `None` for exempt paths.
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        let docs = openapi::DOCS_PATH;
        if EXEMPT.contains(&path)
            || path.strip_prefix(docs).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        {
            return None;
        }
        Some(match (method, path) {
            (&Method::POST, "/tasks") => Self::Create,
            // A follow-up is a task creation like any other, and pays from the same budget.
            (&Method::POST, path) if is_follow_up(path) => Self::Create,
            (&Method::POST, "/memory/search") => Self::Search,
            _ => Self::Other,
        })
    }
}

/// `/tasks/{id}/follow-ups`, whatever `{id}` holds (a bad id still costs a creation's budget).
fn is_follow_up(path: &str) -> bool {
    path.strip_prefix("/tasks/")
        .and_then(|rest| rest.strip_suffix("/follow-ups"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// Middleware: the per-user limit of the request's route class. The caller is the [`Caller`]
/// the auth middleware put in the request's extensions, or [`Caller::local`] without one.
pub async fn enforce(State(limiter): State<Arc<HttpLimiter>>, request: Request, next: Next) -> Response {
    let Some(class) = RouteClass::of(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let Some(limit) = limiter.limit(class) else {
        return next.run(request).await;
    };
    let caller = request.extensions().get::<Caller>().cloned().unwrap_or_else(Caller::local);
    match limiter.check(class, limit, caller.limit_key()).await {
        Ok(decision) if decision.admitted => {
            let mut response = next.run(request).await;
            set_headers(response.headers_mut(), limit, &decision);
            response
        }
        Ok(decision) => {
            limiter.refused(class);
            let mut response =
                ApiError::RateLimited { limit: class.describe(), retry_after: decision.retry_after_secs() }
                    .into_response();
            set_headers(response.headers_mut(), limit, &decision);
            response
        }
        Err(error) if limiter.refuse_unavailable(request.method(), &error) => {
            ApiError::RateLimitUnavailable.into_response()
        }
        Err(_) => next.run(request).await,
    }
}

fn set_headers(headers: &mut HeaderMap, limit: Limit, decision: &Decision) {
    headers.insert(LIMIT, HeaderValue::from(limit.burst()));
    headers.insert(REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(RESET, HeaderValue::from(decision.reset_secs()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_in_their_class() {
        assert_eq!(RouteClass::of(&Method::POST, "/tasks"), Some(RouteClass::Create));
        assert_eq!(RouteClass::of(&Method::GET, "/tasks"), Some(RouteClass::Other));
        assert_eq!(RouteClass::of(&Method::POST, "/memory/search"), Some(RouteClass::Search));
        assert_eq!(RouteClass::of(&Method::POST, "/memory"), Some(RouteClass::Other));
        assert_eq!(RouteClass::of(&Method::POST, "/tasks/x/cancel"), Some(RouteClass::Other));
        assert_eq!(RouteClass::of(&Method::POST, "/tasks/{id}/follow-ups"), Some(RouteClass::Create));
        let follow_up = format!("/tasks/{}/follow-ups", uuid::Uuid::new_v4());
        assert_eq!(RouteClass::of(&Method::POST, &follow_up), Some(RouteClass::Create));
        assert_eq!(RouteClass::of(&Method::GET, &follow_up), Some(RouteClass::Other));
        assert_eq!(RouteClass::of(&Method::POST, "/tasks/a/b/follow-ups"), Some(RouteClass::Other));
        assert_eq!(RouteClass::of(&Method::GET, "/nowhere"), Some(RouteClass::Other));
    }

    #[test]
    fn probes_metrics_and_docs_are_exempt() {
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/", "/docs/index.html"] {
            assert_eq!(RouteClass::of(&Method::GET, path), None, "{path}");
        }
        assert_eq!(RouteClass::of(&Method::GET, "/docsx"), Some(RouteClass::Other));
    }
}
