//! Schedule policies end to end (issue 19) against real `updraft` processes: a schedule's
//! `jitter` delays each run's start by the same amount in every life of a scheduler; runs
//! past their `misfire_grace` are skipped with the reason; rate limits of a task and of a pool
//! hold while many runs want their tasks at once.

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

/// An hourly DAG that catches up, from five hours ago, on runs long past their grace: as a
/// scheduler that was down finds them.
const CATCHING_UP: &str = r#"version: 1
start_date: "@START@"
catchup: true
schedule: {cron: "0 * * * *", misfire_grace: 10m}
tasks:
  only: {run: "true"}
"#;

/// The runs of `dag_id`, oldest first, each with its task instances' states.
fn runs_with_states(world: &World, dag_id: &str) -> Vec<(DagRun, Vec<String>)> {
    world.with_store(async |store| {
        let dag_id = DagId::parse(dag_id).unwrap();
        let mut runs = store.list_dag_runs(&dag_id, None, 1000, 0).await.unwrap();
        runs.reverse();
        let mut out = Vec::new();
        for run in runs {
            let states = store
                .list_task_instances(run.id)
                .await
                .unwrap()
                .iter()
                .map(|ti| ti.state.to_string())
                .collect();
            out.push((run, states));
        }
        out
    })
}

/// The reasons of the DAG's `run_skipped` events, by run id.
fn skip_reasons(world: &World, dag_id: &str) -> Vec<(String, String)> {
    world
        .events(dag_id, "run_skipped")
        .into_iter()
        .map(|event| {
            let reason = event.details["reason"].as_str().unwrap_or_default();
            (event.run_id.unwrap_or_default(), reason.to_owned())
        })
        .collect()
}

fn misfires_are_skipped_with_their_reason(world: &World, args: &[&[&str]], banner: usize) {
    let start = (Utc::now() - chrono::Duration::hours(5)).to_rfc3339();
    world.dag("catching_up", &CATCHING_UP.replace("@START@", &start));
    let _running: Vec<_> = args
        .iter()
        .enumerate()
        .map(|(index, args)| world.start(&format!("process{index}"), args, banner))
        .collect();
    // Catching up: every run created more than 10 minutes after it was due is skipped, with
    // its reason, its task instances skipped, nothing run.
    let runs = common::wait_for("the catch-up", Duration::from_secs(60), || {
        let runs = runs_with_states(world, "catching_up");
        let done = runs.len() >= 4
            && runs
                .iter()
                .all(|(run, _)| run.state.to_string() == "success");
        done.then_some(runs)
    });
    let reasons = skip_reasons(world, "catching_up");
    let grace = chrono::Duration::minutes(10);
    let mut skipped = 0;
    for (run, states) in &runs {
        let late = run.queued_at.unwrap() - run.run_after;
        let reason = reasons.iter().find(|(id, _)| *id == run.run_id);
        if late > grace + chrono::Duration::seconds(5) {
            skipped += 1;
            assert!(states.iter().all(|s| s == "skipped"), "{run:?} {states:?}");
            assert!(run.start_date.is_none(), "never started: {run:?}");
            let (_, reason) = reason.unwrap_or_else(|| panic!("no reason for {}", run.run_id));
            assert!(
                reason.starts_with("not started within misfire_grace (10m) of "),
                "{reason}"
            );
        } else if late < grace - chrono::Duration::seconds(5) {
            assert!(states.iter().all(|s| s == "success"), "{run:?} {states:?}");
            assert!(reason.is_none());
        }
    }
    assert!(skipped >= 3, "{runs:?}");
}

#[test]
fn misfires_are_skipped_with_their_reason_in_a_standalone_on_sqlite() {
    let world = World::new();
    misfires_are_skipped_with_their_reason(&world, &[&["standalone", "--port", "0"]], 5);
}

#[test]
fn misfires_are_skipped_with_their_reason_on_postgres() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    misfires_are_skipped_with_their_reason(
        &world,
        &[
            &["scheduler"],
            &["worker", "--name", "w", "--concurrency", "4"],
        ],
        0,
    );
}

/// Every run wants `call` (at most 2 tries per 3 s, across runs) and `p1`, `p2` (in pool `api`,
/// at most 3 tries per 3 s between them) at once.
const LIMITED: &str = r#"version: 1
max_active_runs: 16
max_active_tasks: 64
tasks:
  call: {run: "true", rate_limit: 2/3s}
  p1: {run: "true", pool: api}
  p2: {run: "true", pool: api}
"#;

const RUNS: usize = 6;

/// The start of each try of `task` in the DAG's runs, in order; every task instance ended
/// `success` after exactly one try.
fn starts(world: &World, task: &str) -> Vec<DateTime<Utc>> {
    let mut starts: Vec<DateTime<Utc>> = runs_with_states(world, "limited")
        .into_iter()
        .flat_map(|(run, _)| {
            world.with_store(async |store| store.list_task_instances(run.id).await.unwrap())
        })
        .filter(|ti| ti.task_id.as_str() == task)
        .map(|ti| {
            assert_eq!(
                (ti.state.to_string(), ti.try_number),
                ("success".to_owned(), 1),
                "{ti:?}"
            );
            ti.start_date.expect("started")
        })
        .collect();
    starts.sort_unstable();
    starts
}

/// No span of `period` holds more than `count` of `starts`. The worker stamps a try's start
/// with its own clock as it claims, a few milliseconds before the claim is written, so a
/// start may read as that much earlier than the queueing that admitted it: 0.5 s is allowed.
fn assert_within_rate(what: &str, starts: &[DateTime<Utc>], count: usize, period: i64) {
    let least = chrono::Duration::milliseconds(period * 1000 - 500);
    for (earlier, later) in starts.iter().zip(&starts[count..]) {
        assert!(
            *later - *earlier >= least,
            "{what}: more than {count} tries started within {period}s: {starts:?}"
        );
    }
}

fn rate_limits_hold_under_load(world: &World, args: &[&[&str]], banner: usize) {
    world.ok(&["pools", "set", "api", "16", "--rate-limit", "3/3s"]);
    world.dag("limited", LIMITED);
    let running: Vec<_> = args
        .iter()
        .enumerate()
        .map(|(index, args)| world.start(&format!("process{index}"), args, banner))
        .collect();
    for _ in 0..RUNS {
        world.trigger("limited");
    }
    let processes: Vec<_> = running.iter().collect();
    world.finished_runs("limited", RUNS, &processes);
    let call = starts(world, "call");
    assert_eq!(call.len(), RUNS);
    assert_within_rate("task call (2/3s)", &call, 2, 3);
    let mut pool = starts(world, "p1");
    pool.extend(starts(world, "p2"));
    pool.sort_unstable();
    assert_eq!(pool.len(), 2 * RUNS);
    assert_within_rate("pool api (3/3s)", &pool, 3, 3);
}

#[test]
fn rate_limits_hold_under_load_in_a_standalone_on_sqlite() {
    let world = World::new();
    rate_limits_hold_under_load(&world, &[&["standalone", "--port", "0"]], 5);
}

#[test]
fn rate_limits_hold_under_load_with_two_workers_on_postgres() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    rate_limits_hold_under_load(
        &world,
        &[
            &["scheduler"],
            &["worker", "--name", "w1", "--concurrency", "8"],
            &["worker", "--name", "w2", "--concurrency", "8"],
        ],
        0,
    );
}
