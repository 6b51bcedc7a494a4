//! Recording missed deadlines: each once (a compare-and-set with its `deadline_missed` event in
//! one transaction), whichever scheduler gets there first and however often it restarts.

use chrono::{DateTime, Utc};
use updraft_core::actor::Actor;
use updraft_core::dag::Dag;
use updraft_metadata::{DagRun, Error, Missed, NewEvent};

use super::Scheduler;
use crate::deadlines;

impl Scheduler {
    /// Records what of `run` (and of its task instances this scheduler knows) missed its
    /// deadline by `now`; returns when the next deadline is due.
    pub(super) async fn check_deadlines(
        &mut self,
        run: &DagRun,
        dag: &Dag,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, Error> {
        let watched = deadlines::watched(dag, run, self.instances.of_run(run.id));
        if watched.is_empty() {
            return Ok(None);
        }
        let look = deadlines::look(&watched, run.data_interval_end, dag.timetable.timezone, now);
        for miss in look.missed {
            let task_id = match miss.what {
                Missed::Run(_) => None,
                Missed::TaskInstance(id) => self
                    .instances
                    .of_run(run.id)
                    .iter()
                    .find(|ti| ti.id == id)
                    .map(|ti| ti.task_id.clone()),
            };
            let mut change = self.store.change("record a missed deadline").await?;
            // Known as missed from now on, recorded here or not: another scheduler recorded it,
            // or it ended in time after all (what this one knew was older).
            match miss.what {
                Missed::Run(_) => {
                    if let Some(known) = self.runs.get_mut(&run.id) {
                        known.deadline_missed_at = Some(now);
                    }
                }
                Missed::TaskInstance(id) => self.instances.missed_deadline(run.id, id, now),
            }
            if !change.miss_deadline(miss.what, miss.due, now).await? {
                continue;
            }
            let event = NewEvent {
                at: now,
                actor: Actor::Scheduler.to_string(),
                dag_id: Some(run.dag_id.clone()),
                run_id: Some(run.run_id.clone()),
                task_id: task_id.clone(),
                event: "deadline_missed".to_owned(),
                details: serde_json::json!({
                    "deadline": miss.deadline.to_string(),
                    "due": miss.due,
                }),
            };
            change.commit(&event).await?;
            tracing::warn!(
                dag_id = %run.dag_id,
                run_id = %run.run_id,
                task_id = task_id.as_ref().map(|id| id.to_string()),
                deadline = %miss.deadline,
                due = %miss.due,
                "deadline missed"
            );
        }
        Ok(look.next_at)
    }
}
