//! The per-user cap on planning and running tasks, and per-user limits.
//!
//! The cap is checked and the claim made in one transaction that holds a transaction-level
//! advisory lock on the user, so two workers claiming two tasks of one user serialise and
//! the second counts the first's claim: the cap holds at every commit. Only `pending →
//! planning` adds to the count, and it only happens here (or in the uncapped claim).

use super::{PgStore, execution::claim_planning_on};
use crate::{
    domain::{Priority, TaskId},
    store::{CapacityClaim, Lease, StoreError, UserLimits},
};

/// First key of the advisory locks taken here, so they never meet another use of advisory
/// locks on the same database.
const LOCK_SPACE: i32 = 0x6361_7073; // "caps"

impl PgStore {
    pub(super) async fn claim_within_cap(
        &self,
        id: TaskId,
        lease: &Lease,
        default_cap: u32,
        generation: u32,
    ) -> Result<CapacityClaim, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(String, bool, bool, Option<i32>)> = sqlx::query_as(
            "SELECT t.user_id, t.status = 'pending', t.status = 'planning' AND t.lease_expires_at < now(),
                    l.max_running_tasks
             FROM tasks t LEFT JOIN user_limits l ON l.user_id = t.user_id WHERE t.id = $1",
        )
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((user_id, pending, abandoned_planning, own_cap)) = row else {
            return Ok(CapacityClaim::NotClaimable);
        };
        if !pending && !abandoned_planning {
            return Ok(CapacityClaim::NotClaimable);
        }
        let cap = own_cap.map_or(i64::from(default_cap), i64::from);
        // A planning taken over from a dead worker is counted already: no new slot.
        if cap > 0 && pending {
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(LOCK_SPACE)
                .bind(&user_id)
                .execute(&mut *tx)
                .await?;
            let active: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM tasks WHERE user_id = $1 AND status IN ('planning', 'running')",
            )
            .bind(&user_id)
            .fetch_one(&mut *tx)
            .await?;
            if active >= cap {
                let waited = self.wait(&mut tx, id, generation, active, cap).await?;
                tx.commit().await?;
                // The first wait wrote a `waiting_for_capacity` event.
                self.events_committed(id);
                return Ok(match waited {
                    Some(generation) => CapacityClaim::AtCapacity { generation },
                    None => CapacityClaim::Superseded,
                });
            }
        }
        let claimed = claim_planning_on(&mut *tx, id, lease).await?;
        tx.commit().await?;
        if claimed.is_some() {
            self.events_committed(id);
        }
        Ok(match claimed {
            Some(claim) => CapacityClaim::Claimed { claim, user_id },
            None => CapacityClaim::NotClaimable,
        })
    }

    /// Starts the next generation of waiting, if the job of `generation` may (a fresh job,
    /// 0, always may). Touches `updated_at`, so the reconciler leaves a task alone while
    /// its chain of deferred jobs lives. The first wait writes a `waiting_for_capacity` event.
    async fn wait(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        id: TaskId,
        generation: u32,
        active: i64,
        cap: i64,
    ) -> Result<Option<u32>, StoreError> {
        let next: Option<i32> = sqlx::query_scalar(
            "WITH w AS (
                UPDATE tasks SET capacity_waits = capacity_waits + 1, updated_at = now()
                WHERE id = $1 AND status = 'pending' AND ($2 = 0 OR capacity_waits = $2)
                RETURNING id, capacity_waits
             ), e AS (
                INSERT INTO task_events (task_id, kind, data)
                SELECT id, 'waiting_for_capacity', jsonb_build_object('running', $3::bigint, 'max_running_tasks', $4::bigint)
                FROM w WHERE NOT EXISTS (SELECT 1 FROM task_events WHERE task_id = $1 AND kind = 'waiting_for_capacity')
             )
             SELECT capacity_waits FROM w",
        )
        .bind(id.0)
        .bind(i32::try_from(generation).unwrap_or(i32::MAX))
        .bind(active)
        .bind(cap)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(next.map(|n| u32::try_from(n).unwrap_or(0)))
    }

    pub(super) async fn waiting(&self, user_id: &str, limit: i64) -> Result<Vec<(TaskId, Priority)>, StoreError> {
        let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(
            "SELECT id, priority FROM tasks WHERE user_id = $1 AND status = 'pending' AND capacity_waits > 0
             ORDER BY created_at, id LIMIT $2",
        )
        .bind(user_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|(id, priority)| Ok((TaskId(id), priority.parse()?))).collect()
    }

    pub(super) async fn limits_of(&self, user_id: &str) -> Result<Option<UserLimits>, StoreError> {
        let row: Option<(Option<f64>, Option<i32>)> =
            sqlx::query_as("SELECT daily_cost_usd, max_running_tasks FROM user_limits WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(daily_cost_usd, max_running_tasks)| UserLimits {
            user_id: user_id.to_owned(),
            daily_cost_usd,
            max_running_tasks,
        }))
    }

    pub(super) async fn save_limits(&self, limits: &UserLimits) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_limits (user_id, daily_cost_usd, max_running_tasks) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET daily_cost_usd = EXCLUDED.daily_cost_usd,
                    max_running_tasks = EXCLUDED.max_running_tasks, updated_at = now()",
        )
        .bind(&limits.user_id)
        .bind(limits.daily_cost_usd)
        .bind(limits.max_running_tasks)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
