//! The webhook outbox in Postgres: `webhook_deliveries` and `webhook_attempts` (see the
//! invariants on [`crate::webhooks::Outbox`]). Rows are created by the `tasks` trigger of
//! the webhooks migration, never here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::PgStore;
use crate::{
    domain::TaskId,
    store::StoreError,
    webhooks::{AttemptResult, AttemptRow, ClaimedDelivery, DeliveryStatus, DeliverySummary, NextStep, Outbox},
};

#[async_trait::async_trait]
impl Outbox for PgStore {
    async fn claim_due_webhooks(&self, limit: i64, lease: Duration) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let token = Uuid::new_v4();
        // One statement, so the lock is held only while the row is updated: the claim is
        // committed before anything is sent.
        let rows: Vec<(Uuid, Uuid, String, String, Value, i32)> = sqlx::query_as(
            "WITH due AS (
                SELECT id FROM webhook_deliveries
                WHERE status = 'pending' AND next_attempt_at <= now()
                ORDER BY next_attempt_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED
             )
             UPDATE webhook_deliveries w
             SET attempts = w.attempts + 1, lease_token = $2,
                 next_attempt_at = now() + make_interval(secs => $3), updated_at = now()
             FROM due WHERE w.id = due.id
             RETURNING w.id, w.task_id, w.event, w.url, w.payload, w.attempts",
        )
        .bind(limit)
        .bind(token)
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, task_id, event, url, payload, attempt)| {
                Ok(ClaimedDelivery {
                    id,
                    task_id: TaskId(task_id),
                    event: event.parse()?,
                    url,
                    payload,
                    attempt,
                    lease_token: token,
                })
            })
            .collect()
    }

    async fn record_webhook_attempt(
        &self,
        delivery: &ClaimedDelivery,
        result: &AttemptResult,
        next: NextStep,
    ) -> Result<bool, StoreError> {
        let (status, retry_after) = match next {
            NextStep::Delivered => (DeliveryStatus::Delivered, None),
            NextStep::RetryAfter(after) => (DeliveryStatus::Pending, Some(after.as_secs_f64())),
            NextStep::GiveUp => (DeliveryStatus::Failed, None),
        };
        // The attempt is logged even when the claim is stale: it did happen.
        let current: bool = sqlx::query_scalar(
            "WITH d AS (
                UPDATE webhook_deliveries
                SET status = $4, last_status = $5, last_error = $6, lease_token = NULL, updated_at = now(),
                    next_attempt_at = CASE WHEN $7::float8 IS NULL THEN next_attempt_at
                                           ELSE now() + make_interval(secs => $7::float8) END,
                    delivered_at = CASE WHEN $4 = 'delivered' THEN now() END
                WHERE id = $1 AND lease_token = $2 AND status = 'pending'
                RETURNING id
             ), a AS (
                INSERT INTO webhook_attempts (delivery_id, attempt, http_status, error, latency_ms)
                VALUES ($1, $3, $5, $6, $8)
             )
             SELECT EXISTS (SELECT 1 FROM d)",
        )
        .bind(delivery.id)
        .bind(delivery.lease_token)
        .bind(delivery.attempt)
        .bind(status.as_str())
        .bind(result.http_status.map(i32::from))
        .bind(&result.error)
        .bind(retry_after)
        .bind(result.latency.as_secs_f64() * 1000.0)
        .fetch_one(&self.pool)
        .await?;
        Ok(current)
    }

    async fn webhook_attempts(&self, delivery: Uuid) -> Result<Vec<AttemptRow>, StoreError> {
        Ok(sqlx::query_as::<_, AttemptRow>(
            "SELECT attempt, http_status, error, latency_ms, created_at
             FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(delivery)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn task_webhooks(&self, task: TaskId) -> Result<Vec<DeliverySummary>, StoreError> {
        type Row =
            (Uuid, String, String, String, i32, Option<i32>, Option<String>, DateTime<Utc>, Option<DateTime<Utc>>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, event, url, status, attempts, last_status, last_error, created_at, delivered_at
             FROM webhook_deliveries WHERE task_id = $1 ORDER BY created_at, id",
        )
        .bind(task.0)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, event, url, status, attempts, last_status, last_error, created_at, delivered_at)| {
                Ok(DeliverySummary {
                    id,
                    event: event.parse()?,
                    url,
                    status: status.parse()?,
                    attempts,
                    last_status,
                    last_error,
                    created_at,
                    delivered_at,
                })
            })
            .collect()
    }
}
