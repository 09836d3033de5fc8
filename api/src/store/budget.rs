//! What budgets, quotas and the running-task cap need from the store (see `crate::budget`).

use agents::{BudgetLimit, LlmCallRecord};
use uuid::Uuid;

use super::{FailOutcome, Lease, PlanningClaim, StepClaim, StoreError};
use crate::domain::{Priority, StepId, TaskId};

/// Who a reservation belongs to: the lease it was made under. Once that lease is no longer
/// held (the step or planning ended, was retried, or its worker died) the reservation is
/// stale and is given back.
#[derive(Debug, Clone)]
pub struct Holder {
    pub task: TaskId,
    /// `None` for planning.
    pub step: Option<StepId>,
    pub lease_token: Uuid,
}

/// The limits on one task's model calls.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLimits {
    pub user_id: String,
    pub max_cost_usd: Option<f64>,
    pub max_tokens: Option<i64>,
    /// The user's own daily quota (`user_limits`); `None` falls back to the global one.
    pub user_daily_cost_usd: Option<f64>,
}

/// One call's worst case, to reserve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReserveRequest {
    pub id: Uuid,
    pub cost_usd: f64,
    pub tokens: i64,
    /// The user's daily cost quota, if any applies.
    pub daily_quota_usd: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved,
    Exceeded(BudgetLimit),
}

/// What became of a plan job under the per-user running-task cap.
#[derive(Debug, Clone)]
pub enum CapacityClaim {
    /// The task is planning under our lease.
    Claimed { claim: PlanningClaim, user_id: String },
    /// The user is at the cap; the task stays pending, marked waiting, with no job: a task
    /// of the user that ends wakes it (`crate::budget::capacity`).
    AtCapacity,
    /// The task is not waiting for a plan (any more).
    NotClaimable,
    /// Its planning was taken over from dead workers as often as it may be: the task
    /// failed with `attempts_exhausted`.
    Exhausted { user_id: String },
    /// The database knows no such task: the job belongs to another deployment or names a
    /// deleted task.
    Unknown,
}

/// Per-user overrides of the global settings; `None` keeps the global one.
#[derive(Debug, Clone, PartialEq)]
pub struct UserLimits {
    pub user_id: String,
    pub daily_cost_usd: Option<f64>,
    /// 0 lifts the cap for this user.
    pub max_running_tasks: Option<i32>,
    /// The highest priority the user's non-admin keys may ask for: `high` or, when `None`
    /// (or `normal`), normal.
    pub max_priority: Option<Priority>,
}

/// A user's spend and open reservations of one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DailyUsage {
    pub spent_usd: f64,
    pub reserved_usd: f64,
}

#[async_trait::async_trait]
pub trait BudgetStore: Send + Sync + 'static {
    /// The task's limits, or `None` when the task does not exist.
    async fn task_limits(&self, task: TaskId) -> Result<Option<TaskLimits>, StoreError>;
    /// Reserves a call's worst case against the task's limits and the user's daily quota,
    /// all or nothing. Stale reservations of the task are given back first.
    async fn reserve(&self, holder: &Holder, request: &ReserveRequest) -> Result<ReserveOutcome, StoreError>;
    /// Records the call (and the step's checkpoint, as `ExecutionStore::record_llm_call`
    /// does) and turns its reservation into spend, in one transaction.
    async fn record_settled_llm_call(
        &self,
        task: TaskId,
        step: Option<StepId>,
        call: &LlmCallRecord,
        reservation: Uuid,
        checkpoint: Option<&super::StepCheckpoint>,
    ) -> Result<(), StoreError>;
    /// Gives back the reservation of a call that failed; nothing if it is gone already.
    async fn release_reservation(&self, task: TaskId, reservation: Uuid) -> Result<(), StoreError>;
    /// Gives back every reservation made under `holder`'s lease (a step attempt that ended
    /// without settling them: timed out, released, lost its lease).
    async fn release_holder(&self, holder: &Holder) -> Result<(), StoreError>;
    /// Gives back reservations whose lease is no longer held, up to `limit` tasks' worth;
    /// returns how many were released.
    async fn release_stale_reservations(&self, limit: i64) -> Result<u64, StoreError>;
    /// `running → failed` with the `budget_exceeded` code, failing the task.
    async fn fail_step_over_budget(
        &self,
        claim: &StepClaim,
        lease: &Lease,
        error: &str,
    ) -> Result<FailOutcome, StoreError>;
    /// `planning → failed` with the `budget_exceeded` code.
    async fn fail_planning_over_budget(&self, id: TaskId, lease: &Lease, error: &str) -> Result<bool, StoreError>;
    /// `pending → planning` unless the task's user already has their cap of planning and
    /// running tasks (`default_cap` unless the user has their own; 0 = no cap). The check
    /// and the claim are atomic per user. At the cap the task is marked waiting
    /// (`capacity_waits`), for [`BudgetStore::waiting_tasks`] to find.
    async fn claim_planning_within_cap(
        &self,
        id: TaskId,
        lease: &Lease,
        default_cap: u32,
    ) -> Result<CapacityClaim, StoreError>;
    /// The user's oldest tasks waiting for capacity, for a freed slot to wake.
    async fn waiting_tasks(&self, user_id: &str, limit: i64) -> Result<Vec<(TaskId, Priority)>, StoreError>;
    async fn user_limits(&self, user_id: &str) -> Result<Option<UserLimits>, StoreError>;
    async fn set_user_limits(&self, limits: &UserLimits) -> Result<(), StoreError>;
    /// Today's (UTC) usage of the user.
    async fn daily_usage(&self, user_id: &str) -> Result<DailyUsage, StoreError>;
}
