//! The per-user cap on planning and running tasks, and per-user limits.
//!
//! The cap is checked and the claim made in one transaction that holds a transaction-level
//! advisory lock on the user, so two workers claiming two tasks of one user serialise and
//! the second counts the first's claim: the cap holds at every commit. Only `pending →
//! planning` adds to the count, and it only happens here (or in the uncapped claim).
//!
//! A task over the cap is marked waiting (`capacity_waits > 0`) and keeps no job: the end of
//! one of its user's tasks wakes the oldest waiting one, and the reconciler's query
//! (`unfinished_work`) re-enqueues waiting tasks only while their user is below the cap.

use super::{
    PgStore,
    execution::{PlanningClaimed, claim_planning_on},
};
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
            return Ok(CapacityClaim::Unknown);
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
                Self::wait(&mut tx, id, active, cap).await?;
                tx.commit().await?;
                // The first wait wrote a `waiting_for_capacity` event.
                self.events_committed(id);
                return Ok(CapacityClaim::AtCapacity);
            }
        }
        let claimed = claim_planning_on(&mut *tx, id, lease).await?;
        tx.commit().await?;
        Ok(match claimed {
            PlanningClaimed::Claimed(claim) => {
                self.events_committed(id);
                CapacityClaim::Claimed { claim, user_id }
            }
            PlanningClaimed::Exhausted => {
                self.events_committed(id);
                CapacityClaim::Exhausted { user_id }
            }
            PlanningClaimed::NotClaimable => CapacityClaim::NotClaimable,
        })
    }

    /// Marks the task waiting. Touches `updated_at`, so the reconciler, which only takes
    /// up waiting tasks whose user is below the cap, also waits `RECONCILE_MIN_AGE_MS` before
    /// doing so. The first wait writes a `waiting_for_capacity` event.
    async fn wait(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        id: TaskId,
        active: i64,
        cap: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "WITH w AS (
                UPDATE tasks SET capacity_waits = capacity_waits + 1, updated_at = now()
                WHERE id = $1 AND status = 'pending'
                RETURNING id
             )
             INSERT INTO task_events (task_id, kind, data)
             SELECT id, 'waiting_for_capacity', jsonb_build_object('running', $2::bigint, 'max_running_tasks', $3::bigint)
             FROM w WHERE NOT EXISTS (SELECT 1 FROM task_events WHERE task_id = $1 AND kind = 'waiting_for_capacity')",
        )
        .bind(id.0)
        .bind(active)
        .bind(cap)
        .execute(&mut **tx)
        .await?;
        Ok(())
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
        let row: Option<(Option<f64>, Option<i32>, Option<String>)> = sqlx::query_as(
            "SELECT daily_cost_usd, max_running_tasks, max_priority FROM user_limits WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(daily_cost_usd, max_running_tasks, max_priority)| {
            Ok(UserLimits {
                user_id: user_id.to_owned(),
                daily_cost_usd,
                max_running_tasks,
                max_priority: max_priority.map(|p| p.parse()).transpose()?,
            })
        })
        .transpose()
    }

    pub(super) async fn save_limits(&self, limits: &UserLimits) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_limits (user_id, daily_cost_usd, max_running_tasks, max_priority) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET daily_cost_usd = EXCLUDED.daily_cost_usd,
                    max_running_tasks = EXCLUDED.max_running_tasks, max_priority = EXCLUDED.max_priority,
                    updated_at = now()",
        )
        .bind(&limits.user_id)
        .bind(limits.daily_cost_usd)
        .bind(limits.max_running_tasks)
        .bind(limits.max_priority.map(Priority::as_str))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
