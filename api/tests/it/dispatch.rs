//! Dispatch under concurrency: two worker runtimes on one stream, duplicate jobs, forged jobs.

use std::time::Duration;

use futures_util::future::join_all;
use orchestrator::{
    app::App,
    domain::{Priority, StepId, TaskId},
    queue::{Dispatcher, Job, JobSigner, RedisQueue},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestApp, eventually};

/// Steps that ran more than once, by counting their `step_started` events and model calls.
async fn steps_run_twice(app: &TestApp) -> i64 {
    app.count(
        "SELECT count(*) FROM steps s
         WHERE s.attempt <> 1
            OR (SELECT count(*) FROM task_events e WHERE e.step_id = s.id AND e.kind = 'step_started') <> 1
            OR (SELECT count(*) FROM llm_calls c WHERE c.step_id = s.id) <> 1",
    )
    .await
}

#[tokio::test]
async fn two_worker_runtimes_on_one_stream_run_every_step_exactly_once() {
    // The API process runs no worker; two other "processes" (own pools, own consumers) do.
    let api = TestApp::spawn(0).await;
    let shutdown = CancellationToken::new();
    let (mut workers, mut apps) = (Vec::new(), Vec::new());
    for n in 0..2 {
        let mut settings = api.app.settings.clone();
        settings.data_dir = crate::helpers::data_dir(&format!("{}-worker-{n}", settings.redis_prefix));
        let app = App::connect(settings).await.unwrap();
        workers.push(tokio::spawn(app.worker(format!("test-worker-{n}")).run(shutdown.clone())));
        apps.push(app);
    }

    let descriptions: Vec<String> =
        (0..20).map(|n| format!("Research topic {n}. Then write a report on it.")).collect();
    let ids = join_all(descriptions.iter().map(|d| api.submit(d))).await;
    // Duplicate plan jobs for every task: each must be dropped, not plan the task again.
    let plans: Vec<Job> = ids.iter().map(|&id| Job::plan(TaskId(id), Priority::Normal)).collect();
    api.app.queue.enqueue(&plans).await.unwrap();

    for id in &ids {
        assert_eq!(api.wait(*id).await["status"], "completed");
    }
    // Replay every step job after the fact: completed steps must not run again.
    let steps: Vec<(Uuid, Uuid)> = sqlx::query_as("SELECT task_id, id FROM steps").fetch_all(&api.db).await.unwrap();
    assert_eq!(steps.len(), 40);
    let replays: Vec<Job> = steps.iter().map(|&(t, s)| Job::step(TaskId(t), StepId(s), 1, Priority::Normal)).collect();
    api.app.queue.enqueue(&replays).await.unwrap();
    eventually(Duration::from_secs(10), "the workers to drain the stream", || async {
        (api.queued_jobs().await == 0).then_some(())
    })
    .await;

    assert_eq!(steps_run_twice(&api).await, 0);
    assert_eq!(api.count("SELECT count(*) FROM task_events WHERE kind = 'task_planned'").await, 20);
    assert_eq!(api.count("SELECT count(*) FROM task_events WHERE kind = 'task_completed'").await, 20);
    let workers_used =
        api.count("SELECT count(DISTINCT data->>'worker') FROM task_events WHERE kind = 'step_started'").await;
    assert_eq!(workers_used, 2, "both runtimes took steps");
    assert_eq!(api.count("SELECT count(*) FROM steps WHERE lease_owner IS NOT NULL").await, 0, "leases are released");

    shutdown.cancel();
    for w in workers {
        w.await.unwrap();
    }
    for app in apps {
        app.memory.shutdown().await.unwrap();
        let _ = std::fs::remove_dir_all(&app.settings.data_dir);
    }
    api.stop().await;
}

#[tokio::test]
async fn jobs_signed_with_another_secret_are_refused() {
    let app = TestApp::spawn(0).await;
    // A task sits pending; a forger enqueues a plan job for it with the wrong key.
    let id = app.submit("Write a poem.").await;
    let settings = &app.app.settings;
    let forger = RedisQueue::connect(
        &settings.redis_url,
        &app.app.redis_namespace,
        JobSigner::new(b"not-the-deployment-secret"),
        settings.visibility_timeout(),
        2,
    )
    .await
    .unwrap();
    // Drop the genuine job first so only the forged one is left.
    let mut redis = app.app.queue.pool().get().await.unwrap();
    redis::cmd("XTRIM")
        .arg(app.app.queue.stream(Priority::Normal))
        .arg("MAXLEN")
        .arg(0)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    drop(redis);
    forger.enqueue(&[Job::plan(TaskId(id), Priority::Normal)]).await.unwrap();

    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(app.app.worker("verifier").run(shutdown.clone()));
    eventually(Duration::from_secs(10), "the forged job to be consumed", || async {
        (app.queued_jobs().await == 0).then_some(())
    })
    .await;
    let task = app.client.task(id).await.unwrap();
    assert_eq!(task.status, "pending", "a forged job must not move the task");
    shutdown.cancel();
    worker.await.unwrap();
    app.stop().await;
}
