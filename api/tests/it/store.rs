//! The store's transitions against a real Postgres: claims are exclusive, writes are fenced
//! by the lease, and sibling completions promote a shared dependant exactly once.

use std::time::Duration;

use orchestrator::{
    domain::{StepId, TaskId, TaskStatus},
    store::{CreateOutcome, ExecutionStore, FailOutcome, Lease, LeaseState, NewStep, NewTask, TaskStore},
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
    let ready = store.save_plan(task, &planning, &steps, false).await.unwrap().expect("lease held");
    assert_eq!(ready, [ids[0]]);
    ids
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
    assert!(store.save_plan(task, &lease("w2"), &[step(a, 0, vec![])], false).await.unwrap().is_none());
    assert_eq!(store.save_plan(task, &planning, &[step(a, 0, vec![])], false).await.unwrap(), Some(vec![a]));

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
