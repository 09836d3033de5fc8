//! Owner scoping: another owner's items never come back, through any operation.

use memory::MemoryStore;

use crate::support::*;

#[tokio::test]
async fn another_owners_items_never_come_back() {
    let db = TestDb::new().await;
    let dir = DataDir::new();
    let memory = open(&db, &dir).await;
    let mut alice = Vec::new();
    for i in 0..5 {
        alice.push(store(&memory, "alice", "default", &format!("the launch code is {i} and must stay secret")).await);
    }
    let bob = store(&memory, "bob", "default", "bob likes hiking").await;

    // Search: bob asks for far more than he has and for alice's exact words.
    let results = search(&memory, query("bob", "the launch code is 3 and must stay secret", 100)).await;
    assert_eq!(ids(&results), vec![bob.id], "only bob's single item");
    // With a namespace and metadata filter too, which take the exact fallback path.
    let mut filtered = query("bob", "launch code", 10);
    filtered.namespace = Some("default".into());
    filtered.metadata = Some(meta(serde_json::json!({})));
    assert_eq!(ids(&search(&memory, filtered).await), vec![bob.id]);
    // An owner with nothing at all.
    assert!(search(&memory, query("mallory", "launch code", 10)).await.is_empty());

    // Get and delete through the wrong owner.
    assert_eq!(memory.get("bob", alice[0].id).await.expect("get"), None);
    assert!(!memory.delete("bob", alice[0].id).await.expect("delete"));
    assert_eq!(memory.get("alice", alice[0].id).await.expect("get").map(|i| i.id), Some(alice[0].id));
    let still_there = search(&memory, query("alice", "the launch code is 0 and must stay secret", 1)).await;
    assert_eq!(ids(&still_there), vec![alice[0].id]);

    // Owners that differ only by case are different owners.
    assert!(search(&memory, query("Alice", "launch code", 10)).await.is_empty());
    drop(memory);
    db.drop_db().await;
}
