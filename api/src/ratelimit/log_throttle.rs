//! At most one log line per period for a condition that may hold for every request (Redis
//! down under load), so an outage does not become a log flood.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

pub struct LogThrottle {
    period: Duration,
    origin: Instant,
    /// Milliseconds after `origin` of the next line allowed; 0 before the first.
    next_ms: AtomicU64,
}

impl LogThrottle {
    pub fn new(period: Duration) -> Self {
        Self { period, origin: Instant::now(), next_ms: AtomicU64::new(0) }
    }

    /// True for the first caller of each period; the others should stay silent.
    pub fn allow(&self) -> bool {
        let now = self.origin.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(next, now + self.period.as_millis() as u64, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert!(throttle.allow());
        assert!(!throttle.allow());
        assert!(!throttle.allow());
        let open = LogThrottle::new(Duration::ZERO);
        assert!(open.allow());
        assert!(open.allow());
    }
}
