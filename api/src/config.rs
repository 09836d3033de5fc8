//! Settings: read once from flags and environment variables, validated at start, then passed
//! down. Defaults work on a developer machine with local Postgres and Redis.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Runs LLM agents on tasks: an HTTP API, a planner and workers, on Postgres and Redis.
#[derive(Debug, Parser)]
#[command(name = "orchestrator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// API and workers in one process: the default for local use.
    Run(Settings),
    /// The HTTP API only.
    Serve(Settings),
    /// Workers only.
    Worker(Settings),
    /// Apply database migrations and exit.
    Migrate(Settings),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LlmProvider {
    /// Deterministic, no network: the default.
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Postgres connection string. The database is created when missing.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/orchestrator")]
    pub database_url: String,

    /// Upper bound of the Postgres connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Prefix of every Redis key, so several deployments (or tests) can share one Redis.
    #[arg(long, env = "REDIS_PREFIX", default_value = "orchestrator")]
    pub redis_prefix: String,

    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8000")]
    pub bind_addr: SocketAddr,

    /// Jobs one worker process runs at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub worker_concurrency: u32,

    #[arg(long, env = "LLM_PROVIDER", value_enum, default_value_t = LlmProvider::Offline)]
    pub llm_provider: LlmProvider,

    /// Simulated latency of the offline model, to model a slow provider in benchmarks.
    #[arg(long, env = "OFFLINE_LLM_DELAY_MS", default_value_t = 0)]
    pub offline_llm_delay_ms: u64,

    /// Key of the HMAC-SHA256 signature on dispatch jobs; every API and worker process of a
    /// deployment must share it.
    #[arg(long, env = "DISPATCH_SECRET", default_value = DEV_DISPATCH_SECRET, hide_default_value = true)]
    pub dispatch_secret: String,

    /// How long a claimed step or plan stays owned without renewal.
    #[arg(long, env = "LEASE_SECS", default_value_t = 30)]
    pub lease_secs: u64,

    /// A delivered job not acknowledged for this long is taken over by another worker.
    #[arg(long, env = "QUEUE_VISIBILITY_TIMEOUT_SECS", default_value_t = 90)]
    pub visibility_timeout_secs: u64,

    /// Steps a plan may have.
    #[arg(long, env = "MAX_PLAN_STEPS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub max_plan_steps: u32,

    /// How long in-flight jobs may finish after a shutdown signal.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Used when no `DISPATCH_SECRET` is set; start-up warns about it.
pub const DEV_DISPATCH_SECRET: &str = "insecure-development-dispatch-secret";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error("{field} must be at least 1")]
    Zero { field: &'static str },
    #[error(
        "QUEUE_VISIBILITY_TIMEOUT_SECS ({visibility}s) must exceed LEASE_SECS ({lease}s), or live steps would be handed to a second worker"
    )]
    VisibilityBelowLease { visibility: u64, lease: u64 },
    #[error("DISPATCH_SECRET must be at least 16 bytes")]
    ShortSecret,
    #[error("REDIS_PREFIX must be 1 to 100 characters without spaces")]
    BadPrefix,
}

impl Settings {
    /// Checks the invariants that span several settings.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.lease_secs == 0 {
            return Err(SettingsError::Zero { field: "LEASE_SECS" });
        }
        if self.visibility_timeout_secs <= self.lease_secs {
            return Err(SettingsError::VisibilityBelowLease {
                visibility: self.visibility_timeout_secs,
                lease: self.lease_secs,
            });
        }
        if self.dispatch_secret.len() < 16 {
            return Err(SettingsError::ShortSecret);
        }
        if self.redis_prefix.is_empty()
            || self.redis_prefix.len() > 100
            || self.redis_prefix.contains(char::is_whitespace)
        {
            return Err(SettingsError::BadPrefix);
        }
        Ok(())
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    pub fn visibility_timeout(&self) -> Duration {
        Duration::from_secs(self.visibility_timeout_secs)
    }

    /// Settings with every default, as a developer machine would get them.
    pub fn defaults() -> Self {
        match Cli::parse_from(["orchestrator", "run"]).command {
            Command::Run(s) => s,
            _ => unreachable!("parsed the run subcommand"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_local() {
        let s = Settings::defaults();
        s.validate().unwrap();
        assert_eq!(s.bind_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(s.llm_provider, LlmProvider::Offline);
    }

    #[test]
    fn visibility_timeout_must_exceed_the_lease() {
        let mut s = Settings::defaults();
        s.visibility_timeout_secs = s.lease_secs;
        assert!(matches!(s.validate(), Err(SettingsError::VisibilityBelowLease { .. })));
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::parse_from(["orchestrator", "worker", "--worker-concurrency", "3", "--redis-prefix", "x"]);
        let Command::Worker(s) = cli.command else { panic!("worker") };
        assert_eq!(s.worker_concurrency, 3);
        assert_eq!(s.redis_prefix, "x");
    }
}
