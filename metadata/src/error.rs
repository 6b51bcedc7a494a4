//! The errors of the store. Callers branch on `NotFound`, `Conflict`, `Schema` and the illegal
//! transitions; `Database` is broken machinery and says which operation failed.

use updraft_core::state::{DagRunState, TaskState};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL names no backend we have. The URL is redacted.
    #[error(
        "unsupported database url '{url}': use postgres://USER@HOST:PORT/DATABASE or sqlite:PATH"
    )]
    UnsupportedUrl { url: String },

    /// The URL names a backend but cannot be used as given.
    #[error("invalid database url '{url}': {source}")]
    InvalidUrl { url: String, source: sqlx::Error },

    /// The folder of a SQLite file could not be created.
    #[error("cannot create the folder {} for the SQLite database: {source}", path.display())]
    SqliteFolder {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The SQLite file could not be created (readable by its owner only).
    #[error("cannot create the SQLite database {}: {source}", path.display())]
    SqliteFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    /// The database did not answer. The URL is redacted.
    #[error("cannot connect to the database at {url}: {source}")]
    Connect { url: String, source: sqlx::Error },

    /// The schema is not the one this build knows (unmigrated, newer, dirty, modified); the
    /// message says what to do.
    #[error("{0}")]
    Schema(String),

    /// Applying migrations failed.
    #[error("migrating the database at {url} failed: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },

    /// What was asked for does not exist, e.g. "dag 'sales'".
    #[error("{0} not found")]
    NotFound(String),

    /// The write contradicts what is stored, e.g. "user 'ada' already exists".
    #[error("{0}")]
    Conflict(String),

    /// An argument no row may hold, e.g. a negative pool size.
    #[error("{0}")]
    Invalid(String),

    /// `TaskState::can_move_to` forbids this move; nothing was written.
    #[error("a task instance cannot move from {from} to {to}")]
    IllegalTaskTransition { from: TaskState, to: TaskState },

    /// `DagRunState::can_move_to` forbids this move; nothing was written.
    #[error("a dag run cannot move from {from} to {to}")]
    IllegalDagRunTransition { from: DagRunState, to: DagRunState },

    /// A stored value that the types reject: the database was written by something else.
    #[error("unexpected value in column {column}: {message}")]
    Corrupt {
        column: &'static str,
        message: String,
    },

    /// The database failed while doing `what` (e.g. "list dag runs").
    #[error("database error while trying to {what}: {source}")]
    Database {
        what: &'static str,
        source: sqlx::Error,
    },
}

impl Error {
    /// The write broke a unique constraint.
    pub(crate) fn is_unique_violation(&self) -> bool {
        self.database_error()
            .is_some_and(|error| error.is_unique_violation())
    }

    /// The write named a row that does not exist (or deleted one still referenced).
    pub(crate) fn is_foreign_key_violation(&self) -> bool {
        self.database_error()
            .is_some_and(|error| error.is_foreign_key_violation())
    }

    /// The database answered, and refused the statement for the values it was given: a
    /// constraint it breaks, or a value it cannot hold (Postgres's SQLSTATE class 22, e.g. a
    /// NUL byte in text, a timestamp out of range). Trying it again as it is fails again; an
    /// outage, a deadlock or a serialization failure is not this.
    pub fn is_refused(&self) -> bool {
        self.database_error().is_some_and(|error| {
            error.kind() != sqlx::error::ErrorKind::Other
                || error.code().is_some_and(|code| code.starts_with("22"))
        })
    }

    /// Whether Postgres broke a cycle of lock waits by failing this transaction (`40P01`):
    /// rolled back whole, it may be tried again as it is.
    pub fn is_deadlock(&self) -> bool {
        self.database_error()
            .is_some_and(|error| error.code().as_deref() == Some("40P01"))
    }

    fn database_error(&self) -> Option<&dyn sqlx::error::DatabaseError> {
        match self {
            Error::Database {
                source: sqlx::Error::Database(error),
                ..
            } => Some(error.as_ref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Backend;
    use crate::db::query;
    use crate::testing::{TestDatabase, backends};

    /// Two transactions that lock two pools in opposite orders: Postgres fails one of them,
    /// and that error says it is a deadlock, to be tried again (and is not "refused").
    #[tokio::test]
    async fn a_lock_cycle_on_postgres_is_a_deadlock() {
        if !backends().contains(&Backend::Postgres) {
            return;
        }
        let db = TestDatabase::new(Backend::Postgres).await;
        let store = db.store().await;
        store.set_pool("a", 1, None, None).await.unwrap();
        store.set_pool("b", 1, None, None).await.unwrap();
        let lock = |name: &'static str| {
            query(
                "lock a pool",
                "SELECT name FROM pool WHERE name = $1 FOR UPDATE",
            )
            .bind(name)
        };
        let mut first = store.begin("first").await.unwrap();
        let mut second = store.begin("second").await.unwrap();
        first.execute(lock("a")).await.unwrap();
        second.execute(lock("b")).await.unwrap();
        let (one, two) = tokio::join!(first.execute(lock("b")), second.execute(lock("a")));
        let error = match (one, two) {
            (Err(error), Ok(_)) | (Ok(_), Err(error)) => error,
            other => panic!("one of them fails: {other:?}"),
        };
        assert!(error.is_deadlock(), "{error}");
        assert!(!error.is_refused(), "{error}");
    }
}
