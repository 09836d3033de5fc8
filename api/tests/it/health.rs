//! Liveness, readiness and start-up errors.

use serde_json::Value;

use crate::helpers::{Proxy, TestApp, test_settings, upstream, via};
use orchestrator::app::App;

#[tokio::test]
async fn healthz_and_readyz_answer_when_everything_is_up() {
    let app = TestApp::spawn(0).await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"], serde_json::json!({"postgres": "ok", "redis": "ok"}));
    app.stop().await;
}

#[tokio::test]
async fn readyz_names_redis_when_it_is_down_and_healthz_still_answers() {
    let mut settings = test_settings();
    let proxy = Proxy::start(upstream(&settings.redis_url).await).await;
    settings.redis_url = via(&settings.redis_url, &proxy);
    let app = TestApp::spawn_with(settings, 0).await;
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status().as_u16(), 200);

    proxy.cut();
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["redis"], "unavailable", "{body}");
    assert_eq!(body["checks"]["postgres"], "ok", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("redis"), "{body}");
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status().as_u16(), 200);
    // A submission while Redis is down is refused clearly, not with a 500.
    let refused = app
        .http
        .post(app.url("/tasks"))
        .json(&serde_json::json!({"user_id": "u", "description": "d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    app.stop().await;
}

#[tokio::test]
async fn readyz_names_postgres_when_it_is_down() {
    let mut settings = test_settings();
    let proxy = Proxy::start(upstream(&settings.database_url).await).await;
    settings.database_url = via(&settings.database_url, &proxy);
    let app = TestApp::spawn_with(settings, 0).await;
    proxy.cut();
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"], "unavailable", "{body}");
    assert_eq!(body["checks"]["redis"], "ok", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn start_up_names_the_dependency_it_cannot_reach() {
    let mut settings = test_settings();
    settings.database_url = "postgres://postgres@127.0.0.1:1/nothing".into();
    let err = App::connect(settings).await.err().expect("no database").to_string();
    assert!(err.starts_with("cannot reach Postgres at postgres://postgres@127.0.0.1:1/nothing"), "{err}");

    let mut settings = test_settings();
    settings.redis_url = "redis://127.0.0.1:1".into();
    let db = settings.database_url.clone();
    let err = App::connect(settings).await.err().expect("no redis").to_string();
    assert!(err.starts_with("cannot reach Redis at redis://127.0.0.1:1"), "{err}");
    crate::helpers::drop_database(&db).await;
}

#[test]
fn the_binary_prints_one_line_naming_the_unreachable_database() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("migrate")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: cannot reach Postgres at postgres://postgres@127.0.0.1:1/nothing"), "{stderr}");
}
