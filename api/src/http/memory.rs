//! `/memory`: a user's long-term memory. `POST /memory` stores an item, `POST
//! /memory/search` ranks the user's items by similarity to a query, `GET` and `DELETE
//! /memory/{id}` read and remove one. Every call names its user; an item of another user is
//! answered as not found, so ids don't leak.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use memory::{DEFAULT_NAMESPACE, MemoryError, MemoryItem, NewMemory, SearchQuery};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    AppState,
    access::{Named, acting_user},
    error::{ApiError, Problem},
    extract::{JsonBody, QueryParams},
    validate::{invalid, metadata, text},
};
use crate::auth::Caller;

const MAX_CONTENT_CHARS: usize = 8000;
const MAX_QUERY_CHARS: usize = 2000;
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/memory", post(create))
        .route("/memory/search", post(search))
        .route("/memory/{id}", get(read).delete(remove))
}

/// `POST /memory` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "user_id": "demo-user",
    "content": "Prefers answers as bullet points.",
    "namespace": "preferences",
    "metadata": {"source": "onboarding"}
}))]
pub struct CreateMemory {
    /// The owner (1 to 200 characters); defaults to the API key's user, and only admin keys
    /// may name another. Required when auth is disabled.
    #[serde(default)]
    user_id: Option<String>,
    /// The text to remember (1 to 8000 characters).
    content: String,
    /// 1 to 100 of `A-Z a-z 0-9 _ - . :` (default `default`).
    #[serde(default)]
    namespace: Option<String>,
    /// A JSON object (at most 16 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// `POST /memory/search` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user_id": "demo-user", "query": "how does the user like answers?", "limit": 5}))]
pub struct SearchMemory {
    /// The owner whose items are searched; defaults to the API key's user, and only admin
    /// keys may name another. Required when auth is disabled.
    #[serde(default)]
    user_id: Option<String>,
    /// The text to rank items against (1 to 2000 characters).
    query: String,
    /// How many items to return, 1 to 100 (default 10).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// Only items of this namespace.
    #[serde(default)]
    namespace: Option<String>,
    /// Items must carry each of these metadata keys with exactly this value.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Owner {
    /// The owner of the item; defaults to the API key's user (required when auth is
    /// disabled). Another user's item is answered as not found.
    user_id: Option<String>,
}

/// A memory item.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": 42,
    "user_id": "demo-user",
    "namespace": "preferences",
    "content": "Prefers answers as bullet points.",
    "metadata": {"source": "onboarding"},
    "source_task_id": null,
    "created_at": "2026-01-01T12:00:00Z"
}))]
pub struct MemoryResponse {
    id: i64,
    user_id: String,
    namespace: String,
    content: String,
    #[schema(value_type = Object)]
    metadata: Map<String, Value>,
    /// The task that produced the item, if a task did.
    source_task_id: Option<uuid::Uuid>,
    created_at: DateTime<Utc>,
    /// Similarity to the query; present in search results only.
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f32>,
}

impl MemoryResponse {
    fn new(item: MemoryItem, score: Option<f32>) -> Self {
        Self {
            id: item.id,
            user_id: item.owner,
            namespace: item.namespace,
            content: item.content,
            metadata: item.metadata,
            source_task_id: item.source_task,
            created_at: item.created_at,
            score,
        }
    }
}

/// Search results, most similar first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    items: Vec<MemoryResponse>,
}

/// Store a memory item
#[utoipa::path(
    post,
    path = "/memory",
    tag = "memory",
    request_body(content = CreateMemory, content_type = "application/json"),
    responses(
        (status = 201, description = "The stored item.", body = MemoryResponse,
            headers(("Location" = String, description = "`/memory/{id}` of the item."))),
        (status = 400, description = "The body is not JSON of the expected shape.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 256 KiB.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`user_id` names another user than the API key's.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field has a value that is not acceptable; `field` names it.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The embedder or Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateMemory>,
) -> Result<Response, ApiError> {
    let memory = NewMemory {
        owner: acting_user(&caller, body.user_id.as_deref(), Named::Body)?,
        namespace: namespace(body.namespace.as_deref())?.unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
        content: text("content", &body.content, MAX_CONTENT_CHARS)?,
        metadata: metadata(body.metadata)?.unwrap_or_default(),
        source_task: None,
    };
    let item = state.memory.store(memory).await.map_err(memory_error)?;
    let location =
        HeaderValue::from_str(&format!("/memory/{}", item.id)).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = (StatusCode::CREATED, Json(MemoryResponse::new(item, None))).into_response();
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// Search a user's memory
///
/// Ranks the user's items by similarity to the query.
#[utoipa::path(
    post,
    path = "/memory/search",
    tag = "memory",
    request_body(content = SearchMemory, content_type = "application/json"),
    responses(
        (status = 200, description = "The most similar items, each with its `score`.", body = SearchResponse),
        (status = 400, description = "The body is not JSON of the expected shape.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 256 KiB.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`user_id` names another user than the API key's.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field has a value that is not acceptable; `field` names it.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The embedder or Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn search(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<SearchMemory>,
) -> Result<Json<SearchResponse>, ApiError> {
    let limit = match body.limit {
        None => DEFAULT_LIMIT,
        Some(l) if (1..=MAX_LIMIT as i64).contains(&l) => l as usize,
        Some(_) => return Err(invalid("limit", format!("must be from 1 to {MAX_LIMIT}"))),
    };
    let query = SearchQuery {
        owner: acting_user(&caller, body.user_id.as_deref(), Named::Body)?,
        namespace: namespace(body.namespace.as_deref())?,
        text: text("query", &body.query, MAX_QUERY_CHARS)?,
        limit,
        metadata: metadata(body.metadata)?,
    };
    let found = state.memory.search(&query).await.map_err(memory_error)?;
    Ok(Json(SearchResponse { items: found.into_iter().map(|m| MemoryResponse::new(m.item, Some(m.score))).collect() }))
}

/// Get a memory item
#[utoipa::path(
    get,
    path = "/memory/{id}",
    tag = "memory",
    params(
        ("id" = i64, Path, minimum = 1, description = "The memory item id (a positive integer)."),
        Owner,
    ),
    responses(
        (status = 200, description = "The item.", body = MemoryResponse),
        (status = 400, description = "The id is not a positive integer, or `user_id` is missing.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`user_id` names another user than the API key's.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item for this user.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(owner): QueryParams<Owner>,
) -> Result<Json<MemoryResponse>, ApiError> {
    let (id, owner) = (memory_id(&id)?, acting_user(&caller, owner.user_id.as_deref(), Named::Query)?);
    let item = state.memory.get(&owner, id).await.map_err(memory_error)?.ok_or_else(|| not_found(id))?;
    Ok(Json(MemoryResponse::new(item, None)))
}

/// Delete a memory item
#[utoipa::path(
    delete,
    path = "/memory/{id}",
    tag = "memory",
    params(
        ("id" = i64, Path, minimum = 1, description = "The memory item id (a positive integer)."),
        Owner,
    ),
    responses(
        (status = 204, description = "The item was deleted."),
        (status = 400, description = "The id is not a positive integer, or `user_id` is missing.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`user_id` names another user than the API key's.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such item for this user.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(owner): QueryParams<Owner>,
) -> Result<StatusCode, ApiError> {
    let (id, owner) = (memory_id(&id)?, acting_user(&caller, owner.user_id.as_deref(), Named::Query)?);
    if state.memory.delete(&owner, id).await.map_err(memory_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(id))
    }
}

fn not_found(id: i64) -> ApiError {
    ApiError::NotFound { resource: "memory", id: id.to_string() }
}

fn memory_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::BadParameter { field: "id".into(), message: "must be a positive integer".into() })
}

fn namespace(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(ns) = raw else { return Ok(None) };
    let ok = (1..=100).contains(&ns.len())
        && ns.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if !ok {
        return Err(invalid("namespace", "must be 1 to 100 of A-Z, a-z, 0-9, _ - . :"));
    }
    Ok(Some(ns.to_owned()))
}

/// Maps the memory crate's errors to HTTP. Exhaustive on purpose.
fn memory_error(e: MemoryError) -> ApiError {
    match e {
        MemoryError::InvalidInput { field, reason } => invalid(field, reason),
        MemoryError::Backend(_) | MemoryError::EmbeddingRejected { .. } => {
            tracing::error!(error = %e, "embedder failed");
            ApiError::Unavailable { dependency: "embedder" }
        }
        MemoryError::Database(ref db) if super::error::postgres_unreachable(db) => {
            tracing::error!(error = %e, "postgres unavailable");
            ApiError::Unavailable { dependency: "postgres" }
        }
        MemoryError::InvalidDimension(_)
        | MemoryError::DimensionMismatch { .. }
        | MemoryError::EmbedderMismatch { .. }
        | MemoryError::InvalidConfig(_)
        | MemoryError::DataDirLocked(_)
        | MemoryError::Database(_)
        | MemoryError::Index(_)
        | MemoryError::Io { .. }
        | MemoryError::Internal(_) => ApiError::Internal(e.to_string()),
    }
}
