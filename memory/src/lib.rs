//! Agent memory: turning text into vectors (embedders), and storing and recalling them
//! (long-term vector memory on FAISS with its metadata in Postgres). The per-task message
//! log (short-term memory) belongs to the task store in `api`, which writes it with a
//! step's completion.
//!
//! Invariant: every vector this crate produces or stores is tagged with the
//! [`Embedder::name`] that made it; vectors with different names are never
//! compared.

pub mod dimension;
pub mod embed;
pub mod error;
pub mod index;
pub mod long_term;
pub mod store;
mod validate;
pub mod vector;

pub use embed::{Embedder, HashingEmbedder, OpenAiEmbedder, OpenAiEmbedderConfig};
pub use error::{MemoryError, REEMBED_COMMAND};
pub use long_term::{LongTermConfig, LongTermMemory, SnapshotInfo, StartupReport, StartupSource};
pub use store::{DEFAULT_NAMESPACE, MemoryItem, MemoryStore, NewMemory, ScoredMemory, SearchQuery};
