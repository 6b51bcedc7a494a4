//! Creating scheduled runs: the DAGs whose next run is due are taken a batch at a time through
//! the due index, and each batch's runs and next runs are written in one transaction. On
//! Postgres a batch's DAG rows stay locked until it commits and other schedulers skip them,
//! so schedulers share a storm instead of colliding on the same rows.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use updraft_core::dag::Dag;
use updraft_core::ids::DagId;
use updraft_core::schedule::RunInterval;
use updraft_core::state::RunType;
use updraft_metadata::{DueDag, Error, NewDagRun, NextRun};

use super::Scheduler;
use crate::runs::runs_to_create;

/// The most DAGs taken in one batch (one transaction).
const DUE_BATCH: i64 = 1000;

/// One due DAG of a batch, while its runs are created.
struct Plan {
    /// Its version; `None` when it cannot be read.
    dag: Option<Arc<Dag>>,
    /// Rounds go on for it: a date of its last round was held by a backfill run.
    open: bool,
    /// The latest scheduled interval: the last run created, or stepped over because a
    /// backfill run holds its date.
    last: Option<RunInterval>,
    active: usize,
    /// The intervals of the round under way.
    round: Vec<RunInterval>,
}

impl Scheduler {
    /// Creates the runs of every due DAG, oldest interval first within `max_active_runs`, and
    /// records each DAG's next run; then reads when the next DAG is due.
    pub(super) async fn create_due_runs(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        loop {
            let mut batch = self.store.take_due_dags(now, DUE_BATCH).await?;
            let taken = batch.dags().len();
            let mut plans = Vec::with_capacity(taken);
            for due in batch.dags() {
                plans.push(self.plan(due).await?);
            }
            // A date a backfill run holds is stepped over (the insert skips it), so rounds go
            // on for the DAGs whose runs were not all created, until their room is used or no
            // interval is due.
            let mut made_runs = Vec::new();
            loop {
                let mut runs = Vec::new();
                for (due, plan) in batch.dags().iter().zip(&mut plans) {
                    let Some(dag) = plan.dag.as_ref().filter(|_| plan.open) else {
                        continue;
                    };
                    plan.round = runs_to_create(
                        &dag.timetable,
                        plan.last.as_ref(),
                        plan.active,
                        due.dag.max_active_runs.max(1) as u32,
                        false,
                        now,
                    );
                    runs.extend(
                        plan.round
                            .iter()
                            .map(|interval| scheduled_run(due, interval)),
                    );
                }
                if runs.is_empty() {
                    break;
                }
                let created = batch.create_runs(&runs, now).await?;
                let mut made: HashMap<&DagId, usize> = HashMap::new();
                for run in &created {
                    *made.entry(&run.dag_id).or_default() += 1;
                }
                for plan in plans.iter_mut().filter(|plan| plan.open) {
                    let Some(dag) = &plan.dag else { continue };
                    let made = made.get(&dag.id).copied().unwrap_or(0);
                    plan.active += made;
                    plan.last = plan.round.last().copied().or(plan.last);
                    // Nothing in the way: its room is used, or nothing more is due.
                    plan.open = made < plan.round.len();
                }
                made_runs.extend(created);
            }
            let next_runs = batch
                .dags()
                .iter()
                .zip(&plans)
                .map(|(due, plan)| {
                    let next = plan
                        .dag
                        .as_ref()
                        .and_then(|dag| dag.timetable.next_dagrun_info(plan.last.as_ref(), now));
                    NextRun {
                        dag_id: due.dag.dag_id.clone(),
                        next,
                    }
                })
                .collect::<Vec<_>>();
            batch.commit(&next_runs).await?;
            // Known, and said, only once they are stored: a scheduler that dies before its
            // commit created nothing.
            for run in made_runs {
                tracing::info!(dag_id = %run.dag_id, run_id = %run.run_id, "created a run");
                self.worklist.touch(run.id);
                self.runs.insert(run.id, run);
            }
            if (taken as i64) < DUE_BATCH {
                break;
            }
        }
        self.next_due = self.store.next_due_at().await?;
        Ok(())
    }

    /// A due DAG's plan; a DAG whose version cannot be read gets no run, and no next run
    /// until its file changes (said once, here).
    async fn plan(&mut self, due: &DueDag) -> Result<Plan, Error> {
        let dag = match self.dag(&due.dag.dag_id, &due.dag.version_hash).await {
            Ok(dag) => Some(dag),
            Err(error @ (Error::NotFound(_) | Error::Corrupt { .. })) => {
                tracing::warn!(dag_id = %due.dag.dag_id, "cannot schedule the dag: {error}");
                None
            }
            Err(error) => return Err(error),
        };
        Ok(Plan {
            dag,
            open: true,
            last: due.last,
            active: due.active_runs.max(0) as usize,
            round: Vec::new(),
        })
    }
}

/// The scheduled run of `interval` of a due DAG.
fn scheduled_run(due: &DueDag, interval: &RunInterval) -> NewDagRun {
    NewDagRun {
        dag_id: due.dag.dag_id.clone(),
        run_id: RunType::Scheduled.run_id(interval.logical_date),
        run_type: RunType::Scheduled,
        logical_date: interval.logical_date,
        data_interval_start: interval.data_interval_start,
        data_interval_end: interval.data_interval_end,
        run_after: interval.run_after,
        conf: serde_json::json!({}),
        version_hash: due.dag.version_hash.clone(),
        backfill_id: None,
    }
}
