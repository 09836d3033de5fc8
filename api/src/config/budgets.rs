//! The settings of budgets, quotas and the per-user caps; applying them is `crate::budget`'s.

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
}
