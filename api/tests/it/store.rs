//! The store's transitions against a real Postgres: claims are exclusive, writes are fenced
//! by the lease, and sibling completions promote a shared dependant exactly once.

use std::time::Duration;

use orchestrator::{
    domain::{DeliveryStatus, StepId, StepStatus, TaskId, TaskStatus},
    store::{CreateOutcome, ExecutionStore, FailOutcome, FollowsUp, Lease, LeaseState, NewStep, NewTask, TaskStore},
};

use crate::helpers::TestApp;

async fn new_task(app: &TestApp) -> TaskId {
    let task = NewTask {
        id: TaskId::new(),
        user_id: "store-test".into(),
        description: "a diamond".into(),
        metadata: serde_json::json!({}),
        priority: Default::default(),
        max_cost_usd: None,
        max_tokens: None,
        idempotency_key: None,
        request_hash: "h".into(),
        max_attempts: None,
        use_plan_cache: true,
        context: Vec::new(),
        callback_url: None,
        agent_hints: Vec::new(),
        task_type: None,
        task_hash: "h".into(),
        warm_start: false,
        replan: false,
        max_replans: 2,
        start: Default::default(),
        require_approval: Vec::new(),
        follows: None,
    };
    match app.app.store.create_task(&task).await.unwrap() {
        CreateOutcome::Created(t) => t.id,
        other => panic!("{other:?}"),
    }
}

fn step(id: StepId, position: i32, depends_on: Vec<StepId>) -> NewStep {
    NewStep {
        id,
        position,
        title: format!("step {position}"),
        instruction: "do it".into(),
        agent: "analyst".into(),
        depends_on,
        max_attempts: 3,
        required: false,
    }
}

/// A plan of `steps` made now, not cached, by "test".
pub fn uncached(steps: &[NewStep]) -> orchestrator::store::PlanSave<'_> {
    orchestrator::store::PlanSave {
        steps,
        origin: orchestrator::store::PlanOrigin::Uncached,
        created_by: "test",
        paused: false,
    }
}

fn lease(owner: &str) -> Lease {
    Lease::new(owner, Duration::from_secs(30))
}

/// Plans a diamond a → (b, c) → d and returns the step ids.
async fn planned_diamond(app: &TestApp, task: TaskId) -> [StepId; 4] {
    let store = &app.app.store;
    let planning = lease("planner");
    store.claim_planning(task, &planning).await.unwrap().expect("pending task is claimable");
    let ids = [StepId::new(), StepId::new(), StepId::new(), StepId::new()];
    let steps = [
        step(ids[0], 0, vec![]),
        step(ids[1], 1, vec![ids[0]]),
        step(ids[2], 2, vec![ids[0]]),
        step(ids[3], 3, vec![ids[1], ids[2]]),
    ];
    let ready = store.save_plan(task, &planning, uncached(&steps)).await.unwrap().expect("lease held");
    assert_eq!(ready, [ids[0]]);
    ids
}

/// The states a column's CHECK constraint allows, sorted.
async fn allowed_states(app: &TestApp, table: &str) -> Vec<String> {
    let checks: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint
         WHERE conrelid = $1::regclass AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%(status = ANY (ARRAY%'",
    )
    .bind(table)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(checks.len(), 1, "{table}: {checks:?}");
    // `CHECK ((status = ANY (ARRAY['pending'::text, …])))`: the quoted pieces are the states.
    let mut states: Vec<String> = checks[0].split('\'').skip(1).step_by(2).map(str::to_owned).collect();
    states.sort();
    states
}

fn sorted(names: impl Iterator<Item = &'static str>) -> Vec<String> {
    let mut names: Vec<String> = names.map(str::to_owned).collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_schema_allows_exactly_the_domain_states() {
    // The store's statements take their state names from the domain enums; the schema's
    // CHECK constraints must agree, or a transition would fail (or a state be unreachable).
    let app = TestApp::spawn(0).await;
    assert_eq!(allowed_states(&app, "tasks").await, sorted(TaskStatus::ALL.iter().map(|s| s.as_str())));
    assert_eq!(allowed_states(&app, "steps").await, sorted(StepStatus::ALL.iter().map(|s| s.as_str())));
    assert_eq!(
        allowed_states(&app, "webhook_deliveries").await,
        sorted(DeliveryStatus::ALL.iter().map(|s| s.as_str()))
    );
    assert_eq!(
        allowed_states(&app, "tool_approvals").await,
        sorted(orchestrator::domain::ApprovalStatus::ALL.iter().map(|s| s.as_str()))
    );
}

#[tokio::test]
async fn a_claim_is_exclusive_and_writes_are_fenced_by_the_lease() {
    let app = TestApp::spawn(0).await;
    let store = &app.app.store;
    let task = new_task(&app).await;

    // Planning: a second claim, or a save with someone else's lease, does nothing.
    let planning = lease("w1");
    assert!(store.claim_planning(task, &planning).await.unwrap().is_some());
    assert!(store.claim_planning(task, &lease("w2")).await.unwrap().is_none());
    let a = StepId::new();
    assert!(store.save_plan(task, &lease("w2"), uncached(&[step(a, 0, vec![])])).await.unwrap().is_none());
    assert_eq!(store.save_plan(task, &planning, uncached(&[step(a, 0, vec![])])).await.unwrap(), Some(vec![a]));

    // Steps: one claim wins; a stale lease cannot complete or fail the step.
    let mine = lease("w1");
    let claim = store.claim_step(a, &mine).await.unwrap().expect("ready step");
    assert_eq!(claim.attempt, 1);
    assert!(store.claim_step(a, &lease("w2")).await.unwrap().is_none());
    let stale = lease("w2");
    assert!(store.complete_step(&claim, &stale, "forged").await.unwrap().is_none());
    assert_eq!(store.fail_step(&claim, &stale, "forged", None).await.unwrap(), FailOutcome::LeaseLost);
    assert_eq!(store.renew_step_lease(a, &mine).await.unwrap(), LeaseState::Held { task_running: true });
    assert_eq!(store.renew_step_lease(a, &stale).await.unwrap(), LeaseState::Lost);

    let done = store.complete_step(&claim, &mine, "the output").await.unwrap().expect("lease held");
    assert_eq!(done.task_result.as_deref(), Some("the output"));
    // Completing twice is refused: the step is no longer running.
    assert!(store.complete_step(&claim, &mine, "again").await.unwrap().is_none());
    let detail = store.task(task).await.unwrap().unwrap();
    assert_eq!(detail.task.status, TaskStatus::Completed);
    assert_eq!(detail.task.result.as_deref(), Some("the output"));
    app.stop().await;
}

#[tokio::test]
async fn siblings_finishing_together_promote_their_join_step_exactly_once() {
    let app = TestApp::spawn(0).await;
    let store = &app.app.store;
    for _ in 0..10 {
        let task = new_task(&app).await;
        let [a, b, c, d] = planned_diamond(&app, task).await;
        let la = lease("w");
        let claim_a = store.claim_step(a, &la).await.unwrap().unwrap();
        let mut ready = store.complete_step(&claim_a, &la, "a").await.unwrap().unwrap().ready;
        ready.sort();
        let mut expected = vec![b, c];
        expected.sort();
        assert_eq!(ready, expected);

        let (lb, lc) = (lease("wb"), lease("wc"));
        let claim_b = store.claim_step(b, &lb).await.unwrap().unwrap();
        let claim_c = store.claim_step(c, &lc).await.unwrap().unwrap();
        assert_eq!(claim_b.dependency_outputs, [("step 0".to_owned(), "a".to_owned())]);
        let (rb, rc) = tokio::join!(store.complete_step(&claim_b, &lb, "b"), store.complete_step(&claim_c, &lc, "c"));
        let promoted: Vec<StepId> = rb.unwrap().unwrap().ready.into_iter().chain(rc.unwrap().unwrap().ready).collect();
        assert_eq!(promoted, [d], "the join step is promoted once, by whichever sibling finished last");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_failed_step_fails_its_task_and_skips_what_is_left() {
    let app = TestApp::spawn(0).await;
    let store = &app.app.store;
    let task = new_task(&app).await;
    let [a, ..] = planned_diamond(&app, task).await;
    let l = lease("w");
    let claim = store.claim_step(a, &l).await.unwrap().unwrap();
    assert_eq!(store.fail_step(&claim, &l, "the model refused", None).await.unwrap(), FailOutcome::Failed);

    let detail = store.task(task).await.unwrap().unwrap();
    assert_eq!(detail.task.status, TaskStatus::Failed);
    assert!(detail.task.error.as_deref().unwrap().contains("the model refused"));
    let statuses: Vec<&str> = detail.steps.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(statuses, ["failed", "skipped", "skipped", "skipped"]);
    // Nothing of a failed task can be claimed any more.
    assert!(store.claim_step(detail.steps[1].id, &lease("w2")).await.unwrap().is_none());
    app.stop().await;
}

/// Claims and completions made at the same moment share statements (the store batches
/// them); every guarantee above holds for each of them, within a batch and across stores.
#[tokio::test]
async fn concurrent_claims_and_completions_keep_every_guarantee() {
    let app = TestApp::spawn(0).await;
    let store = &app.app.store;
    // A second store on the same database, as a second process would have.
    let other = &orchestrator::store::PgStore::new(app.db.clone());
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let task = new_task(&app).await;
        tasks.push((task, planned_diamond(&app, task).await));
    }

    // Two claims of one step in the same batch: one wins.
    let twice = new_task(&app).await;
    let [root, ..] = planned_diamond(&app, twice).await;
    let (l1, l2) = (lease("w1"), lease("w1"));
    let (one, two) = tokio::join!(store.claim_step(root, &l1), store.claim_step(root, &l2));
    let (one, two) = (one.unwrap(), two.unwrap());
    assert!(one.is_some() != two.is_some(), "exactly one claim wins: {one:?} {two:?}");

    // Two claims of each root at once, from both stores: exactly one of each pair wins.
    let leases: Vec<(Lease, Lease)> = tasks.iter().map(|_| (lease("w1"), lease("w2"))).collect();
    let claims = futures_util::future::join_all(tasks.iter().zip(&leases).map(|((_, [a, ..]), (l1, l2))| async move {
        let (one, two) = tokio::join!(store.claim_step(*a, l1), other.claim_step(*a, l2));
        match (one.unwrap(), two.unwrap()) {
            (Some(claim), None) => (claim, l1.clone()),
            (None, Some(claim)) => (claim, l2.clone()),
            pair => panic!("one claim of a step must win, got {pair:?}"),
        }
    }))
    .await;

    // Completions at once, half of them with a stale lease first: the stale ones are
    // refused, the others complete, each with its own messages in order.
    let stale = lease("w3");
    let refused = futures_util::future::join_all(
        claims.iter().step_by(2).map(|(claim, _)| store.complete_step_with_messages(claim, &stale, "forged", &[])),
    )
    .await;
    assert!(refused.into_iter().all(|r| r.unwrap().is_none()), "a stale lease cannot complete");
    let messages =
        |i: usize| vec![("user".to_owned(), format!("ask {i}")), ("assistant".to_owned(), format!("answer {i}"))];
    let done = futures_util::future::join_all(claims.iter().enumerate().map(|(i, (claim, l))| async move {
        (i, store.complete_step_with_messages(claim, l, "a", &messages(i)).await)
    }))
    .await;
    for (i, result) in done {
        let mut ready = result.unwrap().expect("lease held").ready;
        ready.sort();
        let [_, b, c, _] = tasks[i].1;
        let mut expected = vec![b, c];
        expected.sort();
        assert_eq!(ready, expected);
        let stored: Vec<(String, String)> =
            sqlx::query_as("SELECT role, content FROM task_messages WHERE step_id = $1 ORDER BY id")
                .bind(claims[i].0.step_id.0)
                .fetch_all(&app.db)
                .await
                .unwrap();
        assert_eq!(stored, messages(i));
    }

    // Siblings of every task claimed and completed at once, spread over both stores: each
    // join step is promoted exactly once.
    let siblings = futures_util::future::join_all(tasks.iter().map(|(_, [_, b, c, _])| async move {
        let (lb, lc) = (lease("wb"), lease("wc"));
        let (cb, cc) = tokio::join!(store.claim_step(*b, &lb), other.claim_step(*c, &lc));
        let (cb, cc) = (cb.unwrap().unwrap(), cc.unwrap().unwrap());
        let (rb, rc) = tokio::join!(store.complete_step(&cb, &lb, "b"), other.complete_step(&cc, &lc, "c"));
        rb.unwrap().unwrap().ready.into_iter().chain(rc.unwrap().unwrap().ready).collect::<Vec<StepId>>()
    }))
    .await;
    for ((_, [.., d]), promoted) in tasks.iter().zip(siblings) {
        assert_eq!(promoted, [*d], "the join step is promoted once");
    }

    // The last steps at once: each task completes once, with its last step's output.
    let last = futures_util::future::join_all(tasks.iter().map(|(_, [.., d])| async move {
        let l = lease("wd");
        let claim = store.claim_step(*d, &l).await.unwrap().unwrap();
        assert_eq!(claim.dependency_outputs.len(), 2);
        store.complete_step(&claim, &l, "d").await.unwrap().unwrap()
    }))
    .await;
    for ((task, _), done) in tasks.iter().zip(last) {
        assert_eq!(done.task_result.as_deref(), Some("d"));
        let detail = store.task(*task).await.unwrap().unwrap();
        assert_eq!(detail.task.status, TaskStatus::Completed);
        let completed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM task_events WHERE task_id = $1 AND kind = 'task_completed'")
                .bind(task.0)
                .fetch_one(&app.db)
                .await
                .unwrap();
        assert_eq!(completed, 1);
    }
    app.stop().await;
}

/// Submissions at the same moment share inserts; each task keeps exactly what was sent,
/// its context messages in order, and a keyed submission still replays.
#[tokio::test]
async fn concurrent_submissions_keep_each_tasks_own_fields_and_context() {
    let app = TestApp::spawn(0).await;
    let store = &app.app.store;
    let submissions: Vec<NewTask> = (0..40)
        .map(|i| NewTask {
            id: TaskId::new(),
            user_id: format!("submitter-{}", i % 3),
            description: format!("task {i}"),
            metadata: serde_json::json!({ "n": i }),
            priority: Default::default(),
            max_cost_usd: (i % 2 == 0).then_some(1.5),
            max_tokens: (i % 3 == 0).then_some(1000),
            idempotency_key: (i % 10 == 0).then(|| format!("key-{i}")),
            request_hash: format!("h{i}"),
            max_attempts: (i % 4 == 0).then_some(2),
            use_plan_cache: i % 2 == 1,
            context: (0..i % 4).map(|m| ("user".to_owned(), format!("context {i}.{m}"))).collect(),
            callback_url: (i % 5 == 0).then(|| format!("https://example.com/hook/{i}")),
            agent_hints: if i % 6 == 0 { vec!["analyst".to_owned(), "writer".to_owned()] } else { Vec::new() },
            task_type: (i % 3 == 1).then(|| format!("type-{i}")),
            task_hash: format!("hash-{i}"),
            warm_start: i % 7 == 0,
            replan: i % 2 == 0,
            max_replans: i % 6,
            start: if i % 4 == 3 { orchestrator::domain::TaskStart::Paused } else { Default::default() },
            require_approval: if i % 5 == 0 { vec!["calculator".to_owned()] } else { Vec::new() },
            follows: (i % 5 == 2).then(|| FollowsUp { parent: TaskId::new(), thread: TaskId::new() }),
        })
        .collect();
    let created = futures_util::future::join_all(submissions.iter().map(|t| store.create_task(t))).await;
    for (new, outcome) in submissions.iter().zip(created) {
        let task = match outcome.unwrap() {
            CreateOutcome::Created(task) => task,
            other => panic!("{other:?}"),
        };
        assert_eq!(task.id, new.id);
        assert_eq!((&task.user_id, &task.description, &task.metadata), (&new.user_id, &new.description, &new.metadata));
        assert_eq!((task.max_cost_usd, task.max_tokens), (new.max_cost_usd, new.max_tokens));
        assert_eq!((&task.callback_url, &task.agent_hints), (&new.callback_url, &new.agent_hints));
        assert_eq!((&task.task_type, task.task_hash.as_deref()), (&new.task_type, Some(new.task_hash.as_str())));
        assert_eq!(task.warm_start, new.warm_start);
        assert_eq!((task.replan, task.max_replans, task.replans), (new.replan, new.max_replans, 0));
        assert_eq!(task.start, new.start);
        assert_eq!(task.require_approval, new.require_approval);
        // A follow-up keeps its thread; any other task starts its own.
        assert_eq!(task.thread_id, new.follows.map_or(new.id, |f| f.thread));
        assert_eq!(task.parent_task_id, new.follows.map(|f| f.parent));
        assert_eq!(task.status, TaskStatus::Pending);
        let context: Vec<(String, String)> =
            sqlx::query_as("SELECT role, content FROM task_messages WHERE task_id = $1 ORDER BY id")
                .bind(new.id.0)
                .fetch_all(&app.db)
                .await
                .unwrap();
        assert_eq!(context, new.context);
        let events: Vec<String> = sqlx::query_scalar("SELECT kind FROM task_events WHERE task_id = $1")
            .bind(new.id.0)
            .fetch_all(&app.db)
            .await
            .unwrap();
        assert_eq!(events, ["task_created"]);
    }
    // A keyed submission sent again is the same task.
    let again = NewTask { id: TaskId::new(), ..submissions[10].clone() };
    match store.create_task(&again).await.unwrap() {
        CreateOutcome::Replayed(task) => assert_eq!(task.id, submissions[10].id),
        other => panic!("{other:?}"),
    }
    app.stop().await;
}

/// Every statement of the service is short; one whose estimated cost passes
/// `jit_above_cost` (easy on a young database, whose statistics are stale) would be compiled
/// for hundreds of milliseconds before running for a few.
#[tokio::test]
async fn the_services_connections_run_without_jit() {
    let app = TestApp::spawn(0).await;
    let jit: String = sqlx::query_scalar("SHOW jit").fetch_one(&app.db).await.unwrap();
    assert_eq!(jit, "off");
    app.stop().await;
}

/// The planning claim, in each of its outcomes: a fresh claim counts an attempt; a planning
/// whose lease expired is taken over while attempts remain, and fails the task (with its
/// event and webhook) when none do; a user at the cap waits; an unknown task is named so.
#[tokio::test]
async fn the_planning_claim_takes_over_waits_and_gives_up_as_it_should() {
    use orchestrator::store::{BudgetStore, CapacityClaim};
    let app = TestApp::spawn(0).await;
    let store = &app.app.store;
    let attempts =
        |task: TaskId| sqlx::query_scalar::<_, i32>("SELECT plan_attempts FROM tasks WHERE id = $1").bind(task.0);

    let task = new_task(&app).await;
    let claimed = store.claim_planning_within_cap(task, &lease("w1"), 2).await.unwrap();
    assert!(matches!(&claimed, CapacityClaim::Claimed { user_id, .. } if user_id == "store-test"), "{claimed:?}");
    assert_eq!(attempts(task).fetch_one(&app.db).await.unwrap(), 1);
    let again = store.claim_planning_within_cap(task, &lease("w2"), 2).await.unwrap();
    assert!(matches!(again, CapacityClaim::NotClaimable), "a live planning lease is not taken: {again:?}");

    // The worker died: its lease expires, and the next claim takes over, counting an attempt.
    let expire = "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = $1";
    sqlx::query(expire).bind(task.0).execute(&app.db).await.unwrap();
    let taken = store.claim_planning_within_cap(task, &lease("w2"), 2).await.unwrap();
    assert!(matches!(taken, CapacityClaim::Claimed { .. }), "{taken:?}");
    assert_eq!(attempts(task).fetch_one(&app.db).await.unwrap(), 2);

    // With no attempt left, the takeover fails the task instead.
    sqlx::query("UPDATE tasks SET plan_attempts = 3, callback_url = 'https://example.com/hook' WHERE id = $1")
        .bind(task.0)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query(expire).bind(task.0).execute(&app.db).await.unwrap();
    let gave_up = store.claim_planning_within_cap(task, &lease("w3"), 2).await.unwrap();
    assert!(matches!(gave_up, CapacityClaim::Exhausted { .. }), "{gave_up:?}");
    let (status, code): (String, Option<String>) = sqlx::query_as("SELECT status, error_code FROM tasks WHERE id = $1")
        .bind(task.0)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!((status.as_str(), code.as_deref()), ("failed", Some("attempts_exhausted")));
    assert_eq!(crate::helpers::events(&app.db, task.0, "task_failed").await.len(), 1);
    let hooks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE task_id = $1 AND event = 'task.failed'")
            .bind(task.0)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(hooks, 1, "the failure's webhook is queued with it");

    // At the cap (one planning task of this user, cap 1), the next task waits, once marked.
    let first = new_task(&app).await;
    let second = new_task(&app).await;
    assert!(matches!(
        store.claim_planning_within_cap(first, &lease("w1"), 1).await.unwrap(),
        CapacityClaim::Claimed { .. }
    ));
    for _ in 0..2 {
        let waits = store.claim_planning_within_cap(second, &lease("w1"), 1).await.unwrap();
        assert!(matches!(waits, CapacityClaim::AtCapacity), "{waits:?}");
    }
    assert_eq!(crate::helpers::events(&app.db, second.0, "waiting_for_capacity").await.len(), 1);
    let status: String =
        sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1").bind(second.0).fetch_one(&app.db).await.unwrap();
    assert_eq!(status, "pending");

    let unknown = store.claim_planning_within_cap(TaskId::new(), &lease("w1"), 1).await.unwrap();
    assert!(matches!(unknown, CapacityClaim::Unknown), "{unknown:?}");
    app.stop().await;
}

/// Claims and completes `steps` in order; the last completion.
async fn run_steps(app: &TestApp, steps: [StepId; 4]) -> orchestrator::store::StepCompletion {
    let mut last = None;
    for (i, id) in steps.into_iter().enumerate() {
        let l = lease("w");
        let claim = app.app.store.claim_step(id, &l).await.unwrap().expect("ready");
        let done = app.app.store.complete_step(&claim, &l, "out").await.unwrap().expect("lease held");
        if i < 3 {
            assert_eq!(done.waiting, None, "only the task's end looks for a waiting task");
        }
        last = Some(done);
    }
    last.expect("four steps")
}

/// The statement that completes a task names its user's oldest task waiting for capacity,
/// so the task's end wakes it without a lookup of its own.
#[tokio::test]
async fn completing_a_task_names_the_users_oldest_waiting_task() {
    use orchestrator::{
        domain::Priority,
        store::{BudgetStore, CapacityClaim},
    };
    let app = TestApp::spawn(0).await;

    let alone = new_task(&app).await;
    let steps = planned_diamond(&app, alone).await;
    assert_eq!(run_steps(&app, steps).await.waiting, Some(None), "nobody waits");

    let running = new_task(&app).await;
    let (older, newer) = (new_task(&app).await, new_task(&app).await);
    let steps = planned_diamond(&app, running).await;
    for waiting in [older, newer] {
        let claim = app.app.store.claim_planning_within_cap(waiting, &lease("w"), 1).await.unwrap();
        assert!(matches!(claim, CapacityClaim::AtCapacity), "{claim:?}");
    }
    assert_eq!(run_steps(&app, steps).await.waiting, Some(Some((older, Priority::Normal))));
    app.stop().await;
}
