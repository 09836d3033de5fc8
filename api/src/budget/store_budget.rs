//! The agents' [`Budget`] backed by the store: one per step attempt (or planning), under
//! that attempt's lease.

use std::sync::Arc;

use agents::{Budget, BudgetError, BudgetExceeded, CallEstimate, Reservation};
use uuid::Uuid;

use super::BudgetConfig;
use crate::store::{ExecutionStore, Holder, ReserveOutcome, ReserveRequest, StoreError, TaskLimits};

pub struct StoreBudget {
    store: Arc<dyn ExecutionStore>,
    holder: Holder,
    daily_quota_usd: Option<f64>,
    /// `None` when nothing limits the task: calls are then made without reserving.
    ceiling: Option<u32>,
}

impl StoreBudget {
    /// Reads the task's limits and its user's quota.
    pub async fn load(
        store: Arc<dyn ExecutionStore>,
        holder: Holder,
        config: &BudgetConfig,
    ) -> Result<Self, StoreError> {
        let limits = store.task_limits(holder.task).await?;
        Ok(Self::with_limits(store, holder, config, limits.as_ref()))
    }

    /// A budget from limits already read (a step claim carries its task's).
    pub fn with_limits(
        store: Arc<dyn ExecutionStore>,
        holder: Holder,
        config: &BudgetConfig,
        limits: Option<&TaskLimits>,
    ) -> Self {
        let (daily_quota_usd, limited) = match limits {
            Some(l) => {
                let quota = l.user_daily_cost_usd.or(config.daily_cost_quota_usd);
                (quota, l.max_cost_usd.is_some() || l.max_tokens.is_some() || quota.is_some())
            }
            // The task is gone: its claim will fail, nothing to limit.
            None => (None, false),
        };
        Self { store, holder, daily_quota_usd, ceiling: limited.then_some(config.output_ceiling) }
    }

    /// Whether calls are reserved at all.
    pub fn is_limited(&self) -> bool {
        self.ceiling.is_some()
    }

    pub fn holder(&self) -> &Holder {
        &self.holder
    }
}

#[async_trait::async_trait]
impl Budget for StoreBudget {
    fn output_ceiling(&self) -> Option<u32> {
        self.ceiling
    }

    async fn reserve(&self, estimate: &CallEstimate) -> Result<Reservation, BudgetError> {
        let request = ReserveRequest {
            id: Uuid::now_v7(),
            cost_usd: estimate.cost_usd,
            tokens: i64::try_from(estimate.tokens()).unwrap_or(i64::MAX),
            daily_quota_usd: self.daily_quota_usd,
        };
        match self.store.reserve(&self.holder, &request).await {
            Ok(ReserveOutcome::Reserved) => {
                Ok(Reservation { id: request.id, cost_usd: estimate.cost_usd, tokens: estimate.tokens() })
            }
            Ok(ReserveOutcome::Exceeded(limit)) => Err(BudgetExceeded::new(limit, estimate).into()),
            Err(e) => Err(BudgetError::Unavailable(e.to_string())),
        }
    }

    async fn release(&self, reservation: Reservation) -> Result<(), BudgetError> {
        self.store
            .release_reservation(self.holder.task, reservation.id)
            .await
            .map_err(|e| BudgetError::Unavailable(e.to_string()))
    }
}
