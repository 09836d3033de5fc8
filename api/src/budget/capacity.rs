//! Waiting for capacity under the per-user cap on planning and running tasks.
//!
//! A plan job that finds its user at the cap leaves the task pending and is deferred
//! through the queue's delayed set, carrying a generation (`Job::attempt - 1`; a fresh
//! job's is 0). Each deferral bumps the task's `capacity_waits` with a conditional update,
//! and a deferred job whose generation is no longer current is dropped, so duplicate jobs
//! (a wake-up, the reconciler) collapse into one chain instead of multiplying. Deferrals
//! touch `updated_at`, so the reconciler, which re-enqueues pending tasks untouched for
//! `RECONCILE_MIN_AGE_MS`, only steps in when the chain was lost (Redis lost the job, a
//! worker died between acknowledging and deferring), and then its fresh job starts a new
//! chain. When a task ends, the oldest waiting task of its user is woken with a fresh job.

use std::time::Duration;

use crate::{
    domain::{Priority, TaskId},
    queue::{Dispatcher, Job, JobKind},
    store::ExecutionStore,
};

/// A plan job to enqueue again later, after this one is acknowledged (its acknowledgement
/// forgets the task's job key, which the deferred job sets again).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deferral {
    pub job: Job,
    pub delay: Duration,
}

/// The generation a plan job carries.
pub fn generation_of(job: &Job) -> u32 {
    job.attempt.saturating_sub(1)
}

/// The deferred job for `generation`, due after a jittered `retry` so that waiting tasks
/// do not look again all at once.
pub fn defer(task: TaskId, priority: Priority, generation: u32, retry: Duration) -> Deferral {
    let job = Job { kind: JobKind::Plan, task, step: None, attempt: generation.saturating_add(1), priority };
    Deferral { job, delay: retry.mul_f64(rand::random_range(0.5..1.5)) }
}

/// A task of `user_id` ended: wake their oldest task waiting for capacity. Best effort: the
/// waiting task's own deferred job comes anyway.
pub async fn wake_waiting(store: &dyn ExecutionStore, dispatcher: &dyn Dispatcher, user_id: &str) {
    let waiting = match store.waiting_tasks(user_id, 1).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(user = %user_id, error = %e, "could not look for tasks waiting for capacity");
            return;
        }
    };
    let jobs: Vec<Job> = waiting.into_iter().map(|(task, priority)| Job::plan(task, priority)).collect();
    if let Err(e) = dispatcher.enqueue(&jobs).await {
        tracing::warn!(user = %user_id, error = %e, "could not wake a task waiting for capacity");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_job_is_generation_zero_and_a_deferral_carries_the_next() {
        let task = TaskId::new();
        assert_eq!(generation_of(&Job::plan(task, Priority::Normal)), 0);
        let d = defer(task, Priority::High, 7, Duration::from_millis(1000));
        assert_eq!((generation_of(&d.job), d.job.kind, d.job.priority), (7, JobKind::Plan, Priority::High));
        assert!(d.delay >= Duration::from_millis(500) && d.delay < Duration::from_millis(1500), "{:?}", d.delay);
        // Same key as any plan job of the task: the reconciler sees it as the task's job.
        assert_eq!(d.job.key(), Job::plan(task, Priority::Normal).key());
    }
}
