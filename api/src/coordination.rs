//! Coordination between the processes of a deployment, through Redis: the registry of live
//! workers (heartbeats with a TTL), the leader lock that keeps one reconciler active, the
//! broadcast that tells workers a task was cancelled, and the warm contexts that completed
//! steps leave for the next run of the same work (`context:{task_hash}:{position}`, with a
//! TTL).
//!
//! None of it is the truth: a lost heartbeat only hides a worker from `GET /workers` for a
//! moment, a lost lock only pauses the reconciler, a lost cancel message is caught by the
//! lease renewal, which also reads the task's status, and a lost warm context only makes the
//! next start cold.

use std::{pin::Pin, time::Duration};

use chrono::{DateTime, Utc};
use deadpool_redis::Pool;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use agents::WarmContext;

use crate::{domain::TaskId, queue::QueueError};

/// What a worker says about itself in its heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub concurrency: usize,
    pub in_flight: Vec<InFlightJob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InFlightJob {
    /// `plan` or `step`.
    pub kind: String,
    pub task_id: TaskId,
    pub step_id: Option<crate::domain::StepId>,
    pub since: DateTime<Utc>,
}

pub type Cancellations = Pin<Box<dyn Stream<Item = TaskId> + Send>>;

#[async_trait::async_trait]
pub trait Coordination: Send + Sync + 'static {
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> Result<(), QueueError>;
    async fn deregister(&self, worker: &str) -> Result<(), QueueError>;
    async fn workers(&self) -> Result<Vec<WorkerInfo>, QueueError>;
    /// Takes or extends the lock `name` for `holder`; false while someone else holds it.
    async fn try_lead(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, QueueError>;
    async fn publish_cancel(&self, task: TaskId) -> Result<(), QueueError>;
    /// Task ids as they are cancelled, from now on; ends when the connection drops.
    async fn cancellations(&self) -> Result<Cancellations, QueueError>;
    /// Keeps what the step at `position` of a task with hash `task_hash` left, for `ttl`.
    async fn save_warm_context(
        &self,
        task_hash: &str,
        position: i32,
        context: &WarmContext,
        ttl: Duration,
    ) -> Result<(), QueueError>;
    /// What the step at `position` of an earlier run of the same work left, if it is still
    /// kept (and readable: one written by an incompatible build is ignored).
    async fn warm_context(&self, task_hash: &str, position: i32) -> Result<Option<WarmContext>, QueueError>;
}

/// Takes the lock when free, extends it when we hold it, in one atomic step.
const LEAD_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

#[derive(Clone)]
pub struct RedisCoordination {
    pool: Pool,
    client: redis::Client,
    prefix: String,
    lead: redis::Script,
}

impl RedisCoordination {
    /// `client` is the queue's (`RedisQueue::client`), so pub/sub trusts the same certificates
    /// as the pool.
    pub fn new(pool: Pool, client: redis::Client, prefix: &str) -> Self {
        Self { pool, client, prefix: prefix.to_owned(), lead: redis::Script::new(LEAD_SCRIPT) }
    }

    fn worker_key(&self, id: &str) -> String {
        format!("{}:workers:{id}", self.prefix)
    }

    fn warm_key(&self, task_hash: &str, position: i32) -> String {
        format!("{}:context:{task_hash}:{position}", self.prefix)
    }

    fn cancel_channel(&self) -> String {
        format!("{}:cancel", self.prefix)
    }
}

#[async_trait::async_trait]
impl Coordination for RedisCoordination {
    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        let body = serde_json::to_string(info).unwrap_or_default();
        redis::cmd("SET")
            .arg(self.worker_key(&info.id))
            .arg(body)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn deregister(&self, worker: &str) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        redis::cmd("DEL").arg(self.worker_key(worker)).query_async::<()>(&mut conn).await?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, QueueError> {
        let mut conn = self.pool.get().await?;
        let pattern = format!("{}:workers:*", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let bodies: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut workers: Vec<WorkerInfo> =
            bodies.into_iter().flatten().filter_map(|b| serde_json::from_str(&b).ok()).collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(workers)
    }

    async fn try_lead(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, QueueError> {
        let mut conn = self.pool.get().await?;
        let led: i64 = self
            .lead
            .key(format!("{}:lock:{name}", self.prefix))
            .arg(holder)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(led == 1)
    }

    async fn publish_cancel(&self, task: TaskId) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        redis::cmd("PUBLISH").arg(self.cancel_channel()).arg(task.to_string()).query_async::<()>(&mut conn).await?;
        Ok(())
    }

    async fn cancellations(&self) -> Result<Cancellations, QueueError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.cancel_channel()).await?;
        let stream = pubsub
            .into_on_message()
            .filter_map(|msg| async move { msg.get_payload::<String>().ok().and_then(|p| p.parse::<TaskId>().ok()) });
        Ok(Box::pin(stream))
    }

    async fn save_warm_context(
        &self,
        task_hash: &str,
        position: i32,
        context: &WarmContext,
        ttl: Duration,
    ) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        let body = serde_json::to_string(context).unwrap_or_default();
        redis::cmd("SET")
            .arg(self.warm_key(task_hash, position))
            .arg(body)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn warm_context(&self, task_hash: &str, position: i32) -> Result<Option<WarmContext>, QueueError> {
        let mut conn = self.pool.get().await?;
        let body: Option<String> =
            redis::cmd("GET").arg(self.warm_key(task_hash, position)).query_async(&mut conn).await?;
        Ok(body.and_then(|b| match serde_json::from_str(&b) {
            Ok(context) => Some(context),
            Err(e) => {
                tracing::warn!(task_hash, position, error = %e, "unreadable warm context ignored");
                None
            }
        }))
    }
}
