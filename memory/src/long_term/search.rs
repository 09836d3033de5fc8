//! The search path: the owner's index proposes candidates, Postgres decides which of them
//! may be returned.
//!
//! Guarantee: a search returns `limit` results whenever `limit` live items of the owner match
//! the filter. The index is asked for `limit` candidates (4× that with a namespace or metadata
//! filter), and the request widens 4× at a time while Postgres rejects too many of them,
//! up to [`MAX_INDEX_FETCH`]. If that still leaves fewer than `limit` (the filter matches a
//! small minority, rows not caught up yet, or an HNSW miss), the remaining matching rows are
//! read from Postgres with their embeddings and scored exactly. That fallback is cheap exactly
//! when it is needed: few rows match.

use std::collections::{HashMap, HashSet};

use crate::error::MemoryError;
use crate::index::Hit;
use crate::long_term::rows::{self, Filter};
use crate::long_term::{Shared, blocking};
use crate::store::{ScoredMemory, SearchQuery};
use crate::validate::{check_metadata, check_name, check_text};
use crate::vector::dot;

/// Most results one search may ask for.
pub const MAX_LIMIT: usize = 100;
/// Growth of the candidate request between rounds.
const WIDEN_FACTOR: usize = 4;
/// Most candidates asked of the index before falling back to exact scoring.
const MAX_INDEX_FETCH: usize = 1_024;
/// Most rows the exact fallback reads.
const FALLBACK_LIMIT: usize = 10_000;
/// Fallback candidates beyond which scoring moves off the async runtime.
const BLOCKING_SCORING: usize = 2_000;

/// Runs `query` against `shared`'s indexes and Postgres.
pub(crate) async fn search(shared: &Shared, query: &SearchQuery) -> Result<Vec<ScoredMemory>, MemoryError> {
    validate(query)?;
    let vector = shared.embed_one(&query.text).await?;
    let filter = Filter { namespace: query.namespace.as_deref(), metadata: query.metadata.as_ref() };
    let k = query.limit;
    let max_fetch = MAX_INDEX_FETCH.max(k);
    let mut fetch = if filter.is_restrictive() { k * WIDEN_FACTOR } else { k };
    let mut seen: HashSet<i64> = HashSet::new();
    let mut results: Vec<ScoredMemory> = Vec::with_capacity(k);
    loop {
        let hits = index_search(shared, &query.owner, &vector, fetch).await?;
        let exhausted = hits.len() < fetch;
        let fresh: HashMap<i64, f32> = hits.iter().filter(|h| seen.insert(h.id)).map(|h| (h.id, h.score)).collect();
        let ids: Vec<i64> = fresh.keys().copied().collect();
        for item in rows::fetch_by_ids(&shared.pool, &ids, &query.owner, &filter).await? {
            if let Some(score) = fresh.get(&item.id) {
                results.push(ScoredMemory { score: *score, item });
            }
        }
        if results.len() >= k || exhausted || fetch >= max_fetch {
            break;
        }
        fetch = (fetch * WIDEN_FACTOR).min(max_fetch);
    }
    if results.len() < k {
        let exclude: Vec<i64> = seen.into_iter().collect();
        let candidates = rows::fetch_candidates(
            &shared.pool,
            &query.owner,
            &filter,
            &exclude,
            shared.embedder.name(),
            FALLBACK_LIMIT,
        )
        .await?;
        if candidates.len() == FALLBACK_LIMIT {
            tracing::warn!(owner = %query.owner, "memory search fallback hit its row limit; results may be incomplete");
        }
        results.extend(score_exactly(vector, candidates).await?);
    }
    results.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.id.cmp(&b.item.id)));
    results.truncate(k);
    Ok(results)
}

async fn index_search(shared: &Shared, owner: &str, vector: &[f32], k: usize) -> Result<Vec<Hit>, MemoryError> {
    let (indexes, owner, vector) = (shared.indexes.clone(), owner.to_owned(), vector.to_vec());
    blocking(move || indexes.search(&owner, &vector, k)).await
}

/// Scores rows read from Postgres against the (normalised) query; stored embeddings are
/// normalised on the way in, so the dot product is the cosine, as in the index.
async fn score_exactly(
    query: Vec<f32>,
    candidates: Vec<(crate::MemoryItem, Vec<f32>)>,
) -> Result<Vec<ScoredMemory>, MemoryError> {
    let score = move |candidates: Vec<(crate::MemoryItem, Vec<f32>)>| {
        candidates
            .into_iter()
            .filter(|(_, embedding)| embedding.len() == query.len())
            .map(|(item, embedding)| ScoredMemory { score: dot(&query, &embedding), item })
            .collect::<Vec<_>>()
    };
    if candidates.len() > BLOCKING_SCORING {
        blocking(move || Ok(score(candidates))).await
    } else {
        Ok(score(candidates))
    }
}

fn validate(query: &SearchQuery) -> Result<(), MemoryError> {
    check_name("owner", &query.owner)?;
    if let Some(namespace) = &query.namespace {
        check_name("namespace", namespace)?;
    }
    if !(1..=MAX_LIMIT).contains(&query.limit) {
        return Err(MemoryError::invalid("limit", format!("must be between 1 and {MAX_LIMIT}, got {}", query.limit)));
    }
    check_text("text", &query.text)?;
    if let Some(metadata) = &query.metadata {
        check_metadata("metadata", metadata)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> SearchQuery {
        SearchQuery { owner: "alice".into(), namespace: None, text: "hello".into(), limit: 10, metadata: None }
    }

    #[test]
    fn queries_are_validated() {
        assert!(validate(&query()).is_ok());
        let field = |q: SearchQuery| match validate(&q) {
            Err(MemoryError::InvalidInput { field, .. }) => field,
            other => panic!("accepted: {other:?}"),
        };
        assert_eq!(field(SearchQuery { limit: 0, ..query() }), "limit");
        assert_eq!(field(SearchQuery { limit: 101, ..query() }), "limit");
        assert_eq!(field(SearchQuery { owner: String::new(), ..query() }), "owner");
        assert_eq!(field(SearchQuery { namespace: Some(" ".into()), ..query() }), "namespace");
        assert_eq!(field(SearchQuery { text: "  ".into(), ..query() }), "text");
        assert!(validate(&SearchQuery { limit: 100, ..query() }).is_ok());
    }
}
