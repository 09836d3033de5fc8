//! The settings of API-key authentication; the keys and the middleware are `crate::auth`'s.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Every request but health, metrics and docs needs `Authorization: Bearer <key>`.
    Required,
    /// No keys: for local use on a loopback address only.
    Disabled,
}

#[derive(Debug, Clone, Args)]
pub struct AuthSettings {
    /// `required` or `disabled`; `serve` and `worker` default to required, `run` (local use) to
    /// disabled.
    #[arg(long = "auth", env = "AUTH", value_enum)]
    pub mode: Option<AuthMode>,

    /// An admin key accepted at start (stored hashed, user `admin`), so a fresh deployment can
    /// be used without running `orchestrator keys create` first. Never logged.
    #[arg(long, env = "BOOTSTRAP_ADMIN_KEY", hide_env_values = true)]
    pub bootstrap_admin_key: Option<super::Secret>,

    /// How long a checked key is trusted without asking Postgres again; a revoked key stops
    /// working within this time.
    #[arg(long, env = "AUTH_CACHE_SECS", default_value_t = 30)]
    pub cache_secs: u64,
}

impl AuthSettings {
    /// The mode in force: the one configured, else required. Commands meant for local use set
    /// their own default before the app starts.
    pub fn mode(&self) -> AuthMode {
        self.mode.unwrap_or(AuthMode::Required)
    }
}
