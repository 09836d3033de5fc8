//! Faults with real processes and real servers: a worker killed mid-step (and mid-loop, when
//! the step continues from its checkpoint), Redis losing every key mid-run, Postgres
//! unreachable for a while, and two workers racing for one step.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::future::join_all;
use orchestrator::{
    domain::{StepId, TaskId},
    store::{ExecutionStore, Lease},
};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use serde_json::json;

use crate::{
    fake_llm::{FakeOpenAi, answer, is_planning, tool_call, tool_replies},
    helpers::{Proxy, TestApp, events, eventually, test_settings, upstream, via, worker_process},
};

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
async fn a_worker_killed_mid_loop_is_continued_from_its_checkpoint_without_repeating_a_call() {
    // One step of four model turns: three calculator calls, then the answer. The worker's
    // third model call never answers: the worker is killed while it waits, after two turns
    // and two tool calls were recorded.
    let hang_once = Arc::new(AtomicBool::new(true));
    let hang = hang_once.clone();
    let fake = FakeOpenAi::start_with_delay(
        move |request| {
            let third = !is_planning(request) && tool_replies(request).len() == 2;
            if third && hang.swap(false, Ordering::SeqCst) { Duration::from_secs(60) } else { Duration::ZERO }
        },
        |request| {
            if is_planning(request) {
                let step =
                    json!({"title": "Compute", "instruction": "Add it up.", "agent": "analyst", "depends_on": []});
                return tool_call("plan-1", "submit_plan", &json!({"steps": [step]}));
            }
            match tool_replies(request).len() {
                n @ 0..=2 => {
                    let expression = format!("{} + {}", n + 1, n + 1);
                    tool_call(&format!("c{}", n + 1), "calculator", &json!({ "expression": expression }))
                }
                _ => answer("6", 300, 40),
            }
        },
    )
    .await;
    let mut settings = fake.settings();
    settings.lease_secs = 1;
    settings.visibility_timeout_secs = 2;
    settings.llm_max_retries = 0;
    let app = TestApp::spawn_with(settings.clone(), 0).await;

    let base_url = fake.base_url();
    let provider = [
        ("LLM_PROVIDER", "openai"),
        ("LLM_BASE_URL", base_url.as_str()),
        ("LLM_MODEL", "gpt-4o-mini"),
        ("LLM_API_KEY", "sk-test-fake-provider"),
        ("LLM_MAX_RETRIES", "0"),
    ];
    let mut child = worker_process(&settings, "mid-loop", &provider);
    let id = app.submit("Add up three sums.").await;
    eventually(Duration::from_secs(20), "the worker to wait for its third model call", || async {
        fake.requests().iter().any(|r| !is_planning(r) && tool_replies(r).len() == 2).then_some(())
    })
    .await;
    child.start_kill().unwrap(); // SIGKILL: no drain, no release
    child.wait().await.unwrap();

    let shutdown = CancellationToken::new();
    let survivor = tokio::spawn(app.app.worker("survivor").run(shutdown.clone()));
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"], "6");
    assert_eq!(task["steps"][0]["attempt"], 2, "the killed attempt counts");

    // The survivor continued the conversation: it asked the third turn again (the killed
    // worker's was never answered) and the fourth, and nothing before them. Without the
    // checkpoint it would have started over: 3 + 4 requests instead of 2 + 3.
    let mut by_replies = [0; 4];
    for request in fake.requests().iter().filter(|r| !is_planning(r)) {
        by_replies[tool_replies(request).len().min(3)] += 1;
    }
    assert_eq!(by_replies, [1, 1, 2, 1], "requests by the tool replies they carry");

    let step_calls: i64 =
        sqlx::query_scalar("SELECT count(*) FROM llm_calls WHERE task_id = $1 AND step_id IS NOT NULL")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(step_calls, 4, "each answered model call recorded once");
    let tools: Vec<String> =
        sqlx::query_scalar("SELECT arguments->>'expression' FROM tool_calls WHERE task_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(tools, ["1 + 1", "2 + 2", "3 + 3"], "each tool call ran once");
    // Cost: the task's totals are the sums of its calls, each counted once.
    let (task_cost, calls_cost, task_tokens, calls_tokens): (f64, f64, i64, i64) = sqlx::query_as(
        "SELECT t.cost_usd, (SELECT sum(cost_usd) FROM llm_calls WHERE task_id = t.id),
                t.tokens_in, (SELECT sum(prompt_tokens)::int8 FROM llm_calls WHERE task_id = t.id)
         FROM tasks t WHERE t.id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!((task_cost - calls_cost).abs() < 1e-12 && task_cost > 0.0, "{task_cost} {calls_cost}");
    assert_eq!(task_tokens, calls_tokens);
    // The step's messages are its whole conversation, each message once; its checkpoint is
    // gone with its completion.
    let roles: Vec<String> = sqlx::query_scalar(
        "SELECT m.role FROM task_messages m JOIN steps s ON s.id = m.step_id WHERE s.task_id = $1 ORDER BY m.id",
    )
    .bind(id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    let expected = ["user", "assistant", "tool", "assistant", "tool", "assistant", "tool", "assistant"];
    assert_eq!(roles, expected);
    let left: Option<serde_json::Value> = sqlx::query_scalar("SELECT checkpoint FROM steps WHERE task_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(left, None);

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
            required: false,
        };
        store.save_plan(task, &planning, crate::store::uncached(&[new_step])).await.unwrap().unwrap();
        let (a, b) = (Lease::new("a", Duration::from_secs(30)), Lease::new("b", Duration::from_secs(30)));
        let (ra, rb) = tokio::join!(store.claim_step(step, &a), store.claim_step(step, &b));
        let winners = [ra.unwrap(), rb.unwrap()].into_iter().flatten().count();
        assert_eq!(winners, 1);
    }
    app.stop().await;
}
