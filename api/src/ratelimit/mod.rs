//! Rate limits shared by every replica: per user and route class in Redis, per IP in front,
//! and per model provider before each model call.
//!
//! - [`user`]: the per-user limiter, a GCRA bucket per (route class, user) in Redis, so every
//!   replica enforces the same numbers. Writes fail closed when Redis is down (unless
//!   `RATE_LIMIT_FAIL_OPEN`), reads pass.
//! - [`upstream`]: requests- and tokens-per-minute of the model provider, shared by every
//!   worker; a call over the limit waits for capacity instead of meeting the provider's 429.
//! - [`gcra`]: the one Lua script all of the Redis limits run on.
//!
//! The HTTP side (the middleware, the per-IP flood guard, the 429s in the OpenAPI document)
//! is `http`'s, above this module.

pub mod gcra;
mod log_throttle;
pub mod upstream;
pub mod user;

pub use gcra::{Charge, Decision, GcraLimiter, Limit, LimiterError};
pub(crate) use log_throttle::LogThrottle;
pub use upstream::{UpstreamLimited, UpstreamLimits};
pub use user::{HttpLimiter, RouteClass};

// The settings are read with the rest in `crate::config`, below this module; what they mean
// for a route class is said here.
pub use crate::config::{RateLimitSettings, RateLimitSettingsError};

impl RateLimitSettings {
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
