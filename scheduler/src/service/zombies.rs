//! Zombies: the tries of workers that stopped heartbeating are ended by the scheduler, failed
//! or up for retry, with a line in their log that says why.

use chrono::{DateTime, Utc};
use updraft_core::dag::Dag;
use updraft_core::retry::{RetryPolicy, after_failed_try};
use updraft_core::state::TaskState;
use updraft_metadata::{Error, TaskInstance, TryEnd};

use super::Scheduler;

impl Scheduler {
    /// Ends the tries of workers that stopped heartbeating: failed, or up for retry.
    pub(super) async fn reap_zombies(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        let threshold = chrono::Duration::from_std(self.settings.zombie_threshold)
            .unwrap_or(chrono::Duration::MAX);
        let cutoff = now.checked_sub_signed(threshold).unwrap_or(now);
        let zombies = self.store.list_zombies(cutoff).await?;
        if !zombies.is_empty() {
            // Their workers are shown lost from now on, not only once their heartbeat is old.
            self.store.mark_workers_lost(cutoff).await?;
        }
        for zombie in zombies {
            let Some(run) = self.store.get_dag_run(zombie.dag_run_id).await? else {
                continue;
            };
            let dag = self.dag(&run.dag_id, &run.version_hash).await?;
            let message = format!(
                "\nupdraft: try {} is a zombie: its worker {} on {} stopped heartbeating at {}\n",
                zombie.try_number,
                zombie.worker_id.as_deref().unwrap_or("?"),
                zombie.hostname.as_deref().unwrap_or("?"),
                zombie
                    .heartbeat_at
                    .map_or_else(|| "start".to_owned(), |at| at.to_rfc3339()),
            );
            let (state, next_retry_at) = after_zombie(&dag, &zombie, now);
            let ended = self
                .store
                .end_try(
                    &TryEnd {
                        key: zombie.try_key(),
                        worker_id: None,
                        state,
                        exit_code: None,
                        next_retry_at,
                        outputs: Vec::new(),
                        log_tail: Vec::new(),
                    },
                    now,
                )
                .await?;
            // Another scheduler may have ended it first: the one that did says so, once.
            if !ended {
                continue;
            }
            tracing::warn!(dag_id = %zombie.dag_id, task_id = %zombie.task_id, "{}", message.trim());
            match self
                .store
                .append_task_log(zombie.try_key(), message.as_bytes())
                .await
            {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// What a zombie's try ends in: up for retry while tries remain, else failed (the worker's
/// own decision for a failed try, `after_failed_try`).
fn after_zombie(
    dag: &Dag,
    zombie: &TaskInstance,
    now: DateTime<Utc>,
) -> (TaskState, Option<DateTime<Utc>>) {
    match dag.task(zombie.task_id.as_str()) {
        Some(task) => after_failed_try(
            &RetryPolicy::of(task),
            zombie.try_number,
            zombie.max_tries,
            now,
        ),
        None => (TaskState::Failed, None),
    }
}
