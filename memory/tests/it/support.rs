//! Test harness: a fresh migrated database per test, a scratch data directory, helpers to
//! write rows the way another process would, and polling with a deadline.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use memory::{
    Embedder, HashingEmbedder, LongTermConfig, LongTermMemory, MemoryItem, MemoryStore, NewMemory, ScoredMemory,
    SearchQuery,
};
use serde_json::{Map, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// The Postgres server the tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own, migrated, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    name: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("orch_test_mem_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url()).await.expect("admin connection");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let mut url = url::Url::parse(&admin_url()).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        let url = url.to_string();
        let pool = PgPoolOptions::new().max_connections(8).connect(&url).await.expect("connect");
        sqlx::migrate!("../migrations").run(&pool).await.expect("migrations");
        Self { pool, url, name }
    }

    /// A second pool on the same database, as another process would have.
    pub async fn other_pool(&self) -> PgPool {
        PgPoolOptions::new().max_connections(4).connect(&self.url).await.expect("connect")
    }

    pub async fn drop_db(self) {
        self.pool.close().await;
        assert!(self.name.starts_with("orch_test_"));
        let mut admin = PgConnection::connect(&admin_url()).await.expect("admin connection");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)))
            .execute(&mut admin)
            .await
            .expect("drop the test database");
    }
}

/// A scratch directory removed on drop.
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn new() -> Self {
        Self(std::env::temp_dir().join(format!("memory-it-{}", Uuid::new_v4().simple())))
    }

    /// Every FAISS file of the current and older snapshots.
    pub fn index_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for generation in std::fs::read_dir(self.0.join("snapshots")).expect("snapshots dir").flatten() {
            for file in std::fs::read_dir(generation.path()).expect("generation dir").flatten() {
                files.push(file.path());
            }
        }
        files
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn hashing() -> Arc<dyn Embedder> {
    Arc::new(HashingEmbedder::new(384).expect("dimension"))
}

/// Fast catch-up, no periodic snapshots (tests snapshot explicitly).
pub fn config(dir: &DataDir) -> LongTermConfig {
    LongTermConfig {
        catch_up_interval: Duration::from_millis(100),
        snapshot_interval: None,
        ..LongTermConfig::new(&dir.0)
    }
}

pub async fn open(db: &TestDb, dir: &DataDir) -> LongTermMemory {
    LongTermMemory::open(db.pool.clone(), hashing(), config(dir)).await.expect("open")
}

pub fn meta(value: Value) -> Map<String, Value> {
    value.as_object().cloned().expect("a JSON object")
}

pub fn new_memory(owner: &str, namespace: &str, content: &str) -> NewMemory {
    NewMemory {
        owner: owner.into(),
        namespace: namespace.into(),
        content: content.into(),
        metadata: Map::new(),
        source_task: None,
    }
}

pub async fn store(memory: &impl MemoryStore, owner: &str, namespace: &str, content: &str) -> MemoryItem {
    memory.store(new_memory(owner, namespace, content)).await.expect("store")
}

pub fn query(owner: &str, text: &str, limit: usize) -> SearchQuery {
    SearchQuery { owner: owner.into(), namespace: None, text: text.into(), limit, metadata: None }
}

pub async fn search(memory: &impl MemoryStore, query: SearchQuery) -> Vec<ScoredMemory> {
    memory.search(&query).await.expect("search")
}

pub fn ids(results: &[ScoredMemory]) -> Vec<i64> {
    results.iter().map(|r| r.item.id).collect()
}

/// Inserts rows directly, in one statement, as another process (or an older version) would:
/// normalised hashing vectors, tagged with the embedder's name.
pub async fn insert_rows(pool: &PgPool, owner: &str, namespace: &str, contents: &[String]) -> Vec<i64> {
    let embedder = HashingEmbedder::new(384).expect("dimension");
    let mut ids = Vec::new();
    let mut tx = pool.begin().await.expect("begin");
    for content in contents {
        let vector = embedder.embed_one(content);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO memory_items (owner, namespace, content, embedding, embedder, dimension)
             VALUES ($1, $2, $3, $4, $5, 384) RETURNING id",
        )
        .bind(owner)
        .bind(namespace)
        .bind(content)
        .bind(&vector)
        .bind(embedder.name())
        .fetch_one(&mut *tx)
        .await
        .expect("insert");
        ids.push(id);
    }
    tx.commit().await.expect("commit");
    ids
}

/// Polls `check` every 20 ms until it returns `Some` or `deadline` passes.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
