//! Starting queued runs within `max_active_runs`: the runs a tick starts get their task
//! instances and move to `running` in one transaction (the store checks every limit again as
//! it writes: another scheduler may have started runs since this one read them).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use updraft_core::dag::Dag;
use updraft_metadata::{DagRun, Error, NewTaskInstance, RunStart};

use super::Scheduler;

/// The most runs started in one transaction.
const START_BATCH: usize = 1000;

/// A queued run this tick starts, with its DAG and the most runs of its kind that may run.
pub(super) struct ToStart {
    pub(super) run: DagRun,
    pub(super) dag: Arc<Dag>,
    pub(super) max_active_runs: usize,
}

impl Scheduler {
    /// Starts `runs`; returns those that started (now `running`) and those that did not
    /// (their kind is full after all, or another scheduler moved them).
    pub(super) async fn start_runs(
        &mut self,
        runs: Vec<ToStart>,
        now: DateTime<Utc>,
    ) -> Result<(Vec<ToStart>, Vec<ToStart>), Error> {
        let (mut started, mut refused) = (Vec::new(), Vec::new());
        let mut runs = runs.into_iter().peekable();
        while runs.peek().is_some() {
            let chunk: Vec<ToStart> = runs.by_ref().take(START_BATCH).collect();
            let tasks: Vec<Vec<NewTaskInstance>> = chunk
                .iter()
                .map(|start| task_instances(&start.dag))
                .collect();
            let starts: Vec<RunStart<'_>> = chunk
                .iter()
                .zip(&tasks)
                .map(|(start, tasks)| RunStart {
                    run: &start.run,
                    max_active_runs: start.max_active_runs as i64,
                    tasks,
                })
                .collect();
            let moved = self.store.start_dag_runs(&starts, now).await?;
            for (mut start, moved) in chunk.into_iter().zip(moved) {
                if moved {
                    start.run.state = updraft_core::state::DagRunState::Running;
                    start.run.start_date = Some(now);
                    self.runs.insert(start.run.id, start.run.clone());
                    started.push(start);
                } else {
                    refused.push(start);
                }
            }
        }
        Ok((started, refused))
    }
}

/// The task instances a run of `dag` starts with, one per task.
pub(super) fn task_instances(dag: &Dag) -> Vec<NewTaskInstance> {
    dag.tasks
        .values()
        .map(|task| NewTaskInstance {
            task_id: task.id.clone(),
            max_tries: task.retries as i32,
            pool: task.pool.clone(),
            pool_slots: task.pool_slots as i32,
            queue: task.queue.clone(),
            priority_weight: task.priority_weight,
            rendered_command: None,
        })
        .collect()
}
