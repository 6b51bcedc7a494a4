//! One scheduling step of a run as a table: task instance states before -> moves and run
//! outcome. Pure: no database, no clock.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use updraft_core::dag::{Dag, LoadOptions, decode};
use updraft_core::ids::{TaskId, TaskInstanceId};
use updraft_core::state::{DagRunState, TaskMove, TaskState};
use updraft_scheduler::step::{RunStep, TaskSnapshot, step_run, waiting_on_past};

use TaskState::{
    Failed as F, None as N, Queued as Q, Running as R, Scheduled as SC, Skipped as S,
    Success as OK, UpForRetry as RETRY,
};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn task_move(task_instance: i64, from: TaskState, to: TaskState) -> TaskMove {
    TaskMove {
        task_instance: TaskInstanceId(task_instance),
        from,
        to,
    }
}

fn dag(yaml: &str) -> Dag {
    decode("t.yaml", yaml, &LoadOptions::default()).unwrap()
}

/// extract -> transform -> load, with `extra` keys on every task.
fn chain(extra: &str) -> Dag {
    dag(&format!(
        "timeout: 1h\ntasks:\n  extract: {{run: x{extra}}}\n  \
         transform: {{run: x, depends_on: [extract]{extra}}}\n  \
         load: {{run: x, depends_on: [transform]{extra}}}\n"
    ))
}

/// Task instances with ids 1, 2, ... in the DAG's order.
fn snapshot<'a>(dag: &'a Dag, states: &[(TaskState, Option<&str>)]) -> Vec<TaskSnapshot<'a>> {
    dag.tasks
        .keys()
        .zip(states)
        .enumerate()
        .map(|(i, (task, (state, retry_at)))| TaskSnapshot {
            id: TaskInstanceId(i as i64 + 1),
            task_id: task,
            state: *state,
            next_retry_at: retry_at.map(at),
        })
        .collect()
}

fn step(dag: &Dag, states: &[(TaskState, Option<&str>)], now: &str) -> RunStep {
    step_run(
        dag,
        Some(at("2024-01-01T00:00:00Z")),
        &snapshot(dag, states),
        &HashSet::new(),
        at(now),
    )
}

const EARLY: &str = "2024-01-01T00:10:00Z";

#[test]
fn a_new_run_schedules_its_roots() {
    let step = step(&chain(""), &[(N, None), (N, None), (N, None)], EARLY);
    assert_eq!(step.moves, [task_move(1, N, SC)]);
    assert_eq!(step.finish, None);
    assert_eq!(
        step.wake_at,
        Some(at("2024-01-01T01:00:00Z")),
        "the run's timeout"
    );
}

#[test]
fn each_success_schedules_the_next_task() {
    let step = step(&chain(""), &[(OK, None), (N, None), (N, None)], EARLY);
    assert_eq!(step.moves, [task_move(2, N, SC)]);
}

#[test]
fn tasks_in_flight_wait() {
    for state in [SC, Q, R] {
        let step = step(&chain(""), &[(state, None), (N, None), (N, None)], EARLY);
        assert!(step.moves.is_empty(), "{state}");
        assert_eq!(step.finish, None);
    }
}

#[test]
fn a_failure_fails_everything_downstream_and_the_run() {
    let step = step(&chain(""), &[(F, None), (N, None), (N, None)], EARLY);
    assert_eq!(
        step.moves,
        [
            task_move(2, N, TaskState::UpstreamFailed),
            task_move(3, N, TaskState::UpstreamFailed)
        ]
    );
    assert_eq!(step.finish, Some(DagRunState::Failed));
    assert_eq!(step.wake_at, None);
}

#[test]
fn a_skip_skips_everything_downstream_and_the_run_succeeds() {
    let step = step(&chain(""), &[(S, None), (N, None), (N, None)], EARLY);
    assert_eq!(step.moves, [task_move(2, N, S), task_move(3, N, S)]);
    assert_eq!(step.finish, Some(DagRunState::Success));
}

#[test]
fn all_leaves_done_ends_the_run() {
    let step = step(&chain(""), &[(OK, None), (OK, None), (OK, None)], EARLY);
    assert!(step.moves.is_empty());
    assert_eq!(step.finish, Some(DagRunState::Success));
}

#[test]
fn a_retry_is_scheduled_once_its_delay_has_passed() {
    let waiting = step(
        &chain(""),
        &[(RETRY, Some("2024-01-01T00:15:00Z")), (N, None), (N, None)],
        EARLY,
    );
    assert!(waiting.moves.is_empty());
    assert_eq!(
        waiting.wake_at,
        Some(at("2024-01-01T00:15:00Z")),
        "wakes for the retry"
    );
    let due = step(
        &chain(""),
        &[(RETRY, Some("2024-01-01T00:15:00Z")), (N, None), (N, None)],
        "2024-01-01T00:15:00Z",
    );
    assert_eq!(due.moves, [task_move(1, RETRY, SC)]);
    assert_eq!(due.finish, None);
}

#[test]
fn a_run_past_its_timeout_fails_and_skips_what_is_unfinished() {
    let step = step(
        &chain(""),
        &[(OK, None), (R, None), (N, None)],
        "2024-01-01T01:00:00Z",
    );
    assert_eq!(step.moves, [task_move(2, R, S), task_move(3, N, S)]);
    assert_eq!(step.finish, Some(DagRunState::Failed));
    assert_eq!(step.reason.as_deref(), Some("the run timed out after 1h"));
}

#[test]
fn depends_on_past_waits_for_the_previous_run() {
    let dag = chain(", depends_on_past: true");
    let previous = |state: TaskState| -> HashMap<TaskId, TaskState> {
        dag.tasks.keys().map(|id| (id.clone(), state)).collect()
    };
    // No previous run, or a previous run that succeeded or skipped: go.
    assert!(waiting_on_past(&dag, None).is_empty());
    assert!(waiting_on_past(&dag, Some(&previous(OK))).is_empty());
    assert!(waiting_on_past(&dag, Some(&previous(S))).is_empty());
    // A previous run that failed or is still running: wait, and do not call it a deadlock.
    for state in [F, R, N] {
        let waiting = waiting_on_past(&dag, Some(&previous(state)));
        assert_eq!(waiting.len(), 3, "{state}");
        let step = step_run(
            &dag,
            Some(at("2024-01-01T00:00:00Z")),
            &snapshot(&dag, &[(N, None), (N, None), (N, None)]),
            &waiting,
            at(EARLY),
        );
        assert!(step.moves.is_empty());
        assert_eq!(step.finish, None);
    }
}

#[test]
fn a_task_without_an_instance_yet_is_not_moved() {
    let dag = chain("");
    let only_two = &snapshot(&dag, &[(OK, None), (OK, None)]);
    let step = step_run(&dag, None, only_two, &HashSet::new(), at(EARLY));
    assert!(
        step.moves.is_empty(),
        "load has no instance: nothing to move"
    );
    assert_eq!(step.finish, None);
}
