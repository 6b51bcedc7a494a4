//! updraft-ops: every action a user takes, written once and shared by the web UI, the API and
//! the command line: trigger, pause and unpause, clear, mark a task instance or a run, cancel a
//! run, plan, start, pause, resume or cancel a backfill, and set or delete a variable or a
//! connection.
//!
//! Each action takes the [`Actor`] who acts and `now`, checks its input against the stored DAG
//! (the decisions are `updraft_core`'s), and writes its change and its `event_log` row in one
//! transaction ([`updraft_metadata::Change`]): a crash never keeps one without the other.
//! Who may act is the caller's to check (the web's roles; the command line holds the
//! database's credentials).

pub mod backfill;
pub mod clear;
pub mod connections;
pub mod dags;
pub mod mark;
pub mod retention;
pub mod secrets;
pub mod variables;

pub use updraft_core::actor::Actor;
use updraft_core::ids::DagId;
use updraft_metadata::NewEvent;

/// Why an action was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is wrong as asked: a bad date, conf or range (the web answers 400, the
    /// command line exits 2).
    #[error("{0}")]
    Invalid(String),
    /// What it names does not exist: a DAG, run, task (404).
    #[error("{0}")]
    NotFound(String),
    /// It contradicts what is stored now: already in that state, moved meanwhile, nothing to
    /// do (409).
    #[error("{0}")]
    Conflict(String),
    /// The installation's secret key is missing or does not open a stored value: a setup to
    /// fix, not a request to change.
    #[error("{0}")]
    Key(String),
    /// Broken machinery: the database.
    #[error(transparent)]
    Store(updraft_metadata::Error),
}

impl From<updraft_core::seal::SealError> for Error {
    fn from(error: updraft_core::seal::SealError) -> Error {
        Error::Key(error.to_string())
    }
}

impl From<updraft_metadata::Error> for Error {
    fn from(error: updraft_metadata::Error) -> Error {
        use updraft_metadata::Error as E;
        match error {
            E::NotFound(_) => Error::NotFound(error.to_string()),
            E::Conflict(_)
            | E::IllegalTaskTransition { .. }
            | E::IllegalDagRunTransition { .. } => Error::Conflict(error.to_string()),
            E::Invalid(_) => Error::Invalid(error.to_string()),
            other => Error::Store(other),
        }
    }
}

/// The event log row of `event` by `actor`, of no DAG (a variable, a connection), at `now`.
fn installation_event(
    actor: &Actor,
    event: &str,
    details: serde_json::Value,
    now: chrono::DateTime<chrono::Utc>,
) -> NewEvent {
    NewEvent {
        at: now,
        actor: actor.to_string(),
        dag_id: None,
        run_id: None,
        task_id: None,
        event: event.to_owned(),
        details,
    }
}

/// The event log row of `event` by `actor` on `dag_id`, at `now`; the caller sets its run, task
/// and details.
fn event(
    actor: &Actor,
    event: &str,
    dag_id: &DagId,
    now: chrono::DateTime<chrono::Utc>,
) -> NewEvent {
    NewEvent {
        at: now,
        actor: actor.to_string(),
        dag_id: Some(dag_id.clone()),
        run_id: None,
        task_id: None,
        event: event.to_owned(),
        details: serde_json::json!({}),
    }
}

/// Refuses text a database cannot keep (Postgres stores no NUL character), naming `what`.
fn storable(what: &str, text: &str) -> Result<(), Error> {
    match text.contains('\0') {
        true => Err(Error::Invalid(format!("{what} contains a NUL character"))),
        false => Ok(()),
    }
}
