use std::time::Duration;

use axum::{Router, http::header as axum_header, response::IntoResponse, routing::get};

use super::*;
use crate::{ToolCall, ToolCallStatus, tools::ToolSettings};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn non_public_addresses_are_forbidden() {
    for text in [
        "127.0.0.1",
        "127.255.0.9",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "100.127.255.255",
        "192.0.2.10",
        "198.51.100.7",
        "203.0.113.99",
        "198.18.0.1",
        "224.0.0.251",
        "255.255.255.255",
        "240.0.0.1",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::7f00:1",
        "64:ff9b::a00:1",
        "2002:7f00:1::",
        "2001::1",
        "::127.0.0.1",
        "100::1",
    ] {
        assert!(is_forbidden(ip(text)), "{text} must be forbidden");
    }
}

#[test]
fn public_addresses_are_allowed() {
    for text in [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "100.128.0.1",
        "192.169.0.1",
        "2606:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:93.184.216.34",
        "64:ff9b::5db8:d822",
    ] {
        assert!(!is_forbidden(ip(text)), "{text} must be allowed");
    }
}

#[test]
fn allow_loopback_admits_loopback_only() {
    let policy = AddressPolicy::AllowLoopback;
    assert!(policy.permits(ip("127.0.0.1")));
    assert!(policy.permits(ip("::1")));
    assert!(policy.permits(ip("::ffff:127.0.0.1")));
    assert!(policy.permits(ip("93.184.216.34")));
    assert!(!policy.permits(ip("10.0.0.1")));
    assert!(!policy.permits(ip("169.254.169.254")));
    assert!(!AddressPolicy::PublicOnly.permits(ip("127.0.0.1")));
}

#[test]
fn host_patterns_match_exactly_or_by_suffix() {
    let exact = HostPattern::parse("API.Example.com.").unwrap();
    assert!(exact.matches("api.example.com"));
    assert!(!exact.matches("evil-api.example.com"));
    let wildcard = HostPattern::parse("*.example.com").unwrap();
    assert!(wildcard.matches("a.example.com") && wildcard.matches("a.b.example.com"));
    assert!(!wildcard.matches("example.com") && !wildcard.matches("badexample.com"));
    assert_eq!(HostPattern::parse("[::1]").unwrap(), HostPattern::Exact("::1".into()));
    for bad in ["", "*", "*.", "a.*.com", "http://x.com/"] {
        assert!(HostPattern::parse(bad).is_err(), "{bad}");
    }
    let settings = HttpGetSettings { allowed_hosts: vec!["ok.com".into(), "*x*".into()], ..Default::default() };
    assert!(matches!(HttpGet::new(settings), Err(RegistryError::InvalidSettings { .. })));
}

#[test]
fn a_utf8_sequence_cut_by_the_limit_is_dropped() {
    let text = "aé".as_bytes();
    assert_eq!(body_text(&text[..2], true), "a");
    assert_eq!(body_text(&text[..2], false), "a\u{fffd}");
    assert_eq!(body_text(b"ok\xff!", false), "ok\u{fffd}!");
}

/// A local server: `/big` (100 000 bytes), `/moved` (302 to `/big`).
async fn server() -> SocketAddr {
    let app = Router::new()
        .route("/big", get(|| async { ([(axum_header::CONTENT_TYPE, "text/plain")], "a".repeat(100_000)) }))
        .route(
            "/moved",
            get(|| async { (axum::http::StatusCode::FOUND, [(axum_header::LOCATION, "/big")]).into_response() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn tool(hosts: &[&str], policy: AddressPolicy) -> HttpGet {
    HttpGet::new(HttpGetSettings {
        allowed_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        max_bytes: 1000,
        timeout: Duration::from_secs(5),
        address_policy: policy,
    })
    .unwrap()
}

fn ctx() -> ToolContext {
    ToolContext { task_id: uuid::Uuid::nil(), step_id: None, owner: "u".into() }
}

#[tokio::test]
async fn public_only_refuses_a_name_that_resolves_to_loopback() {
    let addr = server().await;
    let http = tool(&["localhost"], AddressPolicy::PublicOnly);
    let url = format!("http://localhost:{}/big", addr.port());
    match http.call(json!({ "url": url }), &ctx()).await {
        Err(ToolError::Denied(reason)) => {
            assert!(reason.contains("`localhost` resolves to an address that is not public"), "{reason}");
            // Which address is this network's business: it goes to the log only.
            assert!(!reason.contains("127.0.0.1") && !reason.contains("::1"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_registry_records_a_refused_address_as_rejected() {
    let addr = server().await;
    let settings = ToolSettings {
        http: HttpGetSettings { allowed_hosts: vec!["127.0.0.1".into()], ..Default::default() },
        ..Default::default()
    };
    let registry = crate::tools::builtin_tools(&settings, None).unwrap();
    let call = ToolCall {
        id: "c".into(),
        name: NAME.into(),
        arguments: json!({ "url": format!("http://127.0.0.1:{}/big", addr.port()) }),
    };
    let out = registry.invoke(&[NAME.to_owned()], &call, &ctx()).await;
    assert_eq!(out.record.status, ToolCallStatus::Rejected);
    let reason = out.record.error.unwrap();
    // The tenant wrote the address, so naming it tells them nothing new.
    assert!(reason.contains("127.0.0.1 is not a public address"), "{reason}");
}

#[tokio::test]
async fn allow_loopback_fetches_and_truncates_the_body() {
    let addr = server().await;
    let http = tool(&["localhost"], AddressPolicy::AllowLoopback);
    let url = format!("http://localhost:{}/big", addr.port());
    let out = http.call(json!({ "url": url }), &ctx()).await.unwrap();
    assert_eq!(out["status"], json!(200));
    assert_eq!(out["content_type"], json!("text/plain"));
    assert_eq!(out["truncated"], json!(true));
    assert_eq!(out["body"].as_str().unwrap(), "a".repeat(1000));
}

#[tokio::test]
async fn a_small_body_is_not_marked_truncated() {
    let addr = server().await;
    let mut http = tool(&["127.0.0.1"], AddressPolicy::AllowLoopback);
    http.settings.max_bytes = 100_000;
    let out = http.call(json!({ "url": format!("http://127.0.0.1:{}/big", addr.port()) }), &ctx()).await.unwrap();
    assert_eq!(out["truncated"], json!(false));
    assert_eq!(out["body"].as_str().unwrap().len(), 100_000);
}

#[tokio::test]
async fn redirects_are_reported_not_followed() {
    let addr = server().await;
    let http = tool(&["127.0.0.1"], AddressPolicy::AllowLoopback);
    let out = http.call(json!({ "url": format!("http://127.0.0.1:{}/moved", addr.port()) }), &ctx()).await.unwrap();
    assert_eq!(out["status"], json!(302));
    assert_eq!(out["location"], json!("/big"));
    assert_eq!(out["body"], json!(""));
}

#[tokio::test]
async fn hosts_outside_the_allowlist_and_other_schemes_are_refused() {
    let http = tool(&["*.example.com"], AddressPolicy::AllowLoopback);
    match http.call(json!({ "url": "http://localhost:1/" }), &ctx()).await {
        Err(ToolError::Denied(reason)) => assert!(reason.contains("host `localhost` is not allowed"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match http.call(json!({ "url": "ftp://files.example.com/x" }), &ctx()).await {
        Err(ToolError::InvalidArguments(reason)) => assert!(reason.contains("only http and https"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match http.call(json!({ "url": "not a url" }), &ctx()).await {
        Err(ToolError::InvalidArguments(reason)) => assert!(reason.contains("not a valid URL"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
