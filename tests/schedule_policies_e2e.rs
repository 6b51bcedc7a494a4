//! Schedule policies end to end (issue 19) against real `updraft` processes: a schedule's
//! `jitter` delays each run's start by the same amount in every life of a scheduler.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::world::World;
use serde_json::Value;
use updraft_core::ids::DagId;
use updraft_core::schedule::Jitter;
use updraft_core::state::RunType;
use updraft_metadata::DagRun;

/// A run every 3 s, each start delayed by up to 2 s.
const JITTERY: &str = r#"version: 1
start_date: 2024-01-01
schedule: {every: 3s, jitter: 2s}
tasks:
  only: {run: "true"}
"#;

fn time(row: &Value, field: &str) -> DateTime<Utc> {
    let text = row[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} of {row}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Waits for `count` runs of the DAG; returns them, oldest first.
fn created_runs(world: &World, count: usize) -> Vec<DagRun> {
    common::wait_for(&format!("{count} runs"), Duration::from_secs(60), || {
        let mut runs = world.with_store(async |store| {
            let dag_id = DagId::parse("jittery").unwrap();
            store.list_dag_runs(&dag_id, None, 100, 0).await.unwrap()
        });
        runs.reverse();
        (runs.len() >= count).then_some(runs)
    })
}

/// A run's delay after its interval's end.
fn delay(run: &DagRun) -> chrono::Duration {
    run.run_after - run.data_interval_end
}

/// Checks every run: each was created (queued) no sooner than its interval's end delayed by
/// the DAG's jitter for its logical date, the function a restart computes again; no date has
/// two runs.
fn assert_jittered(runs: &[DagRun]) {
    let jitter = Jitter::of(Duration::from_secs(2), "jittery");
    for run in runs {
        assert_eq!(run.run_type, RunType::Scheduled);
        assert_eq!(delay(run), jitter.delay(run.logical_date), "{run:?}");
        let queued = run.queued_at.expect("queued when created");
        assert!(queued >= run.run_after, "started early: {run:?}");
    }
    for pair in runs.windows(2) {
        assert!(
            pair[0].logical_date < pair[1].logical_date,
            "one run per date"
        );
    }
}

fn jitter_holds_across_a_restart(world: &World, args: &[&str], banner: usize) {
    world.dag("jittery", JITTERY);
    let mut first = world.start("first", args, banner);
    let runs = created_runs(world, 2);
    assert_jittered(&runs);
    // Killed, and started again: the next life delays its runs by the same function.
    first.kill9();
    let seen = runs.len();
    let _second = world.start("second", args, banner);
    let runs = created_runs(world, seen + 2);
    assert_jittered(&runs);
    // The delays differ from run to run: a jitter, not a shift.
    let delays: Vec<chrono::Duration> = runs.iter().map(delay).collect();
    assert!(
        delays.windows(2).any(|pair| pair[0] != pair[1]),
        "{delays:?}"
    );
    // What `dags next-runs` says of the next ones is what the scheduler will do.
    let next: Value =
        serde_json::from_str(&world.ok(&["dags", "next-runs", "jittery", "--json"])).unwrap();
    for row in next
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["due"] == false)
    {
        let logical = time(row, "logical_date");
        let expected = time(row, "data_interval_end")
            + Jitter::of(Duration::from_secs(2), "jittery").delay(logical);
        // `next-runs` prints whole seconds.
        assert_eq!(
            time(row, "run_after").timestamp(),
            expected.timestamp(),
            "{row}"
        );
    }
}

#[test]
fn jitter_holds_across_a_restart_of_a_standalone_on_sqlite() {
    let world = World::new();
    jitter_holds_across_a_restart(&world, &["standalone", "--port", "0"], 5);
}

#[test]
fn jitter_holds_across_a_restart_of_a_scheduler_on_postgres() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    jitter_holds_across_a_restart(&world, &["scheduler"], 0);
}
