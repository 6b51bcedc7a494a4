//! One scheduling step of one running DAG run, as a pure function of its task instances'
//! states and the clock: which task instances move, and whether the run ends.
//!
//! The step is Airflow's `DagRun.update_state` + `task_instance_scheduling_decisions`:
//! - a run past its `timeout` fails, and its unfinished task instances are skipped (a running
//!   one is then killed by its worker);
//! - `up_for_retry` task instances whose delay has passed are `scheduled` again;
//! - trigger rules decide the `none` ones ([`plan_run`]), except that a task with
//!   `depends_on_past` waits while its previous run's instance has not succeeded or skipped;
//! - the run's final state comes from its leaves.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use updraft_core::dag::Dag;
use updraft_core::ids::{TaskId, TaskInstanceId};
use updraft_core::state::{DagRunState, TaskMove, TaskState};

use crate::readiness::plan_run;

/// A task instance as the step sees it (its task id borrowed: a step of a run of a thousand
/// tasks copies none of their ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSnapshot<'a> {
    pub id: TaskInstanceId,
    pub task_id: &'a TaskId,
    pub state: TaskState,
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// What to do with a run now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStep {
    /// The compare-and-sets of its task instances' states.
    pub moves: Vec<TaskMove>,
    /// The run's final state when it ends now.
    pub finish: Option<DagRunState>,
    /// Why it ends failed.
    pub reason: Option<String>,
    /// The next instant at which this run needs a step though nothing else happens (a retry
    /// delay or the run's timeout runs out).
    pub wake_at: Option<DateTime<Utc>>,
}

/// Steps a running run that started at `started_at`. `waiting_on_past` holds the tasks whose
/// `depends_on_past` is not met.
pub fn step_run(
    dag: &Dag,
    started_at: Option<DateTime<Utc>>,
    tasks: &[TaskSnapshot<'_>],
    waiting_on_past: &HashSet<TaskId>,
    now: DateTime<Utc>,
) -> RunStep {
    let mut step = RunStep::default();
    let deadline = dag.timeout.zip(started_at).and_then(|(timeout, started)| {
        chrono::Duration::from_std(timeout)
            .ok()
            .and_then(|t| started.checked_add_signed(t))
    });
    if let Some(deadline) = deadline {
        if deadline <= now {
            step.moves = tasks
                .iter()
                .filter(|ti| !ti.state.is_finished())
                .map(|ti| TaskMove {
                    task_instance: ti.id,
                    from: ti.state,
                    to: TaskState::Skipped,
                })
                .collect();
            step.finish = Some(DagRunState::Failed);
            step.reason = Some(format!(
                "the run timed out after {}",
                humantime::format_duration(dag.timeout.unwrap_or_default())
            ));
            return step;
        }
        step.wake_at = Some(deadline);
    }

    let mut states: HashMap<&TaskId, TaskState> = HashMap::with_capacity(tasks.len());
    let mut ids: HashMap<&TaskId, TaskInstanceId> = HashMap::with_capacity(tasks.len());
    for ti in tasks {
        let mut state = ti.state;
        if state == TaskState::UpForRetry {
            match ti.next_retry_at {
                Some(at) if at > now => {
                    step.wake_at = Some(step.wake_at.map_or(at, |wake| wake.min(at)));
                }
                _ => {
                    step.moves.push(TaskMove {
                        task_instance: ti.id,
                        from: state,
                        to: TaskState::Scheduled,
                    });
                    state = TaskState::Scheduled;
                }
            }
        }
        states.insert(ti.task_id, state);
        ids.insert(ti.task_id, ti.id);
    }

    let plan = plan_run(dag, &states);
    let moves = plan
        .schedule
        .iter()
        .filter(|task| !waiting_on_past.contains(*task))
        .map(|task| (task, TaskState::Scheduled))
        .chain(plan.skip.iter().map(|task| (task, TaskState::Skipped)))
        .chain(
            plan.upstream_failed
                .iter()
                .map(|task| (task, TaskState::UpstreamFailed)),
        );
    for (task, to) in moves {
        // A task the run has no instance of yet (the DAG gained it) waits for one.
        if let Some(&id) = ids.get(task) {
            step.moves.push(TaskMove {
                task_instance: id,
                from: TaskState::None,
                to,
            });
        }
    }
    step.finish = plan.finish;
    step.reason = plan.reason;
    if step.finish.is_some() {
        step.wake_at = None;
    }
    step
}

/// Airflow's `depends_on_past`: of `dag`'s tasks that have it, those whose instance in the
/// previous run (`previous`, `None` for the first run) did not end `success` or `skipped`.
pub fn waiting_on_past(
    dag: &Dag,
    previous: Option<&HashMap<TaskId, TaskState>>,
) -> HashSet<TaskId> {
    let Some(previous) = previous else {
        return HashSet::new();
    };
    dag.tasks
        .values()
        .filter(|task| task.depends_on_past)
        .filter(|task| {
            !matches!(
                previous.get(&task.id),
                Some(TaskState::Success | TaskState::Skipped) | None
            )
        })
        .map(|task| task.id.clone())
        .collect()
}
