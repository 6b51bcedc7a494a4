//! Remote workers end to end (issue 6): `updraft scheduler` and several `updraft worker`
//! processes sharing one Postgres database, each worker a process of its own with its own name
//! and queues. What ran where is read through the store (`task_try.worker_id`); what the tasks
//! did, from the files their command writes (see `common::world::TASK_SH`).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::world::{RUN_DEADLINE, TryRecord, World, now_seconds};
use common::{run, wait_for};
use serde_json::{Value, json};
use updraft_core::ids::DagId;
use updraft_core::state::{DagRunState, TaskMove, TaskState};

// --- 1. `updraft worker` on SQLite, and its flags ---------------------------------------------

#[test]
fn a_worker_refuses_sqlite_and_says_what_to_use_instead() {
    let world = World::new();
    let file = world.root.path().join("shared.db");
    let url = format!("sqlite:{}", file.display());
    for args in [vec!["worker"], vec!["--database-url", &url, "worker"]] {
        let (code, stdout, stderr) = run(world.command(&args));
        assert_eq!(code, 1, "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("updraft worker needs the Postgres database its scheduler uses")
                && stderr.contains("--database-url postgres://")
                && stderr.contains("`updraft standalone` runs the scheduler and its workers"),
            "{args:?}: {stderr}"
        );
    }
    // Refused before anything was created.
    assert!(!file.exists());
    assert!(!world.home.join("updraft.db").exists());
}

#[test]
fn worker_flags_are_checked() {
    let world = World::new();
    for (args, message) in [
        (
            vec!["worker", "--queues", "a,,b"],
            "a queue name cannot be empty",
        ),
        (
            vec!["worker", "--queues", ""],
            "a queue name cannot be empty",
        ),
        (vec!["worker", "--concurrency", "0"], "--concurrency"),
        (
            vec!["worker", "--name", "two words"],
            "a worker name cannot contain spaces",
        ),
        (vec!["worker", "--name", ""], "a worker name has 1 to 250"),
    ] {
        let (code, _, stderr) = run(world.command(&args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

// --- 2. queue routing --------------------------------------------------------------------------

#[test]
fn task_instances_run_only_on_workers_of_their_queue() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    let mut yaml = String::from("version: 1\nenv:\n  WORK: \"@WORK@\"\ntasks:\n");
    for queue in ["alpha", "beta"] {
        for i in 0..4 {
            yaml.push_str(&format!(
                "  {queue}_{i}:\n    queue: {queue}\n    run: sh \"$WORK/task.sh\" 0.5\n"
            ));
        }
    }
    yaml.push_str("  gamma_0:\n    queue: gamma\n    run: sh \"$WORK/task.sh\" 0\n");
    world.dag("routing", &yaml);
    let scheduler = world.start("scheduler", &["scheduler"], 0);
    // One worker per queue, one serving both, and none yet for gamma.
    let workers = [
        world.start(
            "wa",
            &[
                "worker",
                "--name",
                "wa",
                "--queues",
                "alpha",
                "--concurrency",
                "2",
            ],
            0,
        ),
        world.start(
            "wb",
            &[
                "worker",
                "--name",
                "wb",
                "--queues",
                "beta",
                "--concurrency",
                "2",
            ],
            0,
        ),
        world.start(
            "wab",
            &[
                "worker",
                "--name",
                "wab",
                "--queues",
                "alpha,beta",
                "--concurrency",
                "2",
            ],
            0,
        ),
    ];
    let run_id = world.trigger("routing");

    // Every alpha and beta task instance ends; gamma's waits queued, claimed by nobody.
    let served = |task: &str| task.starts_with("alpha") || task.starts_with("beta");
    wait_for("the alpha and beta tasks to succeed", RUN_DEADLINE, || {
        // (Before the run starts it has no task instances: that is not "all succeeded".)
        let states = world.task_states("routing", &run_id);
        let succeeded = states
            .iter()
            .filter(|(task, (state, _))| served(task) && state == "success")
            .count();
        (succeeded == 8).then_some(())
    });
    let states = world.task_states("routing", &run_id);
    assert_eq!(states["gamma_0"], ("queued".to_owned(), 0), "{states:?}");
    assert!(world.record(&run_id, "gamma_0").is_none());

    let gamma = world.start("wg", &["worker", "--name", "wg", "--queues", "gamma"], 0);
    let runs = world.finished_runs("routing", 1, &[&scheduler, &gamma]);
    assert_eq!(runs[0]["state"], "success", "{runs:?}");

    let mut used = BTreeSet::new();
    for (task, (instance, tries)) in world.instances("routing", &run_id) {
        assert_eq!(tries.len(), 1, "{task}: {tries:?}");
        let worker = tries[0].worker_id.clone().expect("a worker ran it");
        let allowed: &[&str] = match instance.queue.as_str() {
            "alpha" => &["wa", "wab"],
            "beta" => &["wb", "wab"],
            "gamma" => &["wg"],
            queue => panic!("{task}: unexpected queue {queue}"),
        };
        assert!(
            allowed.contains(&worker.as_str()),
            "{task} of queue {} ran on {worker}",
            instance.queue
        );
        used.insert(worker);
        world
            .record(&run_id, &task)
            .unwrap_or_else(|| panic!("{task} ran"))
            .assert_one_try_at_a_time(&task);
    }
    // The shared worker took part beside the dedicated ones (eight half-second tasks for three
    // workers of two slots each).
    assert_eq!(used.len(), 4, "every worker ran something: {used:?}");

    // A worker stopped with SIGTERM is listed as stopped, with its queues; the others run.
    let mut gamma = gamma;
    assert_eq!(
        gamma.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        gamma.stderr()
    );
    let listed: Value = serde_json::from_str(&world.ok(&["workers", "list", "--json"])).unwrap();
    let states: BTreeSet<(String, String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|worker| {
            (
                worker["id"].as_str().unwrap().to_owned(),
                worker["queues"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|q| q.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(","),
                worker["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("wa", "alpha", "running"),
        ("wab", "alpha,beta", "running"),
        ("wb", "beta", "running"),
        ("wg", "gamma", "stopped"),
    ]
    .into_iter()
    .map(|(id, queues, state)| (id.to_owned(), queues.to_owned(), state.to_owned()))
    .collect();
    assert_eq!(states, expected);
    drop(workers);
}

// --- 3. the kill path --------------------------------------------------------------------------

/// How soon a kill from the UI or the CLI stops the try's processes on its worker.
const KILL_WITHIN: Duration = Duration::from_secs(1);

/// Watches the processes of try `try_` of task instance (run, task) from another thread;
/// the handle answers when they were all gone (seconds since the epoch).
fn watch_death(
    world: &World,
    run_id: &str,
    task_id: &str,
    try_: &TryRecord,
) -> std::thread::JoinHandle<f64> {
    let (work, run_id, task_id, try_) = (
        world.work.clone(),
        run_id.to_owned(),
        task_id.to_owned(),
        try_.clone(),
    );
    std::thread::spawn(move || {
        let start = Instant::now();
        loop {
            let alive = try_
                .pids
                .iter()
                .any(|&pid| process_of_try_runs(&work, &run_id, &task_id, try_.number, pid));
            if !alive {
                return now_seconds();
            }
            assert!(
                start.elapsed() < RUN_DEADLINE,
                "try {} of {task_id} was never killed",
                try_.number
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// `World::try_process_runs`, for a thread that holds no `World`.
fn process_of_try_runs(
    work: &std::path::Path,
    run_id: &str,
    task_id: &str,
    number: i64,
    pid: u32,
) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    if matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None) {
        return false;
    }
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let environ: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
    [
        format!("WORK={}", work.display()),
        format!("UPDRAFT_RUN_ID={run_id}"),
        format!("UPDRAFT_TASK_ID={task_id}"),
        format!("UPDRAFT_TRY_NUMBER={number}"),
    ]
    .iter()
    .all(|wanted| environ.contains(&wanted.as_bytes()))
}

/// Waits until try `number` of task `task_id` of `run_id` has started; returns it.
fn try_started(world: &World, run_id: &str, task_id: &str, number: i64) -> TryRecord {
    wait_for(
        &format!("try {number} of {task_id} to start"),
        RUN_DEADLINE,
        || {
            let record = world.record(run_id, task_id)?;
            record.try_(number).cloned()
        },
    )
}

/// Asserts that the kill of `what` took less than [`KILL_WITHIN`] (and says how long).
fn killed_in_time(what: &str, took: f64) {
    eprintln!("{what}: the try's processes were gone {took:.3} s later");
    assert!(
        took < KILL_WITHIN.as_secs_f64(),
        "{what}: the try's processes were gone only {took:.3} s later"
    );
}

fn epoch_seconds(time: chrono::DateTime<chrono::Utc>) -> f64 {
    time.timestamp_micros() as f64 / 1e6
}

#[test]
fn marking_clearing_and_cancelling_kill_the_try_on_its_worker_within_a_second() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    world.dag(
        "victims",
        r#"
version: 1
env:
  WORK: "@WORK@"
tasks:
  marked:
    run: sh "$WORK/task.sh" 60
  cleared:
    run: sh "$WORK/task.sh" 60
  cancelled:
    run: sh "$WORK/task.sh" 60
"#,
    );
    let scheduler = world.start("scheduler", &["scheduler"], 0);
    let worker = world.start("w1", &["worker", "--name", "w1", "--concurrency", "4"], 0);
    let run_id = world.trigger("victims");
    let tries: Vec<(&str, TryRecord)> = ["marked", "cleared", "cancelled"]
        .into_iter()
        .map(|task| (task, try_started(&world, &run_id, task, 1)))
        .collect();
    // `workers list` shows the worker's load: its three tries out of four slots.
    let listed: Value = serde_json::from_str(&world.ok(&["workers", "list", "--json"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let w1 = &listed[0];
    assert_eq!(
        (
            &w1["id"],
            &w1["queues"],
            &w1["concurrency"],
            &w1["running"],
            &w1["state"]
        ),
        (
            &json!("w1"),
            &json!(["default"]),
            &json!(4),
            &json!(3),
            &json!("running")
        ),
        "{w1}"
    );
    assert!(w1["heartbeat_age"].as_f64().unwrap() < 5.0, "{w1}");
    assert!(!w1["hostname"].as_str().unwrap().is_empty(), "{w1}");
    let table = world.ok(&["workers", "list"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "HOST",
            "QUEUES",
            "LOAD",
            "STATE",
            "HEARTBEAT",
            "STARTED"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        (row[0], row[2], row[3], row[4]),
        ("w1", "default", "3/4", "running"),
        "{table}"
    );

    let dag_id = DagId::parse("victims").unwrap();
    let instances = world.instances("victims", &run_id);
    let id_of = |task: &str| instances[task].0.id;

    // Marked failed, as the web UI's action does: a compare-and-set from running.
    let dead = watch_death(&world, &run_id, "marked", &tries[0].1);
    let (asked, marked) = world.with_store(async |store| {
        let asked = now_seconds();
        let marked = store
            .set_task_state(
                id_of("marked"),
                TaskState::Running,
                TaskState::Failed,
                Utc::now(),
            )
            .await
            .unwrap();
        (asked, marked)
    });
    assert!(marked);
    let took = dead.join().unwrap() - asked;
    killed_in_time("mark failed", took);

    // Cleared from the CLI: measured from the instant the command recorded as the clear's.
    let dead = watch_death(&world, &run_id, "cleared", &tries[1].1);
    world.ok(&["tasks", "clear", "victims", "--task", "cleared", "--yes"]);
    let cleared_at = world.with_store(async |store| {
        let events = store.list_events(Some(&dag_id), 20).await.unwrap();
        let clear = events.iter().find(|event| event.event == "clear").unwrap();
        epoch_seconds(clear.at)
    });
    let took = dead.join().unwrap() - cleared_at;
    killed_in_time("clear", took);
    // A cleared task instance runs again: its second try starts on the worker.
    let second = try_started(&world, &run_id, "cleared", 2);

    // The run cancelled, as the web UI's action does: the run fails, its running task
    // instances fail and the other unfinished ones are skipped; both running tries are killed.
    let deaths = [
        watch_death(&world, &run_id, "cancelled", &tries[2].1),
        watch_death(&world, &run_id, "cleared", &second),
    ];
    let asked = world.with_store(async |store| {
        let asked = now_seconds();
        let now = Utc::now();
        let run = store
            .get_dag_run_by_run_id(&dag_id, &run_id)
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .set_dag_run_state(run.id, DagRunState::Running, DagRunState::Failed, now)
                .await
                .unwrap()
        );
        let moves: Vec<_> = store
            .list_task_instances(run.id)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|ti| {
                Some(TaskMove {
                    task_instance: ti.id,
                    from: ti.state,
                    to: ti.state.when_run_marked(DagRunState::Failed)?,
                })
            })
            .collect();
        store.set_task_states(&moves, now).await.unwrap();
        asked
    });
    for dead in deaths {
        let took = dead.join().unwrap() - asked;
        killed_in_time("cancel", took);
    }

    // Each killed try's log says why and that its process group was stopped; none ran to its
    // end, and the database keeps the states the actions set.
    for (task, number) in [
        ("marked", 1),
        ("cleared", 1),
        ("cancelled", 1),
        ("cleared", 2),
    ] {
        let log = world.log("victims", &run_id, task, number);
        assert!(
            log.contains("updraft: this try is no longer this worker's")
                && log.contains("cancelled; sending SIGTERM to its process group"),
            "{task} try {number}: {log}\n{}",
            worker.stderr()
        );
        let record = world.record(&run_id, task).unwrap();
        assert_eq!(record.try_(number).unwrap().end, None, "{}", record.text);
    }
    let states = world.task_states("victims", &run_id);
    assert_eq!(states["marked"], ("failed".to_owned(), 1));
    assert_eq!(states["cleared"], ("failed".to_owned(), 2));
    // Running when its run was cancelled: failed, as its try's log says.
    assert_eq!(states["cancelled"], ("failed".to_owned(), 1));
    drop(scheduler);
}
