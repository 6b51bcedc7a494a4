//! Deadlines of a run and of its task instances (a DAG's and its tasks' `deadline`): which are
//! missed now, and when the next one is due. Pure: the scheduler records each miss once (a
//! compare-and-set with its `deadline_missed` event) and sets the run's timer to the next.
//!
//! A run or task instance misses its deadline when it has not finished by then: it is still
//! unfinished at the due time, or it finished after it (a scheduler that was down learns so
//! later). A deadline never changes a state.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use updraft_core::dag::Dag;
use updraft_core::deadline::Deadline;
use updraft_metadata::{DagRun, Missed, TaskInstance};

/// A run or task instance with a deadline that it has not been marked as missing yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    pub what: Missed,
    pub deadline: Deadline,
    /// When it first started, if it did (an `after_start` deadline counts from there).
    pub started: Option<DateTime<Utc>>,
    /// When it finished, if it did.
    pub ended: Option<DateTime<Utc>>,
}

/// A miss to record: what, by which deadline, due when.
#[derive(Debug, Clone, PartialEq)]
pub struct Miss {
    pub what: Missed,
    pub deadline: Deadline,
    pub due: DateTime<Utc>,
}

/// What a look at a run's deadlines found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Look {
    pub missed: Vec<Miss>,
    /// When the next deadline not missed yet is due.
    pub next_at: Option<DateTime<Utc>>,
}

/// What of run `run` and its `instances` has a deadline not marked missed yet, by `dag`'s
/// deadlines (the run's version of it).
pub fn watched(dag: &Dag, run: &DagRun, instances: &[TaskInstance]) -> Vec<Watched> {
    let run_deadline = dag
        .deadline
        .filter(|_| run.deadline_missed_at.is_none())
        .map(|deadline| Watched {
            what: Missed::Run(run.id),
            deadline,
            started: run.start_date,
            ended: run.end_date.filter(|_| run.state.is_finished()),
        });
    let task_deadlines = instances.iter().filter_map(|ti| {
        let deadline = dag.task(ti.task_id.as_str())?.deadline?;
        if ti.deadline_missed_at.is_some() {
            return None;
        }
        Some(Watched {
            what: Missed::TaskInstance(ti.id),
            deadline,
            started: ti.first_start_date,
            ended: ti.end_date.filter(|_| ti.state.is_finished()),
        })
    });
    run_deadline.into_iter().chain(task_deadlines).collect()
}

/// Looks at the `watched` of a run whose data interval ends at `interval_end`, on the clock of
/// `tz`, at `now`.
pub fn look(watched: &[Watched], interval_end: DateTime<Utc>, tz: Tz, now: DateTime<Utc>) -> Look {
    let mut look = Look::default();
    for watched in watched {
        let Some(due) = watched.deadline.due(interval_end, watched.started, tz) else {
            continue;
        };
        let missed = match watched.ended {
            Some(ended) => ended > due,
            None => due <= now,
        };
        if missed {
            look.missed.push(Miss {
                what: watched.what,
                deadline: watched.deadline,
                due,
            });
        } else if watched.ended.is_none() {
            look.next_at = Some(look.next_at.map_or(due, |next| next.min(due)));
        }
    }
    look
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use updraft_core::ids::{DagRunId, TaskInstanceId};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn after_start(seconds: u64) -> Deadline {
        Deadline::AfterStart(Duration::from_secs(seconds))
    }

    fn after_end(seconds: u64) -> Deadline {
        Deadline::AfterIntervalEnd(Duration::from_secs(seconds))
    }

    fn task(n: i64, deadline: Deadline, started: Option<i64>, ended: Option<i64>) -> Watched {
        Watched {
            what: Missed::TaskInstance(TaskInstanceId(n)),
            deadline,
            started: started.map(at),
            ended: ended.map(at),
        }
    }

    #[test]
    fn an_unfinished_subject_misses_at_its_due_time_and_is_waited_for_until_then() {
        let run = Watched {
            what: Missed::Run(DagRunId(1)),
            deadline: after_end(100),
            started: Some(at(5)),
            ended: None,
        };
        let watched = [run.clone(), task(2, after_start(30), Some(10), None)];
        // The task is due at 40, the run at 100.
        let early = look(&watched, at(0), Tz::UTC, at(20));
        assert_eq!(early.missed, []);
        assert_eq!(early.next_at, Some(at(40)));
        let later = look(&watched, at(0), Tz::UTC, at(40));
        assert_eq!(
            later.missed,
            [Miss {
                what: Missed::TaskInstance(TaskInstanceId(2)),
                deadline: after_start(30),
                due: at(40),
            }]
        );
        assert_eq!(later.next_at, Some(at(100)));
        let last = look(&watched, at(0), Tz::UTC, at(100));
        assert_eq!(last.missed.len(), 2);
        assert_eq!(last.next_at, None);
    }

    #[test]
    fn a_subject_that_finished_late_missed_and_one_in_time_did_not() {
        let watched = [
            task(1, after_start(30), Some(10), Some(41)),
            task(2, after_start(30), Some(10), Some(40)),
        ];
        let found = look(&watched, at(0), Tz::UTC, at(500));
        let missed: Vec<Missed> = found.missed.iter().map(|miss| miss.what).collect();
        assert_eq!(missed, [Missed::TaskInstance(TaskInstanceId(1))]);
        assert_eq!(found.next_at, None);
    }

    #[test]
    fn an_after_start_deadline_waits_for_the_start() {
        let watched = [task(1, after_start(30), None, None)];
        assert_eq!(look(&watched, at(0), Tz::UTC, at(1000)), Look::default());
    }
}
