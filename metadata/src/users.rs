//! Tables `user` and `api_token`: who may log in to the web UI and API, and with which role.
//! Passwords and tokens are stored only as hashes, made by the caller. User names are checked
//! here ([`check_username`]), so every way of creating a user refuses the same names.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_core::state::UnknownName;

use crate::db::{Row, query};
use crate::{Error, Store};

/// What a user may do: admins act, viewers look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

impl FromStr for Role {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, UnknownName> {
        match name {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            _ => Err(UnknownName {
                what: "role",
                name: name.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row of `user`. Its `Debug` leaves the password hash out, so it never reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    #[serde(skip)]
    pub password_hash: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl User {
    pub(crate) fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(User {
            id: row.get("id")?,
            username: row.get("username")?,
            password_hash: row.get("password_hash")?,
            role: row.name("role")?,
            created_at: row.get("created_at")?,
        })
    }
}

/// The longest user name.
pub const USERNAME_MAX: usize = 64;

/// Whether `name` may be a user name: 1 to [`USERNAME_MAX`] characters of `A-Z a-z 0-9 _ . - @`
/// (ids' characters, and `@` for names that are e-mail addresses). The message quotes at most
/// the name's first characters, escaped, so a hostile name cannot forge lines in a terminal.
pub fn check_username(name: &str) -> Result<(), Error> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@');
    let shown = || {
        let head: String = name.chars().take(USERNAME_MAX).collect();
        format!("{head:?}")
    };
    if name.is_empty() {
        Err(Error::Invalid("a user needs a name".to_owned()))
    } else if name.chars().count() > USERNAME_MAX {
        Err(Error::Invalid(format!(
            "user name {}... is longer than {USERNAME_MAX} characters",
            shown()
        )))
    } else if !name.chars().all(allowed) {
        Err(Error::Invalid(format!(
            "user name {} may only hold letters, digits and _ . - @",
            shown()
        )))
    } else {
        Ok(())
    }
}

/// A row of `api_token`, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    pub id: i64,
    /// Its owner's user name.
    pub username: String,
    /// What it is for, as its creator named it (may be empty).
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// It is refused from this instant on; `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// It was revoked then, and is refused since.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(ApiToken {
            id: row.get("id")?,
            username: row.get("username")?,
            name: row.get("name")?,
            created_at: row.get("created_at")?,
            expires_at: row.get("expires_at")?,
            revoked_at: row.get("revoked_at")?,
        })
    }

    /// `active`, `expired` or `revoked` at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// What a new API token is: its name and when it expires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewApiToken {
    pub name: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// `SELECT` of [`ApiToken`]s, followed by each query's `WHERE` and order.
macro_rules! select_api_tokens {
    ($rest:literal) => {
        concat!(
            "SELECT t.id, u.username, t.name, t.created_at, t.expires_at, t.revoked_at \
             FROM api_token t JOIN \"user\" u ON u.id = t.user_id ",
            $rest
        )
    };
}

impl Store {
    /// Creates a user; [`Error::Invalid`] for a name [`check_username`] refuses,
    /// [`Error::Conflict`] when the name is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
        now: DateTime<Utc>,
    ) -> Result<User, Error> {
        check_username(username)?;
        let insert = query(
            "create a user",
            "INSERT INTO \"user\" (username, password_hash, role, created_at) \
             VALUES ($1, $2, $3, $4) \
             RETURNING *",
        )
        .bind(username)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(now);
        match self.fetch_one(insert, User::from_row).await {
            Err(error) if error.is_unique_violation() => {
                Err(Error::Conflict(format!("user '{username}' already exists")))
            }
            result => result,
        }
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<User>, Error> {
        self.fetch_all(
            query("list users", "SELECT * FROM \"user\" ORDER BY username"),
            User::from_row,
        )
        .await
    }

    pub async fn get_user(&self, username: &str) -> Result<Option<User>, Error> {
        self.fetch_optional(
            query("read a user", "SELECT * FROM \"user\" WHERE username = $1").bind(username),
            User::from_row,
        )
        .await
    }

    /// Deletes a user and their API tokens; [`Error::NotFound`] for an unknown name.
    pub async fn delete_user(&self, username: &str) -> Result<(), Error> {
        let deleted = self
            .execute(
                query("delete a user", "DELETE FROM \"user\" WHERE username = $1").bind(username),
            )
            .await?;
        match deleted {
            0 => Err(Error::NotFound(format!("user '{username}'"))),
            _ => Ok(()),
        }
    }

    /// Stores the hash of a new API token of a user; [`Error::NotFound`] for an unknown name.
    pub async fn create_api_token(
        &self,
        username: &str,
        token_hash: &str,
        token: &NewApiToken,
        now: DateTime<Utc>,
    ) -> Result<ApiToken, Error> {
        if token.expires_at.is_some_and(|at| at <= now) {
            return Err(Error::Invalid(
                "a token's expiry must be in the future".to_owned(),
            ));
        }
        let insert = query(
            "create an api token",
            "INSERT INTO api_token (user_id, token_hash, name, created_at, expires_at) \
             SELECT id, $2, $3, $4, $5 FROM \"user\" WHERE username = $1 \
             RETURNING id",
        )
        .bind(username)
        .bind(token_hash)
        .bind(token.name.as_str())
        .bind(now)
        .bind(token.expires_at);
        let id: Option<i64> = self.fetch_optional(insert, |row| row.get("id")).await?;
        let id = id.ok_or_else(|| Error::NotFound(format!("user '{username}'")))?;
        Ok(ApiToken {
            id,
            username: username.to_owned(),
            name: token.name.clone(),
            created_at: now,
            expires_at: token.expires_at,
            revoked_at: None,
        })
    }

    /// The user an API token (by its hash) belongs to, while it is neither revoked nor expired
    /// at `now`.
    pub async fn get_user_by_token(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<User>, Error> {
        self.fetch_optional(
            query(
                "read a user by api token",
                "SELECT u.* FROM \"user\" u JOIN api_token t ON t.user_id = u.id \
                 WHERE t.token_hash = $1 AND t.revoked_at IS NULL \
                 AND (t.expires_at IS NULL OR t.expires_at > $2)",
            )
            .bind(token_hash)
            .bind(now),
            User::from_row,
        )
        .await
    }

    /// The newest `limit` API tokens, of one user or of all, newest first.
    pub async fn list_api_tokens(
        &self,
        username: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ApiToken>, Error> {
        let tokens = match username {
            None => query(
                "list api tokens",
                select_api_tokens!("ORDER BY t.id DESC LIMIT $1"),
            )
            .bind(limit),
            Some(username) => query(
                "list api tokens",
                select_api_tokens!("WHERE u.username = $2 ORDER BY t.id DESC LIMIT $1"),
            )
            .bind(limit)
            .bind(username),
        };
        self.fetch_all(tokens, ApiToken::from_row).await
    }

    /// Revokes API token `id` at `now`; only when it belongs to `owner`, if given.
    /// [`Error::NotFound`] for no such token (or another user's), [`Error::Conflict`] when it
    /// was revoked already.
    pub async fn revoke_api_token(
        &self,
        id: i64,
        owner: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ApiToken, Error> {
        let token = self
            .fetch_optional(
                query("read an api token", select_api_tokens!("WHERE t.id = $1")).bind(id),
                ApiToken::from_row,
            )
            .await?
            .filter(|token| owner.is_none_or(|owner| token.username == owner))
            .ok_or_else(|| Error::NotFound(format!("api token {id}")))?;
        let revoked = self
            .execute(
                query(
                    "revoke an api token",
                    "UPDATE api_token SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(id)
                .bind(now),
            )
            .await?;
        match revoked {
            0 => Err(Error::Conflict(format!(
                "api token {id} is revoked already"
            ))),
            _ => Ok(ApiToken {
                revoked_at: Some(now),
                ..token
            }),
        }
    }
}
