//! The per-user limiter of the HTTP API: a GCRA bucket in Redis per route class and caller,
//! and what to do when Redis cannot be asked. The middleware that applies it to requests,
//! with its headers and refusals, is `http::rate_limit`'s.

use std::{sync::Arc, time::Duration};

use axum::http::Method;

use super::{
    RateLimitSettings,
    gcra::{Charge, Decision, GcraLimiter, Limit, LimiterError},
    log_throttle::LogThrottle,
};
use crate::metrics::Metrics;

/// Routes that share one budget per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// `POST /tasks` and `POST /tasks/{id}/follow-ups`: each one starts model calls, so it has
    /// the tightest budget.
    Create,
    /// `POST /memory/search`: an embedding and a vector search each.
    Search,
    /// Every other route.
    Other,
}

impl RouteClass {
    pub const ALL: [Self; 3] = [Self::Create, Self::Search, Self::Other];

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
            Self::Create => "task creation (POST /tasks and POST /tasks/{id}/follow-ups)",
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

    /// The limit of `class`; `None` when it is turned off.
    pub fn limit(&self, class: RouteClass) -> Option<Limit> {
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

    /// Counts a request of `class` refused for being over its limit.
    pub fn refused(&self, class: RouteClass) {
        self.metrics.rate_limited.with_label_values(&[class.as_str()]).inc();
    }

    /// Redis could not be asked: whether to refuse the request (writes, unless failing open)
    /// rather than let it pass (reads).
    pub fn refuse_unavailable(&self, method: &Method, error: &LimiterError) -> bool {
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
        refuse
    }
}
