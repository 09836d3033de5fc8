//! Wake-ups for live event streams, sent by the application after the writing transaction
//! has committed.
//!
//! Postgres `NOTIFY` inside a writing transaction takes a database-wide lock at commit and
//! holds it through the commit's WAL flush, so every transaction that notified committed one
//! after another (about one fsync each). The store instead queues the task ids whose events
//! it has just committed, and one background task per store sends them on
//! [`crate::events::CHANNEL`], as many as have queued up, in a transaction of their own that
//! writes no WAL and so commits without waiting for a flush.
//!
//! A notification is only a wake-up (`crate::events`): subscribers read the rows themselves
//! in `(xact_id, id)` order, and only rows no running transaction can precede, so neither the
//! order nor the completeness of a stream depends on when or whether a notification arrives.
//! One sent after a commit always finds its rows visible; one lost (the process died between
//! the commit and the send, Postgres was unreachable) costs a subscriber at most its re-read
//! interval.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    domain::TaskId,
    events::{CHANNEL, ENDED},
};

/// A task to wake, and whether it ended.
type Wake = (Uuid, bool);

/// Most task ids sent in one statement; more wait for the next.
const BATCH: usize = 1024;

/// Queues task ids to notify; cloning shares the queue. The sender task starts with the
/// first notification (inside the runtime) and ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct EventNotifier {
    sender: mpsc::UnboundedSender<Wake>,
    /// Taken by the first notification, which starts the sender task.
    receiver: Arc<Mutex<Option<mpsc::UnboundedReceiver<Wake>>>>,
    pool: PgPool,
}

impl EventNotifier {
    pub(super) fn new(pool: PgPool) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self { sender, receiver: Arc::new(Mutex::new(Some(receiver))), pool }
    }

    /// Wakes the subscribers of `task`, in every process: call it after the transaction that
    /// wrote the task's events has committed.
    pub(super) fn notify(&self, task: TaskId) {
        self.send((task.0, false));
    }

    /// Tells the subscribers of `task` that it ended: requests waiting for its end read it
    /// then, and only then.
    pub(super) fn notify_ended(&self, task: TaskId) {
        self.send((task.0, true));
    }

    fn send(&self, wake: Wake) {
        if let Some(receiver) = self.receiver.lock().unwrap_or_else(PoisonError::into_inner).take() {
            tokio::spawn(send_loop(receiver, self.pool.clone()));
        }
        // An error means the sender task is gone, which only happens while the process exits.
        let _ = self.sender.send(wake);
    }
}

async fn send_loop(mut receiver: mpsc::UnboundedReceiver<Wake>, pool: PgPool) {
    let mut batch = Vec::with_capacity(BATCH);
    // Waits for the first id, then takes whatever queued up behind it: under load each
    // statement carries many wake-ups, when idle each goes out at once.
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        // One wake-up per task; "ended" wins, since it says "new events" too.
        let mut wakes: HashMap<Uuid, bool> = HashMap::with_capacity(batch.len());
        for (task, ended) in batch.drain(..) {
            *wakes.entry(task).or_default() |= ended;
        }
        let tasks: Vec<String> = wakes
            .into_iter()
            .map(|(task, ended)| if ended { format!("{task}:{ENDED}") } else { task.to_string() })
            .collect();
        let sent = sqlx::query("SELECT pg_notify($1, task) FROM unnest($2::text[]) AS task")
            .bind(CHANNEL)
            .bind(&tasks)
            .execute(&pool)
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, tasks = tasks.len(), "could not send event wake-ups; streams re-read on their own");
        }
    }
}
