//! `/memory`: a user's long-term memory. `POST /memory` stores an item, `POST
//! /memory/search` ranks the user's items by similarity to a query, `GET` and `DELETE
//! /memory/{id}` read and remove one. Every call names its user; an item of another user is
//! answered as not found, so ids don't leak.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use memory::{DEFAULT_NAMESPACE, MemoryError, MemoryItem, NewMemory, SearchQuery};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{AppState, error::ApiError, extract::JsonBody};

const MAX_CONTENT_CHARS: usize = 8000;
const MAX_QUERY_CHARS: usize = 2000;
const MAX_METADATA_BYTES: usize = 16 * 1024;
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/memory", post(create))
        .route("/memory/search", post(search))
        .route("/memory/{id}", get(read).delete(remove))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMemory {
    user_id: String,
    content: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchMemory {
    user_id: String,
    query: String,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    namespace: Option<String>,
    /// Items must carry each of these metadata keys with exactly this value.
    #[serde(default)]
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct Owner {
    user_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MemoryResponse {
    id: i64,
    user_id: String,
    namespace: String,
    content: String,
    metadata: Map<String, Value>,
    source_task_id: Option<uuid::Uuid>,
    created_at: DateTime<Utc>,
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

#[derive(Debug, Serialize)]
pub struct SearchResponse {
    items: Vec<MemoryResponse>,
}

async fn create(State(state): State<AppState>, JsonBody(body): JsonBody<CreateMemory>) -> Result<Response, ApiError> {
    let memory = NewMemory {
        owner: user_id(&body.user_id)?,
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

async fn search(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SearchMemory>,
) -> Result<Json<SearchResponse>, ApiError> {
    let limit = match body.limit {
        None => DEFAULT_LIMIT,
        Some(l) if (1..=MAX_LIMIT as i64).contains(&l) => l as usize,
        Some(_) => return Err(invalid("limit", format!("must be from 1 to {MAX_LIMIT}"))),
    };
    let query = SearchQuery {
        owner: user_id(&body.user_id)?,
        namespace: namespace(body.namespace.as_deref())?,
        text: text("query", &body.query, MAX_QUERY_CHARS)?,
        limit,
        metadata: metadata(body.metadata)?,
    };
    let found = state.memory.search(&query).await.map_err(memory_error)?;
    Ok(Json(SearchResponse { items: found.into_iter().map(|m| MemoryResponse::new(m.item, Some(m.score))).collect() }))
}

async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(owner): Query<Owner>,
) -> Result<Json<MemoryResponse>, ApiError> {
    let (id, owner) = (memory_id(&id)?, query_user(owner)?);
    let item = state.memory.get(&owner, id).await.map_err(memory_error)?.ok_or_else(|| not_found(id))?;
    Ok(Json(MemoryResponse::new(item, None)))
}

async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(owner): Query<Owner>,
) -> Result<StatusCode, ApiError> {
    let (id, owner) = (memory_id(&id)?, query_user(owner)?);
    if state.memory.delete(&owner, id).await.map_err(memory_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(id))
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid { field: field.to_owned(), message: message.into() }
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

fn query_user(owner: Owner) -> Result<String, ApiError> {
    let raw = owner.user_id.unwrap_or_default();
    user_id(&raw).map_err(|_| ApiError::BadParameter { field: "user_id".into(), message: "is required".into() })
}

fn user_id(raw: &str) -> Result<String, ApiError> {
    let user = raw.trim();
    if user.is_empty() || user.chars().count() > 200 {
        return Err(invalid("user_id", "must be 1 to 200 characters"));
    }
    Ok(user.to_owned())
}

fn text(field: &str, raw: &str, max: usize) -> Result<String, ApiError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(invalid(field, "must not be blank"));
    }
    if text.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    if text.contains('\0') {
        return Err(invalid(field, "must not contain NUL characters"));
    }
    Ok(text.to_owned())
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

fn metadata(raw: Option<Value>) -> Result<Option<Map<String, Value>>, ApiError> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => {
            let text = Value::Object(map.clone()).to_string();
            if text.len() > MAX_METADATA_BYTES {
                return Err(invalid("metadata", format!("must be at most {MAX_METADATA_BYTES} bytes of JSON")));
            }
            if text.contains("\\u0000") {
                return Err(invalid("metadata", "must not contain NUL characters"));
            }
            Ok(Some(map))
        }
        Some(_) => Err(invalid("metadata", "must be a JSON object")),
    }
}

/// Maps the memory crate's errors to HTTP. Exhaustive on purpose.
fn memory_error(e: MemoryError) -> ApiError {
    match e {
        MemoryError::InvalidInput { field, reason } => invalid(field, reason),
        MemoryError::Backend(_) | MemoryError::EmbeddingRejected { .. } => {
            tracing::error!(error = %e, "embedder failed");
            ApiError::Unavailable { dependency: "embedder" }
        }
        MemoryError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
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
