//! Due DAGs: the DAGs whose next run is due, read through the index on `next_run_after` a batch
//! at a time, and the runs the scheduler creates from them, written with their next runs in
//! one transaction.

use chrono::{DateTime, Utc};
use updraft_core::ids::DagId;
use updraft_core::schedule::RunInterval;

use crate::db::{Row, Tx, query, query_split, sqlite_time};
use crate::{DagRow, DagRun, Error, NewDagRun, Store};

/// A DAG whose next run is due and which has room for a run, as the scheduler creates runs.
#[derive(Debug, Clone, PartialEq)]
pub struct DueDag {
    pub dag: DagRow,
    /// Its runs queued or running outside backfills: they count against `max_active_runs`.
    pub active_runs: i64,
    /// Its latest scheduled run, from which its timetable goes on.
    pub last: Option<RunInterval>,
}

/// The next run of a DAG (`None`: no further run), as the scheduler records it.
#[derive(Debug, Clone, PartialEq)]
pub struct NextRun {
    pub dag_id: DagId,
    pub next: Option<RunInterval>,
}

/// A batch of due DAGs taken by one scheduler. Their rows stay locked until the batch is
/// committed (on Postgres `FOR UPDATE`, which other schedulers skip, so several schedulers
/// share a storm instead of colliding on the same rows; on SQLite the transaction holds the
/// write lock). Dropped without [`DueBatch::commit`], nothing of it is written.
pub struct DueBatch {
    tx: Tx,
    dags: Vec<DueDag>,
}

/// Up to `$2` DAGs due at `$1` with room for a run, earliest first, with their active runs
/// and latest scheduled run (`l`, joined by `$latest`), then `$lock`.
macro_rules! take_due_dags {
    ($latest:literal, $lock:literal) => {
        concat!(
            "SELECT d.*, \
               (SELECT COUNT(*) FROM dag_run r WHERE r.dag_id = d.dag_id \
                 AND r.state IN ('queued', 'running') AND r.backfill_id IS NULL) AS active_runs, \
               l.logical_date AS last_logical_date, \
               l.data_interval_start AS last_data_interval_start, \
               l.data_interval_end AS last_data_interval_end, \
               l.run_after AS last_run_after \
             FROM dag d ",
            $latest,
            " WHERE d.is_active AND NOT d.is_paused AND d.next_run_after IS NOT NULL \
               AND d.next_run_after <= $1 \
               AND (SELECT COUNT(*) FROM dag_run r WHERE r.dag_id = d.dag_id \
                 AND r.state IN ('queued', 'running') AND r.backfill_id IS NULL) \
                 < d.max_active_runs \
             ORDER BY d.next_run_after LIMIT $2",
            $lock
        )
    };
}

impl Store {
    /// When the earliest next run of a DAG with room for it is due: what the scheduler waits
    /// for when nothing else happens. Read through the due index, it costs the same for ten
    /// DAGs or ten thousand.
    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, Error> {
        self.fetch_optional(
            query(
                "find the next due dag",
                "SELECT d.next_run_after FROM dag d \
                 WHERE d.is_active AND NOT d.is_paused AND d.next_run_after IS NOT NULL \
                   AND (SELECT COUNT(*) FROM dag_run r WHERE r.dag_id = d.dag_id \
                     AND r.state IN ('queued', 'running') AND r.backfill_id IS NULL) \
                     < d.max_active_runs \
                 ORDER BY d.next_run_after LIMIT 1",
            ),
            |row| row.get("next_run_after"),
        )
        .await
    }

    /// Takes up to `limit` DAGs whose next run is due at `now`, earliest first, with their
    /// active runs and latest scheduled run; see [`DueBatch`].
    pub async fn take_due_dags(&self, now: DateTime<Utc>, limit: i64) -> Result<DueBatch, Error> {
        let mut tx = self.begin("take due dags").await?;
        let dags = tx
            .fetch_all(
                query_split(
                    "take due dags",
                    take_due_dags!(
                        "LEFT JOIN LATERAL (SELECT logical_date, data_interval_start, \
                           data_interval_end, run_after FROM dag_run \
                         WHERE dag_id = d.dag_id AND run_type = 'scheduled' \
                         ORDER BY logical_date DESC LIMIT 1) l ON TRUE",
                        " FOR UPDATE OF d SKIP LOCKED"
                    ),
                    take_due_dags!(
                        "LEFT JOIN dag_run l ON l.id = (SELECT id FROM dag_run \
                         WHERE dag_id = d.dag_id AND run_type = 'scheduled' \
                         ORDER BY logical_date DESC LIMIT 1)",
                        ""
                    ),
                )
                .bind(now)
                .bind(limit),
                DueDag::from_row,
            )
            .await?;
        Ok(DueBatch { tx, dags })
    }

    /// Records the next runs of DAGs, all in one transaction.
    pub async fn set_next_runs(&self, next_runs: &[NextRun]) -> Result<(), Error> {
        if next_runs.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin("set dags' next runs").await?;
        set_next_runs_in(&mut tx, next_runs).await?;
        tx.commit("set dags' next runs").await
    }

    /// The ids of the paused DAGs: their runs wait.
    pub async fn list_paused_dags(&self) -> Result<Vec<DagId>, Error> {
        self.fetch_all(
            query(
                "list paused dags",
                "SELECT dag_id FROM dag WHERE is_paused ORDER BY dag_id",
            ),
            |row| row.id("dag_id"),
        )
        .await
    }
}

impl DueDag {
    fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        let last = match row.get::<Option<DateTime<Utc>>>("last_logical_date")? {
            None => None,
            Some(logical_date) => Some(RunInterval {
                logical_date,
                data_interval_start: row.get("last_data_interval_start")?,
                data_interval_end: row.get("last_data_interval_end")?,
                run_after: row.get("last_run_after")?,
            }),
        };
        Ok(DueDag {
            dag: DagRow::from_row(row)?,
            active_runs: row.get("active_runs")?,
            last,
        })
    }
}

impl DueBatch {
    /// The DAGs taken, earliest due first.
    pub fn dags(&self) -> &[DueDag] {
        &self.dags
    }

    /// Inserts `runs` (each `queued`, queued at `now`) in one statement; a run whose run id or
    /// logical date is taken (a backfill's run holds the date) is skipped. Returns the runs
    /// created.
    pub async fn create_runs(
        &mut self,
        runs: &[NewDagRun],
        now: DateTime<Utc>,
    ) -> Result<Vec<DagRun>, Error> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let rows = serde_json::Value::Array(
            runs.iter()
                .map(|run| {
                    serde_json::json!({
                        "dag_id": run.dag_id,
                        "run_id": run.run_id,
                        "run_type": run.run_type.as_str(),
                        "logical_date": sqlite_time(run.logical_date),
                        "data_interval_start": sqlite_time(run.data_interval_start),
                        "data_interval_end": sqlite_time(run.data_interval_end),
                        "run_after": sqlite_time(run.run_after),
                        "conf": run.conf,
                        "version_hash": run.version_hash,
                        "backfill_id": run.backfill_id,
                    })
                })
                .collect(),
        );
        self.tx
            .fetch_all(
                query_split(
                    "create dag runs",
                    "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, \
                         data_interval_start, data_interval_end, run_after, state, conf, \
                         version_hash, queued_at, backfill_id) \
                     SELECT r.dag_id, r.run_id, r.run_type, r.logical_date, \
                         r.data_interval_start, r.data_interval_end, r.run_after, 'queued', \
                         r.conf, r.version_hash, $2, r.backfill_id \
                     FROM jsonb_to_recordset($1) AS r(dag_id text, run_id text, run_type text, \
                         logical_date timestamptz, data_interval_start timestamptz, \
                         data_interval_end timestamptz, run_after timestamptz, conf jsonb, \
                         version_hash text, backfill_id bigint) \
                     ON CONFLICT DO NOTHING \
                     RETURNING *",
                    // `WHERE true`: SQLite reads `ON CONFLICT` after a bare `FROM` as a join's.
                    "INSERT INTO dag_run (dag_id, run_id, run_type, logical_date, \
                         data_interval_start, data_interval_end, run_after, state, conf, \
                         version_hash, queued_at, backfill_id) \
                     SELECT value ->> 'dag_id', value ->> 'run_id', value ->> 'run_type', \
                         value ->> 'logical_date', value ->> 'data_interval_start', \
                         value ->> 'data_interval_end', value ->> 'run_after', 'queued', \
                         value -> 'conf', value ->> 'version_hash', $2, \
                         value ->> 'backfill_id' \
                     FROM json_each($1) WHERE true \
                     ON CONFLICT DO NOTHING \
                     RETURNING *",
                )
                .bind(&rows)
                .bind(now),
                DagRun::from_row,
            )
            .await
    }

    /// Records the DAGs' next runs and commits the batch.
    pub async fn commit(mut self, next_runs: &[NextRun]) -> Result<(), Error> {
        set_next_runs_in(&mut self.tx, next_runs).await?;
        self.tx.commit("create due runs").await
    }
}

/// Records next runs in `tx`, in one statement.
async fn set_next_runs_in(tx: &mut Tx, next_runs: &[NextRun]) -> Result<(), Error> {
    if next_runs.is_empty() {
        return Ok(());
    }
    let time = |time: Option<DateTime<Utc>>| time.map(sqlite_time);
    let rows = serde_json::Value::Array(
        next_runs
            .iter()
            .map(|NextRun { dag_id, next }| {
                serde_json::json!({
                    "dag_id": dag_id,
                    "logical_date": time(next.map(|n| n.logical_date)),
                    "data_interval_start": time(next.map(|n| n.data_interval_start)),
                    "data_interval_end": time(next.map(|n| n.data_interval_end)),
                    "run_after": time(next.map(|n| n.run_after)),
                })
            })
            .collect(),
    );
    tx.execute(
        query_split(
            "set dags' next runs",
            "UPDATE dag d SET next_logical_date = n.logical_date, \
                 next_data_interval_start = n.data_interval_start, \
                 next_data_interval_end = n.data_interval_end, next_run_after = n.run_after \
             FROM jsonb_to_recordset($1) AS n(dag_id text, logical_date timestamptz, \
                 data_interval_start timestamptz, data_interval_end timestamptz, \
                 run_after timestamptz) \
             WHERE d.dag_id = n.dag_id",
            "UPDATE dag SET next_logical_date = n.value ->> 'logical_date', \
                 next_data_interval_start = n.value ->> 'data_interval_start', \
                 next_data_interval_end = n.value ->> 'data_interval_end', \
                 next_run_after = n.value ->> 'run_after' \
             FROM json_each($1) AS n \
             WHERE dag.dag_id = n.value ->> 'dag_id'",
        )
        .bind(&rows),
    )
    .await?;
    Ok(())
}
