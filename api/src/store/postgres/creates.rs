//! Task submissions. Concurrent `POST /tasks` without an idempotency key share one
//! multi-row insert ([`super::batch`]); a keyed one is written alone, since it may meet an
//! earlier task of the same key (a replay, or a conflicting reuse).

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    batch::BatchOp,
    rows::{TaskRow, task_columns},
};
use crate::store::{CreateOutcome, NewTask, StoreError, Task};

/// The task and its first event (and its context messages), written together or not at all;
/// with an idempotency key, the earlier task of the same key when there is one.
pub(super) async fn create_one(pool: &PgPool, new: &NewTask) -> Result<CreateOutcome, StoreError> {
    // One statement: the task and its first event are written together or not at all.
    const SQL: &str = concat!(
        "WITH t AS (
            INSERT INTO tasks (id, user_id, description, metadata, priority, max_cost_usd, max_tokens,
                               idempotency_key, request_hash, max_attempts, use_plan_cache, callback_url,
                               agent_hints, task_type, task_hash, warm_start, require_approval, replan, max_replans,
                               start_mode, parent_task_id, thread_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23,
                    $24)
            ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING *
         ), e AS (
            INSERT INTO task_events (task_id, kind, data)
            SELECT id, ",
        event_kind!(TaskCreated),
        ", jsonb_build_object('status', status) FROM t
         ), m AS (
            INSERT INTO task_messages (task_id, role, content)
            SELECT t.id, x.role, x.content
            FROM t, unnest($12::text[], $13::text[]) WITH ORDINALITY AS x(role, content, n)
            ORDER BY x.n
         )
         SELECT ",
        task_columns!(),
        " FROM t"
    );
    let created: Option<TaskRow> = sqlx::query_as(SQL)
        .bind(new.id.0)
        .bind(&new.user_id)
        .bind(&new.description)
        .bind(&new.metadata)
        .bind(new.priority.as_str())
        .bind(new.max_cost_usd)
        .bind(new.max_tokens)
        .bind(&new.idempotency_key)
        .bind(&new.request_hash)
        .bind(new.max_attempts)
        .bind(new.use_plan_cache)
        .bind(new.context.iter().map(|(role, _)| role.as_str()).collect::<Vec<_>>())
        .bind(new.context.iter().map(|(_, content)| content.as_str()).collect::<Vec<_>>())
        .bind(&new.callback_url)
        .bind(&new.agent_hints)
        .bind(&new.task_type)
        .bind(&new.task_hash)
        .bind(new.warm_start)
        .bind(&new.require_approval)
        .bind(new.replan)
        .bind(new.max_replans)
        .bind(new.start.as_str())
        .bind(new.follows.map(|f| f.parent.0))
        .bind(new.follows.map(|f| f.thread.0))
        .fetch_optional(pool)
        .await?;
    // No wake-up: nobody can follow a task before this answer gives out its id, and a
    // stream reads what is there when it opens.
    if let Some(row) = created {
        return Ok(CreateOutcome::Created(row.try_into()?));
    }

    // Only an idempotency conflict makes the insert return nothing.
    const EXISTING: &str =
        concat!("SELECT ", task_columns!(), ", request_hash FROM tasks WHERE user_id = $1 AND idempotency_key = $2");
    let existing: Option<TaskRowWithHash> =
        sqlx::query_as(EXISTING).bind(&new.user_id).bind(&new.idempotency_key).fetch_optional(pool).await?;
    let existing = existing.ok_or_else(|| {
        StoreError::Corrupt("task insert returned nothing and no task holds its idempotency key".into())
    })?;
    let task: Task = existing.task.try_into()?;
    if existing.request_hash.as_deref() == Some(new.request_hash.as_str()) {
        Ok(CreateOutcome::Replayed(task))
    } else {
        Ok(CreateOutcome::KeyConflict(task.id))
    }
}

/// Creates tasks without an idempotency key. No wake-up: nobody can follow a task before the
/// answer gives out its id, and a stream reads what is there when it opens.
pub(super) struct CreateTasks;

#[async_trait::async_trait]
impl BatchOp for CreateTasks {
    type Item = NewTask;
    /// A task whose row cannot be read back after the statement committed fails alone: the
    /// batch must not fail then, or its tasks would be inserted again.
    type Output = Result<CreateOutcome, StoreError>;

    async fn one(&self, pool: &PgPool, new: &NewTask) -> Result<Self::Output, StoreError> {
        Ok(create_one(pool, new).await)
    }

    /// One statement for all: the tasks, their `task_created` events and their context
    /// messages (in order, per task). Without keys nothing can conflict, so every task is
    /// created or, should the statement fail, none is.
    async fn many(&self, pool: &PgPool, items: &[NewTask]) -> Result<Vec<Self::Output>, StoreError> {
        const SQL: &str = concat!(
            "WITH j AS (
                SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::float8[],
                                     $7::int8[], $8::text[], $9::int4[], $10::bool[], $11::text[], $12::jsonb[],
                                     $13::jsonb[], $14::text[], $15::text[], $16::bool[], $17::jsonb[], $18::bool[],
                                     $19::int4[], $20::text[], $21::uuid[], $22::uuid[])
                    AS j(id, user_id, description, metadata, priority, max_cost_usd, max_tokens, request_hash,
                         max_attempts, use_plan_cache, callback_url, agent_hints, context, task_type, task_hash,
                         warm_start, require_approval, replan, max_replans, start_mode, parent_task_id, thread_id)
             ), t AS (
                INSERT INTO tasks (id, user_id, description, metadata, priority, max_cost_usd, max_tokens,
                                   request_hash, max_attempts, use_plan_cache, callback_url, agent_hints,
                                   task_type, task_hash, warm_start, require_approval, replan, max_replans, start_mode,
                                   parent_task_id, thread_id)
                SELECT id, user_id, description, metadata, priority, max_cost_usd, max_tokens, request_hash,
                       max_attempts, use_plan_cache, callback_url,
                       ARRAY(SELECT jsonb_array_elements_text(j.agent_hints)), task_type, task_hash, warm_start,
                       ARRAY(SELECT jsonb_array_elements_text(j.require_approval)), replan, max_replans, start_mode,
                       parent_task_id, thread_id
                FROM j
                RETURNING *
             ), e AS (
                INSERT INTO task_events (task_id, kind, data)
                SELECT id, ",
            event_kind!(TaskCreated),
            ", jsonb_build_object('status', status) FROM t
             ), m AS (
                INSERT INTO task_messages (task_id, role, content)
                SELECT j.id, x.m->>0, x.m->>1
                FROM j, jsonb_array_elements(j.context) WITH ORDINALITY AS x(m, n)
                ORDER BY j.id, x.n
             )
             SELECT ",
            task_columns!(),
            " FROM t"
        );
        let texts = |f: fn(&NewTask) -> &str| -> Vec<&str> { items.iter().map(f).collect() };
        let rows: Vec<TaskRow> = sqlx::query_as(SQL)
            .bind(items.iter().map(|t| t.id.0).collect::<Vec<Uuid>>())
            .bind(texts(|t| &t.user_id))
            .bind(texts(|t| &t.description))
            .bind(items.iter().map(|t| t.metadata.clone()).collect::<Vec<Value>>())
            .bind(texts(|t| t.priority.as_str()))
            .bind(items.iter().map(|t| t.max_cost_usd).collect::<Vec<_>>())
            .bind(items.iter().map(|t| t.max_tokens).collect::<Vec<_>>())
            .bind(texts(|t| &t.request_hash))
            .bind(items.iter().map(|t| t.max_attempts).collect::<Vec<_>>())
            .bind(items.iter().map(|t| t.use_plan_cache).collect::<Vec<_>>())
            .bind(items.iter().map(|t| t.callback_url.as_deref()).collect::<Vec<_>>())
            .bind(items.iter().map(|t| Value::from(t.agent_hints.clone())).collect::<Vec<Value>>())
            .bind(
                items
                    .iter()
                    .map(|t| Value::from(t.context.iter().map(|(r, c)| vec![r.clone(), c.clone()]).collect::<Vec<_>>()))
                    .collect::<Vec<Value>>(),
            )
            .bind(items.iter().map(|t| t.task_type.as_deref()).collect::<Vec<_>>())
            .bind(texts(|t| &t.task_hash))
            .bind(items.iter().map(|t| t.warm_start).collect::<Vec<_>>())
            .bind(items.iter().map(|t| Value::from(t.require_approval.clone())).collect::<Vec<Value>>())
            .bind(items.iter().map(|t| t.replan).collect::<Vec<_>>())
            .bind(items.iter().map(|t| t.max_replans).collect::<Vec<_>>())
            .bind(texts(|t| t.start.as_str()))
            .bind(items.iter().map(|t| t.follows.map(|f| f.parent.0)).collect::<Vec<Option<Uuid>>>())
            .bind(items.iter().map(|t| t.follows.map(|f| f.thread.0)).collect::<Vec<Option<Uuid>>>())
            .fetch_all(pool)
            .await?;
        let mut created: std::collections::HashMap<Uuid, TaskRow> = rows.into_iter().map(|row| (row.id, row)).collect();
        Ok(items
            .iter()
            .map(|t| match created.remove(&t.id.0) {
                Some(row) => Task::try_from(row).map(CreateOutcome::Created),
                None => Err(StoreError::Corrupt(format!("the batched insert did not return task {}", t.id))),
            })
            .collect())
    }
}

#[derive(sqlx::FromRow)]
struct TaskRowWithHash {
    #[sqlx(flatten)]
    task: TaskRow,
    request_hash: Option<String>,
}
