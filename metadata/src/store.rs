//! [`Store`]: a connection pool to Postgres or SQLite, opened from a URL.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Mutex, OwnedMutexGuard};
use updraft_core::ids::DagRunId;

use crate::db::{Handle, Pooled, Query, Row, SqliteTx, Tx, query};
use crate::doorbell::Doorbell;
use crate::signal::{Changes, Signals, Topic, Wakeups};
use crate::{Error, redact_url};

/// How long a SQLite writer waits for another one before it fails with "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The kind of database behind a [`Store`]. A closed set: Postgres for production and more
/// than one machine, SQLite embedded for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// The backend a URL names: `postgres://`, `postgresql://` or `sqlite:`.
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The metadata database: every query of the system is a method of this type (in the modules
/// named after the tables). Cheap to clone; clones share one pool.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    /// The URL with its password redacted: the only form that appears in messages.
    url: Arc<str>,
    signals: Arc<Signals>,
    /// Wake-ups to and from other processes on the same SQLite file (not in memory).
    doorbell: Option<Arc<Doorbell>>,
}

#[derive(Clone)]
pub(crate) enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool, WriteTurns),
}

/// SQLite has one writer at a time. A writer that finds the lock taken sleeps and polls (the
/// busy handler backs off to 100 ms naps), so many writers in one process lose much of their
/// time asleep. Instead, this process's writers queue here first, in arrival order (tokio's
/// mutex is fair), and each meets SQLite's lock free unless another process holds it.
#[derive(Clone, Default)]
pub(crate) struct WriteTurns(Arc<Mutex<()>>);

impl WriteTurns {
    pub(crate) async fn take(&self) -> OwnedMutexGuard<()> {
        self.0.clone().lock_owned().await
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

/// How many connections a store holds to a Postgres server. Each one is a server process,
/// which pays to start (a fork, its catalog caches, and the plans of its prepared statements).
/// SQLite ignores this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// Up to 10, opened as they are needed and closed after 10 idle minutes: the scheduler, the
    /// web server and the CLI.
    OnDemand,
    /// This many, opened at once and kept: a worker (its loop, its end writer, its logs'
    /// shipping and its listener, which never need more). With ten opened on demand, each of
    /// four workers started ten server processes as its first tries ended, and the planning
    /// and page faults of their first statements cost a sixth of the `workers` benchmark.
    Kept(u32),
}

impl Store {
    /// Connects to `postgres://...`/`postgresql://...` or `sqlite:PATH` without looking at the
    /// schema (for `updraft db migrate` and `db check`; everything else uses [`Store::open`]).
    ///
    /// A SQLite file and its folder are created when missing; SQLite runs in WAL mode with a busy
    /// timeout and foreign keys on. `sqlite::memory:` gives a private in-memory database.
    pub async fn connect(url: &str) -> Result<Store, Error> {
        Store::connect_with(url, Connections::OnDemand).await
    }

    /// [`Store::connect`] with `connections` to Postgres.
    pub async fn connect_with(url: &str, connections: Connections) -> Result<Store, Error> {
        let redacted = redact_url(url);
        let (pool, doorbell) = match Backend::of_url(url) {
            Some(Backend::Postgres) => (
                Pool::Postgres(connect_postgres(url, &redacted, connections).await?),
                None,
            ),
            Some(Backend::Sqlite) => {
                let (pool, file) = connect_sqlite(url, &redacted).await?;
                let doorbell = file.map(|file| Arc::new(Doorbell::new(&file)));
                (Pool::Sqlite(pool, WriteTurns::default()), doorbell)
            }
            None => return Err(Error::UnsupportedUrl { url: redacted }),
        };
        Ok(Store {
            pool,
            url: redacted.into(),
            signals: Arc::new(Signals::new()),
            doorbell,
        })
    }

    /// Connects and checks that the schema is exactly the one this build knows; anything else
    /// (unmigrated, newer, dirty, modified) is an [`Error::Schema`] that says what to do. Every
    /// process but `updraft db` opens the database this way.
    pub async fn open(url: &str) -> Result<Store, Error> {
        Store::open_with(url, Connections::OnDemand).await
    }

    /// [`Store::open`] with `connections` to Postgres.
    pub async fn open_with(url: &str, connections: Connections) -> Result<Store, Error> {
        let store = Store::connect_with(url, connections).await?;
        match store.schema_status().await?.problem(&store.url) {
            None => Ok(store),
            Some(problem) => {
                store.close().await;
                Err(Error::Schema(problem))
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Postgres(_) => Backend::Postgres,
            Pool::Sqlite(..) => Backend::Sqlite,
        }
    }

    /// The URL this store was opened with, its password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes every connection of the pool (of every clone), waiting for those in use.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres(pool) => pool.close().await,
            Pool::Sqlite(pool, _) => pool.close().await,
        }
    }

    /// The wake-ups of `topic`, from this process and from every process: on Postgres by
    /// LISTEN/NOTIFY, on a SQLite file by its doorbell.
    pub fn subscribe(&self, topic: Topic) -> Wakeups {
        let postgres = match &self.pool {
            Pool::Postgres(pool) => Some(pool),
            Pool::Sqlite(..) => None,
        };
        if let Some(doorbell) = &self.doorbell {
            doorbell.listen(&self.signals);
        }
        Wakeups::new(&self.signals, topic, postgres)
    }

    /// Wakes the loops of `topic` in this process and, on a SQLite file, in the others (on
    /// Postgres they learn from `notify_in`); a scheduler learns that anything may have
    /// changed.
    pub fn wake(&self, topic: Topic) {
        self.signals.bump(topic);
        if let Some(doorbell) = &self.doorbell {
            doorbell.ring(topic, "*");
        }
    }

    /// Wakes the schedulers of this process for `runs`, and on a SQLite file those of the
    /// others (on Postgres they learn from `notify_runs_in`).
    pub(crate) fn wake_runs(&self, runs: &[DagRunId]) {
        if !runs.is_empty() {
            self.wake_schedulers(&Changes::of_runs(runs));
        }
    }

    /// Tells the schedulers of this process what changed, and on a SQLite file those of the
    /// others (on Postgres they learn from the notifications of the write's transaction).
    pub(crate) fn wake_schedulers(&self, changes: &Changes) {
        self.signals.tell(changes);
        if let Some(doorbell) = &self.doorbell {
            for payload in changes.payloads() {
                doorbell.ring(Topic::Scheduler, &payload);
            }
        }
    }

    /// Notifies other processes of `topic` when `tx` commits (Postgres only; SQLite has no
    /// channel between processes and they poll). Call [`Store::wake`] after the commit.
    pub(crate) async fn notify_in(&self, tx: &mut Tx, topic: Topic) -> Result<(), Error> {
        if let Handle::Postgres(_) = tx {
            tx.execute(topic.pg_notify()).await?;
        }
        Ok(())
    }

    /// Notifies the schedulers of other processes of `runs` when `tx` commits (Postgres only).
    /// Call [`Store::wake_runs`] after the commit.
    pub(crate) async fn notify_runs_in(&self, tx: &mut Tx, runs: &[DagRunId]) -> Result<(), Error> {
        if let Handle::Postgres(_) = tx {
            for payload in Changes::of_runs(runs).payloads() {
                tx.execute(
                    query(
                        "notify the scheduler",
                        "SELECT pg_notify('updraft_scheduler', $1)",
                    )
                    .bind(payload.as_str()),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// A connection from the pool for `query`; on SQLite, a statement that may write first
    /// waits for this process's turn to write (see [`WriteTurns`]), held until it is done.
    async fn pooled(
        &self,
        query: &Query<'_>,
    ) -> Result<(Pooled, Option<OwnedMutexGuard<()>>), Error> {
        let connection = match &self.pool {
            Pool::Postgres(pool) => pool.acquire().await.map(|c| (Handle::Postgres(c), None)),
            Pool::Sqlite(pool, turns) => {
                let turn = match query.may_write() {
                    true => Some(turns.take().await),
                    false => None,
                };
                pool.acquire().await.map(|c| (Handle::Sqlite(c), turn))
            }
        };
        connection.map_err(|source| Error::Database {
            what: "get a connection from the pool",
            source,
        })
    }

    /// Starts a transaction; on SQLite with `BEGIN IMMEDIATE` (see [`Tx`]), in this process's
    /// turn to write (see [`WriteTurns`]).
    pub(crate) async fn begin(&self, what: &'static str) -> Result<Tx, Error> {
        let tx = match &self.pool {
            Pool::Postgres(pool) => pool.begin().await.map(Handle::Postgres),
            Pool::Sqlite(pool, turns) => {
                let turn = turns.take().await;
                pool.begin_with("BEGIN IMMEDIATE")
                    .await
                    .map(|tx| Handle::Sqlite(SqliteTx::new(tx, turn)))
            }
        };
        tx.map_err(|source| Error::Database { what, source })
    }

    pub(crate) async fn execute(&self, query: Query<'_>) -> Result<u64, Error> {
        let (mut connection, _turn) = self.pooled(&query).await?;
        connection.execute(query).await
    }

    pub(crate) async fn fetch_all<T>(
        &self,
        query: Query<'_>,
        decode: impl Fn(&Row<'_>) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let (mut connection, _turn) = self.pooled(&query).await?;
        connection.fetch_all(query, decode).await
    }

    pub(crate) async fn fetch_optional<T>(
        &self,
        query: Query<'_>,
        decode: impl Fn(&Row<'_>) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        let (mut connection, _turn) = self.pooled(&query).await?;
        connection.fetch_optional(query, decode).await
    }

    pub(crate) async fn fetch_one<T>(
        &self,
        query: Query<'_>,
        decode: impl Fn(&Row<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let (mut connection, _turn) = self.pooled(&query).await?;
        connection.fetch_one(query, decode).await
    }
}

async fn connect_postgres(
    url: &str,
    redacted: &str,
    connections: Connections,
) -> Result<PgPool, Error> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|source| Error::InvalidUrl {
            url: redacted.to_owned(),
            source,
        })?
        .application_name("updraft");
    // One direct connection first: a pool retries a refused connection until its timeout and
    // then reports only "timed out", while this reports why.
    let probe = options.connect().await.map_err(|source| Error::Connect {
        url: redacted.to_owned(),
        source,
    })?;
    // A failed goodbye to a server that answered is no reason to refuse it.
    let _ = probe.close().await;
    let pool = match connections {
        Connections::OnDemand => PgPoolOptions::new(),
        Connections::Kept(count) => PgPoolOptions::new()
            .max_connections(count)
            .min_connections(count)
            .idle_timeout(None),
    };
    Ok(pool.connect_lazy_with(options))
}

/// A pool of the SQLite database of `url`, and its file (`None` in memory).
async fn connect_sqlite(url: &str, redacted: &str) -> Result<(SqlitePool, Option<PathBuf>), Error> {
    let invalid = |source| Error::InvalidUrl {
        url: redacted.to_owned(),
        source,
    };
    let options = SqliteConnectOptions::from_str(url)
        .map_err(invalid)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let file = (!in_memory).then(|| options.get_filename().to_path_buf());
    let pool = if in_memory {
        // An in-memory database lives as long as one connection to it: keep exactly one.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        if let Some(folder) = options.get_filename().parent()
            && !folder.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(folder)
                .await
                .map_err(|source| Error::SqliteFolder {
                    path: folder.to_owned(),
                    source,
                })?;
        }
        create_private(options.get_filename()).map_err(|source| Error::SqliteFile {
            path: options.get_filename().to_owned(),
            source,
        })?;
        SqlitePoolOptions::new()
    };
    // Processes that open a new file at the same moment (a scheduler and a worker started
    // together) race to switch it to WAL, and the loser gets "database is locked" without the
    // busy handler being asked: try again until the busy timeout.
    let deadline = tokio::time::Instant::now() + SQLITE_BUSY_TIMEOUT;
    loop {
        match pool.clone().connect_with(options.clone()).await {
            Err(source) if is_locked(&source) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            connected => {
                let pool = connected.map_err(|source| Error::Connect {
                    url: redacted.to_owned(),
                    source,
                })?;
                return Ok((pool, file));
            }
        }
    }
}

/// Creates the database file `path` readable and writable by its owner only (0600) when it
/// does not exist, before SQLite opens it: SQLite would create it 0644, readable by every user
/// of the machine, with the password hashes and logs inside. Its `-wal` and `-shm` files take
/// the main file's mode. An existing file is left as it is.
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => Err(error),
        _ => Ok(()),
    }
}

/// SQLITE_BUSY (5) and its extended codes: another connection holds a lock.
fn is_locked(error: &sqlx::Error) -> bool {
    let code = match error {
        sqlx::Error::Database(error) => error.code(),
        _ => None,
    };
    code.and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}
