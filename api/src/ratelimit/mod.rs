//! Rate limits shared by every replica: per user and route class in Redis, per IP in front,
//! and per model provider before each model call.
//!
//! - [`http`]: the per-user limiter, a GCRA bucket per (route class, user) in Redis, so every
//!   replica enforces the same numbers. Writes fail closed when Redis is down (unless
//!   `RATE_LIMIT_FAIL_OPEN`), reads pass.
//! - [`ip`]: tower_governor's in-memory, per-replica flood guard keyed by client address.
//! - [`upstream`]: requests- and tokens-per-minute of the model provider, shared by every
//!   worker; a call over the limit waits for capacity instead of meeting the provider's 429.
//! - [`gcra`]: the one Lua script all of the Redis limits run on.

pub mod gcra;
pub mod http;
pub mod ip;
mod log_throttle;
pub mod openapi;
pub mod upstream;

use std::sync::Arc;

use clap::Args;

pub use gcra::{Charge, Decision, GcraLimiter, Limit, LimiterError};
pub use http::{HttpLimiter, RouteClass};
pub use ip::IpGuard;
pub use upstream::{UpstreamLimited, UpstreamLimits};

use crate::metrics::Metrics;

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

/// Highest rate or burst accepted: beyond it a limit is no limit, and the arithmetic in
/// microseconds loses its meaning.
const MAX_RATE: f64 = 1_000_000.0;
const MAX_BURST: u32 = 1_000_000;

#[derive(Debug, Clone, Args)]
pub struct RateLimitSettings {
    /// Sustained `POST /tasks` per second per user; 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_CREATE_PER_SEC", default_value_t = 5.0)]
    pub create_per_sec: f64,

    /// `POST /tasks` a user may send at once before the sustained rate applies.
    #[arg(long, env = "RATE_LIMIT_CREATE_BURST", default_value_t = 100)]
    pub create_burst: u32,

    /// Sustained `POST /memory/search` per second per user; 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_SEARCH_PER_SEC", default_value_t = 20.0)]
    pub search_per_sec: f64,

    /// `POST /memory/search` a user may send at once.
    #[arg(long, env = "RATE_LIMIT_SEARCH_BURST", default_value_t = 100)]
    pub search_burst: u32,

    /// Sustained rate of every other request per second per user; 0 turns the limit off.
    /// Health, metrics and the API docs are never limited per user.
    #[arg(long, env = "RATE_LIMIT_OTHER_PER_SEC", default_value_t = 50.0)]
    pub other_per_sec: f64,

    /// Other requests a user may send at once.
    #[arg(long, env = "RATE_LIMIT_OTHER_BURST", default_value_t = 300)]
    pub other_burst: u32,

    /// When Redis cannot be asked, let every request through (logging a warning) instead of
    /// refusing writes with 503.
    #[arg(long, env = "RATE_LIMIT_FAIL_OPEN", default_value_t = false, action = clap::ArgAction::Set)]
    pub fail_open: bool,

    /// Requests per second from one client address, counted in each replica's memory before
    /// anything else runs; 0 turns the guard off.
    #[arg(long, env = "IP_RATE_LIMIT_PER_SEC", default_value_t = 1000)]
    pub ip_per_sec: u32,

    /// Requests one client address may send at once.
    #[arg(long, env = "IP_RATE_LIMIT_BURST", default_value_t = 2000)]
    pub ip_burst: u32,

    /// Take the client address from X-Forwarded-For / X-Real-IP / Forwarded (the first
    /// address) instead of the TCP peer. Only behind a proxy that overwrites these headers:
    /// otherwise any client can claim any address.
    #[arg(long, env = "TRUSTED_PROXY", default_value_t = false, action = clap::ArgAction::Set)]
    pub trusted_proxy: bool,

    /// Model requests per window (a minute by default) shared by every worker of the
    /// deployment, per provider and model; 0 is unlimited.
    #[arg(long, env = "LLM_REQUESTS_PER_MINUTE", default_value_t = 0)]
    pub llm_requests_per_minute: u64,

    /// Model tokens (prompt plus requested output) per window shared by every worker; 0 is
    /// unlimited.
    #[arg(long, env = "LLM_TOKENS_PER_MINUTE", default_value_t = 0)]
    pub llm_tokens_per_minute: u64,

    /// The window the two LLM limits count over, in milliseconds: a minute, unless a provider
    /// counts over another window.
    #[arg(long, env = "LLM_RATE_WINDOW_MS", default_value_t = 60_000)]
    pub llm_rate_window_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RateLimitSettingsError {
    #[error("{field} must be a number from 0 to {MAX_RATE}")]
    Rate { field: &'static str },
    #[error("{field} must be from 1 to {MAX_BURST} while its rate is above 0")]
    Burst { field: &'static str },
    #[error("LLM_RATE_WINDOW_MS must be from 100 to 3600000")]
    Window,
}

impl RateLimitSettings {
    /// Checks every value, naming the variable at fault.
    pub fn validate(&self) -> Result<(), RateLimitSettingsError> {
        for (rate_field, rate, burst_field, burst) in [
            ("RATE_LIMIT_CREATE_PER_SEC", self.create_per_sec, "RATE_LIMIT_CREATE_BURST", self.create_burst),
            ("RATE_LIMIT_SEARCH_PER_SEC", self.search_per_sec, "RATE_LIMIT_SEARCH_BURST", self.search_burst),
            ("RATE_LIMIT_OTHER_PER_SEC", self.other_per_sec, "RATE_LIMIT_OTHER_BURST", self.other_burst),
            ("IP_RATE_LIMIT_PER_SEC", f64::from(self.ip_per_sec), "IP_RATE_LIMIT_BURST", self.ip_burst),
        ] {
            if !(0.0..=MAX_RATE).contains(&rate) {
                return Err(RateLimitSettingsError::Rate { field: rate_field });
            }
            if rate > 0.0 && !(1..=MAX_BURST).contains(&burst) {
                return Err(RateLimitSettingsError::Burst { field: burst_field });
            }
        }
        if !(100..=3_600_000).contains(&self.llm_rate_window_ms) {
            return Err(RateLimitSettingsError::Window);
        }
        Ok(())
    }

    /// The per-user limit of `class`; `None` when it is turned off.
    pub fn limit(&self, class: RouteClass) -> Option<Limit> {
        let (rate, burst) = match class {
            RouteClass::Create => (self.create_per_sec, self.create_burst),
            RouteClass::Search => (self.search_per_sec, self.search_burst),
            RouteClass::Other => (self.other_per_sec, self.other_burst),
        };
        Limit::per_second(rate, burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn defaults_are_valid_and_limit_every_class() {
        let s = Settings::defaults().rate_limits;
        s.validate().unwrap();
        for class in RouteClass::ALL {
            assert!(s.limit(class).is_some(), "{class:?}");
        }
    }

    #[test]
    fn a_zero_rate_turns_a_class_off_whatever_its_burst() {
        let mut s = Settings::defaults().rate_limits;
        s.search_per_sec = 0.0;
        s.search_burst = 0;
        s.validate().unwrap();
        assert_eq!(s.limit(RouteClass::Search), None);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let mut s = Settings::defaults().rate_limits;
        s.create_per_sec = f64::NAN;
        assert_eq!(s.validate(), Err(RateLimitSettingsError::Rate { field: "RATE_LIMIT_CREATE_PER_SEC" }));
        let mut s = Settings::defaults().rate_limits;
        s.other_per_sec = -1.0;
        assert_eq!(s.validate(), Err(RateLimitSettingsError::Rate { field: "RATE_LIMIT_OTHER_PER_SEC" }));
        let mut s = Settings::defaults().rate_limits;
        s.ip_burst = 0;
        assert_eq!(s.validate(), Err(RateLimitSettingsError::Burst { field: "IP_RATE_LIMIT_BURST" }));
        let mut s = Settings::defaults().rate_limits;
        s.llm_rate_window_ms = 0;
        assert_eq!(s.validate(), Err(RateLimitSettingsError::Window));
    }
}
