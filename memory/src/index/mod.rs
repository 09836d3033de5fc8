//! The vector index: one FAISS index per owner, keyed by `memory_items.id`, searched by inner
//! product on L2-normalised vectors (so scores are cosine similarities).
//!
//! Invariants kept by [`VectorIndex`]:
//! - every vector in FAISS is normalised and its FAISS id is a positive `memory_items.id`;
//! - an id is added at most once: `live` and `tombstones` are disjoint and together are
//!   exactly the ids FAISS holds, so catch-up and local writes can race without duplicates;
//! - a search never returns a tombstoned id (HNSW cannot remove vectors, so deleted ones stay
//!   in the graph, filtered out, until a rebuild drops them);
//! - while a rebuild runs off the lock, every change is also journaled and replayed onto the
//!   rebuilt index before it replaces the current one, so no write is lost.
//!
//! FAISS calls are synchronous and CPU bound: everything here is meant to run inside
//! `spawn_blocking`, and the `std::sync` locks of [`OwnerIndexes`] are only taken there.

mod owners;
pub mod params;

use std::collections::HashSet;
use std::path::Path;

use faiss::index::IndexImpl;
use faiss::index::autotune::ParameterSpace;
use faiss::{IdMap, Idx, Index, MetricType};

use crate::error::MemoryError;
use crate::vector::normalize;

pub use owners::{OwnerIndexes, SharedIndex, lock as lock_index};
pub use params::{DEFAULT_HNSW_THRESHOLD, IndexKind, IndexParams, Rebuild};

/// One search result from the index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The `memory_items.id`.
    pub id: i64,
    /// Inner product with the query: the cosine similarity, since both are normalised.
    pub score: f32,
}

/// What a rebuild must index: the live vectors, read back from the current index.
#[derive(Debug)]
pub struct RebuildInput {
    /// The kind to build.
    pub target: IndexKind,
    /// The live ids…
    pub ids: Vec<i64>,
    /// …and their vectors, `ids.len() * dimension` values.
    pub vectors: Vec<f32>,
}

/// A change made while a rebuild was running, replayed onto the rebuilt index.
#[derive(Debug)]
enum JournalOp {
    Add(i64, Vec<f32>),
    Remove(i64),
}

/// The vector index of one owner.
#[derive(Debug)]
pub struct VectorIndex {
    dimension: usize,
    params: IndexParams,
    kind: IndexKind,
    faiss: IdMap<IndexImpl>,
    live: HashSet<i64>,
    tombstones: HashSet<i64>,
    /// `Some` while a rebuild is in progress.
    journal: Option<Vec<JournalOp>>,
}

impl VectorIndex {
    /// An empty index of `kind`.
    pub fn new(dimension: usize, params: &IndexParams, kind: IndexKind) -> Result<Self, MemoryError> {
        let faiss = new_faiss(dimension, params, kind)?;
        Ok(Self {
            dimension,
            params: params.clone(),
            kind,
            faiss,
            live: HashSet::new(),
            tombstones: HashSet::new(),
            journal: None,
        })
    }

    /// An index of `kind` holding `ids` with `vectors` (`ids.len() * dimension` values), added
    /// in one batch so FAISS can build an HNSW graph on all cores.
    pub fn build(
        dimension: usize,
        params: &IndexParams,
        kind: IndexKind,
        ids: &[i64],
        vectors: &[f32],
    ) -> Result<Self, MemoryError> {
        let mut index = Self::new(dimension, params, kind)?;
        index.add(ids, vectors)?;
        Ok(index)
    }

    /// Like [`VectorIndex::build`], but adds in chunks and gives up (returning `None`) as soon
    /// as `cancelled` says so, so a shutdown does not wait for a long HNSW build.
    pub fn build_interruptible(
        dimension: usize,
        params: &IndexParams,
        kind: IndexKind,
        ids: &[i64],
        vectors: &[f32],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<Self>, MemoryError> {
        /// Vectors per FAISS call: large enough for HNSW's parallel insertion to pay off.
        const CHUNK: usize = 8_192;
        let mut index = Self::new(dimension, params, kind)?;
        for (chunk_ids, chunk_vectors) in ids.chunks(CHUNK).zip(vectors.chunks(CHUNK * dimension)) {
            if cancelled() {
                return Ok(None);
            }
            index.add(chunk_ids, chunk_vectors)?;
        }
        Ok(Some(index))
    }

    /// Reads an index written by [`VectorIndex::write`]; `tombstones` are the ids it holds
    /// that were deleted (recorded next to the file, since FAISS does not know about them).
    pub fn read(
        path: &Path,
        dimension: usize,
        params: &IndexParams,
        kind: IndexKind,
        tombstones: &[i64],
    ) -> Result<Self, MemoryError> {
        let path_str = utf8_path(path)?;
        let faiss = faiss::read_index(path_str)?.into_id_map()?;
        if faiss.d() as usize != dimension {
            return Err(MemoryError::DimensionMismatch { expected: dimension, actual: faiss.d() as usize });
        }
        if faiss.metric_type() != MetricType::InnerProduct {
            return Err(MemoryError::Internal(format!("index {} does not use the inner product", path.display())));
        }
        let mut live = HashSet::with_capacity(faiss.id_map().len());
        for idx in faiss.id_map() {
            live.insert(to_id(*idx)?);
        }
        let tombstones: HashSet<i64> = tombstones.iter().copied().collect();
        if !tombstones.is_subset(&live) || live.len() != faiss.ntotal() as usize {
            return Err(MemoryError::Internal(format!("index {} disagrees with its tombstones", path.display())));
        }
        live.retain(|id| !tombstones.contains(id));
        let index = Self { dimension, params: params.clone(), kind, faiss, live, tombstones, journal: None };
        apply_hnsw_params(&index.faiss, kind, params)?;
        Ok(index)
    }

    /// Writes the FAISS index to `path` (FAISS's own format; tombstones are not included).
    pub fn write(&self, path: &Path) -> Result<(), MemoryError> {
        faiss::write_index(&self.faiss, utf8_path(path)?)?;
        Ok(())
    }

    /// The vector size.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// The FAISS structure in use.
    pub fn kind(&self) -> IndexKind {
        self.kind
    }

    /// How many live (searchable) vectors the index holds.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no live vector is left.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Whether `id` is live in this index.
    pub fn contains(&self, id: i64) -> bool {
        self.live.contains(&id)
    }

    /// Whether `id` was added, live or deleted since.
    pub fn knows(&self, id: i64) -> bool {
        self.live.contains(&id) || self.tombstones.contains(&id)
    }

    /// The deleted ids FAISS still holds, sorted.
    pub fn tombstones(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.tombstones.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Adds the vectors of `ids` that this index does not know yet; returns how many were
    /// added. Vectors are normalised on the way in.
    pub fn add(&mut self, ids: &[i64], vectors: &[f32]) -> Result<usize, MemoryError> {
        if vectors.len() != ids.len() * self.dimension {
            return Err(MemoryError::DimensionMismatch { expected: ids.len() * self.dimension, actual: vectors.len() });
        }
        let mut new_ids = Vec::with_capacity(ids.len());
        let mut new_vectors = Vec::with_capacity(vectors.len());
        let mut batch = HashSet::with_capacity(ids.len());
        for (id, vector) in ids.iter().zip(vectors.chunks_exact(self.dimension)) {
            if *id <= 0 {
                return Err(MemoryError::Internal(format!("vector id {id} is not a memory_items id")));
            }
            if self.knows(*id) || !batch.insert(*id) {
                continue;
            }
            new_ids.push(Idx::new(*id as u64));
            let start = new_vectors.len();
            new_vectors.extend_from_slice(vector);
            normalize(&mut new_vectors[start..]);
        }
        if new_ids.is_empty() {
            return Ok(0);
        }
        self.faiss.add_with_ids(&new_vectors, &new_ids)?;
        if let Some(journal) = &mut self.journal {
            for (idx, vector) in new_ids.iter().zip(new_vectors.chunks_exact(self.dimension)) {
                journal.push(JournalOp::Add(idx.to_native(), vector.to_vec()));
            }
        }
        // `batch` holds exactly the ids just added: known ids were skipped before inserting.
        self.live.extend(batch);
        Ok(new_ids.len())
    }

    /// Removes `ids` from search results; returns how many were live. A flat index drops
    /// the vectors; HNSW keeps them as tombstones until the next rebuild.
    pub fn remove(&mut self, ids: &[i64]) -> Result<usize, MemoryError> {
        let doomed: Vec<i64> = ids.iter().copied().filter(|id| self.live.contains(id)).collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        match self.kind {
            IndexKind::Flat => {
                let selector = faiss::selector::IdSelector::batch(
                    &doomed.iter().map(|id| Idx::new(*id as u64)).collect::<Vec<_>>(),
                )?;
                self.faiss.remove_ids(&selector)?;
            }
            IndexKind::Hnsw => self.tombstones.extend(&doomed),
        }
        for id in &doomed {
            self.live.remove(id);
        }
        if let Some(journal) = &mut self.journal {
            journal.extend(doomed.iter().map(|id| JournalOp::Remove(*id)));
        }
        Ok(doomed.len())
    }

    /// The `k` live vectors closest to `query` (normalised here), best first. Fewer than `k`
    /// hits means the index has nothing more to give: it holds fewer live vectors, or (rarely)
    /// HNSW could not reach more of them.
    pub fn search(&mut self, query: &[f32], k: usize) -> Result<Vec<Hit>, MemoryError> {
        if query.len() != self.dimension {
            return Err(MemoryError::DimensionMismatch { expected: self.dimension, actual: query.len() });
        }
        let total = self.faiss.ntotal() as usize;
        if k == 0 || total == 0 || self.live.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = query.to_vec();
        normalize(&mut query);
        // Ask for enough extra to skip the tombstones we are likely to meet, widening when
        // they crowd the top more than expected.
        let mut fetch = (k + self.tombstones.len().min(3 * k)).min(total);
        loop {
            let result = self.faiss.search(&query, fetch)?;
            let mut hits = Vec::with_capacity(k);
            let mut returned = 0;
            for (label, score) in result.labels.iter().zip(&result.distances) {
                let Some(raw) = label.get() else { continue };
                returned += 1;
                let id = i64::try_from(raw).map_err(|_| MemoryError::Internal(format!("FAISS id {raw} overflows")))?;
                if !self.tombstones.contains(&id) {
                    hits.push(Hit { id, score: *score });
                    if hits.len() == k {
                        break;
                    }
                }
            }
            if hits.len() == k || returned < fetch || fetch == total {
                return Ok(hits);
            }
            fetch = (fetch * 4).min(total);
        }
    }

    /// The vector stored for `id`, if it is live.
    pub fn vector(&self, id: i64) -> Result<Option<Vec<f32>>, MemoryError> {
        if !self.live.contains(&id) {
            return Ok(None);
        }
        let mut vector = vec![0.0; self.dimension];
        self.faiss.reconstruct(Idx::new(id as u64), &mut vector)?;
        Ok(Some(vector))
    }

    /// Whether this index should be rebuilt (converted to HNSW, or compacted), and as what.
    pub fn rebuild_needed(&self) -> Option<Rebuild> {
        self.params.rebuild_needed(self.kind, self.live.len(), self.tombstones.len())
    }

    /// Starts a rebuild if one is needed and none is running: returns the live vectors to
    /// build from and starts journaling changes. The caller builds with
    /// [`VectorIndex::build`] without holding this index's lock, then calls
    /// [`VectorIndex::finish_rebuild`] (or [`VectorIndex::abort_rebuild`] on failure).
    pub fn begin_rebuild(&mut self) -> Result<Option<RebuildInput>, MemoryError> {
        if self.journal.is_some() {
            return Ok(None);
        }
        let Some(Rebuild { target }) = self.rebuild_needed() else { return Ok(None) };
        let mut ids: Vec<i64> = self.live.iter().copied().collect();
        ids.sort_unstable();
        let mut vectors = vec![0.0; ids.len() * self.dimension];
        for (id, out) in ids.iter().zip(vectors.chunks_exact_mut(self.dimension)) {
            self.faiss.reconstruct(Idx::new(*id as u64), out)?;
        }
        self.journal = Some(Vec::new());
        Ok(Some(RebuildInput { target, ids, vectors }))
    }

    /// Replays the changes made since [`VectorIndex::begin_rebuild`] onto `rebuilt` and puts
    /// it in place of the current index.
    pub fn finish_rebuild(&mut self, mut rebuilt: VectorIndex) -> Result<(), MemoryError> {
        let journal = self.journal.take().unwrap_or_default();
        for op in journal {
            match op {
                JournalOp::Add(id, vector) => rebuilt.add(&[id], &vector)?,
                JournalOp::Remove(id) => rebuilt.remove(&[id])?,
            };
        }
        *self = rebuilt;
        Ok(())
    }

    /// Stops journaling after a failed rebuild; the current index stays as it is.
    pub fn abort_rebuild(&mut self) {
        self.journal = None;
    }

    /// Runs a needed rebuild synchronously, holding `&mut self` throughout; returns whether
    /// one ran. For tools and tests; services rebuild off the lock through
    /// [`OwnerIndexes::rebuild`].
    pub fn rebuild_now(&mut self) -> Result<bool, MemoryError> {
        let Some(input) = self.begin_rebuild()? else { return Ok(false) };
        match VectorIndex::build(self.dimension, &self.params, input.target, &input.ids, &input.vectors) {
            Ok(rebuilt) => self.finish_rebuild(rebuilt).map(|()| true),
            Err(error) => {
                self.abort_rebuild();
                Err(error)
            }
        }
    }
}

/// Applies the configured efConstruction and efSearch to an HNSW index: a file read back
/// carries the values it was written with, and the configuration may have changed since.
fn apply_hnsw_params(faiss: &IdMap<IndexImpl>, kind: IndexKind, params: &IndexParams) -> Result<(), MemoryError> {
    if kind == IndexKind::Hnsw {
        let space = ParameterSpace::new()?;
        space.set_index_parameter(faiss, "efConstruction", params.ef_construction)?;
        space.set_index_parameter(faiss, "efSearch", params.ef_search)?;
    }
    Ok(())
}

/// A new, empty FAISS index of `kind`.
fn new_faiss(dimension: usize, params: &IndexParams, kind: IndexKind) -> Result<IdMap<IndexImpl>, MemoryError> {
    let d = u32::try_from(dimension).map_err(|_| MemoryError::InvalidDimension(dimension))?;
    let faiss = faiss::index_factory(d, kind.factory(params.hnsw_m), MetricType::InnerProduct)?.into_id_map()?;
    apply_hnsw_params(&faiss, kind, params)?;
    Ok(faiss)
}

fn to_id(idx: Idx) -> Result<i64, MemoryError> {
    idx.get()
        .and_then(|raw| i64::try_from(raw).ok())
        .ok_or_else(|| MemoryError::Internal(format!("invalid FAISS id {idx:?}")))
}

/// FAISS takes file names as C strings.
fn utf8_path(path: &Path) -> Result<&str, MemoryError> {
    path.to_str().ok_or_else(|| MemoryError::InvalidConfig(format!("path {} is not valid UTF-8", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIM: usize = 8;

    fn params(threshold: usize) -> IndexParams {
        IndexParams { hnsw_threshold: threshold, compact_min: 2, ..IndexParams::default() }
    }

    /// A unit vector pointing mostly along axis `i % DIM`, made distinct by `i`.
    fn vector(i: usize) -> Vec<f32> {
        let mut v = vec![0.01 * (i as f32 + 1.0); DIM];
        v[i % DIM] = 1.0;
        v[(i / DIM) % DIM] += 0.5;
        normalize(&mut v);
        v
    }

    fn build(kind: IndexKind, n: usize) -> VectorIndex {
        let ids: Vec<i64> = (1..=n as i64).collect();
        let vectors: Vec<f32> = (0..n).flat_map(vector).collect();
        VectorIndex::build(DIM, &params(1000), kind, &ids, &vectors).expect("build")
    }

    #[test]
    fn search_finds_the_exact_vector_first_in_both_kinds() {
        for kind in [IndexKind::Flat, IndexKind::Hnsw] {
            let mut index = build(kind, 50);
            for i in [0, 7, 49] {
                let hits = index.search(&vector(i), 3).expect("search");
                assert_eq!(hits.len(), 3);
                assert_eq!(hits[0].id, i as i64 + 1, "{kind:?}");
                assert!((hits[0].score - 1.0).abs() < 1e-4, "{kind:?}: {}", hits[0].score);
                assert!(hits[0].score >= hits[1].score && hits[1].score >= hits[2].score);
            }
        }
    }

    #[test]
    fn adding_a_known_id_is_a_no_op() {
        let mut index = build(IndexKind::Flat, 5);
        assert_eq!(index.add(&[3, 6, 6], &[vector(0), vector(1), vector(2)].concat()).expect("add"), 1);
        assert_eq!(index.len(), 6);
        let hits = index.search(&vector(0), 10).expect("search");
        let mut ids: Vec<i64> = hits.iter().map(|h| h.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn wrong_sizes_are_rejected() {
        let mut index = build(IndexKind::Flat, 2);
        assert!(matches!(index.add(&[9], &[1.0; DIM + 1]), Err(MemoryError::DimensionMismatch { .. })));
        assert!(matches!(index.search(&[1.0; 3], 1), Err(MemoryError::DimensionMismatch { .. })));
        assert!(index.add(&[0], &[1.0; DIM]).is_err());
    }

    #[test]
    fn removed_ids_never_come_back_in_either_kind() {
        for kind in [IndexKind::Flat, IndexKind::Hnsw] {
            let mut index = build(kind, 20);
            assert_eq!(index.remove(&[1, 2, 999]).expect("remove"), 2);
            assert_eq!(index.remove(&[1]).expect("remove again"), 0);
            assert_eq!(index.len(), 18);
            let hits = index.search(&vector(0), 20).expect("search");
            assert_eq!(hits.len(), 18, "{kind:?}: k results whenever k exist");
            assert!(hits.iter().all(|h| h.id != 1 && h.id != 2), "{kind:?}");
            assert_eq!(index.tombstones().len(), if kind == IndexKind::Hnsw { 2 } else { 0 });
            assert!(index.knows(1) == (kind == IndexKind::Hnsw) && !index.contains(1));
        }
    }

    #[test]
    fn search_widens_past_many_tombstones() {
        let mut index = build(IndexKind::Hnsw, 200);
        // Delete the 150 vectors closest to the query; the 50 others must still be found.
        let closest: Vec<i64> = index.search(&vector(0), 150).expect("search").iter().map(|h| h.id).collect();
        index.remove(&closest).expect("remove");
        let hits = index.search(&vector(0), 10).expect("search");
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| !closest.contains(&h.id)));
    }

    #[test]
    fn a_growing_flat_index_is_rebuilt_as_hnsw_with_its_vectors() {
        let ids: Vec<i64> = (1..=30).collect();
        let vectors: Vec<f32> = (0..30).flat_map(vector).collect();
        let mut index = VectorIndex::build(DIM, &params(20), IndexKind::Flat, &ids, &vectors).expect("build");
        assert_eq!(index.rebuild_needed(), Some(Rebuild { target: IndexKind::Hnsw }));
        assert!(index.rebuild_now().expect("rebuild"));
        assert_eq!(index.kind(), IndexKind::Hnsw);
        assert_eq!(index.len(), 30);
        assert_eq!(index.search(&vector(12), 1).expect("search")[0].id, 13);
        assert!(!index.rebuild_now().expect("nothing to do"));
    }

    #[test]
    fn changes_during_a_rebuild_are_replayed() {
        let mut index = build(IndexKind::Hnsw, 40);
        index.remove(&(1..=20).collect::<Vec<_>>()).expect("remove");
        let input = index.begin_rebuild().expect("begin").expect("compaction needed");
        assert_eq!(input.ids, (21..=40).collect::<Vec<_>>());
        assert!(index.begin_rebuild().expect("second begin").is_none(), "one rebuild at a time");
        // Meanwhile: one add and one delete.
        index.add(&[100], &vector(3)).expect("add");
        index.remove(&[21]).expect("remove");
        let rebuilt = VectorIndex::build(DIM, &params(1000), input.target, &input.ids, &input.vectors).expect("build");
        index.finish_rebuild(rebuilt).expect("finish");
        assert_eq!(index.kind(), IndexKind::Flat, "20 live vectors are below half the threshold");
        assert_eq!(index.tombstones(), Vec::<i64>::new());
        assert!(index.contains(100) && !index.knows(21) && index.len() == 20);
        let found: Vec<i64> = index.search(&vector(0), 50).expect("search").iter().map(|h| h.id).collect();
        assert_eq!(found.len(), 20);
        assert!(found.contains(&100) && !found.contains(&21));
    }

    #[test]
    fn write_and_read_round_trip_with_tombstones() {
        let dir = std::env::temp_dir().join(format!("memory-index-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("index.faiss");
        let mut index = build(IndexKind::Hnsw, 30);
        index.remove(&[5]).expect("remove");
        index.write(&path).expect("write");
        let mut read =
            VectorIndex::read(&path, DIM, &params(1000), IndexKind::Hnsw, &index.tombstones()).expect("read");
        assert_eq!(read.len(), 29);
        assert!(read.knows(5) && !read.contains(5));
        assert_eq!(read.search(&vector(9), 1).expect("search")[0].id, 10);
        assert!(read.vector(10).expect("vector").is_some() && read.vector(5).expect("vector").is_none());
        assert!(VectorIndex::read(&path, DIM + 1, &params(1000), IndexKind::Hnsw, &[]).is_err());
        assert!(VectorIndex::read(&path, DIM, &params(1000), IndexKind::Hnsw, &[12345]).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
