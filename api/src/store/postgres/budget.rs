//! Reservations against task budgets and daily quotas.
//!
//! Invariants: `tasks.reserved_*` and `user_daily_usage.reserved_usd` are the sums of the
//! open `budget_reservations` rows; a reservation row is deleted exactly once (settled,
//! released, or purged as stale) and its amounts leave the sums in the same statement. A
//! reservation is granted by one conditional update per limit inside one transaction, so
//! `cost_usd + reserved_cost_usd <= max_cost_usd` (and the same for tokens and the daily
//! quota) holds at every commit whatever runs in parallel. Every transaction here locks at
//! most one task row and takes it before any daily row, so they cannot deadlock each other.

use agents::{BudgetLimit, LlmCallRecord};
use uuid::Uuid;

use super::{PgStore, execution::insert_llm_call};
use crate::{
    domain::{Priority, StepId, TaskErrorCode, TaskId},
    store::{
        BudgetStore, CapacityClaim, DailyUsage, FailOutcome, Holder, Lease, ReserveOutcome, ReserveRequest,
        StepCheckpoint, StepClaim, StoreError, TaskLimits, UserLimits,
    },
};

/// A reservation is stale when the lease it was made under is no longer held.
macro_rules! stale {
    () => {
        concat!(
            "NOT EXISTS (SELECT 1 FROM steps s WHERE s.id = r.step_id AND s.status = ",
            step_status!(Running),
            "
                       AND s.lease_token = r.lease_token AND s.lease_expires_at > now())
         AND NOT EXISTS (SELECT 1 FROM tasks p WHERE r.step_id IS NULL AND p.id = r.task_id
                       AND p.status = ",
            task_status!(Planning),
            " AND p.lease_token = r.lease_token AND p.lease_expires_at > now())"
        )
    };
}

/// Deletes a task's reservations that match `$2` (a lease token) or, when `$2` is NULL, the
/// stale ones, and takes their amounts out of the sums. Run after locking the task row.
const PURGE: &str = concat!(
    "WITH d AS (
        DELETE FROM budget_reservations r
        WHERE r.task_id = $1 AND (r.lease_token = $2 OR ($2::uuid IS NULL AND ",
    stale!(),
    "))
        RETURNING user_id, day, cost_usd, tokens
     ), t AS (
        UPDATE tasks SET reserved_cost_usd = greatest(reserved_cost_usd - s.cost, 0),
               reserved_tokens = greatest(reserved_tokens - s.tokens, 0)
        FROM (SELECT sum(cost_usd) AS cost, sum(tokens)::bigint AS tokens FROM d HAVING count(*) > 0) s
        WHERE tasks.id = $1
     ), u AS (
        UPDATE user_daily_usage u SET reserved_usd = greatest(u.reserved_usd - g.cost, 0)
        FROM (SELECT user_id, day, sum(cost_usd) AS cost FROM d GROUP BY user_id, day) g
        WHERE u.user_id = g.user_id AND u.day = g.day
     )
     SELECT count(*) FROM d"
);

/// Deletes reservation `$1` of task `$2` and moves it to the spend `$3` (0 for a release),
/// on the reservation's day; a reservation already purged only adds the spend, to today.
const SETTLE: &str = "WITH d AS (
        DELETE FROM budget_reservations WHERE id = $1 RETURNING task_id, user_id, day, cost_usd, tokens
     ), t AS (
        UPDATE tasks SET reserved_cost_usd = greatest(tasks.reserved_cost_usd - d.cost_usd, 0),
               reserved_tokens = greatest(tasks.reserved_tokens - d.tokens, 0)
        FROM d WHERE tasks.id = d.task_id
     )
     INSERT INTO user_daily_usage AS u (user_id, day, spent_usd)
     SELECT coalesce((SELECT user_id FROM d), (SELECT user_id FROM tasks WHERE id = $2)),
            coalesce((SELECT day FROM d), (now() AT TIME ZONE 'UTC')::date), $3
     WHERE EXISTS (SELECT 1 FROM d) OR $3 > 0
     ON CONFLICT (user_id, day) DO UPDATE SET spent_usd = u.spent_usd + EXCLUDED.spent_usd,
        reserved_usd = greatest(u.reserved_usd - coalesce((SELECT cost_usd FROM d), 0), 0)";

#[async_trait::async_trait]
impl BudgetStore for PgStore {
    async fn task_limits(&self, task: TaskId) -> Result<Option<TaskLimits>, StoreError> {
        let row: Option<(String, Option<f64>, Option<i64>, Option<f64>)> = sqlx::query_as(
            "SELECT t.user_id, t.max_cost_usd, t.max_tokens, l.daily_cost_usd
             FROM tasks t LEFT JOIN user_limits l ON l.user_id = t.user_id WHERE t.id = $1",
        )
        .bind(task.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(user_id, max_cost_usd, max_tokens, user_daily_cost_usd)| TaskLimits {
            user_id,
            max_cost_usd,
            max_tokens,
            user_daily_cost_usd,
        }))
    }

    async fn reserve(&self, holder: &Holder, request: &ReserveRequest) -> Result<ReserveOutcome, StoreError> {
        match self.try_reserve(holder, request).await? {
            ReserveOutcome::Reserved => Ok(ReserveOutcome::Reserved),
            // Reservations left by a dead worker or an abandoned call may be what is in the
            // way: give them back and try once more.
            ReserveOutcome::Exceeded(limit) => {
                if self.purge(holder.task, None).await? == 0 {
                    return Ok(ReserveOutcome::Exceeded(limit));
                }
                self.try_reserve(holder, request).await
            }
        }
    }

    async fn record_settled_llm_call(
        &self,
        task: TaskId,
        step: Option<StepId>,
        call: &LlmCallRecord,
        reservation: Uuid,
        checkpoint: Option<&StepCheckpoint>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Takes the step and task rows first, as the other budget transactions do.
        insert_llm_call(&mut *tx, task, step, call, checkpoint).await?;
        sqlx::query(SETTLE).bind(reservation).bind(task.0).bind(call.cost_usd).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_reservation(&self, task: TaskId, reservation: Uuid) -> Result<(), StoreError> {
        sqlx::query(SETTLE).bind(reservation).bind(task.0).bind(0.0_f64).execute(&self.pool).await?;
        Ok(())
    }

    async fn release_holder(&self, holder: &Holder) -> Result<(), StoreError> {
        self.purge(holder.task, Some(holder.lease_token)).await?;
        Ok(())
    }

    async fn release_stale_reservations(&self, limit: i64) -> Result<u64, StoreError> {
        let tasks: Vec<Uuid> = sqlx::query_scalar(concat!(
            "SELECT DISTINCT r.task_id FROM budget_reservations r WHERE ",
            stale!(),
            " LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut released = 0;
        // One task per transaction, so the sweep never holds two task rows at once.
        for task in tasks {
            released += self.purge(TaskId(task), None).await?;
        }
        Ok(released)
    }

    async fn fail_step_over_budget(
        &self,
        claim: &StepClaim,
        lease: &Lease,
        error: &str,
    ) -> Result<FailOutcome, StoreError> {
        self.fail_step_with(claim, lease, error, Some(TaskErrorCode::BudgetExceeded)).await
    }

    async fn fail_planning_over_budget(&self, id: TaskId, lease: &Lease, error: &str) -> Result<bool, StoreError> {
        self.fail_planning_with(id, lease, error, Some(TaskErrorCode::BudgetExceeded)).await
    }

    async fn claim_planning_within_cap(
        &self,
        id: TaskId,
        lease: &Lease,
        default_cap: u32,
    ) -> Result<CapacityClaim, StoreError> {
        self.claim_planning_capped(id, lease, Some(default_cap)).await
    }

    async fn waiting_tasks(&self, user_id: &str, limit: i64) -> Result<Vec<(TaskId, Priority)>, StoreError> {
        self.waiting(user_id, limit).await
    }

    async fn user_limits(&self, user_id: &str) -> Result<Option<UserLimits>, StoreError> {
        self.limits_of(user_id).await
    }

    async fn set_user_limits(&self, limits: &UserLimits) -> Result<(), StoreError> {
        self.save_limits(limits).await
    }

    async fn daily_usage(&self, user_id: &str) -> Result<DailyUsage, StoreError> {
        let row: Option<(f64, f64)> = sqlx::query_as(
            "SELECT spent_usd, reserved_usd FROM user_daily_usage
             WHERE user_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(spent_usd, reserved_usd)| DailyUsage { spent_usd, reserved_usd }).unwrap_or_default())
    }
}

impl PgStore {
    /// One attempt: the task's conditional update, the daily row's conditional upsert and
    /// the ledger row, committed together or not at all.
    async fn try_reserve(&self, holder: &Holder, request: &ReserveRequest) -> Result<ReserveOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (task_ok, reserved): (bool, bool) = sqlx::query_as(
            "WITH t AS (
                UPDATE tasks SET reserved_cost_usd = reserved_cost_usd + $3, reserved_tokens = reserved_tokens + $4
                WHERE id = $1
                  AND (max_cost_usd IS NULL OR cost_usd + reserved_cost_usd + $3 <= max_cost_usd)
                  AND (max_tokens IS NULL OR tokens_in + tokens_out + reserved_tokens + $4 <= max_tokens)
                RETURNING id, user_id
             ), u AS (
                INSERT INTO user_daily_usage AS d (user_id, day, reserved_usd)
                SELECT t.user_id, (now() AT TIME ZONE 'UTC')::date, $3 FROM t
                WHERE $5::float8 IS NULL OR $3 <= $5
                ON CONFLICT (user_id, day) DO UPDATE SET reserved_usd = d.reserved_usd + EXCLUDED.reserved_usd
                WHERE $5::float8 IS NULL OR d.spent_usd + d.reserved_usd + EXCLUDED.reserved_usd <= $5
                RETURNING d.user_id, d.day
             ), r AS (
                INSERT INTO budget_reservations (id, task_id, step_id, lease_token, user_id, day, cost_usd, tokens)
                SELECT $2, $1, $6, $7, u.user_id, u.day, $3, $4 FROM u
                RETURNING id
             )
             SELECT EXISTS (SELECT 1 FROM t), EXISTS (SELECT 1 FROM r)",
        )
        .bind(holder.task.0)
        .bind(request.id)
        .bind(request.cost_usd)
        .bind(request.tokens)
        .bind(request.daily_quota_usd)
        .bind(holder.step.map(|s| s.0))
        .bind(holder.lease_token)
        .fetch_one(&mut *tx)
        .await?;
        if reserved {
            tx.commit().await?;
            return Ok(ReserveOutcome::Reserved);
        }
        tx.rollback().await?;
        if task_ok {
            return Ok(ReserveOutcome::Exceeded(BudgetLimit::DailyCost));
        }
        let over_cost: Option<bool> = sqlx::query_scalar(
            "SELECT max_cost_usd IS NOT NULL AND cost_usd + reserved_cost_usd + $2 > max_cost_usd
             FROM tasks WHERE id = $1",
        )
        .bind(holder.task.0)
        .bind(request.cost_usd)
        .fetch_optional(&self.pool)
        .await?;
        Ok(ReserveOutcome::Exceeded(if over_cost.unwrap_or(true) {
            BudgetLimit::TaskCost
        } else {
            BudgetLimit::TaskTokens
        }))
    }

    /// Runs [`PURGE`] for one task in its own transaction; returns the rows released.
    async fn purge(&self, task: TaskId, lease_token: Option<Uuid>) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE").bind(task.0).execute(&mut *tx).await?;
        let released: i64 = sqlx::query_scalar(PURGE).bind(task.0).bind(lease_token).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(released.try_into().unwrap_or(0))
    }
}
