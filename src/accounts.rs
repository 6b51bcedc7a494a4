//! Creating users as the command line does, for `users create` and for the admin `standalone`
//! makes when there is no user: the password rule, and hashing off the async threads.

use anyhow::{Result, anyhow, bail};
use chrono::Utc;
use updraft_metadata::{Role, Store};
use updraft_webserver::auth::{hash_password, new_token};

/// The user `standalone` creates when there is none.
pub const STANDALONE_ADMIN: &str = "admin";
/// The shortest password a user is created with.
pub const PASSWORD_MIN: usize = 8;

/// Creates a user with the argon2 hash of `password` (hashed off the async threads). The name
/// is checked by the store ([`updraft_metadata::check_username`]); the password must be at
/// least [`PASSWORD_MIN`] characters.
pub async fn create_user(store: &Store, username: &str, password: &str, role: Role) -> Result<()> {
    if password.chars().count() < PASSWORD_MIN {
        bail!("the password is shorter than {PASSWORD_MIN} characters");
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await?
        .map_err(|error| anyhow!("{error}"))?;
    store.create_user(username, &hash, role, Utc::now()).await?;
    Ok(())
}

/// When there is no user yet, creates [`STANDALONE_ADMIN`] with a random password and returns
/// the password (for `standalone` to print once).
pub async fn ensure_admin(store: &Store) -> Result<Option<String>> {
    if !store.list_users().await?.is_empty() {
        return Ok(None);
    }
    let password = new_token().map_err(|error| anyhow!("{error}"))?[..20].to_owned();
    create_user(store, STANDALONE_ADMIN, &password, Role::Admin).await?;
    Ok(Some(password))
}
