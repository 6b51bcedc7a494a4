//! Trigger rules as a table: upstream states before -> what the task does. The expected values
//! are what Airflow 2.10 decides, read off `airflow/ti_deps/deps/trigger_rule_dep.py`
//! (`_evaluate_direct_relatives` with `flag_upstream_failed=True`, as the scheduler calls it):
//! first the "can never be met" states it sets, then the checks that make a task wait.

use std::collections::HashMap;

use updraft_core::dag::{Dag, LoadOptions, decode};
use updraft_core::ids::TaskId;
use updraft_core::state::{DagRunState, TaskState, TriggerRule};
use updraft_scheduler::readiness::{Readiness, UpstreamCounts, evaluate, plan_run};

use Readiness::{Ready, Skip, UpstreamFailed as UpFailed, Wait};
use TaskState::{
    Failed as F, None as N, Running as R, Skipped as S, Success as OK, UpstreamFailed as UF,
};

fn check(rule: TriggerRule, cases: &[(&[TaskState], Readiness)]) {
    for (upstream, expected) in cases {
        let counts = UpstreamCounts::tally(upstream.iter().copied());
        assert_eq!(
            evaluate(rule, &counts),
            *expected,
            "{rule} with upstream {upstream:?}"
        );
    }
}

#[test]
fn all_success() {
    check(
        TriggerRule::AllSuccess,
        &[
            (&[OK, OK], Ready),
            (&[OK, R], Wait),
            (&[OK, F], UpFailed),
            (&[OK, UF], UpFailed),
            (&[R, F], UpFailed),
            (&[OK, S], Skip),
            (&[S, F], UpFailed),
            (&[], Ready),
        ],
    );
}

#[test]
fn all_failed() {
    check(
        TriggerRule::AllFailed,
        &[
            (&[F, F], Ready),
            (&[F, UF], Ready),
            (&[F, R], Wait),
            (&[F, OK], Skip),
            (&[F, S], Skip),
        ],
    );
}

#[test]
fn all_done() {
    check(
        TriggerRule::AllDone,
        &[
            (&[OK, F], Ready),
            (&[S, UF], Ready),
            (&[OK, R], Wait),
            (&[F, N], Wait),
        ],
    );
}

#[test]
fn all_skipped() {
    check(
        TriggerRule::AllSkipped,
        &[
            (&[S, S], Ready),
            (&[S, R], Wait),
            (&[S, OK], Skip),
            (&[S, F], Skip),
            (&[UF, S], Skip),
        ],
    );
}

#[test]
fn one_success() {
    check(
        TriggerRule::OneSuccess,
        &[
            (&[OK, R], Ready),
            (&[F, OK], Ready),
            (&[F, R], Wait),
            (&[S, S], Skip),
            (&[F, S], UpFailed),
            (&[F, UF], UpFailed),
        ],
    );
}

#[test]
fn one_failed() {
    check(
        TriggerRule::OneFailed,
        &[
            (&[F, R], Ready),
            (&[UF, R], Ready),
            (&[OK, R], Wait),
            (&[OK, S], Skip),
            (&[OK, OK], Skip),
        ],
    );
}

#[test]
fn one_done() {
    check(
        TriggerRule::OneDone,
        &[
            (&[OK, R], Ready),
            (&[F, R], Ready),
            (&[S, R], Wait),
            (&[UF, R], Wait),
            (&[S, UF], Skip),
            (&[S, S], Skip),
        ],
    );
}

#[test]
fn none_failed() {
    check(
        TriggerRule::NoneFailed,
        &[
            (&[OK, S], Ready),
            (&[S, S], Ready),
            (&[OK, R], Wait),
            (&[OK, F], UpFailed),
            (&[S, UF], UpFailed),
        ],
    );
}

#[test]
fn none_failed_min_one_success() {
    check(
        TriggerRule::NoneFailedMinOneSuccess,
        &[
            (&[OK, S], Ready),
            (&[S, S], Skip),
            (&[S, R], Wait),
            (&[OK, F], UpFailed),
            (&[UF, S], UpFailed),
        ],
    );
}

#[test]
fn none_skipped() {
    check(
        TriggerRule::NoneSkipped,
        &[
            (&[OK, F], Ready),
            (&[OK, UF], Ready),
            (&[OK, R], Wait),
            (&[OK, S], Skip),
            (&[S, R], Skip),
        ],
    );
}

#[test]
fn always() {
    check(
        TriggerRule::Always,
        &[(&[N, R], Ready), (&[F, S], Ready), (&[UF], Ready)],
    );
}

fn dag(text: &str) -> Dag {
    decode("dags/t.yaml", text, &LoadOptions::default()).unwrap()
}

fn states(pairs: &[(&str, TaskState)]) -> HashMap<TaskId, TaskState> {
    pairs
        .iter()
        .map(|(id, state)| (TaskId::parse(id).unwrap(), *state))
        .collect()
}

fn ids(list: &[TaskId]) -> Vec<&str> {
    list.iter().map(|id| id.as_str()).collect()
}

const CLEANUP_AND_ALERT: &str = "
tasks:
  extract: {run: x}
  load: {run: x, depends_on: extract}
  report: {run: x, depends_on: load}
  alert: {run: x, depends_on: [extract, load], trigger_rule: one_failed}
  cleanup: {run: x, depends_on: [report, alert], trigger_rule: all_done}
";

#[test]
fn a_new_run_schedules_its_roots() {
    let plan = plan_run(
        &dag(CLEANUP_AND_ALERT),
        &HashMap::<TaskId, TaskState>::new(),
    );
    assert_eq!(ids(&plan.schedule), ["extract"]);
    assert_eq!(plan.finish, None);
}

#[test]
fn a_failure_propagates_downstream_in_one_pass() {
    let dag = dag(CLEANUP_AND_ALERT);
    let plan = plan_run(&dag, &states(&[("extract", F)]));
    // load and report can never run; alert fires on the failure; cleanup waits for alert.
    assert_eq!(ids(&plan.upstream_failed), ["load", "report"]);
    assert_eq!(ids(&plan.schedule), ["alert"]);
    assert!(plan.skip.is_empty());
    assert_eq!(plan.finish, None);

    let plan = plan_run(
        &dag,
        &states(&[("extract", F), ("load", UF), ("report", UF), ("alert", OK)]),
    );
    assert_eq!(ids(&plan.schedule), ["cleanup"]);
    let plan = plan_run(
        &dag,
        &states(&[
            ("extract", F),
            ("load", UF),
            ("report", UF),
            ("alert", OK),
            ("cleanup", OK),
        ]),
    );
    // The only leaf succeeded: like Airflow, the run succeeds although extract failed.
    assert_eq!(plan.finish, Some(DagRunState::Success));
}

#[test]
fn success_skips_the_alert_and_finishes_the_run() {
    let dag = dag(CLEANUP_AND_ALERT);
    let plan = plan_run(
        &dag,
        &states(&[("extract", OK), ("load", OK), ("report", OK)]),
    );
    assert_eq!(ids(&plan.skip), ["alert"]);
    assert_eq!(ids(&plan.schedule), ["cleanup"]);
    let plan = plan_run(
        &dag,
        &states(&[
            ("extract", OK),
            ("load", OK),
            ("report", OK),
            ("alert", S),
            ("cleanup", OK),
        ]),
    );
    assert_eq!(plan.finish, Some(DagRunState::Success));
}

#[test]
fn a_failed_leaf_fails_the_run() {
    let dag = dag("tasks:\n  a: {run: x}\n  b: {run: x, depends_on: a}\n");
    let plan = plan_run(&dag, &states(&[("a", F)]));
    assert_eq!(ids(&plan.upstream_failed), ["b"]);
    assert_eq!(plan.finish, Some(DagRunState::Failed));
    assert_eq!(
        plan.reason.as_deref(),
        Some("leaf task \"b\" ended upstream_failed")
    );
}

#[test]
fn a_skip_propagates_through_all_success() {
    let dag =
        dag("tasks:\n  a: {run: x}\n  b: {run: x, depends_on: a}\n  c: {run: x, depends_on: b}\n");
    let plan = plan_run(&dag, &states(&[("a", S)]));
    assert_eq!(ids(&plan.skip), ["b", "c"]);
    assert_eq!(plan.finish, Some(DagRunState::Success));
}

#[test]
fn running_tasks_keep_the_run_going() {
    let dag = dag("tasks:\n  a: {run: x}\n  b: {run: x, depends_on: a}\n");
    let plan = plan_run(&dag, &states(&[("a", R)]));
    assert_eq!(plan, Default::default());
}

#[test]
fn a_run_that_cannot_progress_is_a_deadlock() {
    // A removed upstream never succeeds, so all_success waits forever.
    let dag = dag("tasks:\n  a: {run: x}\n  b: {run: x, depends_on: a}\n");
    let plan = plan_run(&dag, &states(&[("a", TaskState::Removed)]));
    assert!(plan.schedule.is_empty());
    assert_eq!(plan.finish, Some(DagRunState::Failed));
    assert_eq!(
        plan.reason.as_deref(),
        Some("deadlock: no task can run (b waiting)")
    );
}
