//! Step jobs: claim the step with a lease, run its agent while renewing the lease, then
//! complete it (fenced by the lease) and enqueue the steps that became ready.

use agents::{AgentError, StepInput};

use super::{JobError, WorkerConfig, WorkerDeps, recorder::StoreRecorder};
use crate::{
    domain::{StepId, TaskId},
    queue::Job,
    store::{Lease, StepClaim},
};

pub(super) async fn run(deps: &WorkerDeps, config: &WorkerConfig, task: TaskId, step: StepId) -> Result<(), JobError> {
    let lease = Lease::new(&config.id, config.lease);
    let Some(claim) = deps.store.claim_step(step, &lease).await? else {
        tracing::debug!(%task, %step, "step job dropped: the step is not ready");
        return Ok(());
    };

    let result = tokio::select! {
        result = run_agent(deps, &claim) => result,
        lost = keep_lease(deps, step, &lease) => {
            tracing::warn!(%task, %step, reason = %lost, "step abandoned: its lease was lost");
            return Ok(());
        }
    };

    match result {
        Ok(output) => {
            let Some(done) = deps.store.complete_step(&claim, &lease, &output).await? else {
                tracing::warn!(%task, %step, "step result discarded: the lease was lost");
                return Ok(());
            };
            if done.task_completed {
                tracing::info!(%task, "task completed");
            }
            let jobs: Vec<Job> = done.ready.into_iter().map(|s| Job::step(task, s)).collect();
            deps.dispatcher.enqueue(&jobs).await?;
        }
        Err(AgentError::Record(e)) => {
            // Accounting failed (the database is unreachable): leave the job for redelivery
            // rather than run on unaccounted.
            return Err(JobError::Record(e));
        }
        Err(e) => {
            tracing::warn!(%task, %step, error = %e, "step failed");
            deps.store.fail_step(&claim, &lease, &e.to_string()).await?;
        }
    }
    Ok(())
}

async fn run_agent(deps: &WorkerDeps, claim: &StepClaim) -> Result<String, AgentError> {
    let Some(spec) = deps.agents.get(&claim.agent) else {
        return Err(AgentError::UnknownAgent(claim.agent.clone()));
    };
    let recorder = StoreRecorder { store: deps.store.clone(), task: claim.task_id, step: Some(claim.step_id) };
    let input = StepInput {
        task_description: &claim.task_description,
        step_title: &claim.title,
        instruction: &claim.instruction,
        dependency_outputs: &claim.dependency_outputs,
    };
    deps.runner.run(spec, &input, &recorder).await.map(|out| out.text)
}

/// Renews the lease at a third of its length; returns only when it can no longer be held.
async fn keep_lease(deps: &WorkerDeps, step: StepId, lease: &Lease) -> String {
    let mut tick = tokio::time::interval(lease.duration / 3);
    tick.tick().await; // the first tick is immediate and the lease is fresh
    let mut failures = 0;
    loop {
        tick.tick().await;
        match deps.store.renew_step_lease(step, lease).await {
            Ok(true) => failures = 0,
            Ok(false) => return "another worker holds the step now".into(),
            // A blip is survivable: the lease still has two thirds of its time.
            Err(e) if failures < 1 => {
                failures += 1;
                tracing::warn!(%step, error = %e, "could not renew the step lease");
            }
            Err(e) => return format!("could not renew the lease: {e}"),
        }
    }
}
