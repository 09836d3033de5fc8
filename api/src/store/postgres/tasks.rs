//! The API's side of the store: creating, reading and listing tasks.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    PgStore,
    rows::{StepRow, TaskRow, step_columns, task_columns},
};
use crate::{
    domain::{RequiredAction, StepId, TaskId, TaskStatus},
    store::{
        AddContext, ApprovalFilter, ApprovalRow, CancelOutcome, CostReport, CreateOutcome, EarlierTask, NewTask,
        RetryOutcome, Step, StoreError, Task, TaskDetail, TaskPage, TaskQuery, TaskStore, ThreadHistory, ToolCallRow,
    },
};

#[async_trait::async_trait]
impl TaskStore for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_task(&self, new: &NewTask) -> Result<CreateOutcome, StoreError> {
        // A task with an idempotency key may meet an earlier one (a replay or a conflict),
        // which its own statement sorts out; the others share inserts with concurrent ones.
        if new.idempotency_key.is_some() {
            return super::creates::create_one(&self.pool, new).await;
        }
        self.creates.run(new.clone()).await?
    }

    async fn task(&self, id: TaskId) -> Result<Option<TaskDetail>, StoreError> {
        const TASK: &str = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1");
        const STEPS: &str = concat!("SELECT ", step_columns!(), " FROM steps WHERE task_id = $1 ORDER BY position");
        let Some(task) = sqlx::query_as::<_, TaskRow>(TASK).bind(id.0).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let steps = sqlx::query_as::<_, StepRow>(STEPS)
            .bind(id.0)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(Step::try_from)
            .collect::<Result<_, _>>()?;
        let task: Task = task.try_into()?;
        let pending_approvals = if task.required_action == Some(RequiredAction::ToolApproval) {
            self.approval_rows(id, ApprovalFilter::Pending).await?
        } else {
            Vec::new()
        };
        Ok(Some(TaskDetail { task, steps, pending_approvals }))
    }

    async fn task_owner(&self, id: TaskId) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT user_id FROM tasks WHERE id = $1").bind(id.0).fetch_optional(&self.pool).await?)
    }

    async fn task_status(&self, id: TaskId) -> Result<Option<TaskStatus>, StoreError> {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1").bind(id.0).fetch_optional(&self.pool).await?;
        Ok(status.map(|s| s.parse()).transpose()?)
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage, StoreError> {
        let (after_at, after_id): (Option<DateTime<Utc>>, Option<Uuid>) =
            query.after.map(|(at, id)| (Some(at), Some(id.0))).unwrap_or_default();
        macro_rules! filtered {
            () => {
                "
               AND ($1::text IS NULL OR user_id = $1)
               AND ($2::text IS NULL OR status = $2)
               AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
               AND ($6::text IS NULL OR task_type = $6)
             ORDER BY created_at DESC, id DESC
             LIMIT $5"
            };
        }
        const ALL: &str = concat!("SELECT ", task_columns!(), " FROM tasks WHERE true", filtered!());
        // A statement of its own rather than an optional filter, so that its plan always
        // starts from the thread (the root by primary key, its follow-ups from `tasks_thread`),
        // whatever plan the statement without it settles on.
        const THREAD: &str =
            concat!("SELECT ", task_columns!(), " FROM tasks WHERE (id = $7 OR thread_id = $7)", filtered!());
        // One extra row tells whether another page follows.
        let statement = sqlx::query_as::<_, TaskRow>(if query.thread_id.is_some() { THREAD } else { ALL })
            .bind(&query.user_id)
            .bind(query.status.map(|s| s.as_str()))
            .bind(after_at)
            .bind(after_id)
            .bind(i64::from(query.limit) + 1)
            .bind(&query.task_type);
        let statement = match query.thread_id {
            Some(thread) => statement.bind(thread.0),
            None => statement,
        };
        let mut tasks =
            statement.fetch_all(&self.pool).await?.into_iter().map(Task::try_from).collect::<Result<Vec<_>, _>>()?;
        let more = tasks.len() > query.limit as usize;
        tasks.truncate(query.limit as usize);
        let next = if more { tasks.last().map(|t| (t.created_at, t.id)) } else { None };
        Ok(TaskPage { tasks, next })
    }

    async fn thread_history(
        &self,
        parent: TaskId,
        earlier: i64,
        recent_work: i64,
    ) -> Result<ThreadHistory, StoreError> {
        // Up the branch by primary key, one generation per row, at most `earlier` above the
        // parent (depth 0, left out: the caller has it).
        const EARLIER: &str = "WITH RECURSIVE up (id, parent, depth) AS (
                SELECT id, parent_task_id, 0 FROM tasks WHERE id = $1
                UNION ALL
                SELECT t.id, t.parent_task_id, up.depth + 1
                FROM up JOIN tasks t ON t.id = up.parent
                WHERE up.depth < $2
             )
             SELECT t.description, t.status, t.result, t.error
             FROM up JOIN tasks t ON t.id = up.id
             WHERE up.depth > 0
             ORDER BY up.depth";
        // What the parent's agents said and their tools answered; step prompts (which repeat
        // the goal and the dependencies' outputs) and the task-level context are left out.
        const WORK: &str = "SELECT role, content FROM task_messages
             WHERE task_id = $1 AND step_id IS NOT NULL AND role = ANY($2) AND btrim(content) <> ''
             ORDER BY id DESC
             LIMIT $3";
        let rows: Vec<(String, String, Option<String>, Option<String>)> =
            sqlx::query_as(EARLIER).bind(parent.0).bind(earlier).fetch_all(&self.pool).await?;
        let earlier = rows
            .into_iter()
            .map(|(description, status, result, error)| {
                Ok(EarlierTask { description, status: status.parse()?, result, error })
            })
            .collect::<Result<_, StoreError>>()?;
        let roles = [agents::Role::Assistant.as_str(), agents::Role::Tool.as_str()];
        let recent_work =
            sqlx::query_as(WORK).bind(parent.0).bind(&roles[..]).bind(recent_work).fetch_all(&self.pool).await?;
        Ok(ThreadHistory { earlier, recent_work })
    }

    async fn approvals(&self, task: TaskId, filter: ApprovalFilter) -> Result<Vec<ApprovalRow>, StoreError> {
        self.approval_rows(task, filter).await
    }

    async fn unfinished_counts(&self) -> Result<Vec<(TaskStatus, i64)>, StoreError> {
        // Matches the partial index tasks_unfinished, so the count never scans finished work.
        const SQL: &str = concat!(
            "SELECT status, count(*) FROM tasks WHERE status IN (",
            task_status!(Pending, Planning, Running, RequiresAction),
            ") GROUP BY status"
        );
        let rows: Vec<(String, i64)> = sqlx::query_as(SQL).fetch_all(&self.pool).await?;
        rows.into_iter().map(|(status, n)| Ok((status.parse()?, n))).collect()
    }

    async fn task_cost(&self, id: TaskId) -> Result<Option<CostReport>, StoreError> {
        self.cost_report(id).await
    }

    async fn tool_calls(&self, id: TaskId) -> Result<Option<Vec<ToolCallRow>>, StoreError> {
        self.tool_call_rows(id).await
    }

    async fn add_context(&self, id: TaskId, messages: &[(String, String)]) -> Result<AddContext, StoreError> {
        // The task's row is locked first, so a planning claim (which moves it on) either
        // comes before and the task is no longer pending, or after and its steps see these.
        const SQL: &str = concat!(
            "WITH t AS (
                SELECT status FROM tasks WHERE id = $1 FOR NO KEY UPDATE
             ), n AS (
                SELECT count(*) AS held FROM task_messages WHERE task_id = $1 AND step_id IS NULL
             ), ins AS (
                INSERT INTO task_messages (task_id, role, content)
                SELECT $1, x.role, x.content
                FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS x(role, content, k)
                WHERE (SELECT status FROM t) = ",
            task_status!(Pending),
            " AND (SELECT held FROM n) + cardinality($2::text[]) <= $4
                ORDER BY x.k
                RETURNING role, content
             )
             SELECT t.status, n.held, (SELECT count(*) FROM ins) FROM t, n"
        );
        let row: Option<(String, i64, i64)> = sqlx::query_as(SQL)
            .bind(id.0)
            .bind(messages.iter().map(|(role, _)| role.as_str()).collect::<Vec<_>>())
            .bind(messages.iter().map(|(_, content)| content.as_str()).collect::<Vec<_>>())
            .bind(crate::store::STEP_CONTEXT_MESSAGES)
            .fetch_optional(&self.pool)
            .await?;
        let Some((status, held, added)) = row else { return Ok(AddContext::NotFound) };
        let status: TaskStatus = status.parse()?;
        if status != TaskStatus::Pending {
            return Ok(AddContext::NotPending(status));
        }
        if added == 0 && !messages.is_empty() {
            return Ok(AddContext::Full(held));
        }
        let context = sqlx::query_as(
            "SELECT role, content FROM task_messages WHERE task_id = $1 AND step_id IS NULL ORDER BY id",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(AddContext::Added(context))
    }

    async fn plan_versions(&self, id: TaskId) -> Result<Vec<crate::store::PlanVersion>, StoreError> {
        self.versions_of(id, false).await
    }

    async fn current_plan_version(&self, id: TaskId) -> Result<Option<crate::store::PlanVersion>, StoreError> {
        Ok(self.versions_of(id, true).await?.pop())
    }

    async fn event_stream_start(
        &self,
        task: TaskId,
        after: Option<i64>,
    ) -> Result<crate::store::EventStreamStart, StoreError> {
        use crate::store::{EventCursor, EventStreamStart, TASK_END_EVENTS};
        let end_kinds: Vec<&str> = TASK_END_EVENTS.iter().map(|k| k.as_str()).collect();
        let (task_exists, xact, ended): (bool, Option<i64>, bool) = sqlx::query_as(concat!(
            "WITH c AS (SELECT xact_id, id FROM task_events WHERE task_id = $1 AND id = $2)
             SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1),
                    (SELECT xact_id::text::bigint FROM c),
                    -- Ended unless a retry (POST /tasks/{id}/retry) came after the last end:
                    -- then the stream follows the new run.
                    coalesce((SELECT e.kind = ANY($3) FROM task_events e, c
                              WHERE e.task_id = $1 AND (e.kind = ANY($3) OR e.kind = ",
            event_kind!(TaskRetried),
            ")
                                AND (e.xact_id, e.id) <= (c.xact_id, c.id)
                              ORDER BY e.xact_id DESC, e.id DESC LIMIT 1), false)"
        ))
        .bind(task.0)
        .bind(after)
        .bind(end_kinds)
        .fetch_one(&self.pool)
        .await?;
        Ok(match (task_exists, after, xact) {
            (false, _, _) => EventStreamStart::NoTask,
            (true, None, _) => EventStreamStart::Resume { cursor: EventCursor::default(), ended: false },
            (true, Some(_), None) => EventStreamStart::NoSuchEvent,
            (true, Some(id), Some(xact)) => EventStreamStart::Resume { cursor: EventCursor { xact, id }, ended },
        })
    }

    async fn task_events_after(
        &self,
        task: TaskId,
        cursor: crate::store::EventCursor,
        limit: i64,
    ) -> Result<crate::store::EventBatch, StoreError> {
        use crate::{
            domain::StepId,
            store::{EventBatch, EventCursor, TaskEvent},
        };
        type Row = (i64, Uuid, Option<Uuid>, String, serde_json::Value, DateTime<Utc>, i64, bool);
        // `settled`: the writing transaction is older than every running one, so no event
        // can still appear before this one. Settled rows form a prefix of this order.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, task_id, step_id, kind, data, created_at, xact_id::text::bigint AS xact,
                    xact_id < pg_snapshot_xmin(pg_current_snapshot()) AS settled
             FROM task_events
             WHERE task_id = $1 AND (xact_id, id) > (($2::bigint)::text::xid8, $3)
             ORDER BY xact_id, id
             LIMIT $4",
        )
        .bind(task.0)
        .bind(cursor.xact)
        .bind(cursor.id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let held_back = rows.iter().any(|row| !row.7);
        let events = rows
            .into_iter()
            .take_while(|row| row.7)
            .map(|(id, task_id, step_id, kind, data, created_at, xact, _)| {
                Ok(TaskEvent {
                    id,
                    task_id: TaskId(task_id),
                    step_id: step_id.map(StepId),
                    kind: kind.parse()?,
                    data,
                    created_at,
                    cursor: EventCursor { xact, id },
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(EventBatch { events, held_back })
    }
}

/// Cancel and retry, which the lifecycle drives (`ExecutionStore`).
impl PgStore {
    pub(super) async fn cancel(&self, id: TaskId) -> Result<CancelOutcome, StoreError> {
        // One statement: the task, its waiting steps and the events change together. Running
        // steps are left to their workers, which stop at the next model or tool call.
        let row: Option<(String, bool)> = sqlx::query_as(concat!(
            "WITH cur AS (
                SELECT id, status FROM tasks WHERE id = $1 FOR UPDATE
             ), t AS (
                UPDATE tasks SET status = ",
            task_status!(Cancelled),
            ", lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, required_action = NULL,
                       error = 'cancelled by request', completed_at = now(), updated_at = now()
                FROM cur WHERE tasks.id = cur.id AND cur.status IN (",
            task_status!(Pending, Planning, Running, RequiresAction),
            ")
                RETURNING tasks.*
             ), s AS (
                UPDATE steps SET status = ",
            step_status!(Cancelled),
            ", updated_at = now(), completed_at = now()
                WHERE task_id IN (SELECT id FROM t) AND status IN (",
            step_status!(Pending, Ready, Waiting),
            ")
                RETURNING id, task_id
             ), a AS (
                UPDATE tool_approvals SET status = ",
            approval_status!(Cancelled),
            ", decided_at = now(), decided_by = 'system', reason = 'the task was cancelled'
                WHERE task_id IN (SELECT id FROM t) AND status = ",
            approval_status!(Pending),
            "
             ), e AS (
                INSERT INTO task_events (task_id, step_id, kind)
                SELECT task_id, id, ",
            event_kind!(StepCancelled),
            " FROM s
                UNION ALL
                SELECT id, NULL::uuid, ",
            event_kind!(TaskCancelled),
            " FROM t CROSS JOIN LATERAL queue_task_webhook(t::tasks)
             )
             SELECT cur.status, EXISTS (SELECT 1 FROM t) FROM cur"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => CancelOutcome::NotFound,
            Some((_, true)) => {
                self.events_committed(id);
                CancelOutcome::Cancelled
            }
            Some((status, false)) => CancelOutcome::AlreadyFinished(status.parse()?),
        })
    }

    pub(super) async fn retry(&self, id: TaskId) -> Result<RetryOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some((status, priority)) =
            sqlx::query_as::<_, (String, String)>("SELECT status, priority FROM tasks WHERE id = $1 FOR NO KEY UPDATE")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(RetryOutcome::NotFound);
        };
        let status: TaskStatus = status.parse()?;
        if !matches!(status, TaskStatus::Failed | TaskStatus::Partial) {
            return Ok(RetryOutcome::NotRetryable(status));
        }
        // Steps that did not complete start over with fresh attempts; completed ones keep their
        // outputs, and those whose dependencies all completed are ready at once. A task that
        // failed while planning has no steps and is planned again. A step's checkpoint stays,
        // so it continues its conversation (summary included), with its turn count reset: a
        // step that failed at its iteration limit gets a fresh allowance.
        let planned: bool = sqlx::query_scalar(concat!(
            "WITH again AS (
                UPDATE steps SET status = ",
            step_status!(Pending),
            ", attempt = 0, error = NULL, output = NULL, lease_owner = NULL,
                       lease_token = NULL, lease_expires_at = NULL, not_before = NULL, completed_at = NULL,
                       checkpoint = checkpoint - 'turns', updated_at = now()
                WHERE task_id = $1 AND status IN (",
            step_status!(Failed, Skipped, Cancelled),
            ")
             )
             SELECT EXISTS (SELECT 1 FROM steps WHERE task_id = $1)"
        ))
        .bind(id.0)
        .fetch_one(&mut *tx)
        .await?;
        // A second statement, so it sees the steps reset above (one statement may not
        // update a row twice).
        let ready: Vec<Uuid> = sqlx::query_scalar(concat!(
            "UPDATE steps s SET status = ",
            step_status!(Ready),
            "
             WHERE s.task_id = $1 AND s.status = ",
            step_status!(Pending),
            "
               AND NOT EXISTS (SELECT 1 FROM unnest(s.depends_on) AS dep(id)
                               WHERE (SELECT d.status FROM steps d WHERE d.id = dep.id) <> ",
            step_status!(Completed),
            ")
             RETURNING s.id"
        ))
        .bind(id.0)
        .fetch_all(&mut *tx)
        .await?;
        let next = if planned { TaskStatus::Running } else { TaskStatus::Pending };
        let run: i32 = sqlx::query_scalar(concat!(
            "WITH t AS (
                UPDATE tasks SET status = $2, error = NULL, error_code = NULL, result = NULL, completed_at = NULL,
                       lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, plan_attempts = 0, replan_reason = NULL,
                       run = run + 1, updated_at = now()
                WHERE id = $1
                RETURNING id, run
             ), e AS (
                INSERT INTO task_events (task_id, step_id, kind, data)
                SELECT id, NULL::uuid, ",
            event_kind!(TaskRetried),
            ", jsonb_build_object('run', run, 'steps_ready', cardinality($3::uuid[]))
                FROM t
                UNION ALL
                SELECT $1, r.id, ",
            event_kind!(StepReady),
            ", '{}'::jsonb FROM unnest($3::uuid[]) AS r(id)
             )
             SELECT run FROM t"
        ))
        .bind(id.0)
        .bind(next.as_str())
        .bind(&ready)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.events_committed(id);
        Ok(RetryOutcome::Retried {
            run,
            priority: priority.parse()?,
            replan: !planned,
            ready: ready.into_iter().map(StepId).collect(),
        })
    }
}
