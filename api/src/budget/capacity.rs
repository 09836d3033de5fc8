//! Waiting for capacity under the per-user cap on planning and running tasks.
//!
//! A plan job that finds its user at the cap marks the task waiting (it stays pending) and
//! is acknowledged; nothing is left in the queue for it, so a waiting task costs nothing
//! while it waits, however many there are. It is woken by an event: when a task of its user
//! ends, [`wake_waiting`] (or [`wake`], when the statement that completed the task found the
//! waiting one) enqueues a fresh plan job for the user's oldest waiting task, which
//! claims the freed slot (or, if another task of the user took it first, waits again). The
//! reconciler is the safety net for a lost wake-up (Redis down at that moment, a worker that
//! died between the end and the wake-up, a cap raised by an operator): it re-enqueues waiting
//! tasks only while their user is below the cap, oldest first (see `unfinished_work`).

use crate::{
    domain::{Priority, TaskId},
    queue::{Dispatcher, Job},
    store::ExecutionStore,
};

/// A task of `user_id` ended: wake their oldest task waiting for capacity. Best effort: a
/// lost wake-up is made good by the reconciler.
pub async fn wake_waiting(store: &dyn ExecutionStore, dispatcher: &dyn Dispatcher, user_id: &str) {
    let waiting = match store.waiting_tasks(user_id, 1).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(user = %user_id, error = %e, "could not look for tasks waiting for capacity");
            return;
        }
    };
    wake(dispatcher, user_id, waiting.into_iter().next()).await;
}

/// Wakes `waiting`, the oldest task of `user_id` waiting for capacity as the statement that
/// ended their task found it. Best effort, as [`wake_waiting`].
pub async fn wake(dispatcher: &dyn Dispatcher, user_id: &str, waiting: Option<(TaskId, Priority)>) {
    let Some((task, priority)) = waiting else { return };
    if let Err(e) = dispatcher.enqueue(&[Job::plan(task, priority)]).await {
        tracing::warn!(user = %user_id, error = %e, "could not wake a task waiting for capacity");
    }
}
