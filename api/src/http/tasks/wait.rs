//! `Prefer: wait=N` on `POST /tasks` and `GET /tasks/{id}`: the answer waits until the task
//! has ended or requires a person's action, or N seconds (at most 60) have passed, so a
//! client gets the result (or the question) in one request instead of polling.
//!
//! The wait is woken by the same notifications as the event stream ([`crate::events`]): the
//! subscription is taken *before* the task is read, so an end committed after the read still
//! wakes it. A task writes about ten events, each a wake-up; the wait ignores those and acts
//! on the one that says the task ended (the lifecycle's `AnnounceEnd`), reading the task and
//! its steps once. When wake-ups may have been lost (a listener reconnection), and every
//! [`REREAD_INTERVAL`] in case one was, it checks the task's status. A shutdown ends every
//! wait at once with the task's current state.
//!
//! Each user may hold at most `SSE_MAX_STREAMS_PER_USER` waits at once in each API process
//! ([`WaitSlots`]); beyond that the request is answered at once, as without the preference,
//! and without `Preference-Applied`, which is how a client tells it was not waited for. Every
//! answer of these routes carries `Vary: Prefer`.

use std::{sync::Arc, time::Duration};

use axum::{
    http::{HeaderValue, header},
    response::Response,
};
use tokio::time::Instant;

use crate::{
    domain::TaskId,
    events::{EventHub, Subscription, Wake},
    http::{
        prefer::{self, Wait},
        slots::WaitSlots,
    },
    store::{TaskDetail, TaskStore},
};

/// How often a waiting request re-reads the task when no notification came, in case one was
/// lost (the event stream uses the same interval).
const REREAD_INTERVAL: Duration = Duration::from_secs(2);

/// A request that asked to wait, subscribed to its task's wake-ups.
pub(super) struct Waiter {
    wait: Wait,
    task: TaskId,
    subscription: Subscription,
}

/// How a wait ended: the task's latest state, and whether the wait was granted.
pub(super) struct Waited {
    pub detail: TaskDetail,
    /// The `Preference-Applied` to send: `None` when the request was answered without
    /// waiting because the user holds as many waits as they may.
    pub applied: Option<Wait>,
}

impl Waited {
    pub fn ended(&self) -> bool {
        self.detail.task.status.is_terminal()
    }
}

impl Waiter {
    /// Subscribes to task `id`'s wake-ups. Call it before reading the task.
    pub fn subscribe(events: &EventHub, task: TaskId, wait: Wait) -> Self {
        Self { wait, task, subscription: events.subscribe(task) }
    }

    /// The same wait on another task: a replayed creation answers an earlier task.
    pub fn retarget(self, events: &EventHub, task: TaskId) -> Self {
        Self::subscribe(events, task, self.wait)
    }

    /// Waits until the task has ended or the wait is over, starting from `current`, the task
    /// as read after [`Self::subscribe`]. `user` is whose waits it counts against.
    pub async fn until_ended(
        mut self,
        store: &dyn TaskStore,
        slots: &Arc<WaitSlots>,
        user: &str,
        mut current: TaskDetail,
    ) -> Waited {
        let applied = Some(self.wait);
        if current.task.status.awaits_outside() {
            return Waited { detail: current, applied };
        }
        let Some(_slot) = slots.acquire(user) else {
            tracing::debug!(task = %self.task, user, max = slots.max(), "too many waits open; answering at once");
            return Waited { detail: current, applied: None };
        };
        let deadline = Instant::now() + self.wait.duration();
        // Whether the task may have changed since `current` was read.
        let mut changed = false;
        loop {
            let wake = tokio::select! {
                // The deadline first: at the end of the wait the answer must not be delayed.
                biased;
                _ = tokio::time::sleep_until(deadline) => break,
                wake = self.subscription.next() => match wake {
                    Some(wake) => wake,
                    None => break,
                },
                _ = tokio::time::sleep(REREAD_INTERVAL) => Wake::Unknown,
            };
            changed = true;
            match wake {
                // New events of a task that goes on: nothing to read yet.
                Wake::Events => continue,
                Wake::Ended => break,
                Wake::Unknown => {}
            }
            // Wake-ups queued so far are answered by this check.
            self.subscription.clear();
            match store.task_status(self.task).await {
                Ok(Some(status)) if status.awaits_outside() => break,
                Ok(Some(_)) => {}
                // Tasks are never deleted; should one vanish, the last state read is the answer.
                Ok(None) => break,
                // Keep waiting: the next wake-up or check may succeed, and the deadline
                // answers with the last state read in any case.
                Err(e) => tracing::warn!(task = %self.task, error = %e, "checking a waited-for task failed"),
            }
        }
        if changed {
            match store.task(self.task).await {
                Ok(Some(detail)) => current = detail,
                Ok(None) => {}
                Err(e) => tracing::warn!(task = %self.task, error = %e, "re-reading a waited-for task failed"),
            }
        }
        Waited { detail: current, applied }
    }
}

/// Adds `Vary: Prefer` (the answer depends on it) and, when a wait was granted,
/// `Preference-Applied: wait=N`.
pub(super) fn mark(response: &mut Response, applied: Option<Wait>) {
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Prefer"));
    if let Some(wait) = applied {
        headers.insert(prefer::PREFERENCE_APPLIED, wait.applied());
    }
}
