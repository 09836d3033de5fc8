//! Settings: read once from flags and environment variables, validated at start, then passed
//! down. Defaults work on a developer machine with local Postgres and Redis.
//!
//! Every setting is declared here, the slices of auth, rate limits and budgets included, so
//! the modules that apply them depend on the settings and never the other way round. Which
//! subcommand takes them is the command line's (`cli`, at the top of the crate).

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, ValueEnum};

mod auth;
mod budgets;
mod rate_limits;

pub use auth::{AuthMode, AuthSettings};
pub use budgets::{BudgetSettings, BudgetSettingsError};
pub use rate_limits::{RateLimitSettings, RateLimitSettingsError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbedderKind {
    /// Local feature hashing: deterministic, no network.
    Hashing,
    /// An OpenAI-compatible embeddings API.
    Openai,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LlmProvider {
    /// Deterministic, no network: the default.
    Offline,
    /// OpenAI's chat completions API, or any server that speaks it (Ollama, vLLM, llama.cpp).
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlannerKind {
    /// The model plans (with the heuristic planner as fallback), except with the offline
    /// provider, which plans with the heuristic planner's logic.
    Auto,
    Heuristic,
    Llm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Postgres connection string. The database is created when missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        // Loopback: TLS would only cost CPU (about 10 % more per task, docs/benchmarks.md).
        default_value = "postgres://postgres@127.0.0.1:5432/orchestrator?sslmode=disable",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Upper bound of the Postgres connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: String,

    /// PEM file of the CA that signs a `rediss://` server's certificate; without it the
    /// certificate must chain to a public root CA (Mozilla's list, built in).
    #[arg(long, env = "REDIS_CA_CERT")]
    pub redis_ca_cert: Option<std::path::PathBuf>,

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

    /// Base URL of the provider's API; defaults to the provider's public endpoint.
    #[arg(long, env = "LLM_BASE_URL", hide_env_values = true)]
    pub llm_base_url: Option<String>,

    /// API key of the provider. Never logged.
    #[arg(long, env = "LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<Secret>,

    /// Model to call; defaults to gpt-4o-mini (openai) or claude-3-5-haiku-latest (anthropic).
    #[arg(long, env = "LLM_MODEL")]
    pub llm_model: Option<String>,

    /// Time limit of one model request.
    #[arg(long, env = "LLM_TIMEOUT_SECS", default_value_t = 120)]
    pub llm_timeout_secs: u64,

    /// Retries of a model request on 429, 5xx and connection errors.
    #[arg(long, env = "LLM_MAX_RETRIES", default_value_t = 3)]
    pub llm_max_retries: u32,

    /// Output tokens one model call may produce.
    #[arg(long, env = "LLM_MAX_TOKENS")]
    pub llm_max_tokens: Option<u32>,

    /// TOML file of model prices (USD per million tokens) merged over the built-in table.
    #[arg(long, env = "LLM_PRICES_FILE")]
    pub llm_prices_file: Option<std::path::PathBuf>,

    #[arg(long, env = "PLANNER", value_enum, default_value_t = PlannerKind::Auto)]
    pub planner: PlannerKind,

    /// TOML file declaring more agents (or overriding built-in ones).
    #[arg(long, env = "AGENTS_FILE")]
    pub agents_file: Option<std::path::PathBuf>,

    /// Hosts the http_get tool may fetch from, comma separated; empty disables the tool.
    #[arg(long, env = "HTTP_GET_ALLOWED_HOSTS", value_delimiter = ',')]
    pub http_get_allowed_hosts: Vec<String>,

    /// Time limit of one tool call.
    #[arg(long, env = "TOOL_TIMEOUT_SECS", default_value_t = 10)]
    pub tool_timeout_secs: u64,

    /// Tool results are cut to this many bytes for the record and the model.
    #[arg(long, env = "TOOL_MAX_RESULT_BYTES", default_value_t = 16 * 1024)]
    pub tool_max_result_bytes: usize,

    /// Where this process keeps its vector index snapshots; one process per directory.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: std::path::PathBuf,

    #[arg(long, env = "EMBEDDER", value_enum, default_value_t = EmbedderKind::Hashing)]
    pub embedder: EmbedderKind,

    /// Vector size of the embedder.
    #[arg(long, env = "EMBEDDING_DIM", default_value_t = 384)]
    pub embedding_dim: usize,

    #[arg(long, env = "EMBEDDING_BASE_URL", default_value = "https://api.openai.com/v1", hide_env_values = true)]
    pub embedding_base_url: String,

    #[arg(long, env = "EMBEDDING_API_KEY", hide_env_values = true)]
    pub embedding_api_key: Option<Secret>,

    #[arg(long, env = "EMBEDDING_MODEL", default_value = "text-embedding-3-small")]
    pub embedding_model: String,

    /// Long-term memories of the task's user put in each step's prompt; 0 puts none.
    #[arg(long, env = "MEMORY_CONTEXT_ITEMS", default_value_t = 3)]
    pub memory_context_items: usize,

    /// Store each completed task's result as a memory of its user.
    #[arg(long, env = "MEMORY_STORE_RESULTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub memory_store_results: bool,

    /// Simulated latency of the offline model, to model a slow provider in benchmarks.
    #[arg(long, env = "OFFLINE_LLM_DELAY_MS", default_value_t = 0)]
    pub offline_llm_delay_ms: u64,

    /// Key of the HMAC-SHA256 signature on dispatch jobs; every API and worker process of a
    /// deployment must share it.
    #[arg(long, env = "DISPATCH_SECRET", default_value = DEV_DISPATCH_SECRET, hide_default_value = true, hide_env_values = true)]
    pub dispatch_secret: Secret,

    /// How long a claimed step or plan stays owned without renewal.
    #[arg(long, env = "LEASE_SECS", default_value_t = 30)]
    pub lease_secs: u64,

    /// A delivered job not acknowledged for this long is taken over by another worker.
    #[arg(long, env = "QUEUE_VISIBILITY_TIMEOUT_SECS", default_value_t = 90)]
    pub visibility_timeout_secs: u64,

    /// Deliveries of one job (a plan or a step attempt) before it is moved to the dead-letter
    /// stream and the work it names fails with `dead_lettered`: a job whose handler keeps
    /// failing, or keeps killing its worker, is not retried forever.
    #[arg(long, env = "JOB_MAX_DELIVERIES", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub job_max_deliveries: u64,

    /// Steps a plan may have.
    #[arg(long, env = "MAX_PLAN_STEPS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub max_plan_steps: u32,

    /// How long in-flight jobs may finish after a shutdown signal.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Longest one attempt of a step may run; a timed-out attempt is retried.
    #[arg(long, env = "STEP_TIMEOUT_SECS", default_value_t = 600)]
    pub step_timeout_secs: u64,

    /// Model turns a step makes before it gives its worker slot back and queues again, to
    /// continue from its checkpoint; 0 never yields.
    #[arg(long, env = "STEP_YIELD_AFTER_TURNS", default_value_t = 16)]
    pub step_yield_after_turns: u32,

    /// Tool calls after which an agent's older conversation is replaced by a summary; an
    /// agent's `compress_every` overrides it; 0 never summarises.
    #[arg(long, env = "CONTEXT_COMPRESS_EVERY", default_value_t = 8)]
    pub context_compress_every: u32,

    /// How long a completed step's warm context (for `warm_start` of the same work) is kept.
    #[arg(long, env = "WARM_CONTEXT_TTL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub warm_context_ttl_secs: u64,

    /// Tools whose calls wait for a person's approval in every task, comma-separated
    /// (`http_get,memory_store`); agents (`approval = [...]`) and tasks (`require_approval`)
    /// add their own.
    #[arg(long, env = "TOOLS_REQUIRE_APPROVAL", value_delimiter = ',')]
    pub tools_require_approval: Vec<String>,

    /// How long a tool call waits for a person's decision before it counts as denied.
    #[arg(long, env = "APPROVAL_TIMEOUT_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub approval_timeout_secs: u64,

    /// Messages at the end of a conversation that a summary keeps verbatim.
    #[arg(long, env = "CONTEXT_KEEP_RECENT", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub context_keep_recent: u32,

    /// Delay before the first retry of a failed step; it doubles per attempt, with jitter.
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,

    /// Longest delay between two attempts of a step.
    #[arg(long, env = "RETRY_MAX_MS", default_value_t = 60_000)]
    pub retry_max_ms: u64,

    /// How often the reconciler looks for work whose job was lost.
    #[arg(long, env = "RECONCILE_INTERVAL_MS", default_value_t = 5000)]
    pub reconcile_interval_ms: u64,

    /// Work untouched for this long without a job is re-enqueued.
    #[arg(long, env = "RECONCILE_MIN_AGE_MS", default_value_t = 10_000)]
    pub reconcile_min_age_ms: u64,

    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// OTLP/HTTP collector to export traces to, e.g. `http://otel-collector:4318` (spans go
    /// to `<endpoint>/v1/traces`). Unset: no export. See [`crate::telemetry`].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", hide_env_values = true)]
    pub otel_endpoint: Option<url::Url>,

    /// `service.name` of the exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "orchestrator")]
    pub otel_service_name: String,

    /// Key every user's webhook signing secret is derived from (32+ random bytes; `serve` and
    /// `worker` with AUTH=required refuse a weak one). Every process of a deployment shares
    /// it; changing it changes every user's secret at once. `WEBHOOK_SECRET` is its old name.
    #[arg(long, env = "WEBHOOK_SERVER_KEY", hide_env_values = true)]
    pub webhook_server_key: Option<Secret>,

    /// The old name of WEBHOOK_SERVER_KEY, still read when that is unset.
    #[arg(long, env = "WEBHOOK_SECRET", hide = true, hide_env_values = true)]
    pub webhook_secret: Option<Secret>,

    /// Webhook attempts one user may have in flight per worker process, so one slow
    /// receiver cannot delay other users' deliveries.
    #[arg(long, env = "WEBHOOK_CONCURRENCY_PER_USER", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub webhook_concurrency_per_user: u32,

    /// Time limit of one webhook attempt.
    #[arg(long, env = "WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,

    /// Attempts per webhook delivery, the first included, before it is marked failed.
    #[arg(long, env = "WEBHOOK_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub webhook_max_attempts: u32,

    /// Let callback URLs point at loopback, private and link-local addresses: for local
    /// development and tests only.
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,

    /// Origins whose browser pages may call the API (CORS), comma separated, e.g.
    /// `https://app.example.com`; `*` allows any origin. Empty: no cross-origin calls.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    #[command(flatten)]
    pub auth: AuthSettings,

    #[command(flatten)]
    pub rate_limits: RateLimitSettings,

    #[command(flatten)]
    pub budgets: BudgetSettings,
}

/// A key, token or password from the settings: `Debug` never shows it, so settings can be
/// logged whole without leaking one.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// Used when no `WEBHOOK_SERVER_KEY` is set: `run` warns about it, `serve` and `worker`
/// with `AUTH=required` refuse it.
pub const DEV_WEBHOOK_SERVER_KEY: &str = "insecure-development-webhook-server-key";

/// Used when no `DISPATCH_SECRET` is set; start-up warns about it.
pub const DEV_DISPATCH_SECRET: &str = "insecure-development-dispatch-secret";

/// The shortest `DISPATCH_SECRET` and `WEBHOOK_SERVER_KEY` that `serve` and `worker` accept
/// with `AUTH=required`.
pub const MIN_PRODUCTION_SECRET_BYTES: usize = 32;

/// Values anyone can read: the built-in development secrets and the placeholders that
/// docker-compose.yml used to fill in, which copied `.env` files may still carry.
const PUBLIC_SECRETS: [&str; 4] = [
    DEV_DISPATCH_SECRET,
    DEV_WEBHOOK_SERVER_KEY,
    "change-me-to-a-long-random-secret",
    "change-me-to-another-long-random-secret",
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error("{field} must be at least 1")]
    Zero { field: &'static str },
    #[error(
        "QUEUE_VISIBILITY_TIMEOUT_SECS ({visibility}s) must exceed LEASE_SECS ({lease}s), or live steps would be handed to a second worker"
    )]
    VisibilityBelowLease { visibility: u64, lease: u64 },
    #[error("RETRY_MAX_MS must be at least RETRY_BASE_MS")]
    RetryMaxBelowBase,
    #[error("DISPATCH_SECRET must be at least 16 bytes")]
    ShortSecret,
    #[error("REDIS_PREFIX must be 1 to 100 characters without spaces")]
    BadPrefix,
    #[error(
        "{name} {problem}: `serve` and `worker` with AUTH=required need a random secret of at least {MIN_PRODUCTION_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
    )]
    WeakSecret { name: &'static str, problem: WeakSecret },
    #[error(transparent)]
    Budget(#[from] BudgetSettingsError),
}

/// What is wrong with a production secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WeakSecret {
    #[error("is not set")]
    Unset,
    #[error("is shorter than {MIN_PRODUCTION_SECRET_BYTES} bytes")]
    Short,
    #[error("is a published value (a built-in development default or the docker-compose.yml placeholder)")]
    Public,
}

impl Settings {
    /// The key users' webhook secrets derive from: `WEBHOOK_SERVER_KEY`, else its old name
    /// `WEBHOOK_SECRET`, else the development key.
    pub fn webhook_server_key(&self) -> &str {
        self.webhook_server_key.as_ref().or(self.webhook_secret.as_ref()).map_or(DEV_WEBHOOK_SERVER_KEY, Secret::expose)
    }

    /// For `serve` and `worker` with `AUTH=required`, which face other tenants: refuses a
    /// `DISPATCH_SECRET` or webhook server key that is unset, short or published. Anyone
    /// knowing the first can forge jobs; the second, every user's webhook signatures. `run`
    /// (local use) keeps the development defaults, with a warning.
    pub fn check_production_secrets(&self) -> Result<(), SettingsError> {
        // DISPATCH_SECRET has a default, so unset reads as the development value.
        let dispatch = Some(self.dispatch_secret.expose()).filter(|s| *s != DEV_DISPATCH_SECRET);
        let webhook = self.webhook_server_key.as_ref().or(self.webhook_secret.as_ref()).map(Secret::expose);
        for (name, value) in [("DISPATCH_SECRET", dispatch), ("WEBHOOK_SERVER_KEY", webhook)] {
            let problem = match value {
                None => Some(WeakSecret::Unset),
                Some(v) if PUBLIC_SECRETS.contains(&v.trim()) => Some(WeakSecret::Public),
                Some(v) if v.len() < MIN_PRODUCTION_SECRET_BYTES => Some(WeakSecret::Short),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                return Err(SettingsError::WeakSecret { name, problem });
            }
        }
        Ok(())
    }

    /// Checks the invariants that span several settings.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (field, value) in [
            ("LEASE_SECS", self.lease_secs),
            ("STEP_TIMEOUT_SECS", self.step_timeout_secs),
            ("RETRY_BASE_MS", self.retry_base_ms),
            ("RECONCILE_INTERVAL_MS", self.reconcile_interval_ms),
        ] {
            if value == 0 {
                return Err(SettingsError::Zero { field });
            }
        }
        if self.retry_max_ms < self.retry_base_ms {
            return Err(SettingsError::RetryMaxBelowBase);
        }
        if self.visibility_timeout_secs <= self.lease_secs {
            return Err(SettingsError::VisibilityBelowLease {
                visibility: self.visibility_timeout_secs,
                lease: self.lease_secs,
            });
        }
        if self.dispatch_secret.expose().len() < 16 {
            return Err(SettingsError::ShortSecret);
        }
        if self.redis_prefix.is_empty()
            || self.redis_prefix.len() > 100
            || self.redis_prefix.contains(char::is_whitespace)
        {
            return Err(SettingsError::BadPrefix);
        }
        self.budgets.validate()?;
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
        SettingsOnly::parse_from(["orchestrator"]).settings
    }
}

/// The settings without a subcommand around them, for [`Settings::defaults`]: the command
/// line that places them under `run`, `serve` and the others belongs to the CLI, which
/// sits above this module.
#[derive(Parser)]
struct SettingsOnly {
    #[command(flatten)]
    settings: Settings,
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
    fn production_secrets_must_be_set_long_and_unpublished() {
        let strong = "f3a1c9e07b5d2468ace13579bdf02468ace13579";
        let weak = |dispatch: Option<&str>, webhook: Option<&str>| {
            let mut s = Settings::defaults();
            if let Some(d) = dispatch {
                s.dispatch_secret = d.into();
            }
            s.webhook_server_key = webhook.map(Secret::from);
            match s.check_production_secrets() {
                Ok(()) => None,
                Err(SettingsError::WeakSecret { name, problem }) => Some((name, problem)),
                Err(other) => panic!("{other}"),
            }
        };
        assert_eq!(weak(Some(strong), Some(strong)), None);
        assert_eq!(weak(None, Some(strong)), Some(("DISPATCH_SECRET", WeakSecret::Unset)));
        assert_eq!(weak(Some(strong), None), Some(("WEBHOOK_SERVER_KEY", WeakSecret::Unset)));
        assert_eq!(weak(Some("only-twenty-bytes-long"), Some(strong)), Some(("DISPATCH_SECRET", WeakSecret::Short)));
        assert_eq!(weak(Some(strong), Some(&strong[..31])), Some(("WEBHOOK_SERVER_KEY", WeakSecret::Short)));
        for public in PUBLIC_SECRETS {
            assert_eq!(weak(Some(strong), Some(public)), Some(("WEBHOOK_SERVER_KEY", WeakSecret::Public)), "{public}");
        }
        assert_eq!(
            weak(Some("change-me-to-a-long-random-secret"), Some(strong)),
            Some(("DISPATCH_SECRET", WeakSecret::Public))
        );
        // The old name counts as the key.
        let mut s = Settings::defaults();
        s.dispatch_secret = strong.into();
        s.webhook_secret = Some(strong.into());
        assert_eq!(s.check_production_secrets(), Ok(()));
        assert_eq!(s.webhook_server_key(), strong);
        let message = SettingsError::WeakSecret { name: "DISPATCH_SECRET", problem: WeakSecret::Short }.to_string();
        assert!(message.starts_with("DISPATCH_SECRET is shorter than 32 bytes: `serve` and `worker`"), "{message}");
    }

    #[test]
    fn visibility_timeout_must_exceed_the_lease() {
        let mut s = Settings::defaults();
        s.visibility_timeout_secs = s.lease_secs;
        assert!(matches!(s.validate(), Err(SettingsError::VisibilityBelowLease { .. })));
    }
}
