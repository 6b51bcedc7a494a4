//! Clearing task instances (DESIGN §5 "Clearing"): they go back to `none` with a fresh retry
//! budget, and their finished runs back to `queued`, so that the scheduler runs them again.
//!
//! Which task instances to clear (tasks, up- and downstream, dates, only failed) is decided by
//! the caller; this module only applies the reset, in one transaction.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use updraft_core::state::TaskState;

use crate::db::{query, query_split};
use crate::signal::Topic;
use crate::{Error, Store};

/// What [`Store::clear_task_instances`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClearReport {
    /// Task instances reset to `none`.
    pub task_instances: usize,
    /// Finished runs (`success` or `failed`) put back to `queued`.
    pub runs_requeued: usize,
}

impl Store {
    /// Clears task instances, given as `(task instance id, retries of its task)`, in one
    /// transaction. Each goes to `none` with `max_tries = try_number + retries` (Airflow's fresh
    /// retry budget: the next try is `try_number + 1`, and every earlier try keeps its row and
    /// log); its retry time, end, queue time and rendered command are reset. Every affected run
    /// that had finished goes back to `queued`; a `running` run stays running.
    ///
    /// A running task instance is cleared too: its worker no longer gets it back from its
    /// heartbeat and kills the try. [`Error::NotFound`] for an unknown task instance (nothing is
    /// written then).
    pub async fn clear_task_instances(
        &self,
        clears: &[(i64, i32)],
        now: DateTime<Utc>,
    ) -> Result<ClearReport, Error> {
        if clears.is_empty() {
            return Ok(ClearReport::default());
        }
        // Locking in id order keeps concurrent clears of overlapping sets from deadlocking.
        let mut clears = clears.to_vec();
        clears.sort_unstable();
        clears.dedup_by_key(|(id, _)| *id);
        let mut tx = self.begin("clear task instances").await?;
        let mut runs = BTreeSet::new();
        let mut kills = false;
        for &(id, retries) in &clears {
            let read = tx
                .fetch_optional(
                    query_split(
                        "read a task instance to clear",
                        "SELECT state, dag_run_id FROM task_instance WHERE id = $1 FOR UPDATE",
                        "SELECT state, dag_run_id FROM task_instance WHERE id = $1",
                    )
                    .bind(id),
                    |row| {
                        Ok((
                            row.name::<TaskState>("state")?,
                            row.get::<i64>("dag_run_id")?,
                        ))
                    },
                )
                .await?;
            let Some((state, dag_run_id)) = read else {
                return Err(Error::NotFound(format!("task instance {id}")));
            };
            // `none` stays `none` and only gets its fresh budget; every other state may move
            // to `none` (`TaskState::can_move_to`).
            tx.execute(
                query(
                    "clear a task instance",
                    "UPDATE task_instance SET state = 'none', max_tries = try_number + $3, \
                         next_retry_at = NULL, end_date = NULL, queued_at = NULL, \
                         updated_at = $4, rendered_command = NULL \
                     WHERE id = $1 AND state = $2",
                )
                .bind(id)
                .bind(state.as_str())
                .bind(retries)
                .bind(now),
            )
            .await?;
            kills |= matches!(state, TaskState::Running | TaskState::Queued);
            runs.insert(dag_run_id);
        }
        let mut runs_requeued = 0;
        let runs: Vec<i64> = runs.into_iter().collect();
        for &dag_run_id in &runs {
            let requeued = tx
                .execute(
                    query(
                        "requeue a cleared dag run",
                        "UPDATE dag_run SET state = 'queued', queued_at = $2, \
                             start_date = NULL, end_date = NULL \
                         WHERE id = $1 AND state IN ('success', 'failed')",
                    )
                    .bind(dag_run_id)
                    .bind(now),
                )
                .await?;
            runs_requeued += requeued as usize;
        }
        self.notify_runs_in(&mut tx, &runs).await?;
        if kills {
            self.notify_in(&mut tx, Topic::Workers).await?;
        }
        tx.commit("clear task instances").await?;
        self.wake_runs(&runs);
        if kills {
            self.wake(Topic::Workers);
        }
        Ok(ClearReport {
            task_instances: clears.len(),
            runs_requeued,
        })
    }
}
