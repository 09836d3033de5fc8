//! Tool calls that wait for a person: the step stops `waiting` with its calls in
//! `tool_approvals`, its task `requires_action`; each decision (or expiry) is recorded, and the
//! last one of a step readies it, the last one of a task runs it again (migration 23).
//!
//! Both writes lock the task row first, as every step transition that may change the task's
//! status does: a decision that finds no other step waiting and a step that starts waiting
//! serialise, so a task never runs with a step waiting, nor requires action with none.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{PgStore, execution::lock_task};
use crate::{
    domain::{ApprovalStatus, StepId, TaskId},
    store::{
        ApprovalDecision, ApprovalFilter, ApprovalRow, AwaitOutcome, DecideOutcome, Decided, Lease, NewApproval,
        StepClaim, StoreError,
    },
};

impl PgStore {
    pub(super) async fn await_approval_with(
        &self,
        claim: &StepClaim,
        lease: &Lease,
        calls: &[NewApproval],
        timeout: Duration,
    ) -> Result<AwaitOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_task(&mut tx, claim.task_id).await?;
        // The pause is not a failed attempt: like a yield, it is not charged.
        let (waiting, _webhooks, task_active): (bool, i64, bool) = sqlx::query_as(concat!(
            "WITH s AS (
                UPDATE steps SET status = ",
            step_status!(Waiting),
            ", attempt = attempt - 1, lease_owner = NULL, lease_token = NULL,
                       lease_expires_at = NULL, updated_at = now()
                WHERE id = $1 AND status = ",
            step_status!(Running),
            " AND lease_token = $2
                  AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = steps.task_id AND t.status IN (",
            active_task!(),
            "))
                RETURNING id, task_id, agent
             ), a AS (
                INSERT INTO tool_approvals (id, task_id, step_id, agent, turn, tool_call_id, tool, arguments, expires_at)
                SELECT x.id, s.task_id, s.id, s.agent, x.turn, x.call_id, x.tool, x.arguments,
                       now() + make_interval(secs => $8)
                FROM s CROSS JOIN unnest($3::uuid[], $4::int[], $5::text[], $6::text[], $7::jsonb[])
                                  AS x(id, turn, call_id, tool, arguments)
                RETURNING id, task_id, step_id, agent, tool, arguments, expires_at
             ), c AS (
                INSERT INTO tool_calls (id, task_id, step_id, tool, arguments, status)
                SELECT id, task_id, step_id, tool, arguments, $10 FROM a
             ), t AS (
                UPDATE tasks SET status = ",
            task_status!(RequiresAction),
            ", required_action = ",
            required_action!(ToolApproval),
            ",
                       action_requests = action_requests + 1, updated_at = now()
                WHERE id = (SELECT task_id FROM s)
                RETURNING tasks.*
             ), e AS (
                INSERT INTO task_events (task_id, step_id, kind, data)
                SELECT task_id, step_id, ",
            event_kind!(ApprovalRequested),
            ",
                       jsonb_build_object('call_id', id, 'tool', tool, 'arguments', arguments, 'agent', agent,
                                          'expires_at', expires_at)
                FROM a
             ), w AS (
                SELECT 1 FROM t CROSS JOIN LATERAL queue_task_webhook(t::tasks)
             )
             -- `w` is read so that it runs (a CTE without writes runs only when read).
             SELECT EXISTS (SELECT 1 FROM s), (SELECT count(*) FROM w),
                    EXISTS (SELECT 1 FROM tasks WHERE id = $9 AND status IN (",
            active_task!(),
            "))"
        ))
        .bind(claim.step_id.0)
        .bind(lease.token)
        .bind(calls.iter().map(|c| c.id).collect::<Vec<_>>())
        .bind(calls.iter().map(|c| c.turn).collect::<Vec<_>>())
        .bind(calls.iter().map(|c| c.tool_call_id.as_str()).collect::<Vec<_>>())
        .bind(calls.iter().map(|c| c.tool.as_str()).collect::<Vec<_>>())
        .bind(calls.iter().map(|c| c.arguments.clone()).collect::<Vec<_>>())
        .bind(timeout.as_secs_f64())
        .bind(claim.task_id.0)
        .bind(agents::ToolCallStatus::AwaitingApproval.as_str())
        .fetch_one(&mut *tx)
        .await?;
        // The task's status as the statement saw it, before its own update.
        let outcome = match (waiting, task_active) {
            (true, _) => AwaitOutcome::Waiting,
            (false, false) => AwaitOutcome::TaskEnded,
            (false, true) => AwaitOutcome::LeaseLost,
        };
        tx.commit().await?;
        if outcome == AwaitOutcome::Waiting {
            self.events_committed(claim.task_id);
        }
        Ok(outcome)
    }

    pub(super) async fn decide_approval_with(
        &self,
        task: TaskId,
        call: Uuid,
        decision: &ApprovalDecision,
    ) -> Result<DecideOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some((user_id, priority)) = sqlx::query_as::<_, (String, String)>(
            "SELECT user_id, priority FROM tasks WHERE id = $1 FOR NO KEY UPDATE",
        )
        .bind(task.0)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(DecideOutcome::NotFound);
        };
        let decided: Option<Uuid> = sqlx::query_scalar(concat!(
            "WITH a AS (
                UPDATE tool_approvals a SET status = $3, reason = $4, edited_arguments = $5, decided_by = $6,
                       decided_at = now()
                WHERE a.id = $2 AND a.task_id = $1 AND a.status = ",
            approval_status!(Pending),
            "
                RETURNING a.id, a.task_id, a.step_id, a.tool
             ), e AS (
                INSERT INTO task_events (task_id, step_id, kind, data)
                SELECT task_id, step_id, ",
            event_kind!(ApprovalDecided),
            ",
                       jsonb_build_object('call_id', id, 'tool', tool, 'decision', $3::text, 'reason', $4::text,
                                          'decided_by', $6::text, 'edited', $5::jsonb IS NOT NULL)
                FROM a
             )
             SELECT step_id FROM a"
        ))
        .bind(task.0)
        .bind(call)
        .bind(decision.status.as_str())
        .bind(decision.reason.as_deref())
        .bind(decision.arguments.as_ref())
        .bind(&decision.decided_by)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(step) = decided else {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM tool_approvals WHERE id = $1 AND task_id = $2")
                    .bind(call)
                    .bind(task.0)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(match status {
                None => DecideOutcome::NotFound,
                Some(status) => DecideOutcome::AlreadyDecided(status.parse()?),
            });
        };
        // Later statements of the transaction see the decision above.
        let step_ready = sqlx::query(concat!(
            "WITH s AS (
                UPDATE steps SET status = ",
            step_status!(Ready),
            ", updated_at = now()
                WHERE id = $1 AND status = ",
            step_status!(Waiting),
            "
                  AND NOT EXISTS (SELECT 1 FROM tool_approvals WHERE step_id = $1 AND status = ",
            approval_status!(Pending),
            ")
                RETURNING id, task_id
             )
             INSERT INTO task_events (task_id, step_id, kind) SELECT task_id, id, ",
            event_kind!(StepReady),
            " FROM s"
        ))
        .bind(step)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let task_running = step_ready
            && sqlx::query(concat!(
                "UPDATE tasks SET status = ",
                task_status!(Running),
                ", required_action = NULL, updated_at = now()
                 WHERE id = $1 AND status = ",
                task_status!(RequiresAction),
                " AND required_action = ",
                required_action!(ToolApproval),
                "
                   AND NOT EXISTS (SELECT 1 FROM steps WHERE task_id = $1 AND status = ",
                step_status!(Waiting),
                ")"
            ))
            .bind(task.0)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
        tx.commit().await?;
        self.events_committed(task);
        Ok(DecideOutcome::Decided(Decided {
            user_id,
            priority: priority.parse()?,
            step: StepId(step),
            step_ready,
            task_running,
        }))
    }

    pub(super) async fn expired_approvals_with(&self, limit: i64) -> Result<Vec<(TaskId, Uuid)>, StoreError> {
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(concat!(
            "SELECT task_id, id FROM tool_approvals WHERE status = ",
            approval_status!(Pending),
            " AND expires_at < now()
             ORDER BY expires_at LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(task, id)| (TaskId(task), id)).collect())
    }

    pub(super) async fn approval_rows(
        &self,
        task: TaskId,
        filter: ApprovalFilter,
    ) -> Result<Vec<ApprovalRow>, StoreError> {
        let (only_pending, call) = match filter {
            ApprovalFilter::All => (false, None),
            ApprovalFilter::Pending => (true, None),
            ApprovalFilter::Call(id) => (false, Some(id)),
        };
        type Row = (
            Uuid,
            Uuid,
            String,
            String,
            Value,
            String,
            Option<Value>,
            Option<String>,
            Option<String>,
            DateTime<Utc>,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
        );
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT id, step_id, agent, tool, arguments, status, edited_arguments, reason, decided_by,
                    requested_at, expires_at, decided_at
             FROM tool_approvals WHERE task_id = $1 AND (NOT $2 OR status = ",
            approval_status!(Pending),
            ") AND ($3::uuid IS NULL OR id = $3)
             ORDER BY requested_at, id"
        ))
        .bind(task.0)
        .bind(only_pending)
        .bind(call)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(ApprovalRow {
                    id: r.0,
                    task_id: task,
                    step_id: StepId(r.1),
                    agent: r.2,
                    tool: r.3,
                    arguments: r.4,
                    status: r.5.parse::<ApprovalStatus>()?,
                    edited_arguments: r.6,
                    reason: r.7,
                    decided_by: r.8,
                    requested_at: r.9,
                    expires_at: r.10,
                    decided_at: r.11,
                })
            })
            .collect()
    }
}
