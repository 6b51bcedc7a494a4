//! Readiness: Airflow's trigger rules, and what a DAG run needs next.
//!
//! `evaluate` is Airflow 2.10's `TriggerRuleDep` for one task instance: from the states of its
//! direct upstream tasks it decides whether it may run, must wait, or can never run (and then
//! whether it ends `skipped` or `upstream_failed`). `plan_run` applies it to a whole run in
//! dependency order, so a skip or failure propagates through every downstream task in one
//! pass, and derives the run's state from its leaves.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use updraft_core::dag::Dag;
use updraft_core::ids::TaskId;
use updraft_core::state::{DagRunState, TaskState, TriggerRule};

/// The finished states of a task's direct upstream tasks, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamCounts {
    /// Direct upstream tasks, finished or not.
    pub total: usize,
    pub success: usize,
    pub skipped: usize,
    pub failed: usize,
    pub upstream_failed: usize,
    pub removed: usize,
}

impl UpstreamCounts {
    /// Counts `states`, one per direct upstream task.
    pub fn tally(states: impl IntoIterator<Item = TaskState>) -> UpstreamCounts {
        let mut counts = UpstreamCounts::default();
        for state in states {
            counts.total += 1;
            match state {
                TaskState::Success => counts.success += 1,
                TaskState::Skipped => counts.skipped += 1,
                TaskState::Failed => counts.failed += 1,
                TaskState::UpstreamFailed => counts.upstream_failed += 1,
                TaskState::Removed => counts.removed += 1,
                _ => {}
            }
        }
        counts
    }

    /// Upstream tasks in a finished state.
    pub fn done(&self) -> usize {
        self.success + self.skipped + self.failed + self.upstream_failed + self.removed
    }
}

/// What a task instance that has not started should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Its trigger rule is met: schedule it.
    Ready,
    /// Its upstream tasks may still meet the rule.
    Wait,
    /// The rule can never be met, and Airflow ends such a task `skipped`.
    Skip,
    /// The rule can never be met because upstream work failed.
    UpstreamFailed,
}

/// Airflow 2.10's trigger rule evaluation (with `flag_upstream_failed`, as its scheduler runs
/// it). A task without upstream tasks is always ready.
pub fn evaluate(rule: TriggerRule, up: &UpstreamCounts) -> Readiness {
    use Readiness::*;
    use TriggerRule as R;
    if up.total == 0 {
        return Ready;
    }
    let all_done = up.done() >= up.total;
    let any_failure = up.failed > 0 || up.upstream_failed > 0;
    // First: can the rule still be met? (Airflow sets the new state before its checks.)
    let never = match rule {
        R::AllSuccess if any_failure => Some(UpstreamFailed),
        R::AllSuccess if up.skipped > 0 => Some(Skip),
        R::AllFailed if up.success > 0 || up.skipped > 0 => Some(Skip),
        R::OneSuccess if all_done && up.done() == up.skipped => Some(Skip),
        R::OneSuccess if all_done && up.success == 0 => Some(UpstreamFailed),
        R::OneFailed if all_done && !any_failure => Some(Skip),
        R::OneDone if all_done && up.failed == 0 && up.success == 0 => Some(Skip),
        R::NoneFailed if any_failure => Some(UpstreamFailed),
        R::NoneFailedMinOneSuccess if any_failure => Some(UpstreamFailed),
        R::NoneFailedMinOneSuccess if up.skipped == up.total => Some(Skip),
        R::NoneSkipped if up.skipped > 0 => Some(Skip),
        R::AllSkipped if up.success > 0 || any_failure => Some(Skip),
        _ => None,
    };
    if let Some(readiness) = never {
        return readiness;
    }
    let met = match rule {
        R::AllSuccess => up.success >= up.total,
        R::AllFailed => up.failed + up.upstream_failed >= up.total,
        R::AllDone => all_done,
        R::AllSkipped => up.skipped >= up.total,
        R::OneSuccess => up.success > 0,
        R::OneFailed => any_failure,
        R::OneDone => up.success + up.failed > 0,
        R::NoneFailed | R::NoneFailedMinOneSuccess => up.success + up.skipped >= up.total,
        R::NoneSkipped => all_done && up.skipped == 0,
        R::Always => true,
    };
    if met { Ready } else { Wait }
}

/// What to do with one DAG run, given the state of each of its task instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunPlan {
    /// `none` -> `scheduled`: their trigger rules are met.
    pub schedule: Vec<TaskId>,
    /// `none` -> `skipped`.
    pub skip: Vec<TaskId>,
    /// `none` -> `upstream_failed`.
    pub upstream_failed: Vec<TaskId>,
    /// The run's new state when it ends now; `None` while it goes on.
    pub finish: Option<DagRunState>,
    /// Why the run ends failed, for the event log.
    pub reason: Option<String>,
}

/// Plans a run: every `none` task instance whose rule is decided moves, in dependency order so
/// that skips and upstream failures reach every downstream task at once. A task missing from
/// `states` counts as `none`. The states may be keyed by task ids or by references to them.
pub fn plan_run<K>(dag: &Dag, states: &HashMap<K, TaskState>) -> RunPlan
where
    K: Borrow<TaskId> + Eq + Hash,
{
    let mut current: HashMap<&TaskId, TaskState> = dag
        .tasks
        .keys()
        .map(|id| (id, states.get(id).copied().unwrap_or(TaskState::None)))
        .collect();
    let mut plan = RunPlan::default();
    for task in dag.topological_order() {
        if current[&task.id] != TaskState::None {
            continue;
        }
        let counts = UpstreamCounts::tally(task.depends_on.iter().map(|up| current[up]));
        let (list, state) = match evaluate(task.trigger_rule, &counts) {
            Readiness::Wait => continue,
            Readiness::Ready => (&mut plan.schedule, TaskState::Scheduled),
            Readiness::Skip => (&mut plan.skip, TaskState::Skipped),
            Readiness::UpstreamFailed => (&mut plan.upstream_failed, TaskState::UpstreamFailed),
        };
        list.push(task.id.clone());
        current.insert(&task.id, state);
    }
    (plan.finish, plan.reason) = run_outcome(dag, &current);
    plan
}

/// Airflow's `DagRun.update_state`: when every task is finished, failed if any leaf failed or
/// was upstream_failed, else success; a run whose unfinished tasks can no longer make progress
/// is deadlocked and fails.
fn run_outcome(
    dag: &Dag,
    current: &HashMap<&TaskId, TaskState>,
) -> (Option<DagRunState>, Option<String>) {
    let unfinished: Vec<&TaskId> = dag
        .tasks
        .keys()
        .filter(|id| !current[id].is_finished())
        .collect();
    if unfinished.is_empty() {
        let failed_leaf = dag.leaves().find(|leaf| {
            matches!(
                current[&leaf.id],
                TaskState::Failed | TaskState::UpstreamFailed
            )
        });
        return match failed_leaf {
            Some(leaf) => (
                Some(DagRunState::Failed),
                Some(format!(
                    "leaf task \"{}\" ended {}",
                    leaf.id, current[&leaf.id]
                )),
            ),
            None => (Some(DagRunState::Success), None),
        };
    }
    let progressing = unfinished.iter().any(|id| current[*id] != TaskState::None);
    if progressing {
        return (None, None);
    }
    // Only `none` tasks remain, and none of them became ready above.
    let names: Vec<&str> = unfinished.iter().map(|id| id.as_str()).collect();
    (
        Some(DagRunState::Failed),
        Some(format!(
            "deadlock: no task can run ({} waiting)",
            names.join(", ")
        )),
    )
}
