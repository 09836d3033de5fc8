//! The test harness: a real server on a random port with its own database and Redis prefix,
//! plus a TCP proxy that can cut a dependency off, and polling helpers with deadlines.

use std::{net::SocketAddr, time::Duration};

use orchestrator::{app::App, config::Settings};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Postgres server the tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `admin_url` pointed at another database on the same server.
pub fn database_url(name: &str) -> String {
    let mut url = url::Url::parse(&admin_url()).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Settings for an isolated test app: fresh database, unique prefix, short timeouts.
pub fn test_settings() -> Settings {
    let mut s = Settings::defaults();
    let id = Uuid::new_v4().simple().to_string();
    s.database_url = database_url(&format!("orch_test_{id}"));
    s.database_max_connections = 10;
    s.redis_url = redis_url();
    s.redis_prefix = format!("orch-test-{id}");
    s.bind_addr = "127.0.0.1:0".parse().expect("an address");
    s.worker_concurrency = 8;
    s.dispatch_secret = "integration-test-dispatch-secret".into();
    s.webhook_server_key = Some("integration-test-webhook-server-key".into());
    s.shutdown_grace_secs = 5;
    s.data_dir = data_dir(&id);
    // Most tests are about other things than keys; tests of auth turn it on.
    s.auth.mode = Some(orchestrator::auth::AuthMode::Disabled);
    s
}

/// An `orchestrator worker` process of the deployment `settings` describes, with a slow
/// offline model (a minute per call, so it is always mid-step when a test kills it), short
/// leases and its own data directory `name`. Killed when dropped.
pub fn slow_worker_process(settings: &Settings, name: &str) -> tokio::process::Child {
    worker_process(settings, name, &[("OFFLINE_LLM_DELAY_MS", "60000")])
}

/// An `orchestrator worker` process as [`slow_worker_process`], with `env` set instead of a
/// slow offline model.
pub fn worker_process(settings: &Settings, name: &str, env: &[(&str, &str)]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("worker")
        .envs(env.iter().copied())
        .env("DATABASE_URL", &settings.database_url)
        .env("REDIS_URL", &settings.redis_url)
        .env("REDIS_PREFIX", &settings.redis_prefix)
        .env("DISPATCH_SECRET", settings.dispatch_secret.expose())
        .env("WEBHOOK_SERVER_KEY", settings.webhook_server_key())
        .env("LEASE_SECS", "1")
        .env("QUEUE_VISIBILITY_TIMEOUT_SECS", "2")
        .env("RECONCILE_INTERVAL_MS", "300")
        .env("RECONCILE_MIN_AGE_MS", "500")
        .env("RUST_LOG", "warn")
        .env("DATA_DIR", data_dir(&format!("{}-{name}", settings.redis_prefix)))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the orchestrator binary starts")
}

/// A fresh directory for one process's memory snapshots.
pub fn data_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join("orchestrator-tests").join(name)
}

pub struct TestApp {
    pub app: App,
    pub addr: SocketAddr,
    pub client: eval::ApiClient,
    pub http: reqwest::Client,
    pub db: PgPool,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// API and `workers` workers in one process, as `orchestrator run` does.
    pub async fn spawn(workers: usize) -> Self {
        Self::spawn_with(test_settings(), workers).await
    }

    pub async fn spawn_with(settings: Settings, workers: usize) -> Self {
        init_tracing();
        let app = App::connect(settings).await.expect("the app connects");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("an address");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn({
            let (app, shutdown) = (app.clone(), shutdown.clone());
            async move { app.run(Some(listener), workers, shutdown).await }
        });
        let base = format!("http://{addr}");
        Self {
            db: app.store.pool().clone(),
            client: eval::ApiClient::new(base),
            http: reqwest::Client::new(),
            app,
            addr,
            shutdown,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Submits a task and expects 202.
    pub async fn submit(&self, description: &str) -> Uuid {
        let body = serde_json::json!({"user_id": "test-user", "description": description});
        self.client.submit(&body).await.expect("202 Accepted").id
    }

    /// Waits for the task to end (10 s deadline) and returns its JSON.
    pub async fn wait(&self, id: Uuid) -> Value {
        self.client.wait(id, Duration::from_secs(10)).await.expect("the task finishes").raw
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.db).await.expect("a count")
    }

    /// Jobs in the dispatch streams: enqueued and not yet retired by a worker.
    pub async fn queued_jobs(&self) -> usize {
        let mut redis = self.app.queue.pool().get().await.expect("redis");
        let mut total = 0;
        for priority in orchestrator::domain::Priority::ALL {
            let len: usize =
                redis::cmd("XLEN").arg(self.app.queue.stream(*priority)).query_async(&mut redis).await.expect("xlen");
            total += len;
        }
        total
    }

    /// Stops every process of the app (its API and workers, gracefully) and starts them
    /// again on the same database; with `lose_redis`, every Redis key of the deployment goes
    /// too, as when Redis restarts (it keeps nothing on disk here).
    pub async fn restart(self, workers: usize, lose_redis: bool) -> Self {
        self.shutdown.cancel();
        self.server.await.expect("the server task").expect("the server stops cleanly");
        let settings = self.app.settings.clone();
        self.db.close().await;
        drop(self.app);
        if lose_redis {
            let client = redis::Client::open(redis_url()).expect("redis url");
            let mut redis = client.get_multiplexed_async_connection().await.expect("redis");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", settings.redis_prefix))
                .query_async(&mut redis)
                .await
                .expect("keys");
            if !keys.is_empty() {
                redis::cmd("DEL").arg(keys).query_async::<()>(&mut redis).await.expect("del");
            }
        }
        Self::spawn_with(settings, workers).await
    }

    /// Stops the app, then drops its database and Redis keys. Cleans up over direct
    /// connections, so it works after a test cut a dependency off.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.expect("the server task").expect("the server stops cleanly");
        let settings = self.app.settings.clone();
        self.db.close().await;
        drop(self.app);
        let client = redis::Client::open(redis_url()).expect("redis url");
        let mut redis = client.get_multiplexed_async_connection().await.expect("redis");
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}:*", settings.redis_prefix)).query_async(&mut redis).await.expect("keys");
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).query_async::<()>(&mut redis).await.expect("del");
        }
        drop_database(&settings.database_url).await;
        let _ = std::fs::remove_dir_all(&settings.data_dir);
    }
}

/// Drops the database `url` names, on the admin server.
pub async fn drop_database(url: &str) {
    let name = url::Url::parse(url).expect("url").path().trim_start_matches('/').to_owned();
    assert!(name.starts_with("orch_test_"), "only test databases are dropped, not {name}");
    let mut admin = PgConnection::connect(&admin_url()).await.expect("admin connection");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&mut admin)
        .await
        .expect("drop the test database");
}

/// Logs to the test output when `RUST_LOG` is set, e.g. `RUST_LOG=orchestrator=debug`.
fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
    });
}

/// Polls `check` every 20 ms until it returns `Some` or `deadline` passes.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP proxy in front of a dependency, so a test can make it unreachable and back.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The current generation's token: cancelled by `cut`, replaced by `resume`.
    open: std::sync::Arc<std::sync::Mutex<Option<CancellationToken>>>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("an address");
        let open = std::sync::Arc::new(std::sync::Mutex::new(Some(CancellationToken::new())));
        let stop = CancellationToken::new();
        let (state, stopped) = (open.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => return },
                    _ = stopped.cancelled() => return,
                };
                // While cut, connections are accepted and dropped at once: "connection reset".
                let Some(token) = state.lock().unwrap().clone() else { continue };
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        Self { addr, open, stop }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        if let Some(token) = self.open.lock().unwrap().take() {
            token.cancel();
        }
    }

    /// Lets connections through again.
    pub fn resume(&self) {
        self.open.lock().unwrap().get_or_insert_with(CancellationToken::new);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.cancel();
    }
}

/// The socket address a URL points at.
pub async fn upstream(url: &str) -> SocketAddr {
    let u = url::Url::parse(url).expect("url");
    tokio::net::lookup_host((u.host_str().expect("host"), u.port_or_known_default().expect("port")))
        .await
        .expect("resolves")
        .next()
        .expect("an address")
}

/// `url` rerouted through `proxy`.
pub fn via(url: &str, proxy: &Proxy) -> String {
    let mut u = url::Url::parse(url).expect("url");
    u.set_host(Some("127.0.0.1")).expect("host");
    u.set_port(Some(proxy.addr.port())).expect("port");
    u.to_string()
}

/// Ids of `kind` events of a task, oldest first: a cheap way to watch progress.
pub async fn events(db: &PgPool, task: Uuid, kind: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM task_events WHERE task_id = $1 AND kind = $2 ORDER BY id")
        .bind(task)
        .bind(kind)
        .fetch_all(db)
        .await
        .expect("events")
}
