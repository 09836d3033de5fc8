//! The Postgres store. Each transition is a single statement (data-modifying CTEs write the
//! event row in the same statement) or a short transaction that first locks the task row,
//! so that concurrent completions of sibling steps serialise and one of them always sees
//! the other's commit when it decides which dependants are ready.

mod budget;
mod capacity;
mod execution;
mod reports;
mod rows;
mod tasks;
mod webhooks;

use sqlx::PgPool;

/// Postgres-backed [`super::TaskStore`] and [`super::ExecutionStore`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
