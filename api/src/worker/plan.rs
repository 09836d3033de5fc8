//! Plan jobs: `pending → planning → running`, with the plan's steps inserted and the root
//! steps enqueued.

use planner::validate;

use super::{JobError, WorkerConfig, WorkerDeps};
use crate::{
    domain::{StepId, TaskId},
    queue::Job,
    store::{Lease, NewStep},
};

pub(super) async fn run(deps: &WorkerDeps, config: &WorkerConfig, task: TaskId) -> Result<(), JobError> {
    let lease = Lease::new(&config.id, config.lease);
    let Some(claim) = deps.store.claim_planning(task, &lease).await? else {
        tracing::debug!(%task, "plan job dropped: the task is not waiting for a plan");
        return Ok(());
    };

    let known = deps.agents.names();
    let plan = match deps.planner.plan(&claim.description).await {
        Ok(plan) => validate(&plan, &known, &deps.plan_limits).map(|()| plan),
        Err(e) => Err(e),
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            tracing::warn!(%task, error = %e, "planning failed");
            deps.store.fail_planning(task, &lease, &format!("planning failed: {e}")).await?;
            return Ok(());
        }
    };

    let ids: Vec<StepId> = plan.steps.iter().map(|_| StepId::new()).collect();
    let steps: Vec<NewStep> = plan
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| NewStep {
            id: ids[i],
            position: i as i32,
            title: s.title,
            instruction: s.instruction,
            agent: s.agent,
            depends_on: s.depends_on.iter().map(|&d| ids[d]).collect(),
            max_attempts: 3,
        })
        .collect();
    let Some(ready) = deps.store.save_plan(task, &lease, &steps).await? else {
        tracing::warn!(%task, "plan discarded: the planning lease was lost");
        return Ok(());
    };
    tracing::info!(%task, steps = steps.len(), ready = ready.len(), "task planned");
    let jobs: Vec<Job> = ready.into_iter().map(|s| Job::step(task, s)).collect();
    deps.dispatcher.enqueue(&jobs).await?;
    Ok(())
}
