//! Plan jobs: claim the task's planning, plan it (or take the cached plan), and hand the
//! outcome to the lifecycle, which saves the plan (`pending → planning → running`, the root
//! steps enqueued) or fails the task. A plan is reused from the plan cache when the same
//! user planned the same task (same normalised description, same agents, same planner)
//! before, unless the task opted out. A task whose user is at the running-task cap stays
//! pending, marked waiting, and its job is done (`crate::budget::capacity`); the model calls of LLM planning are
//! reserved against the task's budget like the agents' calls.

use planner::{Plan, PlanError, validate};
use sha2::{Digest, Sha256};

use super::{JobContext, JobError};
use crate::{
    budget::{
        MeteredPlanner, StoreBudget,
        planning::{MeteredPlannerParts, Planned},
    },
    domain::{StepId, TaskId},
    lifecycle::Settled,
    providers::TaskPlanner,
    queue::Job,
    store::{CapacityClaim, Holder, Lease, NewStep, PlanOrigin, PlanSave, PlanningClaim},
};

pub(super) async fn run(ctx: &JobContext<'_>, job: &Job) -> Result<(), JobError> {
    let deps = ctx.deps;
    let task = job.task();
    let lease = Lease::new(&ctx.config.id, ctx.config.lease);
    let claimed = deps.lifecycle.claim_planning(task, &lease, ctx.config.budgets.max_running_tasks).await?;
    let (mut claim, user_id) = match claimed {
        CapacityClaim::Claimed { claim, user_id } => (claim, user_id),
        CapacityClaim::AtCapacity => {
            tracing::debug!(%task, "the user is at the running-task cap; the task waits to be woken");
            return Ok(());
        }
        CapacityClaim::NotClaimable => {
            tracing::debug!(%task, "plan job dropped: the task is not waiting for a plan");
            return Ok(());
        }
        CapacityClaim::Exhausted { user_id } => {
            tracing::warn!(%task, %user_id, "planning failed: every attempt was taken over from a dead worker");
            return Ok(());
        }
        CapacityClaim::Unknown => {
            tracing::error!(
                %task,
                "plan job names a task this database does not know: another deployment shares this Redis, or the task was deleted; dropped"
            );
            return Ok(());
        }
    };
    match claim.replan_reason.take() {
        Some(reason) => super::replan::replan_claimed(ctx, task, &lease, claim, &user_id, reason).await,
        None => plan_claimed(ctx, task, &lease, claim, &user_id).await,
    }
}

/// The agents a task's plan may use: its hints that are still in the catalog, in the order
/// given (the first is the heuristic planner's default), or every agent without hints; the
/// error when none of the hinted agents exists any more.
pub(super) fn usable_agents<'a>(deps: &'a super::WorkerDeps, hints: &[String]) -> Result<Vec<&'a str>, String> {
    if hints.is_empty() {
        return Ok(deps.agents.names());
    }
    let known: Vec<&str> =
        hints.iter().filter_map(|hint| deps.agents.get(hint).map(|agent| agent.name.as_str())).collect();
    if known.is_empty() {
        return Err(format!("none of the hinted agents ({}) exists", hints.join(", ")));
    }
    Ok(known)
}

async fn plan_claimed(
    ctx: &JobContext<'_>,
    task: TaskId,
    lease: &Lease,
    claim: PlanningClaim,
    user_id: &str,
) -> Result<(), JobError> {
    let deps = ctx.deps;

    // Agent hints narrow the agents the plan may use to those still in the catalog.
    let known = match usable_agents(deps, &claim.agent_hints) {
        Ok(known) => known,
        Err(why) => {
            deps.lifecycle.fail_planning(task, user_id, lease, &format!("planning failed: {why}"), false).await?;
            return Ok(());
        }
    };
    let hints: Vec<String> =
        if claim.agent_hints.is_empty() { Vec::new() } else { known.iter().map(|s| s.to_string()).collect() };
    let hash = plan_hash(user_id, &claim.description, &known, deps.planner.version());
    let cached = if claim.use_plan_cache { cached_plan(ctx, &hash, &known).await? } else { None };
    let from_cache = cached.is_some();
    let plan = match cached {
        Some(plan) => Ok(plan),
        None => match tokio::select! {
            afresh = plan_afresh(ctx, task, lease, &claim.description, hints) => afresh?,
            // Renewed while the model plans, so a slow planner is neither taken over by
            // another worker nor has its budget reservations swept as stale.
            reason = super::lease::keep_lease(ctx, format!("the planning of task {task}"), lease, || {
                deps.store.renew_planning_lease(task, lease)
            }) => {
                tracing::warn!(%task, %reason, "planning abandoned: the planning lease was lost");
                return Ok(());
            }
        } {
            Afresh::Plan(Ok(plan)) => validate(&plan, &known, &deps.plan_limits).map(|()| plan),
            Afresh::Plan(Err(e)) => Err(e),
            Afresh::OverBudget(error) => {
                tracing::warn!(%task, %error, "planning stopped: the budget is spent");
                deps.lifecycle.fail_planning(task, user_id, lease, &format!("planning failed: {error}"), true).await?;
                return Ok(());
            }
        },
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            tracing::warn!(%task, error = %e, "planning failed");
            deps.lifecycle.fail_planning(task, user_id, lease, &format!("planning failed: {e}"), false).await?;
            return Ok(());
        }
    };
    // A fresh plan is remembered in the cache by the statement that saves it.
    let fresh = (!from_cache)
        .then(|| serde_json::to_value(&plan).inspect_err(|e| tracing::warn!(%task, error = %e, "plan not cached")).ok())
        .flatten();
    let origin = match (from_cache, &fresh) {
        (true, _) => PlanOrigin::Cache,
        (false, Some(plan)) => PlanOrigin::Fresh { hash: &hash, planner: deps.planner.version(), plan },
        (false, None) => PlanOrigin::Uncached,
    };

    let ids: Vec<StepId> = plan.steps.iter().map(|_| StepId::new()).collect();
    let steps: Vec<NewStep> = plan
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let agent_attempts = deps.agents.get(&s.agent).map(|a| a.max_attempts as i32).unwrap_or(3);
            NewStep {
                id: ids[i],
                position: i as i32,
                title: s.title,
                instruction: s.instruction,
                max_attempts: claim.max_attempts.unwrap_or(agent_attempts),
                agent: s.agent,
                depends_on: s.depends_on.iter().map(|&d| ids[d]).collect(),
                required: s.required,
            }
        })
        .collect();
    let plan = PlanSave { steps: &steps, origin, created_by: deps.planner.version(), paused: claim.paused };
    match deps.lifecycle.save_plan(task, user_id, claim.priority, lease, plan).await? {
        Settled::Applied(_) => tracing::info!(%task, steps = steps.len(), from_cache, "task planned"),
        Settled::Stale => tracing::warn!(%task, "plan discarded: the planning lease was lost"),
    }
    Ok(())
}

/// The model's planner for one planning (or replanning) of `task`: its calls reserved against
/// the task's budget and recorded as the task's planning, under the planning lease, offered
/// only the hinted agents (all, without hints).
pub(super) async fn metered_planner(
    ctx: &JobContext<'_>,
    task: TaskId,
    lease: &Lease,
    hints: Vec<String>,
) -> Result<MeteredPlanner, JobError> {
    let deps = ctx.deps;
    let holder = Holder { task, step: None, lease_token: lease.token };
    let budget = StoreBudget::load(deps.store.clone(), holder, &ctx.config.budgets).await?;
    Ok(MeteredPlanner::new(MeteredPlannerParts {
        llm: deps.runner.llm().clone(),
        store: deps.store.clone(),
        prices: deps.prices.clone(),
        metrics: deps.metrics.clone(),
        budget,
        agents: deps
            .agents
            .iter()
            .filter(|a| hints.is_empty() || hints.contains(&a.name))
            .map(|a| (a.name.clone(), a.description.clone()))
            .collect(),
        hints,
        limits: deps.plan_limits,
    }))
}

enum Afresh {
    Plan(Result<Plan, PlanError>),
    /// A planning call did not fit in the task's budget or the user's quota.
    OverBudget(agents::BudgetExceeded),
}

/// Asks the planner. The model's planning calls are reserved and recorded as they are made
/// (they belong to the task, not to a step), under the planning lease.
async fn plan_afresh(
    ctx: &JobContext<'_>,
    task: TaskId,
    lease: &Lease,
    description: &str,
    hints: Vec<String>,
) -> Result<Afresh, JobError> {
    let deps = ctx.deps;
    if let TaskPlanner::Heuristic(h) = &*deps.planner {
        return Ok(Afresh::Plan(h.clone().with_hints(hints).plan_description(description)));
    }
    let planner = metered_planner(ctx, task, lease, hints).await?;
    match planner.plan(description).await {
        Planned::Outcome(outcome) => {
            if let Some(reason) = &outcome.fallback_reason {
                tracing::warn!(%task, %reason, "the model's plan was not usable; planned heuristically");
            }
            Ok(Afresh::Plan(outcome.plan))
        }
        Planned::OverBudget(e) => Ok(Afresh::OverBudget(e)),
        // Left for redelivery: planning must not go on unaccounted.
        Planned::Unaccounted(reason) => Err(JobError::Record(agents::RecordError(reason))),
    }
}

/// A cached plan that is still valid for today's agents, if any.
async fn cached_plan(ctx: &JobContext<'_>, hash: &str, known: &[&str]) -> Result<Option<Plan>, JobError> {
    let Some(value) = ctx.deps.store.cached_plan(hash).await? else { return Ok(None) };
    match serde_json::from_value::<Plan>(value) {
        Ok(plan) if validate(&plan, known, &ctx.deps.plan_limits).is_ok() => Ok(Some(plan)),
        _ => Ok(None), // made under other limits or a broken row: plan afresh
    }
}

/// sha256 over the user, the normalised description (whitespace collapsed), the sorted
/// agent names and the planner version: anything that could change the plan changes the
/// key. The user is part of it so the cache is per user: a tenant can neither learn that
/// another submitted the same description (a fast plan, `from_cache`) nor plant a plan that
/// another's task would run.
fn plan_hash(user_id: &str, description: &str, agents: &[&str], planner: &str) -> String {
    let mut sorted = agents.to_vec();
    sorted.sort_unstable();
    let normalised = description.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut hasher = Sha256::new();
    // Each part ends with a NUL, which none of them can contain, so parts cannot run together.
    for part in [user_id, normalised.as_str(), &sorted.join(","), planner] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::plan_hash;

    #[test]
    fn the_hash_ignores_spacing_and_agent_order_but_not_content() {
        let a = plan_hash("ann", "Write  a\n report.", &["writer", "analyst"], "heuristic-1");
        assert_eq!(a, plan_hash("ann", " Write a report. ", &["analyst", "writer"], "heuristic-1"));
        assert_ne!(a, plan_hash("ann", "Write a memo.", &["analyst", "writer"], "heuristic-1"));
        assert_ne!(a, plan_hash("ann", "Write a report.", &["analyst"], "heuristic-1"));
        assert_ne!(a, plan_hash("ann", "Write a report.", &["analyst", "writer"], "llm-1"));
    }

    #[test]
    fn each_user_has_their_own_key() {
        let agents = ["analyst", "writer"];
        assert_ne!(
            plan_hash("ann", "Write a report.", &agents, "h"),
            plan_hash("bob", "Write a report.", &agents, "h")
        );
        // The separator keeps the user apart from the description.
        assert_ne!(plan_hash("ann", "x Write", &agents, "h"), plan_hash("ann x", "Write", &agents, "h"));
    }
}
