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
use std::hash::{BuildHasher, Hasher, RandomState};

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};
use tempfile::TempDir;

use crate::db::query;
use crate::{Backend, Store, redact_url};

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
    backend: Backend,
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    /// Dropping the SQLite file's folder removes both.
    Folder {
        _folder: TempDir,
    },
    PostgresDatabase {
        admin_url: String,
        name: String,
    },
}

impl TestDatabase {
    /// Creates the database. Panics with instructions when Postgres is not reachable.
    pub async fn new(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => TestDatabase::sqlite(),
            Backend::Postgres => {
                let admin_url = std::env::var(POSTGRES_URL_VARIABLE)
                    .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
                let ci = std::env::var("CI").ok();
                match TestDatabase::postgres(&admin_url).await {
                    Ok(database) => database,
                    Err(problem) => panic!("{}", unreachable_message(&problem, ci.as_deref())),
                }
            }
        }
    }

    fn sqlite() -> TestDatabase {
        let folder = tempfile::tempdir().expect("a temporary folder for the SQLite test database");
        let url = format!("sqlite:{}", folder.path().join("updraft.db").display());
        TestDatabase {
            backend: Backend::Sqlite,
            url,
            cleanup: Cleanup::Folder { _folder: folder },
        }
    }

    /// Creates `updraft_test_<random>` on the server of `admin_url`; the error says what failed.
    async fn postgres(admin_url: &str) -> Result<TestDatabase, String> {
        let redacted = redact_url(admin_url);
        let mut admin = PgConnection::connect(admin_url)
            .await
            .map_err(|error| format!("Postgres is not reachable at {redacted}: {error}"))?;
        let name = format!("updraft_test_{:016x}", random());
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .map_err(|error| format!("cannot create database {name} at {redacted}: {error}"))?;
        // The database exists now; closing politely is not worth failing the test for.
        let _ = admin.close().await;
        Ok(TestDatabase {
            backend: Backend::Postgres,
            url: with_database(admin_url, &name),
            cleanup: Cleanup::PostgresDatabase {
                admin_url: admin_url.to_owned(),
                name,
            },
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database's URL, e.g. for the binary's `--database-url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A store on the database as it is (unmigrated when new).
    pub async fn connect(&self) -> Store {
        Store::connect(&self.url)
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

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Cleanup::PostgresDatabase { admin_url, name } = &self.cleanup else {
            return;
        };
        // Drop cannot await and may run inside a runtime (or during a panic): drop the database
        // from a thread with a runtime of its own. FORCE ends connections the test left open.
        let (admin_url, name) = (admin_url.clone(), name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|error| error.to_string())?;
                admin
                    .execute(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .await
                    .map_err(|error| error.to_string())?;
                let _ = admin.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop test database {}: {error}", self.url),
            Err(_) => eprintln!(
                "could not drop test database {}: the thread panicked",
                self.url
            ),
        }
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

/// `url` (a server's URL) naming database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

/// A random number without a dependency: std's hasher keys are random per process and differ
/// between calls.
fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.finish()
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

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_that_names_it_without_its_password() {
        // Port 1 on the loopback: nothing listens there.
        let problem = TestDatabase::postgres("postgres://ada:s3cret@127.0.0.1:1/postgres")
            .await
            .err()
            .expect("nothing listens on port 1");
        assert!(
            problem.starts_with("Postgres is not reachable at postgres://ada:***@127.0.0.1:1/"),
            "{problem}"
        );
        assert!(!problem.contains("s3cret"));
    }

    #[test]
    fn test_databases_are_named_in_the_server_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@db/postgres?sslmode=disable", "t1"),
            "postgres://u:p@db/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://db:5433", "t1"),
            "postgres://db:5433/t1"
        );
    }
}
