//! The per-user cap on planning and running tasks, and per-user limits.
//!
//! The cap is checked and the claim made in one statement (`claim_planning`, migration 17)
//! that holds a transaction-level advisory lock on the user, so two workers claiming two
//! tasks of one user serialise and the second counts the first's claim: the cap holds at
//! every commit. Only `pending → planning` adds to the count, and it only happens there.
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

impl PgStore {
    /// The capped claim: `claim_planning` (migration 17) checks the cap under the user's
    /// advisory lock and claims, or marks the task waiting, in one statement.
    pub(super) async fn claim_within_cap(
        &self,
        id: TaskId,
        lease: &Lease,
        default_cap: u32,
    ) -> Result<CapacityClaim, StoreError> {
        Ok(match claim_planning_on(&self.pool, id, lease, Some(default_cap)).await? {
            PlanningClaimed::Claimed { claim, user_id } => {
                self.events_committed(id);
                CapacityClaim::Claimed { claim, user_id }
            }
            PlanningClaimed::Exhausted { user_id } => {
                self.events_committed(id);
                CapacityClaim::Exhausted { user_id }
            }
            PlanningClaimed::AtCapacity => {
                // The first wait wrote a `waiting_for_capacity` event.
                self.events_committed(id);
                CapacityClaim::AtCapacity
            }
            PlanningClaimed::NotClaimable => CapacityClaim::NotClaimable,
            PlanningClaimed::Unknown => CapacityClaim::Unknown,
        })
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
