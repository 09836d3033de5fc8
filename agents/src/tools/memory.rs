//! `memory_search` and `memory_store`: the agent's access to long-term memory.
//!
//! Invariant: the owner of every read and write is [`ToolContext::owner`], the user whose
//! task the agent is running. The argument schemas have no owner field and reject unknown
//! fields, so a model cannot name another user.

use std::sync::Arc;

use ::memory::{DEFAULT_NAMESPACE, MemoryStore, NewMemory, SearchQuery};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Tool, ToolContext, ToolError};

pub const SEARCH_NAME: &str = "memory_search";
pub const STORE_NAME: &str = "memory_store";

const DEFAULT_LIMIT: usize = 5;

fn namespace_schema() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": 128, "description": "Memory namespace; all namespaces when omitted." })
}

/// Finds the task owner's memories closest in meaning to a query.
pub struct MemorySearch {
    store: Arc<dyn MemoryStore>,
}

impl MemorySearch {
    pub fn new(store: Arc<dyn MemoryStore>) -> Self {
        Self { store }
    }
}

#[derive(Deserialize)]
struct SearchArgs {
    query: String,
    limit: Option<usize>,
    namespace: Option<String>,
}

#[async_trait::async_trait]
impl Tool for MemorySearch {
    fn name(&self) -> &str {
        SEARCH_NAME
    }

    fn description(&self) -> &str {
        "Searches the user's long-term memory for items closest in meaning to the query. \
         Returns the best matches with a similarity score (higher is closer)."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "query": { "type": "string", "minLength": 1, "maxLength": 2000 },
                "limit": { "type": "integer", "minimum": 1, "maximum": 20, "default": DEFAULT_LIMIT },
                "namespace": namespace_schema()
            },
            "required": ["query"],
            "additionalProperties": false
        })
    }

    async fn call(&self, arguments: Value, ctx: &ToolContext) -> Result<Value, ToolError> {
        let args: SearchArgs =
            serde_json::from_value(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let query = SearchQuery {
            owner: ctx.owner.clone(),
            namespace: args.namespace,
            text: args.query,
            limit: args.limit.unwrap_or(DEFAULT_LIMIT),
            metadata: None,
        };
        let found =
            self.store.search(&query).await.map_err(|e| ToolError::Failed(format!("memory search failed: {e}")))?;
        let results: Vec<Value> = found
            .into_iter()
            .map(|m| json!({ "id": m.item.id, "content": m.item.content, "score": m.score, "metadata": m.item.metadata }))
            .collect();
        Ok(json!({ "results": results }))
    }
}

/// Saves a memory for the task owner, linked to the task.
pub struct MemoryStoreTool {
    store: Arc<dyn MemoryStore>,
}

impl MemoryStoreTool {
    pub fn new(store: Arc<dyn MemoryStore>) -> Self {
        Self { store }
    }
}

#[derive(Deserialize)]
struct StoreArgs {
    content: String,
    namespace: Option<String>,
    metadata: Option<Map<String, Value>>,
}

#[async_trait::async_trait]
impl Tool for MemoryStoreTool {
    fn name(&self) -> &str {
        STORE_NAME
    }

    fn description(&self) -> &str {
        "Saves a fact to the user's long-term memory so later tasks can find it with memory_search. \
         Store self-contained statements, not conversation."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "content": { "type": "string", "minLength": 1, "maxLength": 8000 },
                "namespace": namespace_schema(),
                "metadata": { "type": "object", "description": "Optional JSON object stored with the memory." }
            },
            "required": ["content"],
            "additionalProperties": false
        })
    }

    async fn call(&self, arguments: Value, ctx: &ToolContext) -> Result<Value, ToolError> {
        let args: StoreArgs =
            serde_json::from_value(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let memory = NewMemory {
            owner: ctx.owner.clone(),
            namespace: args.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            content: args.content,
            metadata: args.metadata.unwrap_or_default(),
            source_task: Some(ctx.task_id),
        };
        let item =
            self.store.store(memory).await.map_err(|e| ToolError::Failed(format!("memory store failed: {e}")))?;
        Ok(json!({ "id": item.id }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use ::memory::{MemoryError, MemoryItem, ScoredMemory};

    use super::*;
    use crate::tools::{ToolRegistry, ToolSettings};
    use crate::{ToolCall, ToolCallStatus};

    /// A brute-force, owner-scoped store: the score is the share of query words found in
    /// the content. Enough to test the tools; the real store lives in `memory`.
    #[derive(Default)]
    pub(crate) struct InMemoryStore {
        items: Mutex<Vec<MemoryItem>>,
    }

    #[async_trait::async_trait]
    impl MemoryStore for InMemoryStore {
        async fn store(&self, memory: NewMemory) -> Result<MemoryItem, MemoryError> {
            let mut items = self.items.lock().unwrap();
            let item = MemoryItem {
                id: items.len() as i64 + 1,
                owner: memory.owner,
                namespace: memory.namespace,
                content: memory.content,
                metadata: memory.metadata,
                source_task: memory.source_task,
                created_at: chrono::Utc::now(),
            };
            items.push(item.clone());
            Ok(item)
        }

        async fn search(&self, query: &SearchQuery) -> Result<Vec<ScoredMemory>, MemoryError> {
            let words: Vec<String> = query.text.to_lowercase().split_whitespace().map(str::to_owned).collect();
            let mut found: Vec<ScoredMemory> = self
                .items
                .lock()
                .unwrap()
                .iter()
                .filter(|i| i.owner == query.owner)
                .filter(|i| query.namespace.as_ref().is_none_or(|n| *n == i.namespace))
                .map(|i| {
                    let content = i.content.to_lowercase();
                    let hits = words.iter().filter(|w| content.contains(w.as_str())).count();
                    ScoredMemory { item: i.clone(), score: hits as f32 / words.len().max(1) as f32 }
                })
                .filter(|m| m.score > 0.0)
                .collect();
            found.sort_by(|a, b| b.score.total_cmp(&a.score));
            found.truncate(query.limit);
            Ok(found)
        }

        async fn get(&self, owner: &str, id: i64) -> Result<Option<MemoryItem>, MemoryError> {
            Ok(self.items.lock().unwrap().iter().find(|i| i.owner == owner && i.id == id).cloned())
        }

        async fn delete(&self, _owner: &str, _id: i64) -> Result<bool, MemoryError> {
            Ok(false)
        }
    }

    fn ctx(owner: &str) -> ToolContext {
        ToolContext { task_id: uuid::Uuid::from_u128(7), step_id: None, owner: owner.into() }
    }

    #[tokio::test]
    async fn stores_for_the_task_owner_and_finds_only_their_memories() {
        let store = Arc::new(InMemoryStore::default());
        let save = MemoryStoreTool::new(store.clone());
        let search = MemorySearch::new(store.clone());

        let saved = save
            .call(json!({ "content": "Alice prefers Postgres 17", "metadata": { "topic": "db" } }), &ctx("alice"))
            .await
            .unwrap();
        save.call(json!({ "content": "Bob prefers MySQL" }), &ctx("bob")).await.unwrap();
        let id = saved["id"].as_i64().unwrap();
        let item = store.get("alice", id).await.unwrap().unwrap();
        assert_eq!(item.namespace, DEFAULT_NAMESPACE);
        assert_eq!(item.source_task, Some(uuid::Uuid::from_u128(7)));

        let found = search.call(json!({ "query": "prefers" }), &ctx("alice")).await.unwrap();
        let results = found["results"].as_array().unwrap();
        assert_eq!(results.len(), 1, "{found}");
        assert_eq!(results[0]["content"], json!("Alice prefers Postgres 17"));
        assert_eq!(results[0]["metadata"], json!({ "topic": "db" }));
        assert_eq!(results[0]["id"], json!(id));
    }

    #[tokio::test]
    async fn search_honours_limit_and_namespace() {
        let store = Arc::new(InMemoryStore::default());
        let save = MemoryStoreTool::new(store.clone());
        for i in 0..8 {
            save.call(json!({ "content": format!("note {i}"), "namespace": "notes" }), &ctx("alice")).await.unwrap();
        }
        save.call(json!({ "content": "note elsewhere" }), &ctx("alice")).await.unwrap();
        let search = MemorySearch::new(store);
        let default_limit = search.call(json!({ "query": "note" }), &ctx("alice")).await.unwrap();
        assert_eq!(default_limit["results"].as_array().unwrap().len(), 5);
        let scoped = search.call(json!({ "query": "note", "limit": 20, "namespace": "notes" }), &ctx("alice")).await;
        assert_eq!(scoped.unwrap()["results"].as_array().unwrap().len(), 8);
    }

    #[tokio::test]
    async fn an_owner_argument_is_rejected_by_the_schema() {
        let store: Arc<dyn MemoryStore> = Arc::new(InMemoryStore::default());
        let mut registry = ToolRegistry::new(&ToolSettings::default());
        registry.register(Arc::new(MemorySearch::new(store))).unwrap();
        let call =
            ToolCall { id: "c".into(), name: SEARCH_NAME.into(), arguments: json!({ "query": "x", "owner": "bob" }) };
        let out = registry.invoke(&[SEARCH_NAME.to_owned()], &call, &ctx("alice")).await;
        assert_eq!(out.record.status, ToolCallStatus::Rejected);
        assert!(out.record.error.unwrap().contains("owner"));

        let too_many = ToolCall { arguments: json!({ "query": "x", "limit": 21 }), ..call };
        let out = registry.invoke(&[SEARCH_NAME.to_owned()], &too_many, &ctx("alice")).await;
        assert!(out.record.error.unwrap().contains("/limit"));
    }
}
