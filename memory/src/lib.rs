//! Agent memory: turning text into vectors (embedders) and, later, storing
//! and recalling them (long-term vector memory, short-term memory).
//!
//! Invariant: every vector this crate produces or stores is tagged with the
//! [`Embedder::name`] that made it; vectors with different names are never
//! compared.

pub mod embed;
pub mod error;
pub mod store;

pub use embed::{Embedder, HashingEmbedder};
pub use error::MemoryError;
pub use store::{DEFAULT_NAMESPACE, MemoryItem, MemoryStore, NewMemory, ScoredMemory, SearchQuery};
