//! The composition root: connects Postgres and Redis, applies migrations, and assembles
//! the HTTP API and the workers from the settings.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use agents::{AgentCatalog, AgentRunner, LlmClient, LoopSettings, PriceTable, ToolRegistry};
use anyhow::Context;
use memory::{LongTermConfig, LongTermMemory};
use planner::PlanLimits;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::{AuthMode, Authenticator, KeyStore},
    config::{DEV_DISPATCH_SECRET, Settings},
    coordination::RedisCoordination,
    database::{MIGRATOR, connect_postgres, open_database, redact},
    http::{AppState, RateLimits, build_router},
    metrics::Metrics,
    providers::{self, TaskPlanner},
    queue::{JobSigner, RedisQueue},
    ratelimit::{GcraLimiter, UpstreamLimited},
    store::PgStore,
    task_hash::TaskHasher,
    webhooks::{WebhookConfig, WebhookSecrets, WebhookSender},
    worker::{Worker, WorkerConfig, WorkerDeps},
};

/// Connected infrastructure, shared by the API and the workers of one process. Cloning
/// shares it.
#[derive(Clone)]
pub struct App {
    pub settings: Settings,
    /// What every Redis key of this deployment starts with: `REDIS_PREFIX`, then the
    /// database's deployment id ([`deployment_namespace`]).
    pub redis_namespace: String,
    pub store: PgStore,
    pub queue: RedisQueue,
    pub coordination: RedisCoordination,
    pub agents: Arc<AgentCatalog>,
    pub tools: Arc<ToolRegistry>,
    pub llm: Arc<dyn LlmClient>,
    pub prices: Arc<PriceTable>,
    pub memory: Arc<LongTermMemory>,
    pub metrics: Arc<Metrics>,
    pub webhooks: Arc<WebhookSender>,
    pub auth: Arc<Authenticator>,
    pub cors: Option<tower_http::cors::CorsLayer>,
    /// The shared GCRA limiter of the per-user and upstream rate limits.
    pub limiter: GcraLimiter,
}

impl App {
    /// Connects to both dependencies and brings the schema up to date. Errors name the
    /// dependency that failed, for a one-line message at start.
    pub async fn connect(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        settings.rate_limits.validate()?;
        if settings.dispatch_secret.expose() == DEV_DISPATCH_SECRET {
            tracing::warn!("DISPATCH_SECRET is not set: using the development secret; set one in production");
        }
        // Before anything connects, so a bad REDIS_CA_CERT fails at once and creates nothing.
        let redis = redis_client(&settings).await?;
        let pool = connect_postgres(&settings).await?;
        MIGRATOR.run(&pool).await.context("applying database migrations failed")?;
        let cors = crate::http::cors::layer(&settings.cors_allowed_origins)?;
        let keys = KeyStore::new(pool.clone());
        if let Some(secret) = &settings.auth.bootstrap_admin_key {
            keys.ensure_bootstrap(secret.expose()).await.context("storing BOOTSTRAP_ADMIN_KEY")?;
        }
        if settings.auth.mode() == AuthMode::Required && !keys.any_active().await.unwrap_or(true) {
            tracing::warn!(
                "AUTH=required and no API key exists yet: every request will be refused with 401; create one with `orchestrator keys create --user <user> --admin` or set BOOTSTRAP_ADMIN_KEY"
            );
        }
        let auth =
            Arc::new(Authenticator::new(settings.auth.mode(), keys, Duration::from_secs(settings.auth.cache_secs)));
        let redis_namespace = deployment_namespace(&pool, &settings.redis_prefix).await?;
        let signer = JobSigner::new(settings.dispatch_secret.expose().as_bytes());
        // Blocking reads hold a connection each: one per worker loop, plus the senders.
        let pool_size = 16 + 2 * settings.worker_concurrency.min(64) as usize;
        let queue = RedisQueue::connect_with(redis, &redis_namespace, signer, settings.visibility_timeout(), pool_size)
            .await
            .with_context(|| redis_unreachable(&settings))?;
        let coordination = RedisCoordination::new(queue.pool().clone(), queue.client().clone(), &redis_namespace);
        let memory = Arc::new(
            LongTermMemory::open(
                pool.clone(),
                providers::embedder(&settings)?,
                LongTermConfig::new(settings.data_dir.clone()),
            )
            .await
            .context("opening long-term memory")?,
        );
        let report = memory.startup();
        tracing::info!(source = ?report.source, "long-term memory ready");
        let tools = Arc::new(agents::builtin_tools(&providers::tool_settings(&settings), Some(memory.clone() as _))?);
        let agents = Arc::new(providers::agent_catalog(&settings, &tools)?);
        // A tool that needs approval but does not exist is a typo that would approve nothing.
        if let Some(unknown) = settings.tools_require_approval.iter().find(|t| !tools.contains(t)) {
            anyhow::bail!(
                "TOOLS_REQUIRE_APPROVAL names `{unknown}`, which is not a tool of this deployment ({})",
                tools.names().join(", ")
            );
        }
        let metrics = Arc::new(Metrics::new());
        let limiter = GcraLimiter::new(queue.pool().clone(), &redis_namespace);
        let llm = UpstreamLimited::wrap(providers::llm_client(&settings)?, &settings, &limiter, &metrics);
        let prices = Arc::new(providers::price_table(&settings)?);
        let webhook_config = WebhookConfig::from_settings(&settings)?;
        let webhook_secrets =
            WebhookSecrets::new(Arc::new(PgStore::new(pool.clone())), webhook_config.server_key.clone());
        let webhooks =
            Arc::new(WebhookSender::new(Arc::new(PgStore::new(pool.clone())), webhook_secrets, webhook_config)?);
        Ok(Self {
            settings,
            redis_namespace,
            store: PgStore::new(pool),
            queue,
            coordination,
            agents,
            tools,
            llm,
            prices,
            memory,
            metrics,
            webhooks,
            auth,
            limiter,
            cors,
        })
    }

    /// The API; `shutdown` also ends its open event streams, which would otherwise hold a
    /// graceful shutdown open for as long as their tasks run.
    pub fn router(&self, shutdown: &CancellationToken) -> axum::Router {
        let rate_limits = RateLimits::new(&self.settings.rate_limits, self.limiter.clone(), &self.metrics);
        if let Some(guard) = &rate_limits.ip {
            tokio::spawn(guard.clone().clean_up(shutdown.child_token()));
        }
        let router = build_router(AppState {
            tasks: Arc::new(self.store.clone()),
            dispatcher: Arc::new(self.queue.clone()),
            coordination: Arc::new(self.coordination.clone()),
            agents: self.agents.clone(),
            tools: self.tools.clone(),
            memory: self.memory.clone(),
            events: crate::events::EventHub::new(self.store.pool(), shutdown.child_token()),
            metrics: self.metrics.clone(),
            auth: self.auth.clone(),
            outbox: Arc::new(self.store.clone()),
            webhook_secrets: self.webhooks.secrets().clone(),
            execution: Arc::new(self.store.clone()),
            lifecycle: self.lifecycle(),
            rate_limits,
            task_hasher: TaskHasher::new(&self.agents, providers::planner_version(&self.settings)),
        })
        // Read by `POST /tasks` to check callback URLs (WEBHOOK_ALLOW_PRIVATE).
        .layer(axum::Extension(self.webhooks.policy()))
        // Counts each user's open event streams (SSE_MAX_STREAMS_PER_USER).
        .layer(axum::Extension(crate::http::StreamSlots::new(self.settings.budgets.sse_max_streams_per_user)))
        // Counts each user's `Prefer: wait` requests, against the same limit.
        .layer(axum::Extension(crate::http::WaitSlots::new(self.settings.budgets.sse_max_streams_per_user)));
        // Outermost, so a browser's preflight is answered before any key is asked for.
        match &self.cors {
            Some(cors) => router.layer(cors.clone()),
            None => router,
        }
    }

    /// Serves the API on `listener` until `shutdown` fires, then finishes open requests.
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        if self.auth.mode() == AuthMode::Disabled {
            anyhow::ensure!(
                addr.ip().is_loopback(),
                "refusing to serve {addr} with AUTH=disabled: anyone who can reach it could read and spend as any user; bind a loopback address (BIND_ADDR=127.0.0.1:8000) or set AUTH=required"
            );
            tracing::warn!(%addr, "AUTH=disabled: no API keys are checked and every request may act as any user; for local use only");
        }
        tracing::info!(%addr, auth = ?self.auth.mode(), "API listening");
        let listener = crate::http::listener::nodelay(listener);
        axum::serve(listener, self.router(&shutdown).into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("HTTP server failed")
    }

    /// Where every transition goes, for the API and the workers alike.
    pub fn lifecycle(&self) -> Arc<crate::lifecycle::Lifecycle> {
        Arc::new(crate::lifecycle::Lifecycle::new(
            Arc::new(self.store.clone()),
            Arc::new(self.queue.clone()),
            Arc::new(self.coordination.clone()),
            self.metrics.clone(),
            self.memory.clone(),
            crate::lifecycle::LifecycleSettings {
                remember_results: self.settings.memory_store_results,
                warm_context_ttl: Duration::from_secs(self.settings.warm_context_ttl_secs),
                approval_timeout: Duration::from_secs(self.settings.approval_timeout_secs),
            },
        ))
    }

    /// A worker with its own consumer name; several may run in one process.
    pub fn worker(&self, id: impl Into<String>) -> Worker {
        self.worker_with_llm(id, self.llm.clone())
    }

    /// A worker that talks to `llm` instead of the configured provider.
    pub fn worker_with_llm(&self, id: impl Into<String>, llm: Arc<dyn agents::LlmClient>) -> Worker {
        let s = &self.settings;
        let plan_limits = PlanLimits { max_steps: s.max_plan_steps as usize, ..PlanLimits::default() };
        let deps = WorkerDeps {
            store: Arc::new(self.store.clone()),
            lifecycle: self.lifecycle(),
            dispatcher: Arc::new(self.queue.clone()),
            source: Arc::new(self.queue.clone()),
            coordination: Arc::new(self.coordination.clone()),
            planner: Arc::new(TaskPlanner::new(s, llm.clone(), &self.agents, plan_limits)),
            plan_limits,
            agents: self.agents.clone(),
            prices: self.prices.clone(),
            memory: self.memory.clone(),
            metrics: self.metrics.clone(),
            memory_context_items: s.memory_context_items,
            runner: AgentRunner::new(llm, self.prices.clone(), self.tools.clone(), loop_settings(s)),
            tools_require_approval: s.tools_require_approval.clone(),
            webhooks: self.webhooks.clone(),
        };
        Worker::new(
            Arc::new(deps),
            WorkerConfig {
                id: id.into(),
                concurrency: s.worker_concurrency as usize,
                lease: s.lease(),
                visibility_timeout: s.visibility_timeout(),
                shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
                step_timeout: Duration::from_secs(s.step_timeout_secs),
                retry_base: Duration::from_millis(s.retry_base_ms),
                retry_max: Duration::from_millis(s.retry_max_ms),
                reconcile_interval: Duration::from_millis(s.reconcile_interval_ms),
                reconcile_min_age: Duration::from_millis(s.reconcile_min_age_ms),
                budgets: s.budgets.for_workers(s.llm_max_tokens),
                max_deliveries: s.job_max_deliveries,
            },
        )
    }

    /// Runs the API (when `listener` is given) and `workers` workers until `shutdown`.
    pub async fn run(
        &self,
        listener: Option<TcpListener>,
        workers: usize,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        for n in 0..workers {
            let worker = self.worker(worker_name(n));
            tracker.spawn(worker.run(shutdown.clone()));
        }
        tracker.close();
        let served = match listener {
            Some(listener) => self.serve(listener, shutdown.clone()).await,
            None => {
                shutdown.cancelled().await;
                Ok(())
            }
        };
        // If the server stopped on its own (an error), take the workers down with it.
        shutdown.cancel();
        tracker.wait().await;
        // A last snapshot, so the next start only catches up what others wrote since.
        if let Err(e) = self.memory.shutdown().await {
            tracing::warn!(error = %e, "memory snapshot at shutdown failed; the next start loads the previous snapshot and catches up");
        }
        served
    }
}

/// Recomputes every memory's embedding with the configured embedder, for `orchestrator
/// memory reembed` after a change of embedder.
pub async fn reembed_memory(settings: &Settings) -> anyhow::Result<usize> {
    let pool = open_database(settings).await?;
    let embedder = providers::embedder(settings)?;
    Ok(LongTermMemory::reembed(&pool, embedder.as_ref()).await?)
}

/// `prefix` followed by this database's deployment id (written by the first migration). Two
/// deployments with different databases that share a Redis and a prefix (staging next to
/// production, a forgotten test) then never take each other's jobs, share rate-limit
/// buckets or elect one reconciler between them; every process of one deployment shares
/// the database and so the namespace.
pub async fn deployment_namespace(pool: &PgPool, prefix: &str) -> anyhow::Result<String> {
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM deployment").fetch_one(pool).await.context("reading the deployment id")?;
    Ok(format!("{prefix}:{}", &id.simple().to_string()[..12]))
}

/// A consumer name unique across hosts, processes and restarts.
pub fn worker_name(n: usize) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    format!("{host}-{}-{n}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// The Redis client of `REDIS_URL`, trusting `REDIS_CA_CERT` when it is set.
async fn redis_client(settings: &Settings) -> anyhow::Result<redis::Client> {
    let url = redact(&settings.redis_url);
    match &settings.redis_ca_cert {
        Some(path) => {
            let pem =
                tokio::fs::read(path).await.with_context(|| format!("cannot read REDIS_CA_CERT {}", path.display()))?;
            crate::queue::open_client(&settings.redis_url, Some(pem)).with_context(|| {
                format!(
                    "cannot use REDIS_CA_CERT {} with REDIS_URL {url}: it needs a PEM certificate and a rediss:// URL",
                    path.display()
                )
            })
        }
        None => crate::queue::open_client(&settings.redis_url, None).with_context(|| format!("bad REDIS_URL {url}")),
    }
}

/// The start-up error for Redis; for TLS it says which certificates were trusted, since an
/// unknown issuer is the usual cause.
fn redis_unreachable(settings: &Settings) -> String {
    let url = redact(&settings.redis_url);
    match (settings.redis_url.starts_with("rediss://"), &settings.redis_ca_cert) {
        (false, _) => format!("cannot reach Redis at {url}"),
        (true, Some(ca)) => format!(
            "cannot reach Redis at {url} over TLS (the server's certificate must be signed by the CA in REDIS_CA_CERT {})",
            ca.display()
        ),
        (true, None) => format!(
            "cannot reach Redis at {url} over TLS (the server's certificate must chain to a public root CA; for a private CA set REDIS_CA_CERT to its PEM file)"
        ),
    }
}

/// How agent loops manage long conversations and long stays, from the settings.
fn loop_settings(s: &Settings) -> LoopSettings {
    LoopSettings {
        summarize_every: s.context_compress_every as usize,
        keep_recent: s.context_keep_recent as usize,
        yield_after_turns: s.step_yield_after_turns,
    }
}
