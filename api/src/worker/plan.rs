//! Plan jobs: `pending → planning → running`, with the plan's steps inserted and the root
//! steps enqueued. A plan is reused from the plan cache when the same task (same normalised
//! description, same agents, same planner) was planned before, unless the task opted out.

use agents::LlmCallRecord;
use planner::{Plan, PlanError, validate};
use sha2::{Digest, Sha256};

use super::{JobContext, JobError};
use crate::{
    domain::{StepId, TaskId},
    providers::TaskPlanner,
    queue::Job,
    store::{Lease, NewStep},
};

pub(super) async fn run(ctx: &JobContext<'_>, task: TaskId) -> Result<(), JobError> {
    let deps = ctx.deps;
    let lease = Lease::new(&ctx.config.id, ctx.config.lease);
    let Some(claim) = deps.store.claim_planning(task, &lease).await? else {
        tracing::debug!(%task, "plan job dropped: the task is not waiting for a plan");
        return Ok(());
    };

    let known = deps.agents.names();
    let hash = plan_hash(&claim.description, &known, deps.planner.version());
    let cached = if claim.use_plan_cache { cached_plan(ctx, &hash, &known).await? } else { None };
    let from_cache = cached.is_some();
    let plan = match cached {
        Some(plan) => Ok(plan),
        None => match plan_afresh(ctx, task, &claim.description).await? {
            Ok(plan) => validate(&plan, &known, &deps.plan_limits).map(|()| plan),
            Err(e) => Err(e),
        },
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            tracing::warn!(%task, error = %e, "planning failed");
            if deps.store.fail_planning(task, &lease, &format!("planning failed: {e}")).await? {
                deps.metrics.tasks_finished.with_label_values(&["failed"]).inc();
            }
            return Ok(());
        }
    };
    if !from_cache {
        match serde_json::to_value(&plan) {
            Ok(value) => deps.store.cache_plan(&hash, deps.planner.version(), &value).await?,
            Err(e) => tracing::warn!(%task, error = %e, "plan not cached"),
        }
    }

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
            }
        })
        .collect();
    let Some(ready) = deps.store.save_plan(task, &lease, &steps, from_cache).await? else {
        tracing::warn!(%task, "plan discarded: the planning lease was lost");
        return Ok(());
    };
    tracing::info!(%task, steps = steps.len(), ready = ready.len(), from_cache, "task planned");
    let jobs: Vec<Job> = ready.into_iter().map(|s| Job::step(task, s, 1, claim.priority)).collect();
    deps.dispatcher.enqueue(&jobs).await?;
    Ok(())
}

/// Asks the planner, and records the model calls planning made (they belong to the task,
/// not to a step).
async fn plan_afresh(
    ctx: &JobContext<'_>,
    task: TaskId,
    description: &str,
) -> Result<Result<Plan, PlanError>, JobError> {
    let deps = ctx.deps;
    let llm = match &*deps.planner {
        TaskPlanner::Heuristic(h) => return Ok(h.plan_description(description)),
        TaskPlanner::Llm(llm) => llm,
    };
    let outcome = llm.plan_with_usage(description).await;
    if let Some(reason) = &outcome.fallback_reason {
        tracing::warn!(%task, %reason, "the model's plan was not usable; planned heuristically");
    }
    for call in &outcome.calls {
        let cost_usd = deps.prices.cost(&call.model, &call.usage).unwrap_or_else(|| {
            tracing::warn!(model = %call.model, "model has no price; its calls are recorded at zero cost");
            0.0
        });
        let record = LlmCallRecord {
            provider: call.provider.clone(),
            model: call.model.clone(),
            usage: call.usage,
            cost_usd,
            latency_ms: call.latency_ms,
        };
        let latency = std::time::Duration::from_secs_f64(call.latency_ms.max(0.0) / 1000.0);
        deps.metrics.observe_llm_call(&call.provider, &call.model, &call.usage, cost_usd, latency);
        deps.store.record_llm_call(task, None, &record).await?;
    }
    Ok(outcome.plan)
}

/// A cached plan that is still valid for today's agents, if any.
async fn cached_plan(ctx: &JobContext<'_>, hash: &str, known: &[&str]) -> Result<Option<Plan>, JobError> {
    let Some(value) = ctx.deps.store.cached_plan(hash).await? else { return Ok(None) };
    match serde_json::from_value::<Plan>(value) {
        Ok(plan) if validate(&plan, known, &ctx.deps.plan_limits).is_ok() => Ok(Some(plan)),
        _ => Ok(None), // made under other limits or a broken row: plan afresh
    }
}

/// sha256 over the normalised description (whitespace collapsed), the sorted agent names
/// and the planner version: anything that could change the plan changes the key.
fn plan_hash(description: &str, agents: &[&str], planner: &str) -> String {
    let mut sorted = agents.to_vec();
    sorted.sort_unstable();
    let normalised = description.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut hasher = Sha256::new();
    for part in [normalised.as_str(), &sorted.join(","), planner] {
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
        let a = plan_hash("Write  a\n report.", &["writer", "analyst"], "heuristic-1");
        assert_eq!(a, plan_hash(" Write a report. ", &["analyst", "writer"], "heuristic-1"));
        assert_ne!(a, plan_hash("Write a memo.", &["analyst", "writer"], "heuristic-1"));
        assert_ne!(a, plan_hash("Write a report.", &["analyst"], "heuristic-1"));
        assert_ne!(a, plan_hash("Write a report.", &["analyst", "writer"], "llm-1"));
    }
}
