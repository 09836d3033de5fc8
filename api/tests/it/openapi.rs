//! The OpenAPI document: it lists exactly the routes the router serves, `docs/openapi.json`
//! is the served document, and `/docs` is a Swagger UI that loads nothing from elsewhere.
//!
//! To regenerate the checked-in copy after an API change:
//! `UPDATE_OPENAPI=1 cargo test -p api --test it openapi`.

use std::{collections::BTreeSet, path::PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::TestApp;

/// Every route the router serves, as (method, path template). A new route must be added
/// here and documented with `#[utoipa::path]` in `api/src/http/openapi.rs`.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/tasks"),
    ("get", "/tasks"),
    ("get", "/tasks/{id}"),
    ("post", "/tasks/{id}/cancel"),
    ("post", "/tasks/{id}/retry"),
    ("post", "/tasks/{id}/context"),
    ("post", "/tasks/{id}/follow-ups"),
    ("get", "/tasks/{id}/events"),
    ("get", "/tasks/{id}/cost"),
    ("get", "/tasks/{id}/tool-calls"),
    ("get", "/tasks/{id}/webhook"),
    ("get", "/tasks/{id}/approvals"),
    ("post", "/tasks/{id}/approvals/{call_id}"),
    ("get", "/tasks/{id}/plan"),
    ("put", "/tasks/{id}/plan"),
    ("get", "/tasks/{id}/plan/versions"),
    ("post", "/tasks/{id}/start"),
    ("get", "/webhook-secret"),
    ("post", "/webhook-secret/rotate"),
    ("post", "/memory"),
    ("post", "/memory/search"),
    ("get", "/memory/{id}"),
    ("delete", "/memory/{id}"),
    ("get", "/agents"),
    ("get", "/tools"),
    ("get", "/workers"),
    ("get", "/admin/dead-letters"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn checked_in_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

async fn served_document(app: &TestApp) -> (String, Value) {
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).expect("/openapi.json is JSON");
    (text, value)
}

fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                operations.insert(((*method).to_owned(), path.clone()));
            }
        }
    }
    operations
}

/// A concrete URL for a path template: ids that exist nowhere, and the query a route needs.
fn concrete(method: &str, template: &str) -> String {
    let path = if template.starts_with("/memory/") {
        template.replace("{id}", "987654321")
    } else {
        template.replace("{id}", &uuid::Uuid::new_v4().to_string())
    };
    if template == "/memory/{id}" && (method == "get" || method == "delete") {
        format!("{path}?user_id=nobody")
    } else {
        path
    }
}

#[tokio::test]
async fn openapi_documents_exactly_the_served_routes() {
    let app = TestApp::spawn(0).await;
    let (_, doc) = served_document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");

    let documented = documented_operations(&doc);
    let routed: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(undocumented.is_empty(), "routes missing from the OpenAPI document: {undocumented:?}");
    assert!(unrouted.is_empty(), "documented operations not in this test's route list: {unrouted:?}");

    // Each documented operation reaches a handler: not the no-route fallback, not 405.
    for (method, template) in &documented {
        let url = app.url(&concrete(method, template));
        let mut request = app.http.request(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), &url);
        if method == "post" {
            request = request.json(&serde_json::json!({}));
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {template} is documented but not routed");
        if status == StatusCode::NOT_FOUND {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(
                body["type"], "urn:orchestrator:problem:no-route",
                "{method} {template} is documented but not routed: {body}"
            );
        }

        // Every operation has a tag, a success response, and its errors as problem+json.
        let operation = &doc["paths"][template][method];
        assert!(operation["tags"].as_array().is_some_and(|t| !t.is_empty()), "{method} {template} has no tag");
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {template} has no success response");
        for (code, response) in responses.iter().filter(|(s, _)| s.starts_with('4') || s.starts_with('5')) {
            let problem = &response["content"]["application/problem+json"]["schema"]["$ref"];
            assert_eq!(problem, "#/components/schemas/Problem", "{method} {template} {code}");
        }
    }

    // The probe above tells routed from unrouted.
    let missing = app.http.get(app.url("/no/such/route")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.json::<Value>().await.unwrap()["type"], "urn:orchestrator:problem:no-route");
    let wrong_method = app.http.put(app.url("/tasks")).send().await.unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Headers, the bearer scheme and the error schema are declared.
    let create = &doc["paths"]["/tasks"]["post"];
    assert!(
        create["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
    );
    // A follow-up is created as a task is: the same headers, and the answers of its own.
    let follow_up = &doc["paths"]["/tasks/{id}/follow-ups"]["post"];
    for header in ["Idempotency-Key", "Prefer"] {
        assert!(follow_up["parameters"].as_array().unwrap().iter().any(|p| p["name"] == header && p["in"] == "header"));
    }
    for status in ["200", "202", "404", "409", "422", "429"] {
        assert!(follow_up["responses"][status].is_object(), "follow-ups document {status}");
    }
    assert_eq!(
        follow_up["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/FollowUpRequest"
    );
    let events = &doc["paths"]["/tasks/{id}/events"]["get"];
    assert!(
        events["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "Last-Event-ID" && p["in"] == "header")
    );
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    // A key is required everywhere but on the probes, and its absence is a documented 401.
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], serde_json::json!([{}]));
    assert!(create["responses"]["401"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    app.stop().await;
}

#[tokio::test]
async fn openapi_docs_serve_swagger_ui_from_local_assets_only() {
    let app = TestApp::spawn(0).await;
    let response = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let base = response.url().clone();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");

    let mut assets = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for piece in html.split(attribute).skip(1) {
            let reference = piece.split('"').next().unwrap();
            let lower = reference.to_ascii_lowercase();
            assert!(
                !(lower.starts_with("http:") || lower.starts_with("https:") || lower.starts_with("//")),
                "/docs loads {reference} from elsewhere"
            );
            assets.push(reference.to_owned());
        }
    }
    assert!(assets.iter().any(|a| a.ends_with(".js")), "no script in {html}");
    for asset in &assets {
        let url = base.join(asset).unwrap();
        let response = app.http.get(url.clone()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        if asset.contains("initializer") {
            let script = response.text().await.unwrap();
            assert!(script.contains("/openapi.json"), "{script}");
            assert!(!script.contains("http://") && !script.contains("https://"), "{script}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn openapi_checked_in_copy_is_the_served_document() {
    let app = TestApp::spawn(0).await;
    let (served, _) = served_document(&app).await;
    app.stop().await;
    let path = checked_in_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &served).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == served,
        "docs/openapi.json differs from the document GET /openapi.json serves.\n\
         Regenerate it with: UPDATE_OPENAPI=1 cargo test -p api --test it openapi\n\
         and commit the result."
    );
}
