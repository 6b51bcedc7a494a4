//! Tables `dag`, `dag_version` and `import_error`: what the last DAG file sync found.

use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_core::dag::Dag;
use updraft_core::ids::DagId;
use updraft_core::schedule::RunInterval;

use crate::db::{Handle, Row, Tx, query, query_split};
use crate::{Error, Store};

/// A row of `dag`: a DAG as last synced from its file, with the state users give it (paused)
/// and the scheduler's plan (next run). Not core's parsed `Dag`: that lives in
/// [`DagVersion::serialized`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DagRow {
    pub dag_id: DagId,
    /// The file it was loaded from.
    pub fileloc: String,
    pub is_paused: bool,
    /// False once its file is gone or no longer defines it.
    pub is_active: bool,
    /// The current version (a [`DagVersion`]).
    pub version_hash: String,
    pub last_parsed_at: DateTime<Utc>,
    pub owner: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// The schedule as written; `None`: manual runs only.
    pub schedule: Option<String>,
    pub timezone: String,
    pub max_active_runs: i32,
    pub max_active_tasks: i32,
    /// The next run the scheduler will create, as it last computed it.
    pub next_run: Option<RunInterval>,
}

/// One stored content of a DAG; runs record the hash of the one they started with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DagVersion {
    pub dag_id: DagId,
    pub version_hash: String,
    /// The parsed DAG as the scheduler serialized it.
    pub serialized: serde_json::Value,
    /// The YAML file as it was read.
    pub source: String,
    pub created_at: DateTime<Utc>,
}

/// What a sync found in a DAG file: the input of [`Store::upsert_dag`].
#[derive(Debug, Clone, PartialEq)]
pub struct DagSync {
    pub dag_id: DagId,
    pub fileloc: String,
    pub owner: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub schedule: Option<String>,
    pub timezone: String,
    pub max_active_runs: i32,
    pub max_active_tasks: i32,
    /// `is_paused` of a DAG seen for the first time; a known DAG keeps its own.
    pub paused_on_creation: bool,
    /// Identifies the content: equal hashes, equal DAGs.
    pub version_hash: String,
    pub serialized: serde_json::Value,
    pub source: String,
}

/// What [`Store::upsert_dag`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagSyncOutcome {
    /// The DAG was not known before.
    Created,
    /// Its current version is another one now.
    Changed,
    /// Same version as before (its row was refreshed: last parsed, active).
    Unchanged,
}

/// A DAG file that failed to load, with every problem in `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportError {
    pub filename: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

impl DagRow {
    pub(crate) fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        let next_logical_date: Option<DateTime<Utc>> = row.get("next_logical_date")?;
        // The schema keeps the four next-run columns all set or all NULL.
        let next_run = match next_logical_date {
            None => None,
            Some(logical_date) => Some(RunInterval {
                logical_date,
                data_interval_start: row.get("next_data_interval_start")?,
                data_interval_end: row.get("next_data_interval_end")?,
                run_after: row.get("next_run_after")?,
            }),
        };
        Ok(DagRow {
            dag_id: row.id("dag_id")?,
            fileloc: row.get("fileloc")?,
            is_paused: row.get("is_paused")?,
            is_active: row.get("is_active")?,
            version_hash: row.get("version_hash")?,
            last_parsed_at: row.get("last_parsed_at")?,
            owner: row.get("owner")?,
            description: row.get("description")?,
            tags: row.json("tags")?,
            schedule: row.get("schedule")?,
            timezone: row.get("timezone")?,
            max_active_runs: row.get("max_active_runs")?,
            max_active_tasks: row.get("max_active_tasks")?,
            next_run,
        })
    }
}

impl DagVersion {
    fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(DagVersion {
            dag_id: row.id("dag_id")?,
            version_hash: row.get("version_hash")?,
            serialized: row.get("serialized")?,
            source: row.get("source")?,
            created_at: row.get("created_at")?,
        })
    }
}

impl ImportError {
    fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(ImportError {
            filename: row.get("filename")?,
            message: row.get("message")?,
            at: row.get("at")?,
        })
    }
}

impl Store {
    /// Records what a sync found in a DAG file, in one transaction: the `dag` row is inserted or
    /// updated (and active again), and a `dag_version` row is added only for a hash not stored
    /// yet. `is_paused` and the next run of a known DAG are left as they are.
    pub async fn upsert_dag(
        &self,
        dag: &DagSync,
        now: DateTime<Utc>,
    ) -> Result<DagSyncOutcome, Error> {
        let tags = serde_json::json!(dag.tags);
        let mut tx = self.begin("sync a dag").await?;
        let previous: Option<String> = tx
            .fetch_optional(
                query(
                    "read a dag's version",
                    "SELECT version_hash FROM dag WHERE dag_id = $1",
                )
                .bind(dag.dag_id.as_str()),
                |row| row.get("version_hash"),
            )
            .await?;
        tx.execute(
            query(
                "sync a dag",
                "INSERT INTO dag (dag_id, fileloc, is_paused, is_active, version_hash, \
                     last_parsed_at, owner, description, tags, schedule, timezone, \
                     max_active_runs, max_active_tasks) \
                 VALUES ($1, $2, $3, TRUE, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (dag_id) DO UPDATE SET \
                     fileloc = excluded.fileloc, is_active = TRUE, \
                     version_hash = excluded.version_hash, \
                     last_parsed_at = excluded.last_parsed_at, owner = excluded.owner, \
                     description = excluded.description, tags = excluded.tags, \
                     schedule = excluded.schedule, timezone = excluded.timezone, \
                     max_active_runs = excluded.max_active_runs, \
                     max_active_tasks = excluded.max_active_tasks",
            )
            .bind(dag.dag_id.as_str())
            .bind(dag.fileloc.as_str())
            .bind(dag.paused_on_creation)
            .bind(dag.version_hash.as_str())
            .bind(now)
            .bind(dag.owner.as_str())
            .bind(dag.description.as_deref())
            .bind(&tags)
            .bind(dag.schedule.as_deref())
            .bind(dag.timezone.as_str())
            .bind(dag.max_active_runs)
            .bind(dag.max_active_tasks),
        )
        .await?;
        tx.execute(
            query(
                "store a dag version",
                "INSERT INTO dag_version (dag_id, version_hash, serialized, source, created_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (dag_id, version_hash) DO NOTHING",
            )
            .bind(dag.dag_id.as_str())
            .bind(dag.version_hash.as_str())
            .bind(&dag.serialized)
            .bind(dag.source.as_str())
            .bind(now),
        )
        .await?;
        tx.commit("sync a dag").await?;
        Ok(match previous {
            None => DagSyncOutcome::Created,
            Some(hash) if hash != dag.version_hash => DagSyncOutcome::Changed,
            Some(_) => DagSyncOutcome::Unchanged,
        })
    }

    /// Every DAG, active or not, by id.
    pub async fn list_dags(&self) -> Result<Vec<DagRow>, Error> {
        self.fetch_all(
            query("list dags", "SELECT * FROM dag ORDER BY dag_id"),
            DagRow::from_row,
        )
        .await
    }

    pub async fn get_dag(&self, dag_id: &DagId) -> Result<Option<DagRow>, Error> {
        self.fetch_optional(
            query("read a dag", "SELECT * FROM dag WHERE dag_id = $1").bind(dag_id.as_str()),
            DagRow::from_row,
        )
        .await
    }

    pub async fn get_dag_version(
        &self,
        dag_id: &DagId,
        version_hash: &str,
    ) -> Result<Option<DagVersion>, Error> {
        self.fetch_optional(
            query(
                "read a dag version",
                "SELECT * FROM dag_version WHERE dag_id = $1 AND version_hash = $2",
            )
            .bind(dag_id.as_str())
            .bind(version_hash),
            DagVersion::from_row,
        )
        .await
    }

    /// The parsed DAG of a stored version: what runs of that version run.
    /// [`Error::NotFound`] when the version is not stored, [`Error::Corrupt`] when it does not
    /// parse (it was written by another build).
    pub async fn load_dag(&self, dag_id: &DagId, version_hash: &str) -> Result<Dag, Error> {
        let version = self
            .get_dag_version(dag_id, version_hash)
            .await?
            .ok_or_else(|| Error::NotFound(format!("version {version_hash} of dag '{dag_id}'")))?;
        serde_json::from_value(version.serialized).map_err(|error| Error::Corrupt {
            column: "dag_version.serialized",
            message: error.to_string(),
        })
    }

    /// [`Change::set_paused`](crate::Change::set_paused) alone, without an event.
    #[cfg(feature = "testing")]
    pub async fn set_paused(&self, dag_id: &DagId, paused: bool) -> Result<(), Error> {
        let mut change = self.change("pause a dag").await?;
        change.set_paused(dag_id, paused).await?;
        change.commit_unrecorded().await
    }

    /// Marks inactive every active DAG not in `active` (their files are gone or no longer define
    /// them); returns how many. Their rows and runs stay, for history.
    pub async fn mark_dags_inactive_except(&self, active: &[DagId]) -> Result<u64, Error> {
        let active = serde_json::json!(active);
        self.execute(
            query_split(
                "mark dags inactive",
                "UPDATE dag SET is_active = FALSE \
                 WHERE is_active AND dag_id NOT IN (SELECT jsonb_array_elements_text($1))",
                "UPDATE dag SET is_active = FALSE \
                 WHERE is_active AND dag_id NOT IN (SELECT value FROM json_each($1))",
            )
            .bind(&active),
        )
        .await
    }

    /// Replaces the whole set of import errors with `errors` (the failures of the latest sync).
    pub async fn replace_import_errors(&self, errors: &[ImportError]) -> Result<(), Error> {
        let mut tx = self.begin("replace import errors").await?;
        tx.execute(query("clear import errors", "DELETE FROM import_error"))
            .await?;
        for error in errors {
            tx.execute(
                query(
                    "record an import error",
                    // Two schedulers syncing at once both delete, then both insert the same
                    // files: the second one's row replaces the first's instead of failing.
                    "INSERT INTO import_error (filename, message, at) VALUES ($1, $2, $3) \
                     ON CONFLICT (filename) DO UPDATE SET message = excluded.message, \
                         at = excluded.at",
                )
                .bind(error.filename.as_str())
                .bind(error.message.as_str())
                .bind(error.at),
            )
            .await?;
        }
        tx.commit("replace import errors").await
    }

    /// Every import error, by file name.
    pub async fn list_import_errors(&self) -> Result<Vec<ImportError>, Error> {
        self.fetch_all(
            query(
                "list import errors",
                "SELECT * FROM import_error ORDER BY filename",
            ),
            ImportError::from_row,
        )
        .await
    }
}

/// Locks the rows of the DAGs of `dag_ids` (a JSON array) in `tx`, in id order, on Postgres
/// (SQLite's transaction holds the single write lock): the counts they guard
/// (`max_active_runs`, `max_active_tasks`) are read after it, never from a snapshot of before
/// another scheduler's write.
pub(crate) async fn lock_dags_in(tx: &mut Tx, dag_ids: &serde_json::Value) -> Result<(), Error> {
    if let Handle::Postgres(_) = tx {
        tx.execute(
            query(
                "lock dags",
                "SELECT dag_id FROM dag \
                 WHERE dag_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1))) \
                 ORDER BY dag_id FOR UPDATE",
            )
            .bind(dag_ids),
        )
        .await?;
    }
    Ok(())
}
