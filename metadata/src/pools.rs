//! Table `pool`: named slot limits that task instances take while they run.

use serde::Serialize;
use updraft_core::rate::RateLimit;

use crate::db::{Row, query};
use crate::{Error, Store};

/// The pool of tasks that name none. The first migration creates it with 128 slots; it can be
/// resized but not deleted.
pub const DEFAULT_POOL: &str = "default_pool";

/// A row of `pool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    pub name: String,
    pub slots: i32,
    pub description: String,
    /// At most so many tries of its task instances start per period.
    pub rate_limit: Option<RateLimit>,
}

impl Pool {
    fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(Pool {
            name: row.get("name")?,
            slots: row.get("slots")?,
            description: row.get("description")?,
            rate_limit: row.parsed("rate_limit")?,
        })
    }
}

impl Store {
    /// Creates or resizes a pool. `description: None` keeps the current one (empty for a new
    /// pool); `rate_limit: None` keeps the current one (none for a new pool), `Some(None)`
    /// removes it.
    pub async fn set_pool(
        &self,
        name: &str,
        slots: i32,
        description: Option<&str>,
        rate_limit: Option<Option<RateLimit>>,
    ) -> Result<Pool, Error> {
        if name.trim().is_empty() {
            return Err(Error::Invalid("a pool needs a name".to_owned()));
        }
        if slots < 0 {
            return Err(Error::Invalid(format!(
                "pool '{name}': slots must be 0 or more, not {slots}"
            )));
        }
        self.fetch_one(
            query(
                "set a pool",
                "INSERT INTO pool (name, slots, description, rate_limit) \
                 VALUES ($1, $2, COALESCE($3, ''), $5) \
                 ON CONFLICT (name) DO UPDATE SET slots = excluded.slots, \
                     description = COALESCE($3, pool.description), \
                     rate_limit = CASE WHEN $4 THEN $5 ELSE pool.rate_limit END \
                 RETURNING *",
            )
            .bind(name)
            .bind(slots)
            .bind(description)
            .bind(rate_limit.is_some())
            .bind(
                rate_limit
                    .flatten()
                    .map(|limit| limit.to_string())
                    .as_deref(),
            ),
            Pool::from_row,
        )
        .await
    }

    /// Every pool, by name.
    pub async fn list_pools(&self) -> Result<Vec<Pool>, Error> {
        self.fetch_all(
            query("list pools", "SELECT * FROM pool ORDER BY name"),
            Pool::from_row,
        )
        .await
    }

    #[cfg(feature = "testing")]
    pub async fn get_pool(&self, name: &str) -> Result<Option<Pool>, Error> {
        self.fetch_optional(
            query("read a pool", "SELECT * FROM pool WHERE name = $1").bind(name),
            Pool::from_row,
        )
        .await
    }

    /// Deletes a pool. The default pool is refused ([`Error::Conflict`]); an unknown one is
    /// [`Error::NotFound`].
    pub async fn delete_pool(&self, name: &str) -> Result<(), Error> {
        if name == DEFAULT_POOL {
            return Err(Error::Conflict(format!(
                "the default pool '{DEFAULT_POOL}' cannot be deleted (resize it instead)"
            )));
        }
        let deleted = self
            .execute(query("delete a pool", "DELETE FROM pool WHERE name = $1").bind(name))
            .await?;
        match deleted {
            0 => Err(Error::NotFound(format!("pool '{name}'"))),
            _ => Ok(()),
        }
    }
}
