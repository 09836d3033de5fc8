//! The webhook outbox in Postgres: `webhook_deliveries` and `webhook_attempts` (see the
//! invariants on [`crate::store::Outbox`]). Rows are created by the statements that end a
//! task (`queue_task_webhook`, the `QueueWebhook` write of the lifecycle table), never here. Also the nonces of users' signing secrets,
//! `webhook_secrets` (see [`crate::store::SecretStore`]).

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::PgStore;
use crate::{
    domain::TaskId,
    store::{
        AttemptResult, AttemptRow, Claim, ClaimedDelivery, DeliveryStatus, DeliverySummary, NextStep, Outbox,
        SecretRow, SecretStore, StoreError,
    },
};

#[async_trait::async_trait]
impl Outbox for PgStore {
    async fn claim_due_webhooks(&self, claim: &Claim) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let token = Uuid::new_v4();
        let (busy_users, busy_room): (Vec<&str>, Vec<i64>) =
            claim.busy.iter().map(|(user, room)| (user.as_str(), *room)).unzip();
        // One statement, so the lock is held only while the row is updated: the claim is
        // committed before anything is sent. Rows are ranked per user first (a window
        // function cannot sit beside FOR UPDATE), then locked; a row another claim holds is
        // skipped, which only makes this claim smaller.
        let rows: Vec<(Uuid, Uuid, String, String, String, Value, i32)> = sqlx::query_as(concat!(
            "WITH ranked AS (
                SELECT w.id, w.next_attempt_at, t.user_id,
                       row_number() OVER (PARTITION BY t.user_id ORDER BY w.next_attempt_at, w.id) AS n
                FROM webhook_deliveries w JOIN tasks t ON t.id = w.task_id
                WHERE w.status = ",
            delivery_status!(Pending),
            " AND w.next_attempt_at <= now()
             ), allowed AS (
                SELECT r.id, r.user_id FROM ranked r
                LEFT JOIN unnest($4::text[], $5::int8[]) AS b (user_id, room) ON b.user_id = r.user_id
                WHERE r.n <= COALESCE(b.room, $6)
                ORDER BY r.next_attempt_at
                LIMIT $1
             ), due AS (
                SELECT w.id, a.user_id FROM webhook_deliveries w JOIN allowed a ON a.id = w.id
                WHERE w.status = ",
            delivery_status!(Pending),
            " AND w.next_attempt_at <= now()
                FOR UPDATE OF w SKIP LOCKED
             )
             UPDATE webhook_deliveries w
             SET attempts = w.attempts + 1, lease_token = $2,
                 next_attempt_at = now() + make_interval(secs => $3), updated_at = now()
             FROM due WHERE w.id = due.id
             RETURNING w.id, w.task_id, due.user_id, w.event, w.url, w.payload, w.attempts"
        ))
        .bind(claim.limit)
        .bind(token)
        .bind(claim.lease.as_secs_f64())
        .bind(&busy_users)
        .bind(&busy_room)
        .bind(claim.per_user)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, task_id, user_id, event, url, payload, attempt)| {
                Ok(ClaimedDelivery {
                    id,
                    task_id: TaskId(task_id),
                    user_id,
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
        let current: bool = sqlx::query_scalar(concat!(
            "WITH d AS (
                UPDATE webhook_deliveries
                SET status = $4, last_status = $5, last_error = $6, lease_token = NULL, updated_at = now(),
                    next_attempt_at = CASE WHEN $7::float8 IS NULL THEN next_attempt_at
                                           ELSE now() + make_interval(secs => $7::float8) END,
                    delivered_at = CASE WHEN $4 = ",
            delivery_status!(Delivered),
            " THEN now() END
                WHERE id = $1 AND lease_token = $2 AND status = ",
            delivery_status!(Pending),
            "
                RETURNING id
             ), a AS (
                INSERT INTO webhook_attempts (delivery_id, attempt, http_status, error, latency_ms)
                VALUES ($1, $3, $5, $6, $8)
             )
             SELECT EXISTS (SELECT 1 FROM d)"
        ))
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

type SecretTuple = (String, Vec<u8>, Option<Vec<u8>>, Option<DateTime<Utc>>);

fn secret_row((user_id, nonce, previous_nonce, rotated_at): SecretTuple) -> SecretRow {
    SecretRow { user_id, nonce, previous_nonce, rotated_at }
}

#[async_trait::async_trait]
impl SecretStore for PgStore {
    async fn webhook_secret_rows(&self, users: &[String], fresh: &[Vec<u8>]) -> Result<Vec<SecretRow>, StoreError> {
        // Existing rows are read, missing ones inserted, in one statement. Both halves see the
        // statement's snapshot: the SELECT not the rows inserted beside it (so no user comes
        // twice), and a row another transaction inserted meanwhile is in neither half (the
        // caller asks again).
        let rows: Vec<SecretTuple> = sqlx::query_as(
            "WITH made AS (
                INSERT INTO webhook_secrets (user_id, nonce)
                SELECT * FROM unnest($1::text[], $2::bytea[])
                ON CONFLICT (user_id) DO NOTHING
                RETURNING user_id, nonce, previous_nonce, rotated_at
             )
             SELECT user_id, nonce, previous_nonce, rotated_at FROM made
             UNION ALL
             SELECT user_id, nonce, previous_nonce, rotated_at FROM webhook_secrets
             WHERE user_id = ANY($1)",
        )
        .bind(users)
        .bind(fresh)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(secret_row).collect())
    }

    async fn rotate_webhook_secret(&self, user: &str, nonce: &[u8]) -> Result<SecretRow, StoreError> {
        // A user rotating before any use has no old secret to keep.
        let row: SecretTuple = sqlx::query_as(
            "INSERT INTO webhook_secrets AS s (user_id, nonce, rotated_at) VALUES ($1, $2, now())
             ON CONFLICT (user_id) DO UPDATE
             SET previous_nonce = s.nonce, nonce = EXCLUDED.nonce, rotated_at = now()
             RETURNING user_id, nonce, previous_nonce, rotated_at",
        )
        .bind(user)
        .bind(nonce)
        .fetch_one(&self.pool)
        .await?;
        Ok(secret_row(row))
    }
}
