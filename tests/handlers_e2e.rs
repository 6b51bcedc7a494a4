//! Handlers end to end (issue 19): a task's handler runs after its try's end is recorded, as a
//! process of its own, so that a slow or failing handler delays no downstream task, changes no
//! state and is not cut short by its run's timeout; it is told how the try ended; what it did
//! is kept beside the try. Against real `updraft` processes on both backends.

mod common;

use std::time::Duration;

use common::Running;
use common::world::World;
use updraft_core::state::HandlerName;
use updraft_metadata::HandlerRun;

/// `broken` fails at once and its `on_failure` handler takes 6 s; `after` runs when `broken`
/// is done (whatever its state), and its `on_success` handler fails; `slow` keeps the run
/// going past its 4 s timeout.
const SLOW_HANDLERS: &str = r#"version: 1
timeout: 4s
tasks:
  broken:
    run: echo "about to fail"; exit 3
    on_failure: |
      echo "state=$UPDRAFT_STATE code=$UPDRAFT_EXIT_CODE reason=$UPDRAFT_REASON"
      echo "tail=$UPDRAFT_LOG_TAIL"
      echo "url=$UPDRAFT_TASK_URL"
      sleep 6
      echo handled >> @WORK@/handled
  after:
    depends_on: broken
    trigger_rule: all_done
    run: echo after
    on_success: echo "a handler that fails"; exit 1
  slow:
    run: sleep 30
"#;

/// Runs the DAG on `world` with `processes` running, and checks what the states and the
/// handlers' rows say; `base_url` is the UI's address the processes were given.
fn slow_handlers_hold_nothing_back(world: &World, processes: &[&Running], base_url: &str) {
    world.dag("slow_handlers", SLOW_HANDLERS);
    let run_id = world.trigger("slow_handlers");
    let runs = world.finished_runs("slow_handlers", 1, processes);
    assert_eq!(runs[0]["state"], "failed", "the run timed out: {runs:?}");
    let instances = world.instances("slow_handlers", &run_id);
    let state = |task: &str| instances[task].0.state.to_string();
    // The failure was recorded before its handler ran: the run's timeout found it failed,
    // not running (which it would have skipped).
    assert_eq!(state("broken"), "failed");
    assert_eq!(
        state("after"),
        "success",
        "a failing handler changes no state"
    );
    assert_eq!(state("slow"), "skipped", "cut by the run's timeout");
    let ended = |task: &str| instances[task].1[0].end_date.unwrap();
    let waited = ended("after") - ended("broken");
    assert!(
        waited < chrono::Duration::seconds(3),
        "`after` waited {waited} for `broken`: its 6 s handler held it back"
    );

    // The handlers' rows come once they ended, beside their tries.
    let handler = |task: &str| -> HandlerRun {
        let id = instances[task].0.id;
        common::wait_for(
            &format!("the handler of {task}"),
            Duration::from_secs(30),
            || {
                world
                    .with_store(async |store| store.list_try_handler_runs(id).await.unwrap())
                    .pop()
            },
        )
    };
    let failure = handler("broken");
    assert_eq!(failure.handler, HandlerName::OnFailure);
    assert_eq!(failure.ending, "exited with code 0");
    assert!(failure.start_date >= ended("broken"));
    let log = String::from_utf8(failure.log.clone()).unwrap();
    assert!(
        log.contains("state=failed code=3 reason=exited with code 3"),
        "{log}"
    );
    assert!(log.contains("tail=about to fail"), "{log}");
    let url = format!("url={base_url}/dags/slow_handlers/runs/");
    assert!(log.contains(&url), "{log}");
    assert!(log.contains("/tasks/broken?try=1"), "{log}");
    let success = handler("after");
    assert_eq!(success.handler, HandlerName::OnSuccess);
    assert_eq!(success.ending, "exited with code 1");
    assert_eq!(success.log, b"a handler that fails\n");
    // Run once, not again.
    assert_eq!(
        std::fs::read_to_string(world.work.join("handled")).unwrap(),
        "handled\n"
    );
    // The try's log says that its handler runs after it, and shows none of its output.
    let broken_log = world.log("slow_handlers", &run_id, "broken", 1);
    assert!(
        broken_log.contains("the on_failure handler runs now"),
        "{broken_log}"
    );
    assert!(!broken_log.contains("state=failed"), "{broken_log}");
}

#[test]
fn slow_and_failing_handlers_hold_nothing_back_in_a_standalone_on_sqlite() {
    let world = World::new();
    let standalone = world.standalone("standalone", &[]);
    let base_url = standalone.url();
    slow_handlers_hold_nothing_back(&world, &[&standalone], &base_url);
}

#[test]
fn slow_and_failing_handlers_hold_nothing_back_on_a_remote_worker_on_postgres() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    let base_url = "https://updraft.example.com";
    let scheduler = world.start("scheduler", &["scheduler", "--base-url", base_url], 0);
    let worker = world.start(
        "worker",
        &[
            "worker",
            "--name",
            "w",
            "--base-url",
            &format!("{base_url}/"),
        ],
        0,
    );
    slow_handlers_hold_nothing_back(&world, &[&scheduler, &worker], base_url);
}
