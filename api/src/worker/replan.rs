//! Replan jobs: a plan job whose task owes a replan (a step failed for good, nothing else could
//! run, and the task replans with replans left; see `crate::store`'s `plans` module). The job
//! has claimed the planning like any plan job; here it asks the planner for a revised plan of
//! the work that did not complete, given the goal, what completed with its outputs, and what
//! failed with why, and hands the outcome to the lifecycle: `SaveReplan` (the steps that had
//! not completed replaced, the next plan version recorded, `task_replanned`) or, when the
//! planner sees no other way, `ReplanEndsPartial`/`ReplanEndsFailed` (the task ends as it
//! would have without replanning). The model calls of an LLM replan are reserved against the
//! task's budget and recorded like planning's.

use std::collections::HashMap;

use planner::{CurrentStep, PlannedStep, ReplanRequest, Revision, StepState, validate_revision};

use super::{JobContext, JobError};
use crate::{
    budget::planning::Planned,
    domain::{StepId, StepStatus, TaskId},
    providers::TaskPlanner,
    store::{Lease, NewStep, PlanningClaim, ReplanContext, ReplanSave},
};

pub(super) async fn replan_claimed(
    ctx: &JobContext<'_>,
    task: TaskId,
    lease: &Lease,
    claim: PlanningClaim,
    user_id: &str,
    reason: String,
) -> Result<(), JobError> {
    let deps = ctx.deps;
    let context = deps.store.replan_context(task).await?;
    let request = replan_request(&claim.description, &context);
    let known = match super::plan::usable_agents(deps, &claim.agent_hints) {
        Ok(known) => known,
        Err(why) => return give_up(ctx, task, user_id, lease, &why).await,
    };
    let hints: Vec<String> =
        if claim.agent_hints.is_empty() { Vec::new() } else { known.iter().map(|s| s.to_string()).collect() };

    let revised = tokio::select! {
        revised = revise(ctx, task, lease, &request, hints) => revised?,
        // Renewed while the model replans, as while it plans.
        why = super::lease::keep_lease(ctx, format!("the replanning of task {task}"), lease, || {
            deps.store.renew_planning_lease(task, lease)
        }) => {
            tracing::warn!(%task, reason = %why, "replanning abandoned: the planning lease was lost");
            return Ok(());
        }
    };
    let revision = match revised {
        Revised::Revision(Ok(Some(revision))) => validate_revision(&request, &revision, &known, &deps.plan_limits)
            .map(|()| revision)
            .map_err(|e| format!("the revised plan is invalid: {e}")),
        Revised::Revision(Ok(None)) => Err("the planner sees no other way to do the work".to_owned()),
        Revised::Revision(Err(e)) => Err(format!("replanning failed: {e}")),
        Revised::OverBudget(error) => {
            tracing::warn!(%task, %error, "replanning stopped: the budget is spent");
            deps.lifecycle.fail_planning(task, user_id, lease, &format!("replanning failed: {error}"), true).await?;
            return Ok(());
        }
    };
    let revision = match revision {
        Ok(revision) => revision,
        Err(why) => return give_up(ctx, task, user_id, lease, &why).await,
    };

    let (steps, plan) = new_steps(ctx, &context, &revision, claim.max_attempts);
    let save = ReplanSave { steps: &steps, plan: &plan, created_by: deps.planner.version(), reason: &reason };
    match deps.lifecycle.save_replan(task, user_id, claim.priority, lease, save).await? {
        Some(version) => tracing::info!(%task, version, steps = steps.len(), %reason, "task replanned"),
        None => tracing::warn!(%task, "revised plan discarded: the planning lease was lost"),
    }
    Ok(())
}

/// No revised plan: the task ends as it would have without replanning.
async fn give_up(ctx: &JobContext<'_>, task: TaskId, user_id: &str, lease: &Lease, why: &str) -> Result<(), JobError> {
    tracing::warn!(%task, %why, "no revised plan; the task ends as it would have without replanning");
    ctx.deps.lifecycle.end_unreplanned(task, user_id, lease).await?;
    Ok(())
}

/// The planner's request: the task's steps in plan order with where each stands.
fn replan_request(goal: &str, context: &ReplanContext) -> ReplanRequest {
    let index: HashMap<StepId, usize> = context.steps.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
    let steps = context
        .steps
        .iter()
        .map(|s| CurrentStep {
            step: PlannedStep {
                title: s.title.clone(),
                instruction: s.instruction.clone(),
                agent: s.agent.clone(),
                depends_on: s.depends_on.iter().filter_map(|d| index.get(d).copied()).collect(),
                required: s.required,
            },
            state: match s.status {
                StepStatus::Completed => StepState::Completed { output: s.output.clone().unwrap_or_default() },
                StepStatus::Failed => StepState::Failed { error: s.error.clone().unwrap_or_default() },
                _ => StepState::NotRun,
            },
        })
        .collect();
    ReplanRequest { goal: goal.to_owned(), steps, earlier_failures: context.earlier_failures.clone() }
}

/// The revision's steps, to insert, and the whole revised plan (the completed steps first),
/// to record. New steps take positions after every step the task has had, so plan order stays
/// completed steps first, and a dependency index below the number of completed steps names
/// one of them.
fn new_steps(
    ctx: &JobContext<'_>,
    context: &ReplanContext,
    revision: &Revision,
    max_attempts: Option<i32>,
) -> (Vec<NewStep>, Vec<NewStep>) {
    let kept: Vec<NewStep> = context
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Completed)
        .map(|s| NewStep {
            id: s.id,
            position: s.position,
            title: s.title.clone(),
            instruction: s.instruction.clone(),
            agent: s.agent.clone(),
            depends_on: s.depends_on.clone(),
            max_attempts: s.max_attempts,
            required: s.required,
        })
        .collect();
    let first = context.steps.iter().map(|s| s.position).max().map_or(0, |p| p + 1);
    let ids: Vec<StepId> = revision.steps.iter().map(|_| StepId::new()).collect();
    let id_of = |d: usize| if d < kept.len() { kept[d].id } else { ids[d - kept.len()] };
    let steps: Vec<NewStep> = revision
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let agent_attempts = ctx.deps.agents.get(&s.agent).map(|a| a.max_attempts as i32).unwrap_or(3);
            NewStep {
                id: ids[i],
                position: first + i as i32,
                title: s.title.clone(),
                instruction: s.instruction.clone(),
                agent: s.agent.clone(),
                depends_on: s.depends_on.iter().map(|&d| id_of(d)).collect(),
                max_attempts: max_attempts.unwrap_or(agent_attempts),
                required: s.required,
            }
        })
        .collect();
    let plan = kept.into_iter().chain(steps.iter().cloned()).collect();
    (steps, plan)
}

enum Revised {
    Revision(Result<Option<Revision>, planner::PlanError>),
    /// A replanning call did not fit in the task's budget or the user's quota.
    OverBudget(agents::BudgetExceeded),
}

/// Asks the planner for a revision: the heuristic planner at once, the model's through a
/// metered planner, its calls recorded as the task's planning.
async fn revise(
    ctx: &JobContext<'_>,
    task: TaskId,
    lease: &Lease,
    request: &ReplanRequest,
    hints: Vec<String>,
) -> Result<Revised, JobError> {
    let deps = ctx.deps;
    if let TaskPlanner::Heuristic(h) = &*deps.planner {
        return Ok(Revised::Revision(h.clone().with_hints(hints).replan_request(request)));
    }
    let planner = super::plan::metered_planner(ctx, task, lease, hints).await?;
    match planner.replan(request).await {
        Planned::Outcome(outcome) => {
            if let Some(reason) = &outcome.fallback_reason {
                tracing::warn!(%task, %reason, "the model's revised plan was not usable; replanned heuristically");
            }
            Ok(Revised::Revision(outcome.revision))
        }
        Planned::OverBudget(e) => Ok(Revised::OverBudget(e)),
        // Left for redelivery: replanning must not go on unaccounted.
        Planned::Unaccounted(reason) => Err(JobError::Record(agents::RecordError(reason))),
    }
}
