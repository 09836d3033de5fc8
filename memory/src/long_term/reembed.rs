//! Recomputing stored vectors after the embedder changed (`orchestrator memory reembed`).
//!
//! Invariant: a row is rewritten with its new vector, embedder name and dimension in one
//! UPDATE, so no row ever carries a vector that disagrees with its embedder name. The scan
//! picks rows whose embedder differs from the target, in id order, so an interrupted run
//! resumes where it stopped and a repeated run does nothing.

use sqlx::PgPool;

use crate::embed::Embedder;
use crate::error::MemoryError;
use crate::long_term::rows;
use crate::vector::{check, normalize};

/// Rows embedded and written per round trip.
const BATCH: usize = 256;

/// Re-embeds every live row not made by `embedder`; returns how many were rewritten.
pub(crate) async fn reembed(pool: &PgPool, embedder: &dyn Embedder) -> Result<usize, MemoryError> {
    let (name, dimension) = (embedder.name().to_owned(), embedder.dimension());
    let (mut after, mut total) = (0, 0);
    loop {
        let batch = rows::fetch_to_reembed(pool, &name, after, BATCH).await?;
        let Some((last, _)) = batch.last() else { break };
        after = *last;
        let (ids, texts): (Vec<i64>, Vec<String>) = batch.into_iter().unzip();
        let mut vectors = embedder.embed(&texts).await?;
        if vectors.len() != texts.len() {
            return Err(MemoryError::Backend(format!(
                "embedder returned {} vectors for {} texts",
                vectors.len(),
                texts.len()
            )));
        }
        for vector in &mut vectors {
            check(vector, dimension)?;
            normalize(vector);
        }
        total += rows::update_embeddings(pool, &ids, &vectors, &name).await?;
        tracing::info!(rewritten = total, embedder = %name, "re-embedding memory items");
    }
    Ok(total)
}
