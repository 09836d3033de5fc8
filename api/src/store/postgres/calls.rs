//! Model calls without a budget reservation, batched ([`super::batch`]): concurrent records
//! share one insert and one update of the running totals and the steps' checkpoints. (A call
//! with a reservation settles it in the same transaction, `super::budget`, and is written
//! alone.)

use agents::LlmCallRecord;
use sqlx::PgPool;
use uuid::Uuid;

use super::{batch::BatchOp, execution::insert_llm_call};
use crate::{
    domain::{StepId, TaskId},
    store::{StepCheckpoint, StoreError},
};

pub(super) struct CallItem {
    pub task: TaskId,
    pub step: Option<StepId>,
    pub call: LlmCallRecord,
    pub checkpoint: Option<StepCheckpoint>,
}

/// Records model calls and adds them to their steps' and tasks' totals, in one statement, so
/// the totals always equal the sums of the `llm_calls` rows; stores each step's checkpoint
/// (the latest of the batch, should one step have two) where its lease still holds.
pub(super) struct RecordCalls;

#[async_trait::async_trait]
impl BatchOp for RecordCalls {
    type Item = CallItem;
    type Output = ();

    async fn one(&self, pool: &PgPool, item: &CallItem) -> Result<(), StoreError> {
        insert_llm_call(pool, item.task, item.step, &item.call, item.checkpoint.as_ref()).await
    }

    async fn many(&self, pool: &PgPool, items: &[CallItem]) -> Result<Vec<()>, StoreError> {
        let tokens = |f: fn(&agents::Usage) -> u64| -> Vec<i64> {
            items.iter().map(|i| i64::try_from(f(&i.call.usage)).unwrap_or(i64::MAX)).collect()
        };
        sqlx::query(
            "WITH j AS (
                SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int8[],
                                     $7::int8[], $8::int8[], $9::float8[], $10::float8[], $11::jsonb[], $12::uuid[])
                    AS j(id, task_id, step_id, provider, model, prompt_tokens, completion_tokens, cached_tokens,
                         cost_usd, latency_ms, checkpoint, lease_token)
             ), c AS (
                INSERT INTO llm_calls (id, task_id, step_id, provider, model, prompt_tokens, completion_tokens,
                                       cached_tokens, cost_usd, latency_ms)
                SELECT id, task_id, step_id, provider, model, prompt_tokens, completion_tokens, cached_tokens,
                       cost_usd, latency_ms
                FROM j
             ), s AS (
                UPDATE steps SET cost_usd = steps.cost_usd + x.cost_usd, tokens_in = steps.tokens_in + x.prompt_tokens,
                       tokens_out = steps.tokens_out + x.completion_tokens,
                       tokens_cached = steps.tokens_cached + x.cached_tokens,
                       checkpoint = CASE WHEN x.checkpoint IS NOT NULL AND steps.lease_token = x.lease_token
                                         THEN x.checkpoint ELSE steps.checkpoint END
                FROM (SELECT step_id, sum(cost_usd) AS cost_usd, sum(prompt_tokens) AS prompt_tokens,
                             sum(completion_tokens) AS completion_tokens, sum(cached_tokens) AS cached_tokens,
                             (array_agg(checkpoint ORDER BY id DESC) FILTER (WHERE checkpoint IS NOT NULL))[1]
                                 AS checkpoint,
                             (array_agg(lease_token ORDER BY id DESC) FILTER (WHERE checkpoint IS NOT NULL))[1]
                                 AS lease_token
                      FROM j WHERE step_id IS NOT NULL GROUP BY step_id) x
                WHERE steps.id = x.step_id
             )
             UPDATE tasks SET cost_usd = tasks.cost_usd + x.cost_usd, tokens_in = tasks.tokens_in + x.prompt_tokens,
                    tokens_out = tasks.tokens_out + x.completion_tokens,
                    tokens_cached = tasks.tokens_cached + x.cached_tokens
             FROM (SELECT task_id, sum(cost_usd) AS cost_usd, sum(prompt_tokens) AS prompt_tokens,
                          sum(completion_tokens) AS completion_tokens, sum(cached_tokens) AS cached_tokens
                   FROM j GROUP BY task_id) x
             WHERE tasks.id = x.task_id",
        )
        .bind(items.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.task.0).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.step.map(|s| s.0)).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.call.provider.as_str()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.call.model.as_str()).collect::<Vec<_>>())
        .bind(tokens(|u| u.prompt_tokens))
        .bind(tokens(|u| u.completion_tokens))
        .bind(tokens(|u| u.cached_tokens))
        .bind(items.iter().map(|i| i.call.cost_usd).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.call.latency_ms).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.checkpoint.as_ref().map(|c| &c.state)).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.checkpoint.as_ref().map(|c| c.lease_token)).collect::<Vec<_>>())
        .execute(pool)
        .await?;
        Ok(vec![(); items.len()])
    }
}
