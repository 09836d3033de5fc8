//! Group commit for the hot path: concurrent calls of one kind share a statement.
//!
//! A [`Batcher`] queues its callers' items; a flusher takes whatever has queued up behind
//! the statements in flight (at most [`MAX_IN_FLIGHT`]) and writes it as one multi-row
//! statement, then answers each caller. There is no timer: when the store is idle an item
//! goes out alone at once (as the single-row statement it always was); under load the batch
//! grows with the time a statement takes, so the number of statements and commits per second
//! stays flat while the rows per statement rise. Durability does not change: a caller hears
//! back only after the statement carrying its item committed.
//!
//! A failed batch is retried one item at a time, so an item that makes its statement fail
//! (or a deadlock between two processes' batches) fails only its own caller.

use std::sync::{Arc, Mutex, PoisonError};

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::StoreError;

/// Most items one statement carries.
const MAX_BATCH: usize = 64;
/// Statements of one kind in flight at once. One makes the batches as large as the load
/// allows; measured on 2 cores (docs/benchmarks.md), 4 gave smaller batches and so more
/// statements: +20–30 % CPU per task in the closed loop and fewer `POST /tasks` per second
/// (3.1k against 3.9k), since the CPU, not the WAL flush, was the bound.
const MAX_IN_FLIGHT: usize = 1;

/// One kind of batched write.
#[async_trait::async_trait]
pub(super) trait BatchOp: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Output: Send + 'static;

    /// The single-item statement.
    async fn one(&self, pool: &PgPool, item: &Self::Item) -> Result<Self::Output, StoreError>;

    /// One statement for all `items` (two or more), answering in their order. An error must
    /// mean that nothing was written: the items are then written again, one by one.
    async fn many(&self, pool: &PgPool, items: &[Self::Item]) -> Result<Vec<Self::Output>, StoreError>;

    /// Called after the commit of each item, with its output (event wake-ups).
    fn committed(&self, _item: &Self::Item, _output: &Self::Output) {}
}

type Reply<O> = oneshot::Sender<Result<O, StoreError>>;
type Queue<I, O> = mpsc::UnboundedReceiver<(I, Reply<O>)>;
/// The queue's receiving end until the first item takes it to start the flusher.
type Unstarted<I, O> = Arc<Mutex<Option<Queue<I, O>>>>;

/// Queues items of one [`BatchOp`]; cloning shares the queue. The flusher starts with the
/// first item (inside the runtime) and ends when the last handle is dropped.
pub(super) struct Batcher<Op: BatchOp> {
    sender: mpsc::UnboundedSender<(Op::Item, Reply<Op::Output>)>,
    /// Taken by the first item, which starts the flusher.
    receiver: Unstarted<Op::Item, Op::Output>,
    op: Arc<Op>,
    pool: PgPool,
}

impl<Op: BatchOp> Clone for Batcher<Op> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            receiver: self.receiver.clone(),
            op: self.op.clone(),
            pool: self.pool.clone(),
        }
    }
}

impl<Op: BatchOp> std::fmt::Debug for Batcher<Op> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("op", &std::any::type_name::<Op>()).finish_non_exhaustive()
    }
}

impl<Op: BatchOp> Batcher<Op> {
    pub(super) fn new(op: Op, pool: PgPool) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self { sender, receiver: Arc::new(Mutex::new(Some(receiver))), op: Arc::new(op), pool }
    }

    /// Writes `item` (alone or with others) and returns its output once committed.
    pub(super) async fn run(&self, item: Op::Item) -> Result<Op::Output, StoreError> {
        if let Some(receiver) = self.receiver.lock().unwrap_or_else(PoisonError::into_inner).take() {
            tokio::spawn(flush_loop(receiver, self.op.clone(), self.pool.clone()));
        }
        let (reply, answer) = oneshot::channel();
        if self.sender.send((item, reply)).is_err() {
            return Err(StoreError::Unavailable("the store's write queue has stopped".into()));
        }
        answer.await.unwrap_or_else(|_| Err(StoreError::Unavailable("the store's write queue has stopped".into())))
    }
}

async fn flush_loop<Op: BatchOp>(mut receiver: Queue<Op::Item, Op::Output>, op: Arc<Op>, pool: PgPool) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut queued = Vec::with_capacity(MAX_BATCH);
    loop {
        // A batch starts only when a statement slot is free, so that under load items queue
        // up behind the statements in flight and the batches grow.
        let Ok(slot) = in_flight.clone().acquire_owned().await else { return };
        if receiver.recv_many(&mut queued, MAX_BATCH).await == 0 {
            return;
        }
        let batch = std::mem::replace(&mut queued, Vec::with_capacity(MAX_BATCH));
        let (op, pool) = (op.clone(), pool.clone());
        tokio::spawn(async move {
            answer(op.as_ref(), &pool, batch).await;
            drop(slot);
        });
    }
}

/// Writes one batch and answers its callers.
async fn answer<Op: BatchOp>(op: &Op, pool: &PgPool, batch: Vec<(Op::Item, Reply<Op::Output>)>) {
    let (items, replies): (Vec<Op::Item>, Vec<Reply<Op::Output>>) = batch.into_iter().unzip();
    let outputs = flush(op, pool, &items).await;
    for ((item, output), reply) in items.iter().zip(outputs).zip(replies) {
        if let Ok(output) = &output {
            op.committed(item, output);
        }
        // A caller that went away (its job was dropped) leaves its work to the lease
        // expiry, as a crash would.
        let _ = reply.send(output);
    }
}

/// Each item's outcome: one statement for all of them, or, when that fails, one each.
async fn flush<Op: BatchOp>(op: &Op, pool: &PgPool, items: &[Op::Item]) -> Vec<Result<Op::Output, StoreError>> {
    if items.len() > 1 {
        match op.many(pool, items).await {
            Ok(outputs) if outputs.len() == items.len() => return outputs.into_iter().map(Ok).collect(),
            Ok(outputs) => tracing::error!(
                items = items.len(),
                outputs = outputs.len(),
                "a batched statement answered for the wrong number of items; writing them one by one"
            ),
            Err(e) => {
                tracing::debug!(items = items.len(), error = %e, "a batched statement failed; writing its items one by one")
            }
        }
    }
    let mut outputs = Vec::with_capacity(items.len());
    for item in items {
        outputs.push(op.one(pool, item).await);
    }
    outputs
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Doubles numbers; refuses a batch holding 13 and the item 13 itself.
    #[derive(Default)]
    struct Double {
        batches: AtomicUsize,
        singles: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl BatchOp for Double {
        type Item = u32;
        type Output = u32;

        async fn one(&self, _: &PgPool, item: &u32) -> Result<u32, StoreError> {
            self.singles.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            if *item == 13 { Err(StoreError::Corrupt("13".into())) } else { Ok(item * 2) }
        }

        async fn many(&self, _: &PgPool, items: &[u32]) -> Result<Vec<u32>, StoreError> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            if items.contains(&13) {
                return Err(StoreError::Corrupt("13".into()));
            }
            Ok(items.iter().map(|i| i * 2).collect())
        }
    }

    fn pool() -> PgPool {
        // Never connected: the test op does not touch it.
        sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("lazy pool")
    }

    #[tokio::test]
    async fn concurrent_items_share_statements_and_each_gets_its_own_answer() {
        let batcher = Batcher::new(Double::default(), pool());
        let answers = futures_util::future::join_all((0..100u32).filter(|i| *i != 13).map(|i| batcher.run(i))).await;
        for (i, answer) in (0..100u32).filter(|i| *i != 13).zip(answers) {
            assert_eq!(answer.unwrap(), i * 2);
        }
        let statements = batcher.op.batches.load(Ordering::SeqCst) + batcher.op.singles.load(Ordering::SeqCst);
        assert!(statements < 99, "99 concurrent items took {statements} statements");
    }

    #[tokio::test]
    async fn a_failing_item_fails_alone() {
        let batcher = Batcher::new(Double::default(), pool());
        let answers = futures_util::future::join_all([12, 13, 14].map(|i| batcher.run(i))).await;
        assert_eq!(answers[0].as_ref().unwrap(), &24);
        assert!(answers[1].is_err());
        assert_eq!(answers[2].as_ref().unwrap(), &28);
    }

    #[tokio::test]
    async fn an_idle_item_goes_out_alone() {
        let batcher = Batcher::new(Double::default(), pool());
        assert_eq!(batcher.run(2).await.unwrap(), 4);
        assert_eq!(batcher.op.singles.load(Ordering::SeqCst), 1);
        assert_eq!(batcher.op.batches.load(Ordering::SeqCst), 0);
    }
}
