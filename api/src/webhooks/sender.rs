//! The sender: claims due deliveries, POSTs them signed, and records every attempt.
//!
//! Each attempt is claim (one short statement, committed) → send (no transaction or row
//! lock held) → record (one fenced statement). A 2xx answer delivers; anything else, a
//! timeout or a refused address schedules a retry with exponential backoff and jitter
//! until the last attempt, which fails the delivery. Redirects are not followed: a 3xx is
//! a failed attempt, since the next hop could lead anywhere.
//!
//! Attempts run in per-user lanes ([`super::lanes`]): a claim takes only what fits in
//! each user's lane (`WEBHOOK_CONCURRENCY_PER_USER` in flight) and in the process
//! ([`MAX_IN_FLIGHT`]), and every attempt runs on its own task, so a receiver that hangs
//! until the timeout holds its user's slots and nobody else's.

use std::{collections::HashMap, sync::Arc, time::Duration};

use reqwest::{
    Url,
    header::{CONTENT_TYPE, HeaderValue},
    redirect,
};
use tokio::time::Instant;

use super::{
    WebhookConfig, WebhookError,
    lanes::Lanes,
    secrets::{UserSecrets, WebhookSecrets},
    signature::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign},
    target::{TargetPolicy, VettingResolver, check_literal_host},
};
use crate::store::{AttemptResult, Claim, ClaimedDelivery, NextStep, Outbox, StoreError};

/// Deliveries claimed per round, at most.
const BATCH: usize = 32;
/// Attempts one process has in flight, over all users.
pub const MAX_IN_FLIGHT: usize = 256;
/// First retry delay; it doubles per attempt up to [`RETRY_MAX`], with jitter.
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(600);
/// How long a claim outlives the request's own timeout before another sender may retry.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// `last_error` and attempt errors are cut to this many characters.
const MAX_ERROR_CHARS: usize = 1000;

/// Sends the webhooks of one process's workers. Cloning shares it, lanes included.
#[derive(Clone)]
pub struct WebhookSender {
    outbox: Arc<dyn Outbox>,
    secrets: WebhookSecrets,
    client: reqwest::Client,
    config: WebhookConfig,
    lanes: Arc<Lanes>,
    /// One claim at a time in the process: every worker's loop calls [`Self::send_due`],
    /// and two claims sized from the same free room would overfill a lane.
    claiming: Arc<tokio::sync::Mutex<()>>,
}

impl WebhookSender {
    pub fn new(outbox: Arc<dyn Outbox>, secrets: WebhookSecrets, config: WebhookConfig) -> Result<Self, WebhookError> {
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy() // a proxy would connect to names the resolver never vetted
            .timeout(config.timeout)
            .dns_resolver(Arc::new(VettingResolver { policy: config.policy }))
            .user_agent(concat!("agent-orchestrator-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(error_chain(&e)))?;
        let lanes = Lanes::new(config.per_user, MAX_IN_FLIGHT);
        Ok(Self { outbox, secrets, client, config, lanes, claiming: Arc::default() })
    }

    /// Where submissions may point their callback URL.
    pub fn policy(&self) -> TargetPolicy {
        self.config.policy
    }

    /// Users' signing secrets, for `GET /webhook-secret`.
    pub fn secrets(&self) -> &WebhookSecrets {
        &self.secrets
    }

    /// Claims every due delivery that fits in the lanes, a batch at a time, and starts an
    /// attempt of each on its own task; returns how many were started. Does not wait for
    /// them. Errors only when the outbox cannot be read.
    pub async fn send_due(&self) -> Result<usize, StoreError> {
        let Ok(_claiming) = self.claiming.try_lock() else {
            return Ok(0); // another worker's loop is claiming for this process right now
        };
        let lease = self.config.timeout + LEASE_MARGIN;
        let mut started = 0;
        loop {
            let room = self.lanes.room();
            let limit = room.total.min(BATCH);
            if limit == 0 {
                return Ok(started);
            }
            let claim = Claim {
                limit: limit as i64,
                lease,
                per_user: self.lanes.per_user() as i64,
                busy: room.busy.into_iter().map(|(user, free)| (user, free as i64)).collect(),
            };
            let claimed = self.outbox.claim_due_webhooks(&claim).await?;
            let full = claimed.len() == limit;
            started += claimed.len();
            let secrets = self.signing_secrets(&claimed).await;
            for delivery in claimed {
                let slot = self.lanes.enter(&delivery.user_id);
                let secrets = secrets.get(&delivery.user_id).cloned();
                let sender = self.clone();
                tokio::spawn(async move {
                    sender.attempt(delivery, secrets).await;
                    drop(slot);
                });
            }
            if !full {
                return Ok(started);
            }
        }
    }

    /// The secrets of the batch's users. When they cannot be read, the attempts fail (and
    /// are retried) rather than go out unsigned.
    async fn signing_secrets(&self, batch: &[ClaimedDelivery]) -> HashMap<String, UserSecrets> {
        let mut users: Vec<String> = batch.iter().map(|d| d.user_id.clone()).collect();
        users.sort_unstable();
        users.dedup();
        if users.is_empty() {
            return HashMap::new();
        }
        self.secrets.of_users(&users).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read webhook signing secrets");
            HashMap::new()
        })
    }

    /// One attempt of one claimed delivery, recorded whatever happens.
    async fn attempt(&self, delivery: ClaimedDelivery, secrets: Option<UserSecrets>) {
        let result = match &secrets {
            Some(secrets) => self.send(&delivery, secrets).await,
            None => AttemptResult {
                http_status: None,
                error: Some("the user's signing secret could not be read".into()),
                latency: Duration::ZERO,
            },
        };
        let next = match (result.http_status, &result.error) {
            (Some(status), None) if (200..300).contains(&status) => NextStep::Delivered,
            _ if delivery.attempt >= self.config.max_attempts as i32 => NextStep::GiveUp,
            _ => NextStep::RetryAfter(crate::backoff::delay(RETRY_BASE, RETRY_MAX, delivery.attempt as u32)),
        };
        let (id, task, attempt) = (delivery.id, delivery.task_id, delivery.attempt);
        match self.outbox.record_webhook_attempt(&delivery, &result, next).await {
            Ok(true) => match next {
                NextStep::Delivered => tracing::debug!(%id, %task, attempt, "webhook delivered"),
                NextStep::RetryAfter(after) => tracing::info!(
                    %id, %task, attempt, status = ?result.http_status, error = ?result.error, retry_in = ?after,
                    "webhook attempt failed; retrying"
                ),
                NextStep::GiveUp => tracing::warn!(
                    %id, %task, attempt, status = ?result.http_status, error = ?result.error,
                    "webhook failed after its last attempt"
                ),
            },
            Ok(false) => tracing::warn!(%id, %task, attempt, "webhook claim expired during the attempt"),
            // The claim's lease ends on its own, and the row is then attempted again.
            Err(e) => tracing::warn!(%id, %task, attempt, error = %e, "could not record a webhook attempt"),
        }
    }

    async fn send(&self, delivery: &ClaimedDelivery, secrets: &UserSecrets) -> AttemptResult {
        let started = Instant::now();
        let outcome = self.post(delivery, secrets).await;
        let latency = started.elapsed();
        match outcome {
            Ok(status) if (200..300).contains(&status) => {
                AttemptResult { http_status: Some(status), error: None, latency }
            }
            Ok(status) => AttemptResult {
                http_status: Some(status),
                error: Some(format!("the receiver answered HTTP {status}")),
                latency,
            },
            Err(error) => AttemptResult { http_status: None, error: Some(truncate(error)), latency },
        }
    }

    /// POSTs the payload, signed with each of the user's signing secrets, and returns the
    /// answer's status code.
    async fn post(&self, delivery: &ClaimedDelivery, secrets: &UserSecrets) -> Result<u16, String> {
        let url = Url::parse(&delivery.url).map_err(|e| format!("invalid callback URL: {e}"))?;
        // Names are vetted by the resolver; literal addresses never reach it.
        check_literal_host(&url, self.config.policy).map_err(|e| format!("callback_url {e}"))?;
        let body = serde_json::to_vec(&delivery.payload).map_err(|e| format!("cannot encode the payload: {e}"))?;
        let id = delivery.id.to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(secrets.signing(), &id, timestamp, &body);
        let response = self
            .client
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(ID_HEADER, &id)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() { format!("timed out after {:?}", self.config.timeout) } else { error_chain(&e) }
            })?;
        // The answer's body is not read: nothing in it matters, and it could be large.
        Ok(response.status().as_u16())
    }
}

/// An error with its causes, e.g. "error sending request: … : `x` resolves to 10.0.0.1, …".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn truncate(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_ERROR_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}
