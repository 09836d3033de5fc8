//! The dispatch queue on Redis: one stream per priority with one consumer group each, a
//! sorted set of delayed jobs, and a hash of the job keys that have a job.
//!
//! `XADD` enqueues, `XREADGROUP` delivers (high, then normal, then low), `XACK` + `XDEL`
//! retire a job once its effect has committed (so streams hold only live jobs), `XCLAIM
//! … JUSTID` keeps a long job's delivery fresh, and `XAUTOCLAIM` hands jobs idle past the
//! visibility timeout to another consumer. If a stream or group vanished (a Redis restart
//! without persistence, a `FLUSHALL`), groups are recreated on the next read and the
//! reconciler re-enqueues from Postgres.

use std::time::Duration;

use deadpool_redis::{Manager, Pool, Runtime};
use redis::{
    TlsCertificates, Value,
    streams::{StreamAutoClaimReply, StreamId, StreamReadReply},
};
use rustls::pki_types::{CertificateDer, pem::PemObject};

use super::{DeadLetter, Delivery, Dispatcher, Job, JobSigner, JobSource, QueueError, QueueStats};
use crate::domain::Priority;

const GROUP: &str = "workers";
/// Delayed jobs moved per promotion round.
const PROMOTE_BATCH: usize = 500;

/// Moves due members of the delayed set into their streams atomically, so a job is never
/// both delayed and queued, nor lost between the two.
const PROMOTE_SCRIPT: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local job = cjson.decode(member)
  local args = {job.s, '*'}
  for _, kv in ipairs(job.f) do
    args[#args + 1] = kv[1]
    args[#args + 1] = kv[2]
  end
  redis.call('XADD', unpack(args))
  redis.call('ZREM', KEYS[1], member)
end
return #due
";

/// The one place a Redis client is made, so every connection (the pool, pub/sub) trusts the
/// same certificates. `ca_pem` (the contents of `REDIS_CA_CERT`) replaces the built-in roots
/// (Mozilla's, compiled in) for a `rediss://` URL; with a plain `redis://` URL it is an error,
/// since the operator evidently expected TLS.
pub fn open_client(url: &str, ca_pem: Option<Vec<u8>>) -> Result<redis::Client, QueueError> {
    // redis builds its rustls configuration with the process's default provider; installing
    // aws-lc-rs (the only one compiled in) explicitly keeps that from depending on which
    // rustls features other crates happen to enable. A second call finds it installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Nagle off: a command written in two segments (a pipeline, a TLS record split) must not
    // wait for the server's delayed ACK. redis leaves it on unless told.
    let url = redis::IntoConnectionInfo::into_connection_info(url)?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = match ca_pem {
        // An empty or non-PEM file would otherwise become an empty trust store, and every
        // handshake would fail with a vaguer "unknown issuer".
        Some(pem) if !CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok()) => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "the CA file holds no PEM certificate",
            ))
            .into());
        }
        Some(pem) => redis::Client::build_with_tls(url, TlsCertificates { client_tls: None, root_cert: Some(pem) })?,
        None => redis::Client::open(url)?,
    };
    Ok(client)
}

#[derive(Clone)]
pub struct RedisQueue {
    pool: Pool,
    client: redis::Client,
    prefix: String,
    signer: JobSigner,
    visibility_timeout: Duration,
    promote: redis::Script,
}

impl RedisQueue {
    /// Connects to `url` with the built-in roots for TLS; see [`RedisQueue::connect_with`].
    pub async fn connect(
        url: &str,
        prefix: &str,
        signer: JobSigner,
        visibility_timeout: Duration,
        pool_size: usize,
    ) -> Result<Self, QueueError> {
        Self::connect_with(open_client(url, None)?, prefix, signer, visibility_timeout, pool_size).await
    }

    /// Connects through `client` (from [`open_client`]) and makes sure the streams and their
    /// consumer groups exist.
    pub async fn connect_with(
        client: redis::Client,
        prefix: &str,
        signer: JobSigner,
        visibility_timeout: Duration,
        pool_size: usize,
    ) -> Result<Self, QueueError> {
        // The pool's connections come from the client's connection info, which carries the
        // TLS parameters; deadpool's `Config::from_url` would drop the CA.
        let manager = Manager::new(client.get_connection_info().clone())?;
        let pool = Pool::builder(manager).max_size(pool_size).runtime(Runtime::Tokio1).build().map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad REDIS_URL", e.to_string()))
        })?;
        let queue = Self {
            pool,
            client,
            prefix: prefix.to_owned(),
            signer,
            visibility_timeout,
            promote: redis::Script::new(PROMOTE_SCRIPT),
        };
        queue.ensure_groups().await?;
        Ok(queue)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The client the pool connects with, for connections outside it (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The stream of one priority.
    pub fn stream(&self, priority: Priority) -> String {
        format!("{}:dispatch:{}", self.prefix, priority.as_str())
    }

    fn streams(&self) -> [String; 3] {
        [self.stream(Priority::High), self.stream(Priority::Normal), self.stream(Priority::Low)]
    }

    fn delayed_key(&self) -> String {
        format!("{}:dispatch:delayed", self.prefix)
    }

    fn live_key(&self) -> String {
        format!("{}:dispatch:live", self.prefix)
    }

    async fn ensure_groups(&self) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        for stream in self.streams() {
            // From id 0, so jobs enqueued before the first worker started are delivered too.
            let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Err(e) if e.code() != Some("BUSYGROUP") => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    fn dead_key(&self) -> String {
        format!("{}:dispatch:dead", self.prefix)
    }

    fn delivery(&self, stream: &str, entry: &StreamId, deliveries: u64) -> Delivery {
        let job = self.signer.decode(|name| field(entry, name));
        Delivery { id: entry.id.clone(), stream: stream.to_owned(), job, deliveries }
    }

    /// Jobs read with `>` are delivered for the first time.
    fn deliveries(&self, reply: Option<StreamReadReply>) -> Vec<Delivery> {
        reply
            .map(|r| r.keys.iter().flat_map(|k| k.ids.iter().map(|e| self.delivery(&k.key, e, 1))).collect())
            .unwrap_or_default()
    }

    /// The delivery counts of entries just taken over, in one round trip: XAUTOCLAIM does
    /// not report them, and they are what tells a poison job from an unlucky one.
    async fn delivery_counts(
        &self,
        conn: &mut deadpool_redis::Connection,
        stream: &str,
        entries: &[StreamId],
    ) -> Result<Vec<u64>, QueueError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for entry in entries {
            pipe.cmd("XPENDING").arg(stream).arg(GROUP).arg(&entry.id).arg(&entry.id).arg(1);
        }
        let replies: Vec<Vec<(String, String, u64, u64)>> = pipe.query_async(conn).await?;
        // An entry acknowledged in between has no pending row: count it as a redelivery.
        Ok(replies.into_iter().map(|r| r.first().map_or(2, |(_, _, _, count)| *count)).collect())
    }

    /// One XREADGROUP over `streams`; a vanished group is recreated and reads as empty.
    async fn read(
        &self,
        conn: &mut deadpool_redis::Connection,
        consumer: &str,
        count: usize,
        block: Option<Duration>,
        streams: &[String],
    ) -> Result<Vec<Delivery>, QueueError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(consumer).arg("COUNT").arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(streams);
        for _ in streams {
            cmd.arg(">");
        }
        match cmd.query_async::<Option<StreamReadReply>>(conn).await {
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_groups().await?;
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
            Ok(reply) => Ok(self.deliveries(reply)),
        }
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
        let now = now_ms();
        for job in jobs {
            let cmd = pipe.cmd("XADD").arg(self.stream(job.priority())).arg("*");
            for (field, value) in self.signer.encode(job) {
                cmd.arg(field).arg(value);
            }
            cmd.ignore();
            pipe.cmd("HSET").arg(self.live_key()).arg(job.key()).arg(now).ignore();
        }
        let mut conn = self.pool.get().await?;
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    async fn enqueue_after(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        let fields: Vec<[String; 2]> = self.signer.encode(job).into_iter().map(|(k, v)| [k.to_owned(), v]).collect();
        let member = serde_json::json!({"s": self.stream(job.priority()), "f": fields}).to_string();
        let due = now_ms() + delay.as_millis() as u64;
        let mut conn = self.pool.get().await?;
        redis::pipe()
            .cmd("ZADD")
            .arg(self.delayed_key())
            .arg(due)
            .arg(member)
            .ignore()
            .cmd("HSET")
            .arg(self.live_key())
            .arg(job.key())
            .arg(now_ms())
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn has_job(&self, jobs: &[Job]) -> Result<Vec<bool>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.get().await?;
        let keys: Vec<String> = jobs.iter().map(Job::key).collect();
        let found: Vec<Option<String>> =
            redis::cmd("HMGET").arg(self.live_key()).arg(keys).query_async(&mut conn).await?;
        Ok(found.into_iter().map(|v| v.is_some()).collect())
    }

    async fn stats(&self) -> Result<Vec<QueueStats>, QueueError> {
        let mut conn = self.pool.get().await?;
        let mut pipe = redis::pipe();
        for stream in self.streams() {
            pipe.cmd("XLEN").arg(&stream);
            pipe.cmd("XRANGE").arg(&stream).arg("-").arg("+").arg("COUNT").arg(1);
        }
        let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
        let now = now_ms();
        let stats = [Priority::High, Priority::Normal, Priority::Low]
            .into_iter()
            .zip(replies.chunks(2))
            .map(|(priority, pair)| {
                let depth = redis::from_redis_value_ref::<u64>(&pair[0]).unwrap_or(0);
                // Stream ids start with the millisecond they were added at.
                let oldest_ms = redis::from_redis_value_ref::<Vec<(String, Value)>>(&pair[1])
                    .ok()
                    .and_then(|entries| entries.first().and_then(|(id, _)| id.split('-').next()?.parse::<u64>().ok()));
                let oldest_age = oldest_ms.map(|ms| Duration::from_millis(now.saturating_sub(ms))).unwrap_or_default();
                QueueStats { priority, depth, oldest_age }
            })
            .collect();
        Ok(stats)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut conn = self.pool.get().await?;
        let entries: Vec<StreamId> = redis::cmd("XREVRANGE")
            .arg(self.dead_key())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async::<redis::streams::StreamRangeReply>(&mut conn)
            .await?
            .ids;
        Ok(entries.iter().map(dead_letter).collect())
    }
}

#[async_trait::async_trait]
impl JobSource for RedisQueue {
    async fn fetch(&self, consumer: &str, max: usize, block: Duration) -> Result<Vec<Delivery>, QueueError> {
        let mut conn = self.pool.get().await?;
        // Without blocking, in priority order: a burst of low jobs never delays a high one
        // by more than the jobs this worker already holds.
        let mut got = Vec::new();
        for stream in self.streams() {
            if got.len() >= max {
                break;
            }
            let more = self.read(&mut conn, consumer, max - got.len(), None, std::slice::from_ref(&stream)).await?;
            got.extend(more);
        }
        if !got.is_empty() {
            return Ok(got);
        }
        // Nothing anywhere: wait on all three for the first job, which the next call
        // follows with a full priority-ordered read.
        conn.set_response_timeout(block + Duration::from_secs(5));
        self.read(&mut conn, consumer, 1, Some(block), &self.streams()).await
    }

    async fn reclaim(&self, consumer: &str, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let mut conn = self.pool.get().await?;
        let mut got = Vec::new();
        for stream in self.streams() {
            if got.len() >= max {
                break;
            }
            let reply: Result<StreamAutoClaimReply, _> = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(consumer)
                .arg(self.visibility_timeout.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(max - got.len())
                .query_async(&mut conn)
                .await;
            match reply {
                Err(e) if e.code() == Some("NOGROUP") => self.ensure_groups().await?,
                Err(e) => return Err(e.into()),
                Ok(reply) => {
                    let counts = self.delivery_counts(&mut conn, &stream, &reply.claimed).await?;
                    got.extend(reply.claimed.iter().zip(counts).map(|(e, n)| self.delivery(&stream, e, n)));
                }
            }
        }
        Ok(got)
    }

    async fn promote_due(&self) -> Result<usize, QueueError> {
        let mut conn = self.pool.get().await?;
        let moved: usize =
            self.promote.key(self.delayed_key()).arg(now_ms()).arg(PROMOTE_BATCH).invoke_async(&mut conn).await?;
        Ok(moved)
    }

    async fn touch(&self, consumer: &str, delivery: &Delivery) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        // Claiming our own delivery resets its idle time.
        redis::cmd("XCLAIM")
            .arg(&delivery.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(&delivery.id)
            .arg("JUSTID")
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let mut conn = self.pool.get().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("XACK").arg(&delivery.stream).arg(GROUP).arg(&delivery.id).ignore();
        pipe.cmd("XDEL").arg(&delivery.stream).arg(&delivery.id).ignore();
        if let Ok(job) = &delivery.job {
            pipe.cmd("HDEL").arg(self.live_key()).arg(job.key()).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        let mut pipe = redis::pipe();
        let add = pipe
            .cmd("XADD")
            .arg(self.dead_key())
            .arg("MAXLEN")
            .arg("~")
            .arg(super::DEAD_LETTERS_KEPT)
            .arg("*")
            .arg("deliveries")
            .arg(delivery.deliveries)
            .arg("reason")
            .arg(reason)
            .arg("from")
            .arg(&delivery.id);
        if let Ok(job) = &delivery.job {
            for (name, value) in self.signer.encode(job) {
                if name != "sig" {
                    add.arg(name).arg(value);
                }
            }
        }
        add.ignore();
        pipe.cmd("XACK").arg(&delivery.stream).arg(GROUP).arg(&delivery.id).ignore();
        pipe.cmd("XDEL").arg(&delivery.stream).arg(&delivery.id).ignore();
        if let Ok(job) = &delivery.job {
            pipe.cmd("HDEL").arg(self.live_key()).arg(job.key()).ignore();
        }
        let mut conn = self.pool.get().await?;
        pipe.atomic().query_async::<()>(&mut conn).await?;
        Ok(())
    }
}

/// A stream entry's field as text.
fn field<'a>(entry: &'a StreamId, name: &str) -> Option<&'a str> {
    match entry.map.get(name) {
        Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes).ok(),
        Some(Value::SimpleString(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// A dead-letter stream entry as the API shows it.
fn dead_letter(entry: &StreamId) -> DeadLetter {
    let millis = entry.id.split('-').next().and_then(|ms| ms.parse::<i64>().ok()).unwrap_or(0);
    DeadLetter {
        id: entry.id.clone(),
        kind: field(entry, "kind").map(str::to_owned),
        task_id: field(entry, "task").and_then(|t| t.parse().ok()),
        step_id: field(entry, "step").and_then(|t| t.parse().ok()),
        attempt: field(entry, "attempt").and_then(|t| t.parse().ok()),
        deliveries: field(entry, "deliveries").and_then(|t| t.parse().ok()).unwrap_or(0),
        reason: field(entry, "reason").unwrap_or_default().to_owned(),
        dead_at: chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::open_client;

    #[test]
    fn every_redis_connection_turns_nagle_off() {
        let client = open_client("redis://127.0.0.1:6379/0", None).expect("a valid URL");
        assert!(client.get_connection_info().tcp_settings().nodelay());
    }
}
