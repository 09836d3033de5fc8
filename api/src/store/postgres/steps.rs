//! The two writes every step makes, claim and completion, batched ([`super::batch`]):
//! concurrent claims share one `UPDATE … FROM unnest(…)`, concurrent completions one call of
//! `complete_step` per item inside a single statement and commit.
//!
//! A claim takes the step's lease and charges an attempt; its statement also reads what the
//! step needs to run (dependency outputs, task context, limits), which are final once the
//! step is ready. A completion is fenced by the lease token, locks the task row, promotes the
//! dependants that became ready and completes the task when nothing is left
//! (`complete_step`, migrations 8 and 13).

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{batch::BatchOp, notify::EventNotifier};
use crate::{
    domain::{ApprovalStatus, StepId, TaskId},
    store::{STEP_CONTEXT_MESSAGES, StepClaim, StepCompletion, StoreError, TaskLimits},
};

/// A step to claim with a lease.
pub(super) struct ClaimItem {
    pub step: Uuid,
    pub owner: String,
    pub token: Uuid,
    pub seconds: f64,
}

/// The part of the claim that reads what the step needs, from the claimed rows `c`.
///
/// The dependency outputs are final, because a step only becomes ready once every dependency
/// has completed; so is the task-level context (written with the task, never after). Each
/// dependency is fetched by primary key in a subquery that cannot be flattened: with
/// `id = ANY(depends_on)` or a join, the planner chose sequential scans of every step while
/// its statistics were stale (a young, fast-growing table), making each claim cost O(all
/// steps). The task's limits come along, so the step's budget costs no extra read; so does
/// whether the user has any memory: a user without one costs no embedding and no search.
macro_rules! claimed_rows {
    () => {
        concat!("SELECT c.id, c.task_id, c.title, c.instruction, c.agent, c.attempt, c.max_attempts, c.priority,
                c.user_id, c.description, c.max_cost_usd, c.max_tokens, c.lease_token, c.checkpoint, c.position, c.required,
                c.task_type, c.task_hash, c.warm_start, c.require_approval,
                -- Decisions on calls the step waited for; only a step with a checkpoint can
                -- have any, so a first claim pays no lookup.
                CASE WHEN c.checkpoint IS NULL THEN '[]'::jsonb ELSE
                    (SELECT coalesce(jsonb_agg(jsonb_build_object('turn', a.turn, 'call_id', a.tool_call_id,
                                                                  'status', a.status, 'reason', a.reason,
                                                                  'arguments', a.edited_arguments)), '[]'::jsonb)
                     FROM tool_approvals a WHERE a.step_id = c.id AND a.status <> ", approval_status!(Pending), ")
                END AS decisions,
                (SELECT l.daily_cost_usd FROM user_limits l WHERE l.user_id = c.user_id) AS user_daily_cost_usd,
                EXISTS (SELECT 1 FROM memory_items m WHERE m.owner = c.user_id AND m.deleted_at IS NULL)
                    AS user_has_memories,
                (SELECT coalesce(jsonb_agg(jsonb_build_array(d.title, coalesce(d.output, ''))
                                           ORDER BY d.position), '[]'::jsonb)
                 FROM unnest(c.depends_on) AS dep(id)
                 CROSS JOIN LATERAL (SELECT title, output, position FROM steps
                                     WHERE id = dep.id LIMIT 1) d) AS dependencies,
                (SELECT coalesce(jsonb_agg(jsonb_build_array(m.role, m.content) ORDER BY m.id), '[]'::jsonb)
                 FROM (SELECT id, role, content FROM task_messages
                       WHERE task_id = c.task_id AND step_id IS NULL ORDER BY id DESC LIMIT $5) m) AS context
         FROM c")
    };
}

/// Claims steps in one statement: each step is looked up by primary key from the batch `j`.
/// A step named twice in one batch (a duplicated job) is updated once, with one of the two
/// leases: the other caller finds its token missing from the answer and gets no claim.
///
/// Written so that looking steps up by key is the only plan that is not absurd, whatever the
/// statistics: the task's status is a scalar subquery, not a join (joined, a young database's
/// planner started from the running tasks and scanned every unfinished step for each: 3.1 ms
/// a batch against 0.4), and which states may be claimed is a `CASE`, from which the planner
/// cannot prove the predicate of the partial index `steps_unfinished` and scan all of it.
/// A ready step may be claimed once its backoff is over; a running one, as a takeover, when
/// its lease expired with an attempt left (with none left, `settle_unclaimed_step` fails it).
/// The task must be running (or require action on another branch).
const CLAIM: &str = concat!(
    "WITH j AS (
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::float8[], $6::text[])
                      AS j(id, owner, token, secs, tag)
     ), u AS (
        UPDATE steps s SET status = ",
    step_status!(Running),
    ", attempt = s.attempt + 1, lease_owner = j.owner,
               lease_token = j.token, lease_expires_at = now() + make_interval(secs => j.secs), not_before = NULL,
               started_at = coalesce(s.started_at, now()), updated_at = now()
        FROM j
        WHERE s.id = j.id
          AND CASE s.status WHEN ",
    step_status!(Ready),
    " THEN s.not_before IS NULL OR s.not_before <= now()
                            WHEN ",
    step_status!(Running),
    " THEN s.lease_expires_at < now() AND s.attempt < s.max_attempts
                            ELSE false END
          AND (SELECT t.status FROM tasks t WHERE t.id = s.task_id) IN (",
    active_task!(),
    ")
        RETURNING s.id, s.task_id, s.title, s.instruction, s.agent, s.depends_on, s.attempt, s.max_attempts,
                  s.lease_token, s.checkpoint, s.position, s.required, j.tag
     ), e AS (
        INSERT INTO task_events (task_id, step_id, kind, data)
        SELECT task_id, id, ",
    event_kind!(StepStarted),
    ", jsonb_build_object('attempt', attempt, 'worker', tag) FROM u
        UNION ALL
        SELECT task_id, id, ",
    event_kind!(StepResumed),
    ", jsonb_build_object('model_calls', checkpoint->'model_calls', 'tool_calls', checkpoint->'tool_calls')
        FROM u WHERE checkpoint IS NOT NULL
     ), c AS (
        SELECT u.*, t.priority, t.user_id, t.description, t.max_cost_usd, t.max_tokens, t.task_type, t.task_hash,
               t.warm_start, t.require_approval
        FROM u CROSS JOIN LATERAL (SELECT priority, user_id, description, max_cost_usd, max_tokens, task_type,
                                          task_hash, warm_start, require_approval
                                   FROM tasks WHERE id = u.task_id LIMIT 1) t
     )
     ",
    claimed_rows!()
);

/// Claims steps; wakes the event streams of the claimed steps' tasks.
pub(super) struct ClaimSteps {
    pub events: EventNotifier,
}

#[async_trait::async_trait]
impl BatchOp for ClaimSteps {
    type Item = ClaimItem;
    type Output = Option<StepClaim>;

    async fn one(&self, pool: &PgPool, item: &ClaimItem) -> Result<Option<StepClaim>, StoreError> {
        let claimed = self.many(pool, std::slice::from_ref(item)).await?;
        Ok(claimed.into_iter().next().flatten())
    }

    async fn many(&self, pool: &PgPool, items: &[ClaimItem]) -> Result<Vec<Option<StepClaim>>, StoreError> {
        // In step order, as every batch locks them, so two processes' batches that share a
        // step (a duplicated job) cannot deadlock.
        let mut order: Vec<&ClaimItem> = items.iter().collect();
        order.sort_by_key(|i| i.step);
        let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM)
            .bind(order.iter().map(|i| i.step).collect::<Vec<_>>())
            .bind(order.iter().map(|i| i.owner.as_str()).collect::<Vec<_>>())
            .bind(order.iter().map(|i| i.token).collect::<Vec<_>>())
            .bind(order.iter().map(|i| i.seconds).collect::<Vec<_>>())
            .bind(STEP_CONTEXT_MESSAGES)
            .bind(order.iter().map(|i| worker_tag(&i.owner)).collect::<Vec<_>>())
            .fetch_all(pool)
            .await?;
        let mut claimed: std::collections::HashMap<Uuid, ClaimRow> =
            rows.into_iter().map(|row| (row.lease_token, row)).collect();
        items.iter().map(|item| claimed.remove(&item.token).map(StepClaim::try_from).transpose()).collect()
    }

    fn committed(&self, _: &ClaimItem, claim: &Option<StepClaim>) {
        if let Some(claim) = claim {
            self.events.notify(claim.task_id);
        }
    }
}

/// A step's result to write, fenced by its lease, with the attempt's messages.
pub(super) struct CompleteItem {
    pub task: Uuid,
    pub step: Uuid,
    pub token: Uuid,
    pub output: String,
    pub messages: Vec<(String, String)>,
}

/// Completes steps; wakes the event streams of their tasks. `None`: the lease was lost.
pub(super) struct CompleteSteps {
    pub events: EventNotifier,
}

type CompletedRow = (bool, Vec<Uuid>, bool, Option<String>, Option<Uuid>, Option<String>, Option<String>);

fn completion(
    (completed, ready, task_completed, result, waiting, priority, task_status): CompletedRow,
) -> Result<Option<StepCompletion>, StoreError> {
    if !completed {
        return Ok(None);
    }
    let waiting = match (waiting, priority) {
        (Some(task), Some(priority)) => Some((TaskId(task), priority.parse()?)),
        _ => None,
    };
    Ok(Some(StepCompletion {
        ready: ready.into_iter().map(StepId).collect(),
        task_result: if task_completed { result } else { None },
        task_status: task_status.filter(|_| task_completed).map(|s| s.parse()).transpose()?,
        waiting: task_completed.then_some(waiting),
    }))
}

#[async_trait::async_trait]
impl BatchOp for CompleteSteps {
    type Item = CompleteItem;
    type Output = Option<StepCompletion>;

    async fn one(&self, pool: &PgPool, item: &CompleteItem) -> Result<Option<StepCompletion>, StoreError> {
        let row: CompletedRow = sqlx::query_as(
            "SELECT completed, ready, task_completed, result, waiting_task, waiting_priority, task_status
             FROM complete_step($1, $2, $3, $4, $5, $6)",
        )
        .bind(item.task)
        .bind(item.step)
        .bind(item.token)
        .bind(&item.output)
        .bind(item.messages.iter().map(|(role, _)| role.as_str()).collect::<Vec<_>>())
        .bind(item.messages.iter().map(|(_, content)| content.as_str()).collect::<Vec<_>>())
        .fetch_one(pool)
        .await?;
        completion(row)
    }

    /// One statement, one commit: `complete_step` once per item, in task order. Each call's
    /// statements see the calls before it (a volatile function takes a fresh snapshot per
    /// statement), so siblings completed in one batch promote their shared dependant once,
    /// as when they commit one after the other; the task row locks are taken in task order,
    /// as every batch takes them, so two processes' batches cannot deadlock on them.
    async fn many(&self, pool: &PgPool, items: &[CompleteItem]) -> Result<Vec<Option<StepCompletion>>, StoreError> {
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| items[i].task);
        let messages: Vec<Value> = order
            .iter()
            .map(|&i| {
                Value::from(items[i].messages.iter().map(|(r, c)| vec![r.as_str(), c.as_str()]).collect::<Vec<_>>())
            })
            .collect();
        #[allow(clippy::type_complexity)]
        let rows: Vec<(
            i64,
            bool,
            Vec<Uuid>,
            bool,
            Option<String>,
            Option<Uuid>,
            Option<String>,
            Option<String>,
        )> = sqlx::query_as(
            "SELECT j.n, r.completed, r.ready, r.task_completed, r.result, r.waiting_task, r.waiting_priority,
                    r.task_status
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::jsonb[])
                  WITH ORDINALITY AS j(task, step, token, output, messages, n)
             CROSS JOIN LATERAL complete_step(
                 j.task, j.step, j.token, j.output,
                 ARRAY(SELECT m->>0 FROM jsonb_array_elements(j.messages) WITH ORDINALITY AS x(m, i) ORDER BY x.i),
                 ARRAY(SELECT m->>1 FROM jsonb_array_elements(j.messages) WITH ORDINALITY AS x(m, i) ORDER BY x.i)) r
             ORDER BY j.n",
        )
        .bind(order.iter().map(|&i| items[i].task).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| items[i].step).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| items[i].token).collect::<Vec<_>>())
        .bind(order.iter().map(|&i| items[i].output.as_str()).collect::<Vec<_>>())
        .bind(messages)
        .fetch_all(pool)
        .await?;
        if rows.len() != items.len() {
            return Err(StoreError::Corrupt(format!("{} completions answered for {} steps", rows.len(), items.len())));
        }
        let mut outputs: Vec<Option<Option<StepCompletion>>> = (0..items.len()).map(|_| None).collect();
        for ((_, completed, ready, task_completed, result, waiting, priority, status), &i) in
            rows.into_iter().zip(&order)
        {
            outputs[i] = Some(completion((completed, ready, task_completed, result, waiting, priority, status))?);
        }
        Ok(outputs.into_iter().map(|o| o.unwrap_or_default()).collect())
    }

    fn committed(&self, item: &CompleteItem, done: &Option<StepCompletion>) {
        if done.is_some() {
            self.events.notify(TaskId(item.task));
        }
    }
}

/// The last `-`-separated part of a worker's name: the random tag the app ends every worker
/// name with (`worker_name`). Tenants read events: they see the worker's random tag, never
/// its host or process id (`GET /workers`, for admins, shows the whole name with the same tag).
pub(super) fn worker_tag(owner: &str) -> &str {
    owner.rsplit('-').next().unwrap_or(owner)
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    id: Uuid,
    task_id: Uuid,
    title: String,
    instruction: String,
    agent: String,
    attempt: i32,
    max_attempts: i32,
    priority: String,
    user_id: String,
    description: String,
    max_cost_usd: Option<f64>,
    max_tokens: Option<i64>,
    lease_token: Uuid,
    checkpoint: Option<Value>,
    position: i32,
    required: bool,
    task_type: Option<String>,
    task_hash: Option<String>,
    warm_start: bool,
    require_approval: Vec<String>,
    decisions: Value,
    user_daily_cost_usd: Option<f64>,
    user_has_memories: bool,
    dependencies: Value,
    context: Value,
}

impl TryFrom<ClaimRow> for StepClaim {
    type Error = StoreError;

    fn try_from(r: ClaimRow) -> Result<Self, StoreError> {
        let dependency_outputs: Vec<(String, String)> =
            serde_json::from_value(r.dependencies).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let context: Vec<(String, String)> =
            serde_json::from_value(r.context).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let decisions: Vec<DecisionRow> =
            serde_json::from_value(r.decisions).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(StepClaim {
            step_id: StepId(r.id),
            task_id: TaskId(r.task_id),
            title: r.title,
            instruction: r.instruction,
            agent: r.agent,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            priority: r.priority.parse()?,
            limits: TaskLimits {
                user_id: r.user_id.clone(),
                max_cost_usd: r.max_cost_usd,
                max_tokens: r.max_tokens,
                user_daily_cost_usd: r.user_daily_cost_usd,
            },
            user_id: r.user_id,
            user_has_memories: r.user_has_memories,
            task_description: r.description,
            dependency_outputs,
            context,
            checkpoint: r.checkpoint,
            position: r.position,
            required: r.required,
            task_type: r.task_type,
            task_hash: r.task_hash,
            warm_start: r.warm_start,
            require_approval: r.require_approval,
            decisions: decisions.into_iter().map(DecisionRow::into_decided).collect::<Result<_, _>>()?,
        })
    }
}

/// A decided `tool_approvals` row as the claim reads it.
#[derive(serde::Deserialize)]
struct DecisionRow {
    turn: i32,
    call_id: String,
    status: String,
    reason: Option<String>,
    arguments: Option<Value>,
}

impl DecisionRow {
    fn into_decided(self) -> Result<agents::DecidedCall, StoreError> {
        let decision = match self.status.parse::<ApprovalStatus>()? {
            ApprovalStatus::Approved => agents::Decision::Approve { arguments: self.arguments },
            // An expired or cancelled call is a denial the model can read the reason of.
            ApprovalStatus::Denied | ApprovalStatus::Expired | ApprovalStatus::Cancelled => {
                agents::Decision::Deny { reason: self.reason.unwrap_or_else(|| "no reason given".into()) }
            }
            ApprovalStatus::Pending => return Err(StoreError::Corrupt("a pending approval read as decided".into())),
        };
        Ok(agents::DecidedCall { turn: u32::try_from(self.turn).unwrap_or(0), call_id: self.call_id, decision })
    }
}
