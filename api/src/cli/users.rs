//! `orchestrator users limits set|show`: per-user overrides of DAILY_COST_QUOTA_USD and
//! MAX_RUNNING_TASKS_PER_USER, and the highest task priority a user may ask for, written
//! straight to Postgres (no server needed).

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use sqlx::postgres::PgPoolOptions;

use crate::{
    config::Settings,
    database::{MIGRATOR, redact},
    domain::Priority,
    store::{BudgetStore, PgStore, UserLimits},
};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// A user's own daily cost quota and running-task cap.
    #[command(subcommand)]
    Limits(LimitsCommand),
}

#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Set a user's limits; a limit left out falls back to the global setting.
    Set(SetLimits),
    /// Show a user's limits and today's (UTC) spend.
    Show(ShowLimits),
}

#[derive(Debug, Args)]
pub struct SetLimits {
    pub user_id: String,
    /// USD the user may spend per UTC day.
    #[arg(long)]
    pub daily_cost_usd: Option<f64>,
    /// Tasks the user may have planning or running at once; 0 lifts the cap.
    #[arg(long)]
    pub max_running: Option<i32>,
    /// The highest priority (`normal` or `high`) the user's non-admin keys may ask for;
    /// without it, `normal`. Admin keys may always ask for `high`.
    #[arg(long, value_parser = parse_priority)]
    pub max_priority: Option<Priority>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Args)]
pub struct ShowLimits {
    pub user_id: String,
    #[command(flatten)]
    pub settings: Settings,
}

impl UsersCommand {
    pub fn settings(&self) -> &Settings {
        match self {
            Self::Limits(LimitsCommand::Set(c)) => &c.settings,
            Self::Limits(LimitsCommand::Show(c)) => &c.settings,
        }
    }
}

/// Runs the command and returns what to print.
pub async fn run(command: &UsersCommand) -> anyhow::Result<String> {
    let settings = command.settings();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&settings.database_url)
        .await
        .with_context(|| format!("cannot reach Postgres at {}", redact(&settings.database_url)))?;
    MIGRATOR.run(&pool).await.context("applying database migrations failed")?;
    let store = PgStore::new(pool);
    let UsersCommand::Limits(command) = command;
    let user_id = match command {
        LimitsCommand::Set(c) => {
            let limits = checked(c)?;
            store.set_user_limits(&limits).await?;
            &c.user_id
        }
        LimitsCommand::Show(c) => &c.user_id,
    };
    let limits = store.user_limits(user_id).await?;
    let usage = store.daily_usage(user_id).await?;
    let shown = |v: Option<String>| v.unwrap_or_else(|| "global".into());
    Ok(format!(
        "user {user_id}: daily_cost_usd={} max_running_tasks={} max_priority={}; today spent ${:.6}, reserved ${:.6}",
        shown(limits.as_ref().and_then(|l| l.daily_cost_usd).map(|v| v.to_string())),
        shown(limits.as_ref().and_then(|l| l.max_running_tasks).map(|v| v.to_string())),
        limits.as_ref().and_then(|l| l.max_priority).unwrap_or(Priority::Normal),
        usage.spent_usd,
        usage.reserved_usd,
    ))
}

fn checked(c: &SetLimits) -> anyhow::Result<UserLimits> {
    if c.user_id.trim().is_empty() || c.user_id.chars().count() > 200 {
        bail!("user_id must be 1 to 200 characters");
    }
    if c.daily_cost_usd.is_some_and(|v| !v.is_finite() || v < 0.0) {
        bail!("--daily-cost-usd must be a non-negative number");
    }
    if c.max_running.is_some_and(|v| v < 0) {
        bail!("--max-running must not be negative");
    }
    Ok(UserLimits {
        user_id: c.user_id.clone(),
        daily_cost_usd: c.daily_cost_usd,
        max_running_tasks: c.max_running,
        max_priority: c.max_priority,
    })
}

/// `normal` or `high`: every user may ask for `low` and `normal`, so only `high` is granted.
fn parse_priority(raw: &str) -> Result<Priority, String> {
    match raw.parse() {
        Ok(p @ (Priority::Normal | Priority::High)) => Ok(p),
        _ => Err("must be normal or high".to_owned()),
    }
}
