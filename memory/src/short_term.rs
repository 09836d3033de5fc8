//! Short-term memory: the per-task message log in `task_messages`, which an agent reads back
//! as its recent context.
//!
//! Invariants: messages of a task are ordered by their id (the insertion order); the role is
//! a [`MessageRole`], mapped to the column's CHECK-constrained text here and nowhere else.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::MemoryError;

/// Most messages one `recent` call returns.
pub const MAX_RECENT: usize = 10_000;

/// Who produced a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    System,
    User,
    Assistant,
    Tool,
    /// A compressed stand-in for older messages.
    Summary,
}

impl MessageRole {
    /// Every role, in the order of the CHECK constraint.
    pub const ALL: [MessageRole; 5] =
        [MessageRole::System, MessageRole::User, MessageRole::Assistant, MessageRole::Tool, MessageRole::Summary];

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::System => "system",
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
            MessageRole::Tool => "tool",
            MessageRole::Summary => "summary",
        }
    }
}

impl fmt::Display for MessageRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageRole {
    type Err = MemoryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| MemoryError::invalid("role", format!("unknown message role {s:?}")))
    }
}

/// A message to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The step that produced it; `None` for task-level messages.
    pub step_id: Option<Uuid>,
    pub role: MessageRole,
    pub content: String,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredMessage {
    pub id: i64,
    pub task_id: Uuid,
    pub step_id: Option<Uuid>,
    pub role: MessageRole,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: i64,
    task_id: Uuid,
    step_id: Option<Uuid>,
    role: String,
    content: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<MessageRow> for StoredMessage {
    type Error = MemoryError;

    fn try_from(row: MessageRow) -> Result<Self, MemoryError> {
        let role = row
            .role
            .parse()
            .map_err(|_| MemoryError::Internal(format!("task_messages row {} has role {:?}", row.id, row.role)))?;
        Ok(StoredMessage {
            id: row.id,
            task_id: row.task_id,
            step_id: row.step_id,
            role,
            content: row.content,
            created_at: row.created_at,
        })
    }
}

/// The `task_messages` store.
#[derive(Debug, Clone)]
pub struct TaskMessages {
    pool: PgPool,
}

impl TaskMessages {
    /// A store on `pool` (migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Appends one message.
    pub async fn append(
        &self,
        task_id: Uuid,
        step_id: Option<Uuid>,
        role: MessageRole,
        content: &str,
    ) -> Result<StoredMessage, MemoryError> {
        let mut stored =
            self.append_many(task_id, &[NewMessage { step_id, role, content: content.to_owned() }]).await?;
        stored.pop().ok_or_else(|| MemoryError::Internal("INSERT returned no row".into()))
    }

    /// Appends messages in one statement, in order; returns them as stored, in order.
    pub async fn append_many(&self, task_id: Uuid, messages: &[NewMessage]) -> Result<Vec<StoredMessage>, MemoryError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        for message in messages {
            crate::validate::check_no_nul("content", &message.content)?;
        }
        let step_ids: Vec<Option<Uuid>> = messages.iter().map(|m| m.step_id).collect();
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        let contents: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
        // ORDER BY the input position makes ids follow the input order.
        let sql = "INSERT INTO task_messages (task_id, step_id, role, content)
                   SELECT $1, m.step_id, m.role, m.content
                   FROM unnest($2::uuid[], $3::text[], $4::text[]) WITH ORDINALITY AS m(step_id, role, content, position)
                   ORDER BY m.position
                   RETURNING id, task_id, step_id, role, content, created_at";
        let rows: Vec<MessageRow> = sqlx::query_as(sql)
            .bind(task_id)
            .bind(&step_ids)
            .bind(&roles)
            .bind(&contents)
            .fetch_all(&self.pool)
            .await
            .map_err(|error| match error.as_database_error().and_then(|e| e.code()).as_deref() {
                Some("23503") => MemoryError::invalid("task_id", "no such task or step"),
                _ => MemoryError::Database(error),
            })?;
        let mut stored = rows.into_iter().map(StoredMessage::try_from).collect::<Result<Vec<_>, _>>()?;
        stored.sort_by_key(|m| m.id);
        Ok(stored)
    }

    /// The last `limit` messages of the task, oldest first.
    pub async fn recent(&self, task_id: Uuid, limit: usize) -> Result<Vec<StoredMessage>, MemoryError> {
        if limit > MAX_RECENT {
            return Err(MemoryError::invalid("limit", format!("must be at most {MAX_RECENT}")));
        }
        let sql = "SELECT id, task_id, step_id, role, content, created_at FROM (
                       SELECT id, task_id, step_id, role, content, created_at FROM task_messages
                       WHERE task_id = $1 ORDER BY id DESC LIMIT $2
                   ) AS latest ORDER BY id";
        let rows: Vec<MessageRow> = sqlx::query_as(sql).bind(task_id).bind(limit as i64).fetch_all(&self.pool).await?;
        rows.into_iter().map(StoredMessage::try_from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_text() {
        for role in MessageRole::ALL {
            assert_eq!(role.as_str().parse::<MessageRole>().expect("parse"), role);
            assert_eq!(serde_json::to_value(role).expect("json"), serde_json::json!(role.as_str()));
        }
        assert!(matches!("admin".parse::<MessageRole>(), Err(MemoryError::InvalidInput { field: "role", .. })));
    }
}
