//! Who is calling: API keys, the caller a key stands for, and the middleware that checks them.

use clap::{Args, ValueEnum};

/// The identity a request acts as, put in the request's extensions by the auth middleware
/// before any handler or rate limiter runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's user; `None` when auth is disabled (local use), where a request may act for
    /// any user it names.
    pub user_id: Option<String>,
    /// Admin keys (and disabled auth) may act for every user.
    pub admin: bool,
}

impl Caller {
    /// The caller of every request while auth is disabled.
    pub fn local() -> Self {
        Self { user_id: None, admin: true }
    }

    /// The key under which this caller's requests are counted by per-user limits.
    pub fn limit_key(&self) -> &str {
        self.user_id.as_deref().unwrap_or("local")
    }
}

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
    pub bootstrap_admin_key: Option<String>,
}
