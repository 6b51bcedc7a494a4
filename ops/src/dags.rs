//! Reading what an action acts on, and the actions on a DAG: trigger, pause and unpause.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use updraft_core::dag::Dag;
use updraft_core::ids::DagId;
use updraft_core::render::effective_params;
use updraft_metadata::{CreateOutcome, DagRow, DagRun, NewDagRun, NewEvent, Store};

use crate::{Actor, Error, event};

/// The DAG's row and its current version.
pub async fn load_dag(store: &Store, dag_id: &DagId) -> Result<(DagRow, Dag), Error> {
    let row = store
        .get_dag(dag_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("dag '{dag_id}' not found")))?;
    let dag = store.load_dag(dag_id, &row.version_hash).await?;
    Ok((row, dag))
}

/// Run `run_id` of `dag_id`.
pub async fn find_run(store: &Store, dag_id: &DagId, run_id: &str) -> Result<DagRun, Error> {
    store
        .get_dag_run_by_run_id(dag_id, run_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("run '{run_id}' of dag '{dag_id}' not found")))
}

/// Checks a run's conf: a JSON object whose keys fit the DAG's typed params (every problem is
/// named).
pub fn check_conf(dag: &Dag, conf: &serde_json::Value) -> Result<(), Error> {
    if !conf.is_object() {
        return Err(Error::Invalid(format!(
            "conf must be a JSON object, found {conf}"
        )));
    }
    effective_params(dag, conf).map(|_| ()).map_err(|problems| {
        Error::Invalid(format!(
            "bad params for DAG \"{}\": {}",
            dag.id,
            problems.join("; ")
        ))
    })
}

/// What a trigger asks for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// A JSON object; its keys override the DAG's params.
    #[serde(default)]
    pub conf: Option<serde_json::Value>,
    /// Default: now.
    #[serde(default)]
    pub logical_date: Option<DateTime<Utc>>,
}

/// Creates a manual run of `dag_id`, after checking its conf against the DAG's params.
pub async fn trigger(
    store: &Store,
    actor: &Actor,
    dag_id: &DagId,
    request: &Trigger,
    now: DateTime<Utc>,
) -> Result<DagRun, Error> {
    let (row, dag) = load_dag(store, dag_id).await?;
    let conf = request.conf.clone().unwrap_or_else(|| json!({}));
    check_conf(&dag, &conf)?;
    let logical_date = request.logical_date.unwrap_or(now);
    let run = NewDagRun::manual(
        row.dag_id,
        row.version_hash,
        logical_date,
        conf.clone(),
        now,
    );
    let mut change = store.change("trigger a dag").await?;
    let run = match change.create_dag_run(&run, now).await? {
        CreateOutcome::Created(run) => run,
        CreateOutcome::AlreadyExists(run) => {
            return Err(Error::Conflict(format!(
                "DAG \"{dag_id}\" already has a run \"{}\"",
                run.run_id
            )));
        }
    };
    change
        .commit(&NewEvent {
            run_id: Some(run.run_id.clone()),
            details: json!({ "conf": conf }),
            ..event(actor, "trigger", dag_id, now)
        })
        .await?;
    Ok(run)
}

/// Pauses or unpauses a DAG (idempotent).
pub async fn set_paused(
    store: &Store,
    actor: &Actor,
    dag_id: &DagId,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let mut change = store.change("pause a dag").await?;
    change.set_paused(dag_id, paused).await?;
    let name = if paused { "pause" } else { "unpause" };
    change.commit(&event(actor, name, dag_id, now)).await?;
    Ok(())
}
