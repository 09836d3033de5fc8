//! The per-user cap on planning and running tasks: a burst from one user waits its turn
//! without holding worker slots (nor jobs), so another user's task goes straight through.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use uuid::Uuid;

use orchestrator::{
    domain::Priority,
    queue::{Dispatcher, Job},
};

use crate::helpers::{TestApp, eventually, test_settings};

const BURST: usize = 50;
const CAP: u32 = 2;

/// Samples how many of `user`'s tasks are planning or running, every few milliseconds, and
/// keeps the largest count seen. Each sample is one consistent snapshot, so a count above
/// the cap can only come from a real breach.
fn watch_active(
    db: sqlx::PgPool,
    user: &'static str,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicI64>, tokio::task::JoinHandle<()>) {
    let max = Arc::new(AtomicI64::new(0));
    let seen = max.clone();
    let handle = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let active: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM tasks WHERE user_id = $1 AND status IN ('planning', 'running')",
            )
            .bind(user)
            .fetch_one(&db)
            .await
            .expect("a count");
            seen.fetch_max(active, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (max, handle)
}

#[tokio::test]
async fn a_burst_from_one_user_waits_for_the_cap_while_another_users_task_runs() {
    let mut s = test_settings();
    s.budgets.max_running_tasks_per_user = CAP;
    s.offline_llm_delay_ms = 150; // every task takes a while
    s.worker_concurrency = 8;
    let app = TestApp::spawn_with(s, 1).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (max_active, watcher) = watch_active(app.db.clone(), "alice", stop.clone());
    let mut burst: Vec<Uuid> = Vec::with_capacity(BURST);
    for i in 0..BURST {
        let body = json!({"user_id": "alice", "description": format!("Research job queues, part {i}.")});
        burst.push(app.client.submit(&body).await.expect("202 Accepted").id);
    }
    let other = app.client.submit(&json!({"user_id": "bob", "description": "Research job queues."})).await.unwrap().id;

    let bob = app.client.wait(other, Duration::from_secs(60)).await.expect("bob's task ends").raw;
    assert_eq!(bob["status"], "completed", "{bob}");
    let alice_open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasks WHERE user_id = 'alice' AND status IN ('pending', 'planning', 'running')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(alice_open > 0, "bob finished while alice still had tasks waiting");

    eventually(Duration::from_secs(180), "all of alice's tasks to complete", || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tasks WHERE user_id = 'alice' AND status = 'completed'")
                .fetch_one(&app.db)
                .await
                .unwrap();
        (done == BURST as i64).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let max = max_active.load(Ordering::Relaxed);
    assert!(max <= i64::from(CAP), "alice had {max} tasks planning or running at once");
    assert_eq!(max, i64::from(CAP), "the cap was reached, so it was what held the burst back");

    // The waiting was visible, and bob never waited.
    let waited: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT e.task_id) FROM task_events e JOIN tasks t ON t.id = e.task_id
         WHERE e.kind = 'waiting_for_capacity' AND t.user_id = $1",
    )
    .bind("alice")
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(waited > 0);
    assert!(crate::helpers::events(&app.db, other, "waiting_for_capacity").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_users_own_cap_overrides_the_global_one() {
    use orchestrator::store::{BudgetStore, UserLimits};
    let mut s = test_settings();
    s.budgets.max_running_tasks_per_user = 0; // no global cap
    s.offline_llm_delay_ms = 100;
    let app = TestApp::spawn_with(s, 1).await;
    let limits =
        UserLimits { user_id: "carol".into(), daily_cost_usd: None, max_running_tasks: Some(1), max_priority: None };
    app.app.store.set_user_limits(&limits).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (max_active, watcher) = watch_active(app.db.clone(), "carol", stop.clone());
    let mut ids = Vec::new();
    for i in 0..6 {
        let body = json!({"user_id": "carol", "description": format!("Research part {i}.")});
        ids.push(app.client.submit(&body).await.unwrap().id);
    }
    for id in ids {
        assert_eq!(app.client.wait(id, Duration::from_secs(60)).await.unwrap().raw["status"], "completed");
    }
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    assert_eq!(max_active.load(Ordering::Relaxed), 1);
    app.stop().await;
}

#[tokio::test]
async fn cancelling_a_running_task_over_http_starts_the_users_next_one() {
    let mut s = test_settings();
    s.budgets.max_running_tasks_per_user = 1;
    // Far beyond the deadline below: only the wake-up can start the waiting task in time.
    s.reconcile_min_age_ms = 120_000;
    s.offline_llm_delay_ms = 60_000;
    let app = TestApp::spawn_with(s, 1).await;
    let status = |id: Uuid| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM tasks WHERE id = $1")
                .bind(id)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let first = app.submit("Research job queues.").await;
    eventually(Duration::from_secs(20), "the first task to run", || async {
        (status(first).await == "running").then_some(())
    })
    .await;
    let second = app.submit("Research message brokers.").await;
    eventually(Duration::from_secs(20), "the second task to wait for capacity", || async {
        let waits: i64 =
            sqlx::query_scalar("SELECT count(*) FROM task_events WHERE task_id = $1 AND kind = 'waiting_for_capacity'")
                .bind(second)
                .fetch_one(&app.db)
                .await
                .unwrap();
        (waits > 0).then_some(())
    })
    .await;

    app.client.cancel(first).await.expect("the cancel is accepted");
    eventually(Duration::from_secs(30), "the waiting task to start once the slot is free", || async {
        matches!(status(second).await.as_str(), "planning" | "running").then_some(())
    })
    .await;
    app.stop().await;
}

/// Entries of every sorted set under the app's Redis prefix: the queue's delayed jobs.
async fn delayed_jobs(app: &TestApp) -> usize {
    let mut redis = app.app.queue.pool().get().await.expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", app.app.settings.redis_prefix))
        .query_async(&mut redis)
        .await
        .expect("keys");
    let mut total = 0;
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut redis).await.expect("type");
        if kind == "zset" {
            let n: usize = redis::cmd("ZCARD").arg(&key).query_async(&mut redis).await.expect("zcard");
            total += n;
        }
    }
    total
}

#[tokio::test]
async fn waiting_tasks_keep_no_job_and_are_woken_in_order() {
    let mut s = test_settings();
    s.budgets.max_running_tasks_per_user = 1;
    s.offline_llm_delay_ms = 1000; // the first task outlasts the submission of the others
    // The reconciler stays out of it: only the wake-ups may start the waiting tasks.
    s.reconcile_min_age_ms = 120_000;
    let app = TestApp::spawn_with(s, 1).await;
    let status = |id: Uuid| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM tasks WHERE id = $1")
                .bind(id)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let first = app.submit("Research job queues.").await;
    eventually(Duration::from_secs(20), "the first task to run", || async {
        (status(first).await == "running").then_some(())
    })
    .await;
    let mut waiting = Vec::new();
    for i in 0..5 {
        let id = app.submit(&format!("Research message brokers, part {i}.")).await;
        eventually(Duration::from_secs(20), "the task to wait for capacity", || async {
            (!crate::helpers::events(&app.db, id, "waiting_for_capacity").await.is_empty()).then_some(())
        })
        .await;
        waiting.push(id);
    }

    // While they wait, nothing of theirs is in the queue: no deferred job, no job at all.
    // (The oldest may have been woken already, if the first task just ended.)
    assert_eq!(delayed_jobs(&app).await, 0);
    let jobs: Vec<Job> =
        waiting[1..].iter().map(|&id| Job::plan(orchestrator::domain::TaskId(id), Priority::Normal)).collect();
    assert_eq!(app.app.queue.has_job(&jobs).await.unwrap(), vec![false; 4]);

    let mut order = vec![first];
    order.extend(&waiting);
    for &id in &order {
        assert_eq!(app.client.wait(id, Duration::from_secs(60)).await.unwrap().raw["status"], "completed");
    }
    let finished: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM tasks WHERE id = ANY($1) ORDER BY completed_at")
        .bind(&order)
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(finished, order, "the waiting tasks ran oldest first");
    app.stop().await;
}
