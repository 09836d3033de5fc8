//! The Postgres store. Each transition is a single statement (data-modifying CTEs write the
//! event row in the same statement) or a short transaction that first locks the task row,
//! so that concurrent completions of sibling steps serialise and one of them always sees
//! the other's commit when it decides which dependants are ready.
//!
//! Every method that writes `task_events` rows wakes the task's event streams after its
//! commit ([`notify`]); Postgres does not notify by itself (a `NOTIFY` in the writing
//! transaction would serialise all commits).
//!
//! The writes every task and step makes (submission, claim, model calls, completion) are
//! batched ([`batch`]): concurrent ones share a statement and a commit, so the statements per
//! second stay flat as the load grows.

mod approvals;
mod batch;
mod budget;
mod calls;
mod capacity;
mod creates;
mod execution;
mod notify;
mod reports;
mod rows;
mod steps;
mod tasks;
mod webhooks;

use sqlx::PgPool;

use self::{
    batch::Batcher,
    calls::RecordCalls,
    creates::CreateTasks,
    notify::EventNotifier,
    steps::{ClaimSteps, CompleteSteps},
};
use crate::domain::TaskId;

/// Postgres-backed [`super::TaskStore`] and [`super::ExecutionStore`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    events: EventNotifier,
    /// Step claims and completions: concurrent ones share a statement and a commit.
    claims: Batcher<ClaimSteps>,
    completions: Batcher<CompleteSteps>,
    /// Model calls without a budget reservation, likewise.
    llm_calls: Batcher<RecordCalls>,
    /// Submissions without an idempotency key, likewise.
    creates: Batcher<CreateTasks>,
}

impl PgStore {
    pub fn new(pool: PgPool) -> Self {
        let events = EventNotifier::new(pool.clone());
        Self {
            claims: Batcher::new(ClaimSteps { events: events.clone() }, pool.clone()),
            completions: Batcher::new(CompleteSteps { events: events.clone() }, pool.clone()),
            llm_calls: Batcher::new(RecordCalls, pool.clone()),
            creates: Batcher::new(CreateTasks, pool.clone()),
            events,
            pool,
        }
    }

    /// Wakes the event streams of `task`: call after committing events of the task.
    fn events_committed(&self, task: TaskId) {
        self.events.notify(task);
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
