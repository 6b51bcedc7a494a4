//! The reads behind Prometheus `/metrics`, and the one write they need from the scheduler: how
//! long its latest loop took (column `scheduler.last_loop_micros`, migration 3).
//!
//! Every read is bounded: counts by state go through the `(state, dag_id)` indexes of
//! `dag_run` and `task_instance`, the queue depth through the partial index of queued task
//! instances, and task durations read only the tries of the newest task instances (a range of
//! `task_try`'s primary key), never the whole table.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_core::state::{DagRunState, TaskState};

use crate::db::{Row, query};
use crate::{Error, Store};

/// Schedulers `/metrics` lists, newest heartbeat first: more than this are long dead.
pub const SCHEDULERS_SHOWN: i64 = 100;

/// A scheduler as `/metrics` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchedulerLoop {
    pub id: String,
    pub hostname: String,
    pub heartbeat_at: DateTime<Utc>,
    /// How long its latest complete loop took, as of its last heartbeat.
    pub last_loop: Option<Duration>,
}

/// A finished try's length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TryDuration {
    pub state: TaskState,
    pub seconds: f64,
}

impl Store {
    /// Records how long scheduler `id`'s latest loop took. Called with the heartbeat (every
    /// 2 s), not after every loop: one small write, whatever the loop rate.
    pub async fn record_scheduler_loop(&self, id: &str, took: Duration) -> Result<(), Error> {
        let micros = i64::try_from(took.as_micros()).unwrap_or(i64::MAX);
        self.execute(
            query(
                "record the scheduler's loop duration",
                "UPDATE scheduler SET last_loop_micros = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(micros),
        )
        .await?;
        Ok(())
    }

    /// The schedulers, newest heartbeat first (at most [`SCHEDULERS_SHOWN`]).
    pub async fn scheduler_loops(&self) -> Result<Vec<SchedulerLoop>, Error> {
        self.fetch_all(
            query(
                "read the schedulers' loops",
                "SELECT id, hostname, heartbeat_at, last_loop_micros FROM scheduler \
                 ORDER BY heartbeat_at DESC, id LIMIT $1",
            )
            .bind(SCHEDULERS_SHOWN),
            |row: &Row<'_>| {
                let micros: Option<i64> = row.get("last_loop_micros")?;
                Ok(SchedulerLoop {
                    id: row.get("id")?,
                    hostname: row.get("hostname")?,
                    heartbeat_at: row.get("heartbeat_at")?,
                    last_loop: micros.map(|m| Duration::from_micros(m.max(0).unsigned_abs())),
                })
            },
        )
        .await
    }

    /// How many DAG runs are in each state (states without runs are left out).
    pub async fn count_runs_by_state(&self) -> Result<Vec<(DagRunState, i64)>, Error> {
        self.fetch_all(
            query(
                "count runs by state",
                "SELECT state, COUNT(*) AS n FROM dag_run GROUP BY state ORDER BY state",
            ),
            |row: &Row<'_>| Ok((row.name("state")?, row.get("n")?)),
        )
        .await
    }

    /// How many task instances are in each state (states without any are left out).
    pub async fn count_task_instances_by_state(&self) -> Result<Vec<(TaskState, i64)>, Error> {
        self.fetch_all(
            query(
                "count task instances by state",
                "SELECT state, COUNT(*) AS n FROM task_instance GROUP BY state ORDER BY state",
            ),
            |row: &Row<'_>| Ok((row.name("state")?, row.get("n")?)),
        )
        .await
    }

    /// The queued task instances of each queue: the work waiting for a worker.
    pub async fn queue_depths(&self) -> Result<Vec<(String, i64)>, Error> {
        self.fetch_all(
            query(
                "count queued task instances by queue",
                "SELECT queue, COUNT(*) AS n FROM task_instance WHERE state = 'queued' \
                 GROUP BY queue ORDER BY queue",
            ),
            |row: &Row<'_>| Ok((row.get("queue")?, row.get("n")?)),
        )
        .await
    }

    /// The lengths of the finished tries of the newest `instances` task instances (by id):
    /// the recent past, read through `task_try`'s primary key.
    pub async fn recent_try_durations(&self, instances: i64) -> Result<Vec<TryDuration>, Error> {
        self.fetch_all(
            query(
                "read recent try durations",
                "SELECT state, start_date, end_date FROM task_try \
                 WHERE task_instance_id > (SELECT COALESCE(MAX(id), 0) FROM task_instance) - $1 \
                   AND end_date IS NOT NULL",
            )
            .bind(instances),
            |row: &Row<'_>| {
                let start: DateTime<Utc> = row.get("start_date")?;
                let end: DateTime<Utc> = row.get("end_date")?;
                let seconds = (end - start).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                Ok(TryDuration {
                    state: row.name("state")?,
                    seconds,
                })
            },
        )
        .await
    }
}
