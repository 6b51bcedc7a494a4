//! Fresh databases on both backends for tests (feature `testing`): this crate's suite and the
//! binary's end-to-end tests run every test body on SQLite and on Postgres with
//! [`each_backend`].
//!
//! - SQLite: a new file in a temporary folder, removed afterwards.
//! - Postgres: a new database `updraft_test_<random>` on the server of
//!   `UPDRAFT_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), dropped
//!   afterwards, even when the test panics.
//!
//! When that server does not answer, the test fails and says how to start one. Locally,
//! `UPDRAFT_TEST_POSTGRES=skip` runs only the SQLite half; under `CI=true` that variable is
//! ignored, so CI always runs both. These variables are read here, at the edge of the tests,
//! and nowhere else.

use std::future::Future;

use crate::db::query;
use crate::{Backend, ScratchDatabase, Store};

/// The server tests create their Postgres databases on.
pub const POSTGRES_URL_VARIABLE: &str = "UPDRAFT_TEST_POSTGRES_URL";
/// `skip` leaves the Postgres half out (not under CI).
pub const POSTGRES_SKIP_VARIABLE: &str = "UPDRAFT_TEST_POSTGRES";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Runs `body` once per backend (SQLite, then Postgres), each time with a fresh, empty
/// database. Which backend a failure happened on is printed before each run.
///
/// ```no_run
/// # async fn example() {
/// use updraft_metadata::testing::each_backend;
/// each_backend(|db| async move {
///     let store = db.store().await; // migrated
///     assert!(store.list_dags().await.unwrap().is_empty());
/// })
/// .await;
/// # }
/// ```
pub async fn each_backend<F, Fut>(mut body: F)
where
    F: FnMut(TestDatabase) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in backends() {
        eprintln!("-- on {backend}");
        body(TestDatabase::new(backend).await).await;
    }
}

/// The backends tests run on: both, unless `UPDRAFT_TEST_POSTGRES=skip` outside CI.
pub fn backends() -> Vec<Backend> {
    let skip = std::env::var(POSTGRES_SKIP_VARIABLE).ok();
    let ci = std::env::var("CI").ok();
    if postgres_skipped(skip.as_deref(), ci.as_deref()) {
        vec![Backend::Sqlite]
    } else {
        vec![Backend::Sqlite, Backend::Postgres]
    }
}

fn postgres_skipped(skip: Option<&str>, ci: Option<&str>) -> bool {
    skip == Some("skip") && !is_ci(ci)
}

fn is_ci(ci: Option<&str>) -> bool {
    matches!(ci, Some(value) if !value.is_empty() && value != "false" && value != "0")
}

/// A fresh, empty (unmigrated) database of one backend, removed when dropped.
pub struct TestDatabase {
    scratch: ScratchDatabase,
}

impl TestDatabase {
    /// Creates the database. Panics with instructions when Postgres is not reachable.
    pub async fn new(backend: Backend) -> TestDatabase {
        let scratch = match backend {
            Backend::Sqlite => ScratchDatabase::sqlite()
                .unwrap_or_else(|error| panic!("a SQLite test database: {error}")),
            Backend::Postgres => {
                let admin_url = std::env::var(POSTGRES_URL_VARIABLE)
                    .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
                let ci = std::env::var("CI").ok();
                match ScratchDatabase::postgres(&admin_url).await {
                    Ok(database) => database,
                    Err(error) => {
                        panic!("{}", unreachable_message(&error.to_string(), ci.as_deref()))
                    }
                }
            }
        };
        TestDatabase { scratch }
    }

    pub fn backend(&self) -> Backend {
        self.scratch.backend()
    }

    /// The database's URL, e.g. for the binary's `--database-url`.
    pub fn url(&self) -> &str {
        self.scratch.url()
    }

    /// A store on the database as it is (unmigrated when new).
    pub async fn connect(&self) -> Store {
        Store::connect(self.url())
            .await
            .unwrap_or_else(|error| panic!("connecting to the test database: {error}"))
    }

    /// A store on the database, migrated.
    pub async fn store(&self) -> Store {
        let store = self.connect().await;
        store
            .migrate()
            .await
            .unwrap_or_else(|error| panic!("migrating the test database: {error}"));
        store
    }

    /// Runs raw SQL on the database, for tests that tamper with what the store would never
    /// write (the migrations table, invalid values).
    pub async fn execute(&self, sql: &'static str) {
        let store = self.connect().await;
        store
            .execute(query("run test sql", sql))
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
        store.close().await;
    }
}

/// The failure of a test that needs Postgres and found none, with the ways out.
fn unreachable_message(problem: &str, ci: Option<&str>) -> String {
    let skip = if is_ci(ci) {
        format!("({POSTGRES_SKIP_VARIABLE}=skip is ignored here because CI is set: CI runs both.)")
    } else {
        format!(
            "- or set {POSTGRES_SKIP_VARIABLE}=skip to run only the SQLite half locally \
             (ignored when CI=true)."
        )
    };
    format!(
        "{problem}\n\
         These tests run on SQLite and on Postgres. To run the Postgres half:\n\
         - start a Postgres server there (Debian: apt-get install postgresql, then \
           pg_ctlcluster <version> main start; or run .ci/run, which starts a throwaway one),\n\
         - or point {POSTGRES_URL_VARIABLE} at a server where that user may create databases,\n\
         {skip}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipping_postgres_needs_the_variable_and_no_ci() {
        assert!(postgres_skipped(Some("skip"), None));
        assert!(postgres_skipped(Some("skip"), Some("false")));
        assert!(!postgres_skipped(Some("skip"), Some("true")));
        assert!(!postgres_skipped(None, None));
        assert!(!postgres_skipped(Some("yes"), None));
    }

    #[test]
    fn the_unreachable_message_says_how_to_get_postgres_or_skip_it() {
        let local = unreachable_message("Postgres is not reachable at X: refused", None);
        assert!(local.starts_with("Postgres is not reachable at X: refused\n"));
        assert!(local.contains("UPDRAFT_TEST_POSTGRES_URL"));
        assert!(local.contains("set UPDRAFT_TEST_POSTGRES=skip to run only the SQLite half"));
        let ci = unreachable_message("Postgres is not reachable at X: refused", Some("true"));
        assert!(ci.contains("UPDRAFT_TEST_POSTGRES=skip is ignored here because CI is set"));
    }
}
