//! The request timeout: a handler that has not answered within [`REQUEST_TIMEOUT`] gets a
//! `408`, so a stuck dependency cannot hold connections forever.
//!
//! A request that asks to wait (`Prefer: wait=N`, see [`super::prefer`]) gets N more
//! seconds, so the timeout never cuts a wait short: the wait ends first and answers with the
//! task's current state. Only the time to the response head counts; a streamed body (an
//! event stream) is not limited.

use std::time::Duration;

use axum::{
    extract::Request,
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::prefer::Wait;

/// How long a handler may take when it was not asked to wait.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The time `request` may take: [`REQUEST_TIMEOUT`] plus the wait it asks for.
pub fn limit(request: &Request) -> Duration {
    REQUEST_TIMEOUT + Wait::from_headers(request.headers()).map(Wait::duration).unwrap_or_default()
}

/// Middleware: answers `408` (with no body, as before) when the handler takes longer than
/// [`limit`].
pub async fn enforce(request: Request, next: Next) -> Response {
    let limit = limit(&request);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn request(prefer: Option<&str>) -> Request {
        let mut builder = Request::builder().uri("/tasks");
        if let Some(prefer) = prefer {
            builder = builder.header("prefer", prefer);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn a_wait_extends_the_timeout_by_its_granted_length() {
        assert_eq!(limit(&request(None)), REQUEST_TIMEOUT);
        assert_eq!(limit(&request(Some("wait=10"))), REQUEST_TIMEOUT + Duration::from_secs(10));
        assert_eq!(limit(&request(Some("wait=600"))), REQUEST_TIMEOUT + Duration::from_secs(60));
        assert_eq!(limit(&request(Some("wait=soon"))), REQUEST_TIMEOUT);
    }
}
