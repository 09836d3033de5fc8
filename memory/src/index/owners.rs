//! The set of per-owner indexes a process holds.
//!
//! One index per owner makes owner scoping exact (a search only ever sees its owner's
//! vectors) and keeps each index small, which keeps flat scans cheap and HNSW graphs shallow.
//!
//! Locking: the map is behind a `RwLock` held only to look up or insert an entry; each index
//! is behind its own `Mutex`, held for the duration of one FAISS call. Both are `std::sync`
//! locks, so every method here blocks and must be called from `spawn_blocking`, never
//! directly on the async runtime. A lock is never held while taking another one, except the
//! map's read lock briefly before an index's lock is taken (never the reverse).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::error::MemoryError;
use crate::index::{Hit, IndexParams, VectorIndex};

/// A shared handle on one owner's index.
pub type SharedIndex = Arc<Mutex<VectorIndex>>;

/// Every owner's index, created on first write.
#[derive(Debug)]
pub struct OwnerIndexes {
    dimension: usize,
    params: IndexParams,
    owners: RwLock<HashMap<String, SharedIndex>>,
    /// Bumped on every change, so a periodic snapshot can skip an unchanged state.
    changes: AtomicU64,
}

impl OwnerIndexes {
    /// An empty set for vectors of `dimension`.
    pub fn new(dimension: usize, params: IndexParams) -> Self {
        Self { dimension, params, owners: RwLock::new(HashMap::new()), changes: AtomicU64::new(0) }
    }

    /// The vector size of every index.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// The tuning every index is built with.
    pub fn params(&self) -> &IndexParams {
        &self.params
    }

    /// A counter that grows with every change applied.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// `owner`'s index, if it has one.
    pub fn get(&self, owner: &str) -> Result<Option<SharedIndex>, MemoryError> {
        let owners = self.owners.read().map_err(|_| poisoned())?;
        Ok(owners.get(owner).cloned())
    }

    /// `owner`'s index, created empty (flat) if it has none.
    pub fn get_or_create(&self, owner: &str) -> Result<SharedIndex, MemoryError> {
        if let Some(index) = self.get(owner)? {
            return Ok(index);
        }
        let mut owners = self.owners.write().map_err(|_| poisoned())?;
        if let Some(index) = owners.get(owner) {
            return Ok(index.clone());
        }
        let kind = self.params.choose_kind(None, 0);
        let index = Arc::new(Mutex::new(VectorIndex::new(self.dimension, &self.params, kind)?));
        owners.insert(owner.to_owned(), index.clone());
        Ok(index)
    }

    /// Installs `index` as `owner`'s (at start-up, from a snapshot or a rebuild).
    pub fn insert(&self, owner: String, index: VectorIndex) -> Result<(), MemoryError> {
        if index.dimension() != self.dimension {
            return Err(MemoryError::DimensionMismatch { expected: self.dimension, actual: index.dimension() });
        }
        self.owners.write().map_err(|_| poisoned())?.insert(owner, Arc::new(Mutex::new(index)));
        self.changes.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Every owner and its index, sorted by owner.
    pub fn all(&self) -> Result<Vec<(String, SharedIndex)>, MemoryError> {
        let owners = self.owners.read().map_err(|_| poisoned())?;
        let mut all: Vec<(String, SharedIndex)> = owners.iter().map(|(o, i)| (o.clone(), i.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    /// Adds vectors to `owner`'s index; returns how many were new and whether the index now
    /// needs a rebuild (see [`OwnerIndexes::rebuild`]).
    pub fn add(&self, owner: &str, ids: &[i64], vectors: &[f32]) -> Result<(usize, bool), MemoryError> {
        let index = self.get_or_create(owner)?;
        let mut index = lock(&index)?;
        let added = index.add(ids, vectors)?;
        if added > 0 {
            self.changes.fetch_add(1, Ordering::AcqRel);
        }
        Ok((added, index.rebuild_needed().is_some()))
    }

    /// Removes ids from `owner`'s index; returns how many were live and whether the index now
    /// needs a rebuild.
    pub fn remove(&self, owner: &str, ids: &[i64]) -> Result<(usize, bool), MemoryError> {
        let Some(index) = self.get(owner)? else { return Ok((0, false)) };
        let mut index = lock(&index)?;
        let removed = index.remove(ids)?;
        if removed > 0 {
            self.changes.fetch_add(1, Ordering::AcqRel);
        }
        Ok((removed, index.rebuild_needed().is_some()))
    }

    /// The `k` nearest live vectors of `owner` (see [`VectorIndex::search`]).
    pub fn search(&self, owner: &str, query: &[f32], k: usize) -> Result<Vec<Hit>, MemoryError> {
        let Some(index) = self.get(owner)? else { return Ok(Vec::new()) };
        let mut index = lock(&index)?;
        index.search(query, k)
    }

    /// Rebuilds `owner`'s index if it needs it, holding its lock only to read the vectors out
    /// and to swap the result in, so searches and writes continue meanwhile. Returns whether
    /// a rebuild ran (false when none was needed, another is running, or `cancelled` turned
    /// true before it finished).
    pub fn rebuild(&self, owner: &str, cancelled: &dyn Fn() -> bool) -> Result<bool, MemoryError> {
        let Some(shared) = self.get(owner)? else { return Ok(false) };
        let Some(input) = lock(&shared)?.begin_rebuild()? else { return Ok(false) };
        let (params, target) = (&self.params, input.target);
        let built =
            VectorIndex::build_interruptible(self.dimension, params, target, &input.ids, &input.vectors, cancelled);
        let mut index = lock(&shared)?;
        match built {
            Ok(None) => {
                index.abort_rebuild();
                Ok(false)
            }
            Ok(Some(rebuilt)) => {
                index.finish_rebuild(rebuilt)?;
                self.changes.fetch_add(1, Ordering::AcqRel);
                Ok(true)
            }
            Err(error) => {
                index.abort_rebuild();
                Err(error)
            }
        }
    }
}

/// Locks one index; a poisoned lock means a FAISS call panicked half-way, so the index may be
/// inconsistent and is reported rather than used.
pub fn lock(index: &Mutex<VectorIndex>) -> Result<MutexGuard<'_, VectorIndex>, MemoryError> {
    index.lock().map_err(|_| poisoned())
}

fn poisoned() -> MemoryError {
    MemoryError::Internal("a vector index lock is poisoned by an earlier panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::IndexKind;

    fn unit(axis: usize) -> Vec<f32> {
        let mut v = vec![0.0; 4];
        v[axis] = 1.0;
        v
    }

    #[test]
    fn owners_are_isolated() {
        let set = OwnerIndexes::new(4, IndexParams::default());
        set.add("alice", &[1, 2], &[unit(0), unit(1)].concat()).expect("add");
        set.add("bob", &[3], &unit(0)).expect("add");
        let alice: Vec<i64> = set.search("alice", &unit(0), 10).expect("search").iter().map(|h| h.id).collect();
        assert_eq!(alice, vec![1, 2]);
        let bob: Vec<i64> = set.search("bob", &unit(0), 10).expect("search").iter().map(|h| h.id).collect();
        assert_eq!(bob, vec![3]);
        assert!(set.search("carol", &unit(0), 10).expect("search").is_empty());
        assert_eq!(set.remove("bob", &[1]).expect("remove"), (0, false), "alice's id through bob is a no-op");
        assert_eq!(set.all().expect("all").len(), 2);
    }

    #[test]
    fn rebuild_converts_past_the_threshold_and_counts_changes() {
        let params = IndexParams { hnsw_threshold: 3, ..IndexParams::default() };
        let set = OwnerIndexes::new(4, params);
        let before = set.changes();
        let (added, needs) =
            set.add("alice", &[1, 2, 3, 4], &[unit(0), unit(1), unit(2), unit(3)].concat()).expect("add");
        assert_eq!((added, needs), (4, true));
        assert!(!set.rebuild("alice", &|| true).expect("cancelled"));
        assert!(set.rebuild("alice", &|| false).expect("rebuild"));
        assert!(!set.rebuild("alice", &|| false).expect("nothing left to do"));
        let index = set.get("alice").expect("get").expect("exists");
        assert_eq!(lock(&index).expect("lock").kind(), IndexKind::Hnsw);
        assert_eq!(set.search("alice", &unit(2), 1).expect("search")[0].id, 3);
        assert!(set.changes() >= before + 2);
    }
}
