//! The sender: claims due deliveries, POSTs them signed, and records every attempt.
//!
//! Each attempt is claim (one short statement, committed) → send (no transaction or row
//! lock held) → record (one fenced statement). A 2xx answer delivers; anything else, a
//! timeout or a refused address schedules a retry with exponential backoff and jitter
//! until the last attempt, which fails the delivery. Redirects are not followed: a 3xx is
//! a failed attempt, since the next hop could lead anywhere.

use std::{sync::Arc, time::Duration};

use futures_util::future::join_all;
use reqwest::{
    Url,
    header::{CONTENT_TYPE, HeaderValue},
    redirect,
};
use tokio::time::Instant;

use super::{
    WebhookConfig, WebhookError,
    outbox::{AttemptResult, ClaimedDelivery, NextStep, Outbox},
    signature::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSigner},
    target::{TargetPolicy, VettingResolver, check_literal_host},
};
use crate::store::StoreError;

/// Deliveries claimed (and sent concurrently) per round.
const BATCH: i64 = 32;
/// First retry delay; it doubles per attempt up to [`RETRY_MAX`], with jitter.
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(600);
/// How long a claim outlives the request's own timeout before another sender may retry.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// `last_error` and attempt errors are cut to this many characters.
const MAX_ERROR_CHARS: usize = 1000;

/// Sends the webhooks of one process's workers. Cloning shares it.
#[derive(Clone)]
pub struct WebhookSender {
    outbox: Arc<dyn Outbox>,
    client: reqwest::Client,
    signer: WebhookSigner,
    config: WebhookConfig,
}

impl WebhookSender {
    pub fn new(outbox: Arc<dyn Outbox>, config: WebhookConfig) -> Result<Self, WebhookError> {
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy() // a proxy would connect to names the resolver never vetted
            .timeout(config.timeout)
            .dns_resolver(Arc::new(VettingResolver { policy: config.policy }))
            .user_agent(concat!("agent-orchestrator-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(error_chain(&e)))?;
        let signer = WebhookSigner::new(config.secret.as_bytes());
        Ok(Self { outbox, client, signer, config })
    }

    /// Where submissions may point their callback URL.
    pub fn policy(&self) -> TargetPolicy {
        self.config.policy
    }

    /// Sends every due delivery, a batch at a time, until none is due; returns how many
    /// attempts were made. Errors only when the outbox cannot be read.
    pub async fn send_due(&self) -> Result<usize, StoreError> {
        let lease = self.config.timeout + LEASE_MARGIN;
        let mut sent = 0;
        loop {
            let claimed = self.outbox.claim_due_webhooks(BATCH, lease).await?;
            let full = claimed.len() as i64 == BATCH;
            sent += claimed.len();
            join_all(claimed.into_iter().map(|d| self.attempt(d))).await;
            if !full {
                return Ok(sent);
            }
        }
    }

    /// One attempt of one claimed delivery, recorded whatever happens.
    async fn attempt(&self, delivery: ClaimedDelivery) {
        let result = self.send(&delivery).await;
        let next = match (result.http_status, &result.error) {
            (Some(status), None) if (200..300).contains(&status) => NextStep::Delivered,
            _ if delivery.attempt >= self.config.max_attempts as i32 => NextStep::GiveUp,
            _ => NextStep::RetryAfter(crate::worker::backoff_delay(RETRY_BASE, RETRY_MAX, delivery.attempt as u32)),
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

    async fn send(&self, delivery: &ClaimedDelivery) -> AttemptResult {
        let started = Instant::now();
        let outcome = self.post(delivery).await;
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

    /// POSTs the signed payload and returns the answer's status code.
    async fn post(&self, delivery: &ClaimedDelivery) -> Result<u16, String> {
        let url = Url::parse(&delivery.url).map_err(|e| format!("invalid callback URL: {e}"))?;
        // Names are vetted by the resolver; literal addresses never reach it.
        check_literal_host(&url, self.config.policy).map_err(|e| format!("callback_url {e}"))?;
        let body = serde_json::to_vec(&delivery.payload).map_err(|e| format!("cannot encode the payload: {e}"))?;
        let id = delivery.id.to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let signature = self.signer.sign(&id, timestamp, &body);
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
