//! The per-user limit of the HTTP API: a GCRA bucket in Redis per route class and caller.
//!
//! Every limited response carries `RateLimit-Limit` (the burst), `RateLimit-Remaining` and
//! `RateLimit-Reset` (seconds until the bucket is full); a refusal is a 429 problem+json with
//! `Retry-After`. When Redis cannot be asked, writes are refused with 503 (nothing was done,
//! so retrying is safe) and reads pass, unless `RATE_LIMIT_FAIL_OPEN` lets everything pass.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    RateLimitSettings,
    gcra::{Charge, Decision, GcraLimiter, Limit, LimiterError},
    log_throttle::LogThrottle,
};
use crate::{auth::Caller, http::ApiError, metrics::Metrics};

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Paths never limited per user: probes, scrapes and docs must work while a user is throttled.
const EXEMPT: &[&str] = &["/healthz", "/readyz", "/metrics", crate::http::openapi::OPENAPI_PATH];

/// Routes that share one budget per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// `POST /tasks`: each one starts model calls, so it has the tightest budget.
    Create,
    /// `POST /memory/search`: an embedding and a vector search each.
    Search,
    /// Every other route.
    Other,
}

impl RouteClass {
    pub const ALL: [Self; 3] = [Self::Create, Self::Search, Self::Other];

    /// The class of a request; `None` for exempt paths.
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        let docs = crate::http::openapi::DOCS_PATH;
        if EXEMPT.contains(&path)
            || path.strip_prefix(docs).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        {
            return None;
        }
        Some(match (method, path) {
            (&Method::POST, "/tasks") => Self::Create,
            (&Method::POST, "/memory/search") => Self::Search,
            _ => Self::Other,
        })
    }

    /// Metric label and part of the Redis key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Search => "search",
            Self::Other => "other",
        }
    }

    /// How a refusal names the class.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Create => "task creation (POST /tasks)",
            Self::Search => "memory search (POST /memory/search)",
            Self::Other => "requests other than task creation and memory search",
        }
    }
}

/// The per-user limiter: limits per class and what to do when Redis is away.
pub struct HttpLimiter {
    gcra: GcraLimiter,
    create: Option<Limit>,
    search: Option<Limit>,
    other: Option<Limit>,
    fail_open: bool,
    metrics: Arc<Metrics>,
    unavailable_log: LogThrottle,
}

impl HttpLimiter {
    pub fn new(settings: &RateLimitSettings, gcra: GcraLimiter, metrics: Arc<Metrics>) -> Self {
        Self {
            gcra,
            create: settings.limit(RouteClass::Create),
            search: settings.limit(RouteClass::Search),
            other: settings.limit(RouteClass::Other),
            fail_open: settings.fail_open,
            metrics,
            unavailable_log: LogThrottle::new(Duration::from_secs(10)),
        }
    }

    fn limit(&self, class: RouteClass) -> Option<Limit> {
        match class {
            RouteClass::Create => self.create,
            RouteClass::Search => self.search,
            RouteClass::Other => self.other,
        }
    }

    /// Charges one request of `class` to the bucket of `user`.
    pub async fn check(&self, class: RouteClass, limit: Limit, user: &str) -> Result<Decision, LimiterError> {
        let key = self.gcra.key(&["user", class.as_str(), user]);
        self.gcra.acquire(&[Charge { key, limit, cost: 1 }]).await
    }

    /// Redis could not be asked: refuse writes (503) unless failing open, let reads pass.
    fn unavailable(&self, method: &Method, error: &LimiterError) -> Option<Response> {
        let refuse = !self.fail_open && !method.is_safe();
        let outcome = if refuse { "refused" } else { "passed" };
        self.metrics.rate_limit_unavailable.with_label_values(&[outcome]).inc();
        if self.unavailable_log.allow() {
            if self.fail_open {
                tracing::warn!(%error, "rate limits cannot be checked; letting requests through (RATE_LIMIT_FAIL_OPEN)");
            } else {
                tracing::error!(%error, "rate limits cannot be checked; refusing writes with 503 until Redis answers");
            }
        }
        refuse.then(|| ApiError::RateLimitUnavailable.into_response())
    }
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
            limiter.metrics.rate_limited.with_label_values(&[class.as_str()]).inc();
            let mut response =
                ApiError::RateLimited { limit: class.describe(), retry_after: decision.retry_after_secs() }
                    .into_response();
            set_headers(response.headers_mut(), limit, &decision);
            response
        }
        Err(error) => match limiter.unavailable(request.method(), &error) {
            Some(refusal) => refusal,
            None => next.run(request).await,
        },
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
