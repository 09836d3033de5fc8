//! Snapshots and rebuilds: every item is found again after a restart, whichever path the
//! restart takes.

use std::time::Duration;

use memory::index::IndexParams;
use memory::{LongTermMemory, MemoryStore, StartupSource};

use crate::support::*;

const TOPICS: [&str; 6] = [
    "kubernetes deployment",
    "postgres vacuum",
    "rust borrow checker",
    "sourdough bread",
    "tax return",
    "marathon training",
];

/// Stores one memory per topic and owner; returns (owner, content, id).
async fn fill(memory: &LongTermMemory) -> Vec<(String, String, i64)> {
    let mut stored = Vec::new();
    for owner in ["alice", "bob"] {
        for (i, topic) in TOPICS.iter().enumerate() {
            let content = format!("{owner} notes {i} about {topic}");
            let item = store(memory, owner, "default", &content).await;
            stored.push((owner.to_owned(), content, item.id));
        }
    }
    stored
}

/// Every stored item is the best match for its own content, and readable.
async fn assert_all_found(memory: &LongTermMemory, stored: &[(String, String, i64)]) {
    for (owner, content, id) in stored {
        let results = search(memory, query(owner, content, 3)).await;
        assert_eq!(results.first().map(|r| r.item.id), Some(*id), "{owner}: {content}");
        assert!(memory.get(owner, *id).await.expect("get").is_some());
    }
}

#[tokio::test]
async fn reopening_loads_the_snapshot_and_finds_every_item() {
    let db = TestDb::new().await;
    let dir = DataDir::new();
    let memory = open(&db, &dir).await;
    assert_eq!(memory.startup().source, StartupSource::Rebuilt { reason: "no snapshot".into() });
    let stored = fill(&memory).await;
    let info = memory.shutdown().await.expect("shutdown").expect("a final snapshot, since items were added");
    assert_eq!((info.owners, info.vectors), (2, stored.len()));
    drop(memory);

    let reopened = open(&db, &dir).await;
    assert!(matches!(reopened.startup().source, StartupSource::Snapshot { .. }), "{:?}", reopened.startup());
    assert_eq!(reopened.startup().caught_up, 0, "the snapshot already held every row");
    assert_all_found(&reopened, &stored).await;
    drop(reopened);
    db.drop_db().await;
}

#[tokio::test]
async fn rows_written_after_the_snapshot_are_caught_up_at_open() {
    let db = TestDb::new().await;
    let dir = DataDir::new();
    let memory = open(&db, &dir).await;
    let mut stored = fill(&memory).await;
    memory.snapshot().await.expect("snapshot");
    // Written after the snapshot, and the process dies without a final one.
    let late = store(&memory, "alice", "default", "alice late note on quantum computing").await;
    stored.push(("alice".into(), late.content.clone(), late.id));
    drop(memory);
    // And one written by another process while this one was down.
    let other = insert_rows(&db.pool, "bob", "default", &["bob offline note on gardening".into()]).await;
    stored.push(("bob".into(), "bob offline note on gardening".into(), other[0]));

    let reopened = open(&db, &dir).await;
    assert!(matches!(reopened.startup().source, StartupSource::Snapshot { .. }));
    assert_eq!(reopened.startup().caught_up, 2);
    assert_all_found(&reopened, &stored).await;
    drop(reopened);
    db.drop_db().await;
}

#[tokio::test]
async fn without_a_snapshot_the_indexes_are_rebuilt_from_postgres() {
    let db = TestDb::new().await;
    let first_dir = DataDir::new();
    let memory = open(&db, &first_dir).await;
    let stored = fill(&memory).await;
    let deleted = stored[0].2;
    assert!(memory.delete("alice", deleted).await.expect("delete"));
    drop(memory);

    let fresh_dir = DataDir::new();
    let rebuilt = open(&db, &fresh_dir).await;
    assert_eq!(rebuilt.startup().source, StartupSource::Rebuilt { reason: "no snapshot".into() });
    assert_all_found(&rebuilt, &stored[1..]).await;
    let results = search(&rebuilt, query("alice", &stored[0].1, 20)).await;
    assert!(!ids(&results).contains(&deleted));
    assert_eq!(results.len(), TOPICS.len() - 1, "every remaining alice item, and only those");
    drop(rebuilt);
    db.drop_db().await;
}

#[tokio::test]
async fn a_corrupt_index_file_is_detected_and_rebuilt() {
    let db = TestDb::new().await;
    let dir = DataDir::new();
    let memory = open(&db, &dir).await;
    let stored = fill(&memory).await;
    memory.shutdown().await.expect("shutdown");
    drop(memory);

    // Truncate one index file and overwrite the middle of the other with garbage.
    let files = dir.index_files();
    assert_eq!(files.len(), 2);
    let size = std::fs::metadata(&files[0]).expect("meta").len();
    std::fs::OpenOptions::new().write(true).open(&files[0]).and_then(|f| f.set_len(size / 3)).expect("truncate");
    let mut bytes = std::fs::read(&files[1]).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle..middle + 16].copy_from_slice(b"garbage garbage!");
    std::fs::write(&files[1], bytes).expect("write");

    let reopened = open(&db, &dir).await;
    match &reopened.startup().source {
        StartupSource::Rebuilt { reason } => assert!(reason.contains("corrupt"), "{reason}"),
        other => panic!("a corrupt snapshot was loaded: {other:?}"),
    }
    assert_all_found(&reopened, &stored).await;
    // The rebuild wrote a good snapshot in place of the bad one.
    drop(reopened);
    let again = open(&db, &dir).await;
    assert!(matches!(again.startup().source, StartupSource::Snapshot { .. }));
    drop(again);
    db.drop_db().await;
}

#[tokio::test]
async fn a_garbage_manifest_is_detected_and_rebuilt() {
    let db = TestDb::new().await;
    let dir = DataDir::new();
    let memory = open(&db, &dir).await;
    let stored = fill(&memory).await;
    memory.shutdown().await.expect("shutdown");
    drop(memory);
    std::fs::write(dir.0.join("manifest.json"), b"{\"format\": 1, \"gener").expect("write");

    let reopened = open(&db, &dir).await;
    assert!(matches!(reopened.startup().source, StartupSource::Rebuilt { .. }), "{:?}", reopened.startup());
    assert_all_found(&reopened, &stored).await;
    drop(reopened);
    db.drop_db().await;
}

#[tokio::test]
async fn a_snapshot_of_another_database_is_never_loaded() {
    let (db, other) = (TestDb::new().await, TestDb::new().await);
    let dir = DataDir::new();
    let memory = open(&other, &dir).await;
    fill(&memory).await;
    memory.shutdown().await.expect("shutdown");
    drop(memory);

    let reopened = open(&db, &dir).await;
    match &reopened.startup().source {
        StartupSource::Rebuilt { reason } => assert!(reason.contains("memory store"), "{reason}"),
        other => panic!("loaded another database's snapshot: {other:?}"),
    }
    assert!(search(&reopened, query("alice", "kubernetes deployment", 10)).await.is_empty());
    drop(reopened);
    db.drop_db().await;
    other.drop_db().await;
}

#[tokio::test]
async fn a_large_owner_goes_hnsw_and_survives_a_restart_with_its_deletions() {
    let db = TestDb::new().await;
    let dir = DataDir::new();
    let params = IndexParams { hnsw_threshold: 100, compact_min: 1_000, ..IndexParams::default() };
    let config = || memory::LongTermConfig { index: params.clone(), ..config(&dir) };
    let memory = LongTermMemory::open(db.pool.clone(), hashing(), config()).await.expect("open");
    let contents: Vec<String> =
        (0..250).map(|i| format!("log entry {i} for service s{} in zone z{}", i % 7, i % 11)).collect();
    let mut ids = Vec::new();
    for content in &contents {
        ids.push(store(&memory, "alice", "logs", content).await.id);
    }
    // The conversion to HNSW runs in the background: wait until a snapshot records it.
    eventually(Duration::from_secs(30), "the owner's index to become HNSW", || async {
        let info = memory.snapshot().await.expect("snapshot");
        let manifest = std::fs::read_to_string(dir.0.join("manifest.json")).expect("manifest");
        (info.vectors == 250 && manifest.contains("\"kind\": \"hnsw\"")).then_some(())
    })
    .await;
    for id in &ids[..10] {
        assert!(memory.delete("alice", *id).await.expect("delete"));
    }
    memory.shutdown().await.expect("shutdown");
    drop(memory);

    let reopened = LongTermMemory::open(db.pool.clone(), hashing(), config()).await.expect("reopen");
    assert!(matches!(reopened.startup().source, StartupSource::Snapshot { .. }));
    for (content, id) in contents.iter().zip(&ids).skip(10).step_by(17) {
        assert_eq!(ids_of(&reopened, content).await.first(), Some(id), "{content}");
    }
    let all = search(&reopened, query("alice", "log entry for service", 100)).await;
    assert_eq!(all.len(), 100);
    assert!(all.iter().all(|r| !ids[..10].contains(&r.item.id)), "deleted items stay deleted after a restart");
    drop(reopened);
    db.drop_db().await;
}

async fn ids_of(memory: &LongTermMemory, content: &str) -> Vec<i64> {
    ids(&search(memory, query("alice", content, 5)).await)
}
