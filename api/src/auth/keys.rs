//! API keys in Postgres: created once and shown once, stored as a SHA-256, looked up by it.
//!
//! In clear, a generated key keeps only its first [`SHOWN_CHARS`] characters (`orch_` and 8
//! hex digits); the bootstrap key, a chosen password, keeps none.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::Caller;

/// Every key starts with this, so secret scanners and people can recognise one.
const KEY_PREFIX: &str = "orch_";
/// Characters of a generated key kept in clear, to tell keys apart in a listing: `orch_` and
/// 8 hex digits, 32 of the key's 192 random bits. Nothing else of a key is stored but its
/// SHA-256.
const SHOWN_CHARS: usize = KEY_PREFIX.len() + 8;
/// What a listing shows for the bootstrap key instead of its first characters.
const BOOTSTRAP_PREFIX: &str = "bootstrap";
/// Shortest bootstrap key accepted: it is a password in an environment variable.
pub const MIN_BOOTSTRAP_KEY_CHARS: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("user must be 1 to 200 characters")]
    BadUser,
    #[error("name must be at most 200 characters")]
    BadName,
    #[error("BOOTSTRAP_ADMIN_KEY must be at least {MIN_BOOTSTRAP_KEY_CHARS} characters")]
    ShortBootstrapKey,
    #[error("no API key {0}")]
    NotFound(Uuid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A key as listed: everything but the secret.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub user_id: String,
    pub name: String,
    pub prefix: String,
    pub admin: bool,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key just created: the secret exists only here, to be shown once.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: String,
}

#[derive(Clone)]
pub struct KeyStore {
    pool: PgPool,
}

impl KeyStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn create(&self, user_id: &str, name: &str, admin: bool) -> Result<CreatedKey, KeyError> {
        let user_id = user_id.trim();
        if user_id.is_empty() || user_id.chars().count() > 200 {
            return Err(KeyError::BadUser);
        }
        if name.chars().count() > 200 {
            return Err(KeyError::BadName);
        }
        let secret = generate();
        let key = sqlx::query_as::<_, ApiKey>(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, admin) VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING id, user_id, name, prefix, admin, created_at, last_used_at, revoked_at",
        )
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(name)
        .bind(&secret[..SHOWN_CHARS])
        .bind(hash(&secret).as_slice())
        .bind(admin)
        .fetch_one(&self.pool)
        .await?;
        Ok(CreatedKey { key, secret })
    }

    /// Makes `secret` the one bootstrap admin key (user `admin`): any other bootstrap key is
    /// revoked, so replacing `BOOTSTRAP_ADMIN_KEY` retires the old value at the next start.
    /// A start with the current value changes nothing, and a bootstrap key revoked with
    /// `keys revoke` stays revoked (choose a new value). The secret is a chosen password,
    /// not random bits, so none of it is stored in clear: its listed prefix is `bootstrap`.
    pub async fn ensure_bootstrap(&self, secret: &str) -> Result<(), KeyError> {
        if secret.chars().count() < MIN_BOOTSTRAP_KEY_CHARS {
            return Err(KeyError::ShortBootstrapKey);
        }
        let digest = hash(secret);
        let mut tx = self.pool.begin().await?;
        let retired = sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE bootstrap AND revoked_at IS NULL AND key_hash <> $1",
        )
        .bind(digest.as_slice())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, admin, bootstrap)
             VALUES ($1, 'admin', 'bootstrap', $2, $3, true, true)
             ON CONFLICT (key_hash) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(BOOTSTRAP_PREFIX)
        .bind(digest.as_slice())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let revoked: bool = sqlx::query_scalar("SELECT revoked_at IS NOT NULL FROM api_keys WHERE key_hash = $1")
            .bind(digest.as_slice())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        if retired > 0 {
            tracing::info!(retired, "BOOTSTRAP_ADMIN_KEY changed: the previous bootstrap key is revoked");
        }
        if inserted == 0 && revoked {
            tracing::warn!("BOOTSTRAP_ADMIN_KEY is a revoked key and stays revoked; set a new value");
        }
        Ok(())
    }

    /// The caller a presented secret stands for, if it is a live key; marks it used.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Caller>, KeyError> {
        let row: Option<(String, bool)> = sqlx::query_as(
            "UPDATE api_keys SET last_used_at = now() WHERE key_hash = $1 AND revoked_at IS NULL
             RETURNING user_id, admin",
        )
        .bind(hash(secret).as_slice())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(user_id, admin)| Caller { user_id: Some(user_id), admin }))
    }

    /// Whether any key could be used, for a hint at start when none can.
    pub async fn any_active(&self) -> Result<bool, KeyError> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn list(&self, user_id: Option<&str>) -> Result<Vec<ApiKey>, KeyError> {
        Ok(sqlx::query_as::<_, ApiKey>(
            "SELECT id, user_id, name, prefix, admin, created_at, last_used_at, revoked_at FROM api_keys
             WHERE $1::text IS NULL OR user_id = $1 ORDER BY user_id, created_at",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a key; revoking a revoked key keeps its first revocation time.
    pub async fn revoke(&self, id: Uuid) -> Result<ApiKey, KeyError> {
        sqlx::query_as::<_, ApiKey>(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
             RETURNING id, user_id, name, prefix, admin, created_at, last_used_at, revoked_at",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(KeyError::NotFound(id))
    }
}

/// `orch_` and 192 random bits in hex.
fn generate() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

pub(super) fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_prefixed_and_long() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 48);
        assert_ne!(hash(&a), hash(&b));
    }
}
