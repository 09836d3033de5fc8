//! The SQL of `memory_items`: this module is the only place that reads or writes the table.
//!
//! Every query that returns content to a caller is scoped by `owner` and `deleted_at IS NULL`
//! in SQL, so a stale vector in some process's index can never surface a deleted or foreign
//! row.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::MemoryError;
use crate::store::{MemoryItem, NewMemory};

#[derive(sqlx::FromRow)]
struct ItemRow {
    id: i64,
    owner: String,
    namespace: String,
    content: String,
    metadata: Json<Map<String, Value>>,
    source_task_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

impl From<ItemRow> for MemoryItem {
    fn from(row: ItemRow) -> Self {
        MemoryItem {
            id: row.id,
            owner: row.owner,
            namespace: row.namespace,
            content: row.content,
            metadata: row.metadata.0,
            source_task: row.source_task_id,
            created_at: row.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct CandidateRow {
    #[sqlx(flatten)]
    item: ItemRow,
    embedding: Vec<f32>,
}

/// What a search is restricted to, besides its owner.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filter<'a> {
    pub namespace: Option<&'a str>,
    pub metadata: Option<&'a Map<String, Value>>,
}

impl Filter<'_> {
    /// Whether anything beyond the owner restricts the search.
    pub fn is_restrictive(&self) -> bool {
        self.namespace.is_some() || self.metadata.is_some_and(|m| !m.is_empty())
    }

    /// The exact check: `@>` in SQL also lets arrays and objects match by containment, but a
    /// filter value must equal the item's value.
    pub fn matches(&self, item: &MemoryItem) -> bool {
        self.namespace.is_none_or(|ns| ns == item.namespace)
            && self.metadata.is_none_or(|wanted| wanted.iter().all(|(k, v)| item.metadata.get(k) == Some(v)))
    }

    fn metadata_json(&self) -> Option<Json<&Map<String, Value>>> {
        self.metadata.filter(|m| !m.is_empty()).map(Json)
    }
}

/// A row as the index needs it: catch-up and rebuilds read these.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct VectorRow {
    pub id: i64,
    pub owner: String,
    pub embedder: String,
    /// False once deleted; then `embedding` is not read.
    pub live: bool,
    pub embedding: Option<Vec<f32>>,
}

/// Postgres's clock, which stamps `created_at` and `deleted_at`.
pub(crate) async fn db_now(pool: &PgPool) -> Result<DateTime<Utc>, MemoryError> {
    Ok(sqlx::query_scalar("SELECT now()").fetch_one(pool).await?)
}

/// The identity of this database's memory store (migration 20261121000002): snapshots record
/// it, so one taken against another database is never loaded.
pub(crate) async fn store_id(pool: &PgPool) -> Result<Uuid, MemoryError> {
    Ok(sqlx::query_scalar("SELECT store_id FROM memory_store").fetch_one(pool).await?)
}

/// The highest id ever committed (0 for an empty table).
pub(crate) async fn max_id(pool: &PgPool) -> Result<i64, MemoryError> {
    Ok(sqlx::query_scalar("SELECT COALESCE(max(id), 0)::bigint FROM memory_items").fetch_one(pool).await?)
}

/// An embedder name, other than `configured`, that made a live row's vector.
pub(crate) async fn foreign_embedder(pool: &PgPool, configured: &str) -> Result<Option<String>, MemoryError> {
    let sql = "SELECT embedder FROM memory_items WHERE deleted_at IS NULL AND embedder <> $1 LIMIT 1";
    Ok(sqlx::query_scalar(sql).bind(configured).fetch_optional(pool).await?)
}

/// Inserts a memory with its (normalised) embedding.
pub(crate) async fn insert(
    pool: &PgPool,
    memory: &NewMemory,
    embedding: &[f32],
    embedder: &str,
) -> Result<MemoryItem, MemoryError> {
    let sql =
        "INSERT INTO memory_items (owner, namespace, content, metadata, embedding, embedder, dimension, source_task_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               RETURNING id, owner, namespace, content, metadata, source_task_id, created_at";
    let dimension = i32::try_from(embedding.len()).map_err(|_| MemoryError::InvalidDimension(embedding.len()))?;
    let row: ItemRow = sqlx::query_as(sql)
        .bind(&memory.owner)
        .bind(&memory.namespace)
        .bind(&memory.content)
        .bind(Json(&memory.metadata))
        .bind(embedding)
        .bind(embedder)
        .bind(dimension)
        .bind(memory.source_task)
        .fetch_one(pool)
        .await
        .map_err(|error| match error.as_database_error().and_then(|e| e.code()).as_deref() {
            // The only foreign key: the task does not exist.
            Some("23503") => MemoryError::invalid("source_task", "no such task"),
            _ => MemoryError::Database(error),
        })?;
    Ok(row.into())
}

/// The live item `id` of `owner`.
pub(crate) async fn get(pool: &PgPool, owner: &str, id: i64) -> Result<Option<MemoryItem>, MemoryError> {
    let sql = "SELECT id, owner, namespace, content, metadata, source_task_id, created_at
               FROM memory_items WHERE id = $1 AND owner = $2 AND deleted_at IS NULL";
    let row: Option<ItemRow> = sqlx::query_as(sql).bind(id).bind(owner).fetch_optional(pool).await?;
    Ok(row.map(Into::into))
}

/// Marks the live item `id` of `owner` deleted; false when there is none.
pub(crate) async fn soft_delete(pool: &PgPool, owner: &str, id: i64) -> Result<bool, MemoryError> {
    let sql = "UPDATE memory_items SET deleted_at = now() WHERE id = $1 AND owner = $2 AND deleted_at IS NULL";
    Ok(sqlx::query(sql).bind(id).bind(owner).execute(pool).await?.rows_affected() == 1)
}

/// Reads each candidate by primary key, in a subquery the planner cannot flatten: with
/// `id = ANY($1) AND owner = $2` it scanned every memory of the owner through the owner index
/// and filtered by id, so a search cost O(the owner's memories) (1.8 ms at 2 000, on every
/// step of a user who keeps task results).
const FETCH_BY_IDS: &str = "SELECT m.id, m.owner, m.namespace, m.content, m.metadata, m.source_task_id, m.created_at
    FROM unnest($1::bigint[]) AS k(id)
    CROSS JOIN LATERAL (SELECT id, owner, namespace, content, metadata, source_task_id, created_at, deleted_at
                        FROM memory_items WHERE id = k.id LIMIT 1) m
    WHERE m.owner = $2 AND m.deleted_at IS NULL
      AND ($3::text IS NULL OR m.namespace = $3)
      AND ($4::jsonb IS NULL OR m.metadata @> $4)";

/// The live items among `ids` that belong to `owner` and pass `filter`.
pub(crate) async fn fetch_by_ids(
    pool: &PgPool,
    ids: &[i64],
    owner: &str,
    filter: &Filter<'_>,
) -> Result<Vec<MemoryItem>, MemoryError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<ItemRow> = sqlx::query_as(FETCH_BY_IDS)
        .bind(ids)
        .bind(owner)
        .bind(filter.namespace)
        .bind(filter.metadata_json())
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(MemoryItem::from).filter(|item| filter.matches(item)).collect())
}

/// Up to `limit` live items of `owner` passing `filter`, with their embeddings, leaving out
/// `exclude`: the exact fallback of a search, straight from the source of truth.
pub(crate) async fn fetch_candidates(
    pool: &PgPool,
    owner: &str,
    filter: &Filter<'_>,
    exclude: &[i64],
    embedder: &str,
    limit: usize,
) -> Result<Vec<(MemoryItem, Vec<f32>)>, MemoryError> {
    let sql = "SELECT id, owner, namespace, content, metadata, source_task_id, created_at, embedding
               FROM memory_items
               WHERE owner = $1 AND deleted_at IS NULL AND embedder = $2
                 AND ($3::text IS NULL OR namespace = $3)
                 AND ($4::jsonb IS NULL OR metadata @> $4)
                 AND id <> ALL($5)
               LIMIT $6";
    let rows: Vec<CandidateRow> = sqlx::query_as(sql)
        .bind(owner)
        .bind(embedder)
        .bind(filter.namespace)
        .bind(filter.metadata_json())
        .bind(exclude)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (MemoryItem::from(row.item), row.embedding))
        .filter(|(item, _)| filter.matches(item))
        .collect())
}

/// Rows with an id above `after` or in `gaps`, in id order, deleted ones included (without
/// their embedding) so the caller can tell a deleted id from one not yet committed.
pub(crate) async fn fetch_new(
    pool: &PgPool,
    after: i64,
    gaps: &[i64],
    limit: usize,
) -> Result<Vec<VectorRow>, MemoryError> {
    let sql = "SELECT id, owner, embedder, deleted_at IS NULL AS live,
                      CASE WHEN deleted_at IS NULL THEN embedding END AS embedding
               FROM memory_items
               WHERE id > $1 OR id = ANY($2)
               ORDER BY id
               LIMIT $3";
    Ok(sqlx::query_as(sql)
        .bind(after)
        .bind(gaps)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?)
}

/// `(id, owner)` of the rows deleted at or after `since`.
pub(crate) async fn fetch_deleted_since(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<(i64, String)>, MemoryError> {
    let sql = "SELECT id, owner FROM memory_items WHERE deleted_at >= $1";
    Ok(sqlx::query_as(sql).bind(since).fetch_all(pool).await?)
}

/// Live rows whose vector was not made by `embedder`, after `after`, in id order.
pub(crate) async fn fetch_to_reembed(
    pool: &PgPool,
    embedder: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, String)>, MemoryError> {
    let sql = "SELECT id, content FROM memory_items
               WHERE deleted_at IS NULL AND embedder <> $1 AND id > $2
               ORDER BY id LIMIT $3";
    Ok(sqlx::query_as(sql)
        .bind(embedder)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?)
}

/// Replaces the vectors of `ids` in one transaction; returns how many rows changed.
pub(crate) async fn update_embeddings(
    pool: &PgPool,
    ids: &[i64],
    vectors: &[Vec<f32>],
    embedder: &str,
) -> Result<usize, MemoryError> {
    let sql = "UPDATE memory_items SET embedding = $1, embedder = $2, dimension = $3
               WHERE id = $4 AND deleted_at IS NULL";
    let mut tx = pool.begin().await?;
    let mut updated = 0;
    for (id, vector) in ids.iter().zip(vectors) {
        let dimension = i32::try_from(vector.len()).map_err(|_| MemoryError::InvalidDimension(vector.len()))?;
        let result = sqlx::query(sql).bind(vector).bind(embedder).bind(dimension).bind(id).execute(&mut *tx).await?;
        updated += result.rows_affected() as usize;
    }
    tx.commit().await?;
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f<'a>(namespace: Option<&'a str>, metadata: Option<&'a Map<String, Value>>) -> Filter<'a> {
        Filter { namespace, metadata }
    }

    #[test]
    fn filter_matching_is_exact() {
        let item = MemoryItem {
            id: 1,
            owner: "o".into(),
            namespace: "notes".into(),
            content: "c".into(),
            metadata: serde_json::json!({"lang": "en", "tags": ["a", "b"]}).as_object().cloned().unwrap_or_default(),
            source_task: None,
            created_at: Utc::now(),
        };
        let meta = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
        let lang_en = meta(serde_json::json!({"lang": "en"}));
        let tag_a = meta(serde_json::json!({"tags": ["a"]}));
        let tags_ab = meta(serde_json::json!({"tags": ["a", "b"]}));
        let empty = Map::new();
        assert!(f(None, None).matches(&item) && !f(None, None).is_restrictive());
        assert!(f(Some("notes"), Some(&lang_en)).matches(&item));
        assert!(!f(Some("other"), None).matches(&item));
        assert!(!f(None, Some(&tag_a)).matches(&item), "containment is not equality");
        assert!(f(None, Some(&tags_ab)).matches(&item));
        assert!(f(None, Some(&empty)).matches(&item) && !f(None, Some(&empty)).is_restrictive());
    }

    /// The owner with thousands of memories is where the old statement read them all.
    #[tokio::test]
    async fn candidates_are_read_by_primary_key_however_many_memories_their_owner_has() {
        use sqlx::{Connection, PgConnection, postgres::PgPoolOptions};
        let admin =
            std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("orch_test_mem_rows_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin).await.expect("admin connection");
        let create = format!("CREATE DATABASE \"{name}\"");
        sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut conn).await.expect("create the database");
        let mut url = url::Url::parse(&admin).expect("a URL");
        url.set_path(&format!("/{name}"));
        let pool = PgPoolOptions::new().max_connections(1).connect(url.as_str()).await.expect("connect");
        sqlx::migrate!("../migrations").run(&pool).await.expect("migrations");
        sqlx::query(
            "INSERT INTO memory_items (owner, content, embedding, embedder, dimension)
             SELECT CASE WHEN g % 100 = 0 THEN 'other' ELSE 'many' END, 'memory ' || g, '{1}', 'hashing', 1
             FROM generate_series(1, 5000) g",
        )
        .execute(&pool)
        .await
        .expect("memories");
        sqlx::query("ANALYZE memory_items").execute(&pool).await.expect("analyze");

        let explain = format!("EXPLAIN (FORMAT JSON) {FETCH_BY_IDS}");
        let plan: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
            .bind(vec![5_i64, 900, 1500])
            .bind("many")
            .bind(None::<String>)
            .bind(None::<serde_json::Value>)
            .fetch_one(&pool)
            .await
            .expect("a plan");
        let items = fetch_by_ids(&pool, &[5, 100, 1501, 6000], "many", &f(None, None)).await.expect("a fetch");
        pool.close().await;
        let drop = format!("DROP DATABASE \"{name}\" WITH (FORCE)");
        sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await.expect("drop the database");

        let plan = plan.to_string();
        assert!(plan.contains("memory_items_pkey"), "{plan}");
        assert!(!plan.contains("memory_items_owner"), "a fetch by ids scans the owner's memories: {plan}");
        let mut ids: Vec<i64> = items.iter().map(|i| i.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [5, 1501], "the owner's live items only (100 is another's, 6000 does not exist)");
    }
}
