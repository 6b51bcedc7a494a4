//! The writes users make from the UI and the API, one function each, shared by the forms and
//! the JSON handlers. Each checks the caller's role and hands the action to `updraft_ops`,
//! which writes the change and its `event_log` row (the caller as actor) in one transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use updraft_core::ids::{ConnectionId, DagId, TaskId, VariableKey};
use updraft_core::secret::SecretsConfig;
use updraft_core::state::{DagRunState, TaskState};
use updraft_metadata::{Connection, DagRun, Store, Variable};
use updraft_ops::backfill::{BackfillOutcome, BackfillRequest};
use updraft_ops::clear::{Cleared, Selection};
use updraft_ops::connections::SetConnection;
use updraft_ops::dags::Trigger;
use updraft_ops::mark::{Cancelled, Mark};
use updraft_ops::variables::SetVariable;
use updraft_ops::{Actor, Error};

use crate::auth::Caller;
use crate::error::AppError;

/// A clear selects at most this many task instances; a wider one must be narrowed.
pub const MAX_CLEAR: usize = 10_000;

impl From<Error> for AppError {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(message) => AppError::BadRequest(message),
            Error::NotFound(message) => AppError::NotFound(message),
            Error::Conflict(message) => AppError::Conflict(message),
            // The server's secret key is missing or wrong: its operator's to fix.
            Error::Key(message) => AppError::Internal(message),
            Error::Store(error) => error.into(),
        }
    }
}

/// Parses a DAG id from a URL or form, as the CLI does.
pub fn dag_id(text: &str) -> Result<DagId, AppError> {
    DagId::parse(text).map_err(|error| AppError::BadRequest(format!("bad DAG id: {error}")))
}

fn actor(caller: &Caller) -> Actor {
    Actor::User(caller.user.username.clone())
}

/// The DAG's row and its current version, parsed.
pub async fn load_dag(
    store: &Store,
    dag_id: &DagId,
) -> Result<(updraft_metadata::DagRow, updraft_core::dag::Dag), AppError> {
    Ok(updraft_ops::dags::load_dag(store, dag_id).await?)
}

pub async fn find_run(store: &Store, dag_id: &DagId, run_id: &str) -> Result<DagRun, AppError> {
    Ok(updraft_ops::dags::find_run(store, dag_id, run_id).await?)
}

/// Creates a manual run, after checking its conf against the DAG's typed params (every problem
/// is named in the 400).
pub async fn trigger(
    store: &Store,
    caller: &Caller,
    dag_id: &DagId,
    request: &Trigger,
    now: DateTime<Utc>,
) -> Result<DagRun, AppError> {
    caller.require_admin()?;
    Ok(updraft_ops::dags::trigger(store, &actor(caller), dag_id, request, now).await?)
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
    Ok(updraft_ops::dags::set_paused(store, &actor(caller), dag_id, paused, now).await?)
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClearOutcome {
    pub dry_run: bool,
    pub task_instances: Vec<Cleared>,
    /// Finished runs put back to `queued` (0 on a dry run).
    pub runs_requeued: usize,
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
    let run = find_run(store, dag_id, run_id).await?;
    let selection = Selection {
        tasks: vec![task.clone()],
        downstream: request.downstream,
        upstream: request.upstream,
        from: (!request.past).then_some(run.logical_date),
        to: (!request.future).then_some(run.logical_date),
        // Manual runs may share a logical date: without past or future, only this run counts.
        run_id: (!request.past && !request.future).then(|| run.run_id.clone()),
        only_failed: request.only_failed,
    };
    let selected = updraft_ops::clear::select(store, &dag, &selection, Some(MAX_CLEAR)).await?;
    let task_instances = selected.iter().map(Cleared::from).collect();
    if request.dry_run || selected.is_empty() {
        return Ok(ClearOutcome {
            dry_run: request.dry_run,
            task_instances,
            runs_requeued: 0,
        });
    }
    let report =
        updraft_ops::clear::clear(store, &actor(caller), &dag, &selection, &selected, now).await?;
    Ok(ClearOutcome {
        dry_run: false,
        task_instances,
        runs_requeued: report.runs_requeued,
    })
}

/// Marks a task instance success or failed (409 when it moved meanwhile or already is in
/// that state).
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
    let actor = actor(caller);
    Ok(updraft_ops::mark::mark_task(store, &actor, dag_id, run_id, task, mark, now).await?)
}

/// Marks a run success or failed, and its task instances as Airflow does.
pub async fn mark_run(
    store: &Store,
    caller: &Caller,
    dag_id: &DagId,
    run_id: &str,
    mark: Mark,
    now: DateTime<Utc>,
) -> Result<DagRunState, AppError> {
    caller.require_admin()?;
    updraft_ops::mark::mark_run(store, &actor(caller), dag_id, run_id, mark, now).await?;
    Ok(match mark {
        Mark::Success => DagRunState::Success,
        Mark::Failed => DagRunState::Failed,
    })
}

/// Cancels an unfinished run: it fails at once, as marking it failed does.
pub async fn cancel_run(
    store: &Store,
    caller: &Caller,
    dag_id: &DagId,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<Cancelled, AppError> {
    caller.require_admin()?;
    Ok(updraft_ops::mark::cancel_run(store, &actor(caller), dag_id, run_id, now).await?)
}

/// Plans (a dry run, which changes nothing and so is a read, as a clear's dry run) or starts
/// (admins only) a backfill of `dag_id`.
pub async fn backfill(
    store: &Store,
    caller: &Caller,
    dag_id: &DagId,
    request: &BackfillRequest,
    now: DateTime<Utc>,
) -> Result<BackfillOutcome, AppError> {
    if !request.dry_run {
        caller.require_admin()?;
    }
    Ok(updraft_ops::backfill::backfill(store, &actor(caller), dag_id, request, now).await?)
}

/// Creates or replaces a variable (sealed when it is secret).
pub async fn set_variable(
    store: &Store,
    caller: &Caller,
    secrets: &SecretsConfig,
    variable: &SetVariable,
    now: DateTime<Utc>,
) -> Result<Variable, AppError> {
    caller.require_admin()?;
    Ok(updraft_ops::variables::set(store, &actor(caller), secrets, variable, now).await?)
}

pub async fn delete_variable(
    store: &Store,
    caller: &Caller,
    key: &VariableKey,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    caller.require_admin()?;
    Ok(updraft_ops::variables::delete(store, &actor(caller), key, now).await?)
}

/// Creates or replaces a connection (its password and extra sealed).
pub async fn set_connection(
    store: &Store,
    caller: &Caller,
    secrets: &SecretsConfig,
    connection: &SetConnection,
    now: DateTime<Utc>,
) -> Result<Connection, AppError> {
    caller.require_admin()?;
    Ok(updraft_ops::connections::set(store, &actor(caller), secrets, connection, now).await?)
}

pub async fn delete_connection(
    store: &Store,
    caller: &Caller,
    conn_id: &ConnectionId,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    caller.require_admin()?;
    Ok(updraft_ops::connections::delete(store, &actor(caller), conn_id, now).await?)
}
