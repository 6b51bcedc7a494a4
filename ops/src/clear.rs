//! Clearing task instances so that they run again (Airflow's clear): which ones a clear
//! selects, and the clear itself with a fresh retry budget for each.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::json;
use updraft_core::dag::Dag;
use updraft_core::ids::TaskId;
use updraft_core::state::TaskState;
use updraft_core::suggest::did_you_mean;
use updraft_metadata::{Clear, ClearReport, NewEvent, Store, TaskInstance};

use crate::{Actor, Error, event};

/// What a clear selects: tasks, their relatives, runs and states.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// These tasks; none named: every task of the DAG.
    pub tasks: Vec<TaskId>,
    /// Also every task downstream of them (transitively).
    pub downstream: bool,
    /// Also every task upstream of them (transitively).
    pub upstream: bool,
    /// Runs with a logical date at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Runs with a logical date at or before this.
    pub to: Option<DateTime<Utc>>,
    /// Only this run (manual runs may share a logical date with others).
    pub run_id: Option<String>,
    /// Only task instances that failed or were upstream_failed.
    pub only_failed: bool,
}

/// A task instance a clear selected, as the API and the event log show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cleared {
    pub run_id: String,
    pub task_id: TaskId,
    pub state: TaskState,
}

impl From<&TaskInstance> for Cleared {
    fn from(ti: &TaskInstance) -> Cleared {
        Cleared {
            run_id: ti.run_id.clone(),
            task_id: ti.task_id.clone(),
            state: ti.state,
        }
    }
}

/// The ids of the tasks `selection` covers: its tasks (every task when it names none) and, as
/// asked, every task downstream and upstream of them. A task the DAG does not have is
/// [`Error::NotFound`], with the closest name.
pub fn tasks_to_clear(dag: &Dag, selection: &Selection) -> Result<Vec<TaskId>, Error> {
    if selection.tasks.is_empty() {
        return Ok(dag.tasks.keys().cloned().collect());
    }
    let mut tasks = BTreeSet::new();
    for task in &selection.tasks {
        if dag.task(task.as_str()).is_none() {
            let hint = did_you_mean(task.as_str(), dag.tasks.keys().map(TaskId::as_str));
            return Err(Error::NotFound(format!(
                "DAG \"{}\" has no task \"{task}\"{hint}",
                dag.id
            )));
        }
        tasks.insert(task.clone());
        if selection.downstream {
            tasks.extend(
                dag.downstream(task.as_str())
                    .into_iter()
                    .map(|t| t.id.clone()),
            );
        }
        if selection.upstream {
            tasks.extend(
                dag.upstream(task.as_str())
                    .into_iter()
                    .map(|t| t.id.clone()),
            );
        }
    }
    Ok(tasks.into_iter().collect())
}

/// The task instances `selection` covers in the DAG's runs, newest run first. With a
/// `limit`, a selection of more is refused ([`Error::Invalid`]) instead of read whole.
pub async fn select(
    store: &Store,
    dag: &Dag,
    selection: &Selection,
    limit: Option<usize>,
) -> Result<Vec<TaskInstance>, Error> {
    let tasks = tasks_to_clear(dag, selection)?;
    let (Some(earliest), Some(latest)) = (
        Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).single(),
        Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single(),
    ) else {
        unreachable!("the calendar's bounds exist");
    };
    let read = limit.map_or(i64::MAX, |limit| {
        i64::try_from(limit + 1).unwrap_or(i64::MAX)
    });
    let mut selected = store
        .task_instances_in_range(
            &dag.id,
            &tasks,
            selection.from.unwrap_or(earliest),
            selection.to.unwrap_or(latest),
            read,
        )
        .await?;
    if let Some(limit) = limit
        && selected.len() > limit
    {
        return Err(Error::Invalid(format!(
            "this clear would select more than {limit} task instances: narrow it, or use \
             `updraft tasks clear` with --from/--to"
        )));
    }
    selected.retain(|ti| {
        selection
            .run_id
            .as_ref()
            .is_none_or(|run| &ti.run_id == run)
            && (!selection.only_failed
                || matches!(ti.state, TaskState::Failed | TaskState::UpstreamFailed))
    });
    Ok(selected)
}

/// Clears `instances` (as [`select`] chose them for `selection`), each with a fresh budget of
/// its task's retries; their finished runs go back to `queued`.
pub async fn clear(
    store: &Store,
    actor: &Actor,
    dag: &Dag,
    selection: &Selection,
    instances: &[TaskInstance],
    now: DateTime<Utc>,
) -> Result<ClearReport, Error> {
    let clears: Vec<Clear> = instances
        .iter()
        .map(|ti| {
            let retries = dag.task(ti.task_id.as_str()).map_or(0, |task| task.retries);
            Clear {
                task_instance: ti.id,
                retries: i32::try_from(retries).unwrap_or(i32::MAX),
            }
        })
        .collect();
    let mut change = store.change("clear task instances").await?;
    let report = change.clear_task_instances(&clears, now).await?;
    let cleared: Vec<Cleared> = instances.iter().map(Cleared::from).collect();
    let task_id = match selection.tasks.as_slice() {
        [task] => Some(task.clone()),
        _ => None,
    };
    change
        .commit(&NewEvent {
            run_id: selection.run_id.clone(),
            task_id,
            details: json!({
                "task_instances": cleared,
                "runs_requeued": report.runs_requeued,
                "tasks": selection.tasks,
                "downstream": selection.downstream,
                "upstream": selection.upstream,
                "from": selection.from,
                "to": selection.to,
                "only_failed": selection.only_failed,
            }),
            ..event(actor, "clear", &dag.id, now)
        })
        .await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use updraft_core::dag::{LoadOptions, decode};

    use super::*;

    /// extract -> transform -> load, and extract -> audit.
    fn dag() -> Dag {
        let text = "\
tasks:
  extract: {run: x}
  transform: {run: x, depends_on: extract}
  load: {run: x, depends_on: transform}
  audit: {run: x, depends_on: extract}
";
        decode("etl.yaml", text, &LoadOptions::default()).unwrap()
    }

    fn check(tasks: &[&str], downstream: bool, upstream: bool, expected: &[&str]) {
        let selection = Selection {
            tasks: tasks.iter().map(|t| TaskId::parse(t).unwrap()).collect(),
            downstream,
            upstream,
            ..Selection::default()
        };
        let tasks = tasks_to_clear(&dag(), &selection).unwrap();
        let names: Vec<&str> = tasks.iter().map(TaskId::as_str).collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn a_clear_covers_the_tasks_and_as_asked_their_relatives() {
        check(&["transform"], false, false, &["transform"]);
        check(
            &["extract"],
            true,
            false,
            &["audit", "extract", "load", "transform"],
        );
        check(&["load"], false, true, &["extract", "load", "transform"]);
        check(
            &["transform"],
            true,
            true,
            &["extract", "load", "transform"],
        );
        check(&["audit", "load"], false, false, &["audit", "load"]);
    }

    #[test]
    fn no_task_named_means_every_task() {
        check(&[], true, true, &["extract", "transform", "load", "audit"]);
    }

    #[test]
    fn an_unknown_task_is_named_with_the_closest() {
        let selection = Selection {
            tasks: vec![TaskId::parse("lod").unwrap()],
            ..Selection::default()
        };
        let error = tasks_to_clear(&dag(), &selection).unwrap_err();
        assert!(
            matches!(&error, Error::NotFound(message) if message.contains("\"lod\"") && message.contains("load")),
            "{error}"
        );
    }
}
