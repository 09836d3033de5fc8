//! `orchestrator keys …`: key administration straight on Postgres, for operators.

use std::io::Write;

use super::KeyStore;
use crate::config::KeysCommand;

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    let keys = KeyStore::new(crate::app::open_database(command.settings()).await?);
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
