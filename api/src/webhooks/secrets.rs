//! Per-user signing secrets: each user's webhooks are signed with a secret of their own, so
//! a tenant who can verify its deliveries cannot forge another tenant's.
//!
//! A secret is never stored. It is derived: `HMAC-SHA256(server key, label ‖ user_id ‖ 0 ‖
//! nonce)`, where the server key is `WEBHOOK_SERVER_KEY` and the nonce is 32 random bytes
//! kept in `webhook_secrets` (see the migration). So the database alone signs nothing, and a
//! secret learnt by one user says nothing about another's. Shown to its user as
//! `whsec_<base64 of the 32 bytes>`, the form Standard Webhooks libraries take.
//!
//! Rotation replaces the nonce and keeps the old one as `previous_nonce`: for [`OVERLAP`]
//! after a rotation both secrets sign every delivery, so a receiver can switch at its pace.
//! Changing the server key changes every user's secret at once, without overlap.

use std::{collections::HashMap, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::store::{SecretRow, SecretStore, StoreError};

/// How long the secret before a rotation keeps signing next to the new one.
pub const OVERLAP: TimeDelta = TimeDelta::hours(24);
/// What every shown secret starts with.
pub const PREFIX: &str = "whsec_";
/// Bytes of a nonce and of a secret.
pub const SECRET_BYTES: usize = 32;
/// Domain separation: the server key derives nothing else with this label.
const LABEL: &[u8] = b"orchestrator/webhook-signing-secret/v1\0";

/// A signing secret: the HMAC key. Ours are [`SECRET_BYTES`] long; [`SigningSecret::parse`]
/// takes any non-empty key, as Standard Webhooks libraries do. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

/// Why a `whsec_…` string is not a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretParseError {
    #[error("a webhook secret starts with `whsec_`")]
    Prefix,
    #[error("a webhook secret is `whsec_` and the base64 of a non-empty key")]
    Encoding,
}

impl SigningSecret {
    /// The HMAC key: the bytes after `whsec_`, decoded.
    pub fn key(&self) -> &[u8] {
        &self.0
    }

    /// As shown to its user and taken by Standard Webhooks libraries.
    pub fn to_whsec(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The reverse of [`Self::to_whsec`].
    pub fn parse(text: &str) -> Result<Self, SecretParseError> {
        let encoded = text.strip_prefix(PREFIX).ok_or(SecretParseError::Prefix)?;
        match STANDARD.decode(encoded) {
            Ok(bytes) if !bytes.is_empty() => Ok(Self(bytes)),
            _ => Err(SecretParseError::Encoding),
        }
    }
}

/// The key every user's secret is derived from (`WEBHOOK_SERVER_KEY`).
#[derive(Clone)]
pub struct ServerKey(Hmac<Sha256>);

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(..)")
    }
}

impl ServerKey {
    pub fn new(key: &[u8]) -> Self {
        Self(Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length"))
    }

    /// The secret of `user` for `nonce`. The nonce has a fixed length, so `user ‖ 0 ‖ nonce`
    /// reads back one way only.
    pub fn derive(&self, user: &str, nonce: &[u8]) -> SigningSecret {
        let mut mac = self.0.clone();
        mac.update(LABEL);
        mac.update(user.as_bytes());
        mac.update(b"\0");
        mac.update(nonce);
        SigningSecret(mac.finalize().into_bytes().to_vec())
    }
}

/// A user's secrets as of one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSecrets {
    pub current: SigningSecret,
    /// The secret before the last rotation, while it still signs.
    pub previous: Option<SigningSecret>,
    pub rotated_at: Option<DateTime<Utc>>,
    /// When `previous` stops signing.
    pub previous_expires_at: Option<DateTime<Utc>>,
}

impl UserSecrets {
    fn new(key: &ServerKey, row: &SecretRow, now: DateTime<Utc>) -> Self {
        let expires = row.rotated_at.map(|at| at + OVERLAP);
        let previous = match (&row.previous_nonce, expires) {
            (Some(nonce), Some(expires)) if now < expires => Some(key.derive(&row.user_id, nonce)),
            _ => None,
        };
        Self {
            current: key.derive(&row.user_id, &row.nonce),
            previous_expires_at: previous.as_ref().and(expires),
            previous,
            rotated_at: row.rotated_at,
        }
    }

    /// The secrets that sign a delivery now: the current one, then the previous one.
    pub fn signing(&self) -> impl Iterator<Item = &SigningSecret> {
        std::iter::once(&self.current).chain(self.previous.as_ref())
    }
}

/// Reads, creates and rotates users' secrets. Cloning shares it.
#[derive(Clone)]
pub struct WebhookSecrets {
    store: Arc<dyn SecretStore>,
    key: ServerKey,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecrets(..)")
    }
}

impl WebhookSecrets {
    pub fn new(store: Arc<dyn SecretStore>, key: ServerKey) -> Self {
        Self { store, key }
    }

    /// The user's secrets, made on first use.
    pub async fn of(&self, user: &str) -> Result<UserSecrets, StoreError> {
        let mut all = self.of_users(&[user.to_owned()]).await?;
        all.remove(user).ok_or_else(|| StoreError::Corrupt(format!("no webhook secret row for `{user}`")))
    }

    /// The secrets of several users, in one round trip when their rows exist.
    pub async fn of_users(&self, users: &[String]) -> Result<HashMap<String, UserSecrets>, StoreError> {
        let now = Utc::now();
        let mut found = HashMap::with_capacity(users.len());
        // The second pass finds rows that a concurrent first use created under our feet.
        for _ in 0..2 {
            let missing: Vec<String> = users.iter().filter(|u| !found.contains_key(*u)).cloned().collect();
            if missing.is_empty() {
                break;
            }
            let fresh: Vec<Vec<u8>> = missing.iter().map(|_| nonce()).collect();
            for row in self.store.webhook_secret_rows(&missing, &fresh).await? {
                found.insert(row.user_id.clone(), UserSecrets::new(&self.key, &row, now));
            }
        }
        Ok(found)
    }

    /// Gives the user a new secret; the old one keeps signing for [`OVERLAP`].
    pub async fn rotate(&self, user: &str) -> Result<UserSecrets, StoreError> {
        let row = self.store.rotate_webhook_secret(user, &nonce()).await?;
        Ok(UserSecrets::new(&self.key, &row, Utc::now()))
    }
}

fn nonce() -> Vec<u8> {
    let mut bytes = vec![0; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, nonce: u8, previous: Option<u8>, rotated_at: Option<DateTime<Utc>>) -> SecretRow {
        SecretRow {
            user_id: user.into(),
            nonce: vec![nonce; SECRET_BYTES],
            previous_nonce: previous.map(|p| vec![p; SECRET_BYTES]),
            rotated_at,
        }
    }

    #[test]
    fn secrets_differ_per_user_nonce_and_server_key() {
        let key = ServerKey::new(b"a-server-key-of-thirty-two-bytes!!");
        let a = key.derive("alice", &[1; 32]);
        assert_eq!(a, key.derive("alice", &[1; 32]), "derivation is deterministic");
        assert_ne!(a, key.derive("bob", &[1; 32]));
        assert_ne!(a, key.derive("alice", &[2; 32]));
        assert_ne!(a, ServerKey::new(b"another-server-key-of-32-bytes!!!").derive("alice", &[1; 32]));
        // The separator keeps ("ab", nonce) and ("a", "b" ‖ nonce) apart.
        assert_ne!(key.derive("ab", &[0; 32]), key.derive("a", &[b'b', 0].repeat(16)));
    }

    #[test]
    fn whsec_round_trips_and_bad_text_is_refused() {
        let secret = ServerKey::new(b"k").derive("alice", &[7; 32]);
        let shown = secret.to_whsec();
        assert!(shown.starts_with("whsec_") && shown.len() == 6 + 44, "{shown}");
        assert_eq!(SigningSecret::parse(&shown), Ok(secret.clone()));
        assert!(!format!("{secret:?}").contains(&shown[6..]), "Debug hides the secret");
        assert_eq!(SigningSecret::parse(&shown[6..]), Err(SecretParseError::Prefix));
        assert_eq!(SigningSecret::parse("whsec_not base64"), Err(SecretParseError::Encoding));
        assert_eq!(SigningSecret::parse("whsec_"), Err(SecretParseError::Encoding), "empty");
    }

    #[test]
    fn the_previous_secret_signs_only_during_the_overlap() {
        let key = ServerKey::new(b"k");
        let now = Utc::now();
        let fresh = UserSecrets::new(&key, &row("u", 1, None, None), now);
        assert_eq!((fresh.signing().count(), fresh.previous_expires_at), (1, None));

        let rotated = now - TimeDelta::hours(23);
        let overlap = UserSecrets::new(&key, &row("u", 2, Some(1), Some(rotated)), now);
        let signing: Vec<_> = overlap.signing().cloned().collect();
        assert_eq!(signing, [key.derive("u", &[2; 32]), key.derive("u", &[1; 32])], "new first, then old");
        assert_eq!(overlap.previous_expires_at, Some(rotated + OVERLAP));

        let past = UserSecrets::new(&key, &row("u", 2, Some(1), Some(now - TimeDelta::hours(25))), now);
        assert_eq!((past.signing().count(), past.previous, past.previous_expires_at), (1, None, None));
        assert_eq!(past.current, overlap.current);
    }
}
