//! API keys: who may see and do what, with the server run as `serve` runs it (AUTH=required).

use std::process::Command;

use orchestrator::auth::{AuthMode, KeyStore};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, test_settings};

/// A server that requires keys, with key ann and key bob for two users and an admin key.
struct Keys {
    ann: String,
    bob: String,
    admin: String,
}

async fn guarded_app(workers: usize) -> (TestApp, Keys) {
    let mut settings = test_settings();
    settings.auth.mode = Some(AuthMode::Required);
    settings.auth.cache_secs = 0; // a revoked key must stop working at once in these tests
    let app = TestApp::spawn_with(settings, workers).await;
    let store = KeyStore::new(app.db.clone());
    let keys = Keys {
        ann: store.create("ann", "laptop", false).await.unwrap().secret,
        bob: store.create("bob", "", false).await.unwrap().secret,
        admin: store.create("ops", "", true).await.unwrap().secret,
    };
    (app, keys)
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("a response");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn two_users_cannot_see_or_touch_each_others_tasks_or_memories() {
    let (app, keys) = guarded_app(0).await;
    let (ann, bob) = (Some(keys.ann.as_str()), Some(keys.bob.as_str()));

    // The key names the user: no user_id needed, and naming oneself is fine.
    let (status, task) = call(&app, Method::POST, "/tasks", ann, Some(json!({"description": "Write a haiku."}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert_eq!(task["user_id"], "ann");
    let (status, _) =
        call(&app, Method::POST, "/tasks", ann, Some(json!({"user_id": "ann", "description": "Again."}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = task["id"].as_str().unwrap().to_owned();

    // Naming another user is a 403 naming the field, and stores nothing.
    let before = app.count("SELECT count(*) FROM tasks").await;
    let (status, problem) =
        call(&app, Method::POST, "/tasks", bob, Some(json!({"user_id": "ann", "description": "Spend ann's money."})))
            .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["field"], "user_id");
    assert_eq!(app.count("SELECT count(*) FROM tasks").await, before);

    // Another user's task id answers exactly as an unknown id does.
    let unknown = uuid::Uuid::now_v7();
    for path in ["", "/cost", "/tool-calls", "/events"] {
        let (status, problem) = call(&app, Method::GET, &format!("/tasks/{id}{path}"), bob, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET /tasks/{{id}}{path}: {problem}");
        let (_, unknown_problem) = call(&app, Method::GET, &format!("/tasks/{unknown}{path}"), bob, None).await;
        assert_eq!(problem["title"], unknown_problem["title"]);
        // Only the status: the event stream of a pending task stays open.
        let response =
            app.http.get(app.url(&format!("/tasks/{id}{path}"))).bearer_auth(&keys.ann).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "ann reads her own task at {path}");
    }
    let (status, _) = call(&app, Method::POST, &format!("/tasks/{id}/cancel"), bob, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let status: String =
        sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1::uuid").bind(&id).fetch_one(&app.db).await.unwrap();
    assert_eq!(status, "pending", "bob's cancel changed nothing");

    // Listings are scoped to the key's user; asking for another's is a 403.
    let (_, page) = call(&app, Method::GET, "/tasks", bob, None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "{page}");
    let (_, page) = call(&app, Method::GET, "/tasks", ann, None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    let (status, problem) = call(&app, Method::GET, "/tasks?user_id=ann", bob, None).await;
    assert_eq!((status, problem["field"].as_str()), (StatusCode::FORBIDDEN, Some("user_id")));

    // Memories: stored under the key's user, invisible to the other.
    let (status, item) =
        call(&app, Method::POST, "/memory", ann, Some(json!({"content": "Ann's launch codename is BLUEBIRD."}))).await;
    assert_eq!(status, StatusCode::CREATED, "{item}");
    assert_eq!(item["user_id"], "ann");
    let item_path = format!("/memory/{}", item["id"]);
    let (status, found) =
        call(&app, Method::POST, "/memory/search", bob, Some(json!({"query": "launch codename BLUEBIRD"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["items"].as_array().unwrap().len(), 0, "bob finds none of ann's memories: {found}");
    let (_, found) =
        call(&app, Method::POST, "/memory/search", ann, Some(json!({"query": "launch codename BLUEBIRD"}))).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
    let (status, _) = call(&app, Method::GET, &item_path, bob, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, Method::DELETE, &item_path, bob, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, Method::GET, &format!("{item_path}?user_id=ann"), bob, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        call(&app, Method::POST, "/memory/search", bob, Some(json!({"user_id": "ann", "query": "codename"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&app, Method::GET, &item_path, ann, None).await;
    assert_eq!(status, StatusCode::OK);

    app.stop().await;
}

#[tokio::test]
async fn an_admin_key_acts_for_everyone_and_only_it_sees_the_workers() {
    let (app, keys) = guarded_app(0).await;
    let admin = Some(keys.admin.as_str());
    let (status, task) =
        call(&app, Method::POST, "/tasks", admin, Some(json!({"user_id": "carol", "description": "Plan a trip."})))
            .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert_eq!(task["user_id"], "carol");
    call(&app, Method::POST, "/tasks", Some(&keys.ann), Some(json!({"description": "Write a haiku."}))).await;

    let (_, page) = call(&app, Method::GET, "/tasks", admin, None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "an admin lists everyone's tasks: {page}");
    let (_, page) = call(&app, Method::GET, "/tasks?user_id=carol", admin, None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (status, _) = call(&app, Method::GET, &format!("/tasks/{}", task["id"].as_str().unwrap()), admin, None).await;
    assert_eq!(status, StatusCode::OK);

    let (status, problem) = call(&app, Method::GET, "/workers", Some(&keys.ann), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let (status, _) = call(&app, Method::GET, "/workers", admin, None).await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn requests_without_a_valid_key_get_401_but_probes_and_docs_stay_open() {
    let (app, keys) = guarded_app(0).await;
    for key in [None, Some("orch_not-a-key"), Some("")] {
        let (status, problem) = call(&app, Method::GET, "/tasks", key, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key:?}: {problem}");
        assert_eq!(problem["type"], "urn:orchestrator:problem:unauthorized");
    }
    let response = app.http.post(app.url("/tasks")).json(&json!({"description": "d"})).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let response = app.http.get(app.url("/agents")).header("authorization", "Basic YW5uOnB3").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "only bearer keys are accepted");
    assert_eq!(app.count("SELECT count(*) FROM tasks").await, 0);

    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/"] {
        let (status, _) = call(&app, Method::GET, open, None, None).await;
        assert_eq!(status, StatusCode::OK, "{open} needs no key");
    }

    // A revoked key stops working (the cache is off in this app).
    let store = KeyStore::new(app.db.clone());
    let ann = store.list(Some("ann")).await.unwrap().remove(0);
    assert!(keys.ann.starts_with(&ann.prefix), "the listing shows the key's prefix, not the key");
    let (status, _) = call(&app, Method::GET, "/tasks", Some(&keys.ann), None).await;
    assert_eq!(status, StatusCode::OK);
    store.revoke(ann.id).await.unwrap();
    let (status, _) = call(&app, Method::GET, "/tasks", Some(&keys.ann), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn a_bootstrap_admin_key_from_the_environment_works_from_the_first_start() {
    let mut settings = test_settings();
    settings.auth.mode = Some(AuthMode::Required);
    settings.auth.bootstrap_admin_key = Some("bootstrap-admin-key-for-the-tests".into());
    let app = TestApp::spawn_with(settings, 0).await;
    let (status, _) = call(&app, Method::GET, "/workers", Some("bootstrap-admin-key-for-the-tests"), None).await;
    assert_eq!(status, StatusCode::OK);
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT key_hash FROM api_keys").fetch_all(&app.db).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].windows(9).any(|w| w == b"bootstrap"), "only a hash is stored");
    app.stop().await;
}

#[tokio::test]
async fn keys_made_on_the_command_line_work_and_are_printed_once() {
    let (app, _) = guarded_app(1).await;
    let orchestrator = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .args(args)
            .env("DATABASE_URL", &app.app.settings.database_url)
            .env("RUST_LOG", "off")
            .output()
            .unwrap()
    };
    let created = orchestrator(&["keys", "create", "--user", "dave", "--name", "ci"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("orch_") && !key.contains(char::is_whitespace), "only the key on stdout: {key}");

    // The CLI client takes the key from the environment and the user from the key.
    // Through tokio: the server runs on this test's runtime, which a blocking wait would stall.
    let submitted = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["submit", "Write a haiku about keys.", "--wait", "--url", &format!("http://{}", app.addr)])
        .env("ORCHESTRATOR_API_KEY", &key)
        .env_remove("ORCHESTRATOR_USER")
        .output()
        .await
        .unwrap();
    assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
    assert_eq!(app.count("SELECT count(*) FROM tasks WHERE user_id = 'dave' AND status = 'completed'").await, 1);

    let listed = String::from_utf8(orchestrator(&["keys", "list", "--user", "dave"]).stdout).unwrap();
    assert!(listed.contains("dave") && listed.contains(&key[..13]) && !listed.contains(&key), "{listed}");
    let id = listed.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    assert!(orchestrator(&["keys", "revoke", &id]).status.success());
    let (status, _) = call(&app, Method::GET, "/tasks", Some(&key), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[test]
fn run_without_auth_refuses_to_listen_beyond_loopback() {
    let settings = test_settings();
    let output = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("run")
        .env("DATABASE_URL", &settings.database_url)
        .env("REDIS_URL", &settings.redis_url)
        .env("REDIS_PREFIX", &settings.redis_prefix)
        .env("DATA_DIR", &settings.data_dir)
        .env("BIND_ADDR", "0.0.0.0:0")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AUTH=disabled") && stderr.contains("0.0.0.0"), "{stderr}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(crate::helpers::drop_database(&settings.database_url));
    let _ = std::fs::remove_dir_all(&settings.data_dir);
}

#[tokio::test]
async fn each_keys_user_has_its_own_rate_limit() {
    let mut settings = test_settings();
    settings.auth.mode = Some(AuthMode::Required);
    // A trickle: nothing refills during the test, so the burst alone decides.
    settings.rate_limits.create_per_sec = 0.01;
    settings.rate_limits.create_burst = 3;
    let app = TestApp::spawn_with(settings, 0).await;
    let store = KeyStore::new(app.db.clone());
    let ann = store.create("ann", "", false).await.unwrap().secret;
    let bob = store.create("bob", "", false).await.unwrap().secret;

    let mut accepted = 0;
    for _ in 0..6 {
        let (status, _) = call(&app, Method::POST, "/tasks", Some(&ann), Some(json!({"description": "d"}))).await;
        match status {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!((3..=4).contains(&accepted), "ann got {accepted} of a burst of 3");
    // Ann's spent burst is hers alone.
    let (status, _) = call(&app, Method::POST, "/tasks", Some(&bob), Some(json!({"description": "d"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(app.count("SELECT count(*) FROM tasks WHERE user_id = 'ann'").await, accepted);
    app.stop().await;
}

#[tokio::test]
async fn browsers_of_allowed_origins_may_call_the_api() {
    let mut settings = test_settings();
    settings.auth.mode = Some(AuthMode::Required);
    settings.cors_allowed_origins = vec!["https://app.example.com".into()];
    let app = TestApp::spawn_with(settings, 0).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(Method::OPTIONS, app.url("/tasks"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    // The preflight carries no key and must still be answered.
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    let methods = allowed.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let other = preflight("https://evil.example.net").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let response = app.http.get(app.url("/healthz")).header("origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "https://app.example.com");
    app.stop().await;
}
