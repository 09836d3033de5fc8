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
    domain::{StepId, TaskId, TaskStatus},
    store::{Lease, NewStep, PlanVersion, ReplanContext, ReplanSave, Step, StoreError},
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
