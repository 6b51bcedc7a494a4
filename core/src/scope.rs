//! [`Scope`]: which work a scheduler steps and a worker claims.

/// The work a scheduler or a worker takes on. The scheduler and worker of one process are
/// given the same scope, so that its worker claims what its scheduler queues.
///
/// A scheduler limited to a run or a backfill does nothing else: no sync of the DAGs folder, no
/// new runs, no zombies reaped, and no heartbeat, so that no other command takes it for a
/// scheduler.
use crate::ids::{BackfillId, DagRunId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// All of it (`scheduler`, `worker`, `standalone`): a worker claims whatever its queues
    /// hold.
    Everything,
    /// One run, by its row id (`dags test`).
    Run(DagRunId),
    /// The runs of one backfill, by its row id (`dags backfill` when no scheduler is alive);
    /// its scheduler also marks the backfill completed.
    Backfill(BackfillId),
}
