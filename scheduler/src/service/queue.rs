//! Queueing: ready task instances are rendered (their templates, for this try) and offered
//! to the queue, highest priority first, within `max_active_tasks`; the store queues them in
//! the transaction of the step that made them ready, checking pool slots and
//! `max_active_tasks` again as it writes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use updraft_core::dag::Dag;
use updraft_core::ids::{DagId, DagRunId};
use updraft_core::plan::TryPlan;
use updraft_core::render::{self, Context, RenderError, RunContext};
use updraft_metadata::{DagRun, Error, QueueRequest, TaskInstance};

use super::Scheduler;

/// A task instance ready to queue, with its run and DAG version.
pub(super) struct Ready {
    pub(super) instance: TaskInstance,
    pub(super) run: Arc<DagRun>,
    pub(super) dag: Arc<Dag>,
}

/// What to offer the queue: requests in priority order, with the run of each, and the runs whose ready task instances wait for room.
#[derive(Default)]
pub(super) struct Offer {
    pub(super) requests: Vec<QueueRequest>,
    pub(super) runs: Vec<DagRunId>,
    pub(super) waiting: HashSet<DagRunId>,
}

impl Scheduler {
    /// Renders the ready task instances to offer the queue, highest priority first: only as
    /// many per DAG as its `max_active_tasks` leaves room for beside the `active` ones.
    pub(super) async fn offer(
        &mut self,
        mut ready: Vec<Ready>,
        active: &HashMap<DagId, usize>,
    ) -> Result<Offer, Error> {
        ready.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.instance.priority_weight),
                r.run.logical_date,
                r.instance.id,
            )
        });
        let mut offer = Offer::default();
        let mut room: HashMap<DagId, usize> = HashMap::new();
        ready.retain(|r| {
            let room = room.entry(r.instance.dag_id.clone()).or_insert_with(|| {
                let busy = active.get(&r.instance.dag_id).copied().unwrap_or(0);
                (r.dag.max_active_tasks as usize).saturating_sub(busy)
            });
            let fits = *room > 0;
            *room = room.saturating_sub(1);
            if !fits {
                offer.waiting.insert(r.run.id);
            }
            fits
        });
        if ready.is_empty() {
            return Ok(offer);
        }
        if self.pools.is_empty() {
            self.refresh_pools().await?;
        }
        for r in &ready {
            let pool = &r.instance.pool;
            if !self.pools.contains_key(pool) && self.warned_pools.insert(pool.clone()) {
                tracing::warn!(
                    "task {}.{} waits for pool \"{pool}\", which does not exist: create it with \
                     `updraft pools set {pool} SLOTS`",
                    r.instance.dag_id,
                    r.instance.task_id
                );
            }
        }
        // The variables and connections templates may read, when one of them may read any.
        let reads_catalog = ready.iter().any(|r| {
            r.dag
                .task(r.instance.task_id.as_str())
                .is_some_and(|task| render::reads_catalog(&r.dag, task))
        });
        let catalog = match reads_catalog {
            true => Arc::new(updraft_secrets::catalog(&self.store, &self.settings.secrets).await?),
            false => Arc::default(),
        };
        // Per run: its template context (or why it has none) and its tasks' outputs.
        let mut contexts: HashMap<DagRunId, (Result<RunContext, String>, render::Outputs)> =
            HashMap::new();
        for r in &ready {
            if contexts.contains_key(&r.run.id) {
                continue;
            }
            let mut outputs = render::Outputs::new();
            if r.dag.tasks.values().any(|t| !t.outputs.is_empty()) {
                for output in self.store.list_task_outputs(r.run.id).await? {
                    outputs
                        .entry(output.task_id.to_string())
                        .or_default()
                        .insert(output.name, output.value);
                }
            }
            let context = r.run.template_context(&r.dag, catalog.clone());
            contexts.insert(r.run.id, (context, outputs));
        }
        for r in &ready {
            let Some(task) = r.dag.task(r.instance.task_id.as_str()) else {
                continue;
            };
            let (run_context, outputs) = &contexts[&r.run.id];
            // A template that cannot render fails the try that would run it, with the reason
            // in its log: the worker reads it from the plan.
            let plan = match run_context {
                Ok(run) => {
                    let context = Context {
                        run,
                        task_id: r.instance.task_id.clone(),
                        try_number: (r.instance.try_number + 1) as u32,
                        outputs: outputs.clone(),
                    };
                    TryPlan::new(&r.dag, task, &context)
                }
                // The run's conf does not fit the DAG's params (a DAG changed since).
                Err(message) => TryPlan::with(
                    task,
                    Err(RenderError {
                        field: "params".to_owned(),
                        message: message
                            .strip_prefix("params: ")
                            .unwrap_or(message)
                            .to_owned(),
                    }),
                ),
            };
            let plan = serde_json::to_value(plan).expect("a plan is JSON");
            offer.requests.push(QueueRequest {
                task_instance: r.instance.id,
                plan,
                rate_limit: task.rate_limit,
            });
            offer.runs.push(r.run.id);
        }
        Ok(offer)
    }
}
