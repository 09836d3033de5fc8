//! The worker's side of the store: claims, fenced completions and accounting.
//!
//! Claims are single conditional UPDATEs that also take a lease; completions and failures
//! are fenced by the lease token, so a worker that lost its lease (it stalled, another took
//! the step over) can no longer write. Completion and failure lock the task row first: that
//! serialises sibling steps finishing at the same moment, so the last of them always sees
//! the others as completed and promotes the shared dependant exactly once.

use std::time::Duration;

use agents::{LlmCallRecord, ToolCallRecord};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{
    PgStore,
    calls::CallItem,
    steps::{ClaimItem, CompleteItem},
};
use crate::{
    domain::{EventKind, StepId, TaskErrorCode, TaskId, TaskStatus},
    store::{
        ApprovalDecision, AwaitOutcome, CancelOutcome, CapacityClaim, DecideOutcome, ExecutionStore, FailOutcome,
        Lease, LeaseState, NewApproval, NewStep, PlanOrigin, PlanningClaim, Release, RetryOutcome, StepCheckpoint,
        StepClaim, StepCompletion, StoreError, Unclaimed, Unfinished,
    },
};

#[async_trait::async_trait]
impl ExecutionStore for PgStore {
    async fn claim_planning(&self, id: TaskId, lease: &Lease) -> Result<Option<PlanningClaim>, StoreError> {
        Ok(match self.claim_planning_capped(id, lease, None).await? {
            CapacityClaim::Claimed { claim, .. } => Some(claim),
            _ => None,
        })
    }

    async fn save_plan(
        &self,
        id: TaskId,
        lease: &Lease,
        steps: &[NewStep],
        origin: PlanOrigin<'_>,
    ) -> Result<Option<Vec<StepId>>, StoreError> {
        let steps_json = serde_json::to_value(steps).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (from_cache, cache) = match origin {
            PlanOrigin::Cache => (true, None),
            PlanOrigin::Fresh { hash, planner, plan } => (false, Some((hash, planner, plan))),
            PlanOrigin::Uncached => (false, None),
        };
        // One statement: the task moves to running, its steps appear (roots already ready),
        // the events are written and a fresh plan is cached, or nothing happens because the
        // lease was lost.
        let ready: Option<Vec<Uuid>> = sqlx::query_scalar(concat!(
            "WITH t AS (
                UPDATE tasks SET status = ",
            task_status!(Running),
            ", lease_owner = NULL, lease_token = NULL,
                       lease_expires_at = NULL, updated_at = now()
                WHERE id = $1 AND status = ",
            task_status!(Planning),
            " AND lease_token = $2
                RETURNING id
             ), s AS (
                INSERT INTO steps (id, task_id, position, title, instruction, agent, depends_on, status, max_attempts,
                                   required)
                SELECT x.id, t.id, x.position, x.title, x.instruction, x.agent,
                       ARRAY(SELECT jsonb_array_elements_text(x.depends_on)::uuid),
                       CASE WHEN jsonb_array_length(x.depends_on) = 0 THEN ",
            step_status!(Ready),
            " ELSE ",
            step_status!(Pending),
            " END,
                       x.max_attempts, x.required
                FROM t, jsonb_to_recordset($3) AS x(id uuid, position int, title text, instruction text,
                                                    agent text, depends_on jsonb, max_attempts int, required boolean)
                RETURNING id, status
             ), e AS (
                INSERT INTO task_events (task_id, step_id, kind, data)
                SELECT t.id, NULL::uuid, ",
            event_kind!(TaskPlanned),
            ",
                       jsonb_build_object('steps', jsonb_array_length($3), 'from_cache', $4::boolean) FROM t
                UNION ALL
                SELECT $1, s.id, ",
            event_kind!(StepReady),
            ", '{}'::jsonb FROM s WHERE s.status = ",
            step_status!(Ready),
            "
             ), pc AS (
                INSERT INTO plan_cache (hash, planner, plan) SELECT $5, $6, $7 FROM t WHERE $5::text IS NOT NULL
                ON CONFLICT (hash) DO UPDATE SET plan = EXCLUDED.plan, planner = EXCLUDED.planner, used_at = now()
             )
             SELECT coalesce(array_agg(s.id) FILTER (WHERE s.status = ",
            step_status!(Ready),
            "), '{}') FROM t LEFT JOIN s ON true
             GROUP BY t.id"
        ))
        .bind(id.0)
        .bind(lease.token)
        .bind(steps_json)
        .bind(from_cache)
        .bind(cache.map(|(hash, ..)| hash))
        .bind(cache.map(|(_, planner, _)| planner))
        .bind(cache.map(|(.., plan)| plan))
        .fetch_optional(&self.pool)
        .await?;
        if ready.is_some() {
            self.events_committed(id);
        }
        Ok(ready.map(|ids| ids.into_iter().map(StepId).collect()))
    }

    async fn cancel_task(&self, id: TaskId) -> Result<CancelOutcome, StoreError> {
        self.cancel(id).await
    }

    async fn retry_task(&self, id: TaskId) -> Result<RetryOutcome, StoreError> {
        self.retry(id).await
    }

    async fn renew_planning_lease(&self, id: TaskId, lease: &Lease) -> Result<bool, StoreError> {
        let held = sqlx::query(concat!(
            "UPDATE tasks SET lease_expires_at = now() + make_interval(secs => $3)
             WHERE id = $1 AND status = ",
            task_status!(Planning),
            " AND lease_token = $2"
        ))
        .bind(id.0)
        .bind(lease.token)
        .bind(lease.seconds())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(held == 1)
    }

    async fn fail_planning(&self, id: TaskId, lease: &Lease, error: &str) -> Result<bool, StoreError> {
        self.fail_planning_with(id, lease, error, None).await
    }

    async fn claim_step(&self, id: StepId, lease: &Lease) -> Result<Option<StepClaim>, StoreError> {
        let item = ClaimItem { step: id.0, owner: lease.owner.clone(), token: lease.token, seconds: lease.seconds() };
        self.claims.run(item).await
    }

    fn announce_end(&self, task: TaskId) {
        self.events.notify_ended(task);
    }

    async fn settle_unclaimed_step(&self, task: TaskId, id: StepId) -> Result<Unclaimed, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(user_id) = lock_task(&mut tx, task).await? else {
            return Ok(Unclaimed::Unknown);
        };
        let exhausted = fail_step_and_task(&mut tx, task, id, EXHAUSTED, Unleased::Exhausted).await?;
        if !exhausted {
            let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM steps WHERE id = $1 AND task_id = $2)")
                .bind(id.0)
                .bind(task.0)
                .fetch_one(&mut *tx)
                .await?;
            return Ok(if known { Unclaimed::Elsewhere } else { Unclaimed::Unknown });
        }
        tx.commit().await?;
        self.events_committed(task);
        Ok(Unclaimed::Exhausted { user_id })
    }

    async fn fail_dead_lettered(
        &self,
        task: TaskId,
        step: Option<StepId>,
        error: &str,
    ) -> Result<Option<String>, StoreError> {
        let code = TaskErrorCode::DeadLettered;
        let Some(step) = step else {
            let user: Option<String> = sqlx::query_scalar(concat!(
                "WITH t AS (
                    UPDATE tasks SET status = ",
                task_status!(Failed),
                ", error = $2, error_code = $3, lease_owner = NULL,
                           lease_token = NULL, lease_expires_at = NULL, completed_at = now(), updated_at = now()
                    WHERE id = $1 AND status IN (",
                task_status!(Pending, Planning),
                ")
                    RETURNING tasks.*
                 ), e AS (
                    INSERT INTO task_events (task_id, kind, data)
                    SELECT id, ",
                event_kind!(TaskFailed),
                ", jsonb_build_object('error', $2::text, 'code', $3::text)
                    FROM t CROSS JOIN LATERAL queue_task_webhook(t::tasks)
                 )
                 SELECT user_id FROM t"
            ))
            .bind(task.0)
            .bind(error)
            .bind(code.as_str())
            .fetch_optional(&self.pool)
            .await?;
            if user.is_some() {
                self.events_committed(task);
            }
            return Ok(user);
        };
        let mut tx = self.pool.begin().await?;
        let Some(user_id) = lock_task(&mut tx, task).await? else { return Ok(None) };
        if !fail_step_and_task(&mut tx, task, step, error, Unleased::DeadLettered).await? {
            return Ok(None);
        }
        tx.commit().await?;
        self.events_committed(task);
        Ok(Some(user_id))
    }

    async fn renew_step_lease(&self, id: StepId, lease: &Lease) -> Result<LeaseState, StoreError> {
        let task_running: Option<bool> = sqlx::query_scalar(concat!(
            "UPDATE steps SET lease_expires_at = now() + make_interval(secs => $3)
             WHERE id = $1 AND status = ",
            step_status!(Running),
            " AND lease_token = $2
             RETURNING (SELECT t.status IN (",
            active_task!(),
            ") FROM tasks t WHERE t.id = steps.task_id)"
        ))
        .bind(id.0)
        .bind(lease.token)
        .bind(lease.seconds())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match task_running {
            Some(task_running) => LeaseState::Held { task_running },
            None => LeaseState::Lost,
        })
    }

    async fn complete_step_with_messages(
        &self,
        claim: &StepClaim,
        lease: &Lease,
        output: &str,
        messages: &[(String, String)],
    ) -> Result<Option<StepCompletion>, StoreError> {
        let item = CompleteItem {
            task: claim.task_id.0,
            step: claim.step_id.0,
            token: lease.token,
            output: output.to_owned(),
            messages: messages.to_vec(),
        };
        self.completions.run(item).await
    }

    async fn fail_step(
        &self,
        claim: &StepClaim,
        lease: &Lease,
        error: &str,
        retry_after: Option<Duration>,
    ) -> Result<FailOutcome, StoreError> {
        // First the retry: a single fenced statement that only matches while attempts remain.
        let retried: Option<i32> = match retry_after {
            None => None,
            Some(backoff) => {
                sqlx::query_scalar(concat!(
                    "WITH s AS (
                UPDATE steps SET status = ",
                    step_status!(Ready),
                    ", error = $3, lease_owner = NULL, lease_token = NULL,
                       lease_expires_at = NULL, not_before = now() + make_interval(secs => $4), updated_at = now()
                WHERE id = $1 AND status = ",
                    step_status!(Running),
                    " AND lease_token = $2 AND attempt < max_attempts
                  AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = steps.task_id AND t.status IN (",
                    active_task!(),
                    "))
                RETURNING id, task_id, attempt
             ), e AS (
                INSERT INTO task_events (task_id, step_id, kind, data)
                SELECT task_id, id, ",
                    event_kind!(StepRetrying),
                    ",
                       jsonb_build_object('error', $3::text, 'attempt', attempt, 'backoff_ms', ($4 * 1000)::bigint)
                FROM s
             )
             SELECT attempt + 1 FROM s"
                ))
                .bind(claim.step_id.0)
                .bind(lease.token)
                .bind(error)
                .bind(backoff.as_secs_f64())
                .fetch_optional(&self.pool)
                .await?
            }
        };
        if let Some(next_attempt) = retried {
            self.events_committed(claim.task_id);
            return Ok(FailOutcome::Retrying { next_attempt });
        }

        self.fail_step_with(claim, lease, error, None).await
    }

    async fn cancel_step(&self, claim: &StepClaim, lease: &Lease) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "WITH s AS (
                UPDATE steps SET status = ",
            step_status!(Cancelled),
            ", lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                       completed_at = now(), updated_at = now()
                WHERE id = $1 AND status = ",
            step_status!(Running),
            " AND lease_token = $2
                RETURNING id, task_id
             )
             INSERT INTO task_events (task_id, step_id, kind) SELECT task_id, id, ",
            event_kind!(StepCancelled),
            " FROM s"
        ))
        .bind(claim.step_id.0)
        .bind(lease.token)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            self.events_committed(claim.task_id);
        }
        Ok(done.rows_affected() == 1)
    }

    async fn release_step(&self, claim: &StepClaim, lease: &Lease, why: Release) -> Result<bool, StoreError> {
        // The attempt was interrupted by our shutdown or yielded, not failed: it is not charged.
        let kind = match why {
            Release::Shutdown => EventKind::StepReleased,
            Release::Yield => EventKind::StepYielded,
        };
        let done = sqlx::query(concat!(
            "WITH s AS (
                UPDATE steps SET status = ",
            step_status!(Ready),
            ", attempt = attempt - 1, lease_owner = NULL, lease_token = NULL,
                       lease_expires_at = NULL, updated_at = now()
                WHERE id = $1 AND status = ",
            step_status!(Running),
            " AND lease_token = $2
                RETURNING id, task_id
             )
             INSERT INTO task_events (task_id, step_id, kind) SELECT task_id, id, $3 FROM s"
        ))
        .bind(claim.step_id.0)
        .bind(lease.token)
        .bind(kind.as_str())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            self.events_committed(claim.task_id);
        }
        Ok(done.rows_affected() == 1)
    }

    async fn await_approval(
        &self,
        claim: &StepClaim,
        lease: &Lease,
        calls: &[NewApproval],
        timeout: Duration,
    ) -> Result<AwaitOutcome, StoreError> {
        self.await_approval_with(claim, lease, calls, timeout).await
    }

    async fn decide_approval(
        &self,
        task: TaskId,
        call: Uuid,
        decision: &ApprovalDecision,
    ) -> Result<DecideOutcome, StoreError> {
        self.decide_approval_with(task, call, decision).await
    }

    async fn expired_approvals(&self, limit: i64) -> Result<Vec<(TaskId, Uuid)>, StoreError> {
        self.expired_approvals_with(limit).await
    }

    async fn cached_plan(&self, hash: &str) -> Result<Option<Value>, StoreError> {
        // Identical tasks all read one row: counting a hit must not make them wait for each
        // other's commits, so a hit whose row is being counted by another claim is not
        // counted (`hits` and `used_at` are statistics; nothing depends on them).
        let plan = sqlx::query_scalar(
            "WITH hit AS (
                UPDATE plan_cache SET hits = hits + 1, used_at = now()
                WHERE hash = (SELECT hash FROM plan_cache WHERE hash = $1 FOR UPDATE SKIP LOCKED)
             )
             SELECT plan FROM plan_cache WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(plan)
    }

    async fn unfinished_work(
        &self,
        min_age: Duration,
        limit: i64,
        default_cap: u32,
    ) -> Result<Vec<Unfinished>, StoreError> {
        // A task waiting for capacity has no job on purpose (the end of one of its user's
        // tasks wakes it): it is taken up only when its user has room, oldest first, so that
        // waiting costs nothing while the user is at the cap.
        let rows: Vec<(Uuid, Option<Uuid>, i32, String)> = sqlx::query_as(concat!(
            "(SELECT id, NULL::uuid, 1, priority FROM tasks
              WHERE (status = ",
            task_status!(Pending),
            " AND capacity_waits = 0 AND updated_at < now() - make_interval(secs => $1))
                 OR (status = ",
            task_status!(Planning),
            " AND lease_expires_at < now())
              ORDER BY updated_at LIMIT $2)
             UNION ALL
             (WITH waiting AS (
                 SELECT id, user_id, priority, updated_at,
                        row_number() OVER (PARTITION BY user_id ORDER BY created_at, id) AS place
                 FROM tasks WHERE status = ",
            task_status!(Pending),
            " AND capacity_waits > 0
              ), room AS (
                 SELECT u.user_id, coalesce(l.max_running_tasks, $3) AS cap,
                        (SELECT count(*) FROM tasks a
                         WHERE a.user_id = u.user_id AND a.status IN (",
            task_status!(Planning, Running),
            ")) AS active
                 FROM (SELECT DISTINCT user_id FROM waiting) u LEFT JOIN user_limits l ON l.user_id = u.user_id
              )
              SELECT w.id, NULL::uuid, 1, w.priority FROM waiting w JOIN room r ON r.user_id = w.user_id
              WHERE w.updated_at < now() - make_interval(secs => $1) AND (r.cap = 0 OR w.place <= r.cap - r.active)
              ORDER BY w.updated_at LIMIT $2)
             UNION ALL
             (SELECT s.task_id, s.id,
                     CASE WHEN s.status = ",
            step_status!(Ready),
            " THEN s.attempt + 1 ELSE s.attempt END, t.priority
              FROM steps s JOIN tasks t ON t.id = s.task_id
              WHERE t.status IN (",
            active_task!(),
            ")
                AND ((s.status = ",
            step_status!(Ready),
            " AND s.updated_at < now() - make_interval(secs => $1)
                      AND (s.not_before IS NULL OR s.not_before <= now()))
                  OR (s.status = ",
            step_status!(Running),
            " AND s.lease_expires_at < now()))
              ORDER BY s.updated_at LIMIT $2)"
        ))
        .bind(min_age.as_secs_f64())
        .bind(limit)
        .bind(i32::try_from(default_cap).unwrap_or(i32::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(task, step, attempt, priority)| {
                Ok(Unfinished { task: TaskId(task), step: step.map(StepId), attempt, priority: priority.parse()? })
            })
            .collect()
    }

    async fn record_llm_call(
        &self,
        task: TaskId,
        step: Option<StepId>,
        call: &LlmCallRecord,
        checkpoint: Option<&StepCheckpoint>,
    ) -> Result<(), StoreError> {
        self.llm_calls.run(CallItem { task, step, call: call.clone(), checkpoint: checkpoint.cloned() }).await
    }

    async fn record_tool_call(
        &self,
        task: TaskId,
        step: Option<StepId>,
        call: &ToolCallRecord,
        checkpoint: Option<&StepCheckpoint>,
    ) -> Result<(), StoreError> {
        // The call, its `tool_called` event and the checkpoint with its reply are written by
        // one statement, so the live event stream shows every recorded call and nothing else,
        // and a resumed step finds every recorded call in its checkpoint.
        sqlx::query(concat!(
            "WITH c AS (
                INSERT INTO tool_calls (id, task_id, step_id, tool, arguments, result, status, error, latency_ms)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                RETURNING id, task_id, step_id, tool, status
             ), k AS (
                UPDATE steps SET checkpoint = $10 WHERE $10::jsonb IS NOT NULL AND id = $3 AND lease_token = $11
             )
             INSERT INTO task_events (task_id, step_id, kind, data)
             SELECT task_id, step_id, ",
            event_kind!(ToolCalled),
            ", jsonb_build_object('tool_call_id', id, 'tool', tool, 'status', status)
             FROM c"
        ))
        .bind(Uuid::now_v7())
        .bind(task.0)
        .bind(step.map(|s| s.0))
        .bind(&call.tool)
        .bind(&call.arguments)
        .bind(&call.result)
        .bind(call.status.as_str())
        .bind(&call.error)
        .bind(call.latency_ms)
        .bind(checkpoint.map(|c| &c.state))
        .bind(checkpoint.map(|c| c.lease_token))
        .execute(&self.pool)
        .await?;
        self.events_committed(task);
        Ok(())
    }

    async fn record_messages(
        &self,
        task: TaskId,
        step: Option<StepId>,
        messages: &[(String, String)],
        checkpoint: Option<&StepCheckpoint>,
    ) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        // With a checkpoint, the messages move from its transcript to the task's memory
        // together, or (the lease lost) stay in the transcript for the step's next holder.
        sqlx::query(
            "WITH k AS (
                UPDATE steps SET checkpoint = $5 WHERE $5::jsonb IS NOT NULL AND id = $2 AND lease_token = $6
                RETURNING id
             )
             INSERT INTO task_messages (task_id, step_id, role, content)
             SELECT $1, $2, x.role, x.content
             FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS x(role, content, n)
             WHERE $5::jsonb IS NULL OR EXISTS (SELECT 1 FROM k)
             ORDER BY x.n",
        )
        .bind(task.0)
        .bind(step.map(|s| s.0))
        .bind(messages.iter().map(|(role, _)| role.as_str()).collect::<Vec<_>>())
        .bind(messages.iter().map(|(_, content)| content.as_str()).collect::<Vec<_>>())
        .bind(checkpoint.map(|c| &c.state))
        .bind(checkpoint.map(|c| c.lease_token))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Records one model call and adds it to its step's and task's totals, on any executor: the
/// budget settles a reservation in the same transaction (`super::budget`).
pub(super) async fn insert_llm_call<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    task: TaskId,
    step: Option<StepId>,
    call: &LlmCallRecord,
    checkpoint: Option<&StepCheckpoint>,
) -> Result<(), StoreError> {
    // The call and the running totals of its step and task change in one statement, so
    // the totals always equal the sums of the llm_calls rows; so does the step's checkpoint,
    // while the lease that wrote it holds the step.
    sqlx::query(
        "WITH c AS (
            INSERT INTO llm_calls (id, task_id, step_id, provider, model, prompt_tokens, completion_tokens,
                                   cached_tokens, cost_usd, latency_ms)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            RETURNING task_id, step_id, prompt_tokens, completion_tokens, cached_tokens, cost_usd
         ), s AS (
            UPDATE steps SET cost_usd = steps.cost_usd + c.cost_usd, tokens_in = steps.tokens_in + c.prompt_tokens,
                   tokens_out = steps.tokens_out + c.completion_tokens,
                   tokens_cached = steps.tokens_cached + c.cached_tokens,
                   checkpoint = CASE WHEN $11::jsonb IS NOT NULL AND steps.lease_token = $12 THEN $11
                                     ELSE steps.checkpoint END
            FROM c WHERE steps.id = c.step_id
         )
         UPDATE tasks SET cost_usd = tasks.cost_usd + c.cost_usd, tokens_in = tasks.tokens_in + c.prompt_tokens,
                tokens_out = tasks.tokens_out + c.completion_tokens,
                tokens_cached = tasks.tokens_cached + c.cached_tokens
         FROM c WHERE tasks.id = c.task_id",
    )
    .bind(Uuid::now_v7())
    .bind(task.0)
    .bind(step.map(|s| s.0))
    .bind(&call.provider)
    .bind(&call.model)
    .bind(saturating_i64(call.usage.prompt_tokens))
    .bind(saturating_i64(call.usage.completion_tokens))
    .bind(saturating_i64(call.usage.cached_tokens))
    .bind(call.cost_usd)
    .bind(call.latency_ms)
    .bind(checkpoint.map(|c| &c.state))
    .bind(checkpoint.map(|c| c.lease_token))
    .execute(executor)
    .await?;
    Ok(())
}

/// Terminal failures, with the machine-readable code the budget's failures carry.
impl PgStore {
    /// `planning → failed`, fenced by the planning lease.
    pub(super) async fn fail_planning_with(
        &self,
        id: TaskId,
        lease: &Lease,
        error: &str,
        code: Option<TaskErrorCode>,
    ) -> Result<bool, StoreError> {
        let failed = sqlx::query_scalar::<_, Uuid>(concat!(
            "WITH t AS (
                UPDATE tasks SET status = ",
            task_status!(Failed),
            ", error = $3, error_code = $4, lease_owner = NULL, lease_token = NULL,
                       lease_expires_at = NULL, completed_at = now(), updated_at = now()
                WHERE id = $1 AND status = ",
            task_status!(Planning),
            " AND lease_token = $2
                RETURNING tasks.*
             ), e AS (
                INSERT INTO task_events (task_id, kind, data)
                SELECT id, ",
            event_kind!(TaskFailed),
            ", jsonb_build_object('error', $3::text, 'code', $4::text)
                FROM t CROSS JOIN LATERAL queue_task_webhook(t::tasks)
             )
             SELECT id FROM t"
        ))
        .bind(id.0)
        .bind(lease.token)
        .bind(error)
        .bind(code.map(TaskErrorCode::as_str))
        .fetch_optional(&self.pool)
        .await?;
        if failed.is_some() {
            self.events_committed(id);
        }
        Ok(failed.is_some())
    }

    /// `running → failed` for the step. With a code (a budget's failure) the task fails and
    /// its unfinished steps are skipped; without one only the steps that depend on it are
    /// skipped, and the task ends (`partial` or `failed`) once nothing else can run.
    pub(super) async fn fail_step_with(
        &self,
        claim: &StepClaim,
        lease: &Lease,
        error: &str,
        code: Option<TaskErrorCode>,
    ) -> Result<FailOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_task(&mut tx, claim.task_id).await?;
        let failed = sqlx::query(concat!(
            "WITH s AS (
                UPDATE steps SET status = ",
            step_status!(Failed),
            ", error = $3, lease_owner = NULL, lease_token = NULL,
                       lease_expires_at = NULL, completed_at = now(), updated_at = now()
                WHERE id = $1 AND status = ",
            step_status!(Running),
            " AND lease_token = $2
                RETURNING id, task_id, attempt
             )
             INSERT INTO task_events (task_id, step_id, kind, data)
             SELECT task_id, id, ",
            event_kind!(StepFailed),
            ", jsonb_build_object('error', $3::text, 'attempt', attempt) FROM s"
        ))
        .bind(claim.step_id.0)
        .bind(lease.token)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        if failed.rows_affected() == 0 {
            return Ok(FailOutcome::LeaseLost);
        }
        // A budget's failure or a required step's fails the task at once.
        let outcome = match code.or(claim.required.then_some(TaskErrorCode::RequiredStepFailed)) {
            Some(code) => {
                let task_error = format!(
                    "step {} ({}) failed after {} attempt(s): {error}",
                    claim.title, claim.step_id, claim.attempt
                );
                fail_task_of_step(&mut tx, claim.task_id, &task_error, Some(code)).await?;
                FailOutcome::Failed
            }
            None => match fail_branch(&mut tx, claim.task_id, claim.step_id).await? {
                None => FailOutcome::FailedBranch,
                Some(TaskStatus::Partial) => FailOutcome::FailedPartial,
                Some(_) => FailOutcome::Failed,
            },
        };
        tx.commit().await?;
        self.events_committed(claim.task_id);
        Ok(outcome)
    }
}

/// Which steps [`fail_step_and_task`] may fail without holding their lease.
#[derive(Clone, Copy)]
enum Unleased {
    /// A running step whose lease expired with no attempt left.
    Exhausted,
    /// A step in any state short of ended: its job is being dead-lettered.
    DeadLettered,
}

impl Unleased {
    fn code(self) -> TaskErrorCode {
        match self {
            Self::Exhausted => TaskErrorCode::AttemptsExhausted,
            Self::DeadLettered => TaskErrorCode::DeadLettered,
        }
    }
}

/// Fails a step nobody holds (`which` says which ones qualify) and then its task, in the
/// caller's transaction, which holds the task row; `false` when the step did not qualify.
async fn fail_step_and_task(
    tx: &mut Transaction<'_, Postgres>,
    task: TaskId,
    step: StepId,
    error: &str,
    which: Unleased,
) -> Result<bool, StoreError> {
    let failed: Option<(i32, String)> = sqlx::query_as(concat!(
        "WITH s AS (
            UPDATE steps SET status = ",
        step_status!(Failed),
        ", error = $3, lease_owner = NULL, lease_token = NULL,
                   lease_expires_at = NULL, completed_at = now(), updated_at = now()
            WHERE id = $1 AND task_id = $2
              AND CASE WHEN $4 THEN status IN (",
        step_status!(Pending, Ready, Running),
        ")
                       ELSE status = ",
        step_status!(Running),
        " AND lease_expires_at < now() AND attempt >= max_attempts END
            RETURNING id, task_id, attempt, title
         ), e AS (
            INSERT INTO task_events (task_id, step_id, kind, data)
            SELECT task_id, id, ",
        event_kind!(StepFailed),
        ", jsonb_build_object('error', $3::text, 'attempt', attempt) FROM s
         )
         SELECT attempt, title FROM s"
    ))
    .bind(step.0)
    .bind(task.0)
    .bind(error)
    .bind(matches!(which, Unleased::DeadLettered))
    .fetch_optional(&mut **tx)
    .await?;
    let Some((attempt, title)) = failed else { return Ok(false) };
    let task_error = format!("step {title} ({step}) failed after {attempt} attempt(s): {error}");
    fail_task_of_step(tx, task, &task_error, Some(which.code())).await?;
    Ok(true)
}

/// Why a step whose every attempt was taken over fails.
const EXHAUSTED: &str = "every attempt was taken over from a worker that died or stopped renewing its lease \
                         (attempts_exhausted)";

/// A step failed for good: the task's waiting steps are skipped and the task fails, inside
/// the caller's transaction (which holds the task row).
async fn fail_task_of_step(
    tx: &mut Transaction<'_, Postgres>,
    task: TaskId,
    task_error: &str,
    code: Option<TaskErrorCode>,
) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "WITH k AS (
                UPDATE steps SET status = ",
        step_status!(Skipped),
        ", updated_at = now()
                WHERE task_id = $1 AND status IN (",
        step_status!(Pending, Ready, Waiting),
        ")
                RETURNING id, task_id
             ), t AS (
                UPDATE tasks SET status = ",
        task_status!(Failed),
        ", error = $2, error_code = $3, required_action = NULL, completed_at = now(), updated_at = now()
                WHERE id = $1 AND status IN (",
        active_task!(),
        ")
                RETURNING tasks.*
             ), a AS (
                UPDATE tool_approvals SET status = ",
        approval_status!(Cancelled),
        ", decided_at = now(), decided_by = 'system', reason = 'the task failed'
                WHERE task_id IN (SELECT id FROM t) AND status = ",
        approval_status!(Pending),
        "
             )
             INSERT INTO task_events (task_id, step_id, kind, data)
             SELECT task_id, id, ",
        event_kind!(StepSkipped),
        ", '{}'::jsonb FROM k
             UNION ALL
             SELECT id, NULL::uuid, ",
        event_kind!(TaskFailed),
        ", jsonb_build_object('error', $2::text, 'code', $3::text)
             FROM t CROSS JOIN LATERAL queue_task_webhook(t::tasks)"
    ))
    .bind(task.0)
    .bind(task_error)
    .bind(code.map(TaskErrorCode::as_str))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// After `step` failed for good, in the caller's transaction, which holds the task row: skips
/// the steps that depend on it, directly or not, then ends the task if nothing else can run
/// (`end_settled_task`: `partial` or `failed`). The status it ended in, `None` while other
/// branches run.
async fn fail_branch(
    tx: &mut Transaction<'_, Postgres>,
    task: TaskId,
    step: StepId,
) -> Result<Option<TaskStatus>, StoreError> {
    sqlx::query(concat!(
        "WITH RECURSIVE dependants(id) AS (
            SELECT d.id FROM steps d WHERE d.task_id = $1 AND $2 = ANY(d.depends_on)
            UNION
            SELECT d.id FROM steps d JOIN dependants x ON x.id = ANY(d.depends_on) WHERE d.task_id = $1
         ), k AS (
            UPDATE steps SET status = ",
        step_status!(Skipped),
        ", updated_at = now()
            WHERE id IN (SELECT id FROM dependants) AND status IN (",
        step_status!(Pending, Ready),
        ")
            RETURNING id, task_id
         )
         INSERT INTO task_events (task_id, step_id, kind, data)
         SELECT task_id, id, ",
        event_kind!(StepSkipped),
        ", jsonb_build_object('failed_dependency', $2::uuid) FROM k"
    ))
    .bind(task.0)
    .bind(step.0)
    .execute(&mut **tx)
    .await?;
    // A second statement: it must see the steps skipped above.
    let ended: Option<String> =
        sqlx::query_scalar("SELECT (end_settled_task($1)).status").bind(task.0).fetch_one(&mut **tx).await?;
    Ok(ended.map(|s| s.parse()).transpose()?)
}

/// Locks the task row; its user, `None` when there is no such task.
pub(super) async fn lock_task(tx: &mut Transaction<'_, Postgres>, task: TaskId) -> Result<Option<String>, StoreError> {
    let user = sqlx::query_scalar("SELECT user_id FROM tasks WHERE id = $1 FOR NO KEY UPDATE")
        .bind(task.0)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(user)
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
