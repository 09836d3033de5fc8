//! Webhooks: when a task that was submitted with a `callback_url` ends, the service POSTs
//! its summary there.
//!
//! # Guarantees
//! - **Never missed, enqueued once.** Every transition that ends a task writes the delivery
//!   into the `webhook_deliveries` outbox in the statement that ends it (`QueueWebhook` in
//!   [`crate::lifecycle::table`], SQL function `queue_task_webhook`); a task ends once per
//!   run, and `(task_id, event, run)` is unique.
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
//! # Verifying a call (Standard Webhooks)
//!
//! Calls are signed as the [Standard Webhooks](https://www.standardwebhooks.com/)
//! specification says, so receivers can verify them with its libraries (`standardwebhooks`
//! for Python, JavaScript, Go …, or `svix`). Three headers come with every attempt:
//! - `webhook-id`: the delivery id (the body's `delivery_id`), the same on every retry;
//! - `webhook-timestamp`: the attempt's time, in unix seconds;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256>` of `"{webhook-id}.{webhook-timestamp}.{raw
//!   body}"`, keyed with the task's user's own secret ([`secrets`]; `GET /webhook-secret`
//!   shows it as `whsec_…`, the HMAC key being the base64 after `whsec_`). For 24 h after
//!   `POST /webhook-secret/rotate` the header holds two space-separated entries, one per
//!   secret, and either verifies.
//!
//! A receiver recomputes the HMAC over the raw body bytes (before any JSON parsing),
//! compares it in constant time with each entry, and refuses timestamps more than a few
//! minutes away from its clock, so a captured call cannot be replayed later. [`verify`]
//! does exactly that.
//!
//! # One slow receiver delays nobody else
//!
//! Attempts run in per-user lanes (see [`WebhookSender`]): a user's receiver that hangs until
//! `WEBHOOK_TIMEOUT_SECS` holds at most `WEBHOOK_CONCURRENCY_PER_USER` attempts of that
//! user per worker process; other users' deliveries are claimed and sent meanwhile.

mod lanes;
pub mod secrets;
mod sender;
pub mod signature;
pub mod target;

pub use secrets::{ServerKey, SigningSecret, UserSecrets, WebhookSecrets};
pub use sender::{MAX_IN_FLIGHT, WebhookSender};
pub use signature::{Received, VerifyError, sign, verify};
pub use target::{MAX_CALLBACK_URL_CHARS, TargetError, TargetPolicy, parse_callback_url};

use std::time::Duration;

// A settings default, so it lives with the settings (`crate::config`, below this module).
pub use crate::config::DEV_WEBHOOK_SERVER_KEY;
// What webhooks need from the store is declared with the store (`crate::store::Outbox`), so
// the store implements it without depending on this module; re-exported under its old name.
use crate::config::Settings;
pub use crate::store::{
    AttemptResult, AttemptRow, Claim, ClaimedDelivery, DeliveryStatus, DeliverySummary, NextStep, Outbox, SecretRow,
    SecretStore, WebhookEvent,
};

/// How often each worker looks for due deliveries.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// The sender's settings, checked.
#[derive(Clone)]
pub struct WebhookConfig {
    /// What users' secrets are derived from; at least 16 bytes.
    pub server_key: ServerKey,
    /// Limit of one attempt, connection to answer.
    pub timeout: Duration,
    /// Attempts per delivery, the first included.
    pub max_attempts: u32,
    /// Attempts of one user in flight per process.
    pub per_user: usize,
    pub policy: TargetPolicy,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("per_user", &self.per_user)
            .field("policy", &self.policy)
            .finish_non_exhaustive() // never the key
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WebhookError {
    #[error("WEBHOOK_SERVER_KEY must be at least 16 bytes")]
    ShortKey,
    #[error("{field} must be at least 1")]
    Zero { field: &'static str },
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

impl WebhookConfig {
    /// Reads and checks the `WEBHOOK_*` settings; warns when the development key or
    /// private targets are in use.
    pub fn from_settings(s: &Settings) -> Result<Self, WebhookError> {
        let key = s.webhook_server_key();
        if key.len() < 16 {
            return Err(WebhookError::ShortKey);
        }
        if s.webhook_timeout_secs == 0 {
            return Err(WebhookError::Zero { field: "WEBHOOK_TIMEOUT_SECS" });
        }
        if s.webhook_max_attempts == 0 {
            return Err(WebhookError::Zero { field: "WEBHOOK_MAX_ATTEMPTS" });
        }
        if s.webhook_concurrency_per_user == 0 {
            return Err(WebhookError::Zero { field: "WEBHOOK_CONCURRENCY_PER_USER" });
        }
        if key == DEV_WEBHOOK_SERVER_KEY {
            tracing::warn!(
                "WEBHOOK_SERVER_KEY is not set: users' webhook secrets derive from the development key; set one in production"
            );
        }
        if s.webhook_allow_private {
            tracing::warn!("WEBHOOK_ALLOW_PRIVATE is on: webhooks may target loopback and private networks");
        }
        Ok(Self {
            server_key: ServerKey::new(key.as_bytes()),
            timeout: Duration::from_secs(s.webhook_timeout_secs),
            max_attempts: s.webhook_max_attempts,
            per_user: s.webhook_concurrency_per_user as usize,
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
        assert_eq!((config.timeout, config.max_attempts, config.per_user), (Duration::from_secs(10), 8, 4));
        assert!(!config.policy.allow_private);
        assert!(!format!("{config:?}").contains(DEV_WEBHOOK_SERVER_KEY), "the key is never printed");
    }

    #[test]
    fn short_keys_and_zero_limits_are_refused() {
        let mut s = Settings::defaults();
        s.webhook_server_key = Some("short".into());
        assert_eq!(WebhookConfig::from_settings(&s).unwrap_err(), WebhookError::ShortKey);
        let mut s = Settings::defaults();
        s.webhook_concurrency_per_user = 0;
        let zero = WebhookError::Zero { field: "WEBHOOK_CONCURRENCY_PER_USER" };
        assert_eq!(WebhookConfig::from_settings(&s).unwrap_err(), zero);
        let mut s = Settings::defaults();
        s.webhook_max_attempts = 0;
        assert_eq!(WebhookConfig::from_settings(&s).unwrap_err(), WebhookError::Zero { field: "WEBHOOK_MAX_ATTEMPTS" });
    }
}
