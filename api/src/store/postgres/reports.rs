//! Reports on one task read from the accounting tables: cost and tool calls. Sums come
//! straight from `llm_calls`, so a report always agrees with the rows it sums.

use super::PgStore;
use crate::{
    domain::TaskId,
    store::{CostReport, ModelCost, StepCost, StoreError, ToolCallRow, Usage},
};

/// The aggregate columns of a [`Usage`], over `llm_calls` aliased `c`.
macro_rules! usage_columns {
    () => {
        "count(c.id) AS calls, coalesce(sum(c.prompt_tokens), 0)::bigint AS tokens_in, \
         coalesce(sum(c.completion_tokens), 0)::bigint AS tokens_out, \
         coalesce(sum(c.cached_tokens), 0)::bigint AS tokens_cached, \
         coalesce(sum(c.cost_usd), 0)::float8 AS cost_usd"
    };
}

impl PgStore {
    async fn task_exists(&self, id: TaskId) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1)")
            .bind(id.0)
            .fetch_one(&self.pool)
            .await?)
    }

    pub(super) async fn cost_report(&self, id: TaskId) -> Result<Option<CostReport>, StoreError> {
        if !self.task_exists(id).await? {
            return Ok(None);
        }
        const TOTAL: &str = concat!("SELECT ", usage_columns!(), " FROM llm_calls c WHERE c.task_id = $1");
        const PLANNING: &str =
            concat!("SELECT ", usage_columns!(), " FROM llm_calls c WHERE c.task_id = $1 AND c.step_id IS NULL");
        const STEPS: &str = concat!(
            "SELECT s.id AS step_id, s.position, s.title, s.agent, ",
            usage_columns!(),
            " FROM steps s LEFT JOIN llm_calls c ON c.step_id = s.id
              WHERE s.task_id = $1 GROUP BY s.id ORDER BY s.position"
        );
        const MODELS: &str = concat!(
            "SELECT c.provider, c.model, ",
            usage_columns!(),
            " FROM llm_calls c WHERE c.task_id = $1 GROUP BY c.provider, c.model ORDER BY cost_usd DESC, c.model"
        );
        let (total, planning, steps, models) = tokio::try_join!(
            sqlx::query_as::<_, Usage>(TOTAL).bind(id.0).fetch_one(&self.pool),
            sqlx::query_as::<_, Usage>(PLANNING).bind(id.0).fetch_one(&self.pool),
            sqlx::query_as::<_, StepCost>(STEPS).bind(id.0).fetch_all(&self.pool),
            sqlx::query_as::<_, ModelCost>(MODELS).bind(id.0).fetch_all(&self.pool),
        )?;
        Ok(Some(CostReport { task_id: id, total, planning, steps, models }))
    }

    pub(super) async fn tool_call_rows(&self, id: TaskId) -> Result<Option<Vec<ToolCallRow>>, StoreError> {
        if !self.task_exists(id).await? {
            return Ok(None);
        }
        let rows = sqlx::query_as::<_, ToolCallRow>(
            "SELECT id, step_id, tool, arguments, result, status, error, latency_ms, created_at
             FROM tool_calls WHERE task_id = $1 ORDER BY created_at, id",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(rows))
    }
}
