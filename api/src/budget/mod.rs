//! Budgets and quotas: per-task cost and token budgets, daily cost quotas per user, the
//! per-user cap on running tasks, and the per-user cap on open event streams
//! (`SSE_MAX_STREAMS_PER_USER`, enforced where the HTTP API opens a task's event stream).
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

// The settings are read with the rest in `crate::config`, below this module; how the worker
// applies them is said here.
pub use crate::config::{BudgetSettings, BudgetSettingsError};

impl BudgetSettings {
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
