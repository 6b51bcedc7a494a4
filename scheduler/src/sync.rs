//! DAG file sync: makes the `dag`, `dag_version` and `import_error` tables say what the DAGs
//! folder holds.
//!
//! A broken file is recorded as an import error, and the DAGs it defined before stay active on
//! their last good version: a typo in production never stops a DAG's schedule.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use updraft_core::dag::{FolderLoad, LoadedDag};
use updraft_core::ids::DagId;
use updraft_metadata::{DagSync, DagSyncOutcome, Error, ImportError, Store};

/// What one sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub created: Vec<DagId>,
    pub changed: Vec<DagId>,
    pub unchanged: usize,
    /// DAGs of the folder with a schedule but no next run recorded: synced by another
    /// process (the CLI) before any scheduler planned them, or with no further run.
    pub unplanned: Vec<DagId>,
    /// DAGs whose files are gone or no longer define them.
    pub deactivated: u64,
    pub import_errors: usize,
}

/// Options of the sync that come from configuration.
#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// `is_paused` of a DAG seen for the first time (Airflow's `dags_are_paused_at_creation`).
    pub paused_on_creation: bool,
}

/// Writes what `load` found to the database.
pub async fn sync_dags(
    store: &Store,
    load: &FolderLoad,
    options: SyncOptions,
    now: DateTime<Utc>,
) -> Result<SyncReport, Error> {
    let mut report = SyncReport::default();
    for loaded in &load.dags {
        match store
            .upsert_dag(&dag_sync(loaded, options.paused_on_creation), now)
            .await?
        {
            DagSyncOutcome::Created => report.created.push(loaded.dag.id.clone()),
            DagSyncOutcome::Changed => report.changed.push(loaded.dag.id.clone()),
            DagSyncOutcome::Unchanged => report.unchanged += 1,
        }
    }
    let errors: Vec<ImportError> = load
        .errors
        .iter()
        .map(|error| ImportError {
            filename: error.path.display().to_string(),
            message: error.to_string(),
            at: now,
        })
        .collect();
    store.replace_import_errors(&errors).await?;
    report.import_errors = errors.len();

    // Keep the DAGs of broken files active: their last good version goes on running.
    let broken: BTreeSet<&str> = errors.iter().map(|e| e.filename.as_str()).collect();
    let mut active: Vec<DagId> = load.dags.iter().map(|l| l.dag.id.clone()).collect();
    let loaded: BTreeSet<&DagId> = active.iter().collect();
    let mut kept = Vec::new();
    for row in store.list_dags().await? {
        if loaded.contains(&row.dag_id) && row.schedule.is_some() && row.next_run.is_none() {
            report.unplanned.push(row.dag_id.clone());
        }
        if broken.contains(row.fileloc.as_str()) {
            kept.push(row.dag_id);
        }
    }
    active.extend(kept);
    report.deactivated = store.mark_dags_inactive_except(&active).await?;
    Ok(report)
}

fn dag_sync(loaded: &LoadedDag, paused_on_creation: bool) -> DagSync {
    let dag = &loaded.dag;
    let schedule = match dag.timetable.schedule {
        updraft_core::schedule::Schedule::Manual => None,
        ref schedule => Some(schedule.to_string()),
    };
    DagSync {
        dag_id: dag.id.clone(),
        fileloc: dag.fileloc.clone(),
        owner: dag.owner.clone().unwrap_or_default(),
        description: dag.description.clone(),
        tags: dag.tags.clone(),
        schedule,
        timezone: dag.timetable.timezone.name().to_owned(),
        max_active_runs: dag.max_active_runs as i32,
        max_active_tasks: dag.max_active_tasks as i32,
        paused_on_creation,
        version_hash: dag.version_hash(),
        serialized: serde_json::to_value(dag).expect("a Dag always serializes"),
        source: loaded.source.clone(),
    }
}
