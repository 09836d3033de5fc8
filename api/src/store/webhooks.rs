//! What webhooks need from the store (see `crate::webhooks`), like [`super::BudgetStore`] for
//! budgets: the outbox the sender works from, `webhook_deliveries` rows (written by the
//! statement that ends a task with a callback URL) and the `webhook_attempts` log; and the
//! nonces of users' signing secrets. The Postgres implementation lives in
//! `store::postgres::webhooks`.
//!
//! Invariants the implementation keeps:
//! - a claim takes only pending rows that are due, skipping rows another claim has locked,
//!   counts the attempt and pushes `next_attempt_at` past the lease, all in one statement,
//!   so no two senders hold the same attempt and a sender that dies mid-send only delays
//!   the row until the lease ends;
//! - a claim takes at most [`Claim::per_user`] rows of one user (fewer for the users of
//!   [`Claim::busy`]), oldest due first, so one user's backlog never fills a batch;
//! - the final write of an attempt is fenced by the claim's token, so a sender whose lease
//!   ran out cannot overwrite a newer claim; its attempt is still logged.

use std::{fmt, str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::StoreError;
pub use crate::domain::DeliveryStatus;
use crate::domain::TaskId;

/// Which ending of a task a delivery reports, or that a person must act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookEvent {
    TaskCompleted,
    TaskFailed,
    TaskCancelled,
    TaskPartial,
    /// The task waits for a person (`required_action` in the payload); one per time it does.
    TaskRequiresAction,
}

impl WebhookEvent {
    /// The `type` field of the payload and the `event` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TaskCompleted => "task.completed",
            Self::TaskFailed => "task.failed",
            Self::TaskCancelled => "task.cancelled",
            Self::TaskPartial => "task.partial",
            Self::TaskRequiresAction => "task.requires_action",
        }
    }
}

impl FromStr for WebhookEvent {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "task.completed" => Ok(Self::TaskCompleted),
            "task.failed" => Ok(Self::TaskFailed),
            "task.cancelled" => Ok(Self::TaskCancelled),
            "task.partial" => Ok(Self::TaskPartial),
            "task.requires_action" => Ok(Self::TaskRequiresAction),
            other => Err(StoreError::Corrupt(format!("unknown webhook event `{other}`"))),
        }
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    /// The `Webhook-Id`; the same on every attempt.
    pub id: Uuid,
    pub task_id: TaskId,
    /// The task's user: whose secrets sign the call, whose lane it takes.
    pub user_id: String,
    pub event: WebhookEvent,
    pub url: String,
    /// The body to send.
    pub payload: Value,
    /// This attempt's number, from 1.
    pub attempt: i32,
    /// Fences the write that records this attempt.
    pub lease_token: Uuid,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    /// The receiver's status code, when it answered.
    pub http_status: Option<u16>,
    /// Why there was no acceptable answer: refused address, timeout, connection error.
    pub error: Option<String>,
    pub latency: Duration,
}

/// What becomes of the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAfter(Duration),
    /// No attempts left.
    GiveUp,
}

/// One `webhook_attempts` row, as read back for reports and tests.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempt: i32,
    pub http_status: Option<i32>,
    pub error: Option<String>,
    pub latency_ms: f64,
    pub created_at: DateTime<Utc>,
}

/// A delivery's state, for reports and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySummary {
    pub id: Uuid,
    pub event: WebhookEvent,
    pub url: String,
    pub status: DeliveryStatus,
    /// Attempts started so far.
    pub attempts: i32,
    /// The status code of the last answer, if the last attempt got one.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// What one claim may take.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Rows in all.
    pub limit: i64,
    /// How long the claimed rows stay hidden from other claims.
    pub lease: Duration,
    /// Rows of one user.
    pub per_user: i64,
    /// Users who already have attempts in flight, with the rows each may still take.
    pub busy: Vec<(String, i64)>,
}

/// Durable webhook deliveries.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Claims due deliveries for one attempt each, as [`Claim`] allows.
    async fn claim_due_webhooks(&self, claim: &Claim) -> Result<Vec<ClaimedDelivery>, StoreError>;

    /// Logs the attempt and moves the delivery on. `false` when the claim was no longer
    /// current (its lease ran out and another sender took the row): the attempt is logged,
    /// the delivery left to the newer claim.
    async fn record_webhook_attempt(
        &self,
        delivery: &ClaimedDelivery,
        result: &AttemptResult,
        next: NextStep,
    ) -> Result<bool, StoreError>;

    /// The attempts of a delivery, oldest first.
    async fn webhook_attempts(&self, delivery: Uuid) -> Result<Vec<AttemptRow>, StoreError>;

    /// The deliveries of a task (at most one per event), oldest first.
    async fn task_webhooks(&self, task: TaskId) -> Result<Vec<DeliverySummary>, StoreError>;
}

/// One user's row of `webhook_secrets`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRow {
    pub user_id: String,
    pub nonce: Vec<u8>,
    pub previous_nonce: Option<Vec<u8>>,
    pub rotated_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow").field("user_id", &self.user_id).field("rotated_at", &self.rotated_at).finish()
    }
}

/// Where the nonces live. The Postgres implementation is in `store::postgres::webhooks`.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// The rows of `users`; a user without one gets one with the nonce at the same index of
    /// `fresh`. A user may be missing from the answer when another process created its row
    /// concurrently; asking again finds it.
    async fn webhook_secret_rows(&self, users: &[String], fresh: &[Vec<u8>]) -> Result<Vec<SecretRow>, StoreError>;

    /// Makes `nonce` the user's current one and the current one its previous, stamped now.
    async fn rotate_webhook_secret(&self, user: &str, nonce: &[u8]) -> Result<SecretRow, StoreError>;
}
