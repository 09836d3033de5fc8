//! Step jobs: claim the step with a lease, run its agent while renewing the lease, then hand
//! the outcome to the lifecycle (`crate::lifecycle::Lifecycle::settle_step`), which
//! completes, retries, fails, stops or releases it and does what follows. A failed attempt
//! is retried with backoff while attempts remain; a cancelled task's step stops at its next
//! model or tool call; at the end of a shutdown's grace period the step is released for
//! another worker. Every model call is reserved against the task's budget and
//! the user's quota first; one that does not fit fails the step and the task at once with
//! `budget_exceeded`. An attempt that ends without settling its reservations (timeout,
//! release, lost lease) gives them back.

use agents::{AgentError, ChatMessage, Checkpoint, LlmError, Role, StepInput, WarmContext};
use memory::SearchQuery;

use super::{JobContext, JobError, backoff_delay, recorder::StoreRecorder};
use crate::{
    budget::StoreBudget,
    domain::{StepId, TaskId},
    lifecycle::{Event, Settled, StepOutcome},
    store::{Holder, Lease, LeaseState, StepClaim, Unclaimed},
};

enum Outcome {
    Finished(Result<String, AgentError>),
    TimedOut,
    LeaseLost(String),
    Released,
}

pub(super) async fn run(ctx: &JobContext<'_>, task: TaskId, step: StepId) -> Result<(), JobError> {
    let deps = ctx.deps;
    let lease = Lease::new(&ctx.config.id, ctx.config.lease);
    let Some(claim) = deps.lifecycle.claim_step(step, &lease).await? else {
        match deps.lifecycle.step_unclaimed(task, step).await? {
            Unclaimed::Exhausted { .. } => {
                tracing::warn!(%task, %step, "step failed: every attempt was taken over from a dead worker")
            }
            Unclaimed::Unknown => tracing::error!(
                %task, %step,
                "step job names work this database does not know: another deployment shares this Redis, or the work was deleted; dropped"
            ),
            Unclaimed::Elsewhere => tracing::debug!(%task, %step, "step job dropped: the step is not ready"),
        }
        return Ok(());
    };
    let history: Vec<ChatMessage> = claim
        .context
        .iter()
        .filter_map(|(role, content)| Some(ChatMessage::new(role.parse::<Role>().ok()?, content.clone())))
        .collect();

    let resume = checkpoint(&claim);
    // Read again when the step resumes: its earlier attempts showed the model that context.
    let warm = warm_context(ctx, &claim).await;
    // A resumed step keeps the prompt it started with, memories included.
    let memories = if resume.is_some() { Vec::new() } else { relevant_memories(ctx, &claim).await };
    let holder = Holder { task, step: Some(step), lease_token: lease.token };
    let budget = StoreBudget::with_limits(deps.store.clone(), holder, &ctx.config.budgets, Some(&claim.limits));
    let recorder =
        StoreRecorder::new(deps.store.clone(), deps.metrics.clone(), task, step, lease.token, resume.as_ref());
    let require_approval: Vec<String> =
        deps.tools_require_approval.iter().chain(&claim.require_approval).cloned().collect();
    let input = AgentInput {
        require_approval: &require_approval,
        history: &history,
        memories: &memories,
        budget: &budget,
        resume: resume.as_ref(),
        warm: warm.as_ref(),
    };

    let outcome = tokio::select! {
        result = tokio::time::timeout(ctx.config.step_timeout, run_agent(ctx, &claim, input, &recorder)) => match result {
            Ok(result) => Outcome::Finished(result),
            Err(_) => Outcome::TimedOut,
        },
        reason = keep_step_lease(ctx, step, &lease) => Outcome::LeaseLost(reason),
        _ = ctx.released.cancelled() => Outcome::Released,
    };
    // A call cut off mid-way (timeout, release, lost lease) never settled its reservation.
    if budget.is_limited()
        && !matches!(outcome, Outcome::Finished(Ok(_)))
        && let Err(e) = deps.store.release_holder(budget.holder()).await
    {
        tracing::warn!(%task, %step, error = %e, "could not release the attempt's reservations; the reconciler will");
    }

    // The attempt's messages go with its completion; on any other outcome, now.
    if !matches!(outcome, Outcome::Finished(Ok(_)))
        && let Err(e) = recorder.flush_messages().await
    {
        tracing::warn!(%task, %step, error = %e, "could not record the attempt's messages");
    }

    let settled = match outcome {
        Outcome::Finished(Ok(output)) => {
            let messages = recorder.take_messages();
            // Kept for typed tasks and warm starts: a one-off task costs no Redis write.
            let warm = (claim.task_type.is_some() || claim.warm_start).then(|| {
                recorder.warm_context(serde_json::json!({
                    "task_id": task, "step_id": step, "title": claim.title, "agent": claim.agent,
                    "completed_at": chrono::Utc::now(),
                }))
            });
            deps.lifecycle.settle_step(&claim, &lease, StepOutcome::Completed { output, messages, warm }).await?
        }
        Outcome::LeaseLost(reason) => {
            tracing::warn!(%task, %step, %reason, "step abandoned: its lease was lost");
            return Ok(());
        }
        Outcome::Released => deps.lifecycle.settle_step(&claim, &lease, StepOutcome::Released).await?,
        Outcome::Finished(Err(AgentError::Yielded(_))) => {
            deps.lifecycle.settle_step(&claim, &lease, StepOutcome::Yielded).await?
        }
        Outcome::Finished(Err(AgentError::AwaitingApproval(calls))) => {
            deps.lifecycle.settle_step(&claim, &lease, StepOutcome::AwaitingApproval(calls)).await?
        }
        Outcome::Finished(Err(AgentError::Cancelled)) => {
            deps.lifecycle.settle_step(&claim, &lease, StepOutcome::Cancelled).await?
        }
        // Accounting failed (the database is unreachable): leave the job for redelivery
        // rather than run on unaccounted.
        Outcome::Finished(Err(AgentError::Record(e))) => return Err(JobError::Record(e)),
        // Another attempt would not fit either: fail now, with the stable code.
        Outcome::Finished(Err(AgentError::BudgetExceeded(e))) => {
            deps.lifecycle.settle_step(&claim, &lease, StepOutcome::OverBudget { error: e.to_string() }).await?
        }
        Outcome::Finished(Err(e)) => {
            let retry_after =
                retryable(&e).then(|| backoff_delay(ctx.config.retry_base, ctx.config.retry_max, claim.attempt as u32));
            let error = shown_error(&e, task, step);
            deps.lifecycle.settle_step(&claim, &lease, StepOutcome::Failed { error, retry_after }).await?
        }
        Outcome::TimedOut => {
            let error = format!("the step timed out after {:?}", ctx.config.step_timeout);
            let retry_after = Some(backoff_delay(ctx.config.retry_base, ctx.config.retry_max, claim.attempt as u32));
            deps.lifecycle.settle_step(&claim, &lease, StepOutcome::Failed { error, retry_after }).await?
        }
    };
    log_settled(settled, &claim);
    Ok(())
}

/// One line per settled attempt, at the level its outcome deserves.
fn log_settled(settled: Settled, claim: &StepClaim) {
    let (task, step, attempt) = (claim.task_id, claim.step_id, claim.attempt);
    match settled {
        Settled::Applied(Event::CompleteStep) => tracing::debug!(%task, %step, "step completed"),
        Settled::Applied(Event::CompleteLastStep) => tracing::info!(%task, "task completed"),
        Settled::Applied(Event::RetryStep) => tracing::warn!(%task, %step, attempt, "step attempt failed; retrying"),
        Settled::Applied(Event::FailStep) => tracing::warn!(%task, %step, attempt, "step failed; the task failed"),
        Settled::Applied(Event::StepOverBudget) => {
            tracing::warn!(%task, %step, "step stopped by its budget; the task failed")
        }
        Settled::Applied(Event::StopCancelledStep) => {
            tracing::info!(%task, %step, "step stopped: its task was cancelled")
        }
        Settled::Applied(Event::ReleaseStep) => tracing::info!(%task, %step, "step released for another worker"),
        Settled::Applied(Event::YieldStep) => tracing::debug!(%task, %step, "step yielded; it continues later"),
        Settled::Applied(Event::AwaitApproval) => {
            tracing::info!(%task, %step, "step waits for a person's approval of its tool calls")
        }
        Settled::Applied(other) => tracing::debug!(%task, %step, event = ?other, "step settled"),
        Settled::Stale => tracing::warn!(%task, %step, "step outcome discarded: the lease was lost"),
    }
}

/// The error stored on the step (and the task) for its user to read: what went wrong in the
/// provider's or the tool's own words, but without the URLs and addresses a transport error
/// carries (the provider's URL, the address a name resolved to), which are not the tenant's
/// to see. The whole error goes to the log, with the task and step ids.
fn shown_error(error: &AgentError, task: TaskId, step: StepId) -> String {
    let shown = crate::scrub::internal_details(&error.to_string());
    if let AgentError::Llm(llm) = error {
        tracing::warn!(%task, %step, error = %llm, "model call failed");
    }
    shown
}

/// Errors that another attempt cannot fix fail the step at once. The iteration limit is one:
/// the next attempt would continue the same conversation, already at its limit.
fn retryable(error: &AgentError) -> bool {
    !matches!(
        error,
        AgentError::Llm(LlmError::Rejected { .. }) | AgentError::UnknownAgent(_) | AgentError::IterationLimit(_)
    )
}

/// The user's long-term memories closest to this step's instruction. Memory helps but is not
/// essential: if the search fails the step runs without it. A user with no memory (as of the
/// claim) costs no embedding and no search.
async fn relevant_memories(ctx: &JobContext<'_>, claim: &StepClaim) -> Vec<String> {
    let limit = ctx.deps.memory_context_items;
    if limit == 0 || !claim.user_has_memories {
        return Vec::new();
    }
    let query = SearchQuery {
        owner: claim.user_id.clone(),
        namespace: None,
        text: format!("{}\n{}", claim.title, claim.instruction),
        limit,
        metadata: None,
    };
    match ctx.deps.memory.search(&query).await {
        Ok(found) => found.into_iter().map(|m| m.item.content).collect(),
        Err(e) => {
            tracing::warn!(task = %claim.task_id, step = %claim.step_id, error = %e, "memory search failed; running without memories");
            Vec::new()
        }
    }
}

/// Where an earlier attempt's loop stood. One that cannot be read (written by a build whose
/// checkpoint this one does not understand) is ignored: the step starts again, as it would
/// have without checkpoints.
fn checkpoint(claim: &StepClaim) -> Option<Checkpoint> {
    let stored = claim.checkpoint.clone()?;
    match serde_json::from_value::<Checkpoint>(stored) {
        Ok(checkpoint) => {
            tracing::info!(
                task = %claim.task_id, step = %claim.step_id, attempt = claim.attempt,
                model_calls = checkpoint.model_calls, tool_calls = checkpoint.tool_calls,
                "step resumed from its checkpoint"
            );
            Some(checkpoint)
        }
        Err(e) => {
            tracing::warn!(task = %claim.task_id, step = %claim.step_id, error = %e, "unreadable step checkpoint ignored; the step starts again");
            None
        }
    }
}

/// What the last run of the same work left for this step, when the task asked for a warm
/// start. Redis is a cache here: a context that is gone or cannot be read makes a cold start.
async fn warm_context(ctx: &JobContext<'_>, claim: &StepClaim) -> Option<WarmContext> {
    let hash = claim.task_hash.as_deref().filter(|_| claim.warm_start)?;
    match ctx.deps.coordination.warm_context(hash, claim.position).await {
        Ok(found) => {
            tracing::debug!(task = %claim.task_id, step = %claim.step_id, warm = found.is_some(), "warm start");
            found
        }
        Err(e) => {
            tracing::warn!(task = %claim.task_id, step = %claim.step_id, error = %e, "warm context unavailable; the step starts cold");
            None
        }
    }
}

/// What the agent loop gets besides the claim.
struct AgentInput<'a> {
    history: &'a [ChatMessage],
    memories: &'a [String],
    budget: &'a StoreBudget,
    resume: Option<&'a Checkpoint>,
    warm: Option<&'a WarmContext>,
    /// The deployment's and the task's tools that need approval.
    require_approval: &'a [String],
}

async fn run_agent(
    ctx: &JobContext<'_>,
    claim: &StepClaim,
    agent: AgentInput<'_>,
    recorder: &StoreRecorder,
) -> Result<String, AgentError> {
    let deps = ctx.deps;
    let Some(spec) = deps.agents.get(&claim.agent) else {
        return Err(AgentError::UnknownAgent(claim.agent.clone()));
    };
    let input = StepInput {
        task_id: claim.task_id.0,
        step_id: claim.step_id.0,
        owner: &claim.user_id,
        task_description: &claim.task_description,
        step_title: &claim.title,
        instruction: &claim.instruction,
        dependency_outputs: &claim.dependency_outputs,
        memories: agent.memories,
        history: agent.history,
        cancel: &ctx.cancelled,
        budget: agent.budget,
        resume: agent.resume,
        warm: agent.warm,
        approvals: agents::ApprovalPolicy { tools: agent.require_approval, decisions: &claim.decisions },
    };
    deps.runner.run(spec, &input, recorder).await.map(|out| out.text)
}

/// Renews the step's lease while it runs. Notices a cancelled task even when the cancel
/// message was missed, because the renewal reads the task's status.
async fn keep_step_lease(ctx: &JobContext<'_>, step: StepId, lease: &Lease) -> String {
    super::lease::keep_lease(ctx, format!("step {step}"), lease, || async {
        Ok(match ctx.deps.store.renew_step_lease(step, lease).await? {
            LeaseState::Held { task_running } => {
                if !task_running {
                    ctx.cancelled.cancel();
                }
                true
            }
            LeaseState::Lost => false,
        })
    })
    .await
}
