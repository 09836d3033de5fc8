//! Opening Postgres: creating the database when it is missing, the pool, and migrations.
//! Below the app and the operator commands alike, so a command that needs only the
//! database (`keys`, `users`) does not reach into the composition root.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    PgPool, Postgres,
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::Settings;

/// The schema, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How long start-up waits for Postgres before it names it as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Postgres with the schema up to date, for commands that need nothing else.
pub async fn open_database(settings: &Settings) -> anyhow::Result<PgPool> {
    let pool = connect_postgres(settings).await?;
    MIGRATOR.run(&pool).await.context("applying database migrations failed")?;
    Ok(pool)
}

/// The pool of `DATABASE_URL`, creating the database when it is missing; no migrations.
pub async fn connect_postgres(settings: &Settings) -> anyhow::Result<PgPool> {
    let url = &settings.database_url;
    let shown = redact(url);
    let exists = tokio::time::timeout(CONNECT_TIMEOUT, Postgres::database_exists(url))
        .await
        .map_err(|_| anyhow::anyhow!("cannot reach Postgres at {shown}: timed out"))?
        .with_context(|| postgres_unreachable(url))?;
    if !exists {
        tracing::info!(database = %shown, "creating the database");
        Postgres::create_database(url).await.with_context(|| format!("cannot create the database {shown}"))?;
    }
    // JIT off: every statement here is short, and a batch whose estimated cost passes
    // `jit_above_cost` (a young database's statistics make that easy) spent 680 ms compiling
    // what runs in 6.
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("DATABASE_URL is not a Postgres URL: {shown}"))?
        .options([("jit", "off")]);
    PgPoolOptions::new()
        .max_connections(settings.database_max_connections)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .with_context(|| postgres_unreachable(url))
}

/// The start-up error for Postgres; when the URL asks for a verified certificate it says
/// which roots count, since an unknown issuer is the usual cause.
fn postgres_unreachable(url: &str) -> String {
    let verifies = url::Url::parse(url)
        .is_ok_and(|u| u.query_pairs().any(|(key, value)| key == "sslmode" && value.starts_with("verify")));
    let shown = redact(url);
    if verifies {
        format!(
            "cannot reach Postgres at {shown} (its certificate must chain to the CA in sslrootcert= or PGSSLROOTCERT, or to a public root CA)"
        )
    } else {
        format!("cannot reach Postgres at {shown}")
    }
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
