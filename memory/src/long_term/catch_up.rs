//! Keeping the in-process indexes in step with `memory_items`, which other processes write
//! too: the full load at start-up, and the incremental catch-up that runs every
//! `catch_up_interval`.
//!
//! The cursor's invariant: every row with `id <= max_seen` that is not in `gaps` has been
//! applied (added if live, removed if deleted), and every deletion stamped before
//! `deletions_checked_at - grace` has been applied.
//!
//! Why gaps: `bigserial` ids are handed out at INSERT time but become visible at COMMIT, so a
//! row with a lower id can appear after a higher one was seen. The ids skipped over are kept
//! as gaps and asked for again on every poll until they show up or `grace` passes (the
//! transaction rolled back, or was held open longer than anyone should hold an insert).
//! Deletions are found by `deleted_at`, stamped at the deleting transaction's start, so each
//! poll looks back `grace` before the previous poll for the same reason. Applying a row or a
//! deletion twice is harmless: the index ignores known ids and absent deletions.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};

use crate::error::MemoryError;
use crate::index::{IndexParams, OwnerIndexes, VectorIndex};
use crate::long_term::rows::{self, VectorRow};
use crate::long_term::{Shared, blocking};

/// Rows per query while catching up.
const FETCH_BATCH: usize = 2_000;
/// Rows per query during a full load.
const LOAD_BATCH: usize = 10_000;
/// Gaps watched at most; beyond this (a huge rolled-back bulk insert) the oldest are dropped.
const MAX_GAPS: usize = 10_000;

/// How far the indexes have caught up with `memory_items`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cursor {
    /// The highest id applied.
    pub max_seen: i64,
    /// Ids below `max_seen` not seen yet, with the (database) time they were first missed.
    pub gaps: BTreeMap<i64, DateTime<Utc>>,
    /// Database time of the last deletion check.
    pub deletions_checked_at: DateTime<Utc>,
}

/// What one catch-up pass changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CatchUpStats {
    pub added: usize,
    pub removed: usize,
}

impl Cursor {
    /// A cursor before any row, checking deletions from `now` on.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self { max_seen: 0, gaps: BTreeMap::new(), deletions_checked_at: now }
    }

    /// A cursor restored from a snapshot: its gaps get a fresh grace period from `now`, since
    /// the process may have been down far longer than `grace`.
    pub fn restore(max_seen: i64, gap_ids: &[i64], deletions_checked_at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Self { max_seen, gaps: gap_ids.iter().map(|id| (*id, now)).collect(), deletions_checked_at }
    }

    /// The gap ids, ascending.
    pub fn gap_ids(&self) -> Vec<i64> {
        self.gaps.keys().copied().collect()
    }

    /// Records ids just read (ascending, as [`rows::fetch_new`] returns them): ids skipped
    /// over become gaps noticed at `now`, ids that were gaps are settled.
    pub fn advance(&mut self, ids: &[i64], now: DateTime<Utc>) {
        for &id in ids {
            if id > self.max_seen {
                let first_missing = (self.max_seen + 1).max(id.saturating_sub(MAX_GAPS as i64));
                for missing in first_missing..id {
                    self.gaps.insert(missing, now);
                }
                self.max_seen = id;
            } else {
                self.gaps.remove(&id);
            }
        }
        while self.gaps.len() > MAX_GAPS {
            if let Some((dropped, _)) = self.gaps.pop_first() {
                tracing::warn!(id = dropped, "too many unseen memory ids; no longer watching the oldest");
            }
        }
    }

    /// Forgets gaps first missed more than `grace` before `now`.
    pub fn expire_gaps(&mut self, now: DateTime<Utc>, grace: TimeDelta) {
        self.gaps.retain(|_, noticed| now - *noticed <= grace);
    }
}

/// Applies rows and deletions committed since the last pass.
pub(crate) async fn catch_up(shared: &Shared, cursor: &mut Cursor) -> Result<CatchUpStats, MemoryError> {
    let grace = shared.grace();
    let now = rows::db_now(&shared.pool).await?;
    cursor.expire_gaps(now, grace);
    let mut stats = CatchUpStats::default();
    loop {
        let rows = rows::fetch_new(&shared.pool, cursor.max_seen, &cursor.gap_ids(), FETCH_BATCH).await?;
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        let (added, removed) = apply_rows(shared, rows).await?;
        stats.added += added;
        stats.removed += removed;
        cursor.advance(&ids, now);
        if ids.len() < FETCH_BATCH {
            break;
        }
    }
    let deleted = rows::fetch_deleted_since(&shared.pool, cursor.deletions_checked_at - grace).await?;
    stats.removed += remove_by_owner(shared, deleted).await?;
    cursor.deletions_checked_at = now;
    Ok(stats)
}

/// Adds live rows to their owners' indexes and removes deleted ones; returns (added, removed).
async fn apply_rows(shared: &Shared, rows: Vec<VectorRow>) -> Result<(usize, usize), MemoryError> {
    let mut additions: HashMap<String, (Vec<i64>, Vec<f32>)> = HashMap::new();
    let mut deletions = Vec::new();
    let (name, dimension) = (shared.embedder.name().to_owned(), shared.indexes.dimension());
    for row in rows {
        match usable_vector(row, &name, dimension) {
            Usable::Live { id, owner, embedding } => {
                let (ids, vectors) = additions.entry(owner).or_default();
                ids.push(id);
                vectors.extend_from_slice(&embedding);
            }
            Usable::Deleted { id, owner } => deletions.push((id, owner)),
            Usable::Skipped => {}
        }
    }
    let removed = remove_by_owner(shared, deletions).await?;
    if additions.is_empty() {
        return Ok((0, removed));
    }
    let indexes = shared.indexes.clone();
    let (added, to_rebuild) = blocking(move || {
        let (mut added, mut to_rebuild) = (0, Vec::new());
        for (owner, (ids, vectors)) in additions {
            let (count, needs_rebuild) = indexes.add(&owner, &ids, &vectors)?;
            added += count;
            if needs_rebuild {
                to_rebuild.push(owner);
            }
        }
        Ok((added, to_rebuild))
    })
    .await?;
    for owner in to_rebuild {
        shared.schedule_rebuild(owner);
    }
    Ok((added, removed))
}

/// Removes `(id, owner)` pairs from the indexes; returns how many were live.
async fn remove_by_owner(shared: &Shared, deletions: Vec<(i64, String)>) -> Result<usize, MemoryError> {
    if deletions.is_empty() {
        return Ok(0);
    }
    let mut by_owner: HashMap<String, Vec<i64>> = HashMap::new();
    for (id, owner) in deletions {
        by_owner.entry(owner).or_default().push(id);
    }
    let indexes = shared.indexes.clone();
    let (removed, to_rebuild) = blocking(move || {
        let (mut removed, mut to_rebuild) = (0, Vec::new());
        for (owner, ids) in by_owner {
            let (count, needs_rebuild) = indexes.remove(&owner, &ids)?;
            removed += count;
            if needs_rebuild {
                to_rebuild.push(owner);
            }
        }
        Ok((removed, to_rebuild))
    })
    .await?;
    for owner in to_rebuild {
        shared.schedule_rebuild(owner);
    }
    Ok(removed)
}

enum Usable {
    Live { id: i64, owner: String, embedding: Vec<f32> },
    Deleted { id: i64, owner: String },
    Skipped,
}

/// Sorts a row into what the index should do with it. A live row made by another embedder
/// (a process still running the old configuration) is skipped rather than mixed in.
fn usable_vector(row: VectorRow, embedder: &str, dimension: usize) -> Usable {
    let VectorRow { id, owner, embedder: made_by, live, embedding } = row;
    if !live {
        return Usable::Deleted { id, owner };
    }
    match embedding {
        Some(embedding) if made_by == embedder && embedding.len() == dimension => Usable::Live { id, owner, embedding },
        _ => {
            tracing::warn!(id, embedder = %made_by, expected = embedder, "memory row made by another embedder; not indexed");
            Usable::Skipped
        }
    }
}

/// Builds every owner's index from `memory_items` (no usable snapshot), returning the indexes
/// and the cursor to catch up from.
pub(crate) async fn load_all(
    pool: &sqlx::PgPool,
    embedder: &str,
    dimension: usize,
    params: &IndexParams,
) -> Result<(OwnerIndexes, Cursor), MemoryError> {
    let now = rows::db_now(pool).await?;
    let mut cursor = Cursor::new(now);
    let mut per_owner: HashMap<String, (Vec<i64>, Vec<f32>)> = HashMap::new();
    loop {
        // Gaps found on the way are asked for again by the first catch-up pass.
        let rows = rows::fetch_new(pool, cursor.max_seen, &[], LOAD_BATCH).await?;
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        for row in rows {
            if let Usable::Live { id, owner, embedding } = usable_vector(row, embedder, dimension) {
                let (ids, vectors) = per_owner.entry(owner).or_default();
                ids.push(id);
                vectors.extend_from_slice(&embedding);
            }
        }
        cursor.advance(&ids, now);
        if ids.len() < LOAD_BATCH {
            break;
        }
    }
    let params = params.clone();
    let indexes = blocking(move || {
        let indexes = OwnerIndexes::new(dimension, params.clone());
        for (owner, (ids, vectors)) in per_owner {
            let kind = params.choose_kind(None, ids.len());
            indexes.insert(owner, VectorIndex::build(dimension, &params, kind, &ids, &vectors)?)?;
        }
        Ok(indexes)
    })
    .await?;
    Ok((indexes, cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    #[test]
    fn skipped_ids_become_gaps_until_seen() {
        let mut cursor = Cursor::new(t(0));
        cursor.advance(&[1, 2, 5], t(0));
        assert_eq!(cursor.max_seen, 5);
        assert_eq!(cursor.gap_ids(), vec![3, 4]);
        // Id 4 commits late; 7 arrives with 6 still in flight.
        cursor.advance(&[4, 7], t(1));
        assert_eq!(cursor.max_seen, 7);
        assert_eq!(cursor.gap_ids(), vec![3, 6]);
    }

    #[test]
    fn gaps_expire_after_the_grace_period() {
        let mut cursor = Cursor::new(t(0));
        cursor.advance(&[2], t(0));
        cursor.advance(&[5], t(8));
        assert_eq!(cursor.gap_ids(), vec![1, 3, 4]);
        cursor.expire_gaps(t(10), TimeDelta::seconds(5));
        assert_eq!(cursor.gap_ids(), vec![3, 4], "gap 1 was missed at t=0, more than 5 s ago");
        cursor.expire_gaps(t(14), TimeDelta::seconds(5));
        assert!(cursor.gaps.is_empty());
    }

    #[test]
    fn restored_gaps_get_a_fresh_grace_period() {
        let cursor = Cursor::restore(10, &[4, 8], t(-3600), t(0));
        assert_eq!(cursor.max_seen, 10);
        assert_eq!(cursor.gaps.get(&4), Some(&t(0)));
        assert_eq!(cursor.deletions_checked_at, t(-3600));
    }

    #[test]
    fn a_huge_jump_watches_only_the_newest_ids() {
        let mut cursor = Cursor::new(t(0));
        cursor.advance(&[1, 1 + 3 * MAX_GAPS as i64], t(0));
        assert_eq!(cursor.gaps.len(), MAX_GAPS);
        assert_eq!(cursor.gap_ids().first().copied(), Some(1 + 2 * MAX_GAPS as i64));
    }

    #[test]
    fn rows_are_sorted_into_add_remove_or_skip() {
        let row = |live, embedder: &str, len| VectorRow {
            id: 9,
            owner: "o".into(),
            embedder: embedder.into(),
            live,
            embedding: live.then(|| vec![0.5; len]),
        };
        assert!(matches!(usable_vector(row(true, "e", 4), "e", 4), Usable::Live { id: 9, .. }));
        assert!(matches!(usable_vector(row(false, "e", 4), "e", 4), Usable::Deleted { id: 9, .. }));
        assert!(matches!(usable_vector(row(true, "other", 4), "e", 4), Usable::Skipped));
        assert!(matches!(usable_vector(row(true, "e", 3), "e", 4), Usable::Skipped));
    }
}
