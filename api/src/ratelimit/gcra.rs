//! GCRA (the generic cell rate algorithm) in Redis: one Lua script checks and updates any
//! number of buckets atomically, so every replica and worker shares one count.
//!
//! A bucket is a single key holding its theoretical arrival time (TAT, in microseconds):
//! the moment it would be full again. A request of cost `c` against a limit of one unit per
//! `interval` with burst `b` is admitted when `max(TAT, now) + c·interval − b·interval ≤ now`,
//! and then moves the TAT by `c·interval`. The clock is Redis's `TIME`, read inside the
//! script, so replicas whose clocks disagree still agree on every decision. Keys expire when
//! their bucket is full again, so an idle user costs nothing.

use std::time::Duration;

use deadpool_redis::Pool;

/// Checks every bucket (`KEYS[i]` with `ARGV` interval_us, burst, cost per key); admits only
/// if all admit, and then charges all. A cost above a bucket's burst is admitted once the
/// bucket is full, as a debt later requests wait out: otherwise it could never pass.
/// Returns `{admitted, retry_after_us, remaining, reset_us}`: the least remaining and the
/// longest time until full over the buckets.
const GCRA_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local admitted = 1
local retry = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local earliest = math.min(tat + (cost - burst) * interval, tat)
  if earliest > now then
    admitted = 0
    retry = math.max(retry, earliest - now)
  end
  tats[i] = {tat, tat + cost * interval, interval, burst}
end
local remaining = nil
local reset = 0
for i, key in ipairs(KEYS) do
  local b = tats[i]
  local tat = b[1]
  if admitted == 1 then
    tat = b[2]
    local ttl_ms = math.max(1, math.ceil((tat - now) / 1000))
    redis.call('SET', key, string.format('%.0f', tat), 'PX', ttl_ms)
  end
  local left = math.floor((b[4] * b[3] - (tat - now)) / b[3])
  left = math.max(0, math.min(b[4], left))
  if remaining == nil or left < remaining then remaining = left end
  reset = math.max(reset, tat - now)
end
return {admitted, retry, remaining or 0, reset}
";

/// Longest a limiter waits for Redis before it counts as unavailable: a request should not
/// hang because its rate limit cannot be read.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// One unit per `interval`, at most `burst` units at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    interval_us: u64,
    burst: u64,
}

impl Limit {
    /// `rate` units per second with bursts of `burst`; `None` (no limit) when either is 0.
    pub fn per_second(rate: f64, burst: u32) -> Option<Self> {
        // NaN is no rate, like 0.
        if rate.is_nan() || rate <= 0.0 || burst == 0 {
            return None;
        }
        Some(Self { interval_us: ((1e6 / rate).round() as u64).max(1), burst: u64::from(burst) })
    }

    /// `limit` units per `window` with bursts of `burst`; `None` (no limit) when either is 0.
    pub fn per_window(limit: u64, window: Duration, burst: u64) -> Option<Self> {
        if limit == 0 || burst == 0 {
            return None;
        }
        let interval_us = (window.as_micros() as f64 / limit as f64).round() as u64;
        Some(Self { interval_us: interval_us.max(1), burst })
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us)
    }
}

/// The limiter's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    /// How long until the same request would be admitted; zero when it was.
    pub retry_after: Duration,
    /// Units still available right now (the least over the buckets asked).
    pub remaining: u64,
    /// How long until the bucket is full again.
    pub reset: Duration,
}

impl Decision {
    /// `Retry-After` in whole seconds, rounded up so a client that obeys it is admitted.
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after).max(u64::from(!self.admitted))
    }

    /// `RateLimit-Reset` in whole seconds, rounded up.
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset)
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("redis pool error: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the rate limit script answered {0:?}")]
    Reply(Vec<i64>),
}

/// A bucket to charge: its full key, its limit and the cost of this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub key: String,
    pub limit: Limit,
    pub cost: u64,
}

/// The shared GCRA limiter of a deployment. Cloning shares the pool.
#[derive(Clone)]
pub struct GcraLimiter {
    pool: Pool,
    prefix: String,
    script: redis::Script,
}

impl GcraLimiter {
    pub fn new(pool: Pool, prefix: &str) -> Self {
        Self { pool, prefix: format!("{prefix}:ratelimit"), script: redis::Script::new(GCRA_SCRIPT) }
    }

    /// The key of a bucket, under the deployment's `REDIS_PREFIX`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// Admits and charges every bucket of `charges`, or none of them.
    pub async fn acquire(&self, charges: &[Charge]) -> Result<Decision, LimiterError> {
        tokio::time::timeout(REDIS_TIMEOUT, self.run(charges))
            .await
            .map_err(|_| LimiterError::Timeout(REDIS_TIMEOUT))?
    }

    async fn run(&self, charges: &[Charge]) -> Result<Decision, LimiterError> {
        let mut conn = self.pool.get().await?;
        let mut invocation = self.script.prepare_invoke();
        for charge in charges {
            invocation.key(&charge.key).arg(charge.limit.interval_us).arg(charge.limit.burst).arg(charge.cost.max(1));
        }
        // EVALSHA, falling back to EVAL (which caches the script) on NOSCRIPT.
        let reply: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        let (admitted, retry_us, remaining, reset_us) = match reply.as_slice() {
            &[a, r, left, full] if (0..=1).contains(&a) && r >= 0 && left >= 0 && full >= 0 => (a, r, left, full),
            _ => return Err(LimiterError::Reply(reply)),
        };
        Ok(Decision {
            admitted: admitted == 1,
            retry_after: Duration::from_micros(retry_us as u64),
            remaining: remaining as u64,
            reset: Duration::from_micros(reset_us as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_become_emission_intervals() {
        let five = Limit::per_second(5.0, 10).unwrap();
        assert_eq!(five.interval(), Duration::from_millis(200));
        assert_eq!(five.burst(), 10);
        assert_eq!(Limit::per_second(0.01, 1).unwrap().interval(), Duration::from_secs(100));
        let rpm = Limit::per_window(600, Duration::from_secs(60), 1).unwrap();
        assert_eq!(rpm.interval(), Duration::from_millis(100));
        // A rate finer than a microsecond still charges something.
        assert_eq!(Limit::per_second(1e9, 1).unwrap().interval(), Duration::from_micros(1));
    }

    #[test]
    fn zero_means_no_limit() {
        assert_eq!(Limit::per_second(0.0, 10), None);
        assert_eq!(Limit::per_second(f64::NAN, 10), None);
        assert_eq!(Limit::per_second(5.0, 0), None);
        assert_eq!(Limit::per_window(0, Duration::from_secs(60), 1), None);
    }

    #[test]
    fn header_seconds_round_up() {
        let refused = Decision {
            admitted: false,
            retry_after: Duration::from_millis(1200),
            remaining: 0,
            reset: Duration::from_millis(5001),
        };
        assert_eq!(refused.retry_after_secs(), 2);
        assert_eq!(refused.reset_secs(), 6);
        // A refusal never says "retry in 0 s", which clients would read as "now".
        let barely = Decision { retry_after: Duration::from_micros(1), ..refused };
        assert_eq!(barely.retry_after_secs(), 1);
        let admitted = Decision { admitted: true, retry_after: Duration::ZERO, remaining: 3, reset: Duration::ZERO };
        assert_eq!(admitted.retry_after_secs(), 0);
        assert_eq!(admitted.reset_secs(), 0);
    }
}
