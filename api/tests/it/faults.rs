//! Faults with real processes and real servers: a worker killed mid-step, Redis losing every
//! key mid-run, Postgres unreachable for a while, and two workers racing for one step.

use std::{process::Stdio, time::Duration};

use futures_util::future::join_all;
use orchestrator::{
    domain::{StepId, TaskId},
    store::{ExecutionStore, Lease},
};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{Proxy, TestApp, events, eventually, test_settings, upstream, via};

/// A private redis-server on a free port, so a test may FLUSHALL without touching others.
struct PrivateRedis {
    url: String,
    child: Child,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).unwrap();
        eventually(Duration::from_secs(10), "the private redis to answer", || async {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
        })
        .await;
        Self { url, child }
    }

    async fn flushall(&self) {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.unwrap();
    }
}

#[tokio::test]
async fn a_worker_killed_mid_step_loses_nothing_and_the_step_completes_once() {
    let mut settings = test_settings();
    settings.lease_secs = 1;
    settings.visibility_timeout_secs = 2;
    let app = TestApp::spawn_with(settings.clone(), 0).await;

    // A separate worker process with a slow model, killed while its step is in the model call.
    let mut child = crate::helpers::slow_worker_process(&settings, "killed");
    let id = app.submit("Write a report.").await;
    eventually(Duration::from_secs(20), "the worker process to start the step", || async {
        (!events(&app.db, id, "step_started").await.is_empty()).then_some(())
    })
    .await;
    child.start_kill().unwrap(); // SIGKILL: no drain, no release
    child.wait().await.unwrap();

    let shutdown = CancellationToken::new();
    let survivor = tokio::spawn(app.app.worker("survivor").run(shutdown.clone()));
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["steps"][0]["attempt"], 2, "the killed attempt counts");
    assert_eq!(events(&app.db, id, "step_completed").await.len(), 1);
    let calls: i64 = sqlx::query_scalar("SELECT count(*) FROM llm_calls WHERE task_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(calls, 1, "only the surviving attempt's model call happened");
    shutdown.cancel();
    survivor.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn fifty_tasks_complete_although_redis_loses_every_key_mid_run() {
    let redis = PrivateRedis::start().await;
    let mut settings = test_settings();
    settings.redis_url = redis.url.clone();
    settings.offline_llm_delay_ms = 20;
    settings.reconcile_interval_ms = 200;
    settings.reconcile_min_age_ms = 500;
    let app = TestApp::spawn_with(settings, 1).await;

    let descriptions: Vec<String> = (0..50).map(|n| format!("Research item {n}. Then write it up.")).collect();
    let ids: Vec<Uuid> = join_all(descriptions.iter().map(|d| app.submit(d))).await;
    eventually(Duration::from_secs(10), "some tasks to complete", || async {
        (app.count("SELECT count(*) FROM tasks WHERE status = 'completed'").await >= 5).then_some(())
    })
    .await;
    redis.flushall().await;

    for id in &ids {
        let task = app.client.wait(*id, Duration::from_secs(30)).await.expect("every task finishes").raw;
        assert_eq!(task["status"], "completed", "{task}");
    }
    assert_eq!(app.count("SELECT count(*) FROM steps WHERE status <> 'completed'").await, 0);
    app.stop().await;
    drop(redis.child);
}

#[tokio::test]
async fn workers_back_off_while_postgres_is_unreachable_and_then_finish() {
    let mut settings = test_settings();
    let proxy = Proxy::start(upstream(&settings.database_url).await).await;
    settings.database_url = via(&settings.database_url, &proxy);
    settings.visibility_timeout_secs = 3;
    settings.lease_secs = 2;
    settings.reconcile_interval_ms = 500;
    settings.reconcile_min_age_ms = 1000;
    let app = TestApp::spawn_with(settings, 1).await;

    proxy.cut();
    // While Postgres is away the API says so instead of failing obscurely.
    let refused =
        app.http.post(app.url("/tasks")).json(&serde_json::json!({"user_id": "u", "description": "d"})).send().await;
    assert_eq!(refused.unwrap().status().as_u16(), 503);
    tokio::time::sleep(Duration::from_secs(3)).await; // the outage itself, not a wait for a state
    proxy.resume();

    let ids = join_all((0..5).map(|_| app.submit("Research it. Then write it up."))).await;
    // Cut again while those run, then bring Postgres back.
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await; // the outage
    proxy.resume();
    for id in ids {
        let task = app.client.wait(id, Duration::from_secs(30)).await.expect("the task finishes").raw;
        assert_eq!(task["status"], "completed", "{task}");
    }
    app.stop().await;
}

#[tokio::test]
async fn two_workers_racing_for_one_step_run_it_once() {
    let app = TestApp::spawn(0).await;
    let store = &app.app.store;
    for _ in 0..20 {
        let id = app.submit("Write a note.").await;
        let task = TaskId(id);
        let planning = Lease::new("planner", Duration::from_secs(30));
        store.claim_planning(task, &planning).await.unwrap().unwrap();
        let step = StepId::new();
        let new_step = orchestrator::store::NewStep {
            id: step,
            position: 0,
            title: "t".into(),
            instruction: "i".into(),
            agent: "writer".into(),
            depends_on: vec![],
            max_attempts: 3,
        };
        store
            .save_plan(task, &planning, &[new_step], orchestrator::store::PlanOrigin::Uncached)
            .await
            .unwrap()
            .unwrap();
        let (a, b) = (Lease::new("a", Duration::from_secs(30)), Lease::new("b", Duration::from_secs(30)));
        let (ra, rb) = tokio::join!(store.claim_step(step, &a), store.claim_step(step, &b));
        let winners = [ra.unwrap(), rb.unwrap()].into_iter().flatten().count();
        assert_eq!(winners, 1);
    }
    app.stop().await;
}
