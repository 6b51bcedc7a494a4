//! Marking a task instance or a run success or failed, and cancelling a run: each a
//! compare-and-set from the state it was read in, so a mark never undoes a move it did not see.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use updraft_core::ids::{DagId, TaskId};
use updraft_core::state::{DagRunState, TaskMove, TaskState};
use updraft_metadata::{Change, DagRun, NewEvent, Store};

use crate::dags::find_run;
use crate::{Actor, Error, event};

/// What a user may mark a task instance or a run: success or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    Success,
    Failed,
}

impl Mark {
    fn event(self) -> &'static str {
        match self {
            Mark::Success => "mark_success",
            Mark::Failed => "mark_failed",
        }
    }
}

/// Marks a task instance success or failed. [`Error::Conflict`] when it already is, or moved
/// meanwhile.
pub async fn mark_task(
    store: &Store,
    actor: &Actor,
    dag_id: &DagId,
    run_id: &str,
    task: &TaskId,
    mark: Mark,
    now: DateTime<Utc>,
) -> Result<TaskState, Error> {
    let ti = store
        .find_task_instance(dag_id, run_id, task)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!("task '{task}' of run '{run_id}' of dag '{dag_id}'"))
        })?;
    let new = match mark {
        Mark::Success => TaskState::Success,
        Mark::Failed => TaskState::Failed,
    };
    if ti.state == new {
        return Err(Error::Conflict(format!("task '{task}' is already {new}")));
    }
    let mut change = store.change("mark a task instance").await?;
    if change
        .set_task_states(
            &[TaskMove {
                task_instance: ti.id,
                from: ti.state,
                to: new,
            }],
            now,
        )
        .await?
        != [true]
    {
        return Err(Error::Conflict(format!(
            "task '{task}' changed state meanwhile: reload and try again"
        )));
    }
    change
        .commit(&NewEvent {
            run_id: Some(run_id.to_owned()),
            task_id: Some(task.clone()),
            details: json!({ "from": ti.state }),
            ..event(actor, mark.event(), dag_id, now)
        })
        .await?;
    Ok(new)
}

/// How many task instances a run's mark moved to each state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MarkedTasks {
    pub success: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// Marks a run success or failed, and its task instances as Airflow does (see
/// [`TaskState::when_run_marked`]): marked success, every one becomes success; marked failed,
/// a running one fails (its worker kills its try) and the unfinished others are skipped.
pub async fn mark_run(
    store: &Store,
    actor: &Actor,
    dag_id: &DagId,
    run_id: &str,
    mark: Mark,
    now: DateTime<Utc>,
) -> Result<MarkedTasks, Error> {
    let to = match mark {
        Mark::Success => DagRunState::Success,
        Mark::Failed => DagRunState::Failed,
    };
    let run = find_run(store, dag_id, run_id).await?;
    if run.state == to {
        return Err(Error::Conflict(format!("run '{run_id}' is already {to}")));
    }
    end_run(store, actor, &run, to, mark.event(), now).await
}

/// What a cancel changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cancelled {
    /// Running task instances moved to `failed` (each one's worker kills its try).
    pub task_instances_failed: usize,
    /// The other unfinished task instances, moved to `skipped`.
    pub task_instances_skipped: usize,
}

/// Cancels an unfinished run: it fails at once, as marking it failed does (its running task
/// instances fail, the other unfinished ones are skipped), so nothing more of it runs.
pub async fn cancel_run(
    store: &Store,
    actor: &Actor,
    dag_id: &DagId,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<Cancelled, Error> {
    let run = find_run(store, dag_id, run_id).await?;
    if run.state.is_finished() {
        return Err(Error::Conflict(format!(
            "run '{run_id}' is {} already",
            run.state
        )));
    }
    let moved = end_run(store, actor, &run, DagRunState::Failed, "cancel", now).await?;
    Ok(Cancelled {
        task_instances_failed: moved.failed,
        task_instances_skipped: moved.skipped,
    })
}

/// Moves `run` from the state it was read in to `to`, and its task instances with it,
/// recorded as `name`.
async fn end_run(
    store: &Store,
    actor: &Actor,
    run: &DagRun,
    to: DagRunState,
    name: &str,
    now: DateTime<Utc>,
) -> Result<MarkedTasks, Error> {
    let run_id = &run.run_id;
    let instances = store.list_task_instances(run.id).await?;
    let mut change = store.change("mark a dag run").await?;
    if !change.set_dag_run_state(run.id, run.state, to, now).await? {
        return Err(Error::Conflict(format!(
            "run '{run_id}' changed state meanwhile: reload and try again"
        )));
    }
    let moves: Vec<TaskMove> = instances
        .iter()
        .filter_map(|ti| {
            Some(TaskMove {
                task_instance: ti.id,
                from: ti.state,
                to: ti.state.when_run_marked(to)?,
            })
        })
        .collect();
    let marked = move_task_instances(&mut change, &moves, now).await?;
    change
        .commit(&NewEvent {
            run_id: Some(run_id.clone()),
            details: json!({ "from": run.state, "task_instances": marked }),
            ..event(actor, name, &run.dag_id, now)
        })
        .await?;
    Ok(marked)
}

/// Applies `moves` and counts those that moved by their new state.
async fn move_task_instances(
    change: &mut Change<'_>,
    moves: &[TaskMove],
    now: DateTime<Utc>,
) -> Result<MarkedTasks, Error> {
    let moved = change.set_task_states(moves, now).await?;
    let mut marked = MarkedTasks::default();
    for (&TaskMove { to, .. }, moved) in moves.iter().zip(moved) {
        match (moved, to) {
            (true, TaskState::Success) => marked.success += 1,
            (true, TaskState::Failed) => marked.failed += 1,
            (true, _) => marked.skipped += 1,
            (false, _) => {}
        }
    }
    Ok(marked)
}
