//! Table `backfill`: a user's request to run a DAG over a range of past dates, and the runs
//! (`dag_run.backfill_id`) that carry it out.
//!
//! Which dates get a new run, which existing run is re-run and which is skipped is decided by
//! the caller (`updraft_scheduler::backfill`) and handed here as values; this module writes
//! them in one transaction, reports progress, and moves the backfill's state by
//! compare-and-set. A date taken meanwhile (the scheduler created its run between the decision
//! and the write) is skipped, never duplicated: the unique index on (dag, logical date) says so.

use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_core::ids::{BackfillId, DagId, DagRunId, TaskId};
use updraft_core::state::{BackfillState, DagRunState};

use crate::db::{Row, Tx, query};
use crate::{DagRun, Error, Store};

/// A row of `backfill`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backfill {
    pub id: BackfillId,
    pub dag_id: DagId,
    /// The range asked for, inclusive on logical dates.
    pub from_date: DateTime<Utc>,
    pub to_date: DateTime<Utc>,
    /// What was asked (reprocess, max_active_runs, run_backwards, conf): the scheduler's to
    /// read.
    pub options: serde_json::Value,
    pub state: BackfillState,
    /// Who asked.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// When it completed or was cancelled.
    pub completed_at: Option<DateTime<Utc>>,
}

/// The retries of a task: the fresh budget of tries its task instances get when cleared or
/// run again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRetries {
    pub task_id: TaskId,
    pub retries: i32,
}

/// A backfill to create: the input of [`Change::create_backfill`](crate::Change::create_backfill).
/// It starts `running`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBackfill {
    pub dag_id: DagId,
    pub from_date: DateTime<Utc>,
    pub to_date: DateTime<Utc>,
    pub options: serde_json::Value,
    pub created_by: String,
}

/// An existing finished run that a backfill runs again: it is cleared only while it is still
/// in state `expected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rerun {
    pub dag_run_id: DagRunId,
    pub expected: DagRunState,
}

/// What a backfill's creation did.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillCreated {
    pub backfill: Backfill,
    /// New runs, in the order given.
    pub created: usize,
    /// Existing runs cleared and linked to the backfill.
    pub rerun: usize,
    /// Logical dates skipped because another run took them, or a re-run's state changed,
    /// between the decision and the write.
    pub taken: Vec<DateTime<Utc>>,
}

/// Where a backfill stands: its runs by state and its task instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BackfillProgress {
    pub queued: i64,
    pub running: i64,
    pub success: i64,
    pub failed: i64,
    /// Task instances of its started runs (runs not started have none yet).
    pub task_instances: i64,
    /// Those finished (success, failed, skipped, upstream_failed, removed).
    pub tasks_done: i64,
}

impl BackfillProgress {
    pub fn runs(&self) -> i64 {
        self.queued + self.running + self.success + self.failed
    }

    pub fn finished(&self) -> i64 {
        self.success + self.failed
    }
}

/// What a state change of a backfill did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackfillMove {
    /// False when the backfill was not in the expected state (nothing was written).
    pub moved: bool,
    /// Queued runs that a cancel ended `failed`.
    pub runs_failed: u64,
}

impl Backfill {
    pub(crate) fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(Backfill {
            id: row.row_id("id")?,
            dag_id: row.id("dag_id")?,
            from_date: row.get("from_date")?,
            to_date: row.get("to_date")?,
            options: row.get("options")?,
            state: row.name("state")?,
            created_by: row.get("created_by")?,
            created_at: row.get("created_at")?,
            completed_at: row.get("completed_at")?,
        })
    }
}

impl Store {
    /// [`Change::create_backfill`](crate::Change::create_backfill) alone, without an event.
    #[cfg(feature = "testing")]
    pub async fn create_backfill(
        &self,
        backfill: &NewBackfill,
        runs: &[crate::NewDagRun],
        reruns: &[Rerun],
        retries: &[TaskRetries],
        now: DateTime<Utc>,
    ) -> Result<BackfillCreated, Error> {
        let mut change = self.change("create a backfill").await?;
        let created = change
            .create_backfill(backfill, runs, reruns, retries, now)
            .await?;
        change.commit_unrecorded().await?;
        Ok(created)
    }

    pub async fn get_backfill(&self, id: BackfillId) -> Result<Option<Backfill>, Error> {
        self.fetch_optional(
            query("read a backfill", "SELECT * FROM backfill WHERE id = $1").bind(id),
            Backfill::from_row,
        )
        .await
    }

    /// The newest `limit` backfills, of one DAG or of all.
    pub async fn list_backfills(
        &self,
        dag_id: Option<&DagId>,
        limit: i64,
    ) -> Result<Vec<Backfill>, Error> {
        let backfills = match dag_id {
            None => query(
                "list backfills",
                "SELECT * FROM backfill ORDER BY created_at DESC, id DESC LIMIT $1",
            )
            .bind(limit),
            Some(dag_id) => query(
                "list backfills",
                "SELECT * FROM backfill WHERE dag_id = $2 \
                 ORDER BY created_at DESC, id DESC LIMIT $1",
            )
            .bind(limit)
            .bind(dag_id.as_str()),
        };
        self.fetch_all(backfills, Backfill::from_row).await
    }

    /// Backfills not finished (`running` or `paused`), oldest first: the scheduler's list.
    pub async fn list_unfinished_backfills(&self) -> Result<Vec<Backfill>, Error> {
        self.fetch_all(
            query(
                "list unfinished backfills",
                "SELECT * FROM backfill WHERE state IN ('running', 'paused') ORDER BY id",
            ),
            Backfill::from_row,
        )
        .await
    }

    /// The runs of a backfill, oldest logical date first.
    pub async fn list_backfill_runs(&self, id: BackfillId) -> Result<Vec<DagRun>, Error> {
        self.fetch_all(
            query(
                "list a backfill's runs",
                "SELECT * FROM dag_run WHERE backfill_id = $1 ORDER BY logical_date, id",
            )
            .bind(id),
            DagRun::from_row,
        )
        .await
    }

    /// The runs of a DAG that hold a logical date in `[from, to]` (scheduled and backfill runs;
    /// manual runs share dates and hold none), oldest first: what a backfill decides against.
    pub async fn list_dated_runs(
        &self,
        dag_id: &DagId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DagRun>, Error> {
        self.fetch_all(
            query(
                "list a dag's runs in a range",
                "SELECT * FROM dag_run \
                 WHERE dag_id = $1 AND run_type <> 'manual' \
                   AND logical_date >= $2 AND logical_date <= $3 \
                 ORDER BY logical_date, id",
            )
            .bind(dag_id.as_str())
            .bind(from)
            .bind(to),
            DagRun::from_row,
        )
        .await
    }

    /// A backfill's runs by state and its task instances done.
    pub async fn backfill_progress(&self, id: BackfillId) -> Result<BackfillProgress, Error> {
        let states = self
            .fetch_all(
                query(
                    "count a backfill's runs",
                    "SELECT state, COUNT(*) AS n FROM dag_run WHERE backfill_id = $1 \
                     GROUP BY state",
                )
                .bind(id),
                |row| Ok((row.name::<DagRunState>("state")?, row.get::<i64>("n")?)),
            )
            .await?;
        let mut progress = BackfillProgress::default();
        for (state, n) in states {
            match state {
                DagRunState::Queued => progress.queued = n,
                DagRunState::Running => progress.running = n,
                DagRunState::Success => progress.success = n,
                DagRunState::Failed => progress.failed = n,
            }
        }
        let (total, done) = self
            .fetch_one(
                query(
                    "count a backfill's task instances",
                    "SELECT COUNT(*) AS total, \
                         COALESCE(SUM(CASE WHEN ti.state IN ('success', 'failed', 'skipped', \
                             'upstream_failed', 'removed') THEN 1 ELSE 0 END), 0) AS done \
                     FROM task_instance ti JOIN dag_run r ON r.id = ti.dag_run_id \
                     WHERE r.backfill_id = $1",
                )
                .bind(id),
                |row| Ok((row.get::<i64>("total")?, row.get::<i64>("done")?)),
            )
            .await?;
        progress.task_instances = total;
        progress.tasks_done = done;
        Ok(progress)
    }

    /// [`Change::set_backfill_state`](crate::Change::set_backfill_state) alone, without an
    /// event.
    #[cfg(feature = "testing")]
    pub async fn set_backfill_state(
        &self,
        id: BackfillId,
        expected: BackfillState,
        new: BackfillState,
        now: DateTime<Utc>,
    ) -> Result<BackfillMove, Error> {
        let mut change = self.change("change a backfill's state").await?;
        let moved = change.set_backfill_state(id, expected, new, now).await?;
        change.commit_unrecorded().await?;
        Ok(moved)
    }

    /// Marks a `running` backfill `completed` when none of its runs is queued or running any
    /// more (checked in the same statement, so a run re-queued meanwhile keeps it running);
    /// returns whether it did. The event log records it with the scheduler as the actor.
    pub async fn complete_backfill(
        &self,
        id: BackfillId,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let mut tx = self.begin("complete a backfill").await?;
        let dag_id = tx
            .fetch_optional(
                query(
                    "complete a backfill",
                    "UPDATE backfill SET state = 'completed', completed_at = $2 \
                     WHERE id = $1 AND state = 'running' \
                       AND NOT EXISTS (SELECT 1 FROM dag_run \
                           WHERE backfill_id = $1 AND state IN ('queued', 'running')) \
                     RETURNING dag_id",
                )
                .bind(id)
                .bind(now),
                |row| row.id::<DagId>("dag_id"),
            )
            .await?;
        let Some(dag_id) = dag_id else {
            return Ok(false);
        };
        let details = serde_json::json!({ "backfill_id": id });
        append_event_in(
            &mut tx,
            now,
            "scheduler",
            &dag_id,
            "backfill_completed",
            &details,
        )
        .await?;
        tx.commit("complete a backfill").await?;
        Ok(true)
    }
}

/// Clears run `again.dag_run_id` for backfill `backfill_id` if it is still in its expected
/// state; returns its id, or `None` when its state changed.
pub(crate) async fn rerun_in(
    tx: &mut Tx,
    again: &Rerun,
    backfill_id: BackfillId,
    retries: &[TaskRetries],
    now: DateTime<Utc>,
) -> Result<Option<DagRunId>, Error> {
    if !again.expected.can_move_to(DagRunState::Queued) {
        return Err(Error::IllegalDagRunTransition {
            from: again.expected,
            to: DagRunState::Queued,
        });
    }
    let moved = tx
        .execute(
            query(
                "re-run a dag run in a backfill",
                "UPDATE dag_run SET state = 'queued', queued_at = $3, start_date = NULL, \
                     end_date = NULL, backfill_id = $4 \
                 WHERE id = $1 AND state = $2",
            )
            .bind(again.dag_run_id)
            .bind(again.expected.as_str())
            .bind(now)
            .bind(backfill_id),
        )
        .await?;
    if moved == 0 {
        return Ok(None);
    }
    // The run was finished and is now ours (the compare-and-set above), so its task instances
    // are finished too, and any state may move to `none` (`TaskState::can_move_to`).
    tx.execute(
        query(
            "clear a re-run's task instances",
            "UPDATE task_instance SET state = 'none', max_tries = try_number, \
                 next_retry_at = NULL, end_date = NULL, queued_at = NULL, updated_at = $2, \
                 rendered_command = NULL \
             WHERE dag_run_id = $1",
        )
        .bind(again.dag_run_id)
        .bind(now),
    )
    .await?;
    for TaskRetries { task_id, retries } in retries.iter().filter(|task| task.retries > 0) {
        tx.execute(
            query(
                "give a re-run's task instance its retries",
                "UPDATE task_instance SET max_tries = try_number + $3 \
                 WHERE dag_run_id = $1 AND task_id = $2",
            )
            .bind(again.dag_run_id)
            .bind(task_id.as_str())
            .bind(*retries),
        )
        .await?;
    }
    Ok(Some(again.dag_run_id))
}

async fn append_event_in(
    tx: &mut Tx,
    at: DateTime<Utc>,
    actor: &str,
    dag_id: &DagId,
    event: &str,
    details: &serde_json::Value,
) -> Result<(), Error> {
    tx.execute(
        query(
            "append to the event log",
            "INSERT INTO event_log (at, actor, dag_id, run_id, task_id, event, details) \
             VALUES ($1, $2, $3, NULL, NULL, $4, $5)",
        )
        .bind(at)
        .bind(actor)
        .bind(dag_id.as_str())
        .bind(event)
        .bind(details),
    )
    .await?;
    Ok(())
}
