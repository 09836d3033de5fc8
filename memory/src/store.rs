//! The long-term memory interface: what agents (the `memory_search` and `memory_store`
//! tools) and the HTTP API use, whatever stores the vectors.
//!
//! Every operation is scoped to an owner: an item is never returned, found or deleted
//! through another owner's calls.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::MemoryError;

/// Namespace used when a caller names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A memory to store. The store embeds `content` itself.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMemory {
    pub owner: String,
    pub namespace: String,
    pub content: String,
    /// A JSON object.
    pub metadata: Map<String, Value>,
    /// The task whose work produced this memory, if any.
    pub source_task: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryItem {
    /// Also the vector's id in the index.
    pub id: i64,
    pub owner: String,
    pub namespace: String,
    pub content: String,
    pub metadata: Map<String, Value>,
    pub source_task: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub owner: String,
    /// `None` searches every namespace of the owner.
    pub namespace: Option<String>,
    pub text: String,
    /// How many results at most (1..=100); fewer only when fewer items match.
    pub limit: usize,
    /// Items must carry each of these metadata keys with exactly this value.
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoredMemory {
    pub item: MemoryItem,
    /// Cosine similarity to the query, higher is closer.
    pub score: f32,
}

/// Long-term memory. Implementations are shared (`Arc<dyn MemoryStore>`) by every request
/// and agent of a process, and must keep CPU-bound work (embedding, index search) off the
/// async runtime.
#[async_trait::async_trait]
pub trait MemoryStore: Send + Sync {
    async fn store(&self, memory: NewMemory) -> Result<MemoryItem, MemoryError>;
    async fn search(&self, query: &SearchQuery) -> Result<Vec<ScoredMemory>, MemoryError>;
    async fn get(&self, owner: &str, id: i64) -> Result<Option<MemoryItem>, MemoryError>;
    /// Returns false when no such live item belongs to `owner`.
    async fn delete(&self, owner: &str, id: i64) -> Result<bool, MemoryError>;
}
