//! Webhooks: when a task that was submitted with a `callback_url` ends, the service POSTs
//! its summary there.
//!
//! # Guarantees
//! - **Never missed, enqueued once.** A trigger on `tasks` writes the delivery into the
//!   `webhook_deliveries` outbox in the same transaction that ends the task, whichever code
//!   path ends it; a task ends once, and `(task_id, event)` is unique.
//! - **At least once, one attempt at a time.** Every worker process runs a sender
//!   ([`WebhookSender::send_due`], every [`POLL_EVERY`]) that claims due rows with `FOR
//!   UPDATE SKIP LOCKED` and a lease, sends without holding a transaction, and records the
//!   attempt in `webhook_attempts` (status code or error, latency). 2xx delivers; anything
//!   else is retried after 1 s, 2 s, 4 s … (with jitter, at most 10 min) until
//!   `WEBHOOK_MAX_ATTEMPTS`, then the delivery is `failed`. A receiver may still see a
//!   delivery twice (a sender dying after the receiver answered), so it should drop a
//!   `Webhook-Id` it has already processed.
//! - **Only public receivers**, unless `WEBHOOK_ALLOW_PRIVATE=true`: see [`target`].
//!
//! # What a receiver gets
//!
//! `POST <callback_url>` with `Content-Type: application/json` and the body:
//!
//! ```json
//! {"delivery_id": "…", "type": "task.completed", "task_id": "…", "user_id": "…",
//!  "status": "completed", "result": "…", "error": null, "tokens_in": 1200,
//!  "tokens_out": 300, "cost_usd": 0.0012, "completed_at": "2026-11-21T10:00:00.000000Z"}
//! ```
//!
//! `type` is `task.completed`, `task.failed` or `task.cancelled`. The body is the task as
//! it was when it ended, and is the same bytes on every attempt of a delivery.
//!
//! # Verifying a call (Standard Webhooks style)
//!
//! Three headers come with every attempt:
//! - `Webhook-Id`: the delivery id (the body's `delivery_id`), the same on every retry;
//! - `Webhook-Timestamp`: the attempt's time, in unix seconds;
//! - `Webhook-Signature`: `v1=<hex>`, the lowercase hex HMAC-SHA256, keyed with the shared
//!   `WEBHOOK_SECRET`, of the string `"{Webhook-Id}.{Webhook-Timestamp}.{raw body}"`.
//!
//! A receiver recomputes the HMAC over the raw body bytes (before any JSON parsing),
//! compares it in constant time with each space-separated `v1=` value, and refuses
//! timestamps more than a few minutes away from its clock, so a captured call cannot be
//! replayed later. [`verify`] does exactly that.

pub mod outbox;
mod sender;
pub mod signature;
pub mod target;

pub use outbox::{
    AttemptResult, AttemptRow, ClaimedDelivery, DeliveryStatus, DeliverySummary, NextStep, Outbox, WebhookEvent,
};
pub use sender::WebhookSender;
pub use signature::{Received, VerifyError, WebhookSigner, verify};
pub use target::{MAX_CALLBACK_URL_CHARS, TargetError, TargetPolicy, parse_callback_url};

use std::time::Duration;

use crate::config::Settings;

/// Used when no `WEBHOOK_SECRET` is set; start-up warns about it.
pub const DEV_WEBHOOK_SECRET: &str = "insecure-development-webhook-secret";
/// How often each worker looks for due deliveries.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// The sender's settings, checked.
#[derive(Clone)]
pub struct WebhookConfig {
    /// HMAC key; at least 16 bytes.
    pub secret: String,
    /// Limit of one attempt, connection to answer.
    pub timeout: Duration,
    /// Attempts per delivery, the first included.
    pub max_attempts: u32,
    pub policy: TargetPolicy,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("policy", &self.policy)
            .finish_non_exhaustive() // never the secret
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WebhookError {
    #[error("WEBHOOK_SECRET must be at least 16 bytes")]
    ShortSecret,
    #[error("{field} must be at least 1")]
    Zero { field: &'static str },
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

impl WebhookConfig {
    /// Reads and checks the `WEBHOOK_*` settings; warns when the development secret or
    /// private targets are in use.
    pub fn from_settings(s: &Settings) -> Result<Self, WebhookError> {
        if s.webhook_secret.expose().len() < 16 {
            return Err(WebhookError::ShortSecret);
        }
        if s.webhook_timeout_secs == 0 {
            return Err(WebhookError::Zero { field: "WEBHOOK_TIMEOUT_SECS" });
        }
        if s.webhook_max_attempts == 0 {
            return Err(WebhookError::Zero { field: "WEBHOOK_MAX_ATTEMPTS" });
        }
        if s.webhook_secret.expose() == DEV_WEBHOOK_SECRET {
            tracing::warn!(
                "WEBHOOK_SECRET is not set: webhooks are signed with the development secret; set one in production"
            );
        }
        if s.webhook_allow_private {
            tracing::warn!("WEBHOOK_ALLOW_PRIVATE is on: webhooks may target loopback and private networks");
        }
        Ok(Self {
            secret: s.webhook_secret.expose().to_owned(),
            timeout: Duration::from_secs(s.webhook_timeout_secs),
            max_attempts: s.webhook_max_attempts,
            policy: TargetPolicy { allow_private: s.webhook_allow_private },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_strict() {
        let config = WebhookConfig::from_settings(&Settings::defaults()).unwrap();
        assert_eq!((config.timeout, config.max_attempts), (Duration::from_secs(10), 8));
        assert!(!config.policy.allow_private);
        assert!(!format!("{config:?}").contains(DEV_WEBHOOK_SECRET), "the secret is never printed");
    }

    #[test]
    fn short_secrets_and_zero_limits_are_refused() {
        let mut s = Settings::defaults();
        s.webhook_secret = "short".into();
        assert_eq!(WebhookConfig::from_settings(&s).unwrap_err(), WebhookError::ShortSecret);
        let mut s = Settings::defaults();
        s.webhook_max_attempts = 0;
        assert_eq!(WebhookConfig::from_settings(&s).unwrap_err(), WebhookError::Zero { field: "WEBHOOK_MAX_ATTEMPTS" });
    }
}
