//! Upstream protection: requests and tokens per minute of the model provider, shared by every
//! worker of the deployment through Redis, so a burst of steps queues here instead of
//! meeting the provider's 429s.
//!
//! [`UpstreamLimited`] wraps the provider's [`LlmClient`]. Before each call it charges one
//! request and the call's estimated tokens (prompt, counted with the agents' tokenizer, plus
//! the output ceiling asked for) to the buckets of the provider, base URL and model. Over the
//! limit it sleeps for the time the script says capacity returns, then asks again; the wait
//! is an ordinary future, so a cancelled step stops waiting at once.
//!
//! Calls are spaced evenly (a burst of one): that is the schedule no provider counts as over
//! its per-minute limit, whether it counts over a fixed window, a sliding one or a token
//! bucket. A call larger than one interval's tokens is let through when its bucket is full,
//! and later calls wait its tokens out.
//!
//! If Redis cannot be asked, the call goes ahead (with a warning at most every ten seconds):
//! the provider's own 429s and the client's retries are the fallback, while failing here
//! would fail steps over a missing counter, and a worker without Redis has no jobs to run
//! anyway.

use std::{sync::Arc, time::Duration};

use agents::{
    ChatRequest, ChatResponse, LlmClient, LlmError,
    llm::{AnthropicConfig, prompt_tokens, warm_up_tokenizer},
};
use rand::Rng;

use super::{
    RateLimitSettings,
    gcra::{Charge, GcraLimiter, Limit},
    log_throttle::LogThrottle,
};
use crate::{
    config::{LlmProvider, Settings},
    metrics::Metrics,
};

/// Output tokens counted for a call that asks for no ceiling and whose provider has none.
const DEFAULT_OUTPUT_ESTIMATE: u64 = 1024;

/// The configured limits of one provider; `None` from [`Self::from_settings`] when both are 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLimits {
    requests: Option<Limit>,
    tokens: Option<Limit>,
    /// Output tokens counted for a call without its own `max_tokens`.
    default_output: u64,
    /// Whose limit this is: provider and base URL; the model is added per call.
    scope: String,
}

impl UpstreamLimits {
    pub fn from_settings(s: &Settings) -> Option<Self> {
        let r: &RateLimitSettings = &s.rate_limits;
        let window = Duration::from_millis(r.llm_rate_window_ms);
        let requests = Limit::per_window(r.llm_requests_per_minute, window, 1);
        let tokens = Limit::per_window(r.llm_tokens_per_minute, window, 1);
        if requests.is_none() && tokens.is_none() {
            return None;
        }
        let provider_default = match s.llm_provider {
            LlmProvider::Anthropic => u64::from(AnthropicConfig::DEFAULT_MAX_TOKENS),
            LlmProvider::Openai | LlmProvider::Offline => DEFAULT_OUTPUT_ESTIMATE,
        };
        let default_output = s.llm_max_tokens.map_or(provider_default, u64::from);
        let provider = format!("{:?}", s.llm_provider).to_lowercase();
        let scope = format!("{provider}@{}", s.llm_base_url.as_deref().unwrap_or("default"));
        Some(Self { requests, tokens, default_output, scope })
    }
}

/// An [`LlmClient`] that waits for the deployment's shared provider budget before each call.
pub struct UpstreamLimited {
    inner: Arc<dyn LlmClient>,
    gcra: GcraLimiter,
    limits: UpstreamLimits,
    metrics: Arc<Metrics>,
    unavailable_log: LogThrottle,
}

impl UpstreamLimited {
    pub fn new(inner: Arc<dyn LlmClient>, gcra: GcraLimiter, limits: UpstreamLimits, metrics: Arc<Metrics>) -> Self {
        Self { inner, gcra, limits, metrics, unavailable_log: LogThrottle::new(Duration::from_secs(10)) }
    }

    /// `inner`, limited when `settings` set an upstream limit.
    pub fn wrap(
        inner: Arc<dyn LlmClient>,
        settings: &Settings,
        gcra: &GcraLimiter,
        metrics: &Arc<Metrics>,
    ) -> Arc<dyn LlmClient> {
        match UpstreamLimits::from_settings(settings) {
            Some(limits) => Arc::new(Self::new(inner, gcra.clone(), limits, metrics.clone())),
            None => inner,
        }
    }

    async fn charges(&self, request: &ChatRequest) -> Vec<Charge> {
        let model = request.model.as_deref().unwrap_or(self.inner.model());
        let mut charges = Vec::with_capacity(2);
        if let Some(limit) = self.limits.requests {
            let key = self.gcra.key(&["llm", &self.limits.scope, model, "requests"]);
            charges.push(Charge { key, limit, cost: 1 });
        }
        if let Some(limit) = self.limits.tokens {
            let key = self.gcra.key(&["llm", &self.limits.scope, model, "tokens"]);
            let output = request.max_tokens.map_or(self.limits.default_output, u64::from);
            charges.push(Charge { key, limit, cost: counted_prompt(request).await + output });
        }
        charges
    }

    /// Waits until every bucket admits the call.
    async fn admit(&self, request: &ChatRequest) {
        let charges = self.charges(request).await;
        let mut waited = Duration::ZERO;
        loop {
            match self.gcra.acquire(&charges).await {
                Ok(decision) if decision.admitted => break,
                Ok(decision) => {
                    // Callers that were refused together would otherwise all ask again at
                    // the same instant, and all but one be refused again.
                    let spread = decision.retry_after.as_micros() as u64 / 10;
                    let pause = decision.retry_after + Duration::from_micros(rand::rng().random_range(0..=spread));
                    tokio::time::sleep(pause).await;
                    waited += pause;
                }
                Err(error) => {
                    self.metrics.rate_limit_unavailable.with_label_values(&["passed"]).inc();
                    if self.unavailable_log.allow() {
                        tracing::warn!(%error, "the shared model rate limit cannot be checked; calling the provider anyway");
                    }
                    break;
                }
            }
        }
        if !waited.is_zero() {
            let provider = self.inner.provider();
            self.metrics.llm_rate_limit_waits.with_label_values(&[provider]).inc();
            self.metrics.llm_rate_limit_wait_seconds.with_label_values(&[provider]).inc_by(waited.as_secs_f64());
        }
    }
}

#[async_trait::async_trait]
impl LlmClient for UpstreamLimited {
    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.admit(request).await;
        self.inner.chat(request).await
    }
}

/// The prompt's tokens as the provider will count them against its limit, counted on the
/// blocking pool: a long conversation takes milliseconds of CPU to encode.
async fn counted_prompt(request: &ChatRequest) -> u64 {
    warm_up_tokenizer().await;
    let request = request.clone();
    let fallback = request.messages.iter().map(|m| m.content.len() as u64).sum::<u64>().div_ceil(4);
    tokio::task::spawn_blocking(move || prompt_tokens(&request)).await.unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limits_means_no_wrapper() {
        assert_eq!(UpstreamLimits::from_settings(&Settings::defaults()), None);
    }

    #[test]
    fn limits_are_spread_over_their_window() {
        let mut s = Settings::defaults();
        s.rate_limits.llm_requests_per_minute = 600;
        s.rate_limits.llm_tokens_per_minute = 60_000;
        s.llm_max_tokens = Some(256);
        let limits = UpstreamLimits::from_settings(&s).unwrap();
        let requests = limits.requests.unwrap();
        assert_eq!((requests.interval(), requests.burst()), (Duration::from_millis(100), 1));
        assert_eq!(limits.tokens.unwrap().interval(), Duration::from_millis(1));
        assert_eq!(limits.default_output, 256);
        assert_eq!(limits.scope, "offline@default");
    }
}
