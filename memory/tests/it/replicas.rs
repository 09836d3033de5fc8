//! Several processes on one database: each sees the others' writes within a second.

use std::time::Duration;

use memory::{HashingEmbedder, MemoryStore};

use crate::support::*;

#[tokio::test]
async fn a_second_instance_sees_the_first_ones_writes_within_a_second() {
    let db = TestDb::new().await;
    // Existing items keep the owners' indexes non-empty, so a search for one result is
    // answered from the index alone (an owner with fewer items than asked for falls back to
    // Postgres, which would find new rows without any catch-up).
    let filler: Vec<String> =
        ["weekly grocery list", "dentist appointment", "book club picks"].map(String::from).into();
    insert_rows(&db.pool, "alice", "default", &filler).await;
    let (dir_a, dir_b) = (DataDir::new(), DataDir::new());
    let a = open(&db, &dir_a).await;
    let pool_b = db.other_pool().await;
    let b = memory::LongTermMemory::open(pool_b, hashing(), config(&dir_b)).await.expect("open b");

    let item = store(&a, "alice", "default", "the staging cluster runs on arm64 nodes").await;
    let found = eventually(Duration::from_secs(1), "b to find a's write", || async {
        let results = search(&b, query("alice", "staging cluster arm64", 1)).await;
        results.first().filter(|r| r.item.id == item.id).map(|r| r.score)
    })
    .await;
    assert!(found > 0.5, "score {found}");

    // And the other way round, with a deletion.
    let from_b = store(&b, "alice", "default", "the production cluster runs on x86 nodes").await;
    eventually(Duration::from_secs(1), "a to find b's write", || async {
        ids(&search(&a, query("alice", "production cluster x86", 1)).await).contains(&from_b.id).then_some(())
    })
    .await;
    assert!(b.delete("alice", from_b.id).await.expect("delete"));
    let results = search(&a, query("alice", "production cluster x86", 1)).await;
    assert!(!ids(&results).contains(&from_b.id), "Postgres filters the deleted row at once");
    assert_eq!(results.len(), 1, "and the search still returns k results");
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test]
async fn a_row_committed_after_a_higher_id_is_still_caught_up() {
    let db = TestDb::new().await;
    insert_rows(&db.pool, "alice", "default", &["an unrelated note about taxes".into()]).await;
    let dir = DataDir::new();
    let memory = open(&db, &dir).await;
    let embedder = HashingEmbedder::new(384).expect("dimension");

    // Another process takes an id and holds its transaction open…
    let mut slow = db.pool.begin().await.expect("begin");
    let content = "a slow transaction wrote this note about lighthouses";
    let slow_id: i64 = sqlx::query_scalar(
        "INSERT INTO memory_items (owner, namespace, content, embedding, embedder, dimension)
         VALUES ('alice', 'default', $1, $2, $3, 384) RETURNING id",
    )
    .bind(content)
    .bind(embedder.embed_one(content))
    .bind(memory::Embedder::name(&embedder))
    .fetch_one(&mut *slow)
    .await
    .expect("insert");
    // …while a higher id commits and is caught up past.
    let other = insert_rows(&db.other_pool().await, "alice", "default", &["a quick note about harbours".into()]).await;
    assert!(other[0] > slow_id);
    let second_dir = DataDir::new();
    let second = memory::LongTermMemory::open(db.other_pool().await, hashing(), config(&second_dir)).await;
    let second = second.expect("open");
    for instance in [&memory, &second] {
        eventually(Duration::from_secs(1), "the higher id to be caught up", || async {
            let results = search(instance, query("alice", "quick note about harbours", 1)).await;
            ids(&results).contains(&other[0]).then_some(())
        })
        .await;
    }
    slow.commit().await.expect("commit");

    // One result asked for, and the index holds one candidate already: only a caught-up
    // index can put the late row first.
    for instance in [&memory, &second] {
        eventually(Duration::from_secs(1), "the late commit to be caught up", || async {
            let results = search(instance, query("alice", content, 1)).await;
            results.first().is_some_and(|r| r.item.id == slow_id && r.score > 0.9).then_some(())
        })
        .await;
    }
    drop((memory, second));
    db.drop_db().await;
}
