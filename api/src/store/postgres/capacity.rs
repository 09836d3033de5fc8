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

use super::PgStore;
use crate::{
    domain::{Priority, TaskId},
    store::{CapacityClaim, Lease, PlanningClaim, StoreError, UserLimits},
};

/// Planning attempts of a task that sets no `max_attempts`.
const DEFAULT_PLAN_ATTEMPTS: i32 = 3;

/// Why a task whose every planning attempt was taken over fails.
const PLANNING_EXHAUSTED: &str = "planning failed: every attempt was taken over from a worker that died or stopped \
                                  renewing its lease (attempts_exhausted)";

impl PgStore {
    /// `pending → planning` (or takes over a planning whose lease expired) in one statement,
    /// within the user's running-task cap when `cap` is given (`None`: no cap at all); wakes
    /// the task's event streams when it wrote an event.
    pub(super) async fn claim_planning_capped(
        &self,
        id: TaskId,
        lease: &Lease,
        cap: Option<u32>,
    ) -> Result<CapacityClaim, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            outcome: String,
            user_id: Option<String>,
            description: Option<String>,
            priority: Option<String>,
            max_attempts: Option<i32>,
            use_plan_cache: Option<bool>,
            agent_hints: Option<Vec<String>>,
            replan_reason: Option<String>,
            paused: Option<bool>,
        }
        // Whether the claimed planning is a replan, and whether the task starts paused, are
        // read in the same statement: its snapshot predates the claim, which changes neither.
        let mut row: Row = sqlx::query_as(concat!(
            "SELECT c.outcome, c.user_id, c.description, c.priority, c.max_attempts, c.use_plan_cache, c.agent_hints,
                    t.replan_reason, t.start_mode = ",
            task_start!(Paused),
            " AS paused
             FROM claim_planning($1, $2, $3, $4, $5, $6, $7) c
             LEFT JOIN tasks t ON t.id = $1 AND c.outcome = 'claimed'"
        ))
        .bind(id.0)
        .bind(&lease.owner)
        .bind(lease.token)
        .bind(lease.seconds())
        .bind(cap.map(|c| i32::try_from(c).unwrap_or(i32::MAX)))
        .bind(DEFAULT_PLAN_ATTEMPTS)
        .bind(PLANNING_EXHAUSTED)
        .fetch_one(&self.pool)
        .await?;
        let corrupt = |what: &str| StoreError::Corrupt(format!("claim_planning answered {what} for task {id}"));
        let outcome = std::mem::take(&mut row.outcome);
        let claimed = match (outcome.as_str(), row) {
            (
                "claimed",
                Row {
                    user_id: Some(user_id),
                    description: Some(description),
                    priority: Some(priority),
                    max_attempts,
                    use_plan_cache: Some(use_plan_cache),
                    agent_hints: Some(agent_hints),
                    replan_reason,
                    paused,
                    ..
                },
            ) => CapacityClaim::Claimed {
                claim: PlanningClaim {
                    description,
                    priority: priority.parse()?,
                    max_attempts,
                    use_plan_cache,
                    agent_hints,
                    replan_reason,
                    paused: paused.unwrap_or(false),
                },
                user_id,
            },
            ("claimed", _) => return Err(corrupt("a claim without the task's fields")),
            ("exhausted", Row { user_id: Some(user_id), .. }) => CapacityClaim::Exhausted { user_id },
            ("at_capacity", _) => CapacityClaim::AtCapacity,
            ("not_claimable", _) => CapacityClaim::NotClaimable,
            ("unknown", _) => CapacityClaim::Unknown,
            (other, _) => return Err(corrupt(&format!("the outcome {other:?}"))),
        };
        // A claim writes `task_planning`, a give-up `task_failed`, the first wait
        // `waiting_for_capacity`.
        if matches!(
            claimed,
            CapacityClaim::Claimed { .. } | CapacityClaim::Exhausted { .. } | CapacityClaim::AtCapacity
        ) {
            self.events_committed(id);
        }
        Ok(claimed)
    }

    pub(super) async fn waiting(&self, user_id: &str, limit: i64) -> Result<Vec<(TaskId, Priority)>, StoreError> {
        let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(concat!(
            "SELECT id, priority FROM tasks WHERE user_id = $1 AND status = ",
            task_status!(Pending),
            " AND capacity_waits > 0
             ORDER BY created_at, id LIMIT $2"
        ))
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
