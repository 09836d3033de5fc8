//! Budgets and quotas: per-task cost and token budgets, daily cost quotas per user, and the
//! per-user cap on running tasks.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct BudgetSettings {}
