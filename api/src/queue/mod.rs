//! Dispatch. A job names a task, optionally a step, the attempt it was sent for and its
//! priority; it carries an HMAC-SHA256 signature that workers verify before acting on it.
//!
//! Delivery is at least once: a job is acknowledged only after the Postgres transition it
//! caused has committed, and a job left unacknowledged past the visibility timeout is
//! handed to another worker. Duplicates are harmless because every transition is a
//! conditional update, so the queue never has to be exactly-once itself.
//!
//! The queue also remembers which work has a job (queued, delayed or in flight), so the
//! reconciler can tell a step that is merely waiting from one whose job was lost.

mod job;
mod redis_stream;

pub use job::{Job, JobSigner};
pub use redis_stream::{RedisQueue, open_client};

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis pool error: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A job as a worker received it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue's id for this delivery.
    pub id: String,
    /// The stream it came from, to acknowledge it there.
    pub stream: String,
    /// The job, or why it was refused (bad signature, malformed fields).
    pub job: Result<Job, String>,
    /// How many times the queue has handed this job out, this time included.
    pub deliveries: u64,
}

/// A job that kept failing and was set aside, as `GET /admin/dead-letters` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The entry's id in the dead-letter stream (its first part is the unix time in ms).
    pub id: String,
    /// `plan` or `step`; absent when the job could not be read at all.
    pub kind: Option<String>,
    pub task_id: Option<uuid::Uuid>,
    pub step_id: Option<uuid::Uuid>,
    pub attempt: Option<u32>,
    /// Deliveries the job had when it was set aside.
    pub deliveries: u64,
    /// The last error its handler reported.
    pub reason: String,
    pub dead_at: chrono::DateTime<chrono::Utc>,
}

/// The sending side, used by the API, the workers and the reconciler.
#[async_trait::async_trait]
pub trait Dispatcher: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), QueueError>;
    async fn enqueue(&self, jobs: &[Job]) -> Result<(), QueueError>;
    /// Enqueues `job` once `delay` has passed (retry backoff).
    async fn enqueue_after(&self, job: &Job, delay: Duration) -> Result<(), QueueError>;
    /// For each job, whether work of its key has a job queued, delayed or in flight.
    async fn has_job(&self, jobs: &[Job]) -> Result<Vec<bool>, QueueError>;
    /// Depth and age of each priority's queue, for metrics.
    async fn stats(&self) -> Result<Vec<QueueStats>, QueueError>;
    /// The newest `limit` dead letters, newest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStats {
    pub priority: crate::domain::Priority,
    /// Jobs queued or delivered and not yet acknowledged.
    pub depth: u64,
    /// How long the oldest of them has waited: the dispatch lag.
    pub oldest_age: Duration,
}

/// The receiving side, used by workers.
#[async_trait::async_trait]
pub trait JobSource: Send + Sync + 'static {
    /// Waits up to `block` for at most `max` new jobs for `consumer`, higher priorities first.
    async fn fetch(&self, consumer: &str, max: usize, block: Duration) -> Result<Vec<Delivery>, QueueError>;
    /// Takes over at most `max` jobs delivered to other consumers and unacknowledged for
    /// longer than the visibility timeout (their worker died or stalled).
    async fn reclaim(&self, consumer: &str, max: usize) -> Result<Vec<Delivery>, QueueError>;
    /// Moves delayed jobs whose time has come into their streams.
    async fn promote_due(&self) -> Result<usize, QueueError>;
    /// Tells the queue the job is still being worked on, so it is not reclaimed.
    async fn touch(&self, consumer: &str, delivery: &Delivery) -> Result<(), QueueError>;
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError>;
    /// Acknowledges a job that keeps failing and keeps it, with `reason`, in the dead-letter
    /// stream (capped at the newest [`DEAD_LETTERS_KEPT`]).
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError>;
}

/// Dead letters kept; older ones are trimmed.
pub const DEAD_LETTERS_KEPT: usize = 10_000;
