//! Search semantics: k results whenever k exist, filters, deletion, validation.

use memory::{MemoryError, MemoryStore, NewMemory};

use crate::support::*;

#[tokio::test]
async fn k_results_whenever_k_exist() {
    let db = TestDb::new().await;
    let dir = DataDir::new();
    let memory = open(&db, &dir).await;
    for i in 0..40 {
        store(&memory, "alice", "default", &format!("meeting note {i} about the quarterly roadmap")).await;
    }
    for limit in [1, 10, 40] {
        assert_eq!(search(&memory, query("alice", "roadmap", limit)).await.len(), limit);
    }
    assert_eq!(search(&memory, query("alice", "roadmap", 100)).await.len(), 40, "all there is");
    let results = search(&memory, query("alice", "meeting note 7 about the quarterly roadmap", 10)).await;
    assert!(results.windows(2).all(|w| w[0].score >= w[1].score), "ranked by score");
    assert!((results[0].score - 1.0).abs() < 1e-3, "the exact text scores 1: {}", results[0].score);
    drop(memory);
    db.drop_db().await;
}

#[tokio::test]
async fn a_namespace_holding_a_small_minority_still_yields_k_results() {
    let db = TestDb::new().await;
    // 1,500 items close to the query in one namespace, 12 far from it in another: the 12 are
    // beyond every widening of the index search and only the exact fallback finds them.
    let bulk: Vec<String> = (0..1_500).map(|i| format!("deploy service {i} to the kubernetes cluster")).collect();
    insert_rows(&db.pool, "alice", "ops", &bulk).await;
    let rare: Vec<String> = (0..12).map(|i| format!("grandmother's recipe {i} for plum cake")).collect();
    let rare_ids = insert_rows(&db.pool, "alice", "recipes", &rare).await;
    let dir = DataDir::new();
    let memory = open(&db, &dir).await;

    let mut q = query("alice", "deploy service to the kubernetes cluster", 10);
    q.namespace = Some("recipes".into());
    let results = search(&memory, q.clone()).await;
    assert_eq!(results.len(), 10);
    assert!(results.iter().all(|r| r.item.namespace == "recipes" && rare_ids.contains(&r.item.id)));
    q.limit = 20;
    assert_eq!(search(&memory, q.clone()).await.len(), 12, "every match when fewer than k exist");

    // Same with an HNSW index for the owner.
    drop(memory);
    let hnsw_dir = DataDir::new();
    let params = memory::index::IndexParams { hnsw_threshold: 500, ..Default::default() };
    let config = memory::LongTermConfig { index: params, ..config(&hnsw_dir) };
    let memory = memory::LongTermMemory::open(db.pool.clone(), hashing(), config).await.expect("open");
    q.limit = 10;
    assert_eq!(search(&memory, q.clone()).await.len(), 10);
    let unfiltered = search(&memory, query("alice", "plum cake recipe", 12)).await;
    assert_eq!(ids(&unfiltered).iter().filter(|id| rare_ids.contains(id)).count(), 12, "HNSW finds the close ones");
    drop(memory);
    db.drop_db().await;
}

#[tokio::test]
async fn metadata_filters_match_exact_values() {
    let db = TestDb::new().await;
    let dir = DataDir::new();
    let memory = open(&db, &dir).await;
    let mut stored = Vec::new();
    for (i, (lang, tags)) in
        [("en", vec!["a", "b"]), ("fr", vec!["a"]), ("en", vec!["a"]), ("fr", vec!["b"])].iter().enumerate()
    {
        let item = memory
            .store(NewMemory {
                metadata: meta(serde_json::json!({"lang": lang, "tags": tags, "n": i})),
                ..new_memory("alice", "default", &format!("travel tip {i} for lisbon"))
            })
            .await
            .expect("store");
        stored.push(item);
    }
    let filtered = |metadata: serde_json::Value| {
        let mut q = query("alice", "travel tip lisbon", 10);
        q.metadata = Some(meta(metadata));
        q
    };
    let mut fr = ids(&search(&memory, filtered(serde_json::json!({"lang": "fr"}))).await);
    fr.sort_unstable();
    assert_eq!(fr, vec![stored[1].id, stored[3].id]);
    let en_a = ids(&search(&memory, filtered(serde_json::json!({"lang": "en", "tags": ["a"]}))).await);
    assert_eq!(en_a, vec![stored[2].id], "[\"a\", \"b\"] contains [\"a\"] but is not equal to it");
    assert!(search(&memory, filtered(serde_json::json!({"lang": "de"}))).await.is_empty());
    assert_eq!(search(&memory, filtered(serde_json::json!({"n": 3}))).await[0].item.metadata["lang"], "fr");
    drop(memory);
    db.drop_db().await;
}

#[tokio::test]
async fn deleting_removes_an_item_from_results() {
    let db = TestDb::new().await;
    let dir = DataDir::new();
    let memory = open(&db, &dir).await;
    let keep = store(&memory, "alice", "default", "the wifi password is on the fridge").await;
    let gone = store(&memory, "alice", "default", "the wifi password is hunter2").await;
    assert!(memory.delete("alice", gone.id).await.expect("delete"));
    assert!(!memory.delete("alice", gone.id).await.expect("second delete"), "already deleted");
    assert_eq!(memory.get("alice", gone.id).await.expect("get"), None);
    let results = search(&memory, query("alice", "the wifi password is hunter2", 10)).await;
    assert_eq!(ids(&results), vec![keep.id]);
    drop(memory);
    db.drop_db().await;
}

#[tokio::test]
async fn bad_input_is_rejected_with_the_field_named() {
    let db = TestDb::new().await;
    let dir = DataDir::new();
    let memory = open(&db, &dir).await;
    let field = |result: Result<_, MemoryError>| match result {
        Err(MemoryError::InvalidInput { field, .. }) => field,
        other => panic!("accepted: {other:?}"),
    };
    assert_eq!(field(memory.search(&query("alice", "x", 0)).await.map(|_| ())), "limit");
    assert_eq!(field(memory.search(&query("alice", "x", 101)).await.map(|_| ())), "limit");
    assert_eq!(field(memory.store(new_memory("", "default", "x")).await.map(|_| ())), "owner");
    assert_eq!(field(memory.store(new_memory("alice", "default", "  ")).await.map(|_| ())), "content");
    assert_eq!(field(memory.store(new_memory("alice", "default", "nul \0 byte")).await.map(|_| ())), "content");
    let nul_meta = NewMemory { metadata: meta(serde_json::json!({"k": "v\0"})), ..new_memory("alice", "default", "x") };
    assert_eq!(field(memory.store(nul_meta).await.map(|_| ())), "metadata");
    assert_eq!(field(memory.get("al\0ice", 1).await.map(|_| ())), "owner");
    let unknown_task = NewMemory { source_task: Some(uuid::Uuid::new_v4()), ..new_memory("alice", "default", "x") };
    assert_eq!(field(memory.store(unknown_task).await.map(|_| ())), "source_task");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM memory_items").fetch_one(&db.pool).await.expect("count");
    assert_eq!(count, 0, "nothing half-written");
    drop(memory);
    db.drop_db().await;
}
