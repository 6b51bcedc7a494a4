//! Finding what a command line names: a DAG in the DAGs folder or in the database, a run of
//! it. A name that is not found is an error that suggests close ones ("did you mean") and says
//! where it looked.

use anyhow::{Result, anyhow, bail};
use chrono::Utc;
use updraft_core::dag::{Dag, FolderLoad, load_paths};
use updraft_core::ids::DagId;
use updraft_core::suggest::did_you_mean;
use updraft_metadata::{DagRow, DagRun, Store};
use updraft_scheduler::sync::{SyncOptions, sync_dags};

use crate::config::Config;

/// Every DAG file of the DAGs folder, loaded; an error when the folder does not exist.
pub fn load_folder(config: &Config) -> Result<FolderLoad> {
    require_dags_folder(config)?;
    Ok(load_paths(
        std::slice::from_ref(&config.dags_folder),
        &config.load,
    ))
}

/// An error saying how to name the DAGs folder, when it does not exist.
pub fn require_dags_folder(config: &Config) -> Result<()> {
    if !config.dags_folder.is_dir() {
        bail!(
            "the DAGs folder {} does not exist: pass --dags-folder or set UPDRAFT_DAGS_FOLDER",
            config.dags_folder.display()
        );
    }
    Ok(())
}

/// The DAG `dag_id` of the DAGs folder, or an error naming close ids and broken files.
pub fn find_dag(config: &Config, dag_id: &str) -> Result<Dag> {
    let load = load_folder(config)?;
    if let Some(loaded) = load
        .dags
        .iter()
        .find(|loaded| loaded.dag.id.as_str() == dag_id)
    {
        return Ok(loaded.dag.clone());
    }
    let hint = did_you_mean(dag_id, load.dags.iter().map(|l| l.dag.id.as_str()));
    let broken = if load.errors.is_empty() {
        String::new()
    } else {
        format!(
            " ({} file(s) there have errors: run `updraft dags validate`)",
            load.errors.len()
        )
    };
    Err(anyhow!(
        "no DAG \"{dag_id}\" in {}{hint}{broken}",
        config.dags_folder.display()
    ))
}

/// The DAG's row in the database and its stored version; a DAG not synced yet is synced from
/// the DAGs folder first, so that a command right after adding a file works without waiting
/// for the scheduler.
pub async fn stored_dag(config: &Config, store: &Store, dag_id: &str) -> Result<(DagRow, Dag)> {
    let id = DagId::parse(dag_id).map_err(|error| anyhow!("bad DAG id \"{dag_id}\": {error}"))?;
    if store.get_dag(&id).await?.is_none() {
        let load = load_folder(config)?;
        sync_dags(
            store,
            &load,
            SyncOptions {
                paused_on_creation: false,
            },
            Utc::now(),
        )
        .await?;
    }
    let Some(row) = store.get_dag(&id).await? else {
        let known = store.list_dags().await?;
        let hint = did_you_mean(dag_id, known.iter().map(|row| row.dag_id.as_str()));
        bail!(
            "no DAG \"{dag_id}\" in the database or in {}{hint}",
            config.dags_folder.display()
        );
    };
    let version = store
        .get_dag_version(&id, &row.version_hash)
        .await?
        .ok_or_else(|| {
            anyhow!(
                "DAG \"{dag_id}\" has no stored version {}",
                row.version_hash
            )
        })?;
    let dag: Dag = serde_json::from_value(version.serialized)?;
    Ok((row, dag))
}

/// The DAG `dag_id` as the database knows it (never synced from the folder: a command that
/// reads runs has nothing to read of a DAG that was never synced), or an error that suggests
/// a known one.
pub async fn find_dag_row(store: &Store, dag_id: &str) -> Result<DagRow> {
    if let Ok(id) = DagId::parse(dag_id)
        && let Some(dag) = store.get_dag(&id).await?
    {
        return Ok(dag);
    }
    let known = store.list_dags().await?;
    let hint = did_you_mean(dag_id, known.iter().map(|dag| dag.dag_id.as_str()));
    Err(anyhow!("no DAG \"{dag_id}\" in the database{hint}"))
}

/// Run `run_id` of `dag`, or an error that says how to list its runs.
pub async fn find_run(store: &Store, dag: &DagRow, run_id: &str) -> Result<DagRun> {
    store
        .get_dag_run_by_run_id(&dag.dag_id, run_id)
        .await?
        .ok_or_else(|| {
            anyhow!(
                "DAG \"{dag}\" has no run \"{run_id}\"; see its runs with `updraft runs list {dag}`",
                dag = dag.dag_id
            )
        })
}
