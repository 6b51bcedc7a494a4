//! Table `session`: who is logged in to the web UI. The browser holds a random token in a
//! cookie; only its hash is stored here, with the user, the session's CSRF token and when it
//! expires. The caller makes the token, its hash and the CSRF token.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::db::{Row, query};
use crate::{Error, Store, User};

/// A live session and its user. `Debug` leaves the CSRF token out.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub id: i64,
    pub user: User,
    /// The token every form of this session must carry.
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(Session {
            id: row.get("session_id")?,
            user: User::from_row(row)?,
            csrf_token: row.get("csrf_token")?,
            created_at: row.get("session_created_at")?,
            expires_at: row.get("expires_at")?,
        })
    }
}

impl Store {
    /// Starts a session of `user_id` until `expires_at`; [`Error::NotFound`] for an unknown
    /// user. Sessions that expired before `now` are removed on the way, so the table holds
    /// only live sessions and those of the last day at most.
    pub async fn create_session(
        &self,
        user_id: i64,
        token_hash: &str,
        csrf_token: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        if expires_at < now {
            return Err(Error::Invalid(
                "a session cannot expire before it starts".to_owned(),
            ));
        }
        let mut tx = self.begin("start a session").await?;
        tx.execute(
            query(
                "remove expired sessions",
                "DELETE FROM session WHERE expires_at < $1",
            )
            .bind(now),
        )
        .await?;
        let insert = tx
            .execute(
                query(
                    "start a session",
                    "INSERT INTO session (token_hash, user_id, csrf_token, created_at, \
                         expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(token_hash)
                .bind(user_id)
                .bind(csrf_token)
                .bind(now)
                .bind(expires_at),
            )
            .await;
        match insert {
            Err(error) if error.is_foreign_key_violation() => {
                return Err(Error::NotFound(format!("user {user_id}")));
            }
            result => result?,
        };
        tx.commit("start a session").await
    }

    /// The session whose token has this hash, with its user, unless it expired at `now`.
    pub async fn get_session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, Error> {
        self.fetch_optional(
            query(
                "read a session",
                "SELECT u.*, s.id AS session_id, s.csrf_token, \
                     s.created_at AS session_created_at, s.expires_at \
                 FROM session s JOIN \"user\" u ON u.id = s.user_id \
                 WHERE s.token_hash = $1 AND s.expires_at > $2",
            )
            .bind(token_hash)
            .bind(now),
            Session::from_row,
        )
        .await
    }

    /// Ends the session whose token has this hash (logout); ending an unknown one is no error.
    pub async fn delete_session(&self, token_hash: &str) -> Result<(), Error> {
        self.execute(
            query("end a session", "DELETE FROM session WHERE token_hash = $1").bind(token_hash),
        )
        .await
        .map(|_| ())
    }
}
