//! Throwaway databases: a fresh SQLite file, or a fresh database on a Postgres server, removed
//! when dropped, and what only measurements on them need: bulk-seeded history and the raw
//! claim floor. `updraft-bench` measures on them, and the tests' harness
//! (`updraft_metadata::testing`, feature `testing`) gives one to each test. Feature `scratch`:
//! the `updraft` binary carries none of it.

use std::hash::{BuildHasher, Hasher, RandomState};

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};
use tempfile::TempDir;

use chrono::{DateTime, Utc};
use updraft_core::ids::{DagId, TaskId};

use crate::db::{query, query_split};
use crate::{Backend, DEFAULT_POOL, Error, Store, redact_url};

/// A fresh, empty (unmigrated) database of one backend, removed when dropped.
pub struct ScratchDatabase {
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

impl ScratchDatabase {
    /// A new SQLite file in a temporary folder.
    pub fn sqlite() -> Result<ScratchDatabase, Error> {
        let folder = tempfile::tempdir().map_err(|source| Error::SqliteFolder {
            path: std::env::temp_dir(),
            source,
        })?;
        let url = format!("sqlite:{}", folder.path().join("updraft.db").display());
        Ok(ScratchDatabase {
            backend: Backend::Sqlite,
            url,
            cleanup: Cleanup::Folder { _folder: folder },
        })
    }

    /// Creates `updraft_scratch_<random>` on the server of `admin_url` (a user who may create
    /// databases).
    pub async fn postgres(admin_url: &str) -> Result<ScratchDatabase, Error> {
        let redacted = redact_url(admin_url);
        let mut admin =
            PgConnection::connect(admin_url)
                .await
                .map_err(|source| Error::Connect {
                    url: redacted.clone(),
                    source,
                })?;
        let name = format!("updraft_scratch_{:016x}", random());
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .map_err(|source| Error::Database {
                what: "create a scratch database",
                source,
            })?;
        // The database exists now; closing politely is not worth failing for.
        let _ = admin.close().await;
        Ok(ScratchDatabase {
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

    /// The database's URL (with its password, if the server's URL has one).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let Cleanup::PostgresDatabase { admin_url, name } = &self.cleanup else {
            return;
        };
        // Drop cannot await and may run inside a runtime (or during a panic): drop the database
        // from a thread with a runtime of its own. FORCE ends connections left open.
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
        let url = redact_url(&self.url);
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop scratch database {url}: {error}"),
            Err(_) => eprintln!("could not drop scratch database {url}: the thread panicked"),
        }
    }
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

/// What [`Store::seed_finished_runs`] makes: `runs` finished runs of one stored DAG version,
/// each with a task instance in `success` per task, as a long-lived deployment has them.
#[derive(Debug, Clone, Copy)]
pub struct SeedRuns<'a> {
    pub dag_id: &'a DagId,
    /// A version of the DAG already stored (the runs reference it).
    pub version_hash: &'a str,
    pub task_ids: &'a [TaskId],
    pub runs: i64,
    /// The logical date of run 1 (whole seconds); each next run is `step` later.
    pub first: DateTime<Utc>,
    pub step: chrono::Duration,
}

/// The run id of the `n`-th seeded run (from 1): `seed_000001`.
pub fn seeded_run_id(n: i64) -> String {
    format!("seed_{n:06}")
}

impl Store {
    /// Bulk-inserts finished runs and their task instances for measuring reads at scale
    /// (`updraft-bench ui-grid`), in one transaction. The database generates the rows
    /// (`generate_series` on Postgres, a recursive CTE on SQLite): a million task instances
    /// are two statements, not a million round trips. Runs are `scheduled`, `success`, with a
    /// data interval of `step`; tries and logs are not made. Returns the task instances made.
    pub async fn seed_finished_runs(&self, seed: SeedRuns<'_>) -> Result<u64, Error> {
        if seed.runs < 1 || seed.task_ids.is_empty() || seed.step.num_seconds() < 1 {
            return Err(Error::Invalid(
                "seeding needs at least one run, one task and a step of a second or more"
                    .to_owned(),
            ));
        }
        let task_ids = serde_json::json!(seed.task_ids);
        let mut tx = self.begin("seed runs").await?;
        tx.execute(
            query_split(
                "seed runs",
                "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, \
                   data_interval_start, data_interval_end, run_after, state, conf, version_hash, \
                   queued_at, start_date, end_date) \
                 SELECT $1, 'seed_' || lpad(n::text, 6, '0'), 'scheduled', d, d, e, e, \
                   'success', '{}'::jsonb, $2, e, e, e + interval '1 minute' \
                 FROM generate_series(1, $3::bigint) AS n, \
                   LATERAL (SELECT to_timestamp($4::bigint + (n - 1) * $5::bigint) AS d) AS l, \
                   LATERAL (SELECT l.d + $5::bigint * interval '1 second' AS e) AS m",
                "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < $3), \
                 dated(n, d, e) AS (SELECT n, $4 + (n - 1) * $5, $4 + n * $5 FROM seq) \
                 INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, \
                   data_interval_start, data_interval_end, run_after, state, conf, version_hash, \
                   queued_at, start_date, end_date) \
                 SELECT $1, printf('seed_%06d', n), 'scheduled', \
                   strftime('%Y-%m-%dT%H:%M:%S.000000Z', d, 'unixepoch'), \
                   strftime('%Y-%m-%dT%H:%M:%S.000000Z', d, 'unixepoch'), \
                   strftime('%Y-%m-%dT%H:%M:%S.000000Z', e, 'unixepoch'), \
                   strftime('%Y-%m-%dT%H:%M:%S.000000Z', e, 'unixepoch'), \
                   'success', '{}', $2, \
                   strftime('%Y-%m-%dT%H:%M:%S.000000Z', e, 'unixepoch'), \
                   strftime('%Y-%m-%dT%H:%M:%S.000000Z', e, 'unixepoch'), \
                   strftime('%Y-%m-%dT%H:%M:%S.000000Z', e + 60, 'unixepoch') \
                 FROM dated",
            )
            .bind(seed.dag_id.as_str())
            .bind(seed.version_hash)
            .bind(seed.runs)
            .bind(seed.first.timestamp())
            .bind(seed.step.num_seconds()),
        )
        .await?;
        let made = tx
            .execute(
                query_split(
                    "seed task instances",
                    "INSERT INTO task_instance (dag_run_id, dag_id, run_id, task_id, state, \
                       try_number, max_tries, pool, pool_slots, queue, priority_weight, queued_at, \
                       start_date, end_date, hostname, updated_at) \
                     SELECT r.id, r.dag_id, r.run_id, t.task_id, 'success', 1, 0, $3, 1, \
                       'default', 1, r.queued_at, r.start_date, r.end_date, 'seed', r.end_date \
                     FROM dag_run r CROSS JOIN jsonb_array_elements_text($2::jsonb) AS t(task_id) \
                     WHERE r.dag_id = $1 AND r.run_id LIKE 'seed\\_%' ESCAPE '\\' \
                     ORDER BY r.id",
                    "INSERT INTO task_instance (dag_run_id, dag_id, run_id, task_id, state, \
                       try_number, max_tries, pool, pool_slots, queue, priority_weight, queued_at, \
                       start_date, end_date, hostname, updated_at) \
                     SELECT r.id, r.dag_id, r.run_id, t.value, 'success', 1, 0, $3, 1, \
                       'default', 1, r.queued_at, r.start_date, r.end_date, 'seed', r.end_date \
                     FROM dag_run r CROSS JOIN json_each($2) AS t \
                     WHERE r.dag_id = $1 AND r.run_id LIKE 'seed\\_%' ESCAPE '\\' \
                     ORDER BY r.id, t.key",
                )
                .bind(seed.dag_id.as_str())
                .bind(&task_ids)
                .bind(DEFAULT_POOL),
            )
            .await?;
        tx.commit("seed runs").await?;
        // What autovacuum does soon after a table grows by this much: without statistics the
        // planner takes a million rows for a few pages and scans them all. (SQLite keeps no
        // statistics unless asked, and Updraft never asks.)
        if self.backend() == Backend::Postgres {
            self.execute(query(
                "analyze the seeded tables",
                "ANALYZE dag_run, task_instance",
            ))
            .await?;
        }
        Ok(made)
    }
}

/// The raw claim floor of `updraft-bench workers`: the rate at which the database hands out
/// rows with `FOR UPDATE SKIP LOCKED` alone, on a table of its own in a scratch database, with
/// none of a real claim's bookkeeping (try rows, the run's version, heartbeats, logs, ends).
impl Store {
    /// Creates table `claim_floor` with `rows` rows waiting to be claimed. Postgres only.
    pub async fn prepare_claim_floor(&self, rows: i64) -> Result<(), Error> {
        if self.backend() != Backend::Postgres {
            return Err(Error::Invalid(
                "the SKIP LOCKED claim floor is measured on Postgres".to_owned(),
            ));
        }
        let mut tx = self.begin("prepare the claim floor").await?;
        tx.execute(query(
            "create the claim floor's table",
            "CREATE TABLE claim_floor (id BIGINT PRIMARY KEY, claimed_by TEXT)",
        ))
        .await?;
        // Partial, as the queue's index of task instances is (`task_instance_queued_idx`).
        tx.execute(query(
            "index the claim floor's table",
            "CREATE INDEX claim_floor_unclaimed ON claim_floor (id) WHERE claimed_by IS NULL",
        ))
        .await?;
        tx.execute(
            query(
                "fill the claim floor's table",
                "INSERT INTO claim_floor (id) SELECT generate_series(1, $1::bigint)",
            )
            .bind(rows),
        )
        .await?;
        tx.commit("prepare the claim floor").await
    }

    /// Claims one unclaimed row of `claim_floor` for `claimer` (the lowest id, skipping rows
    /// other claimers hold locked), as a worker claims a queued task instance; `None` when
    /// none is left.
    pub async fn claim_floor_row(&self, claimer: &str) -> Result<Option<i64>, Error> {
        self.fetch_optional(
            query(
                "claim a row of the claim floor",
                "UPDATE claim_floor SET claimed_by = $1 \
                 WHERE id = (SELECT id FROM claim_floor WHERE claimed_by IS NULL \
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING id",
            )
            .bind(claimer),
            |row| row.get("id"),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_that_names_it_without_its_password() {
        // Port 1 on the loopback: nothing listens there.
        let problem = ScratchDatabase::postgres("postgres://ada:s3cret@127.0.0.1:1/postgres")
            .await
            .err()
            .expect("nothing listens on port 1")
            .to_string();
        assert!(
            problem
                .starts_with("cannot connect to the database at postgres://ada:***@127.0.0.1:1/"),
            "{problem}"
        );
        assert!(!problem.contains("s3cret"));
    }

    #[test]
    fn scratch_databases_are_named_in_the_server_url() {
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
