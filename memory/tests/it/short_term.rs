//! The per-task message log.

use memory::{MemoryError, MessageRole, NewMessage, TaskMessages};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::TestDb;

async fn task(pool: &PgPool) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO tasks (id, user_id, description) VALUES ($1, 'alice', 'test task')")
        .bind(id)
        .execute(pool)
        .await
        .expect("insert task");
    id
}

#[tokio::test]
async fn recent_returns_the_latest_window_oldest_first() {
    let db = TestDb::new().await;
    let (task_id, other_task) = (task(&db.pool).await, task(&db.pool).await);
    let messages = TaskMessages::new(db.pool.clone());
    messages.append(task_id, None, MessageRole::System, "you are a planner").await.expect("append");
    let batch: Vec<NewMessage> = (1..=5)
        .map(|i| NewMessage {
            step_id: None,
            role: if i % 2 == 0 { MessageRole::Assistant } else { MessageRole::User },
            content: format!("message {i}"),
        })
        .collect();
    let stored = messages.append_many(task_id, &batch).await.expect("append many");
    assert_eq!(
        stored.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        batch.iter().map(|m| m.content.as_str()).collect::<Vec<_>>()
    );
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id), "ids follow the input order");
    messages.append(other_task, None, MessageRole::User, "another task").await.expect("append");
    messages.append(task_id, None, MessageRole::Summary, "summary of 1-5").await.expect("append");

    let recent = messages.recent(task_id, 3).await.expect("recent");
    let got: Vec<(MessageRole, &str)> = recent.iter().map(|m| (m.role, m.content.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (MessageRole::Assistant, "message 4"),
            (MessageRole::User, "message 5"),
            (MessageRole::Summary, "summary of 1-5")
        ]
    );
    assert!(recent.iter().all(|m| m.task_id == task_id));
    let all = messages.recent(task_id, 100).await.expect("recent");
    assert_eq!(all.len(), 7);
    assert_eq!(all[0].role, MessageRole::System);
    assert!(messages.recent(task_id, 0).await.expect("recent").is_empty());
    assert!(messages.append_many(task_id, &[]).await.expect("nothing").is_empty());
    db.drop_db().await;
}

#[tokio::test]
async fn messages_need_an_existing_task_and_valid_text() {
    let db = TestDb::new().await;
    let messages = TaskMessages::new(db.pool.clone());
    match messages.append(Uuid::new_v4(), None, MessageRole::User, "orphan").await {
        Err(MemoryError::InvalidInput { field: "task_id", .. }) => {}
        other => panic!("stored a message of no task: {other:?}"),
    }
    let task_id = task(&db.pool).await;
    match messages.append(task_id, None, MessageRole::Tool, "nul \0 byte").await {
        Err(MemoryError::InvalidInput { field: "content", .. }) => {}
        other => panic!("{other:?}"),
    }
    db.drop_db().await;
}
