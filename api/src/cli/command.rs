//! The command line of the `orchestrator` binary: which command runs, with which settings.
//! The settings themselves ([`Settings`]) are the service's configuration and live in
//! [`crate::config`]; this module only says where on the command line they go.

use clap::{Parser, Subcommand};

use super::{ClientCommand, keys::KeysCommand, users::UsersCommand};
use crate::config::Settings;

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
    /// Long-term memory maintenance.
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// API keys: create (printed once), list, revoke. Talks to Postgres directly.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// `submit` and `tasks …`: drive a running server over HTTP.
    // See `super::args`. A `//` comment: doc comments here become `--help` text.
    #[command(flatten)]
    Client(ClientCommand),
    /// The evaluation harness against a running server: suites, comparisons, benchmarks.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Per-user limits. Talks to Postgres directly.
    // See `super::users`. A `//` comment: doc comments here become `--help` text.
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// Recompute every stored memory's embedding with the configured embedder (after
    /// changing EMBEDDER or its model), then start normally.
    Reembed(Settings),
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::Secret;

    #[test]
    fn settings_print_without_their_secrets() {
        let cli = Cli::parse_from([
            "orchestrator",
            "serve",
            "--llm-api-key",
            "sk-live-provider-key",
            "--embedding-api-key",
            "sk-live-embedding-key",
            "--dispatch-secret",
            "dispatch-secret-value-0123",
            "--webhook-secret",
            "webhook-secret-value-0123",
            "--bootstrap-admin-key",
            "orch_bootstrap-secret-value",
        ]);
        let Command::Serve(s) = cli.command else { panic!("serve") };
        assert_eq!(s.llm_api_key.as_ref().map(Secret::expose), Some("sk-live-provider-key"));
        let shown = format!("{s:?}");
        for secret in ["sk-live", "dispatch-secret-value", "webhook-secret-value", "bootstrap-secret-value"] {
            assert!(!shown.contains(secret), "{secret} leaks into {shown}");
        }
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::parse_from(["orchestrator", "worker", "--worker-concurrency", "3", "--redis-prefix", "x"]);
        let Command::Worker(s) = cli.command else { panic!("worker") };
        assert_eq!(s.worker_concurrency, 3);
        assert_eq!(s.redis_prefix, "x");
    }
}
