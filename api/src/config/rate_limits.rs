//! The settings of the rate limits; the limiters themselves are `crate::ratelimit`'s.

use clap::Args;

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
}
