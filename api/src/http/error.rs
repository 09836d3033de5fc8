//! The API's one error type and its RFC 7807 problem+json rendering.
//!
//! 4xx bodies name the field and the problem. 5xx bodies are opaque: the cause goes to the
//! log, next to the request id the client also sees.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{queue::QueueError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not of the expected shape.
    #[error("{message}")]
    MalformedBody { field: Option<String>, message: String },
    /// The body is well formed but a value is not acceptable.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A query or path parameter is not acceptable.
    #[error("{field}: {message}")]
    BadParameter { field: String, message: String },
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{message}")]
    Unauthorized { message: String },
    /// The caller may not do what a field asks: act as the user it names, use `high` priority.
    #[error("{field}: {message}")]
    Forbidden { field: String, message: String },
    #[error("{resource} {id} does not exist")]
    NotFound { resource: &'static str, id: String },
    #[error("no route for {path}")]
    NoRoute { path: String },
    #[error("{message}")]
    Conflict { message: String },
    /// A conditional request came without the header that makes it conditional.
    #[error("{header}: {message}")]
    PreconditionRequired { header: &'static str, message: String },
    /// The condition of a conditional request (`If-Match`) does not hold.
    #[error("{header}: {message}")]
    PreconditionFailed { header: &'static str, message: String },
    #[error("{dependency} is unavailable")]
    Unavailable { dependency: &'static str },
    /// A rate limit refused the request; `limit` names whose (a route class, an address).
    #[error("too many requests: the rate limit on {limit} was reached; retry in {retry_after} s")]
    RateLimited { limit: &'static str, retry_after: u64 },
    #[error("rate limits cannot be checked because Redis is unavailable; nothing was done, retry shortly")]
    RateLimitUnavailable,
    /// AUTH=disabled and the request names a host that is not loopback (DNS rebinding).
    #[error(
        "this server runs without API keys and answers only requests for a loopback host (localhost, *.localhost, 127.0.0.1, [::1]); `{host}` is not one"
    )]
    MisdirectedHost { host: String },
    /// A per-user limit on open resources (event streams) was reached.
    #[error("{message}")]
    TooManyOpen { message: String, retry_after: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whether `e` means Postgres could not be reached (the API answers 503), rather than that a
/// statement failed.
pub(crate) fn postgres_unreachable(e: &sqlx::Error) -> bool {
    match e {
        // A connection that breaks during the TLS handshake is an outage like any other.
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        // sqlx 0.9.0 reports a connection closed before the server answered its TLS request
        // (sslmode prefer and up) as this made-up byte; upstream issue #4395 makes it an Io error.
        sqlx::Error::Protocol(message) => message.starts_with("unexpected response from SSLRequest: 0x00"),
        _ => false,
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(ref db) if postgres_unreachable(db) => {
                tracing::error!(error = %e, "postgres unavailable");
                Self::Unavailable { dependency: "postgres" }
            }
            StoreError::Unavailable(_) => Self::Unavailable { dependency: "postgres" },
            StoreError::Database(_) | StoreError::Corrupt(_) => Self::Internal(e.to_string()),
        }
    }
}

impl From<crate::lifecycle::LifecycleError> for ApiError {
    fn from(e: crate::lifecycle::LifecycleError) -> Self {
        match e {
            crate::lifecycle::LifecycleError::Store(e) => e.into(),
            crate::lifecycle::LifecycleError::Queue(e) => e.into(),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        tracing::error!(error = %e, "redis unavailable");
        Self::Unavailable { dependency: "redis" }
    }
}

/// RFC 7807 body (`application/problem+json`). `type` is a stable identifier clients may
/// match on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "urn:orchestrator:problem:validation",
    "title": "Invalid value",
    "status": 422,
    "detail": "description: must not be blank",
    "field": "description"
}))]
pub struct Problem {
    /// A stable URN naming the kind of problem, e.g. `urn:orchestrator:problem:not-found`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// A short summary of the kind of problem.
    #[schema(value_type = String)]
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The body field or parameter at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// Status, stable problem type URI, title and the field at fault.
    fn parts(&self) -> (StatusCode, &'static str, &'static str, Option<&str>) {
        // Exhaustive on purpose: a new variant must choose its status.
        match self {
            Self::MalformedBody { field, .. } => (
                StatusCode::BAD_REQUEST,
                "urn:orchestrator:problem:malformed-body",
                "Malformed request body",
                field.as_deref(),
            ),
            Self::Invalid { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "urn:orchestrator:problem:validation",
                "Invalid value",
                Some(field.as_str()),
            ),
            Self::BadParameter { field, .. } => (
                StatusCode::BAD_REQUEST,
                "urn:orchestrator:problem:bad-parameter",
                "Invalid parameter",
                Some(field.as_str()),
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "urn:orchestrator:problem:unsupported-media-type",
                "Unsupported media type",
                None,
            ),
            Self::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "urn:orchestrator:problem:payload-too-large", "Payload too large", None)
            }
            Self::Unauthorized { .. } => {
                (StatusCode::UNAUTHORIZED, "urn:orchestrator:problem:unauthorized", "Unauthorized", None)
            }
            Self::Forbidden { field, .. } => {
                (StatusCode::FORBIDDEN, "urn:orchestrator:problem:forbidden", "Forbidden", Some(field.as_str()))
            }
            Self::NotFound { .. } => (StatusCode::NOT_FOUND, "urn:orchestrator:problem:not-found", "Not found", None),
            Self::NoRoute { .. } => (StatusCode::NOT_FOUND, "urn:orchestrator:problem:no-route", "Not found", None),
            Self::Conflict { .. } => (StatusCode::CONFLICT, "urn:orchestrator:problem:conflict", "Conflict", None),
            Self::PreconditionRequired { header, .. } => (
                StatusCode::PRECONDITION_REQUIRED,
                "urn:orchestrator:problem:precondition-required",
                "Precondition required",
                Some(*header),
            ),
            Self::PreconditionFailed { header, .. } => (
                StatusCode::PRECONDITION_FAILED,
                "urn:orchestrator:problem:precondition-failed",
                "Precondition failed",
                Some(*header),
            ),
            Self::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:orchestrator:problem:unavailable",
                "Dependency unavailable",
                None,
            ),
            Self::RateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "urn:orchestrator:problem:rate-limited", "Too many requests", None)
            }
            Self::RateLimitUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:orchestrator:problem:unavailable",
                "Dependency unavailable",
                None,
            ),
            Self::MisdirectedHost { .. } => (
                StatusCode::MISDIRECTED_REQUEST,
                "urn:orchestrator:problem:misdirected-request",
                "Misdirected request",
                Some("Host"),
            ),
            Self::TooManyOpen { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "urn:orchestrator:problem:too-many-open", "Too many open", None)
            }
            Self::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "urn:orchestrator:problem:internal", "Internal server error", None)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title, field) = self.parts();
        let detail = match &self {
            Self::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                "The server could not complete the request; the cause is in its log.".to_owned()
            }
            other => other.to_string(),
        };
        let body = Problem { kind, title, status: status.as_u16(), detail, field: field.map(str::to_owned) };
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::RateLimited { retry_after, .. } | Self::TooManyOpen { retry_after, .. } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}
