//! Plan versions (`plan_versions`) and replans. The first version is written by the
//! statement that saves a plan (`save_plan`), later ones by the statements that replace the
//! steps that had not completed (a replan's revision).
//!
//! A replan is owed once a task that replans is settled with a failed step: `end_settled_task`
//! (migration 24) sends it back to `pending` with `replan_reason` set, in the commit that
//! settled it. Its plan job claims the planning as any plan job does (so a redelivered or
//! duplicated job finds nothing to claim), reads [`ReplanContext`], and ends it with one
//! lease-fenced statement: the revision saved ([`PgStore::replace_steps`]) or, without one,
//! the task ended as it would have been without replanning.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{
    PgStore,
    rows::{StepRow, step_columns},
};
use crate::{
    domain::{RequiredAction, StepId, StepStatus, TaskId, TaskStatus},
    store::{
        EditOutcome, Lease, NewStep, PlanEdit, PlanVersion, ReplanContext, ReplanSave, StartOutcome, Step, StoreError,
    },
};

type VersionRow = (i32, Value, String, Option<String>, Value, DateTime<Utc>);

fn version((version, steps, created_by, reason, replaced, created_at): VersionRow) -> Result<PlanVersion, StoreError> {
    let corrupt =
        |what: &str, e: serde_json::Error| StoreError::Corrupt(format!("plan version {version}: {what}: {e}"));
    Ok(PlanVersion {
        version,
        steps: serde_json::from_value(steps).map_err(|e| corrupt("steps", e))?,
        created_by,
        reason,
        replaced: serde_json::from_value(replaced).map_err(|e| corrupt("replaced", e))?,
        created_at,
    })
}

impl PgStore {
    pub(super) async fn versions_of(&self, id: TaskId, newest_only: bool) -> Result<Vec<PlanVersion>, StoreError> {
        let rows: Vec<VersionRow> = sqlx::query_as(
            "SELECT version, steps, created_by, reason, replaced, created_at FROM plan_versions
             WHERE task_id = $1
             ORDER BY version DESC
             LIMIT CASE WHEN $2 THEN 1 END",
        )
        .bind(id.0)
        .bind(newest_only)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().rev().map(version).collect()
    }
}

/// Replans: the context a replan reads, and the two ways it ends.
impl PgStore {
    pub(super) async fn replan_context_of(&self, id: TaskId) -> Result<ReplanContext, StoreError> {
        const STEPS: &str = concat!("SELECT ", step_columns!(), " FROM steps WHERE task_id = $1 ORDER BY position");
        let steps = sqlx::query_as::<_, StepRow>(STEPS)
            .bind(id.0)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(Step::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let earlier_failures: Vec<(String, String)> = sqlx::query_as(concat!(
            "SELECT r->>'instruction', r->>'agent'
             FROM plan_versions v CROSS JOIN LATERAL jsonb_array_elements(v.replaced) WITH ORDINALITY AS x(r, n)
             WHERE v.task_id = $1 AND r->>'status' = ",
            step_status!(Failed),
            "
             ORDER BY v.version, x.n"
        ))
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(ReplanContext { steps, earlier_failures })
    }

    pub(super) async fn replace_steps(
        &self,
        id: TaskId,
        lease: &Lease,
        revision: ReplanSave<'_>,
    ) -> Result<Option<(i32, Vec<StepId>)>, StoreError> {
        let to_json = |steps: &[NewStep]| serde_json::to_value(steps).map_err(|e| StoreError::Corrupt(e.to_string()));
        // A new step is ready when all it needs has completed: it depends on no other new step.
        let new: Vec<Uuid> = revision.steps.iter().map(|s| s.id.0).collect();
        let ready: Vec<Uuid> = revision
            .steps
            .iter()
            .filter(|s| s.depends_on.iter().all(|d| !new.contains(&d.0)))
            .map(|s| s.id.0)
            .collect();
        // One statement: the task runs again, the steps that had not completed give way to the
        // new ones (the version records them as they ended), the version and the events are
        // written; or nothing happens because the planning lease was lost. New positions
        // follow every earlier one, so plan order stays completed steps first.
        let saved: Option<(i32, Vec<Uuid>)> = sqlx::query_as(concat!(
            "WITH t AS (
                UPDATE tasks SET status = ",
            task_status!(Running),
            ", lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                       replans = replans + 1, replan_reason = NULL, updated_at = now()
                WHERE id = $1 AND status = ",
            task_status!(Planning),
            " AND lease_token = $2
                RETURNING id
             ), gone AS (
                DELETE FROM steps d USING t WHERE d.task_id = t.id AND d.status <> ",
            step_status!(Completed),
            "
                RETURNING d.id, d.position, d.title, d.instruction, d.agent, d.status, d.error
             ), s AS (
                INSERT INTO steps (id, task_id, position, title, instruction, agent, depends_on, status, max_attempts,
                                   required)
                SELECT x.id, t.id, x.position, x.title, x.instruction, x.agent,
                       ARRAY(SELECT jsonb_array_elements_text(x.depends_on)::uuid),
                       CASE WHEN x.id = ANY($4) THEN ",
            step_status!(Ready),
            " ELSE ",
            step_status!(Pending),
            " END,
                       x.max_attempts, x.required
                FROM t, jsonb_to_recordset($3) AS x(id uuid, position int, title text, instruction text,
                                                    agent text, depends_on jsonb, max_attempts int, required boolean)
                RETURNING id, status
             ), v AS (
                INSERT INTO plan_versions (task_id, version, steps, created_by, reason, replaced)
                SELECT t.id, (SELECT coalesce(max(p.version), 0) + 1 FROM plan_versions p WHERE p.task_id = t.id),
                       $5, $6, $7,
                       (SELECT coalesce(jsonb_agg(jsonb_build_object('id', g.id, 'title', g.title,
                                                                     'instruction', g.instruction, 'agent', g.agent,
                                                                     'status', g.status, 'error', g.error)
                                                  ORDER BY g.position), '[]'::jsonb)
                        FROM gone g)
                FROM t
                RETURNING version
             ), e AS (
                INSERT INTO task_events (task_id, step_id, kind, data)
                SELECT $1, NULL::uuid, ",
            event_kind!(TaskReplanned),
            ",
                       jsonb_build_object('version', v.version, 'reason', $7::text, 'created_by', $6::text,
                                          'steps', jsonb_array_length($3))
                FROM v
                UNION ALL
                SELECT $1, s.id, ",
            event_kind!(StepReady),
            ", '{}'::jsonb FROM s WHERE s.status = ",
            step_status!(Ready),
            "
             )
             SELECT v.version, coalesce((SELECT array_agg(s.id) FROM s WHERE s.status = ",
            step_status!(Ready),
            "), '{}') FROM v"
        ))
        .bind(id.0)
        .bind(lease.token)
        .bind(to_json(revision.steps)?)
        .bind(&ready)
        .bind(to_json(revision.plan)?)
        .bind(revision.created_by)
        .bind(revision.reason)
        .fetch_optional(&self.pool)
        .await?;
        if saved.is_some() {
            self.events_committed(id);
        }
        Ok(saved.map(|(version, ready)| (version, ready.into_iter().map(StepId).collect())))
    }

    pub(super) async fn end_without_replan(&self, id: TaskId, lease: &Lease) -> Result<Option<TaskStatus>, StoreError> {
        let ended: Option<String> = sqlx::query_scalar("SELECT end_unreplanned_task($1, $2)")
            .bind(id.0)
            .bind(lease.token)
            .fetch_one(&self.pool)
            .await?;
        if ended.is_some() {
            self.events_committed(id);
        }
        Ok(ended.map(|s| s.parse()).transpose()?)
    }
}

/// A person's edits and the start of a paused task. Both first lock the task's row, as every
/// step completion and failure does, so no dependency completes, no step fails and no other
/// edit or start commits while they read the steps and write theirs: what they read is what
/// they change.
impl PgStore {
    pub(super) async fn edit_steps(&self, id: TaskId, edit: PlanEdit<'_>) -> Result<EditOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some((status, required_action, max_attempts, user_id, priority)) =
            sqlx::query_as::<_, (String, Option<String>, Option<i32>, String, String)>(
                "SELECT status, required_action, max_attempts, user_id, priority FROM tasks WHERE id = $1
                 FOR NO KEY UPDATE",
            )
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(EditOutcome::NotFound);
        };
        let status: TaskStatus = status.parse()?;
        let paused = status == TaskStatus::RequiresAction
            && required_action.as_deref() == Some(RequiredAction::PlanApproval.as_str());
        if !paused && status != TaskStatus::Running {
            return Ok(EditOutcome::NotEditable(status));
        }
        // A task planned before versions were recorded is at version 1.
        let current: i32 = sqlx::query_scalar(
            "SELECT coalesce((SELECT max(version) FROM plan_versions WHERE task_id = $1),
                             (SELECT 1 FROM steps WHERE task_id = $1 LIMIT 1), 0)",
        )
        .bind(id.0)
        .fetch_one(&mut *tx)
        .await?;
        if current != edit.expected_version {
            return Ok(EditOutcome::StaleVersion { current });
        }
        let steps: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT id, status FROM steps WHERE task_id = $1").bind(id.0).fetch_all(&mut *tx).await?;
        let mut kept = Vec::new();
        let (mut completed, mut failed) = (Vec::new(), Vec::new());
        for (step, status) in &steps {
            match status.parse::<StepStatus>()? {
                StepStatus::Pending | StepStatus::Skipped => {}
                other => {
                    kept.push(StepId(*step));
                    match other {
                        StepStatus::Completed => completed.push(*step),
                        StepStatus::Failed => failed.push(*step),
                        _ => {}
                    }
                }
            }
        }
        let mut expected = edit.kept.to_vec();
        expected.sort();
        kept.sort();
        // A new step built on a failed one would wait for ever.
        let on_failed = edit.steps.iter().any(|s| s.depends_on.iter().any(|d| failed.contains(&d.0)));
        if kept != expected || on_failed {
            return Ok(EditOutcome::Moved);
        }

        // The task's own attempts override the agents'.
        let with_attempts = |s: &NewStep| NewStep { max_attempts: max_attempts.unwrap_or(s.max_attempts), ..s.clone() };
        let new: Vec<NewStep> = edit.steps.iter().map(with_attempts).collect();
        let plan: Vec<NewStep> =
            edit.plan.iter().map(|s| if edit.kept.contains(&s.id) { s.clone() } else { with_attempts(s) }).collect();
        let to_json = |steps: &[NewStep]| serde_json::to_value(steps).map_err(|e| StoreError::Corrupt(e.to_string()));
        let version = current + 1;
        // One statement: the steps that had not started give way to the new ones (ready when
        // all they need has completed, unless the task is paused), the version records them
        // as they were, and the events are written.
        let ready: Vec<Uuid> = sqlx::query_scalar(concat!(
            "WITH gone AS (
                DELETE FROM steps WHERE task_id = $1 AND status IN (",
            step_status!(Pending, Skipped),
            ")
                RETURNING id, position, title, instruction, agent, status, error
             ), s AS (
                INSERT INTO steps (id, task_id, position, title, instruction, agent, depends_on, status, max_attempts,
                                   required)
                SELECT x.id, $1, x.position, x.title, x.instruction, x.agent,
                       ARRAY(SELECT jsonb_array_elements_text(x.depends_on)::uuid),
                       CASE WHEN NOT $3 AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(x.depends_on) AS d(id)
                                                        WHERE d.id::uuid <> ALL($4::uuid[]))
                            THEN ",
            step_status!(Ready),
            " ELSE ",
            step_status!(Pending),
            " END,
                       x.max_attempts, x.required
                FROM jsonb_to_recordset($2) AS x(id uuid, position int, title text, instruction text, agent text,
                                                 depends_on jsonb, max_attempts int, required boolean)
                RETURNING id, status
             ), v AS (
                INSERT INTO plan_versions (task_id, version, steps, created_by, replaced)
                SELECT $1, $5, $6, $7,
                       (SELECT coalesce(jsonb_agg(jsonb_build_object('id', g.id, 'title', g.title,
                                                                     'instruction', g.instruction, 'agent', g.agent,
                                                                     'status', g.status, 'error', g.error)
                                                  ORDER BY g.position), '[]'::jsonb)
                        FROM gone g)
                RETURNING version
             ), e AS (
                INSERT INTO task_events (task_id, step_id, kind, data)
                SELECT $1, NULL::uuid, ",
            event_kind!(PlanEdited),
            ", jsonb_build_object('version', v.version, 'created_by', $7::text,
                                                        'steps', jsonb_array_length($6))
                FROM v
                UNION ALL
                SELECT $1, s.id, ",
            event_kind!(StepReady),
            ", '{}'::jsonb FROM s WHERE s.status = ",
            step_status!(Ready),
            "
             ), t AS (
                UPDATE tasks SET updated_at = now() WHERE id = $1
             )
             SELECT coalesce(array_agg(s.id) FILTER (WHERE s.status = ",
            step_status!(Ready),
            "), '{}') FROM s"
        ))
        .bind(id.0)
        .bind(to_json(&new)?)
        .bind(paused)
        .bind(&completed)
        .bind(version)
        .bind(to_json(&plan)?)
        .bind(edit.created_by)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.events_committed(id);
        Ok(EditOutcome::Edited {
            version,
            ready: ready.into_iter().map(StepId).collect(),
            paused,
            user_id,
            priority: priority.parse()?,
        })
    }

    pub(super) async fn start_paused(&self, id: TaskId) -> Result<StartOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(status) = sqlx::query_scalar::<_, String>("SELECT status FROM tasks WHERE id = $1 FOR NO KEY UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(StartOutcome::NotFound);
        };
        // A statement of its own after the lock: it sees every edit committed before.
        let started: Option<(String, String, Vec<Uuid>)> = sqlx::query_as(concat!(
            "WITH t AS (
                UPDATE tasks SET status = ",
            task_status!(Running),
            ", required_action = NULL, updated_at = now()
                WHERE id = $1 AND status = ",
            task_status!(RequiresAction),
            " AND required_action = ",
            required_action!(PlanApproval),
            "
                RETURNING id, user_id, priority
             ), r AS (
                UPDATE steps s SET status = ",
            step_status!(Ready),
            ", updated_at = now()
                FROM t WHERE s.task_id = t.id AND s.status = ",
            step_status!(Pending),
            "
                  AND NOT EXISTS (SELECT 1 FROM unnest(s.depends_on) AS dep(id)
                                  WHERE (SELECT d.status FROM steps d WHERE d.id = dep.id) <> ",
            step_status!(Completed),
            ")
                RETURNING s.id
             ), e AS (
                INSERT INTO task_events (task_id, step_id, kind, data)
                SELECT t.id, NULL::uuid, ",
            event_kind!(TaskStarted),
            ", jsonb_build_object('steps_ready', (SELECT count(*) FROM r)) FROM t
                UNION ALL
                SELECT $1, r.id, ",
            event_kind!(StepReady),
            ", '{}'::jsonb FROM r
             )
             SELECT t.user_id, t.priority, coalesce((SELECT array_agg(r.id) FROM r), '{}') FROM t"
        ))
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((user_id, priority, ready)) = started else {
            return Ok(StartOutcome::NotPaused(status.parse()?));
        };
        tx.commit().await?;
        self.events_committed(id);
        Ok(StartOutcome::Started {
            ready: ready.into_iter().map(StepId).collect(),
            user_id,
            priority: priority.parse()?,
        })
    }
}
