//! Long-term memory: content and metadata in Postgres (`memory_items`), vectors in
//! in-process FAISS indexes (one per owner) keyed by the row id, snapshotted under a data
//! directory and kept in step with the other processes sharing the database.
//!
//! Invariants:
//! - Postgres is the truth. A search takes candidate ids from the index but returns only rows
//!   that Postgres confirms are live and the caller's, so an index that lags (a deletion by
//!   another process not yet caught up) or is ahead (a row written here) never leaks an item.
//! - Every live row's vector was made by the configured embedder: `open` refuses a database
//!   holding others ([`MemoryError::EmbedderMismatch`]) until [`LongTermMemory::reembed`] ran.
//! - A row committed by any process is searchable here within about `catch_up_interval`
//!   (see `catch_up` for how late commits of lower ids are handled).
//! - FAISS work runs in `spawn_blocking`; no `std` lock is held across an `.await`.
//!
//! Lifecycle: [`LongTermMemory::open`] loads the snapshot (or rebuilds from Postgres when it
//! is missing, corrupt, or made by another embedder or for another database), catches up,
//! and starts a background task that catches up every `catch_up_interval` and snapshots every
//! `snapshot_interval`. [`LongTermMemory::shutdown`] stops it and writes a final snapshot;
//! dropping the store stops it without one.

mod background;
mod catch_up;
mod reembed;
mod rows;
mod search;
mod snapshot;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::embed::Embedder;
use crate::error::MemoryError;
use crate::index::{IndexParams, OwnerIndexes};
use crate::store::{MemoryItem, MemoryStore, NewMemory, ScoredMemory, SearchQuery};
use crate::validate::{check_metadata, check_name, check_no_nul, check_text};
use crate::vector::{check, normalize};

use catch_up::Cursor;
use snapshot::Loaded;

pub use search::MAX_LIMIT;
pub use snapshot::SnapshotInfo;

pub use crate::validate::MAX_NAME_CHARS;

/// Configuration of a [`LongTermMemory`].
#[derive(Debug, Clone, PartialEq)]
pub struct LongTermConfig {
    /// Where snapshots live. One process per directory: it is locked while open.
    pub data_dir: PathBuf,
    /// How often to look for rows written or deleted by other processes.
    pub catch_up_interval: Duration,
    /// How long an id skipped by a late commit is watched for, and how far back each poll
    /// looks for deletions. Longer than any transaction that inserts or deletes memories.
    pub catch_up_grace: Duration,
    /// How often to snapshot when something changed; `None` snapshots only on demand and at
    /// shutdown.
    pub snapshot_interval: Option<Duration>,
    /// Index tuning.
    pub index: IndexParams,
}

impl LongTermConfig {
    /// The defaults: catch up every 250 ms with a 30 s grace, snapshot every 5 minutes.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            catch_up_interval: Duration::from_millis(250),
            catch_up_grace: Duration::from_secs(30),
            snapshot_interval: Some(Duration::from_secs(300)),
            index: IndexParams::default(),
        }
    }

    fn validate(&self) -> Result<(), MemoryError> {
        if self.catch_up_interval.is_zero() {
            return Err(MemoryError::InvalidConfig("catch_up_interval must be positive".into()));
        }
        if self.snapshot_interval.is_some_and(|i| i.is_zero()) {
            return Err(MemoryError::InvalidConfig("snapshot_interval must be positive".into()));
        }
        if self.data_dir.to_str().is_none() {
            return Err(MemoryError::InvalidConfig(format!("data_dir {} is not UTF-8", self.data_dir.display())));
        }
        TimeDelta::from_std(self.catch_up_grace)
            .map_err(|_| MemoryError::InvalidConfig("catch_up_grace is too long".into()))?;
        self.index.validate()
    }
}

/// Where the indexes came from at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupSource {
    /// Loaded from the snapshot of this generation.
    Snapshot { generation: String },
    /// Built from `memory_items`, for this reason (no snapshot, a corrupt one…).
    Rebuilt { reason: String },
}

/// What [`LongTermMemory::open`] did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupReport {
    /// Snapshot or rebuild.
    pub source: StartupSource,
    /// Rows added by the catch-up that followed.
    pub caught_up: usize,
    /// Owners with an index.
    pub owners: usize,
    /// Time spent in `open`.
    pub elapsed: Duration,
}

/// Long-term memory on FAISS and Postgres; see the module documentation.
#[derive(Debug)]
pub struct LongTermMemory {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    background: std::sync::Mutex<Option<JoinHandle<()>>>,
    startup: StartupReport,
}

/// State shared by the store, its background task and its blocking closures.
pub(crate) struct Shared {
    pub pool: PgPool,
    pub embedder: Arc<dyn Embedder>,
    pub config: LongTermConfig,
    pub indexes: Arc<OwnerIndexes>,
    /// The catch-up position. Held (a tokio mutex, across awaits) by a catch-up pass or a
    /// snapshot for its whole duration, which also serialises snapshots.
    pub cursor: tokio::sync::Mutex<Cursor>,
    store_id: uuid::Uuid,
    /// `indexes.changes()` when the last snapshot was taken.
    snapshot_changes: AtomicU64,
    /// Cancels background rebuilds at shutdown.
    shutdown: CancellationToken,
    /// Holds the data directory's lock for as long as anything may write to it.
    _dir_lock: File,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("embedder", &self.embedder.name())
            .field("config", &self.config)
            .field("store_id", &self.store_id)
            .finish_non_exhaustive()
    }
}

impl LongTermMemory {
    /// Opens the store: checks the stored vectors' embedder, loads or rebuilds the indexes,
    /// catches up with Postgres and starts the background catch-up and snapshot task. The
    /// database must be migrated.
    pub async fn open(pool: PgPool, embedder: Arc<dyn Embedder>, config: LongTermConfig) -> Result<Self, MemoryError> {
        config.validate()?;
        let started = Instant::now();
        let name = embedder.name().to_owned();
        let dimension = embedder.dimension();
        if let Some(stored) = rows::foreign_embedder(&pool, &name).await? {
            return Err(MemoryError::EmbedderMismatch { stored, configured: name });
        }
        let store_id = rows::store_id(&pool).await?;
        let dir_lock = acquire_data_dir(&config.data_dir).await?;

        let (indexes, cursor, source) = load_or_rebuild(&pool, &config, store_id, &name, dimension).await?;

        let token = CancellationToken::new();
        let shared = Arc::new(Shared {
            pool,
            embedder,
            config,
            indexes: Arc::new(indexes),
            cursor: tokio::sync::Mutex::new(cursor),
            store_id,
            snapshot_changes: AtomicU64::new(0),
            shutdown: token.clone(),
            _dir_lock: dir_lock,
        });
        let caught_up = {
            let mut cursor = shared.cursor.lock().await;
            catch_up::catch_up(&shared, &mut cursor).await?.added
        };
        match &source {
            StartupSource::Rebuilt { .. } => {
                shared.snapshot().await?;
            }
            StartupSource::Snapshot { generation } => {
                shared.snapshot_changes.store(shared.indexes.changes(), Ordering::Release);
                let (dir, keep) = (shared.config.data_dir.clone(), generation.clone());
                blocking(move || {
                    snapshot::remove_stale(&dir, Some(&keep));
                    Ok(())
                })
                .await?;
            }
        }
        for (owner, index) in shared.indexes.all()? {
            let needs = blocking(move || Ok(crate::index::lock_index(&index)?.rebuild_needed().is_some())).await?;
            if needs {
                shared.schedule_rebuild(owner);
            }
        }
        let owners = shared.indexes.all()?.len();
        let background = tokio::spawn(background::run(shared.clone(), token.clone()));
        let startup = StartupReport { source, caught_up, owners, elapsed: started.elapsed() };
        tracing::info!(?startup, "long-term memory open");
        Ok(Self { shared, shutdown: token, background: std::sync::Mutex::new(Some(background)), startup })
    }

    /// What `open` did.
    pub fn startup(&self) -> &StartupReport {
        &self.startup
    }

    /// Writes a snapshot now (the background task also does, every `snapshot_interval`).
    pub async fn snapshot(&self) -> Result<SnapshotInfo, MemoryError> {
        self.shared.snapshot().await
    }

    /// Stops the background task and any index rebuild, then snapshots if anything changed
    /// since the last snapshot. The store still serves requests afterwards, but no longer
    /// sees other processes' writes. Call once, when the service stops.
    pub async fn shutdown(&self) -> Result<Option<SnapshotInfo>, MemoryError> {
        self.shutdown.cancel();
        let handle = self.background.lock().map_err(|_| MemoryError::Internal("poisoned".into()))?.take();
        if let Some(handle) = handle {
            handle.await.map_err(|e| MemoryError::Internal(format!("memory background task failed: {e}")))?;
        }
        self.shared.snapshot_if_changed().await
    }

    /// Recomputes the vector of every live row not made by `embedder`, in batches, and records
    /// `embedder`'s name and dimension on it; returns how many rows were rewritten. This is
    /// what `orchestrator memory reembed` runs after the embedder configuration changed; stop
    /// the other processes first (they refuse to start on a mixed table anyway). Snapshots
    /// made with the old embedder are then ignored and rebuilt at the next `open`.
    pub async fn reembed(pool: &PgPool, embedder: &dyn Embedder) -> Result<usize, MemoryError> {
        reembed::reembed(pool, embedder).await
    }
}

/// How long `open` waits for a store that is going away to release the data directory.
const DATA_DIR_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Locks the data directory. A store dropped a moment ago in this process releases the lock
/// only when its background task has noticed the cancellation, so a restart in place waits
/// briefly for it; a directory held by a live store stays an error.
async fn acquire_data_dir(dir: &std::path::Path) -> Result<std::fs::File, MemoryError> {
    let deadline = Instant::now() + DATA_DIR_RELEASE_WAIT;
    loop {
        let path = dir.to_path_buf();
        match blocking(move || snapshot::lock_data_dir(&path)).await {
            Err(MemoryError::DataDirLocked(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

impl Drop for LongTermMemory {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[async_trait::async_trait]
impl MemoryStore for LongTermMemory {
    async fn store(&self, memory: NewMemory) -> Result<MemoryItem, MemoryError> {
        check_name("owner", &memory.owner)?;
        check_name("namespace", &memory.namespace)?;
        check_text("content", &memory.content)?;
        check_metadata("metadata", &memory.metadata)?;
        let shared = &self.shared;
        let vector = shared.embed_one(&memory.content).await?;
        let item = rows::insert(&shared.pool, &memory, &vector, shared.embedder.name()).await?;
        let (indexes, owner, id) = (shared.indexes.clone(), item.owner.clone(), item.id);
        match blocking(move || indexes.add(&owner, &[id], &vector)).await {
            Ok((_, true)) => shared.schedule_rebuild(item.owner.clone()),
            Ok((_, false)) => {}
            // The row is committed, so report success: the next catch-up pass adds the vector.
            Err(error) => tracing::error!(id, %error, "cannot index a stored memory; catch-up will retry"),
        }
        Ok(item)
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<ScoredMemory>, MemoryError> {
        search::search(&self.shared, query).await
    }

    async fn get(&self, owner: &str, id: i64) -> Result<Option<MemoryItem>, MemoryError> {
        check_no_nul("owner", owner)?;
        rows::get(&self.shared.pool, owner, id).await
    }

    async fn delete(&self, owner: &str, id: i64) -> Result<bool, MemoryError> {
        check_no_nul("owner", owner)?;
        if !rows::soft_delete(&self.shared.pool, owner, id).await? {
            return Ok(false);
        }
        let (indexes, owner) = (self.shared.indexes.clone(), owner.to_owned());
        let (_, needs_rebuild) = blocking({
            let owner = owner.clone();
            move || indexes.remove(&owner, &[id])
        })
        .await?;
        if needs_rebuild {
            self.shared.schedule_rebuild(owner);
        }
        Ok(true)
    }
}

impl Shared {
    /// Embeds one text into a checked, normalised vector.
    pub(crate) async fn embed_one(&self, text: &str) -> Result<Vec<f32>, MemoryError> {
        let mut vectors = self.embedder.embed(&[text.to_owned()]).await?;
        let count = vectors.len();
        let mut vector = vectors
            .pop()
            .filter(|_| count == 1)
            .ok_or_else(|| MemoryError::Backend(format!("embedder returned {count} vectors for one text")))?;
        check(&vector, self.indexes.dimension())?;
        normalize(&mut vector);
        Ok(vector)
    }

    /// The catch-up grace period (validated in `open`).
    pub(crate) fn grace(&self) -> TimeDelta {
        TimeDelta::from_std(self.config.catch_up_grace).unwrap_or(TimeDelta::MAX)
    }

    /// Rebuilds `owner`'s index in the background (off its lock; see
    /// [`OwnerIndexes::rebuild`]); a rebuild already running makes this a no-op.
    pub(crate) fn schedule_rebuild(&self, owner: String) {
        let (indexes, token) = (self.indexes.clone(), self.shutdown.clone());
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            match indexes.rebuild(&owner, &|| token.is_cancelled()) {
                Ok(true) => tracing::info!(%owner, elapsed = ?started.elapsed(), "memory index rebuilt"),
                Ok(false) => {}
                Err(error) => tracing::warn!(%owner, %error, "memory index rebuild failed"),
            }
        });
    }

    /// Writes a snapshot, pausing catch-up meanwhile so the recorded cursor stays valid.
    async fn snapshot(&self) -> Result<SnapshotInfo, MemoryError> {
        let cursor = self.cursor.lock().await;
        let changes = self.indexes.changes();
        let (dir, indexes, position, name, store_id) = (
            self.config.data_dir.clone(),
            self.indexes.clone(),
            cursor.clone(),
            self.embedder.name().to_owned(),
            self.store_id,
        );
        let info = blocking(move || snapshot::write(&dir, store_id, &indexes, &position, &name)).await?;
        self.snapshot_changes.store(changes, Ordering::Release);
        drop(cursor);
        tracing::info!(?info, "memory snapshot written");
        Ok(info)
    }

    async fn snapshot_if_changed(&self) -> Result<Option<SnapshotInfo>, MemoryError> {
        if self.indexes.changes() == self.snapshot_changes.load(Ordering::Acquire) {
            return Ok(None);
        }
        self.snapshot().await.map(Some)
    }
}

/// The indexes and cursor to start from: the snapshot in `config.data_dir` if it is usable,
/// otherwise a full load from Postgres.
async fn load_or_rebuild(
    pool: &PgPool,
    config: &LongTermConfig,
    store_id: uuid::Uuid,
    embedder: &str,
    dimension: usize,
) -> Result<(OwnerIndexes, Cursor, StartupSource), MemoryError> {
    let (dir, params, name) = (config.data_dir.clone(), config.index.clone(), embedder.to_owned());
    let loaded = blocking(move || Ok(snapshot::load(&dir, store_id, &name, dimension, &params))).await?;
    let unusable = |reason: String| {
        tracing::warn!(%reason, "memory snapshot unusable; rebuilding the indexes from Postgres");
        reason
    };
    let reason = match loaded {
        // A database restored from a backup older than the snapshot: the snapshot's vectors
        // may carry ids that now name other rows.
        Loaded::Ready { manifest, .. } if manifest.watermark > rows::max_id(pool).await? => {
            unusable(format!("snapshot includes id {} but the database has no such row", manifest.watermark))
        }
        Loaded::Ready { indexes, manifest } => {
            let now = rows::db_now(pool).await?;
            let cursor = Cursor::restore(manifest.watermark, &manifest.gap_ids, manifest.deletions_checked_at, now);
            return Ok((indexes, cursor, StartupSource::Snapshot { generation: manifest.generation }));
        }
        Loaded::Missing => "no snapshot".to_owned(),
        Loaded::Unusable(reason) => unusable(reason),
    };
    let (indexes, cursor) = catch_up::load_all(pool, embedder, dimension, &config.index).await?;
    Ok((indexes, cursor, StartupSource::Rebuilt { reason }))
}

/// Runs blocking (FAISS, file) work off the async runtime.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, MemoryError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, MemoryError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| MemoryError::Internal(format!("blocking task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        let ok = LongTermConfig::new("/tmp/x");
        assert!(ok.validate().is_ok());
        for bad in [
            LongTermConfig { catch_up_interval: Duration::ZERO, ..ok.clone() },
            LongTermConfig { snapshot_interval: Some(Duration::ZERO), ..ok.clone() },
            LongTermConfig { catch_up_grace: Duration::MAX, ..ok.clone() },
            LongTermConfig { index: IndexParams { hnsw_m: 0, ..IndexParams::default() }, ..ok.clone() },
        ] {
            assert!(matches!(bad.validate(), Err(MemoryError::InvalidConfig(_))), "{bad:?}");
        }
    }
}
