//! The Postgres store. Each transition is a single statement (data-modifying CTEs write the
//! event row in the same statement) or a short transaction that first locks the task row,
//! so that concurrent completions of sibling steps serialise and one of them always sees
//! the other's commit when it decides which dependants are ready.
//!
//! Every method that writes `task_events` rows wakes the task's event streams after its
//! commit ([`notify`]); Postgres does not notify by itself (a `NOTIFY` in the writing
//! transaction would serialise all commits).

mod budget;
mod capacity;
mod execution;
mod notify;
mod reports;
mod rows;
mod tasks;
mod webhooks;

use sqlx::PgPool;

use self::notify::EventNotifier;
use crate::domain::TaskId;

/// Postgres-backed [`super::TaskStore`] and [`super::ExecutionStore`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    events: EventNotifier,
}

impl PgStore {
    pub fn new(pool: PgPool) -> Self {
        Self { events: EventNotifier::new(pool.clone()), pool }
    }

    /// Wakes the event streams of `task`: call after committing events of the task.
    fn events_committed(&self, task: TaskId) {
        self.events.notify(task);
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
