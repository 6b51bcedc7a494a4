//! Table `variable`: Airflow's Variables, key/value pairs that templates read
//! (`{{ var.value.<key> }}`). A secret one's value is stored sealed (`updraft_core::seal`);
//! sealing and opening happen outside, with the installation's key.

use chrono::{DateTime, Utc};
use updraft_core::ids::VariableKey;

use crate::db::{Row, query};
use crate::{Change, Error, Store};

/// A row of `variable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub key: VariableKey,
    /// The value in clear, or sealed when `is_secret`.
    pub value: String,
    pub is_secret: bool,
    pub description: String,
    pub updated_at: DateTime<Utc>,
}

impl Variable {
    fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(Variable {
            key: row.id("key")?,
            value: row.get("value")?,
            is_secret: row.get("is_secret")?,
            description: row.get("description")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

impl Store {
    /// Every variable, by key.
    pub async fn list_variables(&self) -> Result<Vec<Variable>, Error> {
        self.fetch_all(
            query("list variables", "SELECT * FROM variable ORDER BY key"),
            Variable::from_row,
        )
        .await
    }

    /// A page of variables, by key: at most `limit` from `offset`.
    pub async fn list_variables_page(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Variable>, Error> {
        self.fetch_all(
            query(
                "list variables",
                "SELECT * FROM variable ORDER BY key LIMIT $1 OFFSET $2",
            )
            .bind(limit)
            .bind(offset),
            Variable::from_row,
        )
        .await
    }

    pub async fn get_variable(&self, key: &VariableKey) -> Result<Option<Variable>, Error> {
        self.fetch_optional(
            query("read a variable", "SELECT * FROM variable WHERE key = $1").bind(key.as_str()),
            Variable::from_row,
        )
        .await
    }
}

impl Change<'_> {
    /// Creates or replaces a variable.
    pub async fn set_variable(&mut self, variable: &Variable) -> Result<(), Error> {
        self.tx()
            .execute(
                query(
                    "set a variable",
                    "INSERT INTO variable (key, value, is_secret, description, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                         is_secret = excluded.is_secret, description = excluded.description, \
                         updated_at = excluded.updated_at",
                )
                .bind(variable.key.as_str())
                .bind(variable.value.as_str())
                .bind(variable.is_secret)
                .bind(variable.description.as_str())
                .bind(variable.updated_at),
            )
            .await?;
        Ok(())
    }

    /// Deletes a variable; [`Error::NotFound`] when there is none of that key.
    pub async fn delete_variable(&mut self, key: &VariableKey) -> Result<(), Error> {
        let deleted = self
            .tx()
            .execute(
                query("delete a variable", "DELETE FROM variable WHERE key = $1")
                    .bind(key.as_str()),
            )
            .await?;
        match deleted {
            0 => Err(Error::NotFound(format!("variable '{key}'"))),
            _ => Ok(()),
        }
    }
}
