//! The transition table: for each event, the states it may start from, the state it leads
//! to, what the store writes in the same commit and what follows once it has committed.
//!
//! The store performs a transition as one conditional write (`WHERE status = <from>`, fenced
//! by the lease where there is one), including every [`Write`] of its rule, so a transition
//! and its durable consequences commit together or not at all. [`super::Lifecycle`] then
//! applies the rule's [`Effect`]s, which may be lost to a crash without losing work: each is
//! a wake-up, a counter or an optimisation that the reconciler or a re-read makes good.
//!
//! `docs/lifecycle.md` is rendered from this table ([`render_markdown`]); a test keeps it
//! current.

use crate::domain::{StepStatus, TaskStatus};

/// What happens to a task or a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// `POST /tasks` accepted a task.
    Submit,
    /// A plan job claimed the task's planning (or took over one whose lease expired).
    ClaimPlanning,
    /// A plan job found the task's user at the running-task cap.
    WaitForCapacity,
    /// The planner's plan was saved: the steps exist, the root steps are ready.
    SavePlan,
    /// The plan of a task that starts paused was saved: the steps exist, none is ready, and
    /// the task waits for a person to approve (and perhaps edit) the plan.
    SavePlanPaused,
    /// `POST /tasks/{id}/start` of a task paused for plan approval: the steps whose
    /// dependencies completed (the roots) are ready and the task runs.
    StartTask,
    /// `PUT /tasks/{id}/plan` of a paused task: its steps are replaced by the edited plan's,
    /// recorded as the next plan version; it stays paused.
    EditPausedPlan,
    /// `PUT /tasks/{id}/plan` of a running task: the steps that wait for others (and those
    /// skipped) are replaced by the edited plan's new steps, recorded as the next version;
    /// new steps whose dependencies completed are ready.
    EditPlan,
    /// Planning failed (the planner's error, an invalid plan, no usable agent).
    FailPlanning,
    /// A planning model call did not fit in the task's budget or the user's quota.
    PlanningOverBudget,
    /// A takeover of the planning found no planning attempt left.
    PlanningExhausted,
    /// The plan job was dead-lettered.
    PlanningDeadLettered,
    /// `POST /tasks/{id}/cancel`.
    Cancel,
    /// `POST /tasks/{id}/retry` of a task that failed (or ended partial) after planning.
    Retry,
    /// `POST /tasks/{id}/retry` of a task that failed while planning.
    RetryPlanning,
    /// A step job claimed its step (or took over one whose lease expired).
    ClaimStep,
    /// A step's agent finished and it was not its task's last step to complete.
    CompleteStep,
    /// A step completed and every step of its task has completed.
    CompleteLastStep,
    /// A step completed, nothing else could run, other branches had failed, and a final
    /// step (one nothing depends on) completed.
    CompleteStepEndsPartial,
    /// A step completed, nothing else could run, and other branches' failures left no final
    /// step completed.
    CompleteStepEndsFailed,
    /// A step attempt failed with attempts left: it runs again after a backoff.
    RetryStep,
    /// A step attempt failed with no attempt left, or with an error no retry can fix, and
    /// with it the task: nothing else could run and no final step completed.
    FailStep,
    /// As `FailStep`, while other branches of the task still run: only the steps that
    /// depend on the failed one are skipped.
    FailBranch,
    /// As `FailStep`, when nothing else could run but a final step had completed.
    FailStepEndsPartial,
    /// As `FailStep`, for a task that replans (`replan`) and has replans left: instead of
    /// ending, the task is pending again, owing a replan of the work that did not complete.
    FailStepReplans,
    /// As `CompleteStepEndsPartial` or `CompleteStepEndsFailed`, for a task that replans and
    /// has replans left: pending again, owing a replan.
    CompleteStepReplans,
    /// A replan's revised plan was saved: the steps that had not completed are replaced by
    /// its steps, recorded as the next plan version; those whose dependencies completed are
    /// ready.
    SaveReplan,
    /// A replan found no revised plan (no other way to do the work): the task ends as it would
    /// have without replanning, `partial` here.
    ReplanEndsPartial,
    /// As `ReplanEndsPartial`, `failed` here.
    ReplanEndsFailed,
    /// A step's model call did not fit in the task's budget or the user's quota.
    StepOverBudget,
    /// A takeover of the step found no attempt left.
    StepExhausted,
    /// The step job was dead-lettered.
    StepDeadLettered,
    /// A running step stopped because its task was cancelled.
    StopCancelledStep,
    /// The worker shut down while the step ran: another worker takes it, no attempt charged.
    ReleaseStep,
    /// The agent ran `STEP_YIELD_AFTER_TURNS` turns: the step gives its worker slot back and
    /// queues again, to continue from its checkpoint; no attempt charged.
    YieldStep,
    /// The agent called tools that require a person's approval: the step gives its worker
    /// slot back and waits, no attempt charged; its task requires action.
    AwaitApproval,
    /// A waiting call was approved or denied (`POST /tasks/{id}/approvals/{call_id}`, or an
    /// expiry: a denial by the reconciler), and other calls of the step still wait.
    DecideApproval,
    /// The step's last waiting call was decided: it is ready to continue from its
    /// checkpoint, and other steps of the task still wait.
    ResumeStep,
    /// The task's last waiting call was decided: the step is ready and the task runs again.
    ResumeTask,
}

/// The state a transition starts from or leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nothing existed yet.
    New,
    Task(TaskStatus),
    Step(StepStatus),
}

/// What the store writes in the transition's own commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// A `task_events` row of this kind (and, after the commit, a wake-up of the task's
    /// event streams and waiters).
    Event(crate::domain::EventKind),
    /// The lease is taken (claims) and fences every later write of the holder.
    TakeLease,
    /// The lease is cleared: nobody holds the work.
    DropLease,
    /// One attempt is charged (`steps.attempt` or `tasks.plan_attempts`).
    ChargeAttempt,
    /// The task is marked waiting for capacity (it stays pending, with no job).
    MarkWaiting,
    /// The plan's steps are inserted; those without dependencies are ready.
    InsertSteps,
    /// The plan is recorded in `plan_versions` as the task's next version, with who made it
    /// (and, for a revision, why and the steps it replaced).
    RecordPlanVersion,
    /// The steps that did not complete (a replan), or that have not started (an edit: those
    /// waiting for others, and those skipped), are replaced by the new plan's; those whose
    /// dependencies have all completed are ready, unless the task is paused.
    ReplaceSteps,
    /// A settled task that replans goes back to pending with the failure it owes a replan
    /// (`tasks.replan_reason`) and a fresh planning allowance.
    RequestReplan,
    /// Pending dependants whose dependencies have all completed become ready.
    PromoteDependants,
    /// The task completes with the output of its last step in plan order as its result.
    CompleteTask,
    /// The step's task fails with the step's error; its pending, ready and waiting steps are
    /// skipped, and the calls that waited for a person with them are cancelled.
    FailTask,
    /// The pending and ready steps that depend on the failed step, directly or not, are
    /// skipped.
    SkipDependants,
    /// A task none of whose steps can run any more ends: `partial` when a final step
    /// completed, `failed` otherwise, its result what completed and its error what failed.
    EndSettledTask,
    /// The task's pending, ready and waiting steps are cancelled, and the calls that waited
    /// for a person with them.
    CancelWaitingSteps,
    /// The calls waiting for a person are recorded (`tool_approvals`, and `tool_calls` with
    /// status `awaiting_approval`), each with its expiry.
    RecordApprovalRequests,
    /// The task requires action (`required_action`: `tool_approval`, or `plan_approval` for a
    /// paused plan), and another `task.requires_action` webhook is due.
    RequireAction,
    /// The decision (approved, denied with its reason and who decided, or expired) is
    /// recorded on the call.
    RecordDecision,
    /// The task's `required_action` is cleared.
    ClearRequiredAction,
    /// The steps whose dependencies have all completed (a fresh plan's roots) become ready.
    ReadySteps,
    /// Failed, skipped and cancelled steps go back to pending with fresh attempts, ready when
    /// their dependencies completed; `tasks.run` goes up by one.
    ResetSteps,
    /// The attempt's conversation is appended to the task's short-term memory.
    AppendMessages,
    /// The claim reads the step's checkpoint; when there is one, a `step_resumed` event
    /// says the attempt continues from it.
    ResumeCheckpoint,
    /// A webhook delivery is queued in the outbox for a task with a `callback_url`: its end,
    /// or its need of a person (`task.requires_action`).
    QueueWebhook,
}

/// What follows a committed transition, applied by [`super::Lifecycle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A job for the task's planning.
    EnqueuePlan,
    /// Jobs for the steps that became ready.
    EnqueueReady,
    /// A job for the step's next attempt, delayed by its backoff.
    EnqueueRetry,
    /// A job for the same attempt of the step, for another worker.
    EnqueueAgain,
    /// The user's oldest task waiting for capacity gets a plan job.
    WakeWaiting,
    /// Workers running the task's steps are told to stop.
    BroadcastCancel,
    /// The task's result becomes a memory of its user (when `MEMORY_STORE_RESULTS`). Runs
    /// before `AnnounceEnd`, so a client woken by the end (`Prefer: wait`) finds it.
    RememberResult,
    /// Requests waiting for the task's end (`Prefer: wait`), in every process, are told it
    /// ended. (Its event streams were woken by its events already.)
    AnnounceEnd,
    /// Requests waiting for the task (`Prefer: wait`) are told a person must act: they answer
    /// now rather than wait for an end that needs that person.
    AnnounceAction,
    /// What the completed step left (its conversation, its tool results) is kept in Redis by
    /// the task hash and the step's position, for a warm start of the same work (when the
    /// task has a type or asked for a warm start itself).
    KeepWarmContext,
    /// `orchestrator_tasks_submitted_total{priority}` counts the new task.
    CountSubmit,
    /// `orchestrator_tasks_finished_total{status}` counts the task's end.
    CountTask,
    /// `orchestrator_steps_finished_total{agent,status}` counts the step's outcome.
    CountStep(&'static str),
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub event: Event,
    pub from: &'static [State],
    pub to: State,
    /// Where the step's task goes in the same commit, for step events that change its status.
    pub task_to: Option<TaskStatus>,
    pub writes: &'static [Write],
    pub effects: &'static [Effect],
}

use crate::domain::EventKind as K;
use Effect::*;
use State::{New, Step as S, Task as T};
use StepStatus as SS;
use TaskStatus as TS;
use Write::*;

/// What follows every task end: waiting requests hear of it, a slot of its user's
/// running-task cap frees up, and the end is counted. (Its webhook is a write: `QueueWebhook` commits with the end.)
const TASK_END_EFFECTS: &[Effect] = &[AnnounceEnd, WakeWaiting, CountTask];

/// Every transition of a task or a step.
pub const TABLE: &[Rule] = &[
    Rule {
        event: Event::Submit,
        from: &[New],
        to: T(TS::Pending),
        task_to: None,
        writes: &[Event(K::TaskCreated)],
        effects: &[CountSubmit, EnqueuePlan],
    },
    Rule {
        event: Event::ClaimPlanning,
        from: &[T(TS::Pending), T(TS::Planning)],
        to: T(TS::Planning),
        task_to: None,
        writes: &[TakeLease, ChargeAttempt, Event(K::TaskPlanning)],
        effects: &[],
    },
    Rule {
        event: Event::WaitForCapacity,
        from: &[T(TS::Pending)],
        to: T(TS::Pending),
        task_to: None,
        writes: &[MarkWaiting, Event(K::WaitingForCapacity)],
        effects: &[],
    },
    Rule {
        event: Event::SavePlan,
        from: &[T(TS::Planning)],
        to: T(TS::Running),
        task_to: None,
        writes: &[DropLease, InsertSteps, RecordPlanVersion, Event(K::TaskPlanned), Event(K::StepReady)],
        effects: &[EnqueueReady],
    },
    Rule {
        event: Event::SavePlanPaused,
        from: &[T(TS::Planning)],
        to: T(TS::RequiresAction),
        task_to: None,
        writes: &[DropLease, InsertSteps, RecordPlanVersion, Event(K::TaskPlanned), RequireAction, QueueWebhook],
        effects: &[AnnounceAction],
    },
    Rule {
        event: Event::StartTask,
        from: &[T(TS::RequiresAction)],
        to: T(TS::Running),
        task_to: None,
        writes: &[ClearRequiredAction, ReadySteps, Event(K::TaskStarted), Event(K::StepReady)],
        effects: &[EnqueueReady],
    },
    Rule {
        event: Event::EditPausedPlan,
        from: &[T(TS::RequiresAction)],
        to: T(TS::RequiresAction),
        task_to: None,
        writes: &[ReplaceSteps, RecordPlanVersion, Event(K::PlanEdited)],
        effects: &[],
    },
    Rule {
        event: Event::EditPlan,
        from: &[T(TS::Running)],
        to: T(TS::Running),
        task_to: None,
        writes: &[ReplaceSteps, RecordPlanVersion, Event(K::PlanEdited), Event(K::StepReady)],
        effects: &[EnqueueReady],
    },
    Rule {
        event: Event::SaveReplan,
        from: &[T(TS::Planning)],
        to: T(TS::Running),
        task_to: None,
        writes: &[DropLease, ReplaceSteps, RecordPlanVersion, Event(K::TaskReplanned), Event(K::StepReady)],
        effects: &[EnqueueReady],
    },
    Rule {
        event: Event::ReplanEndsPartial,
        from: &[T(TS::Planning)],
        to: T(TS::Partial),
        task_to: None,
        writes: &[DropLease, EndSettledTask, Event(K::TaskPartial), QueueWebhook],
        effects: TASK_END_EFFECTS,
    },
    Rule {
        event: Event::ReplanEndsFailed,
        from: &[T(TS::Planning)],
        to: T(TS::Failed),
        task_to: None,
        writes: &[DropLease, EndSettledTask, Event(K::TaskFailed), QueueWebhook],
        effects: TASK_END_EFFECTS,
    },
    Rule {
        event: Event::FailPlanning,
        from: &[T(TS::Planning)],
        to: T(TS::Failed),
        task_to: None,
        writes: &[DropLease, Event(K::TaskFailed), QueueWebhook],
        effects: TASK_END_EFFECTS,
    },
    Rule {
        event: Event::PlanningOverBudget,
        from: &[T(TS::Planning)],
        to: T(TS::Failed),
        task_to: None,
        writes: &[DropLease, Event(K::TaskFailed), QueueWebhook],
        effects: TASK_END_EFFECTS,
    },
    Rule {
        event: Event::PlanningExhausted,
        from: &[T(TS::Planning)],
        to: T(TS::Failed),
        task_to: None,
        writes: &[DropLease, Event(K::TaskFailed), QueueWebhook],
        effects: TASK_END_EFFECTS,
    },
    Rule {
        event: Event::PlanningDeadLettered,
        from: &[T(TS::Pending), T(TS::Planning)],
        to: T(TS::Failed),
        task_to: None,
        writes: &[DropLease, Event(K::TaskFailed), QueueWebhook],
        effects: TASK_END_EFFECTS,
    },
    Rule {
        event: Event::Cancel,
        from: &[T(TS::Pending), T(TS::Planning), T(TS::Running), T(TS::RequiresAction)],
        to: T(TS::Cancelled),
        task_to: None,
        writes: &[DropLease, CancelWaitingSteps, Event(K::StepCancelled), Event(K::TaskCancelled), QueueWebhook],
        effects: &[BroadcastCancel, AnnounceEnd, WakeWaiting, CountTask],
    },
    Rule {
        event: Event::Retry,
        from: &[T(TS::Failed), T(TS::Partial)],
        to: T(TS::Running),
        task_to: None,
        writes: &[ResetSteps, Event(K::TaskRetried), Event(K::StepReady)],
        effects: &[EnqueueReady],
    },
    Rule {
        event: Event::RetryPlanning,
        from: &[T(TS::Failed)],
        to: T(TS::Pending),
        task_to: None,
        writes: &[ResetSteps, Event(K::TaskRetried)],
        effects: &[EnqueuePlan],
    },
    Rule {
        event: Event::ClaimStep,
        from: &[S(SS::Ready), S(SS::Running)],
        to: S(SS::Running),
        task_to: None,
        writes: &[TakeLease, ChargeAttempt, Event(K::StepStarted), ResumeCheckpoint],
        effects: &[],
    },
    Rule {
        event: Event::CompleteStep,
        from: &[S(SS::Running)],
        to: S(SS::Completed),
        task_to: None,
        writes: &[DropLease, AppendMessages, Event(K::StepCompleted), PromoteDependants, Event(K::StepReady)],
        effects: &[CountStep("completed"), KeepWarmContext, EnqueueReady],
    },
    Rule {
        event: Event::CompleteLastStep,
        from: &[S(SS::Running)],
        to: S(SS::Completed),
        task_to: Some(TS::Completed),
        writes: &[
            DropLease,
            AppendMessages,
            Event(K::StepCompleted),
            CompleteTask,
            Event(K::TaskCompleted),
            QueueWebhook,
        ],
        effects: &[CountStep("completed"), KeepWarmContext, RememberResult, AnnounceEnd, WakeWaiting, CountTask],
    },
    Rule {
        event: Event::CompleteStepEndsPartial,
        from: &[S(SS::Running)],
        to: S(SS::Completed),
        task_to: Some(TS::Partial),
        writes: &[
            DropLease,
            AppendMessages,
            Event(K::StepCompleted),
            EndSettledTask,
            Event(K::TaskPartial),
            QueueWebhook,
        ],
        effects: &[CountStep("completed"), KeepWarmContext, AnnounceEnd, WakeWaiting, CountTask],
    },
    Rule {
        event: Event::CompleteStepEndsFailed,
        from: &[S(SS::Running)],
        to: S(SS::Completed),
        task_to: Some(TS::Failed),
        writes: &[
            DropLease,
            AppendMessages,
            Event(K::StepCompleted),
            EndSettledTask,
            Event(K::TaskFailed),
            QueueWebhook,
        ],
        effects: &[CountStep("completed"), KeepWarmContext, AnnounceEnd, WakeWaiting, CountTask],
    },
    Rule {
        event: Event::RetryStep,
        from: &[S(SS::Running)],
        to: S(SS::Ready),
        task_to: None,
        writes: &[DropLease, Event(K::StepRetrying)],
        effects: &[CountStep("retrying"), EnqueueRetry],
    },
    Rule {
        event: Event::FailStep,
        from: &[S(SS::Running)],
        to: S(SS::Failed),
        task_to: Some(TS::Failed),
        writes: &[
            DropLease,
            Event(K::StepFailed),
            SkipDependants,
            Event(K::StepSkipped),
            EndSettledTask,
            Event(K::TaskFailed),
            QueueWebhook,
        ],
        effects: &[CountStep("failed"), AnnounceEnd, WakeWaiting, CountTask],
    },
    Rule {
        event: Event::FailBranch,
        from: &[S(SS::Running)],
        to: S(SS::Failed),
        task_to: None,
        writes: &[DropLease, Event(K::StepFailed), SkipDependants, Event(K::StepSkipped)],
        effects: &[CountStep("failed")],
    },
    Rule {
        event: Event::FailStepEndsPartial,
        from: &[S(SS::Running)],
        to: S(SS::Failed),
        task_to: Some(TS::Partial),
        writes: &[
            DropLease,
            Event(K::StepFailed),
            SkipDependants,
            Event(K::StepSkipped),
            EndSettledTask,
            Event(K::TaskPartial),
            QueueWebhook,
        ],
        effects: &[CountStep("failed"), AnnounceEnd, WakeWaiting, CountTask],
    },
    Rule {
        event: Event::FailStepReplans,
        from: &[S(SS::Running)],
        to: S(SS::Failed),
        task_to: Some(TS::Pending),
        writes: &[
            DropLease,
            Event(K::StepFailed),
            SkipDependants,
            Event(K::StepSkipped),
            RequestReplan,
            Event(K::TaskReplanning),
        ],
        effects: &[CountStep("failed"), EnqueuePlan],
    },
    Rule {
        event: Event::CompleteStepReplans,
        from: &[S(SS::Running)],
        to: S(SS::Completed),
        task_to: Some(TS::Pending),
        writes: &[DropLease, AppendMessages, Event(K::StepCompleted), RequestReplan, Event(K::TaskReplanning)],
        effects: &[CountStep("completed"), KeepWarmContext, EnqueuePlan],
    },
    Rule {
        event: Event::StepOverBudget,
        from: &[S(SS::Running)],
        to: S(SS::Failed),
        task_to: Some(TS::Failed),
        writes: &[DropLease, Event(K::StepFailed), FailTask, Event(K::StepSkipped), Event(K::TaskFailed), QueueWebhook],
        effects: &[CountStep("failed"), AnnounceEnd, WakeWaiting, CountTask],
    },
    Rule {
        event: Event::StepExhausted,
        from: &[S(SS::Running)],
        to: S(SS::Failed),
        task_to: Some(TS::Failed),
        writes: &[DropLease, Event(K::StepFailed), FailTask, Event(K::StepSkipped), Event(K::TaskFailed), QueueWebhook],
        effects: TASK_END_EFFECTS,
    },
    Rule {
        event: Event::StepDeadLettered,
        from: &[S(SS::Pending), S(SS::Ready), S(SS::Running)],
        to: S(SS::Failed),
        task_to: Some(TS::Failed),
        writes: &[DropLease, Event(K::StepFailed), FailTask, Event(K::StepSkipped), Event(K::TaskFailed), QueueWebhook],
        effects: TASK_END_EFFECTS,
    },
    Rule {
        event: Event::StopCancelledStep,
        from: &[S(SS::Running)],
        to: S(SS::Cancelled),
        task_to: None,
        writes: &[DropLease, Event(K::StepCancelled)],
        effects: &[CountStep("cancelled")],
    },
    Rule {
        event: Event::ReleaseStep,
        from: &[S(SS::Running)],
        to: S(SS::Ready),
        task_to: None,
        writes: &[DropLease, Event(K::StepReleased)],
        effects: &[EnqueueAgain],
    },
    Rule {
        event: Event::YieldStep,
        from: &[S(SS::Running)],
        to: S(SS::Ready),
        task_to: None,
        writes: &[DropLease, Event(K::StepYielded)],
        effects: &[EnqueueAgain],
    },
    Rule {
        event: Event::AwaitApproval,
        from: &[S(SS::Running)],
        to: S(SS::Waiting),
        task_to: Some(TS::RequiresAction),
        writes: &[DropLease, RecordApprovalRequests, Event(K::ApprovalRequested), RequireAction, QueueWebhook],
        effects: &[CountStep("waiting"), AnnounceAction],
    },
    Rule {
        event: Event::DecideApproval,
        from: &[S(SS::Waiting)],
        to: S(SS::Waiting),
        task_to: None,
        writes: &[RecordDecision, Event(K::ApprovalDecided)],
        effects: &[],
    },
    Rule {
        event: Event::ResumeStep,
        from: &[S(SS::Waiting)],
        to: S(SS::Ready),
        task_to: None,
        writes: &[RecordDecision, Event(K::ApprovalDecided), Event(K::StepReady)],
        effects: &[EnqueueReady],
    },
    Rule {
        event: Event::ResumeTask,
        from: &[S(SS::Waiting)],
        to: S(SS::Ready),
        task_to: Some(TS::Running),
        writes: &[RecordDecision, Event(K::ApprovalDecided), Event(K::StepReady), ClearRequiredAction],
        effects: &[EnqueueReady],
    },
];

/// The rule of `event`; every event has exactly one (a test checks).
pub fn rule(event: Event) -> &'static Rule {
    TABLE.iter().find(|r| r.event == event).expect("every event has a rule in TABLE")
}

impl Rule {
    /// The task status this transition leaves the task in, when it changes it.
    pub fn task_status(&self) -> Option<TaskStatus> {
        match self.to {
            State::Task(status) => Some(status),
            _ => self.task_to,
        }
    }

    /// Whether the transition ends the task.
    pub fn ends_task(&self) -> bool {
        self.task_status().is_some_and(TaskStatus::is_terminal)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::New => f.write_str("—"),
            Self::Task(s) => write!(f, "task {s}"),
            Self::Step(s) => write!(f, "step {s}"),
        }
    }
}

/// The table as Markdown, for `docs/lifecycle.md`.
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# Task and step lifecycle\n\n\
         Rendered from `api/src/lifecycle/table.rs` (a test keeps this file current). Each row is one\n\
         transition: the store writes it and its *writes* in one conditional commit; the lifecycle\n\
         applies its *effects* after the commit.\n\n\
         | event | from | to | writes (same commit) | effects (after commit) |\n\
         |---|---|---|---|---|\n",
    );
    for r in TABLE {
        let from: Vec<String> = r.from.iter().map(ToString::to_string).collect();
        let mut to = r.to.to_string();
        if let Some(task) = r.task_to {
            to.push_str(&format!(", task {task}"));
        }
        let writes: Vec<String> = r
            .writes
            .iter()
            .map(|w| match w {
                Write::Event(kind) => format!("event `{kind}`"),
                other => format!("{other:?}"),
            })
            .collect();
        let effects: Vec<String> = r
            .effects
            .iter()
            .map(|e| match e {
                Effect::CountStep(status) => format!("CountStep({status})"),
                other => format!("{other:?}"),
            })
            .collect();
        out.push_str(&format!(
            "| {:?} | {} | {} | {} | {} |\n",
            r.event,
            from.join(", "),
            to,
            writes.join(", "),
            effects.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_event_has_exactly_one_rule() {
        let mut seen = HashSet::new();
        for r in TABLE {
            assert!(seen.insert(r.event), "{:?} has two rules", r.event);
        }
        assert_eq!(rule(Event::FailStep).to, State::Step(StepStatus::Failed));
    }

    #[test]
    fn every_task_end_queues_its_webhook_is_announced_frees_a_slot_and_is_counted() {
        for r in TABLE.iter().filter(|r| r.ends_task()) {
            assert!(r.writes.contains(&QueueWebhook), "{:?} ends a task without its webhook", r.event);
            assert!(r.effects.contains(&WakeWaiting), "{:?} ends a task without waking a waiting one", r.event);
            assert!(r.effects.contains(&CountTask), "{:?} ends a task uncounted", r.event);
            assert!(r.effects.contains(&AnnounceEnd), "{:?} ends a task without telling its waiters", r.event);
            assert!(
                r.writes.iter().any(|w| matches!(w, Write::Event(k) if crate::store::TASK_END_EVENTS.contains(k))),
                "{:?} ends a task without a final event: its streams would not close",
                r.event
            );
        }
        for r in TABLE.iter().filter(|r| !r.ends_task()) {
            // Entering requires_action asks a person; an edit of a paused plan, which stays
            // paused, asks nobody anew.
            let asks_a_person = r.task_status() == Some(TaskStatus::RequiresAction)
                && !r.from.contains(&State::Task(TaskStatus::RequiresAction));
            assert_eq!(
                r.writes.contains(&QueueWebhook),
                asks_a_person,
                "{:?}: a webhook is sent for an end or a need of a person, and for each of them",
                r.event
            );
            assert_eq!(r.effects.contains(&AnnounceAction), asks_a_person, "{:?}", r.event);
            assert!(!r.effects.contains(&CountTask), "{:?} counts a task that did not end", r.event);
            assert!(!r.effects.contains(&AnnounceEnd), "{:?} announces an end that did not happen", r.event);
        }
    }

    #[test]
    fn a_result_is_remembered_before_waiters_hear_of_the_end() {
        for r in TABLE.iter().filter(|r| r.effects.contains(&RememberResult)) {
            let at = |e: Effect| r.effects.iter().position(|&x| x == e);
            assert!(
                at(RememberResult) < at(AnnounceEnd),
                "{:?} wakes waiters before its result is searchable",
                r.event
            );
        }
    }

    #[test]
    fn nothing_leaves_an_ended_task_but_a_retry() {
        for r in TABLE {
            for from in r.from {
                if let State::Task(status) = from {
                    assert!(
                        !status.is_terminal() || matches!(r.event, Event::Retry | Event::RetryPlanning),
                        "{:?} leaves the ended state {status}",
                        r.event
                    );
                }
                if let State::Step(status) = from {
                    assert!(
                        matches!(
                            status,
                            StepStatus::Pending | StepStatus::Ready | StepStatus::Running | StepStatus::Waiting
                        ),
                        "{:?} leaves the ended step state {status}",
                        r.event
                    );
                }
            }
        }
    }

    #[test]
    fn leases_are_taken_by_claims_and_dropped_by_every_exit_from_running_work() {
        for r in TABLE {
            let claims = matches!(r.event, Event::ClaimPlanning | Event::ClaimStep);
            assert_eq!(r.writes.contains(&TakeLease), claims, "{:?}", r.event);
            let leaves_running = r.from.iter().any(|s| matches!(s, State::Step(StepStatus::Running)))
                || r.from.contains(&State::Task(TaskStatus::Planning));
            if leaves_running && !claims {
                assert!(r.writes.contains(&DropLease), "{:?} leaves a lease behind", r.event);
            }
        }
    }

    #[test]
    fn work_that_becomes_ready_gets_a_job() {
        for r in TABLE {
            if r.writes.contains(&Write::Event(K::StepReady)) {
                assert!(r.effects.contains(&EnqueueReady), "{:?} readies steps without jobs", r.event);
            }
        }
        for r in
            TABLE.iter().filter(|r| r.task_status() == Some(TaskStatus::Pending) && r.event != Event::WaitForCapacity)
        {
            assert!(r.effects.contains(&EnqueuePlan), "{:?} leaves a pending task without a plan job", r.event);
        }
    }

    #[test]
    fn every_plan_saved_is_a_version_and_only_a_replan_request_sends_a_running_task_back() {
        for r in TABLE {
            let saves = r.writes.iter().any(|w| matches!(w, InsertSteps | ReplaceSteps));
            assert_eq!(saves, r.writes.contains(&RecordPlanVersion), "{:?}: a plan saved without its version", r.event);
            // A task leaves running for pending only through a replan request, which the
            // replan job must then answer: it is owed a plan job and the reason is recorded.
            if r.task_status() == Some(TaskStatus::Pending) && r.from.iter().any(|s| matches!(s, State::Step(_))) {
                assert!(r.writes.contains(&RequestReplan), "{:?}", r.event);
                assert!(r.writes.contains(&Write::Event(K::TaskReplanning)), "{:?}", r.event);
            }
            if r.writes.contains(&RequestReplan) {
                assert_eq!(r.task_status(), Some(TaskStatus::Pending), "{:?}", r.event);
            }
            // Only a replan job (a planning) can give up on a replan; steps are replaced by a
            // replan or by an edit, of a paused plan or of a running one.
            if matches!(r.event, Event::ReplanEndsPartial | Event::ReplanEndsFailed) {
                assert_eq!(r.from, &[State::Task(TaskStatus::Planning)], "{:?}", r.event);
            }
            if r.writes.contains(&ReplaceSteps) {
                assert!(
                    matches!(r.event, Event::SaveReplan | Event::EditPausedPlan | Event::EditPlan),
                    "{:?}",
                    r.event
                );
            }
            // A task that goes to (or stays in) requires_action itself readies nothing: a paused
            // plan waits for its start.
            if r.to == State::Task(TaskStatus::RequiresAction) {
                assert!(!r.writes.contains(&Write::Event(K::StepReady)), "{:?}", r.event);
            }
            if r.writes.contains(&ReadySteps) {
                assert_eq!(r.event, Event::StartTask);
            }
        }
    }

    #[test]
    fn the_lifecycle_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/lifecycle.md");
        let rendered = render_markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, &rendered).unwrap();
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == rendered,
            "docs/lifecycle.md is stale: run `UPDATE_DOCS=1 cargo test -p api --lib lifecycle`"
        );
    }
}
