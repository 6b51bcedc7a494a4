//! The two backends behind one way of running SQL.
//!
//! `sqlx::Any` cannot bind chrono or JSON values, so the store holds a Postgres or a SQLite pool
//! and every query is written once: SQL text with `$1` placeholders (SQLite accepts them too)
//! plus typed [`Arg`]s, run by [`Handle`] on either backend, decoded by column name through
//! [`Row`]. Only where the dialects differ does a query carry two texts ([`Sql::Split`]).
//!
//! This module is also where the storage formats live: SQLite gets times as fixed-width UTC text
//! with microseconds ([`sqlite_time`]), the precision of a Postgres `timestamptz`, so both
//! backends read back the same instant and SQLite's text order is time order.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::types::Json;
use sqlx::{Decode, Postgres, Row as _, Sqlite, Transaction, Type};
use tokio::sync::OwnedMutexGuard;
use updraft_core::ids::{BackfillId, DagRunId, IdError, TaskInstanceId};
use updraft_core::state::UnknownName;

use crate::Error;

/// The SQL of a query: one text for both backends, or one each where the dialects differ.
#[derive(Clone, Copy)]
pub(crate) enum Sql {
    Shared(&'static str),
    Split {
        postgres: &'static str,
        sqlite: &'static str,
    },
}

/// A value bound to a placeholder, in the types both backends store.
#[derive(Clone, Copy)]
pub(crate) enum Arg<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(bool),
    Time(Option<DateTime<Utc>>),
    Json(Option<&'a serde_json::Value>),
    Bytes(&'a [u8]),
}

/// A query ready to run: what it is for (named in errors), its SQL and its arguments.
pub(crate) struct Query<'a> {
    what: &'static str,
    sql: Sql,
    args: Vec<Arg<'a>>,
}

/// A query whose SQL is the same on both backends. `what` completes "while trying to ...".
pub(crate) fn query<'a>(what: &'static str, sql: &'static str) -> Query<'a> {
    Query {
        what,
        sql: Sql::Shared(sql),
        args: Vec::new(),
    }
}

/// A query whose SQL differs between the backends.
pub(crate) fn query_split<'a>(
    what: &'static str,
    postgres: &'static str,
    sqlite: &'static str,
) -> Query<'a> {
    Query {
        what,
        sql: Sql::Split { postgres, sqlite },
        args: Vec::new(),
    }
}

impl<'a> Query<'a> {
    /// Binds the next placeholder (`$1`, then `$2`, ...).
    pub(crate) fn bind(mut self, arg: impl Into<Arg<'a>>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Whether the statement may write: anything but a plain `SELECT` (a `WITH` may write, so
    /// it counts as one).
    pub(crate) fn may_write(&self) -> bool {
        let sql = match self.sql {
            Sql::Shared(sql) | Sql::Split { sqlite: sql, .. } => sql,
        };
        let first = sql.split_whitespace().next().unwrap_or("");
        !first.eq_ignore_ascii_case("SELECT")
    }

    fn error(&self, source: sqlx::Error) -> Error {
        Error::Database {
            what: self.what,
            source,
        }
    }

    fn postgres(&self) -> sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments> {
        let sql = match self.sql {
            Sql::Shared(sql) | Sql::Split { postgres: sql, .. } => sql,
        };
        let mut query = sqlx::query(sql);
        for arg in &self.args {
            query = match *arg {
                Arg::Text(value) => query.bind(value),
                Arg::Int(value) => query.bind(value),
                Arg::Bool(value) => query.bind(value),
                Arg::Time(value) => query.bind(value),
                Arg::Json(value) => query.bind(value.map(Json)),
                Arg::Bytes(value) => query.bind(value),
            };
        }
        query
    }

    fn sqlite(&self) -> sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments> {
        let sql = match self.sql {
            Sql::Shared(sql) | Sql::Split { sqlite: sql, .. } => sql,
        };
        let mut query = sqlx::query(sql);
        for arg in &self.args {
            query = match *arg {
                Arg::Text(value) => query.bind(value),
                Arg::Int(value) => query.bind(value),
                Arg::Bool(value) => query.bind(value),
                Arg::Time(value) => query.bind(value.map(sqlite_time)),
                Arg::Json(value) => query.bind(value.map(Json)),
                Arg::Bytes(value) => query.bind(value),
            };
        }
        query
    }
}

/// The one text format of times on SQLite: `2024-01-31T02:00:00.000000Z`.
pub(crate) fn sqlite_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(value: &'a str) -> Self {
        Arg::Text(Some(value))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Arg::Text(value)
    }
}

impl From<i64> for Arg<'_> {
    fn from(value: i64) -> Self {
        Arg::Int(Some(value))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(value: Option<i64>) -> Self {
        Arg::Int(value)
    }
}

macro_rules! row_id_args {
    ($($id:ty),*) => {$(
        impl From<$id> for Arg<'_> {
            fn from(id: $id) -> Self {
                Arg::Int(Some(id.0))
            }
        }

        impl From<Option<$id>> for Arg<'_> {
            fn from(id: Option<$id>) -> Self {
                Arg::Int(id.map(|id| id.0))
            }
        }
    )*};
}

row_id_args!(DagRunId, TaskInstanceId, BackfillId);

impl From<i32> for Arg<'_> {
    fn from(value: i32) -> Self {
        Arg::Int(Some(value.into()))
    }
}

impl From<Option<i32>> for Arg<'_> {
    fn from(value: Option<i32>) -> Self {
        Arg::Int(value.map(i64::from))
    }
}

impl From<bool> for Arg<'_> {
    fn from(value: bool) -> Self {
        Arg::Bool(value)
    }
}

impl From<DateTime<Utc>> for Arg<'_> {
    fn from(value: DateTime<Utc>) -> Self {
        Arg::Time(Some(value))
    }
}

impl From<Option<DateTime<Utc>>> for Arg<'_> {
    fn from(value: Option<DateTime<Utc>>) -> Self {
        Arg::Time(value)
    }
}

impl<'a> From<&'a serde_json::Value> for Arg<'a> {
    fn from(value: &'a serde_json::Value) -> Self {
        Arg::Json(Some(value))
    }
}

impl<'a> From<Option<&'a serde_json::Value>> for Arg<'a> {
    fn from(value: Option<&'a serde_json::Value>) -> Self {
        Arg::Json(value)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(value: &'a [u8]) -> Self {
        Arg::Bytes(value)
    }
}

/// A connection of either backend: pooled, or inside a transaction.
pub(crate) enum Handle<P, S> {
    Postgres(P),
    Sqlite(S),
}

/// A connection taken from the pool for one statement.
pub(crate) type Pooled = Handle<PoolConnection<Postgres>, PoolConnection<Sqlite>>;

/// A transaction. On SQLite it starts with `BEGIN IMMEDIATE`, taking the write lock up front,
/// so that it never fails half-way on a lock upgrade.
pub(crate) type Tx = Handle<Transaction<'static, Postgres>, SqliteTx>;

/// A SQLite transaction and this process's turn to write, given back when it ends.
pub(crate) struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
    _turn: OwnedMutexGuard<()>,
}

impl SqliteTx {
    pub(crate) fn new(tx: Transaction<'static, Sqlite>, turn: OwnedMutexGuard<()>) -> SqliteTx {
        SqliteTx { tx, _turn: turn }
    }
}

impl Deref for SqliteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

impl<P, S> Handle<P, S>
where
    P: DerefMut<Target = PgConnection>,
    S: DerefMut<Target = SqliteConnection>,
{
    /// Runs a statement; returns the number of rows it changed.
    pub(crate) async fn execute(&mut self, query: Query<'_>) -> Result<u64, Error> {
        let result = match self {
            Handle::Postgres(conn) => query
                .postgres()
                .execute(&mut **conn)
                .await
                .map(|done| done.rows_affected()),
            Handle::Sqlite(conn) => query
                .sqlite()
                .execute(&mut **conn)
                .await
                .map(|done| done.rows_affected()),
        };
        result.map_err(|source| query.error(source))
    }

    pub(crate) async fn fetch_all<T>(
        &mut self,
        query: Query<'_>,
        decode: impl Fn(&Row<'_>) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        match self {
            Handle::Postgres(conn) => {
                let rows = query
                    .postgres()
                    .fetch_all(&mut **conn)
                    .await
                    .map_err(|source| query.error(source))?;
                rows.iter().map(|row| decode(&Row::Postgres(row))).collect()
            }
            Handle::Sqlite(conn) => {
                let rows = query
                    .sqlite()
                    .fetch_all(&mut **conn)
                    .await
                    .map_err(|source| query.error(source))?;
                rows.iter().map(|row| decode(&Row::Sqlite(row))).collect()
            }
        }
    }

    pub(crate) async fn fetch_optional<T>(
        &mut self,
        query: Query<'_>,
        decode: impl Fn(&Row<'_>) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        match self {
            Handle::Postgres(conn) => {
                let row = query
                    .postgres()
                    .fetch_optional(&mut **conn)
                    .await
                    .map_err(|source| query.error(source))?;
                row.map(|row| decode(&Row::Postgres(&row))).transpose()
            }
            Handle::Sqlite(conn) => {
                let row = query
                    .sqlite()
                    .fetch_optional(&mut **conn)
                    .await
                    .map_err(|source| query.error(source))?;
                row.map(|row| decode(&Row::Sqlite(&row))).transpose()
            }
        }
    }

    /// Fetches the one row the query always yields (an aggregate, or `RETURNING` of an insert
    /// that cannot be skipped).
    pub(crate) async fn fetch_one<T>(
        &mut self,
        query: Query<'_>,
        decode: impl Fn(&Row<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let what = query.what;
        self.fetch_optional(query, decode)
            .await?
            .ok_or(Error::Database {
                what,
                source: sqlx::Error::RowNotFound,
            })
    }
}

impl Tx {
    /// Commits; deferred constraints are checked here, so this can fail like a write.
    pub(crate) async fn commit(self, what: &'static str) -> Result<(), Error> {
        let result = match self {
            Handle::Postgres(tx) => tx.commit().await,
            Handle::Sqlite(tx) => tx.tx.commit().await,
        };
        result.map_err(|source| Error::Database { what, source })
    }
}

/// A value type both backends decode.
pub(crate) trait Column:
    Sized + for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

impl<T> Column for T where
    T: for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

/// A result row of either backend, read by column name.
pub(crate) enum Row<'r> {
    Postgres(&'r PgRow),
    Sqlite(&'r SqliteRow),
}

impl Row<'_> {
    pub(crate) fn get<T: Column>(&self, column: &'static str) -> Result<T, Error> {
        let value = match self {
            Row::Postgres(row) => row.try_get(column),
            Row::Sqlite(row) => row.try_get(column),
        };
        value.map_err(|error| Error::Corrupt {
            column,
            message: error.to_string(),
        })
    }

    /// An id of updraft-core (`DagId`, `TaskId`), checked as it is read.
    pub(crate) fn id<T>(&self, column: &'static str) -> Result<T, Error>
    where
        T: TryFrom<String, Error = IdError>,
    {
        T::try_from(self.get::<String>(column)?).map_err(|error| corrupt(column, error))
    }

    pub(crate) fn opt_id<T>(&self, column: &'static str) -> Result<Option<T>, Error>
    where
        T: TryFrom<String, Error = IdError>,
    {
        self.get::<Option<String>>(column)?
            .map(|text| T::try_from(text).map_err(|error| corrupt(column, error)))
            .transpose()
    }

    /// A row id of updraft-core (`DagRunId`, `TaskInstanceId`, `BackfillId`).
    pub(crate) fn row_id<T: From<i64>>(&self, column: &'static str) -> Result<T, Error> {
        self.get::<i64>(column).map(T::from)
    }

    pub(crate) fn opt_row_id<T: From<i64>>(
        &self,
        column: &'static str,
    ) -> Result<Option<T>, Error> {
        Ok(self.get::<Option<i64>>(column)?.map(T::from))
    }

    /// A name of a closed set (a state, a run type, a role).
    pub(crate) fn name<T>(&self, column: &'static str) -> Result<T, Error>
    where
        T: FromStr<Err = UnknownName>,
    {
        self.get::<String>(column)?
            .parse()
            .map_err(|error| corrupt(column, error))
    }

    /// A nullable text column parsed into `T`.
    pub(crate) fn parsed<T>(&self, column: &'static str) -> Result<Option<T>, Error>
    where
        T: FromStr<Err: std::fmt::Display>,
    {
        self.get::<Option<String>>(column)?
            .map(|text| text.parse())
            .transpose()
            .map_err(|error| corrupt(column, error))
    }

    /// A JSON column, deserialized into `T`.
    pub(crate) fn json<T>(&self, column: &'static str) -> Result<T, Error>
    where
        T: DeserializeOwned + 'static,
    {
        self.get::<Json<T>>(column).map(|json| json.0)
    }
}

fn corrupt(column: &'static str, error: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        column,
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::query;

    #[test]
    fn only_a_plain_select_counts_as_a_read() {
        let cases = [
            ("SELECT 1", false),
            ("\n  select id FROM dag", false),
            ("INSERT INTO pool VALUES ($1)", true),
            ("UPDATE task_try SET pid = $1", true),
            ("DELETE FROM session", true),
            (
                "WITH moved AS (UPDATE dag SET paused = true RETURNING id) SELECT id FROM moved",
                true,
            ),
        ];
        for (sql, writes) in cases {
            assert_eq!(query("test", sql).may_write(), writes, "{sql}");
        }
    }
}
