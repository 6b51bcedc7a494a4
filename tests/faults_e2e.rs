//! Faults end to end ("nothing is lost"): real `updraft` processes killed with SIGKILL in the
//! middle of runs and started again, a Postgres server stopped under them, and SIGTERM. After
//! each fault every run still finishes, no run exists twice, and no task instance ever ran two
//! tries at once.
//!
//! State is read through the CLI's `--json` outputs (`runs list`, `runs show`) and `tasks logs`;
//! which worker ran a try is read through the store. What the tasks did is read from files their
//! command ([`TASK_SH`]) appends to: one file per task instance, a `start` line and an `end`
//! line per try, and an `alive` line when a process of an earlier try of the same task instance
//! is still running as a new try starts.

mod common;

use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::world::{
    RUN_DEADLINE, World, let_the_scheduler_run, now_seconds, started, started_any,
};
use common::{run, wait_for};
use serde_json::Value;
use updraft_core::state::WorkerState;

/// The logical dates of daily runs from 2024-01-01 on, as `runs list --json` prints them.
fn days(count: u32) -> Vec<String> {
    (1..=count)
        .map(|day| format!("2024-01-{day:02}T00:00:00Z"))
        .collect()
}

/// Each logical date once, all of them, and every run in `state`.
fn assert_runs(runs: &[Value], expected_days: &[String], state: &str) {
    let dates: Vec<&str> = runs
        .iter()
        .map(|run| run["logical_date"].as_str().unwrap())
        .collect();
    assert_eq!(dates, expected_days, "one run per logical date: {runs:#?}");
    for run in runs {
        assert_eq!(run["state"], state, "{run}");
    }
}

/// A daily catch-up DAG of `days` runs, at most `max_active_runs` at once, of the chain
/// a -> b -> c; `b` sleeps `b_seconds`, the others 1 s; one retry after 1 s.
fn chain_dag(days: u32, max_active_runs: u32, b_seconds: u32) -> String {
    format!(
        r#"
version: 1
schedule: "@daily"
start_date: 2024-01-01
end_date: 2024-01-{days:02}
catchup: true
max_active_runs: {max_active_runs}
env:
  WORK: "@WORK@"
defaults:
  retries: 1
  retry_delay: 1s
tasks:
  a:
    run: sh "$WORK/task.sh" 1
  b:
    depends_on: a
    run: sh "$WORK/task.sh" {b_seconds}
  c:
    depends_on: b
    run: sh "$WORK/task.sh" 1
"#
    )
}

// --- 1. standalone killed with SIGKILL ---------------------------------------------------------

#[test]
fn standalone_killed_mid_run_resumes_every_run_once_and_kills_its_orphans() {
    let world = World::new();
    // b sleeps 3 s: long enough that the try killed with its standalone would still run when the
    // new standalone has started, so that killing it is observable (no `end` line).
    world.dag("chain", &chain_dag(6, 3, 3));
    let mut first = world.standalone("standalone.1", &[]);

    let (fresh_run, fresh_try) = started(&world, "b", &[&first]);
    first.kill9();
    let killed_at = Instant::now();
    // Nothing changes the database while no Updraft process runs: what it says is running now
    // is what the dead process left running.
    let leftovers = world.running("chain");
    assert!(
        leftovers
            .iter()
            .any(|(run, task, _)| *run == fresh_run && task == "b"),
        "b of {fresh_run} was running: {leftovers:?}"
    );
    let second = world.standalone("standalone.2", &[]);
    assert!(
        killed_at.elapsed() < Duration::from_secs(2),
        "the test restarts at once: {:?}",
        killed_at.elapsed()
    );

    let runs = world.finished_runs("chain", 6, &[&second]);
    assert_runs(&runs, &days(6), "success");

    let records = world.records();
    for run in &runs {
        let run_id = run["run_id"].as_str().unwrap();
        for (task_id, (state, try_number)) in world.task_states("chain", run_id) {
            let what = format!("{run_id} {task_id}");
            assert_eq!(state, "success", "{what}");
            let record = &records[&(run_id.to_owned(), task_id.clone())];
            record.assert_one_try_at_a_time(&what);
            assert_eq!(
                record.tries.last().unwrap().number,
                try_number,
                "{what}: the database's try is the one that finished: {}",
                record.text
            );
        }
    }

    // Each try the dead process left running was ended by the restarted worker, which says so
    // in that try's log: adopted as it ended when its command had ended meanwhile (it ran to its
    // end once), else ended as a zombie and run again.
    for (run_id, task_id, try_number) in &leftovers {
        let states = world.task_states("chain", run_id);
        let (state, now) = &states[task_id];
        assert_eq!(state, "success", "{run_id} {task_id}");
        let record = &records[&(run_id.clone(), task_id.clone())];
        let ended = record.try_(*try_number).is_some_and(|t| t.end.is_some());
        let log = world.log("chain", run_id, task_id, *try_number);
        if ended {
            assert_eq!(
                now, try_number,
                "{run_id} {task_id}: adopted, not run again"
            );
            assert!(
                log.contains("so the try is success and the command is not run again"),
                "{run_id} {task_id} try {try_number}: {log}"
            );
        } else {
            assert!(
                *now > *try_number,
                "{run_id} {task_id}: try {try_number} was left running, yet try_number is {now}"
            );
            assert!(
                log.contains("restarted while this try ran; it is ended as a zombie"),
                "{run_id} {task_id} try {try_number}: {log}"
            );
        }
    }

    // The fresh try's processes were killed by the restarted worker before their sleep ended,
    // and nothing of it runs any more.
    let record = &records[&(fresh_run.clone(), "b".to_owned())];
    let orphan = record.try_(fresh_try.number).unwrap();
    assert_eq!(
        orphan.end, None,
        "the orphaned try of b in {fresh_run} ran to its end beside the new standalone:\n{}",
        record.text
    );
    for pid in orphan.pids {
        assert!(
            !world.try_process_runs(&fresh_run, "b", orphan.number, pid),
            "process {pid} of the orphaned try runs"
        );
    }

    let_the_scheduler_run(Duration::from_secs(1));
    assert_eq!(world.runs("chain").len(), 6);
}

#[test]
fn a_command_that_ends_while_its_standalone_is_dead_is_adopted_not_run_again() {
    let world = World::new();
    // No retry: a try ended as a zombie would fail the run. The command outlives the standalone
    // by 2 s, writes an output, and exits 0 before the standalone is back.
    world.dag(
        "once",
        r#"
version: 1
env:
  WORK: "@WORK@"
tasks:
  slow:
    run: sh "$WORK/task.sh" 2 && echo rows=42 >> "$UPDRAFT_OUTPUT"
    outputs: [rows]
  after:
    depends_on: slow
    run: echo "{{ outputs.slow.rows }}" > "$WORK/after"
"#,
    );
    let mut first = world.standalone("standalone.1", &[]);
    let run_id = world.trigger("once");
    let (_, try_) = started(&world, "slow", &[&first]);
    first.kill9();
    wait_for("the orphaned command to end", RUN_DEADLINE, || {
        let record = world.record(&run_id, "slow")?;
        record.try_(try_.number)?.end.map(|_| ())
    });
    let second = world.standalone("standalone.2", &[]);
    let runs = world.finished_runs("once", 1, &[&second]);
    assert_eq!(runs[0]["state"], "success", "{runs:?}");
    let states = world.task_states("once", &run_id);
    assert_eq!(
        states["slow"],
        ("success".to_owned(), 1),
        "adopted: one try"
    );
    let record = world.record(&run_id, "slow").unwrap();
    assert_eq!(
        record.tries.len(),
        1,
        "the command ran once: {}",
        record.text
    );
    let log = world.log("once", &run_id, "slow", 1);
    assert!(
        log.contains("the command had exited with code 0, so the try is success and the command is not run again"),
        "{log}"
    );
    // Its output was adopted too: the downstream task read it.
    let after = std::fs::read_to_string(world.work.join("after")).unwrap();
    assert_eq!(after.trim(), "42");
}

#[test]
fn standalone_killed_as_its_tries_start_leaves_no_orphan_running() {
    let world = World::new();
    // Sixteen tries start at once. The worker records a try's pid only after its process
    // started, and sixteen such writes wait their turn on SQLite: killed as the first task
    // writes its `start` line, the standalone leaves processes whose pid was never recorded.
    // Its next life must find and kill them too, else they run beside their retries.
    let mut yaml = String::from(
        "version: 1\nschedule: \"@once\"\nstart_date: 2024-01-01\ncatchup: true\n\
         env:\n  WORK: \"@WORK@\"\ndefaults:\n  retries: 1\n  retry_delay: 1s\ntasks:\n",
    );
    let tasks: Vec<String> = (0..16).map(|i| format!("t{i:02}")).collect();
    for task in &tasks {
        yaml.push_str(&format!("  {task}:\n    run: sh \"$WORK/task.sh\" 3\n"));
    }
    world.dag("burst", &yaml);
    let mut first = world.standalone("standalone.1", &[]);
    let task_ids: Vec<&str> = tasks.iter().map(String::as_str).collect();
    started_any(&world, &task_ids, &[&first]);
    first.kill9();
    let leftovers = world.running("burst");
    let second = world.standalone("standalone.2", &[]);

    let runs = world.finished_runs("burst", 1, &[&second]);
    let run_id = runs[0]["run_id"].as_str().unwrap();
    assert_eq!(runs[0]["state"], "success", "{runs:?}\n{}", second.stderr());
    let states = world.task_states("burst", run_id);
    let records = world.records();
    for (_, task_id, try_number) in &leftovers {
        // Killed and run again, or, when its command ended before the new standalone settled
        // it (a slow restart), adopted as it ended.
        let record = &records[&(run_id.to_owned(), task_id.clone())];
        let ended = record.try_(*try_number).is_some_and(|t| t.end.is_some());
        let expected = if ended { *try_number } else { try_number + 1 };
        assert_eq!(
            states[task_id],
            ("success".to_owned(), expected),
            "{}",
            record.text
        );
    }
    for ((run_id, task_id), record) in records {
        record.assert_one_try_at_a_time(&task_id);
        for try_ in record.tries.iter().filter(|t| t.end.is_none()) {
            for pid in try_.pids {
                assert!(
                    !world.try_process_runs(&run_id, &task_id, try_.number, pid),
                    "{task_id}: process {pid} of try {} runs",
                    try_.number
                );
            }
        }
    }
}

#[test]
fn a_scheduler_that_dies_between_the_writes_that_start_a_run_loses_nothing() {
    use updraft_metadata::Backend;
    use updraft_metadata::testing::TestDatabase;
    // Starting a run is two writes: its task instances, and the run's move to running. A
    // fault injected into one of them (a trigger that makes it fail, as a database going away
    // would) stops the scheduler between them; it is then killed, the fault removed, and a
    // new one must run the run to its end, whichever write failed.
    let faults: [&'static str; 2] = [
        "CREATE TRIGGER fault BEFORE INSERT ON task_instance \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
        "CREATE TRIGGER fault BEFORE UPDATE OF state ON dag_run WHEN NEW.state = 'running' \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for fault in faults {
        let database = runtime.block_on(TestDatabase::new(Backend::Sqlite));
        let mut world = World::new();
        world.database_url = Some(database.url().to_owned());
        world.dag(
            "manual",
            r#"
version: 1
env:
  WORK: "@WORK@"
tasks:
  a:
    run: sh "$WORK/task.sh" 0
  b:
    depends_on: a
    run: sh "$WORK/task.sh" 0
"#,
        );
        let mut first = world.standalone("standalone.1", &[]);
        wait_for("the DAG to be synced", RUN_DEADLINE, || {
            (run(world.command(&["runs", "list", "manual", "--json"])).0 == 0).then_some(())
        });
        runtime.block_on(database.execute(fault));
        let run_id = world.ok(&["dags", "trigger", "manual"]);
        let run_id = run_id.lines().next().unwrap().trim().to_owned();
        wait_for("the scheduler to meet the fault", RUN_DEADLINE, || {
            first.stderr().contains("injected fault").then_some(())
        });
        first.kill9();
        runtime.block_on(database.execute("DROP TRIGGER fault"));

        let second = world.standalone("standalone.2", &[]);
        let runs = world.finished_runs("manual", 1, &[&second]);
        assert_eq!(runs[0]["state"], "success", "{fault}: {runs:?}");
        let states = world.task_states("manual", &run_id);
        assert_eq!(states.len(), 2, "{fault}: {states:?}");
        assert_eq!(states["a"], ("success".to_owned(), 1), "{fault}");
        assert_eq!(states["b"], ("success".to_owned(), 1), "{fault}");
    }
}

// --- 2. scheduler and worker processes killed --------------------------------------------------

#[test]
fn a_killed_scheduler_restarted_loses_and_repeats_nothing() {
    // `updraft worker` runs on Postgres only (SQLite is not shared between machines).
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    world.dag("chain", &chain_dag(4, 2, 2));
    let mut scheduler = world.start("scheduler.1", &["scheduler"], 0);
    let worker = world.start("worker", &["worker", "--name", "w1"], 0);

    let (run_id, _) = started(&world, "b", &[&scheduler, &worker]);
    scheduler.kill9();
    let leftovers = world.running("chain");
    assert!(!leftovers.is_empty(), "tries were running");
    // The worker finishes its tries while no scheduler runs, and records how they ended.
    wait_for(
        "the worker to end the running tries without a scheduler",
        RUN_DEADLINE,
        || {
            let running = world.running("chain");
            running.is_empty().then_some(())
        },
    );
    let states = world.task_states("chain", &run_id);
    assert_eq!(states["b"], ("success".to_owned(), 1), "{states:?}");
    assert_eq!(states["c"].0, "none", "nobody scheduled c: {states:?}");

    let scheduler = world.start("scheduler.2", &["scheduler"], 0);
    let runs = world.finished_runs("chain", 4, &[&scheduler, &worker]);
    assert_runs(&runs, &days(4), "success");
    let records = world.records();
    for run in &runs {
        let run_id = run["run_id"].as_str().unwrap();
        for (task_id, state) in world.task_states("chain", run_id) {
            let what = format!("{run_id} {task_id}");
            // A scheduler's death costs no try.
            assert_eq!(state, ("success".to_owned(), 1), "{what}");
            let record = &records[&(run_id.to_owned(), task_id)];
            record.assert_one_try_at_a_time(&what);
            assert_eq!(record.tries.len(), 1, "{what}: {}", record.text);
        }
    }
    let_the_scheduler_run(Duration::from_secs(1));
    assert_eq!(world.runs("chain").len(), 4);
}

#[test]
fn a_killed_workers_tries_become_zombies_retried_on_another_worker() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    // b sleeps 2 s, less than the zombie threshold: the orphan of the killed worker ends by
    // itself before its try is reaped. (A worker that never comes back cannot kill it; a
    // worker restarted under its name would, see the standalone test.)
    world.dag("chain", &chain_dag(3, 3, 2));
    // A task with no retry left is failed instead.
    world.dag(
        "no_retry",
        r#"
version: 1
schedule: "@once"
start_date: 2024-01-01
catchup: true
env:
  WORK: "@WORK@"
tasks:
  only:
    run: sh "$WORK/task.sh" 4
"#,
    );
    let scheduler = world.start("scheduler", &["scheduler", "--zombie-threshold", "3s"], 0);
    let mut w1 = world.start("w1", &["worker", "--name", "w1"], 0);

    let (fresh_run, fresh_try) = started(&world, "b", &[&scheduler, &w1]);
    let (once_run, _) = started(&world, "only", &[&scheduler, &w1]);
    w1.kill9();
    let killed_at = now_seconds();
    let mut leftovers = world.running("chain");
    leftovers.extend(world.running("no_retry"));
    assert!(
        leftovers
            .iter()
            .any(|(run, task, _)| *run == fresh_run && task == "b"),
        "b of {fresh_run} was running: {leftovers:?}"
    );
    let w2 = world.start("w2", &["worker", "--name", "w2"], 0);

    let runs = world.finished_runs("chain", 3, &[&scheduler, &w2]);
    assert_runs(&runs, &days(3), "success");
    let once = world.finished_runs("no_retry", 1, &[&scheduler, &w2]);
    assert_eq!(once[0]["state"], "failed", "{once:?}");
    let states = world.task_states("no_retry", &once_run);
    assert_eq!(states["only"], ("failed".to_owned(), 1));

    let records = world.records();
    for run in &runs {
        let run_id = run["run_id"].as_str().unwrap();
        for (task_id, (state, try_number)) in world.task_states("chain", run_id) {
            let what = format!("{run_id} {task_id}");
            assert_eq!(state, "success", "{what}");
            let record = &records[&(run_id.to_owned(), task_id)];
            record.assert_one_try_at_a_time(&what);
            assert_eq!(record.tries.last().unwrap().number, try_number, "{what}");
        }
    }

    // The scheduler ended each try of w1 as a zombie once its heartbeat was older than the
    // threshold (3 s; w1 heartbeated up to 1 s before it died), at its next housekeeping (every
    // 2 s): not before, and not much later.
    for (run_id, task_id, try_number) in &leftovers {
        let dag_id = if task_id == "only" {
            "no_retry"
        } else {
            "chain"
        };
        let (_, tries) = &world.instances(dag_id, run_id)[task_id];
        let zombie = tries
            .iter()
            .find(|t| i64::from(t.try_number) == *try_number)
            .unwrap();
        let ended = zombie.end_date.expect("the zombie's try was ended");
        let after = ended.timestamp_micros() as f64 / 1e6 - killed_at;
        assert!(
            (2.0..3.0 + 2.0 + 1.5).contains(&after),
            "{run_id} {task_id}: try {try_number} ended {after:.2} s after its worker died"
        );
    }
    // Reaped, w1 is lost at once (its row says so), not only once its heartbeat is 10 s old.
    let w1_row = world.with_store(async |store| store.get_worker("w1").await.unwrap().unwrap());
    assert_eq!(w1_row.state, WorkerState::Lost);

    // Each try of w1 is a zombie, says its log; a retry ran on w2 where one was left.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(world.store());
    for (run_id, task_id, try_number) in &leftovers {
        let dag_id = if task_id == "only" {
            "no_retry"
        } else {
            "chain"
        };
        let log = world.log(dag_id, run_id, task_id, *try_number);
        assert!(
            log.contains(&format!(
                "updraft: try {try_number} is a zombie: its worker w1 on "
            )),
            "{run_id} {task_id} try {try_number}: {log}"
        );
        if task_id == "only" {
            continue;
        }
        let (state, now) = world.task_states(dag_id, run_id)[task_id].clone();
        assert_eq!(state, "success");
        assert_eq!(now, try_number + 1, "{run_id} {task_id}: one retry");
        let tries = runtime.block_on(async {
            let dag_id = updraft_core::ids::DagId::parse(dag_id).unwrap();
            let run = store.get_dag_run_by_run_id(&dag_id, run_id).await.unwrap();
            let run = run.expect("the run exists");
            let instance = store
                .list_task_instances(run.id)
                .await
                .unwrap()
                .into_iter()
                .find(|ti| ti.task_id.as_str() == task_id)
                .expect("the task instance exists");
            store.list_task_tries(instance.id).await.unwrap()
        });
        let workers: Vec<(i32, Option<&str>)> = tries
            .iter()
            .map(|t| (t.try_number, t.worker_id.as_deref()))
            .collect();
        assert_eq!(
            workers,
            [(*try_number as i32, Some("w1")), (now as i32, Some("w2"))],
            "{run_id} {task_id}"
        );
    }
    // The fresh b was among them: its first try ran on w1, its second on w2, one after the
    // other (checked above).
    let record = &records[&(fresh_run.clone(), "b".to_owned())];
    let numbers: Vec<i64> = record.tries.iter().map(|t| t.number).collect();
    assert_eq!(
        numbers,
        [fresh_try.number, fresh_try.number + 1],
        "{}",
        record.text
    );
    runtime.block_on(store.close());
}

#[test]
fn a_worker_restarted_under_its_name_adopts_what_finished_while_it_was_dead() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    // No retry, and a zombie threshold far longer than the outage: the restarted worker, not
    // the reaper, settles the try, from what its command recorded.
    world.dag(
        "once",
        r#"
version: 1
env:
  WORK: "@WORK@"
tasks:
  slow:
    run: sh "$WORK/task.sh" 2 && echo rows=7 >> "$UPDRAFT_OUTPUT"
    outputs: [rows]
"#,
    );
    let scheduler = world.start("scheduler", &["scheduler", "--zombie-threshold", "60s"], 0);
    let mut w1 = world.start("w1", &["worker", "--name", "w1"], 0);
    let run_id = world.trigger("once");
    let (_, try_) = started(&world, "slow", &[&scheduler, &w1]);
    w1.kill9();
    wait_for("the orphaned command to end", RUN_DEADLINE, || {
        world
            .record(&run_id, "slow")?
            .try_(try_.number)?
            .end
            .map(|_| ())
    });
    let w1 = world.start("w1.2", &["worker", "--name", "w1"], 0);
    let runs = world.finished_runs("once", 1, &[&scheduler, &w1]);
    assert_eq!(runs[0]["state"], "success", "{runs:?}");
    let instances = world.instances("once", &run_id);
    let (instance, tries) = &instances["slow"];
    assert_eq!(instance.try_number, 1, "adopted: one try");
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0].exit_code, Some(0));
    assert_eq!(
        world.record(&run_id, "slow").unwrap().tries.len(),
        1,
        "ran once"
    );
    let outputs =
        world.with_store(async |store| store.list_task_outputs(instance.dag_run_id).await.unwrap());
    let outputs: Vec<(&str, &str)> = outputs
        .iter()
        .map(|o| (o.name.as_str(), o.value.as_str()))
        .collect();
    assert_eq!(outputs, [("rows", "7")], "its output was adopted");
}

// --- 3. Postgres stopped under the processes ---------------------------------------------------

#[test]
fn runs_survive_a_postgres_restart() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let mut world = World::new();
    world.database_url = Some(postgres.url());
    world.ok(&["db", "migrate"]);
    // No retries: a database outage must not cost a try.
    world.dag(
        "chain",
        &chain_dag(4, 2, 1).replace("retries: 1", "retries: 0"),
    );
    let standalone = world.standalone("standalone", &[]);

    started(&world, "b", &[&standalone]);
    assert!(postgres.stop("fast"), "pg_ctl stop:\n{}", postgres.log());
    let stopped = Instant::now();
    let stopped_at = now_seconds();
    // The outage itself (not a wait for something): tries keep running and ending while the
    // database is away; their ends wait.
    std::thread::sleep(Duration::from_secs(10));
    let ended_meanwhile = world
        .records()
        .values()
        .flat_map(|record| &record.tries)
        .filter(|t| t.end.is_some_and(|end| end > stopped_at))
        .count();
    postgres.start_again();
    eprintln!("Postgres was down for {:?}", stopped.elapsed());

    let runs = world.finished_runs("chain", 4, &[&standalone]);
    assert_runs(&runs, &days(4), "success");
    let records = world.records();
    for run in &runs {
        let run_id = run["run_id"].as_str().unwrap();
        for (task_id, state) in world.task_states("chain", run_id) {
            let what = format!("{run_id} {task_id}");
            assert_eq!(state, ("success".to_owned(), 1), "{what}");
            let record = &records[&(run_id.to_owned(), task_id)];
            record.assert_one_try_at_a_time(&what);
            assert_eq!(record.tries.len(), 1, "{what}: {}", record.text);
        }
    }
    assert!(
        ended_meanwhile > 0,
        "some try ended while Postgres was down (the case under test)"
    );
    let_the_scheduler_run(Duration::from_secs(1));
    assert_eq!(world.runs("chain").len(), 4);
    drop(standalone);
    assert!(postgres.stop("fast"), "pg_ctl stop:\n{}", postgres.log());
}

#[test]
fn workers_that_lose_the_database_keep_their_tries_and_report_them_when_it_is_back() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let mut world = World::new();
    world.database_url = Some(postgres.url());
    world.ok(&["db", "migrate"]);
    // No retries: a database outage must not cost a try.
    world.dag(
        "chain",
        &chain_dag(4, 2, 1).replace("retries: 1", "retries: 0"),
    );
    let scheduler = world.start("scheduler", &["scheduler"], 0);
    let w1 = world.start("w1", &["worker", "--name", "w1", "--concurrency", "2"], 0);
    let w2 = world.start("w2", &["worker", "--name", "w2", "--concurrency", "2"], 0);
    world.workers_running(&["w1", "w2"]);
    let processes = [&scheduler, &w1, &w2];

    started(&world, "b", &processes);
    assert!(postgres.stop("fast"), "pg_ctl stop:\n{}", postgres.log());
    let stopped_at = now_seconds();
    // The outage itself: tries keep running and ending while the database is away (shorter
    // than the zombie threshold, 30 s); their outcomes wait.
    std::thread::sleep(Duration::from_secs(8));
    let ended_meanwhile = world
        .records()
        .values()
        .flat_map(|record| &record.tries)
        .filter(|t| t.end.is_some_and(|end| end > stopped_at))
        .count();
    postgres.start_again();

    let runs = world.finished_runs("chain", 4, &processes);
    assert_runs(&runs, &days(4), "success");
    let records = world.records();
    for run in &runs {
        let run_id = run["run_id"].as_str().unwrap();
        for (task_id, state) in world.task_states("chain", run_id) {
            let what = format!("{run_id} {task_id}");
            assert_eq!(state, ("success".to_owned(), 1), "{what}");
            let record = &records[&(run_id.to_owned(), task_id)];
            record.assert_one_try_at_a_time(&what);
            assert_eq!(record.tries.len(), 1, "{what}: {}", record.text);
        }
    }
    assert!(
        ended_meanwhile > 0,
        "some try ended while Postgres was down (the case under test)"
    );
    // Each worker said once that it lost the database and once that it has it back.
    for worker in [&w1, &w2] {
        let stderr = worker.stderr();
        assert!(
            stderr.contains("the running tries go on, their outcomes wait")
                && stderr.contains("the metadata database answers again"),
            "{stderr}"
        );
    }
    let_the_scheduler_run(Duration::from_secs(1));
    assert_eq!(world.runs("chain").len(), 4);
    drop((scheduler, w1, w2));
    assert!(postgres.stop("fast"), "pg_ctl stop:\n{}", postgres.log());
}

#[test]
fn a_worker_cut_off_past_the_zombie_threshold_kills_its_reassigned_try_when_it_is_back() {
    use common::proxy::Proxy;
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let mut world = World::new();
    world.database_url = Some(postgres.url());
    world.ok(&["db", "migrate"]);
    // The first try sleeps a minute (it must still run when its worker comes back), the retry
    // one second.
    world.dag(
        "partition",
        r#"
version: 1
env:
  WORK: "@WORK@"
tasks:
  long:
    retries: 1
    retry_delay: 0s
    run: sh "$WORK/task.sh" $([ "$UPDRAFT_TRY_NUMBER" = 1 ] && echo 60 || echo 1)
"#,
    );
    // w1 reaches the database through a proxy on 127.0.0.2, which the test cuts; the
    // scheduler and w2 connect directly.
    let link = Proxy::start("127.0.0.2", postgres.address());
    let scheduler = world.start("scheduler", &["scheduler", "--zombie-threshold", "3s"], 0);
    let w1_url = link.postgres_url();
    let w1 = world.start_on(Some(&w1_url), "w1", &["worker", "--name", "w1"], 0);
    let run_id = world.trigger("partition");
    let (_, first) = started(&world, "long", &[&scheduler, &w1]);
    let w2 = world.start("w2", &["worker", "--name", "w2"], 0);
    world.workers_running(&["w1", "w2"]);
    let processes = [&scheduler, &w1, &w2];

    // Postgres restarts; w1 stays cut off when it is back.
    link.cut();
    assert!(postgres.stop("fast"), "pg_ctl stop:\n{}", postgres.log());
    std::thread::sleep(Duration::from_secs(2));
    postgres.start_again();
    // Past the threshold, the scheduler ends w1's try as a zombie and w2 runs the retry, while
    // w1's try goes on running where w1 cannot hear about it.
    let start = Instant::now();
    let second = loop {
        if let Some(second) = world
            .record(&run_id, "long")
            .and_then(|r| r.try_(2).cloned())
        {
            break second;
        }
        if start.elapsed() > RUN_DEADLINE {
            let stderr: Vec<String> = processes.iter().map(|p| p.stderr()).collect();
            panic!("the retry did not start on w2:\n{}", stderr.join("\n---\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        first
            .pids
            .iter()
            .all(|&pid| world.try_process_runs(&run_id, "long", 1, pid)),
        "w1's try still runs while w1 is cut off"
    );

    // Back on the network, w1 learns that its try was reassigned and kills it.
    link.restore();
    let restored = Instant::now();
    wait_for("w1 to kill its reassigned try", RUN_DEADLINE, || {
        first
            .pids
            .iter()
            .all(|&pid| !world.try_process_runs(&run_id, "long", 1, pid))
            .then_some(())
    });
    let took = restored.elapsed();
    // A second for the heartbeat, and the reconnection's own pauses.
    assert!(
        took < Duration::from_secs(5),
        "killed {took:?} after the link came back"
    );

    let runs = world.finished_runs("partition", 1, &processes);
    assert_eq!(runs[0]["state"], "success", "{runs:?}");
    let instances = world.instances("partition", &run_id);
    let (instance, tries) = &instances["long"];
    assert_eq!(
        (instance.state.as_str(), instance.try_number),
        ("success", 2)
    );
    let ran: Vec<(i32, &str, Option<&str>)> = tries
        .iter()
        .map(|t| (t.try_number, t.state.as_str(), t.worker_id.as_deref()))
        .collect();
    assert_eq!(
        ran,
        [(1, "up_for_retry", Some("w1")), (2, "success", Some("w2"))]
    );
    let record = world.record(&run_id, "long").unwrap();
    assert_eq!(record.try_(1).unwrap().end, None, "{}", record.text);
    assert!(record.try_(2).unwrap().end.is_some(), "{}", record.text);
    assert_eq!(second.number, 2);
    let log = world.log("partition", &run_id, "long", 1);
    assert!(
        log.contains("updraft: try 1 is a zombie: its worker w1 on ")
            && log.contains("updraft: this try is no longer this worker's"),
        "{log}\n{}",
        w1.stderr()
    );
    drop((scheduler, w1, w2));
    assert!(postgres.stop("fast"), "pg_ctl stop:\n{}", postgres.log());
}

// --- 4. SIGTERM --------------------------------------------------------------------------------

#[test]
fn sigterm_stops_claiming_lets_the_running_try_finish_and_exits_zero() {
    let world = World::new();
    world.dag(
        "drain",
        r#"
version: 1
env:
  WORK: "@WORK@"
tasks:
  x:
    run: sh "$WORK/task.sh" 3
  y:
    run: sh "$WORK/task.sh" 3
"#,
    );
    // One slot: one task instance runs, the other waits queued.
    let mut standalone = world.standalone("standalone.1", &["--concurrency", "1"]);
    let run_id = wait_for("the DAG to be synced and triggered", RUN_DEADLINE, || {
        let (code, stdout, _) = run(world.command(&["dags", "trigger", "drain"]));
        (code == 0).then(|| stdout.lines().next().unwrap().trim().to_owned())
    });
    let (_, first_task, first) = started_any(&world, &["x", "y"], &[&standalone]);
    let (running, waiting) = wait_for("one running, one queued", RUN_DEADLINE, || {
        let states = world.task_states("drain", &run_id);
        let running = states.iter().find(|(_, s)| s.0 == "running")?;
        let queued = states.iter().find(|(_, s)| s.0 == "queued")?;
        Some((running.0.clone(), queued.0.clone()))
    });
    assert_eq!((first_task.as_str(), first.number), (running.as_str(), 1));

    let code = standalone.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", standalone.stderr());
    assert!(
        standalone
            .stderr()
            .contains("stopping: waiting for running tries to finish"),
        "{}",
        standalone.stderr()
    );
    // The running try ran to its end and its outcome is recorded; the queued one was not
    // claimed, although a slot was free once the first ended.
    let record = world
        .record(&run_id, &running)
        .expect("the running try's record");
    assert!(record.tries[0].end.is_some(), "{}", record.text);
    let states = world.task_states("drain", &run_id);
    assert_eq!(states[&running], ("success".to_owned(), 1), "{states:?}");
    assert_eq!(states[&waiting], ("queued".to_owned(), 0), "{states:?}");
    assert!(world.record(&run_id, &waiting).is_none());
    let log = world.log("drain", &run_id, &running, 1);
    assert!(log.contains("updraft: exited with code 0"), "{log}");

    // Started again, the waiting task instance runs and the run ends: nothing was lost.
    let mut again = world.standalone("standalone.2", &["--concurrency", "1"]);
    let runs = world.finished_runs("drain", 1, &[&again]);
    assert_eq!(runs[0]["state"], "success", "{runs:?}");
    let states = world.task_states("drain", &run_id);
    assert_eq!(states[&waiting], ("success".to_owned(), 1), "{states:?}");
    for record in world.records().values() {
        record.assert_one_try_at_a_time(&run_id);
    }
    // With nothing running, SIGTERM ends it at once.
    let asked = Instant::now();
    assert_eq!(again.terminate(Duration::from_secs(10)), Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn a_worker_stopped_with_sigterm_kills_what_outlives_its_shutdown_timeout_and_loses_nothing() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    world.dag(
        "drain",
        r#"
version: 1
env:
  WORK: "@WORK@"
tasks:
  short:
    run: sh "$WORK/task.sh" 1
  long:
    retries: 1
    retry_delay: 0s
    run: sh "$WORK/task.sh" $([ "$UPDRAFT_TRY_NUMBER" = 1 ] && echo 60 || echo 0)
  waiting:
    depends_on: [short]
    run: sh "$WORK/task.sh" 0
"#,
    );
    let scheduler = world.start("scheduler", &["scheduler"], 0);
    let mut w1 = world.start(
        "w1",
        &["worker", "--name", "w1", "--shutdown-timeout", "3s"],
        0,
    );
    let run_id = world.trigger("drain");
    let (_, _, first) = started_any(&world, &["long"], &[&scheduler, &w1]);
    started_any(&world, &["short"], &[&scheduler, &w1]);

    let asked = Instant::now();
    let code = w1.terminate(Duration::from_secs(30));
    let took = asked.elapsed();
    assert_eq!(code, Some(0), "{}", w1.stderr());
    // The shutdown timeout, then SIGTERM ends the try's `sleep` at once.
    assert!(
        (Duration::from_secs(3)..Duration::from_secs(8)).contains(&took),
        "stopped after {took:?}"
    );
    // `short` ran to its end and succeeded; `waiting`, ready once it did, was not claimed by
    // the stopping worker; `long` was killed and is up for retry, its log says why.
    let states = world.task_states("drain", &run_id);
    assert_eq!(states["short"], ("success".to_owned(), 1), "{states:?}");
    assert_eq!(states["waiting"].1, 0, "{states:?}");
    // (The scheduler may have queued its retry already: the try's own row says how it ended.)
    assert_eq!(states["long"].1, 1, "{states:?}");
    let (_, tries) = &world.instances("drain", &run_id)["long"];
    assert_eq!(tries.len(), 1, "{tries:?}");
    assert_eq!(tries[0].state.as_str(), "up_for_retry", "{tries:?}");
    let record = world.record(&run_id, "long").unwrap();
    assert_eq!(
        record.try_(first.number).unwrap().end,
        None,
        "{}",
        record.text
    );
    for pid in first.pids {
        assert!(!world.try_process_runs(&run_id, "long", first.number, pid));
    }
    let log = world.log("drain", &run_id, "long", 1);
    assert!(
        log.contains(
            "updraft: the worker is stopping and this try still ran after its shutdown timeout \
             (3s)"
        ) && log.contains("up for retry at"),
        "{log}"
    );
    let listed: Value = serde_json::from_str(&world.ok(&["workers", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["state"], "stopped", "{listed}");

    // Another worker picks up what was left: the retry and the task that waited.
    let w2 = world.start("w2", &["worker", "--name", "w2"], 0);
    let runs = world.finished_runs("drain", 1, &[&scheduler, &w2]);
    assert_eq!(runs[0]["state"], "success", "{runs:?}");
    let states = world.task_states("drain", &run_id);
    assert_eq!(states["long"], ("success".to_owned(), 2), "{states:?}");
    assert_eq!(states["waiting"], ("success".to_owned(), 1), "{states:?}");
}
