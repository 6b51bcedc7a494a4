//! The task instances of running runs as this scheduler last read or wrote them, so that a
//! step of a run reads only what changed since its last step: a try's end names its task
//! instance (see [`Changes`]), and the step reads that row, not the run's thousand others.
//!
//! What is known of a run is kept by the scheduler's own moves and refreshed by the ends
//! wake-ups name. It is forgotten, and the run read whole at its next step, when a wake-up
//! names the run itself (a mark, a clear), when one of the scheduler's own moves finds a task
//! instance in another state than it knew (another scheduler, or a claim it was not told of),
//! when the run finishes, and at every sweep. Pure: the service reads and writes, and tells it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use updraft_core::ids::{DagRunId, TaskInstanceId};

use updraft_core::state::TaskState;
use updraft_metadata::{Changes, TaskInstance};

#[derive(Debug, Default)]
pub struct Instances {
    runs: HashMap<DagRunId, Known>,
}

/// What is known of one run's task instances.
#[derive(Debug, Default)]
struct Known {
    /// In creation order.
    instances: Vec<TaskInstance>,
    /// Position in `instances` by task instance id.
    index: HashMap<TaskInstanceId, usize>,
    /// Task instances whose try ended since they were read: to read again.
    stale: HashSet<TaskInstanceId>,
}

impl Instances {
    /// What a wake-up said changed.
    pub fn note(&mut self, changes: &Changes) {
        if changes.everything {
            self.runs.clear();
            return;
        }
        for run in &changes.runs {
            self.runs.remove(run);
        }
        for (run, ids) in &changes.instances {
            if let Some(known) = self.runs.get_mut(run) {
                known.stale.extend(ids);
            }
        }
    }

    /// Forgets what is known of `run`: it is read whole at its next step.
    pub fn forget(&mut self, run: DagRunId) {
        self.runs.remove(&run);
    }

    /// Forgets everything (a sweep).
    pub fn clear(&mut self) {
        self.runs.clear();
    }

    /// Of `runs`, the task instances known but stale: to read again before a step.
    pub fn stale(&self, runs: &[DagRunId]) -> Vec<TaskInstanceId> {
        runs.iter()
            .filter_map(|run| self.runs.get(run))
            .flat_map(|known| known.stale.iter().copied())
            .collect()
    }

    /// Stale task instances read again. A run one of whose stale task instances was not
    /// read (it is gone), or that has one it did not know, is forgotten.
    pub fn refresh(&mut self, read: Vec<TaskInstance>) {
        let mut lost = HashSet::new();
        for ti in read {
            let Some(known) = self.runs.get_mut(&ti.dag_run_id) else {
                continue;
            };
            known.stale.remove(&ti.id);
            match known.index.get(&ti.id) {
                Some(&at) => known.instances[at] = ti,
                None => {
                    lost.insert(ti.dag_run_id);
                }
            }
        }
        self.runs
            .retain(|run, known| known.stale.is_empty() && !lost.contains(run));
    }

    /// Of `runs`, those nothing is known of: to read whole.
    pub fn unknown(&self, runs: &[DagRunId]) -> Vec<DagRunId> {
        runs.iter()
            .copied()
            .filter(|run| !self.runs.contains_key(run))
            .collect()
    }

    /// `runs` read whole: `read` holds all their task instances (in creation order).
    pub fn insert(&mut self, runs: &[DagRunId], read: Vec<TaskInstance>) {
        for run in runs {
            self.runs.insert(*run, Known::default());
        }
        for ti in read {
            if let Some(known) = self.runs.get_mut(&ti.dag_run_id) {
                known.index.insert(ti.id, known.instances.len());
                known.instances.push(ti);
            }
        }
    }

    /// The task instances of `run`, as known (none when nothing is).
    pub fn of_run(&self, run: DagRunId) -> &[TaskInstance] {
        self.runs
            .get(&run)
            .map_or(&[], |known| known.instances.as_slice())
    }

    /// Task instance `id` of `run` is known to have missed its deadline at `at`.
    pub fn missed_deadline(&mut self, run: DagRunId, id: TaskInstanceId, at: DateTime<Utc>) {
        if let Some(known) = self.runs.get_mut(&run)
            && let Some(&index) = known.index.get(&id)
        {
            known.instances[index].deadline_missed_at = Some(at);
        }
    }

    /// This scheduler moved task instance `id` of `run` to `state`.
    pub fn moved(&mut self, run: DagRunId, id: TaskInstanceId, state: TaskState) {
        if let Some(known) = self.runs.get_mut(&run)
            && let Some(&at) = known.index.get(&id)
        {
            known.instances[at].state = state;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use updraft_core::ids::{DagId, TaskId};

    fn run(n: i64) -> DagRunId {
        DagRunId(n)
    }

    fn runs(ns: &[i64]) -> Vec<DagRunId> {
        ns.iter().copied().map(DagRunId).collect()
    }

    fn id(n: i64) -> TaskInstanceId {
        TaskInstanceId(n)
    }

    fn pairs(ns: &[(i64, i64)]) -> Vec<(DagRunId, TaskInstanceId)> {
        ns.iter().map(|&(r, i)| (run(r), id(i))).collect()
    }

    fn ti(run: i64, id: i64, state: TaskState) -> TaskInstance {
        let (run, id) = (DagRunId(run), TaskInstanceId(id));
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        TaskInstance {
            id,
            dag_run_id: run,
            dag_id: DagId::parse("d").unwrap(),
            run_id: format!("run{run}"),
            task_id: TaskId::parse(&format!("t{id}")).unwrap(),
            state,
            try_number: 0,
            max_tries: 0,
            pool: "default_pool".to_owned(),
            pool_slots: 1,
            queue: "default".to_owned(),
            priority_weight: 1,
            queued_at: None,
            start_date: None,
            end_date: None,
            next_retry_at: None,
            first_start_date: None,
            deadline_missed_at: None,
            worker_id: None,
            hostname: None,
            heartbeat_at: None,
            rendered_command: None,
            updated_at: at,
        }
    }

    fn states(instances: &Instances, run: DagRunId) -> Vec<(TaskInstanceId, TaskState)> {
        instances
            .of_run(run)
            .iter()
            .map(|ti| (ti.id, ti.state))
            .collect()
    }

    #[test]
    fn a_run_read_whole_is_kept_by_own_moves() {
        let mut instances = Instances::default();
        assert_eq!(instances.unknown(&runs(&[1, 2])), runs(&[1, 2]));
        instances.insert(
            &runs(&[1, 2]),
            vec![ti(1, 10, TaskState::None), ti(1, 11, TaskState::None)],
        );
        assert!(
            instances.unknown(&runs(&[1, 2])).is_empty(),
            "a run without task instances is known too"
        );
        instances.moved(run(1), id(10), TaskState::Queued);
        assert_eq!(
            states(&instances, run(1)),
            [(id(10), TaskState::Queued), (id(11), TaskState::None)]
        );
        instances.forget(run(1));
        assert_eq!(instances.unknown(&runs(&[1])), runs(&[1]));
        assert!(instances.of_run(run(1)).is_empty());
    }

    #[test]
    fn an_end_makes_only_its_task_instance_stale() {
        let mut instances = Instances::default();
        instances.insert(
            &runs(&[1]),
            vec![ti(1, 10, TaskState::Queued), ti(1, 11, TaskState::Queued)],
        );
        instances.note(&Changes::of_instances(&pairs(&[(1, 11), (9, 90)])));
        assert_eq!(
            instances.stale(&runs(&[1, 9])),
            [id(11)],
            "a run not known is read whole anyway"
        );
        instances.refresh(vec![ti(1, 11, TaskState::Success)]);
        assert!(instances.stale(&runs(&[1])).is_empty());
        assert_eq!(
            states(&instances, run(1)),
            [(id(10), TaskState::Queued), (id(11), TaskState::Success)]
        );
    }

    #[test]
    fn a_run_named_whole_a_lost_task_instance_or_everything_forget() {
        let mut instances = Instances::default();
        instances.insert(
            &runs(&[1, 2, 3]),
            vec![ti(1, 10, TaskState::None), ti(2, 20, TaskState::None)],
        );
        instances.note(&Changes::of_runs(&runs(&[1])));
        assert_eq!(instances.unknown(&runs(&[1, 2, 3])), runs(&[1]));

        instances.note(&Changes::of_instances(&pairs(&[(2, 20), (3, 30)])));
        // 20 was deleted meanwhile; 30 is one run 3 did not know.
        instances.refresh(vec![ti(3, 30, TaskState::Success)]);
        assert_eq!(instances.unknown(&runs(&[2, 3])), runs(&[2, 3]));

        instances.insert(&runs(&[4]), Vec::new());
        instances.note(&Changes::everything());
        assert_eq!(instances.unknown(&runs(&[4])), runs(&[4]));
    }
}
