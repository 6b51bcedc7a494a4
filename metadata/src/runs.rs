//! Table `dag_run`: dated runs of a DAG.

use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_core::ids::DagId;
use updraft_core::schedule::RunInterval;
use updraft_core::state::{DagRunState, RunType};

use crate::db::{Row, query, query_split};
use crate::signal::Topic;
use crate::{Error, Store};

/// A row of `dag_run`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DagRun {
    pub id: i64,
    pub dag_id: DagId,
    pub run_id: String,
    pub run_type: RunType,
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    /// Not before this instant may the run start.
    pub run_after: DateTime<Utc>,
    pub state: DagRunState,
    pub conf: serde_json::Value,
    /// The DAG version the run started with.
    pub version_hash: String,
    pub queued_at: Option<DateTime<Utc>>,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub backfill_id: Option<i64>,
}

/// A run to create: the input of [`Store::create_dag_run`]. It starts `queued`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDagRun {
    pub dag_id: DagId,
    pub run_id: String,
    pub run_type: RunType,
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    pub run_after: DateTime<Utc>,
    pub conf: serde_json::Value,
    /// A version stored by [`Store::upsert_dag`].
    pub version_hash: String,
    pub backfill_id: Option<i64>,
}

impl NewDagRun {
    /// A triggered run (CLI or web): id `manual__<logical date>`, due at once, its data
    /// interval [logical date, logical date] (the decision is in ARCHITECTURE.md).
    pub fn manual(
        dag_id: DagId,
        version_hash: String,
        logical_date: DateTime<Utc>,
        conf: serde_json::Value,
        now: DateTime<Utc>,
    ) -> NewDagRun {
        NewDagRun {
            dag_id,
            run_id: format!("manual__{}", logical_date.to_rfc3339()),
            run_type: RunType::Manual,
            logical_date,
            data_interval_start: logical_date,
            data_interval_end: logical_date,
            run_after: now,
            conf,
            version_hash,
            backfill_id: None,
        }
    }
}

/// The outcome of a create that may meet an existing row: both are normal, neither is an error.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum CreateOutcome<T> {
    Created(T),
    /// The row that is in the way (for a run: same `run_id`, or same `logical_date` for a
    /// scheduled or backfill run).
    AlreadyExists(T),
}

impl DagRun {
    pub(crate) fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(DagRun {
            id: row.get("id")?,
            dag_id: row.id("dag_id")?,
            run_id: row.get("run_id")?,
            run_type: row.name("run_type")?,
            logical_date: row.get("logical_date")?,
            data_interval_start: row.get("data_interval_start")?,
            data_interval_end: row.get("data_interval_end")?,
            run_after: row.get("run_after")?,
            state: row.name("state")?,
            conf: row.get("conf")?,
            version_hash: row.get("version_hash")?,
            queued_at: row.get("queued_at")?,
            start_date: row.get("start_date")?,
            end_date: row.get("end_date")?,
            backfill_id: row.get("backfill_id")?,
        })
    }
}

impl Store {
    /// Creates a `queued` run, queued at `now`. A run with the same `run_id`, or a scheduled or
    /// backfill run with the same logical date, is [`CreateOutcome::AlreadyExists`]: restarts,
    /// catch-up and backfill never duplicate a run, while manual runs may share a date.
    /// [`Error::NotFound`] when the DAG or its version is not stored.
    pub async fn create_dag_run(
        &self,
        run: &NewDagRun,
        now: DateTime<Utc>,
    ) -> Result<CreateOutcome<DagRun>, Error> {
        let insert = query(
            "create a dag run",
            "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, data_interval_start, \
                 data_interval_end, run_after, state, conf, version_hash, queued_at, backfill_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9, $10, $11) \
             ON CONFLICT DO NOTHING \
             RETURNING *",
        )
        .bind(run.dag_id.as_str())
        .bind(run.run_id.as_str())
        .bind(run.run_type.as_str())
        .bind(run.logical_date)
        .bind(run.data_interval_start)
        .bind(run.data_interval_end)
        .bind(run.run_after)
        .bind(&run.conf)
        .bind(run.version_hash.as_str())
        .bind(now)
        .bind(run.backfill_id);
        match self.fetch_optional(insert, DagRun::from_row).await {
            Ok(Some(created)) => {
                if self.backend() == crate::Backend::Postgres {
                    self.execute(Topic::Scheduler.pg_notify()).await?;
                }
                self.wake(Topic::Scheduler);
                return Ok(CreateOutcome::Created(created));
            }
            Ok(None) => {}
            Err(error) if error.is_foreign_key_violation() => {
                return Err(Error::NotFound(format!(
                    "dag '{}' with version '{}'",
                    run.dag_id, run.version_hash
                )));
            }
            Err(error) => return Err(error),
        }
        let existing = query(
            "find the run in the way",
            "SELECT * FROM dag_run \
             WHERE dag_id = $1 \
               AND (run_id = $2 OR ($3 AND run_type <> 'manual' AND logical_date = $4)) \
             ORDER BY id LIMIT 1",
        )
        .bind(run.dag_id.as_str())
        .bind(run.run_id.as_str())
        .bind(run.run_type != RunType::Manual)
        .bind(run.logical_date);
        match self.fetch_optional(existing, DagRun::from_row).await? {
            Some(existing) => Ok(CreateOutcome::AlreadyExists(existing)),
            // The conflicting run was deleted in between.
            None => Err(Error::Conflict(format!(
                "dag run '{}' of dag '{}' conflicted with a run that no longer exists: retry",
                run.run_id, run.dag_id
            ))),
        }
    }

    pub async fn get_dag_run(&self, id: i64) -> Result<Option<DagRun>, Error> {
        self.fetch_optional(
            query("read a dag run", "SELECT * FROM dag_run WHERE id = $1").bind(id),
            DagRun::from_row,
        )
        .await
    }

    pub async fn get_dag_run_by_run_id(
        &self,
        dag_id: &DagId,
        run_id: &str,
    ) -> Result<Option<DagRun>, Error> {
        self.fetch_optional(
            query(
                "read a dag run",
                "SELECT * FROM dag_run WHERE dag_id = $1 AND run_id = $2",
            )
            .bind(dag_id.as_str())
            .bind(run_id),
            DagRun::from_row,
        )
        .await
    }

    /// A page of a DAG's runs, newest logical date first, optionally only those in `state`.
    pub async fn list_dag_runs(
        &self,
        dag_id: &DagId,
        state: Option<DagRunState>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DagRun>, Error> {
        self.fetch_all(
            query(
                "list dag runs",
                "SELECT * FROM dag_run \
                 WHERE dag_id = $1 AND ($2 IS NULL OR state = $2) \
                 ORDER BY logical_date DESC, id DESC \
                 LIMIT $3 OFFSET $4",
            )
            .bind(dag_id.as_str())
            .bind(state.map(DagRunState::as_str))
            .bind(limit)
            .bind(offset),
            DagRun::from_row,
        )
        .await
    }

    /// The interval of a DAG's latest scheduled run, from which the timetable computes the
    /// next one. Backfill runs do not count (unlike Airflow 2's "last automated run"): a
    /// backfill ahead of a catch-up must not make the scheduler jump over the dates between;
    /// the scheduler steps over the dates a backfill run holds instead.
    pub async fn last_automated_run(&self, dag_id: &DagId) -> Result<Option<RunInterval>, Error> {
        self.fetch_optional(
            query(
                "find the latest scheduled run",
                "SELECT logical_date, data_interval_start, data_interval_end, run_after \
                 FROM dag_run WHERE dag_id = $1 AND run_type = 'scheduled' \
                 ORDER BY logical_date DESC LIMIT 1",
            )
            .bind(dag_id.as_str()),
            |row| {
                Ok(RunInterval {
                    logical_date: row.get("logical_date")?,
                    data_interval_start: row.get("data_interval_start")?,
                    data_interval_end: row.get("data_interval_end")?,
                    run_after: row.get("run_after")?,
                })
            },
        )
        .await
    }

    /// Every run not finished yet (`queued` or `running`), oldest logical date first: the
    /// scheduler's work list.
    pub async fn list_unfinished_runs(&self) -> Result<Vec<DagRun>, Error> {
        self.fetch_all(
            query(
                "list unfinished dag runs",
                "SELECT * FROM dag_run WHERE state IN ('queued', 'running') \
                 ORDER BY logical_date, id",
            ),
            DagRun::from_row,
        )
        .await
    }

    /// Starts queued run `run` (moves it to `running`, stamping `now` as its start) if fewer
    /// than `max_active_runs` runs of its kind are running: the runs of its DAG that belong to
    /// no backfill, or the runs of its backfill. The count is read in the transaction that
    /// writes, after the DAG's (or backfill's) row is locked on Postgres (SQLite's transaction
    /// holds the single write lock), so schedulers starting runs at the same time take turns
    /// and never exceed the limit together. Returns false, writing nothing, when the limit is
    /// reached or the run is not `queued` any more.
    pub async fn start_dag_run(
        &self,
        run: &DagRun,
        max_active_runs: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let mut tx = self.begin("start a dag run").await?;
        let running: i64 = match run.backfill_id {
            None => {
                tx.fetch_optional(
                    query_split(
                        "lock a dag to start its run",
                        "SELECT dag_id FROM dag WHERE dag_id = $1 FOR UPDATE",
                        "SELECT dag_id FROM dag WHERE dag_id = $1",
                    )
                    .bind(run.dag_id.as_str()),
                    |row| row.get::<String>("dag_id"),
                )
                .await?;
                tx.fetch_one(
                    query(
                        "count a dag's running runs",
                        "SELECT COUNT(*) AS running FROM dag_run \
                         WHERE state = 'running' AND dag_id = $1 AND backfill_id IS NULL",
                    )
                    .bind(run.dag_id.as_str()),
                    |row| row.get("running"),
                )
                .await?
            }
            Some(backfill_id) => {
                tx.fetch_optional(
                    query_split(
                        "lock a backfill to start its run",
                        "SELECT id FROM backfill WHERE id = $1 FOR UPDATE",
                        "SELECT id FROM backfill WHERE id = $1",
                    )
                    .bind(backfill_id),
                    |row| row.get::<i64>("id"),
                )
                .await?;
                tx.fetch_one(
                    query(
                        "count a backfill's running runs",
                        "SELECT COUNT(*) AS running FROM dag_run \
                         WHERE state = 'running' AND backfill_id = $1",
                    )
                    .bind(backfill_id),
                    |row| row.get("running"),
                )
                .await?
            }
        };
        if running >= max_active_runs {
            tx.commit("start a dag run").await?;
            return Ok(false);
        }
        let started = tx
            .execute(
                query(
                    "start a dag run",
                    "UPDATE dag_run SET state = 'running', start_date = $2, end_date = NULL \
                     WHERE id = $1 AND state = 'queued'",
                )
                .bind(run.id)
                .bind(now),
            )
            .await?
            == 1;
        tx.commit("start a dag run").await?;
        Ok(started)
    }

    /// Compare-and-set of a run's state: moves run `id` from `expected` to `new` and returns
    /// true, or returns false (and writes nothing) when its state is not `expected` any more.
    /// A move `DagRunState::can_move_to` forbids is an error before any write. Stamps `now` as
    /// `queued_at` (clearing `start_date`, `end_date`), `start_date`, or `end_date` by the new
    /// state.
    pub async fn set_dag_run_state(
        &self,
        id: i64,
        expected: DagRunState,
        new: DagRunState,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        if !expected.can_move_to(new) {
            return Err(Error::IllegalDagRunTransition {
                from: expected,
                to: new,
            });
        }
        let changed = self
            .execute(
                query(
                    "change a dag run's state",
                    "UPDATE dag_run SET state = $3, \
                         queued_at = CASE WHEN $5 THEN $4 ELSE queued_at END, \
                         start_date = CASE WHEN $5 THEN NULL WHEN $6 THEN $4 \
                             ELSE start_date END, \
                         end_date = CASE WHEN $5 THEN NULL WHEN $7 THEN $4 ELSE end_date END \
                     WHERE id = $1 AND state = $2",
                )
                .bind(id)
                .bind(expected.as_str())
                .bind(new.as_str())
                .bind(now)
                .bind(new == DagRunState::Queued)
                .bind(new == DagRunState::Running)
                .bind(new.is_finished()),
            )
            .await?;
        Ok(changed == 1)
    }
}
