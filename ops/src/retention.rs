//! Cleaning the metadata database (`db clean`, Airflow's `airflow db clean`): finished runs
//! older than a cutoff with everything that hangs on them, and older events
//! (`updraft_metadata`'s retention). It runs in many short transactions, not one; its event is
//! written once it is done, with what it removed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use updraft_core::ids::DagId;
use updraft_metadata::{CLEAN_BATCH, Cleaned, Store};

use crate::{Actor, Error, installation_event};

/// What to clean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clean {
    /// Runs that ended longer ago than this, and events older.
    pub older_than: Duration,
    /// One DAG's, or every DAG's (and then the events of no DAG too).
    pub dag_id: Option<DagId>,
}

impl Clean {
    /// The instant before which things are old.
    pub fn cutoff(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
        chrono::Duration::from_std(self.older_than)
            .ok()
            .and_then(|age| now.checked_sub_signed(age))
            .ok_or_else(|| Error::Invalid(format!("{:?} is too long ago", self.older_than)))
    }
}

/// What a clean would delete now.
pub async fn count(store: &Store, clean: &Clean, now: DateTime<Utc>) -> Result<Cleaned, Error> {
    Ok(store
        .count_old(clean.cutoff(now)?, clean.dag_id.as_ref())
        .await?)
}

/// Deletes what is old; `progress` hears each batch. Returns what it deleted.
pub async fn clean(
    store: &Store,
    actor: &Actor,
    clean: &Clean,
    now: DateTime<Utc>,
    progress: impl FnMut(Cleaned),
) -> Result<Cleaned, Error> {
    let cutoff = clean.cutoff(now)?;
    let cleaned = store
        .clean(cutoff, clean.dag_id.as_ref(), CLEAN_BATCH, progress)
        .await?;
    let details = json!({
        "older_than": cutoff,
        "dag_id": clean.dag_id,
        "runs": cleaned.runs,
        "task_instances": cleaned.task_instances,
        "events": cleaned.events,
    });
    store
        .append_event(&installation_event(actor, "db_clean", details, Utc::now()))
        .await?;
    Ok(cleaned)
}
