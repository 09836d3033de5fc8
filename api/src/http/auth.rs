//! The HTTP side of auth: the middleware that turns `Authorization: Bearer <key>` into a
//! [`Caller`] (checked by [`Authenticator`]), and the extractor handlers take it with.

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::ApiError;
use crate::auth::{AuthMode, Authenticator, Caller};

/// Puts the request's [`Caller`] in its extensions, or answers 401.
pub async fn authenticate(State(auth): State<Arc<Authenticator>>, mut request: Request, next: Next) -> Response {
    let caller = match auth.mode() {
        AuthMode::Disabled => Caller::local(),
        AuthMode::Required => {
            let Some(secret) = bearer(&request) else {
                return ApiError::Unauthorized { message: "send an API key as `Authorization: Bearer <key>`".into() }
                    .into_response();
            };
            match auth.caller(secret).await {
                Ok(Some(caller)) => caller,
                Ok(None) => {
                    return ApiError::Unauthorized { message: "the API key is unknown or revoked".into() }
                        .into_response();
                }
                Err(e) => {
                    tracing::error!(error = %e, "API key lookup failed");
                    return ApiError::Unavailable { dependency: "postgres" }.into_response();
                }
            }
        }
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Every route that takes a Caller sits behind `authenticate`; a missing one is a
        // wiring bug, and must not fall back to some default identity.
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| ApiError::Internal("no caller on the request".into()))
    }
}
