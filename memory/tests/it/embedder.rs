//! Embedder changes: detected at open, fixed by `reembed`, and snapshots follow.

use std::sync::Arc;

use memory::{Embedder, HashingEmbedder, LongTermMemory, MemoryError, StartupSource};

use crate::support::*;

#[tokio::test]
async fn a_changed_embedder_is_refused_until_the_items_are_reembedded() {
    let db = TestDb::new().await;
    let dir = DataDir::new();
    let memory = open(&db, &dir).await;
    let item = store(&memory, "alice", "default", "the cat sat on the mat").await;
    let deleted = store(&memory, "alice", "default", "a deleted note").await;
    assert!(memory::MemoryStore::delete(&memory, "alice", deleted.id).await.expect("delete"));
    memory.shutdown().await.expect("shutdown");
    drop(memory);

    let small: Arc<dyn Embedder> = Arc::new(HashingEmbedder::new(64).expect("dimension"));
    match LongTermMemory::open(db.pool.clone(), small.clone(), config(&dir)).await {
        Err(error @ MemoryError::EmbedderMismatch { .. }) => {
            let MemoryError::EmbedderMismatch { stored, configured } = &error else { unreachable!() };
            assert_eq!((stored.as_str(), configured.as_str()), ("hashing-v1-384", "hashing-v1-64"));
            assert!(error.to_string().contains("orchestrator memory reembed"), "{error}");
        }
        other => panic!("opened over vectors of another embedder: {other:?}"),
    }

    assert_eq!(LongTermMemory::reembed(&db.pool, small.as_ref()).await.expect("reembed"), 1, "live rows only");
    assert_eq!(LongTermMemory::reembed(&db.pool, small.as_ref()).await.expect("again"), 0, "idempotent");
    let row: (String, i32, i32) =
        sqlx::query_as("SELECT embedder, dimension, cardinality(embedding) FROM memory_items WHERE id = $1")
            .bind(item.id)
            .fetch_one(&db.pool)
            .await
            .expect("row");
    assert_eq!(row, ("hashing-v1-64".to_owned(), 64, 64));

    let reopened = LongTermMemory::open(db.pool.clone(), small, config(&dir)).await.expect("open after reembed");
    match &reopened.startup().source {
        StartupSource::Rebuilt { reason } => assert!(reason.contains("embedder"), "{reason}"),
        other => panic!("loaded a snapshot of the old embedder: {other:?}"),
    }
    let results = search(&reopened, query("alice", "a cat on a mat", 5)).await;
    assert_eq!(ids(&results), vec![item.id]);
    drop(reopened);
    db.drop_db().await;
}
