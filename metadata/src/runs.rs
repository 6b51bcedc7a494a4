//! Table `dag_run`: dated runs of a DAG.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_core::dag::Dag;
use updraft_core::ids::{BackfillId, DagId, DagRunId};
use updraft_core::render::{self, RunContext};
use updraft_core::schedule::RunInterval;
use updraft_core::secret::Catalog;
use updraft_core::state::{DagRunState, RunType, TaskState};

use crate::dags::lock_dags_in;
use crate::db::{Handle, Query, Row, query, query_split};
use crate::queue::DEADLOCK_RETRIES;
use crate::tasks::create_task_instances_in;
use crate::{Error, NewTaskInstance, Store};

/// A row of `dag_run`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DagRun {
    pub id: DagRunId,
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
    pub backfill_id: Option<BackfillId>,
    /// When it missed its DAG's deadline (once).
    pub deadline_missed_at: Option<DateTime<Utc>>,
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
    pub backfill_id: Option<BackfillId>,
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
            run_id: RunType::Manual.run_id(logical_date),
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

/// A queued run to start, the input of [`Store::start_dag_runs`].
#[derive(Debug, Clone, Copy)]
pub struct RunStart<'a> {
    pub run: &'a DagRun,
    /// The most runs of its kind (its DAG's outside backfills, or its backfill's) running.
    pub max_active_runs: i64,
    /// The task instances it starts with.
    pub tasks: &'a [NewTaskInstance],
}

impl DagRun {
    /// What every try of the run knows, its templates reading `catalog`; an error when the
    /// run's conf does not fit the params of `dag` (its version).
    pub fn template_context(&self, dag: &Dag, catalog: Arc<Catalog>) -> Result<RunContext, String> {
        let params = render::effective_params(dag, &self.conf)
            .map_err(|problems| format!("params: {}", problems.join("; ")))?;
        Ok(RunContext {
            dag_id: dag.id.clone(),
            run_id: self.run_id.clone(),
            run_type: self.run_type,
            logical_date: self.logical_date,
            data_interval_start: self.data_interval_start,
            data_interval_end: self.data_interval_end,
            params,
            conf: self.conf.clone(),
            catalog,
        })
    }

    pub(crate) fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(DagRun {
            id: row.row_id("id")?,
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
            backfill_id: row.opt_row_id("backfill_id")?,
            deadline_missed_at: row.get("deadline_missed_at")?,
        })
    }
}

/// The insert of a `queued` run, queued at `now`; nothing when its run id or date is taken.
pub(crate) fn insert_run<'a>(run: &'a NewDagRun, now: DateTime<Utc>) -> Query<'a> {
    query(
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
    .bind(run.backfill_id)
}

impl Store {
    /// [`Change::create_dag_run`](crate::Change::create_dag_run) alone, without an event.
    pub async fn create_dag_run(
        &self,
        run: &NewDagRun,
        now: DateTime<Utc>,
    ) -> Result<CreateOutcome<DagRun>, Error> {
        let mut change = self.change("create a dag run").await?;
        let created = change.create_dag_run(run, now).await?;
        change.commit_unrecorded().await?;
        Ok(created)
    }

    pub async fn get_dag_run(&self, id: DagRunId) -> Result<Option<DagRun>, Error> {
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

    /// The runs of `ids` that exist, in id order.
    pub async fn get_dag_runs(&self, ids: &[DagRunId]) -> Result<Vec<DagRun>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.fetch_all(
            query_split(
                "read dag runs",
                "SELECT * FROM dag_run \
                 WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1)::bigint)) ORDER BY id",
                "SELECT * FROM dag_run WHERE id IN (SELECT value FROM json_each($1)) ORDER BY id",
            )
            .bind(&serde_json::json!(ids)),
            DagRun::from_row,
        )
        .await
    }

    /// Starts queued runs, all in one transaction: in the order given, each whose kind has
    /// fewer than its `max_active_runs` running (counting those this call started before it)
    /// moves to `running` (stamped `now`), gets its task instances (state `none`; a task that
    /// has one already keeps it) and a `run_started` event. A run's kind is its DAG's runs
    /// outside backfills, or its backfill's runs. Returns, for each, whether it started: not
    /// when its kind is full or it is not `queued` any more.
    ///
    /// The counts are read after the rows that guard them are locked (the DAGs' and
    /// backfills', in id order, on Postgres; SQLite's transaction holds the single write lock),
    /// so schedulers starting runs at the same time take turns and never exceed a limit
    /// together.
    ///
    /// A transaction Postgres fails to break a cycle of lock waits is tried again, as
    /// [`Store::step_task_instances`] does.
    pub async fn start_dag_runs(
        &self,
        starts: &[RunStart<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, Error> {
        let mut attempt = 0;
        loop {
            match self.start_dag_runs_once(starts, now).await {
                Err(error) if error.is_deadlock() && attempt < DEADLOCK_RETRIES => attempt += 1,
                started => return started,
            }
        }
    }

    async fn start_dag_runs_once(
        &self,
        starts: &[RunStart<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, Error> {
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        let dags: BTreeSet<&str> = starts
            .iter()
            .filter(|start| start.run.backfill_id.is_none())
            .map(|start| start.run.dag_id.as_str())
            .collect();
        let backfills: BTreeSet<BackfillId> =
            starts.iter().filter_map(|s| s.run.backfill_id).collect();
        let dags = serde_json::json!(dags);
        let backfills = serde_json::json!(backfills);
        let mut tx = self.begin("start dag runs").await?;
        lock_dags_in(&mut tx, &dags).await?;
        if let Handle::Postgres(_) = tx {
            tx.execute(
                query(
                    "lock backfills to start their runs",
                    "SELECT id FROM backfill \
                     WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1)::bigint)) \
                     ORDER BY id FOR UPDATE",
                )
                .bind(&backfills),
            )
            .await?;
        }
        let running = |row: &Row<'_>| Ok((row.get::<String>("kind")?, row.get::<i64>("running")?));
        let mut dag_running: HashMap<String, i64> = tx
            .fetch_all(
                query_split(
                    "count dags' running runs",
                    "SELECT dag_id AS kind, COUNT(*) AS running FROM dag_run \
                     WHERE state = 'running' AND backfill_id IS NULL \
                       AND dag_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1))) \
                     GROUP BY dag_id",
                    "SELECT dag_id AS kind, COUNT(*) AS running FROM dag_run \
                     WHERE state = 'running' AND backfill_id IS NULL \
                       AND dag_id IN (SELECT value FROM json_each($1)) GROUP BY dag_id",
                )
                .bind(&dags),
                running,
            )
            .await?
            .into_iter()
            .collect();
        let mut backfill_running: HashMap<BackfillId, i64> = tx
            .fetch_all(
                query_split(
                    "count backfills' running runs",
                    "SELECT backfill_id AS kind, COUNT(*) AS running FROM dag_run \
                     WHERE state = 'running' \
                       AND backfill_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1)::bigint)) \
                     GROUP BY backfill_id",
                    "SELECT backfill_id AS kind, COUNT(*) AS running FROM dag_run \
                     WHERE state = 'running' AND backfill_id IN (SELECT value FROM json_each($1)) \
                     GROUP BY backfill_id",
                )
                .bind(&backfills),
                |row| Ok((row.row_id("kind")?, row.get::<i64>("running")?)),
            )
            .await?
            .into_iter()
            .collect();
        let mut admitted = Vec::new();
        for start in starts {
            let running = match start.run.backfill_id {
                None => dag_running.entry(start.run.dag_id.to_string()).or_default(),
                Some(backfill) => backfill_running.entry(backfill).or_default(),
            };
            if *running < start.max_active_runs {
                *running += 1;
                admitted.push(start.run.id);
            }
        }
        let started: BTreeSet<DagRunId> = tx
            .fetch_all(
                query_split(
                    "start dag runs",
                    "UPDATE dag_run SET state = 'running', start_date = $2, end_date = NULL \
                     WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1)::bigint)) \
                       AND state = 'queued' \
                     RETURNING id",
                    "UPDATE dag_run SET state = 'running', start_date = $2, end_date = NULL \
                     WHERE id IN (SELECT value FROM json_each($1)) AND state = 'queued' \
                     RETURNING id",
                )
                .bind(&serde_json::json!(admitted))
                .bind(now),
                |row| row.row_id("id"),
            )
            .await?
            .into_iter()
            .collect();
        let started_runs: Vec<&RunStart<'_>> = starts
            .iter()
            .filter(|start| started.contains(&start.run.id))
            .collect();
        create_task_instances_in(&mut tx, &started_runs, TaskState::None, now).await?;
        let started_ids = serde_json::json!(started);
        tx.execute(
            query_split(
                "log runs started",
                "INSERT INTO event_log (at, actor, dag_id, run_id, task_id, event, details) \
                 SELECT $2, 'scheduler', dag_id, run_id, NULL, 'run_started', '{}' \
                 FROM dag_run WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1)::bigint)) \
                 ORDER BY id",
                "INSERT INTO event_log (at, actor, dag_id, run_id, task_id, event, details) \
                 SELECT $2, 'scheduler', dag_id, run_id, NULL, 'run_started', '{}' \
                 FROM dag_run WHERE id IN (SELECT value FROM json_each($1)) ORDER BY id",
            )
            .bind(&started_ids)
            .bind(now),
        )
        .await?;
        tx.commit("start dag runs").await?;
        Ok(starts
            .iter()
            .map(|start| started.contains(&start.run.id))
            .collect())
    }

    /// [`Change::set_dag_run_state`](crate::Change::set_dag_run_state) alone, without an
    /// event: the move wakes the schedulers for the run.
    #[cfg(feature = "testing")]
    pub async fn set_dag_run_state(
        &self,
        id: DagRunId,
        expected: DagRunState,
        new: DagRunState,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let mut change = self.change("change a dag run's state").await?;
        let moved = change.set_dag_run_state(id, expected, new, now).await?;
        change.commit_unrecorded().await?;
        Ok(moved)
    }
}
