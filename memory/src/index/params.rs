//! Index tuning and the pure decisions taken from it: which FAISS structure an index of a
//! given size should use, and when an index must be rebuilt.
//!
//! The defaults come from `memory-bench` runs on a 2-core machine (see docs/memory.md): an
//! exact flat scan stays under 1 ms up to [`DEFAULT_HNSW_THRESHOLD`] vectors of 384
//! dimensions, and HNSW32 with efSearch 128 reaches recall@10 ≥ 0.95 at 100k vectors.

use serde::{Deserialize, Serialize};

use crate::error::MemoryError;

/// Live vectors beyond which an index switches from an exact flat scan to HNSW.
pub const DEFAULT_HNSW_THRESHOLD: usize = 20_000;

/// The FAISS structure behind one index. Both are wrapped in `IDMap2` so that the FAISS id is
/// the `memory_items.id` and vectors can be read back for rebuilds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// `IDMap2,Flat`, inner product: exact, supports removal, linear search cost.
    Flat,
    /// `IDMap2,HNSW<M>,Flat`, inner product: approximate, logarithmic search cost, no removal
    /// (deleted ids become tombstones until the next rebuild).
    Hnsw,
}

impl IndexKind {
    /// The FAISS index-factory description of this kind.
    pub fn factory(self, hnsw_m: u32) -> String {
        match self {
            IndexKind::Flat => "IDMap2,Flat".to_owned(),
            IndexKind::Hnsw => format!("IDMap2,HNSW{hnsw_m},Flat"),
        }
    }
}

/// Tuning of the vector indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexParams {
    /// Live vectors beyond which an index becomes HNSW; it goes back to flat only when a
    /// rebuild finds fewer than half as many, so an index near the threshold does not flap.
    pub hnsw_threshold: usize,
    /// HNSW graph degree (`M`): more links, better recall, more memory and slower inserts.
    pub hnsw_m: u32,
    /// Candidate list size while inserting into HNSW: better graphs, slower inserts.
    pub ef_construction: u32,
    /// Candidate list size while searching HNSW (raised to `k` when `k` is larger).
    pub ef_search: u32,
    /// An HNSW index is rebuilt once its tombstones exceed this fraction of its vectors…
    pub compact_fraction: f64,
    /// …and this absolute number, so small indexes are not rebuilt for every deletion.
    pub compact_min: usize,
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            hnsw_threshold: DEFAULT_HNSW_THRESHOLD,
            hnsw_m: 32,
            ef_construction: 80,
            ef_search: 128,
            compact_fraction: 0.2,
            compact_min: 256,
        }
    }
}

/// A rebuild an index needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuild {
    /// The kind the rebuilt index should have.
    pub target: IndexKind,
}

impl IndexParams {
    /// Rejects values FAISS would misbehave with.
    pub fn validate(&self) -> Result<(), MemoryError> {
        if self.hnsw_threshold == 0 {
            return Err(MemoryError::InvalidConfig("hnsw_threshold must be positive".into()));
        }
        if !(4..=128).contains(&self.hnsw_m) {
            return Err(MemoryError::InvalidConfig(format!("hnsw_m {} is outside 4..=128", self.hnsw_m)));
        }
        if self.ef_construction == 0 || self.ef_search == 0 {
            return Err(MemoryError::InvalidConfig("ef_construction and ef_search must be positive".into()));
        }
        if !(self.compact_fraction > 0.0 && self.compact_fraction <= 1.0) {
            return Err(MemoryError::InvalidConfig(format!(
                "compact_fraction {} is outside (0, 1]",
                self.compact_fraction
            )));
        }
        Ok(())
    }

    /// The kind an index holding `live` vectors should be (re)built as, given its current
    /// kind (`None` for a new index).
    pub fn choose_kind(&self, current: Option<IndexKind>, live: usize) -> IndexKind {
        match current {
            Some(IndexKind::Hnsw) if live >= self.hnsw_threshold / 2 => IndexKind::Hnsw,
            _ if live > self.hnsw_threshold => IndexKind::Hnsw,
            _ => IndexKind::Flat,
        }
    }

    /// Whether an index of `kind` with `live` vectors and `tombstones` deleted-but-present
    /// vectors should be rebuilt, and as what.
    pub fn rebuild_needed(&self, kind: IndexKind, live: usize, tombstones: usize) -> Option<Rebuild> {
        match kind {
            IndexKind::Flat if live > self.hnsw_threshold => Some(Rebuild { target: IndexKind::Hnsw }),
            IndexKind::Flat => None,
            IndexKind::Hnsw => {
                let total = live + tombstones;
                let compact = tombstones > self.compact_min && tombstones as f64 > self.compact_fraction * total as f64;
                compact.then(|| Rebuild { target: self.choose_kind(Some(kind), live) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> IndexParams {
        IndexParams { hnsw_threshold: 1000, compact_min: 10, compact_fraction: 0.2, ..IndexParams::default() }
    }

    #[test]
    fn defaults_are_valid() {
        IndexParams::default().validate().expect("valid defaults");
    }

    #[test]
    fn invalid_params_are_rejected() {
        for bad in [
            IndexParams { hnsw_threshold: 0, ..params() },
            IndexParams { hnsw_m: 2, ..params() },
            IndexParams { ef_search: 0, ..params() },
            IndexParams { compact_fraction: 0.0, ..params() },
            IndexParams { compact_fraction: f64::NAN, ..params() },
        ] {
            assert!(matches!(bad.validate(), Err(MemoryError::InvalidConfig(_))), "{bad:?}");
        }
    }

    #[test]
    fn new_indexes_are_flat_up_to_the_threshold() {
        let p = params();
        assert_eq!(p.choose_kind(None, 0), IndexKind::Flat);
        assert_eq!(p.choose_kind(None, 1000), IndexKind::Flat);
        assert_eq!(p.choose_kind(None, 1001), IndexKind::Hnsw);
    }

    #[test]
    fn hnsw_falls_back_to_flat_only_below_half_the_threshold() {
        let p = params();
        assert_eq!(p.choose_kind(Some(IndexKind::Hnsw), 600), IndexKind::Hnsw);
        assert_eq!(p.choose_kind(Some(IndexKind::Hnsw), 500), IndexKind::Hnsw);
        assert_eq!(p.choose_kind(Some(IndexKind::Hnsw), 499), IndexKind::Flat);
        assert_eq!(p.choose_kind(Some(IndexKind::Flat), 600), IndexKind::Flat);
    }

    #[test]
    fn a_growing_flat_index_converts_to_hnsw() {
        let p = params();
        assert_eq!(p.rebuild_needed(IndexKind::Flat, 1000, 0), None);
        assert_eq!(p.rebuild_needed(IndexKind::Flat, 1001, 0), Some(Rebuild { target: IndexKind::Hnsw }));
    }

    #[test]
    fn hnsw_is_compacted_when_tombstones_pile_up() {
        let p = params();
        // 20 % of 2000 is 400: not yet.
        assert_eq!(p.rebuild_needed(IndexKind::Hnsw, 1600, 400), None);
        assert_eq!(p.rebuild_needed(IndexKind::Hnsw, 1599, 401), Some(Rebuild { target: IndexKind::Hnsw }));
        // Few live vectors left: the rebuild goes back to flat.
        assert_eq!(p.rebuild_needed(IndexKind::Hnsw, 100, 1900), Some(Rebuild { target: IndexKind::Flat }));
        // The absolute minimum keeps tiny indexes from rebuilding on every deletion.
        assert_eq!(p.rebuild_needed(IndexKind::Hnsw, 5, 10), None);
    }
}
