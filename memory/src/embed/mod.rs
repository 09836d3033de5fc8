//! Embedders: turn texts into fixed-size vectors whose cosine similarity
//! reflects text similarity.
//!
//! Invariant: an embedder's [`Embedder::name`] fully determines its vector
//! space; two embedders with the same name must produce comparable vectors of
//! [`Embedder::dimension`] elements.

pub mod hashing;
pub mod openai;

pub use hashing::HashingEmbedder;
pub use openai::{OpenAiEmbedder, OpenAiEmbedderConfig};

use crate::error::MemoryError;

/// Turns text into vectors.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// Stable name stored with every vector, e.g. "hashing-v1-384"; a different name means incompatible vectors.
    fn name(&self) -> &str;

    /// Number of elements in every vector this embedder returns.
    fn dimension(&self) -> usize;

    /// Embeds each text; the result has one vector per input, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError>;
}
