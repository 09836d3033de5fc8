//! The process-wide fan-out of task event notifications.
//!
//! After committing `task_events` rows, the store sends `NOTIFY task_events, '<task id>'`
//! (`crate::store::PgStore`, batched, in a transaction of its own: a `NOTIFY` in the writing
//! transaction would serialise every commit behind one lock). One [`PgListener`] per process, on its own
//! connection, receives them and wakes the subscribers of that task through a per-task
//! `broadcast` channel. A notification is only a wake-up: subscribers read the rows
//! themselves, so ordering and completeness come from Postgres. Notifications are lost while
//! the listener is disconnected, so after every (re)connection it wakes every subscriber to
//! re-read; subscribers also re-read on their own now and then, which covers anything else.
//!
//! The listener starts with the first subscription, so a process that never streams events
//! holds no extra connection, and stops when the hub is dropped or shut down.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex, Once, PoisonError},
    time::Duration,
};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::domain::TaskId;

/// The notification channel the store's event wake-ups are sent on.
pub const CHANNEL: &str = "task_events";
/// `application_name` of the listener's connection, to find it in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "orchestrator-events";

/// Wake-ups a slow subscriber may have queued; beyond this it lags, which also wakes it.
const CHANNEL_CAPACITY: usize = 16;
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Hands out [`Subscription`]s to the notifications of one task. Cloning shares it.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

struct Inner {
    channels: Arc<Channels>,
    connect: PgConnectOptions,
    /// Cancelled at shutdown: subscriptions end, the listener stops.
    shutdown: CancellationToken,
    started: Once,
    /// Stops the listener: a child of `shutdown`, also cancelled by `_stop_guard` when the last
    /// handle of the hub is dropped.
    listener_stop: CancellationToken,
    _stop_guard: DropGuard,
}

/// The subscribers' channels, by task. An entry lives while it has receivers.
#[derive(Default)]
struct Channels {
    by_task: Mutex<HashMap<TaskId, broadcast::Sender<Wake>>>,
}

/// What a wake-up says about the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// It has new events.
    Events,
    /// It ended (and has new events).
    Ended,
    /// Anything may have happened: wake-ups were lost (a listener reconnection, a subscriber
    /// that fell behind).
    Unknown,
}

impl Channels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, broadcast::Sender<Wake>>> {
        // The map stays consistent whatever panicked while holding it: every change is one call.
        self.by_task.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn subscribe(&self, task: TaskId) -> broadcast::Receiver<Wake> {
        self.lock().entry(task).or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0).subscribe()
    }

    /// Drops `receiver`, and the task's channel when that was its last receiver.
    fn leave(&self, task: TaskId, receiver: broadcast::Receiver<Wake>) {
        drop(receiver);
        let mut channels = self.lock();
        // Under the lock no one can subscribe in between, so an empty channel stays empty.
        if channels.get(&task).is_some_and(|sender| sender.receiver_count() == 0) {
            channels.remove(&task);
        }
    }

    fn wake(&self, task: TaskId, wake: Wake) {
        if let Some(sender) = self.lock().get(&task) {
            // An error only means the last receiver just left.
            let _ = sender.send(wake);
        }
    }

    fn wake_all(&self) {
        for sender in self.lock().values() {
            let _ = sender.send(Wake::Unknown);
        }
    }
}

impl EventHub {
    /// A hub whose listener connects like `pool` does, on a connection of its own (it is held
    /// for as long as the process streams events, so it must not take one from the pool).
    pub fn new(pool: &PgPool, shutdown: CancellationToken) -> Self {
        let connect = pool.connect_options().as_ref().clone().application_name(LISTENER_APPLICATION_NAME);
        let listener_stop = shutdown.child_token();
        Self {
            inner: Arc::new(Inner {
                channels: Arc::default(),
                connect,
                shutdown,
                started: Once::new(),
                _stop_guard: listener_stop.clone().drop_guard(),
                listener_stop,
            }),
        }
    }

    /// Wake-ups for the events of `task`. Subscribe before reading the events, so that none
    /// committed in between goes unnoticed. Must be called inside the Tokio runtime.
    pub fn subscribe(&self, task: TaskId) -> Subscription {
        let receiver = self.inner.channels.subscribe(task);
        self.inner.started.call_once(|| {
            let (channels, connect) = (self.inner.channels.clone(), self.inner.connect.clone());
            let stop = self.inner.listener_stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = listen(channels, connect) => {}
                    _ = stop.cancelled() => {}
                }
            });
        });
        Subscription {
            task,
            receiver: Some(receiver),
            channels: self.inner.channels.clone(),
            shutdown: self.inner.shutdown.clone(),
        }
    }
}

/// The wake-ups of one task's subscriber; leaving drops the task's channel when it was the
/// last subscriber.
pub struct Subscription {
    task: TaskId,
    receiver: Option<broadcast::Receiver<Wake>>,
    channels: Arc<Channels>,
    shutdown: CancellationToken,
}

impl Subscription {
    /// Waits until the task may have new events: a notification for it, a listener
    /// reconnection, or missed wake-ups. `false` once the server shuts down.
    pub async fn changed(&mut self) -> bool {
        self.next().await.is_some()
    }

    /// The next wake-up, `None` once the server shuts down.
    pub async fn next(&mut self) -> Option<Wake> {
        let receiver = self.receiver.as_mut()?;
        tokio::select! {
            received = receiver.recv() => match received {
                Ok(wake) => Some(wake),
                Err(broadcast::error::RecvError::Lagged(_)) => Some(Wake::Unknown),
                Err(broadcast::error::RecvError::Closed) => None,
            },
            _ = self.shutdown.cancelled() => None,
        }
    }

    /// Whether the server is shutting down; streams should end.
    pub fn is_closed(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Forgets queued wake-ups; call it right before a read, which covers them.
    pub fn clear(&mut self) {
        if let Some(receiver) = self.receiver.as_mut() {
            *receiver = receiver.resubscribe();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(receiver) = self.receiver.take() {
            self.channels.leave(self.task, receiver);
        }
    }
}

/// Listens until its caller stops it: reconnects with backoff, and after each connection
/// wakes everyone, since notifications sent while disconnected are gone.
async fn listen(channels: Arc<Channels>, connect: PgConnectOptions) {
    // A pool of one connection, used only to (re)connect the listener.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(connect);
    let mut backoff = RECONNECT_MIN;
    loop {
        let Err(e) = session(&pool, &channels, &mut backoff).await;
        tracing::warn!(error = %e, "event listener disconnected; subscribers fall back to re-reading until it is back");
        let jitter = rand::random_range(0.5..1.0);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// One connection's worth of listening; returns on an error the listener cannot recover from.
async fn session(pool: &PgPool, channels: &Channels, backoff: &mut Duration) -> Result<Infallible, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    tracing::debug!("event listener connected");
    *backoff = RECONNECT_MIN;
    channels.wake_all();
    loop {
        match listener.try_recv().await? {
            Some(notification) => match parse_payload(notification.payload()) {
                Some((task, wake)) => channels.wake(task, wake),
                None => tracing::debug!(payload = notification.payload(), "ignoring an unexpected notification"),
            },
            // The connection dropped and the listener has reconnected: whatever was sent in
            // between is lost, so everyone re-reads.
            None => {
                tracing::info!("event listener reconnected");
                channels.wake_all();
            }
        }
    }
}

/// The task of a `<task id>` payload, and whether it ended: `<task id>:ended` (or
/// `<task id>:<event id>`, as the database trigger of earlier versions sent).
fn parse_payload(payload: &str) -> Option<(TaskId, Wake)> {
    let (task, wake) = match payload.split_once(':') {
        Some((task, ENDED)) => (task, Wake::Ended),
        Some((task, event)) => {
            event.parse::<i64>().ok()?;
            (task, Wake::Events)
        }
        None => (payload, Wake::Events),
    };
    Some((task.parse().ok()?, wake))
}

/// The suffix of the payload that says the task ended (`crate::lifecycle`'s `AnnounceEnd`).
pub const ENDED: &str = "ended";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_the_task() {
        let task = TaskId::new();
        assert_eq!(parse_payload(&task.to_string()), Some((task, Wake::Events)));
        assert_eq!(parse_payload(&format!("{task}:42")), Some((task, Wake::Events)));
        assert_eq!(parse_payload(&format!("{task}:ended")), Some((task, Wake::Ended)));
        assert_eq!(parse_payload("nope:ended"), None);
        assert_eq!(parse_payload(""), None);
        assert_eq!(parse_payload("nope:1"), None);
        assert_eq!(parse_payload(&format!("{task}:x")), None);
    }

    #[test]
    fn a_wake_reaches_only_the_tasks_subscribers() {
        let channels = Channels::default();
        let (a, b) = (TaskId::new(), TaskId::new());
        let mut first = channels.subscribe(a);
        let mut second = channels.subscribe(a);
        channels.wake(b, Wake::Events);
        assert!(first.try_recv().is_err(), "another task's wake-up");
        channels.wake(a, Wake::Ended);
        assert_eq!(first.try_recv(), Ok(Wake::Ended));
        assert_eq!(second.try_recv(), Ok(Wake::Ended));
        channels.wake_all();
        assert_eq!(first.try_recv(), Ok(Wake::Unknown));
    }

    #[test]
    fn the_last_subscriber_out_removes_the_channel() {
        let channels = Channels::default();
        let task = TaskId::new();
        let (first, second) = (channels.subscribe(task), channels.subscribe(task));
        channels.leave(task, first);
        assert!(channels.lock().contains_key(&task), "one subscriber remains");
        channels.leave(task, second);
        assert!(!channels.lock().contains_key(&task));
    }
}
