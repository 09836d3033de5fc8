//! Budgets and quotas: per-task cost and token budgets, daily cost quotas per user, the
//! per-user cap on running tasks, and the per-user cap on open event streams
//! (`SSE_MAX_STREAMS_PER_USER`, enforced by `crate::http::tasks::events`).
//!
//! - **Budgets and quotas.** Before every model call (a step's, or the LLM planner's) the
//!   worker reserves the call's worst case, prompt tokens plus the output ceiling at the
//!   model's price, against the task's `max_cost_usd` / `max_tokens` and the user's daily
//!   quota ([`StoreBudget`], [`MeteredPlanner`]); the reservation becomes the real spend in
//!   the transaction that records the call. A call that does not fit is not made: the task
//!   fails with the error code `budget_exceeded`. Tasks with no limit and users with no
//!   quota skip all of this.
//! - **Crash safety.** A reservation belongs to the lease it was made under (a step
//!   attempt's, or the planning lease). A step attempt that ends without settling (timeout,
//!   shutdown release, lost lease) gives its reservations back at once; those of a worker
//!   that died are given back by the reconciler's sweep, or by the next reservation of the
//!   same task that would not fit otherwise, as soon as their lease is no longer held.
//! - **Fairness.** A plan job claims its task only while the user has fewer than
//!   `MAX_RUNNING_TASKS_PER_USER` tasks planning or running (checked and claimed atomically
//!   per user). Over the cap the task stays pending, marked waiting, with no job, freeing
//!   the worker slot at once; when one of the user's tasks ends the oldest waiting one is
//!   woken. See [`capacity`].

pub mod capacity;
pub mod planning;
mod store_budget;

pub use planning::MeteredPlanner;
pub use store_budget::StoreBudget;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct BudgetSettings {
    /// Cost in USD each user may spend per UTC day, unless the user has their own quota
    /// (`orchestrator users limits set`); unset means no quota.
    #[arg(long, env = "DAILY_COST_QUOTA_USD")]
    pub daily_cost_quota_usd: Option<f64>,

    /// Tasks one user may have planning or running at once, unless the user has their own
    /// cap; the rest wait, pending. 0 means no cap.
    #[arg(long, env = "MAX_RUNNING_TASKS_PER_USER", default_value_t = 16)]
    pub max_running_tasks_per_user: u32,

    /// Output ceiling put on each model call of a task under a budget or quota (the worst
    /// case reserved for it); LLM_MAX_TOKENS, when set, is used instead.
    #[arg(long, env = "BUDGET_MAX_OUTPUT_TOKENS", default_value_t = 4096)]
    pub budget_max_output_tokens: u32,

    /// Event streams (`GET /tasks/{id}/events`) one user may hold open at once, per API
    /// process; beyond it 429. With auth disabled, streams count against the task's user.
    #[arg(long, env = "SSE_MAX_STREAMS_PER_USER", default_value_t = 16)]
    pub sse_max_streams_per_user: u32,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BudgetSettingsError {
    #[error("DAILY_COST_QUOTA_USD must be a non-negative number")]
    Quota,
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

impl BudgetSettings {
    pub fn validate(&self) -> Result<(), BudgetSettingsError> {
        if self.daily_cost_quota_usd.is_some_and(|q| !q.is_finite() || q < 0.0) {
            return Err(BudgetSettingsError::Quota);
        }
        if self.sse_max_streams_per_user == 0 {
            return Err(BudgetSettingsError::Zero("SSE_MAX_STREAMS_PER_USER"));
        }
        if self.budget_max_output_tokens == 0 {
            return Err(BudgetSettingsError::Zero("BUDGET_MAX_OUTPUT_TOKENS"));
        }
        Ok(())
    }

    /// What the workers use; `llm_max_tokens` is `LLM_MAX_TOKENS`.
    pub fn for_workers(&self, llm_max_tokens: Option<u32>) -> BudgetConfig {
        BudgetConfig {
            daily_cost_quota_usd: self.daily_cost_quota_usd,
            max_running_tasks: self.max_running_tasks_per_user,
            output_ceiling: llm_max_tokens.unwrap_or(self.budget_max_output_tokens),
        }
    }
}

/// The budget settings as the worker applies them.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    pub daily_cost_quota_usd: Option<f64>,
    /// 0 = no cap.
    pub max_running_tasks: u32,
    pub output_ceiling: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetSettings {
            daily_cost_quota_usd: None,
            max_running_tasks_per_user: 16,
            budget_max_output_tokens: 4096,
            sse_max_streams_per_user: 16,
        }
        .for_workers(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BudgetSettings {
        crate::config::Settings::defaults().budgets
    }

    #[test]
    fn defaults_are_valid_and_have_no_quota() {
        let s = settings();
        s.validate().unwrap();
        assert_eq!(s.daily_cost_quota_usd, None);
        assert_eq!(s.for_workers(None), BudgetConfig::default());
    }

    #[test]
    fn a_negative_or_infinite_quota_is_refused() {
        for quota in [-1.0, f64::INFINITY, f64::NAN] {
            let s = BudgetSettings { daily_cost_quota_usd: Some(quota), ..settings() };
            assert_eq!(s.validate(), Err(BudgetSettingsError::Quota));
        }
        let s = BudgetSettings { sse_max_streams_per_user: 0, ..settings() };
        assert_eq!(s.validate(), Err(BudgetSettingsError::Zero("SSE_MAX_STREAMS_PER_USER")));
    }

    #[test]
    fn the_models_own_ceiling_wins() {
        assert_eq!(settings().for_workers(Some(512)).output_ceiling, 512);
        assert_eq!(settings().for_workers(None).output_ceiling, 4096);
    }
}
