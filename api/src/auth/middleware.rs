//! The middleware that turns `Authorization: Bearer <key>` into a [`Caller`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{AuthMode, Caller, KeyStore, keys::hash};
use crate::http::ApiError;

/// Checked keys kept at most; past it the cache starts over rather than grow without bound.
const CACHE_CAPACITY: usize = 10_000;

/// Checks keys against Postgres, with a short cache so a busy client costs one lookup per
/// `ttl` instead of one per request.
pub struct Authenticator {
    mode: AuthMode,
    keys: KeyStore,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Caller, Instant)>>,
}

impl Authenticator {
    pub fn new(mode: AuthMode, keys: KeyStore, ttl: Duration) -> Self {
        Self { mode, keys, ttl, cache: Mutex::new(HashMap::new()) }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    async fn caller(&self, secret: &str) -> Result<Option<Caller>, ApiError> {
        let digest = hash(secret);
        if let Some((caller, at)) = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&digest)
            && at.elapsed() < self.ttl
        {
            return Ok(Some(caller.clone()));
        }
        let caller = self.keys.authenticate(secret).await.map_err(|e| {
            tracing::error!(error = %e, "API key lookup failed");
            ApiError::Unavailable { dependency: "postgres" }
        })?;
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &caller {
            Some(caller) => {
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(digest, (caller.clone(), Instant::now()));
            }
            None => {
                cache.remove(&digest);
            }
        }
        Ok(caller)
    }
}

/// Puts the request's [`Caller`] in its extensions, or answers 401.
pub async fn authenticate(State(auth): State<Arc<Authenticator>>, mut request: Request, next: Next) -> Response {
    let caller = match auth.mode {
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
                Err(e) => return e.into_response(),
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
