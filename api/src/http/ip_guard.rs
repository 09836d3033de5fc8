//! The per-IP flood guard in front of everything: tower_governor's in-memory GCRA, one per
//! replica. It runs before routing, auth and Redis, so a flood is turned away without
//! costing a Redis round trip; fairness between users is the per-user limiter's job
//! ([`super::rate_limit`]).
//!
//! The client address is the TCP peer, or with `TRUSTED_PROXY` the first address of
//! `X-Forwarded-For` (then `X-Real-IP`, then `Forwarded`), falling back to the peer. Only a
//! proxy that overwrites these headers makes them trustworthy: one that appends keeps the
//! client's own value first.

use std::{net::IpAddr, sync::Arc, time::Duration};

use axum::{body::Body, http::Request, response::IntoResponse};
use governor::middleware::NoOpMiddleware;
use tokio_util::sync::CancellationToken;
use tower_governor::{
    GovernorError, GovernorLayer,
    governor::{GovernorConfig, GovernorConfigBuilder},
    key_extractor::{KeyExtractor, PeerIpKeyExtractor, SmartIpKeyExtractor},
};

use super::ApiError;
use crate::{config::RateLimitSettings, metrics::Metrics, ratelimit::LogThrottle};

/// How often addresses whose bucket is full again are forgotten, so the map does not grow
/// with every address ever seen.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// The client address of a request, as configured by `TRUSTED_PROXY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp {
    trusted_proxy: bool,
}

impl KeyExtractor for ClientIp {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        if self.trusted_proxy { SmartIpKeyExtractor.extract(req) } else { PeerIpKeyExtractor.extract(req) }
    }
}

/// The guard's shared state; cloning shares it.
#[derive(Clone)]
pub struct IpGuard {
    config: Arc<GovernorConfig<ClientIp, NoOpMiddleware>>,
    metrics: Arc<Metrics>,
    log: Arc<LogThrottle>,
}

impl IpGuard {
    /// `None` when `IP_RATE_LIMIT_PER_SEC` is 0.
    pub fn new(settings: &RateLimitSettings, metrics: Arc<Metrics>) -> Option<Self> {
        if settings.ip_per_sec == 0 || settings.ip_burst == 0 {
            return None;
        }
        // The governor's "period" is the time to earn one request back.
        let period = Duration::from_nanos((1_000_000_000 / u64::from(settings.ip_per_sec)).max(1));
        let config = GovernorConfigBuilder::default()
            .period(period)
            .burst_size(settings.ip_burst)
            .key_extractor(ClientIp { trusted_proxy: settings.trusted_proxy })
            .finish()?;
        Some(Self { config: Arc::new(config), metrics, log: Arc::new(LogThrottle::new(Duration::from_secs(10))) })
    }

    /// The layer: refusals are 429 problem+json with `Retry-After`, counted in
    /// `orchestrator_ip_rate_limited_total`.
    pub fn layer(&self) -> GovernorLayer<ClientIp, NoOpMiddleware, Body> {
        let guard = self.clone();
        GovernorLayer::new(self.config.clone()).error_handler(move |error| guard.refusal(error))
    }

    fn refusal(&self, error: GovernorError) -> axum::response::Response {
        match error {
            GovernorError::TooManyRequests { wait_time, .. } => {
                self.metrics.ip_rate_limited.inc();
                if self.log.allow() {
                    tracing::warn!("the per-IP rate limit is refusing requests");
                }
                // The governor truncates its wait to whole seconds; add one so a client
                // that obeys Retry-After is admitted.
                ApiError::RateLimited { limit: "requests from this client address", retry_after: wait_time + 1 }
                    .into_response()
            }
            // Only when the server runs without connect info: a wiring bug, not the client's.
            GovernorError::UnableToExtractKey => {
                ApiError::Internal("the per-IP rate limit cannot tell the client address".into()).into_response()
            }
            GovernorError::Other { code, msg, .. } => {
                ApiError::Internal(format!("per-IP rate limit: {code} {}", msg.unwrap_or_default())).into_response()
            }
        }
    }

    /// Forgets full buckets every minute until `shutdown`.
    pub async fn clean_up(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(CLEANUP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let limiter = self.config.limiter();
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::extract::ConnectInfo;

    use super::*;

    fn request(forwarded_for: Option<&str>) -> Request<()> {
        let mut builder = Request::builder().uri("/tasks");
        if let Some(value) = forwarded_for {
            builder = builder.header("x-forwarded-for", value);
        }
        let mut request = builder.body(()).unwrap();
        request.extensions_mut().insert(ConnectInfo("10.0.0.9:4242".parse::<SocketAddr>().unwrap()));
        request
    }

    #[test]
    fn without_a_trusted_proxy_the_peer_is_the_client() {
        let direct = ClientIp { trusted_proxy: false };
        assert_eq!(direct.extract(&request(Some("203.0.113.7"))).unwrap(), "10.0.0.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn behind_a_trusted_proxy_the_first_forwarded_address_is_the_client() {
        let proxied = ClientIp { trusted_proxy: true };
        let first = proxied.extract(&request(Some("203.0.113.7, 10.0.0.1"))).unwrap();
        assert_eq!(first, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(proxied.extract(&request(None)).unwrap(), "10.0.0.9".parse::<IpAddr>().unwrap());
    }
}
