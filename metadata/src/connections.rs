//! Table `connection`: Airflow's Connections, how to reach an outside system (type, host,
//! port, login, password, schema, extra JSON). The password and the extra are stored sealed
//! (`updraft_core::seal`); sealing and opening happen outside, with the installation's key.

use chrono::{DateTime, Utc};
use updraft_core::ids::ConnectionId;

use crate::db::{Row, query};
use crate::{Change, Error, Store};

/// A row of `connection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub conn_id: ConnectionId,
    pub conn_type: String,
    pub host: Option<String>,
    pub port: Option<i32>,
    pub login: Option<String>,
    /// Sealed.
    pub password: Option<String>,
    pub schema: Option<String>,
    /// The extra JSON, sealed.
    pub extra: Option<String>,
    pub description: String,
    pub updated_at: DateTime<Utc>,
}

impl Connection {
    fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(Connection {
            conn_id: row.id("conn_id")?,
            conn_type: row.get("conn_type")?,
            host: row.get("host")?,
            port: row.get("port")?,
            login: row.get("login")?,
            password: row.get("password")?,
            schema: row.get("schema")?,
            extra: row.get("extra")?,
            description: row.get("description")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

impl Store {
    /// Every connection, by id.
    pub async fn list_connections(&self) -> Result<Vec<Connection>, Error> {
        self.fetch_all(
            query(
                "list connections",
                "SELECT * FROM connection ORDER BY conn_id",
            ),
            Connection::from_row,
        )
        .await
    }

    /// A page of connections, by id: at most `limit` from `offset`.
    pub async fn list_connections_page(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Connection>, Error> {
        self.fetch_all(
            query(
                "list connections",
                "SELECT * FROM connection ORDER BY conn_id LIMIT $1 OFFSET $2",
            )
            .bind(limit)
            .bind(offset),
            Connection::from_row,
        )
        .await
    }

    pub async fn get_connection(
        &self,
        conn_id: &ConnectionId,
    ) -> Result<Option<Connection>, Error> {
        self.fetch_optional(
            query(
                "read a connection",
                "SELECT * FROM connection WHERE conn_id = $1",
            )
            .bind(conn_id.as_str()),
            Connection::from_row,
        )
        .await
    }
}

impl Change<'_> {
    /// Creates or replaces a connection.
    pub async fn set_connection(&mut self, connection: &Connection) -> Result<(), Error> {
        self.tx()
            .execute(
                query(
                    "set a connection",
                    "INSERT INTO connection (conn_id, conn_type, host, port, login, password, \
                         schema, extra, description, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (conn_id) DO UPDATE SET conn_type = excluded.conn_type, \
                         host = excluded.host, port = excluded.port, login = excluded.login, \
                         password = excluded.password, schema = excluded.schema, \
                         extra = excluded.extra, description = excluded.description, \
                         updated_at = excluded.updated_at",
                )
                .bind(connection.conn_id.as_str())
                .bind(connection.conn_type.as_str())
                .bind(connection.host.as_deref())
                .bind(connection.port)
                .bind(connection.login.as_deref())
                .bind(connection.password.as_deref())
                .bind(connection.schema.as_deref())
                .bind(connection.extra.as_deref())
                .bind(connection.description.as_str())
                .bind(connection.updated_at),
            )
            .await?;
        Ok(())
    }

    /// Deletes a connection; [`Error::NotFound`] when there is none of that id.
    pub async fn delete_connection(&mut self, conn_id: &ConnectionId) -> Result<(), Error> {
        let deleted = self
            .tx()
            .execute(
                query(
                    "delete a connection",
                    "DELETE FROM connection WHERE conn_id = $1",
                )
                .bind(conn_id.as_str()),
            )
            .await?;
        match deleted {
            0 => Err(Error::NotFound(format!("connection '{conn_id}'"))),
            _ => Ok(()),
        }
    }
}
