//! updraft-metadata: the metadata database (DESIGN §7), the one place where the scheduler,
//! workers, webserver and CLI meet.
//!
//! It owns the schema (`migrations/postgres` and `migrations/sqlite`, embedded in the binary),
//! connecting to Postgres or SQLite from a URL, the schema check every process runs before it
//! starts, and [`Store`]: every query of the system, typed with updraft-core's ids and states.
//!
//! Architecture invariants:
//! - It stores and answers; it makes no scheduling decision. Which task runs next, when a run is
//!   due, what a failure means: that is decided in `core`/`scheduler` and handed here as values.
//! - Every state write is a compare-and-set (`UPDATE ... WHERE id = $1 AND state = $expected`),
//!   and a move that `TaskState::can_move_to` / `DagRunState::can_move_to` forbids never reaches
//!   the database.
//! - Time is a parameter: no query reads the database's clock (`now()`, `datetime('now')`), so
//!   both backends store the same values and tests control time.
//! - The two backends are a closed set behind one API; SQL is written once wherever the dialects
//!   agree (see `db`), and the same test suite runs against both.
//! - Database URLs appear in messages only with their password redacted ([`redact_url`]).

mod backfills;
mod change;
mod clear;
mod connections;
mod dags;
mod db;
mod doorbell;
mod due;
mod error;
mod events;
mod handlers;
mod metrics;
mod notifications;
mod pools;
mod queue;
mod retention;
mod runs;
mod schema;
#[cfg(feature = "scratch")]
mod scratch;
mod sessions;
mod signal;
mod store;
mod tasks;
#[cfg(feature = "testing")]
pub mod testing;
mod url;
mod users;
mod variables;
mod views;

pub use backfills::{
    Backfill, BackfillCreated, BackfillMove, BackfillProgress, NewBackfill, Rerun, TaskRetries,
};
pub use change::{Change, Missed};
pub use clear::{Clear, ClearReport};
pub use connections::Connection;
pub use dags::{DagRow, DagSync, DagSyncOutcome, DagVersion, ImportError};
pub use due::{DueBatch, DueDag, NextRun};
pub use error::Error;
pub use events::{EventLog, NewEvent};
pub use handlers::HandlerRun;
pub use metrics::{SCHEDULERS_SHOWN, SchedulerLoop, TryDuration};
pub use notifications::{Attempt, NewNotification, Notification};
pub use pools::{DEFAULT_POOL, Pool};
pub use queue::{
    Claim, QueueRequest, Stepped, TryEnd, TryPid, WORKER_LOST_AFTER, Worker, WorkerLoad, WorkerRef,
    WorkerStatus,
};
pub use retention::{CLEAN_BATCH, CLEAN_BATCH_TASK_INSTANCES, Cleaned};
pub use runs::{CreateOutcome, DagRun, NewDagRun, RunStart};
pub use schema::SchemaStatus;
#[cfg(feature = "scratch")]
pub use scratch::{ScratchDatabase, SeedRuns, seeded_run_id};
pub use sessions::Session;
pub use signal::{Changes, Topic, Wakeups};
pub use store::{Backend, Connections, Store};
#[cfg(feature = "testing")]
pub use tasks::NewTaskTry;
pub use tasks::{LogChunk, NewTaskInstance, TaskInstance, TaskOutput, TaskTry};
pub use url::redact_url;
pub use users::{ApiToken, NewApiToken, Role, USERNAME_MAX, User, check_username};
pub use variables::Variable;
pub use views::{DagFilter, PoolUsage, RunDot, RunFilter};
