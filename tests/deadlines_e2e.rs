//! Deadlines end to end (issue 19): a run and a task instance that have not finished by their
//! deadline are recorded as missing it once (an event, a mark on the run and the task instance
//! in the UI and the API), whichever scheduler sees it and however often one restarts; what
//! finishes in time is not; nothing is stopped. Against real `updraft` processes on both
//! backends.

mod common;

use std::time::Duration;

use common::world::World;
use common::{Running, http_get};
use serde_json::Value;

/// The run should be done 2 s after it started and `slow` 1 s after the run's interval end
/// (a manual run's logical date); both take longer. `quick` is done well within its deadline.
const LATE: &str = r#"version: 1
deadline: {after_start: 2s}
tasks:
  slow:
    run: sleep 5
    deadline: {after_interval_end: 1s}
  quick:
    run: "true"
    deadline: {after_start: 30s}
"#;

/// The `deadline_missed` events of DAG `late`: (task id, deadline) of each.
fn misses(world: &World) -> Vec<(Option<String>, String)> {
    world
        .events("late", "deadline_missed")
        .into_iter()
        .map(|event| {
            assert_eq!(event.actor, "scheduler");
            let deadline = event.details["deadline"].as_str().unwrap().to_owned();
            (event.task_id.map(|t| t.to_string()), deadline)
        })
        .collect()
}

/// Each miss exactly once: the run's and `slow`'s, never `quick`'s.
fn assert_missed_once(world: &World) {
    let mut found = misses(world);
    found.sort();
    assert_eq!(
        found,
        [
            (None, "after_start: 2s".to_owned()),
            (Some("slow".to_owned()), "after_interval_end: 1s".to_owned()),
        ]
    );
}

/// Triggers the DAG and waits for its run to end: a deadline stops nothing.
fn run_late(world: &World, processes: &[&Running]) -> String {
    world.dag("late", LATE);
    let run_id = world.trigger("late");
    let runs = world.finished_runs("late", 1, processes);
    assert_eq!(runs[0]["state"], "success", "{runs:?}");
    let instances = world.instances("late", &run_id);
    for (task, (instance, tries)) in &instances {
        assert_eq!(instance.state.to_string(), "success", "{task}");
        assert_eq!(tries.len(), 1, "{task} ran once");
    }
    assert!(instances["slow"].0.deadline_missed_at.is_some());
    assert!(instances["quick"].0.deadline_missed_at.is_none());
    run_id
}

#[test]
fn missed_deadlines_are_recorded_once_and_shown_by_a_standalone_on_sqlite() {
    let world = World::new();
    let standalone = world.standalone("standalone", &[]);
    let run_id = run_late(&world, &[&standalone]);
    assert_missed_once(&world);
    // The API and the pages mark the run and the late task instance.
    let token = world.ok(&["users", "token", "admin"]).trim().to_owned();
    let run = run_id.replace('+', "%2B");
    let body = |answer: String| -> Value {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON: {body}"))
    };
    let api = |path: String| body(http_get(&standalone.url(), &path, &token));
    let shown = api(format!("/api/v1/dags/late/runs/{run}"));
    assert!(shown["deadline_missed_at"].is_string(), "{shown}");
    let slow = api(format!("/api/v1/dags/late/runs/{run}/tasks/slow"));
    assert!(slow["deadline_missed_at"].is_string(), "{slow}");
    let quick = api(format!("/api/v1/dags/late/runs/{run}/tasks/quick"));
    assert!(quick["deadline_missed_at"].is_null(), "{quick}");
    let page = http_get(&standalone.url(), &format!("/dags/late/runs/{run}"), &token);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    // The run's mark, and slow's in the task list; quick's row has none.
    assert_eq!(page.matches("deadline missed</span>").count(), 2, "{page}");
}

#[test]
fn missed_deadlines_are_recorded_once_by_two_schedulers_and_a_restart_on_postgres() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    let mut first = world.start("scheduler1", &["scheduler"], 0);
    let second = world.start("scheduler2", &["scheduler"], 0);
    let worker = world.start("worker", &["worker", "--name", "w"], 0);
    world.dag("late", LATE);
    world.trigger("late");
    // Both misses recorded while the run still runs; then one scheduler dies and comes back,
    // and finds them recorded.
    common::wait_for("both misses", Duration::from_secs(30), || {
        (misses(&world).len() >= 2).then_some(())
    });
    first.kill9();
    let again = world.start("scheduler1-again", &["scheduler"], 0);
    world.finished_runs("late", 1, &[&second, &again, &worker]);
    common::world::let_the_scheduler_run(Duration::from_secs(2));
    assert_missed_once(&world);
    let run = world.runs("late");
    assert_eq!(run[0]["state"], "success");
    assert!(run[0]["deadline_missed_at"].is_string(), "{run:?}");
}
