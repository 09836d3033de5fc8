//! The rate limits' answers in the OpenAPI document, added to every operation at once rather
//! than to each handler's annotation: 429 wherever a limit applies, 503 on the writes that
//! fail closed when Redis is away.

use axum::http::Method;
use utoipa::{
    Modify,
    openapi::{
        Content, HttpMethod, Object, Ref, Type,
        header::{Header, HeaderBuilder},
        path::Operation,
        response::{Response, ResponseBuilder},
    },
};

use crate::ratelimit::RouteClass;

pub struct RateLimitResponses;

impl Modify for RateLimitResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for method in [HttpMethod::Get, HttpMethod::Put, HttpMethod::Post, HttpMethod::Delete, HttpMethod::Patch] {
                let (operation, method) = match method {
                    HttpMethod::Get => (item.get.as_mut(), Method::GET),
                    HttpMethod::Put => (item.put.as_mut(), Method::PUT),
                    HttpMethod::Post => (item.post.as_mut(), Method::POST),
                    HttpMethod::Delete => (item.delete.as_mut(), Method::DELETE),
                    _ => (item.patch.as_mut(), Method::PATCH),
                };
                if let Some(operation) = operation {
                    document(operation, &method, path);
                }
            }
        }
    }
}

fn document(operation: &mut Operation, method: &Method, path: &str) {
    let responses = &mut operation.responses.responses;
    let per_user = RouteClass::of(method, path).is_some();
    responses.entry("429".into()).or_insert_with(|| too_many_requests(per_user).into());
    if per_user && !method.is_safe() {
        responses.entry("503".into()).or_insert_with(|| {
            problem("Rate limits cannot be checked because Redis is unavailable; nothing was done.").into()
        });
    }
}

fn too_many_requests(per_user: bool) -> Response {
    let retry = integer_header("Seconds to wait before retrying.");
    if !per_user {
        let mut response = problem("The per-IP rate limit refused the request.");
        response.headers.insert("Retry-After".into(), retry.into());
        return response;
    }
    let mut response = problem(
        "A rate limit refused the request: the caller's budget for this route class (task creation, memory \
         search, everything else) or the per-IP limit. Accepted requests carry the RateLimit-* headers too.",
    );
    for (name, header) in [
        ("Retry-After", retry),
        ("RateLimit-Limit", integer_header("Requests the caller may send at once (the burst).")),
        ("RateLimit-Remaining", integer_header("Requests the caller may send now.")),
        ("RateLimit-Reset", integer_header("Seconds until the whole burst is available again.")),
    ] {
        response.headers.insert(name.into(), header.into());
    }
    response
}

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", Content::new(Some(Ref::from_schema_name("Problem"))))
        .build()
}

fn integer_header(description: &str) -> Header {
    HeaderBuilder::new().schema(Some(Object::with_type(Type::Integer))).description(Some(description)).build()
}
