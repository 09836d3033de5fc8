//! Dispatch. A job names a task, optionally a step, and the attempt it was sent for; it
//! carries an HMAC-SHA256 signature that workers verify before acting on it.
//!
//! Delivery is at least once: a job is acknowledged only after the Postgres transition it
//! caused has committed, and a job left unacknowledged past the visibility timeout is
//! handed to another worker. Duplicates are harmless because every transition is a
//! conditional update, so the queue never has to be exactly-once itself.

mod job;
mod redis_stream;

pub use job::{Job, JobKind, JobSigner};
pub use redis_stream::RedisQueue;

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
    /// The queue's id for this delivery, used to acknowledge it.
    pub id: String,
    /// The job, or why it was refused (bad signature, malformed fields).
    pub job: Result<Job, String>,
}

/// The sending side, used by the API and by workers that enqueue follow-up steps.
#[async_trait::async_trait]
pub trait Dispatcher: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), QueueError>;
    async fn enqueue(&self, jobs: &[Job]) -> Result<(), QueueError>;
}

/// The receiving side, used by workers.
#[async_trait::async_trait]
pub trait JobSource: Send + Sync + 'static {
    /// Waits up to `block` for at most `max` new jobs for `consumer`.
    async fn fetch(&self, consumer: &str, max: usize, block: Duration) -> Result<Vec<Delivery>, QueueError>;
    /// Takes over at most `max` jobs delivered to other consumers and unacknowledged for
    /// longer than the visibility timeout (their worker died or stalled).
    async fn reclaim(&self, consumer: &str, max: usize) -> Result<Vec<Delivery>, QueueError>;
    async fn ack(&self, delivery_id: &str) -> Result<(), QueueError>;
}
