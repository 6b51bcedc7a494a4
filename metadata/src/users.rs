//! Tables `user` and `api_token`: who may log in to the web UI and API, and with which role.
//! Passwords and tokens are stored only as hashes, made by the caller.

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

impl Store {
    /// Creates a user; [`Error::Conflict`] when the name is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
        now: DateTime<Utc>,
    ) -> Result<User, Error> {
        if username.trim().is_empty() {
            return Err(Error::Invalid("a user needs a name".to_owned()));
        }
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
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let created = self
            .execute(
                query(
                    "create an api token",
                    "INSERT INTO api_token (user_id, token_hash, created_at) \
                     SELECT id, $2, $3 FROM \"user\" WHERE username = $1",
                )
                .bind(username)
                .bind(token_hash)
                .bind(now),
            )
            .await?;
        match created {
            0 => Err(Error::NotFound(format!("user '{username}'"))),
            _ => Ok(()),
        }
    }

    /// The user an API token (by its hash) belongs to.
    pub async fn get_user_by_token(&self, token_hash: &str) -> Result<Option<User>, Error> {
        self.fetch_optional(
            query(
                "read a user by api token",
                "SELECT u.* FROM \"user\" u JOIN api_token t ON t.user_id = u.id \
                 WHERE t.token_hash = $1",
            )
            .bind(token_hash),
            User::from_row,
        )
        .await
    }
}
