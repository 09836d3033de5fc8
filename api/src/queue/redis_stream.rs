//! The dispatch queue on a Redis stream with one consumer group.
//!
//! `XADD` enqueues, `XREADGROUP` delivers, `XACK` + `XDEL` retire a job once its effect has
//! committed (so the stream holds only live jobs), and `XAUTOCLAIM` hands jobs idle past
//! the visibility timeout to another consumer. If the stream or group vanished (a Redis
//! restart without persistence, a `FLUSHALL`), the group is recreated on the next read.

use std::time::Duration;

use deadpool_redis::{Config, Pool, Runtime};
use redis::{
    Value,
    streams::{StreamAutoClaimReply, StreamId, StreamReadReply},
};

use super::{Delivery, Dispatcher, Job, JobSigner, JobSource, QueueError};

const GROUP: &str = "workers";

#[derive(Clone)]
pub struct RedisQueue {
    pool: Pool,
    stream: String,
    signer: JobSigner,
    visibility_timeout: Duration,
}

impl RedisQueue {
    /// Connects and makes sure the stream and its consumer group exist.
    pub async fn connect(
        url: &str,
        prefix: &str,
        signer: JobSigner,
        visibility_timeout: Duration,
        pool_size: usize,
    ) -> Result<Self, QueueError> {
        let mut config = Config::from_url(url);
        config.pool = Some(deadpool_redis::PoolConfig::new(pool_size));
        let pool = config.create_pool(Some(Runtime::Tokio1)).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad REDIS_URL", e.to_string()))
        })?;
        let queue = Self { pool, stream: format!("{prefix}:dispatch"), signer, visibility_timeout };
        queue.ensure_group().await?;
        Ok(queue)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn ensure_group(&self) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        // From id 0, so jobs enqueued before the first worker started are delivered too.
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn delivery(&self, entry: &StreamId) -> Delivery {
        let job = self.signer.decode(|name| match entry.map.get(name) {
            Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes).ok(),
            Some(Value::SimpleString(s)) => Some(s.as_str()),
            _ => None,
        });
        Delivery { id: entry.id.clone(), job }
    }
}

#[async_trait::async_trait]
impl Dispatcher for RedisQueue {
    async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }

    async fn enqueue(&self, jobs: &[Job]) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for job in jobs {
            let cmd = pipe.cmd("XADD").arg(&self.stream).arg("*");
            for (field, value) in self.signer.encode(job) {
                cmd.arg(field).arg(value);
            }
            cmd.ignore();
        }
        let mut conn = self.pool.get().await?;
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl JobSource for RedisQueue {
    async fn fetch(&self, consumer: &str, max: usize, block: Duration) -> Result<Vec<Delivery>, QueueError> {
        let mut conn = self.pool.get().await?;
        // The read blocks server-side; give the client more patience than the server.
        conn.set_response_timeout(block + Duration::from_secs(5));
        let reply: Result<Option<StreamReadReply>, redis::RedisError> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut conn)
            .await;
        let reply = match reply {
            Err(e) if e.code() == Some("NOGROUP") => {
                drop(conn);
                self.ensure_group().await?;
                return Ok(Vec::new());
            }
            other => other?,
        };
        Ok(reply
            .map(|r| r.keys.iter().flat_map(|k| k.ids.iter()).map(|e| self.delivery(e)).collect())
            .unwrap_or_default())
    }

    async fn reclaim(&self, consumer: &str, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let mut conn = self.pool.get().await?;
        let reply: Result<StreamAutoClaimReply, _> = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(self.visibility_timeout.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await;
        match reply {
            Err(e) if e.code() == Some("NOGROUP") => {
                drop(conn);
                self.ensure_group().await?;
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
            Ok(reply) => Ok(reply.claimed.iter().map(|e| self.delivery(e)).collect()),
        }
    }

    async fn ack(&self, delivery_id: &str) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        redis::pipe()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(delivery_id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(delivery_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}
