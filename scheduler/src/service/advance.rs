//! Looking at runs: queued ones start within `max_active_runs`, running ones take a step
//! ([`step_run`]: retries due, the run's timeout, `depends_on_past`, trigger rules), whose
//! moves for every run looked at are written in one transaction; a run whose step ends it gets
//! its final state. Each run then tells the worklist when it needs another look.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use updraft_core::actor::Actor;
use updraft_core::dag::Dag;
use updraft_core::ids::{BackfillId, DagId, DagRunId, TaskInstanceId};
use updraft_core::state::{BackfillState, DagRunState, RunType, TaskMove, TaskState};
use updraft_metadata::{DagRun, Error, NewEvent, RunStart};

use super::queue::Ready;
use super::start::{ToStart, task_instances};
use super::{Scheduler, Slot, handlers, slot};
use crate::backfill::start_order;
use crate::step::{TaskSnapshot, step_run, waiting_on_past};

impl Scheduler {
    /// Looks at the known runs of `ids`. The runs of paused DAGs wait, as in Airflow (their
    /// running tries finish; an unpause wakes every scheduler); a backfill is explicit, and
    /// its runs run while their DAG is paused.
    pub(super) async fn look_at(
        &mut self,
        ids: HashSet<DagRunId>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let mut runs: Vec<DagRun> = ids
            .iter()
            .filter_map(|id| self.runs.get(id))
            .filter(|run| run.backfill_id.is_some() || !self.paused.contains(&run.dag_id))
            .cloned()
            .collect();
        if runs.is_empty() {
            return Ok(());
        }
        runs.sort_by_key(|run| (run.logical_date, run.id));
        let backwards: HashSet<BackfillId> = self
            .backfills
            .iter()
            .filter(|(_, backfill)| backfill.options.run_backwards)
            .map(|(id, _)| *id)
            .collect();
        // Running runs per slot, of every unfinished run this scheduler knows.
        let mut running: HashMap<Slot, usize> = HashMap::new();
        for run in self.runs.values() {
            if run.state == DagRunState::Running {
                *running.entry(slot(run)).or_default() += 1;
            }
        }
        let mut to_start = Vec::new();
        let mut to_step = Vec::new();
        for index in start_order(&runs, &backwards) {
            let run = &runs[index];
            let dag = match self.dag(&run.dag_id, &run.version_hash).await {
                Ok(dag) => dag,
                Err(error @ (Error::NotFound(_) | Error::Corrupt { .. })) => {
                    self.finish_run(run, DagRunState::Failed, Some(error.to_string()), now)
                        .await?;
                    continue;
                }
                Err(error) => return Err(error),
            };
            if run.state == DagRunState::Running {
                to_step.push((run.clone(), dag));
                continue;
            }
            if run.run_after > now {
                let deadline_at = self.check_deadlines(run, &dag, now).await?;
                self.worklist
                    .looked_at(run.id, earliest(Some(run.run_after), deadline_at), false);
                continue;
            }
            // A scheduled run past its misfire grace is skipped, not started late.
            if run.run_type == RunType::Scheduled
                && let Some(reason) = dag.timetable.misfire(run.run_after, now)
            {
                self.skip_run(run, &dag, reason, now).await?;
                continue;
            }
            let backfill = run.backfill_id.and_then(|id| self.backfills.get(&id));
            // A paused backfill starts nothing; resuming it wakes every scheduler.
            if backfill.is_some_and(|backfill| backfill.state == BackfillState::Paused) {
                let deadline_at = self.check_deadlines(run, &dag, now).await?;
                self.worklist.looked_at(run.id, deadline_at, false);
                continue;
            }
            let max_active_runs = backfill.map_or(dag.max_active_runs as usize, |backfill| {
                backfill.options.max_active_runs_or(dag.max_active_runs)
            });
            let active = running.entry(slot(run)).or_default();
            if *active >= max_active_runs {
                let deadline_at = self.check_deadlines(run, &dag, now).await?;
                self.worklist.looked_at(run.id, deadline_at, true);
                continue;
            }
            *active += 1;
            to_start.push(ToStart {
                run: run.clone(),
                dag,
                max_active_runs,
            });
        }
        let (started, refused) = self.start_runs(to_start, now).await?;
        for start in refused {
            let deadline_at = self.check_deadlines(&start.run, &start.dag, now).await?;
            self.worklist.looked_at(start.run.id, deadline_at, true);
        }
        to_step.extend(started.into_iter().map(|start| (start.run, start.dag)));
        self.advance(to_step, now).await
    }

    /// Steps running runs, writes every run's moves and queues what they made ready in one
    /// transaction, and ends the runs whose step ends them.
    async fn advance(
        &mut self,
        runs: Vec<(DagRun, Arc<Dag>)>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        if runs.is_empty() {
            return Ok(());
        }
        let ids: Vec<DagRunId> = runs.iter().map(|(run, _)| run.id).collect();
        self.read_instances(&ids).await?;
        let mut steps = Vec::with_capacity(runs.len());
        let mut deadlines: HashMap<DagRunId, DateTime<Utc>> = HashMap::new();
        for (run, dag) in runs {
            if let Some(at) = self.check_deadlines(&run, &dag, now).await? {
                deadlines.insert(run.id, at);
            }
            let past = if dag.tasks.values().any(|task| task.depends_on_past) {
                let previous = self
                    .store
                    .previous_task_states(&run.dag_id, run.logical_date)
                    .await?
                    .map(|states| states.into_iter().collect::<HashMap<_, _>>());
                waiting_on_past(&dag, previous.as_ref())
            } else {
                HashSet::new()
            };
            let snapshots: Vec<TaskSnapshot> = self
                .instances
                .of_run(run.id)
                .iter()
                .map(|ti| TaskSnapshot {
                    id: ti.id,
                    task_id: &ti.task_id,
                    state: ti.state,
                    next_retry_at: ti.next_retry_at,
                })
                .collect();
            let step = step_run(&dag, run.start_date, &snapshots, &past, now);
            steps.push((run, dag, step, !past.is_empty()));
        }
        // What is ready once the moves are written (each a compare-and-set: one that fails
        // leaves its task instance as it was, and the store does not queue it).
        let mut ready = Vec::new();
        // Queued and running task instances per DAG, to offer the queue only what can fit.
        let mut active: HashMap<DagId, usize> = HashMap::new();
        for (run, dag, step, _) in &steps {
            if step.finish.is_some() {
                continue;
            }
            let to: HashMap<TaskInstanceId, TaskState> = step
                .moves
                .iter()
                .map(|task_move| (task_move.task_instance, task_move.to))
                .collect();
            let run = Arc::new(run.clone());
            for ti in self.instances.of_run(run.id) {
                let state = to.get(&ti.id).copied().unwrap_or(ti.state);
                if matches!(state, TaskState::Queued | TaskState::Running) {
                    *active.entry(ti.dag_id.clone()).or_default() += 1;
                }
                if state == TaskState::Scheduled {
                    ready.push(Ready {
                        instance: ti.clone(),
                        run: run.clone(),
                        dag: dag.clone(),
                    });
                }
            }
        }
        let offer = self.offer(ready, &active).await?;
        let moves: Vec<TaskMove> = steps
            .iter()
            .flat_map(|(_, _, step, _)| step.moves.iter().copied())
            .collect();
        let written = self
            .store
            .step_task_instances(&moves, &offer.requests, now)
            .await?;
        let mut moved = written.moved.into_iter();
        let queued: HashSet<TaskInstanceId> = written.queued.into_iter().collect();
        // A run whose task instances a rate limit held back needs a look when it may have room.
        let mut limited: HashMap<DagRunId, DateTime<Utc>> = HashMap::new();
        for (request, &run) in offer.requests.iter().zip(&offer.runs) {
            if let Some(&until) = written.rate_limited.get(&request.task_instance) {
                let at = limited.entry(run).or_insert(until);
                *at = (*at).min(until);
            }
        }
        let mut waiting = offer.waiting;
        waiting.extend(
            offer
                .requests
                .iter()
                .zip(&offer.runs)
                .filter(|(request, _)| !queued.contains(&request.task_instance))
                .map(|(_, &run)| run),
        );
        for (run, _, step, waits_on_past) in steps {
            let mut stale = false;
            for (
                &TaskMove {
                    task_instance: id,
                    to,
                    ..
                },
                moved,
            ) in step.moves.iter().zip(moved.by_ref())
            {
                match moved {
                    true => self.instances.moved(run.id, id, to),
                    false => stale = true,
                }
            }
            if stale {
                // Another party moved one of its task instances first (another scheduler, or
                // a worker's claim of a task the run's timeout skips): read it again, and look
                // again at the next tick.
                self.instances.forget(run.id);
                self.worklist.touch(run.id);
                continue;
            }
            if let Some(state) = step.finish {
                self.finish_run(&run, state, step.reason, now).await?;
                continue;
            }
            let wake_at = [
                step.wake_at,
                limited.get(&run.id).copied(),
                deadlines.get(&run.id).copied(),
            ]
            .into_iter()
            .flatten()
            .min();
            self.worklist
                .looked_at(run.id, wake_at, waits_on_past || waiting.contains(&run.id));
        }
        for (request, &run) in offer.requests.iter().zip(&offer.runs) {
            if queued.contains(&request.task_instance) {
                self.instances
                    .moved(run, request.task_instance, TaskState::Queued);
            }
        }
        Ok(())
    }

    /// Brings what this scheduler knows of the task instances of `runs` up to date: the task
    /// instances whose tries ended are read again, and the runs it knows nothing of whole.
    async fn read_instances(&mut self, runs: &[DagRunId]) -> Result<(), Error> {
        let stale = self.instances.stale(runs);
        if !stale.is_empty() {
            let read = self.store.get_task_instances(&stale).await?;
            self.instances.refresh(read);
        }
        let unknown = self.instances.unknown(runs);
        if !unknown.is_empty() {
            let read = self.store.list_task_instances_of_runs(&unknown).await?;
            self.instances.insert(&unknown, read);
        }
        Ok(())
    }

    /// Ends a run in `state`: the event log says why, the DAG's handler runs, and the run
    /// leaves the unfinished ones. A run another party moved meanwhile is read again.
    pub(super) async fn finish_run(
        &mut self,
        run: &DagRun,
        state: DagRunState,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        // The run's end and its event are written together.
        let mut change = self.store.change("finish a dag run").await?;
        if !change
            .set_dag_run_state(run.id, run.state, state, now)
            .await?
        {
            self.worklist.touch(run.id);
            return Ok(());
        }
        let details = serde_json::json!({ "state": state, "reason": reason });
        change
            .commit(&run_event(run, "run_finished", details, now))
            .await?;
        self.forget_run(run, now);
        tracing::info!(dag_id = %run.dag_id, run_id = %run.run_id, %state, reason, "run finished");
        if let Some(dag) = self
            .versions
            .get(&(run.dag_id.clone(), run.version_hash.clone()))
        {
            let dag = dag.clone();
            handlers::run_dag_handler(&self.store, &self.settings, dag, run, state);
        }
        Ok(())
    }

    /// Skips queued run `run` instead of starting it late: its task instances are created
    /// `skipped`, it ends `success`, and its `run_skipped` event says why. Its DAG's handlers
    /// do not run: nothing ran.
    async fn skip_run(
        &mut self,
        run: &DagRun,
        dag: &Dag,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let tasks = task_instances(dag);
        let skip = RunStart {
            run,
            max_active_runs: 0,
            tasks: &tasks,
        };
        let mut change = self.store.change("skip a dag run").await?;
        if !change.skip_dag_run(&skip, now).await? {
            self.worklist.touch(run.id);
            return Ok(());
        }
        let details = serde_json::json!({ "reason": reason });
        change
            .commit(&run_event(run, "run_skipped", details, now))
            .await?;
        self.forget_run(run, now);
        tracing::info!(dag_id = %run.dag_id, run_id = %run.run_id, reason, "run skipped");
        Ok(())
    }

    /// Forgets a run that ended; its place may let another start.
    fn forget_run(&mut self, run: &DagRun, now: DateTime<Utc>) {
        self.runs.remove(&run.id);
        self.instances.forget(run.id);
        self.worklist.finished(run.id);
        self.freed_by(run, now);
    }
}

/// The scheduler's event `event` about `run`, at `now`.
/// The earlier of two instants, either of which may be missing.
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    a.into_iter().chain(b).min()
}

fn run_event(
    run: &DagRun,
    event: &str,
    details: serde_json::Value,
    now: DateTime<Utc>,
) -> NewEvent {
    NewEvent {
        at: now,
        actor: Actor::Scheduler.to_string(),
        dag_id: Some(run.dag_id.clone()),
        run_id: Some(run.run_id.clone()),
        task_id: None,
        event: event.to_owned(),
        details,
    }
}
