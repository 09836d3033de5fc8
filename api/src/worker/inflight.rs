//! The jobs a worker is running right now: for its heartbeat, for cancelling a task's steps
//! when a cancel message arrives, and for telling running steps to let go at shutdown.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::{coordination::InFlightJob, domain::TaskId, queue::Job};

struct Entry {
    job: Job,
    since: chrono::DateTime<Utc>,
    cancel: CancellationToken,
}

/// Shared by the fetch loop, the jobs and the maintenance tasks. The lock is never held
/// across an await.
#[derive(Clone, Default)]
pub struct InFlight {
    jobs: Arc<Mutex<HashMap<String, Entry>>>,
}

/// Removes the job from the registry when the job ends, however it ends.
pub struct Registration {
    registry: InFlight,
    delivery: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.delivery);
    }
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned map is still a valid map: the panicking job only failed to remove itself.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a job; its token fires when its task is cancelled.
    pub fn register(&self, delivery: &str, job: Job) -> (Registration, CancellationToken) {
        let cancel = CancellationToken::new();
        self.lock().insert(delivery.to_owned(), Entry { job, since: Utc::now(), cancel: cancel.clone() });
        (Registration { registry: self.clone(), delivery: delivery.to_owned() }, cancel)
    }

    /// Cancels the running jobs of `task`; returns how many there were.
    pub fn cancel_task(&self, task: TaskId) -> usize {
        let jobs = self.lock();
        let mine: Vec<_> = jobs.values().filter(|e| e.job.task() == task).collect();
        mine.iter().for_each(|e| e.cancel.cancel());
        mine.len()
    }

    pub fn snapshot(&self) -> Vec<InFlightJob> {
        self.lock()
            .values()
            .map(|e| InFlightJob {
                kind: e.job.kind().into(),
                task_id: e.job.task(),
                step_id: e.job.step_id(),
                since: e.since,
            })
            .collect()
    }
}
