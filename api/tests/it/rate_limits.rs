//! Rate limits against the real server, real Redis and a fake provider: per-user bursts by
//! route class, Redis outages (fail closed and fail open), the per-IP guard with and without
//! a trusted proxy, and the shared upstream limit that makes model calls queue.
//!
//! Rates are set so refill during a test is negligible (one request per 100 s), and results
//! are counted (accepted versus refused) rather than timed.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use orchestrator::{
    config::{LlmProvider, PlannerKind},
    ratelimit::{HttpLimiter, Limit, RouteClass},
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::{
    fake_llm::{FakeOpenAi, answer},
    helpers::{Proxy, TestApp, eventually, redis_url, test_settings, upstream, via},
};

/// One request per 100 s: nothing refills while a test runs.
const SLOW: f64 = 0.01;

fn header(response: &Response, name: &str) -> Option<u64> {
    response.headers().get(name).map(|v| v.to_str().unwrap().parse().unwrap_or_else(|_| panic!("{name}: {v:?}")))
}

/// The value of one sample of `/metrics`, e.g. `orchestrator_rate_limited_total{class="create"}`.
async fn metric(app: &TestApp, sample: &str) -> f64 {
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "{body}");
    body
}

fn task_body(n: usize) -> Value {
    json!({"user_id": "test-user", "description": format!("Write note {n}.")})
}

#[tokio::test]
async fn a_burst_of_task_creations_is_cut_at_the_burst_with_429s_that_say_when_to_retry() {
    let mut settings = test_settings();
    settings.rate_limits.create_per_sec = SLOW;
    settings.rate_limits.create_burst = 5;
    let app = TestApp::spawn_with(settings, 0).await;

    let responses = join_all((0..9).map(|n| app.http.post(app.url("/tasks")).json(&task_body(n)).send())).await;
    let (mut accepted, mut refused) = (0_i64, 0_i64);
    for response in responses {
        let response = response.unwrap();
        assert_eq!(header(&response, "ratelimit-limit"), Some(5));
        let remaining = header(&response, "ratelimit-remaining").expect("RateLimit-Remaining");
        let reset = header(&response, "ratelimit-reset").expect("RateLimit-Reset");
        assert!(remaining < 5, "{remaining}");
        // Full again after at most five intervals of 100 s.
        assert!((1..=500).contains(&reset), "{reset}");
        match response.status() {
            StatusCode::ACCEPTED => {
                accepted += 1;
                assert_eq!(response.headers().get("retry-after"), None);
            }
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(remaining, 0);
                let retry = header(&response, "retry-after").expect("Retry-After");
                assert!((1..=100).contains(&retry), "one interval at most: {retry}");
                let body = problem(response, StatusCode::TOO_MANY_REQUESTS).await;
                assert_eq!(body["type"], "urn:orchestrator:problem:rate-limited");
                assert!(body["detail"].as_str().unwrap().contains("task creation"), "{body}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!((5..=6).contains(&accepted), "accepted {accepted} of 9 with a burst of 5");
    assert_eq!(accepted + refused, 9);
    assert_eq!(app.count("SELECT count(*) FROM tasks").await, accepted, "refused requests leave nothing behind");
    assert_eq!(metric(&app, r#"orchestrator_rate_limited_total{class="create"}"#).await, refused as f64);
    app.stop().await;
}

#[tokio::test]
async fn each_route_class_has_its_own_budget_and_probes_are_not_limited() {
    let mut settings = test_settings();
    settings.rate_limits.create_per_sec = SLOW;
    settings.rate_limits.create_burst = 1;
    settings.rate_limits.search_per_sec = SLOW;
    settings.rate_limits.search_burst = 2;
    let app = TestApp::spawn_with(settings, 0).await;

    let first = app.http.post(app.url("/tasks")).json(&task_body(0)).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let second = app.http.post(app.url("/tasks")).json(&task_body(1)).send().await.unwrap();
    problem(second, StatusCode::TOO_MANY_REQUESTS).await;

    // Creation is exhausted; search and the rest still have their whole budget.
    let search = json!({"user_id": "test-user", "query": "anything"});
    let found = app.http.post(app.url("/memory/search")).json(&search).send().await.unwrap();
    assert_eq!(found.status(), StatusCode::OK);
    assert_eq!((header(&found, "ratelimit-limit"), header(&found, "ratelimit-remaining")), (Some(2), Some(1)));
    let listed = app.http.get(app.url("/tasks?user_id=test-user")).send().await.unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(header(&listed, "ratelimit-limit"), Some(300), "the default burst of other requests");

    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers().get("ratelimit-limit"), None, "{path} is not limited per user");
    }
    app.stop().await;
}

#[tokio::test]
async fn users_have_separate_buckets_that_expire_when_full_again() {
    let mut settings = test_settings();
    settings.rate_limits.create_per_sec = SLOW;
    settings.rate_limits.create_burst = 2;
    let app = TestApp::spawn_with(settings.clone(), 0).await;
    let limiter = HttpLimiter::new(&settings.rate_limits, app.app.limiter.clone(), app.app.metrics.clone());
    let limit = Limit::per_second(SLOW, 2).unwrap();

    for expected in [true, true, false] {
        let decision = limiter.check(RouteClass::Create, limit, "alice").await.unwrap();
        assert_eq!(decision.admitted, expected, "{decision:?}");
    }
    let bob = limiter.check(RouteClass::Create, limit, "bob").await.unwrap();
    assert!(bob.admitted && bob.remaining == 1, "{bob:?}");
    let other_class = limiter.check(RouteClass::Other, limit, "alice").await.unwrap();
    assert!(other_class.admitted, "{other_class:?}");

    // The key lives only until the bucket is full again: two intervals of 100 s.
    let mut redis = app.app.queue.pool().get().await.unwrap();
    let key = app.app.limiter.key(&["user", "create", "alice"]);
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut redis).await.unwrap();
    assert!((1..=200_000).contains(&ttl), "{key}: {ttl}");
    drop(redis);
    app.stop().await;
}

#[tokio::test]
async fn without_redis_writes_are_refused_with_503_and_reads_pass() {
    let proxy = Proxy::start(upstream(&redis_url()).await).await;
    let mut settings = test_settings();
    settings.redis_url = via(&redis_url(), &proxy);
    let app = TestApp::spawn_with(settings, 0).await;
    let id = app.submit("Write a note.").await;

    proxy.cut();
    let before = app.count("SELECT count(*) FROM tasks").await;
    // Connections already open may carry a request or two before the cut reaches them.
    let refusal = eventually(Duration::from_secs(10), "a write to be refused", || async {
        let response = app.http.post(app.url("/tasks")).json(&task_body(1)).send().await.unwrap();
        match response.status() {
            StatusCode::SERVICE_UNAVAILABLE => Some(response),
            StatusCode::ACCEPTED => None,
            other => panic!("unexpected {other}"),
        }
    })
    .await;
    let body = problem(refusal, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body["detail"].as_str().unwrap().contains("rate limits cannot be checked"), "{body}");
    assert_eq!(app.count("SELECT count(*) FROM tasks").await, before, "a refused write stores nothing");

    let memory = json!({"user_id": "test-user", "content": "A note."});
    let refused = app.http.post(app.url("/memory")).json(&memory).send().await.unwrap();
    problem(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(app.count("SELECT count(*) FROM memory_items").await, 0);

    let read = app.http.get(app.url(&format!("/tasks/{id}"))).send().await.unwrap();
    assert_eq!(read.status(), StatusCode::OK, "reads pass without their limit");
    assert!(metric(&app, r#"orchestrator_rate_limit_unavailable_total{outcome="refused"}"#).await >= 2.0);
    app.stop().await;
}

#[tokio::test]
async fn fail_open_lets_writes_through_without_redis() {
    let proxy = Proxy::start(upstream(&redis_url()).await).await;
    let mut settings = test_settings();
    settings.redis_url = via(&redis_url(), &proxy);
    settings.rate_limits.fail_open = true;
    let app = TestApp::spawn_with(settings, 0).await;

    proxy.cut();
    // Storing a memory needs Postgres only, so with the limiter open it succeeds. Connections
    // already open may carry a request or two before the cut reaches them.
    let memory = json!({"user_id": "test-user", "content": "A note."});
    eventually(Duration::from_secs(10), "a write to pass without its limit", || async {
        let stored = app.http.post(app.url("/memory")).json(&memory).send().await.unwrap();
        assert_eq!(stored.status(), StatusCode::CREATED, "{}", stored.text().await.unwrap());
        let passed = metric(&app, r#"orchestrator_rate_limit_unavailable_total{outcome="passed"}"#).await;
        (passed >= 1.0).then_some(())
    })
    .await;
    app.stop().await;
}

/// Sends six `GET /healthz` for each of two forwarded addresses at once; returns how many of
/// each were accepted, checking every refusal's shape.
async fn forwarded_burst(app: &TestApp) -> [usize; 2] {
    let addresses = ["203.0.113.1", "203.0.113.2"];
    let sends = addresses
        .iter()
        .flat_map(|ip| (0..6).map(move |_| app.http.get(app.url("/healthz")).header("x-forwarded-for", *ip).send()));
    let responses = join_all(sends).await;
    let mut accepted = [0, 0];
    for (n, response) in responses.into_iter().enumerate() {
        let response = response.unwrap();
        if response.status() == StatusCode::OK {
            accepted[n / 6] += 1;
            continue;
        }
        assert!(header(&response, "retry-after").expect("Retry-After") >= 1);
        let body = problem(response, StatusCode::TOO_MANY_REQUESTS).await;
        assert!(body["detail"].as_str().unwrap().contains("client address"), "{body}");
    }
    accepted
}

#[tokio::test]
async fn behind_a_trusted_proxy_forwarded_addresses_are_limited_separately() {
    let mut settings = test_settings();
    settings.rate_limits.ip_per_sec = 1;
    settings.rate_limits.ip_burst = 3;
    settings.rate_limits.trusted_proxy = true;
    let app = TestApp::spawn_with(settings, 0).await;
    let [first, second] = forwarded_burst(&app).await;
    // Within one of the burst: a slow machine may see one request earned back.
    assert!((3..=4).contains(&first) && (3..=4).contains(&second), "{first} and {second}");
    let refused = 12 - first - second;
    assert_eq!(metric(&app, "orchestrator_ip_rate_limited_total").await, refused as f64);
    app.stop().await;
}

#[tokio::test]
async fn without_a_trusted_proxy_forwarded_headers_are_ignored() {
    let mut settings = test_settings();
    settings.rate_limits.ip_per_sec = 1;
    settings.rate_limits.ip_burst = 3;
    let app = TestApp::spawn_with(settings, 0).await;
    let [first, second] = forwarded_burst(&app).await;
    // Both "addresses" are the test's own peer address, so they share one burst.
    assert!((3..=4).contains(&(first + second)), "{first} and {second}");
    app.stop().await;
}

/// A provider that refuses (429) any request beyond `limit` within `window`, and records
/// when each request arrived.
struct StrictProvider {
    fake: FakeOpenAi,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    refusals: Arc<Mutex<usize>>,
}

impl StrictProvider {
    async fn start(limit: usize, window: Duration) -> Self {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let refusals = Arc::new(Mutex::new(0));
        let recent = Mutex::new(VecDeque::<Instant>::new());
        let (log, refused) = (arrivals.clone(), refusals.clone());
        let fake = FakeOpenAi::start(move |_request| {
            let now = Instant::now();
            log.lock().unwrap().push(now);
            let mut recent = recent.lock().unwrap();
            while recent.front().is_some_and(|t| now.duration_since(*t) >= window) {
                recent.pop_front();
            }
            if recent.len() >= limit {
                *refused.lock().unwrap() += 1;
                return (429, json!({"error": {"message": "rate limit exceeded", "type": "requests"}}));
            }
            recent.push_back(now);
            answer("Done.", 50, 10)
        })
        .await;
        Self { fake, arrivals, refusals }
    }
}

#[tokio::test]
async fn model_calls_queue_for_the_shared_provider_limit_instead_of_meeting_429s() {
    // Four requests per 2 s window: one call every 500 ms. The fake counts four per 1.8 s, a
    // little shorter, so scheduling jitter on a loaded machine cannot make it refuse.
    let provider = StrictProvider::start(4, Duration::from_millis(1800)).await;
    let mut settings = test_settings();
    settings.llm_provider = LlmProvider::Openai;
    settings.llm_base_url = Some(provider.fake.base_url());
    settings.llm_model = Some("gpt-4o-mini".into());
    settings.llm_api_key = Some("sk-test".into());
    settings.llm_max_retries = 0;
    settings.planner = PlannerKind::Heuristic;
    settings.rate_limits.llm_requests_per_minute = 4;
    settings.rate_limits.llm_rate_window_ms = 2000;
    let app = TestApp::spawn_with(settings, 1).await;

    let descriptions: Vec<String> = (0..6).map(|n| format!("Write note {n}.")).collect();
    let ids = join_all(descriptions.iter().map(|d| app.submit(d))).await;
    for id in ids {
        let task = app.client.wait(id, Duration::from_secs(60)).await.expect("the task finishes").raw;
        assert_eq!(task["status"], "completed", "{task}");
    }
    assert_eq!(*provider.refusals.lock().unwrap(), 0, "the provider never had to refuse");
    let arrivals = provider.arrivals.lock().unwrap().clone();
    assert!(arrivals.len() >= 6, "{} calls", arrivals.len());
    // Calls are spaced 500 ms apart; without the limiter they all arrive within moments.
    let span = *arrivals.last().unwrap() - arrivals[0];
    let floor = Duration::from_millis(250) * (arrivals.len() as u32 - 1);
    assert!(span >= floor, "{} calls within {span:?}", arrivals.len());
    assert!(metric(&app, r#"orchestrator_llm_rate_limit_waits_total{provider="openai"}"#).await >= 1.0);
    app.stop().await;
}
