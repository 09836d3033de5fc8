//! The task routes as a client sees them: status codes, problem+json bodies naming the
//! field, and no partial writes on rejection.

use serde_json::{Value, json};

use crate::helpers::TestApp;

/// Posts `body` raw with the given content type; returns status, content type and JSON.
async fn post_raw(app: &TestApp, content_type: &str, body: String) -> (u16, String, Value) {
    let response = app
        .http
        .post(app.url("/tasks"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("a response");
    let status = response.status().as_u16();
    let ctype = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, ctype, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_submissions_get_a_4xx_naming_the_field_and_write_nothing() {
    // No workers: nothing but the API could write rows.
    let app = TestApp::spawn(0).await;
    let long = "x".repeat(8001);
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        ("application/json", "{not json".into(), 400, None),
        ("application/json", json!({"user_id": "u"}).to_string(), 400, Some("description")),
        ("application/json", json!({"description": "d"}).to_string(), 422, Some("user_id")),
        ("application/json", json!({"user_id": "u", "description": "   "}).to_string(), 422, Some("description")),
        ("application/json", json!({"user_id": "u", "description": long}).to_string(), 422, Some("description")),
        ("application/json", json!({"user_id": "u", "description": 7}).to_string(), 400, Some("description")),
        ("application/json", json!({"user_id": "u", "description": "d", "colour": 1}).to_string(), 400, Some("colour")),
        (
            "application/json",
            json!({"user_id": "u", "description": "d", "metadata": [1]}).to_string(),
            422,
            Some("metadata"),
        ),
        (
            "application/json",
            json!({"user_id": "u", "description": "d", "task_type": "Report"}).to_string(),
            422,
            Some("task_type"),
        ),
        (
            "application/json",
            json!({"user_id": "u", "description": "d", "task_type": "x".repeat(65)}).to_string(),
            422,
            Some("task_type"),
        ),
        (
            "application/json",
            json!({"user_id": "u", "description": "d", "metadata": "x"}).to_string(),
            422,
            Some("metadata"),
        ),
        (
            "application/json",
            json!({"user_id": "u", "description": "d", "priority": "urgent"}).to_string(),
            400,
            Some("priority"),
        ),
        ("application/json", json!({"user_id": " ", "description": "d"}).to_string(), 422, Some("user_id")),
        ("application/json", json!({"user_id": "u", "description": "a\u{0}b"}).to_string(), 422, Some("description")),
        ("text/plain", json!({"user_id": "u", "description": "d"}).to_string(), 415, None),
    ];
    for (ctype, body, status, field) in cases {
        let (got, got_type, problem) = post_raw(&app, ctype, body.clone()).await;
        assert_eq!(got, status, "status for {body}: {problem}");
        assert_eq!(got_type, "application/problem+json", "content type for {body}");
        assert_eq!(problem["status"], status, "{problem}");
        assert!(problem["type"].as_str().unwrap().starts_with("urn:orchestrator:problem:"), "{problem}");
        assert_eq!(problem["field"].as_str(), field, "field for {body}: {problem}");
        if let Some(field) = field {
            assert!(problem["detail"].as_str().unwrap().contains(field), "detail names {field}: {problem}");
        }
    }
    let too_big = format!(r#"{{"user_id":"u","description":"{}"}}"#, "y".repeat(300 * 1024));
    assert_eq!(post_raw(&app, "application/json", too_big).await.0, 413);

    assert_eq!(app.count("SELECT count(*) FROM tasks").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM task_events").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_submission_answers_202_with_location_and_a_pending_task() {
    let app = TestApp::spawn(0).await;
    let body = json!({"user_id": "demo-user", "description": "Analyze the requirements and build a plan. Then implement core APIs.", "metadata": {"priority": "high"}});
    let response = app.http.post(app.url("/tasks")).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(response.headers().contains_key("x-request-id"));
    let task: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/tasks/{}", task["id"].as_str().unwrap()));
    assert_eq!(task["status"], "pending");
    assert_eq!(task["priority"], "high");
    assert_eq!(task["metadata"], json!({"priority": "high"}));

    let fetched: Value = app.http.get(app.url(&location)).send().await.unwrap().json().await.unwrap();
    assert_eq!(fetched["id"], task["id"]);
    assert_eq!(fetched["steps"], json!([]));
    assert_eq!(app.count("SELECT count(*) FROM task_events WHERE kind = 'task_created'").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn unknown_and_malformed_task_ids() {
    let app = TestApp::spawn(0).await;
    let missing = app.http.get(app.url(&format!("/tasks/{}", uuid::Uuid::new_v4()))).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    let problem: Value = missing.json().await.unwrap();
    assert_eq!(problem["type"], "urn:orchestrator:problem:not-found");

    let malformed = app.http.get(app.url("/tasks/not-a-uuid")).send().await.unwrap();
    assert_eq!(malformed.status().as_u16(), 400);
    let problem: Value = malformed.json().await.unwrap();
    assert_eq!(problem["field"], "id");

    let nowhere = app.http.get(app.url("/nowhere")).send().await.unwrap();
    assert_eq!(nowhere.status().as_u16(), 404);
    assert_eq!(nowhere.headers()["content-type"], "application/problem+json");
    app.stop().await;
}

#[tokio::test]
async fn listing_is_newest_first_filtered_and_paginated() {
    let app = TestApp::spawn(0).await;
    let mut mine = Vec::new();
    for n in 0..5 {
        let body = json!({"user_id": "lister", "description": format!("task {n}")});
        mine.push(app.client.submit(&body).await.unwrap().id);
    }
    app.client.submit(&json!({"user_id": "someone-else", "description": "other"})).await.unwrap();
    mine.reverse(); // newest first

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = app.url("/tasks?user_id=lister&status=pending&limit=2");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app.http.get(url).send().await.unwrap().json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|t| t["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, mine);

    let none: Value =
        app.http.get(app.url("/tasks?user_id=lister&status=completed")).send().await.unwrap().json().await.unwrap();
    assert_eq!(none["items"], json!([]));
    assert_eq!(none["next_cursor"], Value::Null);

    for bad in ["limit=0", "limit=101", "limit=abc", "status=done", "cursor=garbage", "limit=1&limit=2"] {
        let r = app.http.get(app.url(&format!("/tasks?{bad}"))).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{bad}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{bad}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["field"].as_str(), bad.split('=').next(), "{bad}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_same_task_and_refuses_a_different_body() {
    let app = TestApp::spawn(0).await;
    let body = json!({"user_id": "idem", "description": "Write a summary."});
    let send = |body: Value| app.http.post(app.url("/tasks")).header("Idempotency-Key", "key-1").json(&body).send();

    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status().as_u16(), 202);
    let first: Value = first.json().await.unwrap();
    let again = send(body.clone()).await.unwrap();
    assert_eq!(again.status().as_u16(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let conflict = send(json!({"user_id": "idem", "description": "Something else."})).await.unwrap();
    assert_eq!(conflict.status().as_u16(), 409);
    assert_eq!(app.count("SELECT count(*) FROM tasks").await, 1);
    // No worker runs here, so the stream still holds every plan job: a replay enqueued none.
    assert_eq!(app.queued_jobs().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn agent_hints_limit_the_plan_to_the_hinted_agents() {
    let app = TestApp::spawn(1).await;
    let body = json!({
        "user_id": "u",
        "description": "Research the market. Then analyze the findings. Then check the numbers.",
        "agent_hints": ["writer", "reviewer", "writer"],
    });
    let task = app.client.submit(&body).await.expect("202");
    let done = app.wait(task.id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["agent_hints"], json!(["writer", "reviewer"]), "repeats are dropped");
    let agents: Vec<&str> = done["steps"].as_array().unwrap().iter().map(|s| s["agent"].as_str().unwrap()).collect();
    assert_eq!(agents, ["writer", "writer", "reviewer"]);

    let before = app.count("SELECT count(*) FROM tasks").await;
    for (hints, field) in [(json!(["writer", "poet"]), "agent_hints[1]"), (json!([]), "agent_hints")] {
        let body = json!({"user_id": "u", "description": "d", "agent_hints": hints});
        let (status, _, problem) = post_raw(&app, "application/json", body.to_string()).await;
        assert_eq!((status, problem["field"].as_str()), (422, Some(field)), "{problem}");
    }
    assert_eq!(app.count("SELECT count(*) FROM tasks").await, before);
    app.stop().await;
}

#[tokio::test]
async fn tasks_carry_their_type_and_a_hash_of_their_work_and_list_by_type() {
    let app = TestApp::spawn(0).await;
    let create = |body: Value| {
        let app = &app;
        async move {
            let response = app.http.post(app.url("/tasks")).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 202);
            response.json::<Value>().await.unwrap()
        }
    };
    let report =
        create(json!({"user_id": "ann", "description": "Write the  weekly report.", "task_type": "report"})).await;
    assert_eq!(report["task_type"], "report");
    let hash = report["task_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64);

    // The same work again (whitespace aside, other metadata): the same hash.
    let again = create(json!({"user_id": "ann", "description": "Write the weekly report.", "task_type": "report",
                              "metadata": {"run": 2}, "priority": "low"}))
    .await;
    assert_eq!(again["task_hash"], hash.as_str());
    // Another user, type, description or context: another hash.
    for other in [
        json!({"user_id": "bob", "description": "Write the weekly report.", "task_type": "report"}),
        json!({"user_id": "ann", "description": "Write the weekly report.", "task_type": "memo"}),
        json!({"user_id": "ann", "description": "Write the weekly report."}),
        json!({"user_id": "ann", "description": "Write the monthly report.", "task_type": "report"}),
        json!({"user_id": "ann", "description": "Write the weekly report.", "task_type": "report",
               "context": [{"role": "user", "content": "Be brief."}]}),
    ] {
        let task = create(other.clone()).await;
        assert_ne!(task["task_hash"], hash.as_str(), "{other}");
    }

    // GET /tasks?task_type= lists that type only; the read shows type and hash.
    let page: Value =
        app.http.get(app.url("/tasks?user_id=ann&task_type=report")).send().await.unwrap().json().await.unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{page}"); // ann's reports: two alike, the monthly one, the one with context
    assert!(items.iter().all(|t| t["task_type"] == "report" && t["task_hash"].is_string()), "{page}");
    let read: Value = app
        .http
        .get(app.url(&format!("/tasks/{}", report["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((&read["task_type"], &read["task_hash"]), (&report["task_type"], &report["task_hash"]));
    let bad = app.http.get(app.url("/tasks?task_type=Not%20a%20type")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["field"], "task_type");
    app.stop().await;
}

#[tokio::test]
async fn context_added_to_a_pending_task_reaches_its_steps_and_not_after_it_started() {
    use crate::fake_llm::{FakeOpenAi, answer, is_planning};
    let fake = FakeOpenAi::start(|request| {
        if is_planning(request) {
            let step = json!({"title": "Write", "instruction": "Write it.", "agent": "writer", "depends_on": []});
            return crate::fake_llm::tool_call("plan-1", "submit_plan", &json!({"steps": [step]}));
        }
        answer("Written.", 10, 2)
    })
    .await;
    // No workers yet: the task stays pending while context is added.
    let app = TestApp::spawn_with(fake.settings(), 0).await;
    let id = app.submit("Write the release notes.").await;
    let url = app.url(&format!("/tasks/{id}/context"));
    let post = |body: Value| {
        let (app, url) = (&app, url.clone());
        async move {
            let response = app.http.post(url).json(&body).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };

    let (status, body) = post(json!({"messages": [{"role": "user", "content": "Mention the new CLI."}]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["context"], json!([{"role": "user", "content": "Mention the new CLI."}]));
    for (bad, field) in [
        (json!({"messages": []}), "messages"),
        (json!({"messages": [{"role": "tool", "content": "x"}]}), "messages[0].role"),
        (json!({"messages": [{"role": "user", "content": " "}]}), "messages[0].content"),
        (json!({"messages": vec![json!({"role": "user", "content": "x"}); 50]}), "messages"),
    ] {
        let (status, problem) = post(bad).await;
        assert_eq!((status, problem["field"].as_str()), (422, Some(field)), "{problem}");
    }
    let unknown = app.url(&format!("/tasks/{}/context", uuid::Uuid::new_v4()));
    let response =
        app.http.post(unknown).json(&json!({"messages": [{"role": "user", "content": "x"}]})).send().await.unwrap();
    assert_eq!(response.status(), 404);

    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(app.app.worker("w").run(shutdown.clone()));
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    let step = fake.requests().into_iter().find(|r| !is_planning(r)).unwrap();
    assert!(step.to_string().contains("Mention the new CLI."), "{step}");
    let (status, problem) = post(json!({"messages": [{"role": "user", "content": "Too late."}]})).await;
    assert_eq!(status, 409, "{problem}");
    shutdown.cancel();
    worker.await.unwrap();
    app.stop().await;
}
