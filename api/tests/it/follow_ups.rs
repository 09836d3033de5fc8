//! Follow-ups (`POST /tasks/{id}/follow-ups`): a task that continues an ended one in its
//! thread. Its steps see the parent's goal and outcome (and, condensed, the thread before it)
//! before their own prompt; it is submitted as `POST /tasks` submits, with the same checks,
//! idempotency, limits and budgets; `GET /tasks?thread_id=` lists the thread.

use orchestrator::auth::{AuthMode, KeyStore};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    budgets::offline_priced,
    fake_llm::{FakeOpenAi, answer, is_planning, tool_call},
    helpers::{TestApp, test_settings},
};

const PARENT_GOAL: &str = "Write a haiku about job queues.";
const PARENT_RESULT: &str = "Jobs wait in a line; workers take them one by one; the queue empties out.";

/// `POST /tasks/{parent}/follow-ups` with `body`, an optional key and extra headers.
async fn follow_up(app: &TestApp, parent: &str, key: Option<&str>, headers: &[(&str, &str)], body: &Value) -> Response {
    let mut request = app.http.post(app.url(&format!("/tasks/{parent}/follow-ups"))).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("a response")
}

/// The JSON of a response, after checking its status.
async fn expect(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    body
}

/// Submits `description` for `user_id` and waits for it to end; returns the ended task.
async fn ended(app: &TestApp, user_id: &str, description: &str) -> Value {
    let task = app.client.submit(&json!({"user_id": user_id, "description": description})).await.expect("202");
    app.wait(task.id).await
}

/// The (role, content) context a step of `task` starts from, oldest first.
async fn context(app: &TestApp, task: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT role, content FROM task_messages WHERE task_id = $1 AND step_id IS NULL ORDER BY id")
        .bind(task.parse::<Uuid>().unwrap())
        .fetch_all(&app.db)
        .await
        .unwrap()
}

/// The description in a step request's `Task:` line: which task the request is for.
fn task_of(request: &Value) -> String {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_str())
        .find_map(|c| c.lines().find_map(|l| l.strip_prefix("Task: ")).map(str::to_owned))
        .unwrap_or_default()
}

/// Where a message with `role` and `content` sits in a request's conversation.
fn position(request: &Value, role: &str, content: &str) -> Option<usize> {
    request["messages"].as_array().unwrap().iter().position(|m| m["role"] == role && m["content"] == content)
}

fn id(task: &Value) -> &str {
    task["id"].as_str().expect("an id")
}

#[tokio::test]
async fn a_follow_up_of_a_completed_task_runs_with_the_parents_goal_and_result_before_its_prompt() {
    let fake = FakeOpenAi::start(|request| {
        if is_planning(request) {
            let plan = json!({"steps": [
                {"title": "Answer", "instruction": "Do what is asked.", "agent": "writer", "depends_on": []}
            ]});
            return tool_call("plan-1", "submit_plan", &plan);
        }
        if task_of(request) == PARENT_GOAL {
            return answer(PARENT_RESULT, 10, 2);
        }
        // The follow-up says whether it was shown the parent's result.
        let saw = position(request, "assistant", PARENT_RESULT).is_some();
        answer(if saw { "Jobs wait; workers take them." } else { "I was not shown the haiku." }, 10, 2)
    })
    .await;
    let app = TestApp::spawn_with(fake.settings(), 1).await;
    let parent = ended(&app, "writer-user", PARENT_GOAL).await;
    assert_eq!(parent["status"], "completed", "{parent}");
    // A task that starts a thread is its own thread.
    assert_eq!((&parent["thread_id"], &parent["parent_task_id"]), (&parent["id"], &Value::Null), "{parent}");

    let response = follow_up(
        &app,
        id(&parent),
        None,
        &[("prefer", "wait=20")],
        &json!({"description": "Now make it shorter.", "context": [{"role": "user", "content": "Keep it under ten words."}]}),
    )
    .await;
    let location = response.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
    let task = expect(response, StatusCode::OK).await;
    assert_eq!(location, Some(format!("/tasks/{}", id(&task))));
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"], "Jobs wait; workers take them.", "the follow-up saw its parent's result: {task}");
    assert_eq!(task["parent_task_id"], parent["id"]);
    assert_eq!(task["thread_id"], parent["id"]);
    assert_eq!(task["user_id"], "writer-user", "a follow-up is its parent's user's");
    assert_ne!(task["task_hash"], parent["task_hash"]);

    // Every model request of the follow-up's steps carried the goal, then the result, then
    // the follow-up's own context, before the step prompt.
    let requests: Vec<Value> =
        fake.requests().into_iter().filter(|r| !is_planning(r) && task_of(r) == "Now make it shorter.").collect();
    assert!(!requests.is_empty());
    for request in &requests {
        let goal = position(request, "user", PARENT_GOAL).expect("the parent's goal");
        let result = position(request, "assistant", PARENT_RESULT).expect("the parent's result");
        let own = position(request, "user", "Keep it under ten words.").expect("the follow-up's own context");
        let prompt = request["messages"]
            .as_array()
            .unwrap()
            .iter()
            .position(|m| m["content"].as_str().is_some_and(|c| c.starts_with("Task: ")))
            .unwrap();
        assert!(goal < result && result < own && own < prompt, "{request}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_thread_of_three_generations_is_listed_from_any_of_its_tasks_and_carries_its_history() {
    let app = TestApp::spawn(1).await;
    let root = ended(&app, "threads", "Write a haiku about job queues.").await;
    app.client.submit(&json!({"user_id": "threads", "description": "Something unrelated."})).await.unwrap();
    let wait = [("prefer", "wait=20")];
    let second = expect(
        follow_up(&app, id(&root), None, &wait, &json!({"description": "Now write a limerick."})).await,
        StatusCode::OK,
    )
    .await;
    let third = expect(
        follow_up(&app, id(&second), None, &wait, &json!({"description": "Now compare the two."})).await,
        StatusCode::OK,
    )
    .await;
    for task in [&second, &third] {
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(task["thread_id"], root["id"], "{task}");
    }
    assert_eq!(second["parent_task_id"], root["id"]);
    assert_eq!(third["parent_task_id"], second["id"]);

    // From any task of the thread, newest first, and nothing else; pages too.
    let expected = [id(&third), id(&second), id(&root)];
    for member in [&root, &second, &third] {
        let thread = member["thread_id"].as_str().unwrap();
        let page =
            expect(app.http.get(app.url(&format!("/tasks?thread_id={thread}"))).send().await.unwrap(), StatusCode::OK)
                .await;
        let ids: Vec<&str> = page["items"].as_array().unwrap().iter().map(id).collect();
        assert_eq!(ids, expected);
    }
    let first = expect(
        app.http.get(app.url(&format!("/tasks?thread_id={}&limit=2", id(&root)))).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let rest = expect(
        app.http.get(app.url(&format!("/tasks?thread_id={}&limit=2&cursor={cursor}", id(&root)))).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let paged: Vec<&str> =
        first["items"].as_array().unwrap().iter().chain(rest["items"].as_array().unwrap()).map(id).collect();
    assert_eq!(paged, expected);
    // The other filters still apply.
    let elsewhere = expect(
        app.http.get(app.url(&format!("/tasks?thread_id={}&user_id=someone-else", id(&root)))).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(elsewhere["items"], json!([]));
    let malformed =
        expect(app.http.get(app.url("/tasks?thread_id=nope")).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert_eq!(malformed["field"], "thread_id", "{malformed}");

    // The third generation starts from the thread so far, condensed, then its parent's goal
    // and result.
    let seeded = context(&app, id(&third)).await;
    assert_eq!(seeded.len(), 3, "{seeded:?}");
    assert_eq!(seeded[0].0, "user");
    let digest = &seeded[0].1;
    assert!(digest.contains("Write a haiku about job queues."), "{digest}");
    assert!(digest.contains(root["result"].as_str().unwrap().split_whitespace().next().unwrap()), "{digest}");
    assert_eq!(seeded[1], ("user".to_owned(), "Now write a limerick.".to_owned()));
    assert_eq!(seeded[2], ("assistant".to_owned(), second["result"].as_str().unwrap().to_owned()));
    app.stop().await;
}

#[tokio::test]
async fn a_follow_up_of_a_partial_task_is_told_what_completed_and_what_failed() {
    let app = TestApp::spawn(1).await;
    let parent =
        ended(&app, "partial", "Write a haiku about job queues. Separately, research retry policies [offline: fail].")
            .await;
    assert_eq!(parent["status"], "partial", "{parent}");
    let task = expect(
        follow_up(
            &app,
            id(&parent),
            None,
            &[("prefer", "wait=20")],
            &json!({"description": "Summarise what you have."}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(task["status"], "completed", "{task}");
    let seeded = context(&app, id(&task)).await;
    let (role, outcome) = seeded.last().unwrap();
    assert_eq!(role, "assistant");
    assert!(outcome.contains(parent["result"].as_str().unwrap()), "what completed: {outcome}");
    assert!(outcome.contains("What failed") && outcome.contains("Research retry policies"), "{outcome}");
    app.stop().await;
}

#[tokio::test]
async fn only_the_parents_user_may_follow_it_up_it_must_have_ended_and_refusals_write_nothing() {
    let mut settings = test_settings();
    settings.auth.mode = Some(AuthMode::Required);
    // No worker: tasks stay pending until cancelled, which ends them without a model.
    let app = TestApp::spawn_with(settings, 0).await;
    let keys = KeyStore::new(app.db.clone());
    let ann = keys.create("ann", "", false).await.unwrap().secret;
    let bob = keys.create("bob", "", false).await.unwrap().secret;
    let admin = keys.create("ops", "", true).await.unwrap().secret;
    let submit = |key: &str, description: &str| {
        let request = app.http.post(app.url("/tasks")).bearer_auth(key).json(&json!({"description": description}));
        async move { expect(request.send().await.unwrap(), StatusCode::ACCEPTED).await }
    };
    let parent = submit(&ann, "Write a haiku.").await;
    let cancel = app.http.post(app.url(&format!("/tasks/{}/cancel", id(&parent)))).bearer_auth(&ann);
    expect(cancel.send().await.unwrap(), StatusCode::OK).await;
    let running = submit(&ann, "Still pending.").await;
    let counts = || async {
        (
            app.count("SELECT count(*) FROM tasks").await,
            app.count("SELECT count(*) FROM task_events").await,
            app.count("SELECT count(*) FROM task_messages").await,
        )
    };
    let before = counts().await;
    let body = json!({"description": "Now a shorter one."});

    // Another user's task is not there, as for a task that does not exist.
    let stranger = expect(follow_up(&app, id(&parent), Some(&bob), &[], &body).await, StatusCode::NOT_FOUND).await;
    let unknown = Uuid::new_v4().to_string();
    let missing = expect(follow_up(&app, &unknown, Some(&ann), &[], &body).await, StatusCode::NOT_FOUND).await;
    assert_eq!(stranger["type"], missing["type"]);
    assert_eq!(stranger["type"], "urn:orchestrator:problem:not-found");
    let malformed = expect(follow_up(&app, "nope", Some(&ann), &[], &body).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(malformed["field"], "id");

    // A parent still under way has no outcome to continue from.
    let early = expect(follow_up(&app, id(&running), Some(&ann), &[], &body).await, StatusCode::CONFLICT).await;
    assert_eq!(early["type"], "urn:orchestrator:problem:conflict");
    assert!(early["detail"].as_str().unwrap().contains("pending"), "{early}");

    // Every field is checked as POST /tasks checks it, and named.
    let own_context: Vec<Value> = (0..48).map(|n| json!({"role": "user", "content": format!("m{n}")})).collect();
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (json!({"description": "   "}), StatusCode::UNPROCESSABLE_ENTITY, "description"),
        (json!({"description": "x".repeat(8001)}), StatusCode::UNPROCESSABLE_ENTITY, "description"),
        (json!({}), StatusCode::BAD_REQUEST, "description"),
        (json!({"description": "d", "user_id": "ann"}), StatusCode::BAD_REQUEST, "user_id"),
        (json!({"description": "d", "colour": 1}), StatusCode::BAD_REQUEST, "colour"),
        (json!({"description": "d", "metadata": [1]}), StatusCode::UNPROCESSABLE_ENTITY, "metadata"),
        (json!({"description": "d", "priority": "urgent"}), StatusCode::BAD_REQUEST, "priority"),
        (json!({"description": "d", "priority": "high"}), StatusCode::FORBIDDEN, "priority"),
        (json!({"description": "d", "max_cost_usd": -1}), StatusCode::UNPROCESSABLE_ENTITY, "max_cost_usd"),
        (json!({"description": "d", "max_tokens": -1}), StatusCode::UNPROCESSABLE_ENTITY, "max_tokens"),
        (json!({"description": "d", "max_attempts": 11}), StatusCode::UNPROCESSABLE_ENTITY, "max_attempts"),
        (
            json!({"description": "d", "context": [{"role": "tool", "content": "x"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "context[0].role",
        ),
        (json!({"description": "d", "context": own_context}), StatusCode::UNPROCESSABLE_ENTITY, "context"),
        (
            json!({"description": "d", "callback_url": "ftp://example.com/x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "callback_url",
        ),
        (json!({"description": "d", "agent_hints": ["wizard"]}), StatusCode::UNPROCESSABLE_ENTITY, "agent_hints[0]"),
        (json!({"description": "d", "task_type": "Report"}), StatusCode::UNPROCESSABLE_ENTITY, "task_type"),
        (
            json!({"description": "d", "require_approval": ["nope"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "require_approval[0]",
        ),
        (json!({"description": "d", "warm_start": "yes"}), StatusCode::BAD_REQUEST, "warm_start"),
    ];
    for (body, status, field) in cases {
        let problem = expect(follow_up(&app, id(&parent), Some(&ann), &[], &body).await, status).await;
        assert_eq!(problem["field"], field, "{body}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(field), "{problem}");
    }
    assert_eq!(counts().await, before, "a refused follow-up writes nothing");
    assert_eq!(app.queued_jobs().await, 2, "and enqueues nothing");

    // The parent's user may; so may an admin, and the follow-up is still the parent's user's.
    let own = expect(follow_up(&app, id(&parent), Some(&ann), &[], &body).await, StatusCode::ACCEPTED).await;
    let admins = expect(follow_up(&app, id(&parent), Some(&admin), &[], &body).await, StatusCode::ACCEPTED).await;
    for task in [&own, &admins] {
        assert_eq!((task["user_id"].as_str(), task["status"].as_str()), (Some("ann"), Some("pending")), "{task}");
        assert_eq!(task["parent_task_id"], parent["id"]);
    }
    // A cancelled parent is an ended one: the follow-up is told so.
    let seeded = context(&app, id(&own)).await;
    assert_eq!(seeded.last().unwrap(), &("assistant".to_owned(), "It was cancelled before it finished.".to_owned()));
    // Bob cannot list ann's thread either: the list is his.
    let listed = app.http.get(app.url(&format!("/tasks?thread_id={}", id(&parent)))).bearer_auth(&bob);
    assert_eq!(expect(listed.send().await.unwrap(), StatusCode::OK).await["items"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_replays_a_follow_up_and_refuses_another_body_or_parent() {
    let app = TestApp::spawn(0).await;
    let mut parents = Vec::new();
    for description in ["First.", "Second."] {
        let task = app.client.submit(&json!({"user_id": "idem", "description": description})).await.unwrap();
        app.client.cancel(task.id).await.unwrap();
        parents.push(task.id.to_string());
    }
    let key = [("idempotency-key", "follow-up-1")];
    let body = json!({"description": "Go on."});
    let first = expect(follow_up(&app, &parents[0], None, &key, &body).await, StatusCode::ACCEPTED).await;
    let replay = follow_up(&app, &parents[0], None, &key, &body).await;
    assert_eq!(replay.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    assert_eq!(expect(replay, StatusCode::ACCEPTED).await["id"], first["id"]);

    let other_body = json!({"description": "Go elsewhere."});
    expect(follow_up(&app, &parents[0], None, &key, &other_body).await, StatusCode::CONFLICT).await;
    expect(follow_up(&app, &parents[1], None, &key, &body).await, StatusCode::CONFLICT).await;
    assert_eq!(app.count("SELECT count(*) FROM tasks WHERE parent_task_id IS NOT NULL").await, 1);
    // Two parents' plan jobs and one follow-up's: a replay enqueued nothing.
    assert_eq!(app.queued_jobs().await, 3);
    app.stop().await;
}

#[tokio::test]
async fn a_follow_up_that_would_overspend_its_own_budget_fails_with_budget_exceeded() {
    // Each offline call may cost up to $0.10 (100 output tokens at $0.001).
    let app = TestApp::spawn_with(offline_priced(100), 1).await;
    let parent = ended(&app, "budgeted", PARENT_GOAL).await;
    assert_eq!(parent["status"], "completed", "{parent}");
    let body = json!({"description": "Now make it shorter.", "max_cost_usd": 0.05});
    let task = expect(follow_up(&app, id(&parent), None, &[("prefer", "wait=20")], &body).await, StatusCode::OK).await;
    assert_eq!(
        (task["status"].as_str(), task["error_code"].as_str()),
        (Some("failed"), Some("budget_exceeded")),
        "{task}"
    );
    assert_eq!(task["cost_usd"], 0.0, "no call fitted: {task}");
    assert_eq!(task["reserved_cost_usd"], 0.0);
    // The parent's spend is its own.
    let again = app.client.task(id(&parent).parse().unwrap()).await.unwrap();
    assert_eq!(again.cost_usd, parent["cost_usd"].as_f64().unwrap());
    app.stop().await;
}

#[tokio::test]
async fn a_follow_up_pays_from_the_task_creation_rate_limit() {
    let mut settings = test_settings();
    settings.rate_limits.create_per_sec = 0.001;
    settings.rate_limits.create_burst = 2;
    let app = TestApp::spawn_with(settings, 0).await;
    let parent = app.client.submit(&json!({"user_id": "limited", "description": "Write."})).await.unwrap();
    app.client.cancel(parent.id).await.unwrap();
    let body = json!({"description": "Go on."});
    let accepted = follow_up(&app, &parent.id.to_string(), None, &[], &body).await;
    assert_eq!(accepted.headers()["ratelimit-remaining"], "0");
    expect(accepted, StatusCode::ACCEPTED).await;
    let refused = follow_up(&app, &parent.id.to_string(), None, &[], &body).await;
    assert!(refused.headers().contains_key("retry-after"));
    expect(refused, StatusCode::TOO_MANY_REQUESTS).await;
    app.stop().await;
}
