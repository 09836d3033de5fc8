//! `orchestrator keys …`: key administration straight on Postgres, for operators.

use std::io::Write;

use clap::Subcommand;

use crate::{auth::KeyStore, config::Settings};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it on stdout, once: only its hash is stored.
    Create {
        /// The user the key acts as.
        #[arg(long)]
        user: String,
        /// An admin key may act for every user and see every task.
        #[arg(long)]
        admin: bool,
        /// A label to tell keys apart in `keys list`.
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// List keys (never their secrets).
    List {
        /// Only this user's keys.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Revoke a key by id; it stops working within AUTH_CACHE_SECS.
    Revoke {
        id: uuid::Uuid,
        #[command(flatten)]
        settings: Settings,
    },
}

impl KeysCommand {
    pub fn settings(&self) -> &Settings {
        match self {
            Self::Create { settings, .. } | Self::List { settings, .. } | Self::Revoke { settings, .. } => settings,
        }
    }
}

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    let keys = KeyStore::new(crate::database::open_database(command.settings()).await?);
    match command {
        KeysCommand::Create { user, admin, name, .. } => {
            let created = keys.create(&user, &name, admin).await?;
            // The secret alone on stdout, so `KEY=$(orchestrator keys create …)` works; the
            // rest on stderr.
            eprintln!(
                "created {} key {} for user {}; it is shown only this once",
                if admin { "an admin" } else { "a" },
                created.key.id,
                created.key.user_id
            );
            println!("{}", created.secret);
        }
        KeysCommand::List { user, .. } => {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<36}  {:<20}  {:<13}  {:<5}  {:<7}  {:<20}  NAME",
                "ID", "USER", "PREFIX", "ADMIN", "STATE", "LAST USED"
            )?;
            for key in keys.list(user.as_deref()).await? {
                let state = if key.revoked_at.is_some() { "revoked" } else { "active" };
                let used =
                    key.last_used_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or("never".into());
                writeln!(
                    out,
                    "{:<36}  {:<20}  {:<13}  {:<5}  {:<7}  {:<20}  {}",
                    key.id, key.user_id, key.prefix, key.admin, state, used, key.name
                )?;
            }
        }
        KeysCommand::Revoke { id, .. } => {
            let key = keys.revoke(id).await?;
            eprintln!("revoked key {} of user {}", key.id, key.user_id);
        }
    }
    Ok(())
}
