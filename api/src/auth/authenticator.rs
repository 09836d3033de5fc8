//! The key check behind the HTTP middleware (`http::auth`): which [`Caller`] a key stands
//! for, with a short cache so a busy client costs one lookup per `ttl`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{AuthMode, Caller, KeyError, KeyStore, keys::hash};

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

    /// The caller `secret` stands for; `None` for an unknown or revoked key.
    pub async fn caller(&self, secret: &str) -> Result<Option<Caller>, KeyError> {
        let digest = hash(secret);
        if let Some((caller, at)) = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&digest)
            && at.elapsed() < self.ttl
        {
            return Ok(Some(caller.clone()));
        }
        let caller = self.keys.authenticate(secret).await?;
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
