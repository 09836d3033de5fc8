//! Exponential backoff with jitter: for infrastructure errors in the worker loops, step
//! retries and webhook delivery retries. A leaf, so the webhook sender need not reach into
//! the worker for it.

use std::time::Duration;

/// `base * 2^(n-1)` capped at `max`, then scaled by a random factor in [0.5, 1.0) so that
/// workers failing together do not retry together.
pub fn delay(base: Duration, max: Duration, n: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(20)));
    exp.min(max).mul_f64(rand::random_range(0.5..1.0))
}

/// Consecutive failures of one loop, reset on success.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        delay(Duration::from_millis(100), Duration::from_secs(5), self.failures)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_cap_and_stay_jittered() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..100 {
            let first = delay(base, max, 1);
            assert!(first >= Duration::from_millis(50) && first < base, "{first:?}");
            let third = delay(base, max, 3);
            assert!(third >= Duration::from_millis(200) && third < Duration::from_millis(400), "{third:?}");
            let late = delay(base, max, 30);
            assert!(late >= max / 2 && late < max, "{late:?}");
        }
    }
}
