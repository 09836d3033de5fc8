//! Snapshots of the indexes on disk, so a restart loads them instead of rebuilding HNSW
//! graphs from Postgres.
//!
//! Layout under `data_dir`:
//! ```text
//! manifest.json                 the current snapshot: which generation, its files, checksums,
//!                               the embedder, the catch-up cursor
//! snapshots/<generation>/NNNNNN.faiss   one FAISS index per owner
//! LOCK                          flock'ed while a store is open: one writer per directory
//! ```
//! Invariants:
//! - a snapshot is committed by renaming `manifest.json.tmp` over `manifest.json`, after its
//!   generation directory is complete and synced, so a crash at any point leaves either the
//!   old snapshot or the new one, never a mix;
//! - every file's size and SHA-256 are checked before FAISS reads it, so a truncated or
//!   overwritten file is reported as unusable (and the store rebuilds from Postgres) instead
//!   of crashing or loading garbage;
//! - a snapshot made with another embedder or dimension is never loaded;
//! - the recorded cursor never claims more than the files hold: it is taken before the
//!   files are written while catch-up is paused, and files may only hold more (later local
//!   writes), which a catch-up re-applies harmlessly.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::MemoryError;
use crate::index::{IndexKind, IndexParams, OwnerIndexes, VectorIndex, lock_index as lock};
use crate::long_term::catch_up::Cursor;

/// The manifest's file name in `data_dir`.
pub(crate) const MANIFEST: &str = "manifest.json";
const MANIFEST_TMP: &str = "manifest.json.tmp";
const SNAPSHOTS: &str = "snapshots";
/// Bumped when the layout or the manifest changes incompatibly.
const FORMAT: u32 = 1;

/// The description of one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    pub format: u32,
    /// The directory under `snapshots/` holding the files.
    pub generation: String,
    /// The `memory_store.store_id` of the database the snapshot mirrors.
    pub store_id: uuid::Uuid,
    pub embedder: String,
    pub dimension: usize,
    /// The highest `memory_items.id` the files are known to include (the cursor's
    /// `max_seen`); catch-up starts after it.
    pub watermark: i64,
    /// Ids below the watermark not seen yet when the snapshot was taken.
    pub gap_ids: Vec<i64>,
    /// Deletions stamped before this (minus the grace period) are applied in the files.
    pub deletions_checked_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub owners: Vec<OwnerEntry>,
}

/// One owner's index file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OwnerEntry {
    pub owner: String,
    pub file: String,
    pub kind: IndexKind,
    pub bytes: u64,
    pub sha256: String,
    /// Live vectors, checked after loading.
    pub live: usize,
    /// Deleted ids the (HNSW) file still holds.
    pub tombstones: Vec<i64>,
}

/// What a snapshot wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The generation directory's name.
    pub generation: String,
    /// Owners written.
    pub owners: usize,
    /// Live vectors written.
    pub vectors: usize,
    /// Total size of the index files.
    pub bytes: u64,
    /// The catch-up watermark recorded.
    pub watermark: i64,
}

/// What was found in `data_dir` at start-up.
pub(crate) enum Loaded {
    Missing,
    Unusable(String),
    Ready { indexes: OwnerIndexes, manifest: Box<Manifest> },
}

impl Manifest {
    /// Parses and checks a manifest's own consistency.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("manifest is not valid: {e}"))?;
        if manifest.format != FORMAT {
            return Err(format!("manifest format {} is not {FORMAT}", manifest.format));
        }
        if !safe_name(&manifest.generation) {
            return Err(format!("bad generation name {:?}", manifest.generation));
        }
        let mut owners = std::collections::HashSet::new();
        let mut files = std::collections::HashSet::new();
        for entry in &manifest.owners {
            if !safe_name(&entry.file) || !files.insert(entry.file.as_str()) {
                return Err(format!("bad or repeated file name {:?}", entry.file));
            }
            if !owners.insert(entry.owner.as_str()) {
                return Err(format!("owner {:?} listed twice", entry.owner));
            }
            if entry.sha256.len() != 64 || !entry.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("bad checksum for {:?}", entry.file));
            }
        }
        Ok(manifest)
    }

    /// Whether this snapshot mirrors the database `store_id` and holds vectors of `embedder`
    /// with `dimension`.
    pub fn check_compatible(&self, store_id: uuid::Uuid, embedder: &str, dimension: usize) -> Result<(), String> {
        if self.store_id != store_id {
            return Err(format!("snapshot mirrors memory store {}, this database is {store_id}", self.store_id));
        }
        if self.embedder != embedder || self.dimension != dimension {
            return Err(format!(
                "snapshot made by embedder {} ({} dimensions), configured {embedder} ({dimension})",
                self.embedder, self.dimension
            ));
        }
        Ok(())
    }
}

/// A file or directory name we wrote ourselves: no separators, no `..`, nothing hidden.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Writes every non-empty index and commits the snapshot. Blocking: call from
/// `spawn_blocking`. The caller pauses catch-up so that `cursor` stays valid meanwhile.
pub(crate) fn write(
    data_dir: &Path,
    store_id: uuid::Uuid,
    indexes: &OwnerIndexes,
    cursor: &Cursor,
    embedder: &str,
) -> Result<SnapshotInfo, MemoryError> {
    let generation = uuid::Uuid::now_v7().to_string();
    let snapshots = data_dir.join(SNAPSHOTS);
    let tmp_dir = snapshots.join(format!("{generation}.tmp"));
    fs::create_dir_all(&tmp_dir).map_err(|e| MemoryError::io(&tmp_dir, e))?;
    let mut owners = Vec::new();
    let (mut vectors, mut bytes) = (0, 0);
    for (position, (owner, shared)) in indexes.all()?.into_iter().enumerate() {
        let file = format!("{position:06}.faiss");
        let path = tmp_dir.join(&file);
        let (kind, live, tombstones) = {
            let index = lock(&shared)?;
            if index.is_empty() && index.tombstones().is_empty() {
                continue;
            }
            index.write(&path)?;
            (index.kind(), index.len(), index.tombstones())
        };
        let (size, sha256) = checksum(&path)?;
        sync_file(&path)?;
        vectors += live;
        bytes += size;
        owners.push(OwnerEntry { owner, file, kind, bytes: size, sha256, live, tombstones });
    }
    let final_dir = snapshots.join(&generation);
    fs::rename(&tmp_dir, &final_dir).map_err(|e| MemoryError::io(&final_dir, e))?;
    sync_dir(&snapshots)?;
    let manifest = Manifest {
        format: FORMAT,
        generation: generation.clone(),
        store_id,
        embedder: embedder.to_owned(),
        dimension: indexes.dimension(),
        watermark: cursor.max_seen,
        gap_ids: cursor.gap_ids(),
        deletions_checked_at: cursor.deletions_checked_at,
        created_at: Utc::now(),
        owners,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| MemoryError::Internal(format!("cannot serialise the snapshot manifest: {e}")))?;
    let tmp = data_dir.join(MANIFEST_TMP);
    write_synced(&tmp, &json)?;
    let target = data_dir.join(MANIFEST);
    fs::rename(&tmp, &target).map_err(|e| MemoryError::io(&target, e))?;
    sync_dir(data_dir)?;
    remove_stale(data_dir, Some(&generation));
    Ok(SnapshotInfo { generation, owners: manifest.owners.len(), vectors, bytes, watermark: manifest.watermark })
}

/// Reads the snapshot in `data_dir`, checking every file before FAISS sees it. Blocking.
pub(crate) fn load(
    data_dir: &Path,
    store_id: uuid::Uuid,
    embedder: &str,
    dimension: usize,
    params: &IndexParams,
) -> Loaded {
    let path = data_dir.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
        Err(error) => return Loaded::Unusable(format!("cannot read {}: {error}", path.display())),
    };
    let manifest =
        match Manifest::parse(&bytes).and_then(|m| m.check_compatible(store_id, embedder, dimension).map(|()| m)) {
            Ok(manifest) => manifest,
            Err(reason) => return Loaded::Unusable(reason),
        };
    let dir = data_dir.join(SNAPSHOTS).join(&manifest.generation);
    let indexes = OwnerIndexes::new(dimension, params.clone());
    for entry in &manifest.owners {
        match load_entry(&dir, entry, dimension, params) {
            Ok(index) => {
                if let Err(error) = indexes.insert(entry.owner.clone(), index) {
                    return Loaded::Unusable(error.to_string());
                }
            }
            Err(reason) => return Loaded::Unusable(reason),
        }
    }
    Loaded::Ready { indexes, manifest: Box::new(manifest) }
}

fn load_entry(dir: &Path, entry: &OwnerEntry, dimension: usize, params: &IndexParams) -> Result<VectorIndex, String> {
    let path = dir.join(&entry.file);
    let (bytes, sha256) = checksum(&path).map_err(|e| e.to_string())?;
    if bytes != entry.bytes || sha256 != entry.sha256 {
        return Err(format!(
            "{} is corrupt: {bytes} bytes with SHA-256 {sha256}, expected {} bytes with {}",
            path.display(),
            entry.bytes,
            entry.sha256
        ));
    }
    let index = VectorIndex::read(&path, dimension, params, entry.kind, &entry.tombstones)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if index.len() != entry.live {
        return Err(format!("{} holds {} live vectors, expected {}", path.display(), index.len(), entry.live));
    }
    Ok(index)
}

/// Removes generation directories other than `keep` (older snapshots, interrupted writes).
pub(crate) fn remove_stale(data_dir: &Path, keep: Option<&str>) {
    let snapshots = data_dir.join(SNAPSHOTS);
    let Ok(entries) = fs::read_dir(&snapshots) else { return };
    for entry in entries.flatten() {
        if keep.is_some_and(|keep| entry.file_name() == keep) {
            continue;
        }
        if let Err(error) = fs::remove_dir_all(entry.path()) {
            tracing::warn!(path = %entry.path().display(), %error, "cannot remove an old memory snapshot");
        }
    }
}

/// The generation the current manifest names, if any.
#[cfg(test)]
fn current_generation(data_dir: &Path) -> Option<String> {
    let bytes = fs::read(data_dir.join(MANIFEST)).ok()?;
    Manifest::parse(&bytes).ok().map(|m| m.generation)
}

/// Creates and locks `data_dir/LOCK`, so two stores never write the same snapshots.
pub(crate) fn lock_data_dir(dir: &Path) -> Result<File, MemoryError> {
    std::fs::create_dir_all(dir).map_err(|e| MemoryError::io(dir, e))?;
    let path = dir.join("LOCK");
    let file =
        File::options().create(true).truncate(false).write(true).open(&path).map_err(|e| MemoryError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(MemoryError::DataDirLocked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(error)) => Err(MemoryError::io(&path, error)),
    }
}

/// Size and hex SHA-256 of a file.
fn checksum(path: &Path) -> Result<(u64, String), MemoryError> {
    let mut file = File::open(path).map_err(|e| MemoryError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    let mut size = 0;
    loop {
        let read = file.read(&mut buffer).map_err(|e| MemoryError::io(path, e))?;
        if read == 0 {
            break;
        }
        size += read as u64;
        hasher.update(&buffer[..read]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), MemoryError> {
    let mut file = File::create(path).map_err(|e| MemoryError::io(path, e))?;
    file.write_all(bytes).map_err(|e| MemoryError::io(path, e))?;
    file.sync_all().map_err(|e| MemoryError::io(path, e))
}

fn sync_file(path: &Path) -> Result<(), MemoryError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| MemoryError::io(path, e))
}

/// Makes renames inside `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), MemoryError> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(|e| MemoryError::io(dir, e))
}

/// Where an owner's file of the current snapshot is.
#[cfg(test)]
fn owner_file(data_dir: &Path, owner: &str) -> Option<PathBuf> {
    let bytes = fs::read(data_dir.join(MANIFEST)).ok()?;
    let manifest = Manifest::parse(&bytes).ok()?;
    let entry = manifest.owners.iter().find(|e| e.owner == owner)?;
    Some(data_dir.join(SNAPSHOTS).join(&manifest.generation).join(&entry.file))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: uuid::Uuid = uuid::Uuid::from_u128(7);

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            generation: "0192aa3e-7c1d-7000-8000-000000000000".into(),
            store_id: STORE,
            embedder: "hashing-v1-8".into(),
            dimension: 8,
            watermark: 42,
            gap_ids: vec![40],
            deletions_checked_at: Utc::now(),
            created_at: Utc::now(),
            owners: vec![OwnerEntry {
                owner: "alice/../x".into(),
                file: "000000.faiss".into(),
                kind: IndexKind::Hnsw,
                bytes: 10,
                sha256: "ab".repeat(32),
                live: 3,
                tombstones: vec![7],
            }],
        }
    }

    fn round_trip(m: &Manifest) -> Result<Manifest, String> {
        Manifest::parse(&serde_json::to_vec(m).map_err(|e| e.to_string())?)
    }

    #[test]
    fn a_manifest_round_trips() {
        let m = manifest();
        assert_eq!(round_trip(&m), Ok(m.clone()));
        assert!(m.check_compatible(STORE, "hashing-v1-8", 8).is_ok());
        assert!(m.check_compatible(uuid::Uuid::from_u128(8), "hashing-v1-8", 8).is_err());
        assert!(m.check_compatible(STORE, "hashing-v1-384", 8).is_err());
        assert!(m.check_compatible(STORE, "hashing-v1-8", 9).is_err());
    }

    #[test]
    fn garbage_and_unsafe_manifests_are_rejected() {
        assert!(Manifest::parse(b"").is_err());
        assert!(Manifest::parse(b"{\"format\":1}").is_err());
        assert!(Manifest::parse(&[0xff, 0x00, 0x13]).is_err());
        let mut m = manifest();
        m.format = 2;
        assert!(round_trip(&m).is_err());
        for bad in ["../escape", "a/b", "", ".hidden"] {
            let mut m = manifest();
            m.owners[0].file = bad.into();
            assert!(round_trip(&m).is_err(), "{bad}");
            let mut m = manifest();
            m.generation = bad.into();
            assert!(round_trip(&m).is_err(), "{bad}");
        }
        let mut m = manifest();
        m.owners.push(OwnerEntry { file: "000001.faiss".into(), ..m.owners[0].clone() });
        assert!(round_trip(&m).is_err(), "owner listed twice");
        let mut m = manifest();
        m.owners[0].sha256 = "xyz".into();
        assert!(round_trip(&m).is_err());
    }

    #[test]
    fn a_data_dir_is_locked_while_open() {
        let dir = std::env::temp_dir().join(format!("memory-lock-{}", uuid::Uuid::new_v4()));
        let first = lock_data_dir(&dir).expect("first lock");
        assert!(matches!(lock_data_dir(&dir), Err(MemoryError::DataDirLocked(_))));
        drop(first);
        drop(lock_data_dir(&dir).expect("free again"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn write_then_load_and_detect_corruption() {
        let dir = std::env::temp_dir().join(format!("memory-snapshot-{}", uuid::Uuid::new_v4()));
        let params = IndexParams::default();
        let indexes = OwnerIndexes::new(4, params.clone());
        indexes.add("alice", &[1, 2], &[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]).expect("add");
        indexes.add("bob", &[3], &[0.0, 0.0, 1.0, 0.0]).expect("add");
        indexes.add("carol", &[4], &[0.0, 0.0, 0.0, 1.0]).expect("add");
        indexes.remove("carol", &[4]).expect("remove");
        let cursor = Cursor::restore(3, &[], Utc::now(), Utc::now());
        let info = write(&dir, STORE, &indexes, &cursor, "e").expect("write");
        assert_eq!((info.owners, info.vectors, info.watermark), (2, 3, 3), "carol's empty index is skipped");
        let Loaded::Ready { indexes: loaded, manifest } = load(&dir, STORE, "e", 4, &params) else {
            panic!("not loaded")
        };
        assert_eq!(manifest.watermark, 3);
        assert_eq!(loaded.search("alice", &[0.0, 1.0, 0.0, 0.0], 5).expect("search")[0].id, 2);
        assert!(matches!(load(&dir, STORE, "other", 4, &params), Loaded::Unusable(_)));
        // A second snapshot replaces the first generation.
        let second = write(&dir, STORE, &indexes, &cursor, "e").expect("write");
        let generations = fs::read_dir(dir.join(SNAPSHOTS)).expect("dir").count();
        assert_eq!((generations, current_generation(&dir)), (1, Some(second.generation)));
        // Truncate bob's file: detected before FAISS reads it.
        let bob = owner_file(&dir, "bob").expect("bob's file");
        let size = fs::metadata(&bob).expect("meta").len();
        fs::OpenOptions::new().write(true).open(&bob).and_then(|f| f.set_len(size / 2)).expect("truncate");
        match load(&dir, STORE, "e", 4, &params) {
            Loaded::Unusable(reason) => assert!(reason.contains("corrupt"), "{reason}"),
            _ => panic!("a truncated file was loaded"),
        }
        fs::remove_dir_all(&dir).expect("cleanup");
        assert!(matches!(load(&dir, STORE, "e", 4, &params), Loaded::Missing));
    }
}
