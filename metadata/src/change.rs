//! [`Change`]: one action's writes and its `event_log` row in one transaction, so that no crash
//! keeps a change without the record of who made it, or a record of a change that was not made.
//!
//! A user's actions (`updraft_ops`: trigger, pause, clear, mark, cancel, backfills) and the
//! scheduler's end of a run are made through it. Each write notes whom it concerns (the
//! schedulers of its runs, every scheduler, the workers); [`Change::commit`] appends the event,
//! notifies other processes in the transaction (Postgres), commits, and then wakes this
//! process's parts and, on a SQLite file, the others'. A `Change` dropped without a commit
//! rolls back: nothing of it is written and nobody is woken.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use updraft_core::ids::{BackfillId, DagId, DagRunId, TaskInstanceId};
use updraft_core::state::{BackfillState, DagRunState, RunType, TaskMove, TaskState};

use crate::backfills::{
    Backfill, BackfillCreated, BackfillMove, NewBackfill, Rerun, TaskRetries, rerun_in,
};
use crate::clear::{Clear, ClearReport};
use crate::db::{Tx, query, query_split};
use crate::events::insert_event;
use crate::runs::{CreateOutcome, DagRun, NewDagRun, RunStart, insert_run};
use crate::signal::Topic;
use crate::tasks::{check_moves, create_task_instances_in, kills, move_task_states_in};
use crate::{Error, NewEvent, Store};

/// What missed its deadline: a run (its DAG's `deadline`) or a task instance (its task's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Missed {
    Run(DagRunId),
    TaskInstance(TaskInstanceId),
}

/// One action's writes, in one transaction; see the module's documentation.
pub struct Change<'s> {
    store: &'s Store,
    tx: Tx,
    what: &'static str,
    /// Runs whose schedulers must look again.
    runs: BTreeSet<DagRunId>,
    /// Anything may have changed: every scheduler sweeps.
    everything: bool,
    /// A running or queued task instance moved away, or work was queued: the workers look.
    workers: bool,
}

impl Store {
    /// Starts the change of one action; `what` names it in errors ("trigger a dag").
    pub async fn change(&self, what: &'static str) -> Result<Change<'_>, Error> {
        Ok(Change {
            store: self,
            tx: self.begin(what).await?,
            what,
            runs: BTreeSet::new(),
            everything: false,
            workers: false,
        })
    }
}

impl Change<'_> {
    /// The transaction, for the writes that other tables' modules add to a change (variables,
    /// connections): writes that concern no scheduler or worker.
    pub(crate) fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }

    /// Appends `event`, then commits and wakes whom the writes concern.
    pub async fn commit(mut self, event: &NewEvent) -> Result<(), Error> {
        self.tx.execute(insert_event(event)).await?;
        self.commit_unrecorded().await
    }

    /// Commits without an event: the `Store` methods that tests and the scheduler's own
    /// bookkeeping call.
    pub(crate) async fn commit_unrecorded(mut self) -> Result<(), Error> {
        let runs: Vec<DagRunId> = self.runs.iter().copied().collect();
        self.store.notify_runs_in(&mut self.tx, &runs).await?;
        if self.everything {
            self.store.notify_in(&mut self.tx, Topic::Scheduler).await?;
        }
        if self.workers {
            self.store.notify_in(&mut self.tx, Topic::Workers).await?;
        }
        self.tx.commit(self.what).await?;
        self.store.wake_runs(&runs);
        if self.everything {
            self.store.wake(Topic::Scheduler);
        }
        if self.workers {
            self.store.wake(Topic::Workers);
        }
        Ok(())
    }

    /// Creates a `queued` run, queued at `now`. A run with the same `run_id`, or a scheduled or
    /// backfill run with the same logical date, is [`CreateOutcome::AlreadyExists`]: restarts,
    /// catch-up and backfill never duplicate a run, while manual runs may share a date.
    /// [`Error::NotFound`] when the DAG or its version is not stored.
    pub async fn create_dag_run(
        &mut self,
        run: &NewDagRun,
        now: DateTime<Utc>,
    ) -> Result<CreateOutcome<DagRun>, Error> {
        match self
            .tx
            .fetch_optional(insert_run(run, now), DagRun::from_row)
            .await
        {
            Ok(Some(created)) => {
                self.runs.insert(created.id);
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
        match self.tx.fetch_optional(existing, DagRun::from_row).await? {
            Some(existing) => Ok(CreateOutcome::AlreadyExists(existing)),
            // The conflicting run was deleted in between.
            None => Err(Error::Conflict(format!(
                "dag run '{}' of dag '{}' conflicted with a run that no longer exists: retry",
                run.run_id, run.dag_id
            ))),
        }
    }

    /// Pauses or unpauses a DAG; the schedulers look at everything again (its runs wait or go
    /// on, its next run is due or not). Idempotent; [`Error::NotFound`] for an unknown DAG.
    pub async fn set_paused(&mut self, dag_id: &DagId, paused: bool) -> Result<(), Error> {
        let changed = self
            .tx
            .execute(
                query(
                    "pause a dag",
                    "UPDATE dag SET is_paused = $2 WHERE dag_id = $1",
                )
                .bind(dag_id.as_str())
                .bind(paused),
            )
            .await?;
        if changed == 0 {
            return Err(Error::NotFound(format!("dag '{dag_id}'")));
        }
        self.everything = true;
        Ok(())
    }

    /// Compare-and-sets of task instance states (as [`Store::set_task_states`]); returns, for
    /// each, whether it moved. The schedulers of the moved task instances' runs look again, and
    /// moving a `running` one away makes its worker kill the try.
    pub async fn set_task_states(
        &mut self,
        moves: &[TaskMove],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, Error> {
        check_moves(moves)?;
        let (moved, runs) = move_task_states_in(&mut self.tx, moves, now).await?;
        self.workers |= kills(moves, &moved);
        self.runs.extend(runs);
        Ok(moved)
    }

    /// Compare-and-set of a run's state: moves run `id` from `expected` to `new` and returns
    /// true, or returns false (and writes nothing) when its state is not `expected` any more.
    /// A move `DagRunState::can_move_to` forbids is an error before any write. Stamps `now` as
    /// `queued_at` (clearing `start_date`, `end_date`), `start_date`, or `end_date` by the new
    /// state.
    pub async fn set_dag_run_state(
        &mut self,
        id: DagRunId,
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
            .tx
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
        if changed == 1 {
            self.runs.insert(id);
        }
        Ok(changed == 1)
    }

    /// Ends the queued run of `skip` without running it: its task instances are created
    /// `skipped` and it moves to `success` (Airflow ends a run whose tasks all skipped so).
    /// `false`, writing nothing, when the run is no longer queued.
    pub async fn skip_dag_run(
        &mut self,
        skip: &RunStart<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let run = skip.run.id;
        if !self
            .set_dag_run_state(run, DagRunState::Queued, DagRunState::Success, now)
            .await?
        {
            return Ok(false);
        }
        create_task_instances_in(&mut self.tx, &[skip], TaskState::Skipped, now).await?;
        Ok(true)
    }

    /// Marks what `missed` names as having missed its deadline, `due`, at `now`, by
    /// compare-and-set: only once, and only if it had not finished by then (it is unfinished,
    /// or ended after `due`). `false`, writing nothing, otherwise. No state changes.
    pub async fn miss_deadline(
        &mut self,
        missed: Missed,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let statement = match missed {
            Missed::Run(id) => query(
                "mark a run's missed deadline",
                "UPDATE dag_run SET deadline_missed_at = $2 \
                 WHERE id = $1 AND deadline_missed_at IS NULL \
                   AND (state IN ('queued', 'running') OR end_date > $3)",
            )
            .bind(id),
            Missed::TaskInstance(id) => query(
                "mark a task instance's missed deadline",
                "UPDATE task_instance SET deadline_missed_at = $2 \
                 WHERE id = $1 AND deadline_missed_at IS NULL \
                   AND (state NOT IN ('success', 'failed', 'skipped', 'upstream_failed', \
                       'removed') OR end_date > $3)",
            )
            .bind(id),
        };
        Ok(self.tx.execute(statement.bind(now).bind(due)).await? == 1)
    }

    /// Clears task instances, each given with the retries of its task. Each goes to
    /// `none` with `max_tries = try_number + retries` (Airflow's fresh retry budget: the next
    /// try is `try_number + 1`, and every earlier try keeps its row and log); its retry time,
    /// end, queue time and rendered command are reset. Every affected run that had finished
    /// goes back to `queued`; a `running` run stays running.
    ///
    /// A running task instance is cleared too: its worker no longer gets it back from its
    /// heartbeat and kills the try. [`Error::NotFound`] for an unknown task instance.
    pub async fn clear_task_instances(
        &mut self,
        clears: &[Clear],
        now: DateTime<Utc>,
    ) -> Result<ClearReport, Error> {
        // Locking in id order keeps concurrent clears of overlapping sets from deadlocking.
        let mut clears = clears.to_vec();
        clears.sort_unstable();
        clears.dedup_by_key(|clear| clear.task_instance);
        let mut runs = BTreeSet::new();
        for &Clear {
            task_instance: id,
            retries,
        } in &clears
        {
            let read = self
                .tx
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
                            row.row_id::<DagRunId>("dag_run_id")?,
                        ))
                    },
                )
                .await?;
            let Some((state, dag_run_id)) = read else {
                return Err(Error::NotFound(format!("task instance {id}")));
            };
            // `none` stays `none` and only gets its fresh budget; every other state may move
            // to `none` (`TaskState::can_move_to`).
            self.tx
                .execute(
                    query(
                        "clear a task instance",
                        "UPDATE task_instance SET state = 'none', max_tries = try_number + $3, \
                             next_retry_at = NULL, end_date = NULL, queued_at = NULL, \
                             first_start_date = NULL, updated_at = $4, rendered_command = NULL \
                         WHERE id = $1 AND state = $2",
                    )
                    .bind(id)
                    .bind(state.as_str())
                    .bind(retries)
                    .bind(now),
                )
                .await?;
            self.workers |= matches!(state, TaskState::Running | TaskState::Queued);
            runs.insert(dag_run_id);
        }
        let mut runs_requeued = 0;
        for &dag_run_id in &runs {
            let requeued = self
                .tx
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
        self.runs.extend(runs);
        Ok(ClearReport {
            task_instances: clears.len(),
            runs_requeued,
        })
    }

    /// Creates a backfill and its runs: the `backfill` row (`running`), a `queued` run for each
    /// of `runs` (their `backfill_id` set to the new backfill), and for each of `reruns` still
    /// in its expected state: the run back to `queued`, linked to the backfill, and every one
    /// of its task instances back to `none` with a fresh retry budget (`max_tries =
    /// try_number + retries`, the retries of its task in `retries`, 0 for a task not named), as
    /// [`Change::clear_task_instances`] does.
    ///
    /// A run whose date is taken meanwhile, or a re-run whose state changed, is skipped and
    /// reported in [`BackfillCreated::taken`]. [`Error::NotFound`] when the DAG or the runs'
    /// version is not stored; [`Error::Invalid`] when `from_date` is after `to_date`.
    pub async fn create_backfill(
        &mut self,
        backfill: &NewBackfill,
        runs: &[NewDagRun],
        reruns: &[Rerun],
        retries: &[TaskRetries],
        now: DateTime<Utc>,
    ) -> Result<BackfillCreated, Error> {
        if backfill.from_date > backfill.to_date {
            return Err(Error::Invalid(format!(
                "a backfill's from date {} is after its to date {}",
                backfill.from_date, backfill.to_date
            )));
        }
        let inserted = self
            .tx
            .fetch_one(
                query(
                    "create a backfill",
                    "INSERT INTO backfill (dag_id, from_date, to_date, options, state, \
                         created_by, created_at) \
                     VALUES ($1, $2, $3, $4, 'running', $5, $6) \
                     RETURNING *",
                )
                .bind(backfill.dag_id.as_str())
                .bind(backfill.from_date)
                .bind(backfill.to_date)
                .bind(&backfill.options)
                .bind(backfill.created_by.as_str())
                .bind(now),
                Backfill::from_row,
            )
            .await;
        let created_backfill = match inserted {
            Ok(created) => created,
            Err(error) if error.is_foreign_key_violation() => {
                return Err(Error::NotFound(format!("dag '{}'", backfill.dag_id)));
            }
            Err(error) => return Err(error),
        };
        let id = created_backfill.id;
        let mut taken = Vec::new();
        let mut created = 0;
        for run in runs {
            let run = NewDagRun {
                backfill_id: Some(id),
                ..run.clone()
            };
            let insert = insert_run(&run, now);
            match self
                .tx
                .fetch_optional(insert, |row| row.row_id::<DagRunId>("id"))
                .await
            {
                Ok(Some(_)) => created += 1,
                Ok(None) => taken.push(run.logical_date),
                Err(error) if error.is_foreign_key_violation() => {
                    return Err(Error::NotFound(format!(
                        "dag '{}' with version '{}'",
                        run.dag_id, run.version_hash
                    )));
                }
                Err(error) => return Err(error),
            }
        }
        let mut rerun = 0;
        for again in reruns {
            match rerun_in(&mut self.tx, again, id, retries, now).await? {
                Some(_) => rerun += 1,
                None => {
                    let date = self
                        .tx
                        .fetch_optional(
                            query(
                                "read a dag run",
                                "SELECT logical_date FROM dag_run WHERE id = $1",
                            )
                            .bind(again.dag_run_id),
                            |row| row.get::<DateTime<Utc>>("logical_date"),
                        )
                        .await?;
                    taken.extend(date);
                }
            }
        }
        self.everything = true;
        self.workers |= rerun > 0;
        Ok(BackfillCreated {
            backfill: created_backfill,
            created,
            rerun,
            taken,
        })
    }

    /// Compare-and-set of a backfill's state by a user: pause, resume or cancel. Cancelling
    /// ends the backfill's `queued` runs `failed` (its running runs finish). A move
    /// `BackfillState::can_move_to` forbids is an error before any write.
    pub async fn set_backfill_state(
        &mut self,
        id: BackfillId,
        expected: BackfillState,
        new: BackfillState,
        now: DateTime<Utc>,
    ) -> Result<BackfillMove, Error> {
        if !expected.can_move_to(new) {
            return Err(Error::Invalid(format!(
                "a backfill cannot move from {expected} to {new}"
            )));
        }
        let moved = self
            .tx
            .execute(
                query(
                    "change a backfill's state",
                    "UPDATE backfill SET state = $3, \
                         completed_at = CASE WHEN $5 THEN $4 ELSE completed_at END \
                     WHERE id = $1 AND state = $2",
                )
                .bind(id)
                .bind(expected.as_str())
                .bind(new.as_str())
                .bind(now)
                .bind(new.is_finished()),
            )
            .await?;
        if moved == 0 {
            return Ok(BackfillMove::default());
        }
        let mut runs_failed = 0;
        if new == BackfillState::Cancelled {
            runs_failed = self
                .tx
                .execute(
                    query(
                        "fail a cancelled backfill's queued runs",
                        "UPDATE dag_run SET state = 'failed', end_date = $2 \
                         WHERE backfill_id = $1 AND state = 'queued'",
                    )
                    .bind(id)
                    .bind(now),
                )
                .await?;
        }
        self.everything = true;
        Ok(BackfillMove {
            moved: true,
            runs_failed,
        })
    }
}
