//! Clearing task instances (DESIGN §5 "Clearing"): they go back to `none` with a fresh retry
//! budget, and their finished runs back to `queued`, so that the scheduler runs them again.
//!
//! Which task instances to clear (tasks, up- and downstream, dates, only failed) is decided by
//! the caller; this module only applies the reset, in one transaction.

use updraft_core::ids::TaskInstanceId;

/// A task instance to clear, with the retries of its task: its fresh budget of tries.
/// Ordered by task instance first, the order in which clears lock their rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Clear {
    pub task_instance: TaskInstanceId,
    pub retries: i32,
}

/// What a clear changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClearReport {
    /// Task instances reset to `none`.
    pub task_instances: usize,
    /// Finished runs (`success` or `failed`) put back to `queued`.
    pub runs_requeued: usize,
}

#[cfg(feature = "testing")]
impl crate::Store {
    /// [`Change::clear_task_instances`](crate::Change::clear_task_instances) alone, without an
    /// event.
    pub async fn clear_task_instances(
        &self,
        clears: &[Clear],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ClearReport, crate::Error> {
        let mut change = self.change("clear task instances").await?;
        let report = change.clear_task_instances(clears, now).await?;
        change.commit_unrecorded().await?;
        Ok(report)
    }
}
