//! Trust between tenants and towards the operator's secrets: what `--help` and stored keys
//! reveal, the DNS-rebinding guard without keys, per-user limits on priority and event
//! streams, the per-user plan cache, and errors that name no internal address.

use std::{process::Command, time::Duration};

use orchestrator::{
    app::App,
    auth::{AuthMode, KeyStore},
    config::LlmProvider,
};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, test_settings};

/// `method path` with an optional key and JSON body: the status, headers and JSON body.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, header::HeaderMap, Value) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("a response");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

fn is_problem(headers: &header::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v == "application/problem+json")
}

#[test]
fn help_never_shows_the_current_value_of_a_secret_or_a_url() {
    let markers = [
        ("DATABASE_URL", "postgres://marker-db-user:marker-db-password@marker-db-host/db"),
        ("REDIS_URL", "redis://:marker-redis-password@marker-redis-host:6379"),
        ("BOOTSTRAP_ADMIN_KEY", "marker-bootstrap-admin-key-value"),
        ("DISPATCH_SECRET", "marker-dispatch-secret-value"),
        ("WEBHOOK_SECRET", "marker-webhook-secret-value"),
        ("LLM_API_KEY", "marker-llm-api-key"),
        ("LLM_BASE_URL", "https://marker-llm-host/v1?key=marker-llm-query"),
        ("EMBEDDING_API_KEY", "marker-embedding-api-key"),
        ("EMBEDDING_BASE_URL", "https://marker-embedding-host/v1"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://marker-otel-user:marker-otel-password@marker-otel-host"),
    ];
    for command in [
        &["serve", "--help"][..],
        &["worker", "--help"],
        &["run", "--help"],
        &["migrate", "--help"],
        &["keys", "create", "--help"],
        &["users", "limits", "set", "--help"],
    ] {
        let mut orchestrator = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        orchestrator.args(command);
        for (name, value) in markers {
            orchestrator.env(name, value);
        }
        let output = orchestrator.output().expect("the binary runs");
        assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
        let help = String::from_utf8_lossy(&output.stdout);
        // The settings are listed, with their variables, so their values would show here.
        assert!(help.contains("DATABASE_URL") && help.contains("DISPATCH_SECRET"), "{command:?}: {help}");
        assert!(!help.contains("marker"), "{command:?} shows a current value:\n{help}");
    }
}

#[tokio::test]
async fn a_new_bootstrap_admin_key_revokes_the_previous_one_and_keeps_none_of_it_in_clear() {
    let (a, b) = ("bootstrap-key-a-0123456789abcdef", "bootstrap-key-b-0123456789abcdef");
    let mut settings = test_settings();
    settings.auth.mode = Some(AuthMode::Required);
    settings.auth.cache_secs = 0;
    settings.auth.bootstrap_admin_key = Some(a.into());
    let app = TestApp::spawn_with(settings.clone(), 0).await;
    let (status, _, _) = call(&app, Method::GET, "/workers", Some(a), None).await;
    assert_eq!(status, StatusCode::OK);

    // Another process of the deployment starts with the replaced value.
    settings.auth.bootstrap_admin_key = Some(b.into());
    settings.data_dir = crate::helpers::data_dir(&format!("{}-second", Uuid::new_v4().simple()));
    drop(App::connect(settings.clone()).await.expect("a start with key B"));
    let (status, _, _) = call(&app, Method::GET, "/workers", Some(a), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "key A was replaced");
    let (status, _, _) = call(&app, Method::GET, "/workers", Some(b), None).await;
    assert_eq!(status, StatusCode::OK);
    // A restart with B changes nothing.
    drop(App::connect(settings.clone()).await.expect("a second start with key B"));
    let _ = std::fs::remove_dir_all(&settings.data_dir);
    let (status, _, _) = call(&app, Method::GET, "/workers", Some(b), None).await;
    assert_eq!(status, StatusCode::OK);

    // Neither chosen password has any character in clear; a generated key keeps `orch_` and
    // 8 hex digits.
    let created = KeyStore::new(app.db.clone()).create("ann", "", false).await.unwrap().secret;
    let rows: Vec<(String, bool, bool)> =
        sqlx::query_as("SELECT prefix, bootstrap, revoked_at IS NOT NULL FROM api_keys ORDER BY created_at")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![("bootstrap".into(), true, true), ("bootstrap".into(), true, false), (created[..13].into(), false, false)]
    );
    let listed = app.count("SELECT count(*) FROM api_keys WHERE prefix LIKE 'bootstrap-key%'").await;
    assert_eq!(listed, 0);
    app.stop().await;
}

#[tokio::test]
async fn without_keys_only_loopback_host_names_are_served() {
    let app = TestApp::spawn(0).await;
    let with_host = |host: &'static str| app.http.get(app.url("/tasks?user_id=ann")).header(header::HOST, host).send();

    let refused = with_host("evil.example:8000").await.unwrap();
    assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
    assert!(is_problem(refused.headers()));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["field"], "Host", "{body}");
    assert_eq!(body["type"], "urn:orchestrator:problem:misdirected-request", "{body}");
    for host in ["localhost:1234", "app.localhost:8000", "127.0.0.1:8000", "[::1]:8000"] {
        let served = with_host(host).await.unwrap();
        assert_eq!(served.status(), StatusCode::OK, "{host}");
    }
    // Without keys everyone acts as an admin, and so may ask for `high`.
    let task = json!({"user_id": "ann", "description": "Write a haiku.", "priority": "high"});
    let (status, _, body) = call(&app, Method::POST, "/tasks", None, Some(task)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn with_keys_the_host_is_not_checked() {
    let mut settings = test_settings();
    settings.auth.mode = Some(AuthMode::Required);
    let app = TestApp::spawn_with(settings, 0).await;
    let response = app.http.get(app.url("/healthz")).header(header::HOST, "api.example.com").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn high_priority_is_for_admins_and_users_allowed_it() {
    let mut settings = test_settings();
    settings.auth.mode = Some(AuthMode::Required);
    let app = TestApp::spawn_with(settings, 0).await;
    let keys = KeyStore::new(app.db.clone());
    let ann = keys.create("ann", "", false).await.unwrap().secret;
    let admin = keys.create("ops", "", true).await.unwrap().secret;
    let high = json!({"description": "Write a haiku.", "priority": "high"});

    let (status, headers, body) = call(&app, Method::POST, "/tasks", Some(&ann), Some(high.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(is_problem(&headers));
    assert_eq!(body["field"], "priority", "{body}");
    // Through metadata, the older way to ask, too.
    let via_metadata = json!({"description": "Write a haiku.", "metadata": {"priority": "high"}});
    let (status, _, body) = call(&app, Method::POST, "/tasks", Some(&ann), Some(via_metadata)).await;
    assert_eq!((status, &body["field"]), (StatusCode::FORBIDDEN, &json!("priority")), "{body}");
    let normal = json!({"description": "Write a haiku.", "priority": "normal"});
    let (status, _, _) = call(&app, Method::POST, "/tasks", Some(&ann), Some(normal)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(app.count("SELECT count(*) FROM tasks WHERE priority = 'high'").await, 0, "nothing was stored");

    let for_ann = json!({"user_id": "ann", "description": "Write a haiku.", "priority": "high"});
    let (status, _, body) = call(&app, Method::POST, "/tasks", Some(&admin), Some(for_ann)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // An operator allows it.
    let set = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["users", "limits", "set", "ann", "--max-priority", "high"])
        .env("DATABASE_URL", &app.app.settings.database_url)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    assert!(String::from_utf8_lossy(&set.stdout).contains("max_priority=high"));
    let (status, _, body) = call(&app, Method::POST, "/tasks", Some(&ann), Some(high)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["priority"], "high");
    app.stop().await;
}

/// The `from_cache` flag of a task's `task_planned` event, once it is planned.
async fn planned_from_cache(app: &TestApp, task: Uuid) -> bool {
    eventually(Duration::from_secs(20), "the task to be planned", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT (data->>'from_cache')::boolean FROM task_events WHERE task_id = $1 AND kind = 'task_planned'",
        )
        .bind(task)
        .fetch_optional(&app.db)
        .await
        .unwrap()
    })
    .await
}

#[tokio::test]
async fn one_users_plan_is_never_reused_for_another() {
    let app = TestApp::spawn(1).await;
    let client = &app.client;
    let submit = |user: &'static str| {
        let body = json!({"user_id": user, "description": "Research job queues and write a summary."});
        async move { client.submit(&body).await.expect("202 Accepted").id }
    };
    let first = submit("alice").await;
    assert!(!planned_from_cache(&app, first).await);
    let other = submit("bob").await;
    assert!(!planned_from_cache(&app, other).await, "bob must not get alice's plan");
    // The cache works: alice's second identical task reuses her plan.
    let again = submit("alice").await;
    assert!(planned_from_cache(&app, again).await);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_model_call_leaves_no_internal_address_in_the_task() {
    // A port that refuses connections: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut settings = test_settings();
    settings.llm_provider = LlmProvider::Openai;
    settings.llm_base_url = Some(format!("http://127.0.0.1:{closed}/v1"));
    settings.llm_api_key = Some("sk-test".into());
    settings.llm_max_retries = 0;
    settings.planner = orchestrator::config::PlannerKind::Heuristic;
    let app = TestApp::spawn_with(settings, 1).await;
    let body = json!({"user_id": "ann", "description": "Write a haiku.", "max_attempts": 1});
    let id = app.client.submit(&body).await.expect("202 Accepted").id;
    let task = app.client.wait(id, Duration::from_secs(30)).await.expect("the task ends").raw;
    assert_eq!(task["status"], "failed", "{task}");
    let error = task["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("model provider is unavailable"), "{error}");
    // Nothing the tenant can read about the task names the address: not the task, not its
    // steps, not its events.
    let events: Vec<Value> = sqlx::query_scalar("SELECT data FROM task_events WHERE task_id = $1")
        .bind(id)
        .fetch_all(&app.db)
        .await
        .unwrap();
    for shown in [task.to_string(), Value::Array(events).to_string()] {
        assert!(!shown.contains("127.0.0.1") && !shown.contains(&closed.to_string()), "{shown}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_user_may_hold_16_event_streams_and_closing_one_frees_its_slot() {
    let mut settings = test_settings();
    settings.auth.mode = Some(AuthMode::Required);
    settings.offline_llm_delay_ms = 60_000; // the tasks keep running, so streams stay open
    let app = TestApp::spawn_with(settings, 1).await;
    let keys = KeyStore::new(app.db.clone());
    let (ann, bob) =
        (keys.create("ann", "", false).await.unwrap().secret, keys.create("bob", "", false).await.unwrap().secret);
    let submit = |key: &str| {
        let request = app.http.post(app.url("/tasks")).bearer_auth(key).json(&json!({"description": "Write a haiku."}));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned() }
    };
    let (ann_task, bob_task) = (submit(&ann).await, submit(&bob).await);
    let open = |key: &str, task: &str| app.http.get(app.url(&format!("/tasks/{task}/events"))).bearer_auth(key).send();

    let mut streams = Vec::new();
    for i in 0..16 {
        let stream = open(&ann, &ann_task).await.unwrap();
        assert_eq!(stream.status(), StatusCode::OK, "stream {i}");
        streams.push(stream);
    }
    let refused = open(&ann, &ann_task).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(is_problem(refused.headers()));
    assert!(refused.headers().get(header::RETRY_AFTER).is_some());
    drop(refused);
    // Per user: bob is not held back by ann's streams.
    let bobs = open(&bob, &bob_task).await.unwrap();
    assert_eq!(bobs.status(), StatusCode::OK);

    drop(streams.pop());
    eventually(Duration::from_secs(40), "the closed stream's slot to be given back", || async {
        let stream = open(&ann, &ann_task).await.unwrap();
        (stream.status() == StatusCode::OK).then_some(stream)
    })
    .await;
    drop(streams);
    drop(bobs);
    app.stop().await;
}
