//! The writes users make from the UI and the API, one function each, shared by the forms and
//! the JSON handlers so that there is one path per action. Each checks the admin role,
//! validates its input, changes the database through the same `Store` methods the CLI uses,
//! and records an `event_log` row with the user as actor.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use updraft_core::dag::Dag;
use updraft_core::ids::{DagId, TaskId};
use updraft_core::render::effective_params;
use updraft_core::state::{DagRunState, TaskState};
use updraft_metadata::{CreateOutcome, DagRow, DagRun, NewDagRun, NewEvent, Store};

use crate::auth::Caller;
use crate::error::AppError;

/// A clear selects at most this many task instances; a wider one must be narrowed.
pub const MAX_CLEAR: usize = 10_000;

/// Parses a DAG id from a URL or form, as the CLI does.
pub fn dag_id(text: &str) -> Result<DagId, AppError> {
    DagId::parse(text).map_err(|error| AppError::BadRequest(format!("bad DAG id: {error}")))
}

pub fn task_id(text: &str) -> Result<TaskId, AppError> {
    TaskId::parse(text).map_err(|error| AppError::BadRequest(format!("bad task id: {error}")))
}

/// The DAG's row and its current version, parsed.
pub async fn load_dag(store: &Store, dag_id: &DagId) -> Result<(DagRow, Dag), AppError> {
    let row = store
        .get_dag(dag_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("dag '{dag_id}' not found")))?;
    let dag = store.load_dag(dag_id, &row.version_hash).await?;
    Ok((row, dag))
}

pub async fn find_run(store: &Store, dag_id: &DagId, run_id: &str) -> Result<DagRun, AppError> {
    store
        .get_dag_run_by_run_id(dag_id, run_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("run '{run_id}' of dag '{dag_id}' not found")))
}

/// The event log row of an action by `caller` on `dag_id`: set its run, task and details.
fn event(caller: &Caller, name: &str, dag_id: &DagId, now: DateTime<Utc>) -> NewEvent {
    NewEvent {
        at: now,
        actor: caller.user.username.clone(),
        dag_id: Some(dag_id.clone()),
        run_id: None,
        task_id: None,
        event: name.to_owned(),
        details: json!({}),
    }
}

/// What a trigger asks for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// A JSON object; its keys override the DAG's params.
    #[serde(default)]
    pub conf: Option<serde_json::Value>,
    /// Default: now.
    #[serde(default)]
    pub logical_date: Option<DateTime<Utc>>,
}

/// Creates a manual run, after checking its conf against the DAG's typed params (every problem
/// is named in the 400).
pub async fn trigger(
    store: &Store,
    caller: &Caller,
    dag_id: &DagId,
    request: &TriggerRequest,
    now: DateTime<Utc>,
) -> Result<DagRun, AppError> {
    caller.require_admin()?;
    let (row, dag) = load_dag(store, dag_id).await?;
    let conf = request.conf.clone().unwrap_or_else(|| json!({}));
    if !conf.is_object() {
        return Err(AppError::BadRequest(format!(
            "conf must be a JSON object, found {conf}"
        )));
    }
    effective_params(&dag, &conf)
        .map_err(|problems| AppError::BadRequest(format!("bad params: {}", problems.join("; "))))?;
    let logical_date = request.logical_date.unwrap_or(now);
    let run = NewDagRun::manual(
        row.dag_id.clone(),
        row.version_hash.clone(),
        logical_date,
        conf.clone(),
        now,
    );
    let run = match store.create_dag_run(&run, now).await? {
        CreateOutcome::Created(run) => run,
        CreateOutcome::AlreadyExists(run) => {
            return Err(AppError::Conflict(format!(
                "dag '{dag_id}' already has a run '{}'",
                run.run_id
            )));
        }
    };
    store
        .append_event(&NewEvent {
            run_id: Some(run.run_id.clone()),
            details: json!({ "conf": conf }),
            ..event(caller, "trigger", dag_id, now)
        })
        .await?;
    Ok(run)
}

/// Pauses or unpauses a DAG.
pub async fn set_paused(
    store: &Store,
    caller: &Caller,
    dag_id: &DagId,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    caller.require_admin()?;
    store.set_paused(dag_id, paused).await?;
    let name = if paused { "pause" } else { "unpause" };
    store
        .append_event(&event(caller, name, dag_id, now))
        .await?;
    Ok(())
}

/// What a clear of one task of one run extends to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClearRequest {
    /// Also every task downstream of it.
    pub downstream: bool,
    /// Also every task upstream of it.
    pub upstream: bool,
    /// Also the same tasks in every earlier run (by logical date).
    pub past: bool,
    /// Also the same tasks in every later run.
    pub future: bool,
    /// Only task instances that failed or were upstream_failed.
    pub only_failed: bool,
    /// List what would be cleared, change nothing.
    pub dry_run: bool,
}

/// A task instance a clear selected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cleared {
    pub run_id: String,
    pub task_id: TaskId,
    pub state: TaskState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClearOutcome {
    pub dry_run: bool,
    pub task_instances: Vec<Cleared>,
    /// Finished runs put back to `queued` (0 on a dry run).
    pub runs_requeued: usize,
}

/// The ids of the tasks a clear of `task` covers: it, and as asked every task downstream and
/// upstream of it (transitively).
pub fn tasks_to_clear(dag: &Dag, task: &TaskId, request: &ClearRequest) -> Vec<TaskId> {
    let mut tasks = BTreeSet::from([task.clone()]);
    if request.downstream {
        tasks.extend(
            dag.downstream(task.as_str())
                .into_iter()
                .map(|t| t.id.clone()),
        );
    }
    if request.upstream {
        tasks.extend(
            dag.upstream(task.as_str())
                .into_iter()
                .map(|t| t.id.clone()),
        );
    }
    tasks.into_iter().collect()
}

/// Clears a task of a run and, as asked, its up/downstream tasks and the same tasks in past
/// and future runs; with `dry_run`, only says what it would clear (for the confirmation).
pub async fn clear(
    store: &Store,
    caller: &Caller,
    dag_id: &DagId,
    run_id: &str,
    task: &TaskId,
    request: &ClearRequest,
    now: DateTime<Utc>,
) -> Result<ClearOutcome, AppError> {
    if !request.dry_run {
        caller.require_admin()?;
    }
    let (_, dag) = load_dag(store, dag_id).await?;
    if dag.task(task.as_str()).is_none() {
        return Err(AppError::NotFound(format!(
            "dag '{dag_id}' has no task '{task}'"
        )));
    }
    let run = find_run(store, dag_id, run_id).await?;
    let tasks = tasks_to_clear(&dag, task, request);
    let earliest = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).single();
    let latest = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single();
    let (Some(earliest), Some(latest)) = (earliest, latest) else {
        return Err(AppError::Internal("the calendar's bounds".to_owned()));
    };
    let from = if request.past {
        earliest
    } else {
        run.logical_date
    };
    let to = if request.future {
        latest
    } else {
        run.logical_date
    };
    let limit = i64::try_from(MAX_CLEAR + 1).unwrap_or(i64::MAX);
    let mut selected = store
        .task_instances_in_range(dag_id, &tasks, from, to, limit)
        .await?;
    if selected.len() > MAX_CLEAR {
        return Err(AppError::BadRequest(format!(
            "this clear would select more than {MAX_CLEAR} task instances: narrow it, or use \
             `updraft tasks clear` with --from/--to"
        )));
    }
    // Manual runs may share a logical date: without past or future, only this run counts.
    selected.retain(|ti| {
        (request.past || request.future || ti.dag_run_id == run.id)
            && (!request.only_failed
                || matches!(ti.state, TaskState::Failed | TaskState::UpstreamFailed))
    });
    let task_instances: Vec<Cleared> = selected
        .iter()
        .map(|ti| Cleared {
            run_id: ti.run_id.clone(),
            task_id: ti.task_id.clone(),
            state: ti.state,
        })
        .collect();
    if request.dry_run || selected.is_empty() {
        return Ok(ClearOutcome {
            dry_run: request.dry_run,
            task_instances,
            runs_requeued: 0,
        });
    }
    let clears: Vec<(i64, i32)> = selected
        .iter()
        .map(|ti| {
            let retries = dag.task(ti.task_id.as_str()).map_or(0, |t| t.retries);
            (ti.id, i32::try_from(retries).unwrap_or(i32::MAX))
        })
        .collect();
    let report = store.clear_task_instances(&clears, now).await?;
    store
        .append_event(&NewEvent {
            run_id: Some(run_id.to_owned()),
            task_id: Some(task.clone()),
            details: json!({
                "task_instances": task_instances,
                "runs_requeued": report.runs_requeued,
                "downstream": request.downstream,
                "upstream": request.upstream,
                "past": request.past,
                "future": request.future,
            }),
            ..event(caller, "clear", dag_id, now)
        })
        .await?;
    Ok(ClearOutcome {
        dry_run: false,
        task_instances,
        runs_requeued: report.runs_requeued,
    })
}

/// What a user may mark a task instance or a run: success or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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

/// Marks a task instance success or failed (a compare-and-set from the state it was read in;
/// 409 when it moved meanwhile or already is in that state).
pub async fn mark_task(
    store: &Store,
    caller: &Caller,
    dag_id: &DagId,
    run_id: &str,
    task: &TaskId,
    mark: Mark,
    now: DateTime<Utc>,
) -> Result<TaskState, AppError> {
    caller.require_admin()?;
    let ti = store
        .find_task_instance(dag_id, run_id, task)
        .await?
        .ok_or_else(|| {
            AppError::NotFound(format!("task '{task}' of run '{run_id}' of dag '{dag_id}'"))
        })?;
    let new = match mark {
        Mark::Success => TaskState::Success,
        Mark::Failed => TaskState::Failed,
    };
    if ti.state == new {
        return Err(AppError::Conflict(format!(
            "task '{task}' is already {new}"
        )));
    }
    if !store.set_task_state(ti.id, ti.state, new, now).await? {
        return Err(AppError::Conflict(format!(
            "task '{task}' changed state meanwhile: reload and try again"
        )));
    }
    store
        .append_event(&NewEvent {
            run_id: Some(run_id.to_owned()),
            task_id: Some(task.clone()),
            details: json!({ "from": ti.state }),
            ..event(caller, mark.event(), dag_id, now)
        })
        .await?;
    Ok(new)
}

/// Marks a run success or failed, and its task instances as Airflow does (see
/// [`TaskState::when_run_marked`]): marked success, every one becomes success; marked failed,
/// a running one fails (its worker kills its try) and the unfinished others are skipped.
pub async fn mark_run(
    store: &Store,
    caller: &Caller,
    dag_id: &DagId,
    run_id: &str,
    mark: Mark,
    now: DateTime<Utc>,
) -> Result<DagRunState, AppError> {
    caller.require_admin()?;
    let run = find_run(store, dag_id, run_id).await?;
    let new = match mark {
        Mark::Success => DagRunState::Success,
        Mark::Failed => DagRunState::Failed,
    };
    if run.state == new {
        return Err(AppError::Conflict(format!(
            "run '{run_id}' is already {new}"
        )));
    }
    if !store.set_dag_run_state(run.id, run.state, new, now).await? {
        return Err(AppError::Conflict(format!(
            "run '{run_id}' changed state meanwhile: reload and try again"
        )));
    }
    let moved = mark_task_instances(store, run.id, new, now).await?;
    store
        .append_event(&NewEvent {
            run_id: Some(run_id.to_owned()),
            details: json!({ "from": run.state, "task_instances": moved }),
            ..event(caller, mark.event(), dag_id, now)
        })
        .await?;
    Ok(new)
}

/// How many task instances a run's mark moved to each state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
struct MarkedTasks {
    success: usize,
    failed: usize,
    skipped: usize,
}

/// Moves the task instances of run `run` as marking it `to` does.
async fn mark_task_instances(
    store: &Store,
    run: i64,
    to: DagRunState,
    now: DateTime<Utc>,
) -> Result<MarkedTasks, AppError> {
    let moves: Vec<(i64, TaskState, TaskState)> = store
        .list_task_instances(run)
        .await?
        .into_iter()
        .filter_map(|ti| Some((ti.id, ti.state, ti.state.when_run_marked(to)?)))
        .collect();
    let moved = store.set_task_states(&moves, now).await?;
    let mut marked = MarkedTasks::default();
    for (&(_, _, to), moved) in moves.iter().zip(moved) {
        match (moved, to) {
            (true, TaskState::Success) => marked.success += 1,
            (true, TaskState::Failed) => marked.failed += 1,
            (true, _) => marked.skipped += 1,
            (false, _) => {}
        }
    }
    Ok(marked)
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
    caller: &Caller,
    dag_id: &DagId,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<Cancelled, AppError> {
    caller.require_admin()?;
    let run = find_run(store, dag_id, run_id).await?;
    if run.state.is_finished() {
        return Err(AppError::Conflict(format!(
            "run '{run_id}' is {} already",
            run.state
        )));
    }
    if !store
        .set_dag_run_state(run.id, run.state, DagRunState::Failed, now)
        .await?
    {
        return Err(AppError::Conflict(format!(
            "run '{run_id}' changed state meanwhile: reload and try again"
        )));
    }
    let moved = mark_task_instances(store, run.id, DagRunState::Failed, now).await?;
    let cancelled = Cancelled {
        task_instances_failed: moved.failed,
        task_instances_skipped: moved.skipped,
    };
    store
        .append_event(&NewEvent {
            run_id: Some(run_id.to_owned()),
            details: json!({ "from": run.state, "task_instances": moved }),
            ..event(caller, "cancel", dag_id, now)
        })
        .await?;
    Ok(cancelled)
}

#[cfg(test)]
mod tests {
    use updraft_core::dag::{LoadOptions, decode};

    use super::*;

    /// extract -> transform -> load, and extract -> audit.
    fn dag() -> Dag {
        let text = "\
tasks:
  extract: {run: x}
  transform: {run: x, depends_on: extract}
  load: {run: x, depends_on: transform}
  audit: {run: x, depends_on: extract}
";
        decode("etl.yaml", text, &LoadOptions::default()).unwrap()
    }

    fn check(task: &str, downstream: bool, upstream: bool, expected: &[&str]) {
        let request = ClearRequest {
            downstream,
            upstream,
            ..ClearRequest::default()
        };
        let tasks = tasks_to_clear(&dag(), &TaskId::parse(task).unwrap(), &request);
        let names: Vec<&str> = tasks.iter().map(TaskId::as_str).collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn a_clear_covers_the_task_and_as_asked_its_relatives() {
        check("transform", false, false, &["transform"]);
        check(
            "extract",
            true,
            false,
            &["audit", "extract", "load", "transform"],
        );
        check("load", false, true, &["extract", "load", "transform"]);
        check("transform", true, true, &["extract", "load", "transform"]);
    }
}
