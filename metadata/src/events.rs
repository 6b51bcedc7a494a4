//! Table `event_log`: the audit log of who did what, and of every state change.

use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_core::ids::{DagId, TaskId};

use crate::db::{Query, Row, query};
use crate::{Error, Store};

/// A row of `event_log`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventLog {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// A username, or the part that acted (`scheduler`, `worker <id>`).
    pub actor: String,
    pub dag_id: Option<DagId>,
    pub run_id: Option<String>,
    pub task_id: Option<TaskId>,
    /// What happened, e.g. `trigger`, `pause`, `task_state`.
    pub event: String,
    pub details: serde_json::Value,
}

/// An event to append: the input of [`Store::append_event`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub dag_id: Option<DagId>,
    pub run_id: Option<String>,
    pub task_id: Option<TaskId>,
    pub event: String,
    pub details: serde_json::Value,
}

impl EventLog {
    pub(crate) fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(EventLog {
            id: row.get("id")?,
            at: row.get("at")?,
            actor: row.get("actor")?,
            dag_id: row.opt_id("dag_id")?,
            run_id: row.get("run_id")?,
            task_id: row.opt_id("task_id")?,
            event: row.get("event")?,
            details: row.get("details")?,
        })
    }
}

/// The statement that appends `event` and returns its row: alone ([`Store::append_event`]) or
/// in the transaction of the change it records ([`Change::commit`](crate::Change::commit)).
pub(crate) fn insert_event(event: &NewEvent) -> Query<'_> {
    query(
        "append to the event log",
        "INSERT INTO event_log (at, actor, dag_id, run_id, task_id, event, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         RETURNING *",
    )
    .bind(event.at)
    .bind(event.actor.as_str())
    .bind(event.dag_id.as_ref().map(DagId::as_str))
    .bind(event.run_id.as_deref())
    .bind(event.task_id.as_ref().map(TaskId::as_str))
    .bind(event.event.as_str())
    .bind(&event.details)
}

impl Store {
    pub async fn append_event(&self, event: &NewEvent) -> Result<EventLog, Error> {
        self.fetch_one(insert_event(event), EventLog::from_row)
            .await
    }

    /// The newest `limit` events, of one DAG or of all.
    #[cfg(feature = "testing")]
    pub async fn list_events(
        &self,
        dag_id: Option<&DagId>,
        limit: i64,
    ) -> Result<Vec<EventLog>, Error> {
        // Two texts rather than `($1 IS NULL OR dag_id = $1)`, so that each is planned with its
        // own index and reads only `limit` rows however long the log is.
        let events = match dag_id {
            None => query(
                "list events",
                "SELECT * FROM event_log ORDER BY at DESC, id DESC LIMIT $1",
            )
            .bind(limit),
            Some(dag_id) => query(
                "list events",
                "SELECT * FROM event_log WHERE dag_id = $2 ORDER BY at DESC, id DESC LIMIT $1",
            )
            .bind(limit)
            .bind(dag_id.as_str()),
        };
        self.fetch_all(events, EventLog::from_row).await
    }
}
