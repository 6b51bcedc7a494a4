//! Scheduling behaviour end to end: real `updraft standalone` processes on real SQLite files
//! (and one Postgres database), driven and read through the CLI. The CLI's `--json` outputs
//! (`runs list`, `runs show`, `dags next-runs`) are the contract these tests read state through;
//! what the tasks did is read from files their commands wrote.
//!
//! Each test has its own temporary home (database), DAGs folder and work folder, so the tests
//! run in parallel. DAG files are written by the tests because most name the work folder by its
//! absolute path (`@WORK@` in the YAML below).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Running, max_overlap, run, updraft};
use serde_json::Value;

/// How long a test waits for a run to end before it fails.
const RUN_DEADLINE: Duration = Duration::from_secs(20);

/// One test's world: an Updraft home, a DAGs folder, a folder the tasks write to, and the
/// database URL when it is not the home's SQLite file.
struct World {
    _root: tempfile::TempDir,
    home: PathBuf,
    dags: PathBuf,
    work: PathBuf,
    database_url: Option<String>,
}

impl World {
    fn new() -> World {
        let root = tempfile::tempdir().expect("a temporary folder");
        let home = root.path().join("home");
        let dags = root.path().join("dags");
        let work = root.path().join("work");
        for folder in [&home, &dags, &work] {
            std::fs::create_dir_all(folder).expect("create a test folder");
        }
        World {
            _root: root,
            home,
            dags,
            work,
            database_url: None,
        }
    }

    /// Writes `dags/<name>.yaml`, with `@WORK@` replaced by the work folder's path.
    fn dag(&self, name: &str, yaml: &str) {
        let yaml = yaml.replace("@WORK@", &self.work.display().to_string());
        std::fs::write(self.dags.join(format!("{name}.yaml")), yaml).expect("write a DAG file");
    }

    /// `updraft` with this world's home, DAGs folder and database.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = updraft(&self.home);
        command.arg("--dags-folder").arg(&self.dags);
        if let Some(url) = &self.database_url {
            command.arg("--database-url").arg(url);
        }
        command.args(args);
        command
    }

    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run(self.command(args))
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.cli(args);
        assert_eq!(
            code, 0,
            "updraft {args:?} failed\nstdout: {stdout}\nstderr: {stderr}"
        );
        stdout
    }

    fn standalone(&self) -> Running {
        let mut args: Vec<&str> = Vec::new();
        if let Some(url) = &self.database_url {
            args.extend(["--database-url", url.as_str()]);
        }
        Running::standalone(&self.home, &self.dags, &args, &[])
    }

    /// `runs list ID --json`, oldest first.
    fn runs(&self, dag_id: &str) -> Vec<Value> {
        oldest_first(&self.ok(&["runs", "list", dag_id, "--json", "--limit", "100"]))
    }

    /// Like [`World::runs`], but none while the scheduler has not synced the DAG yet.
    fn runs_so_far(&self, dag_id: &str) -> Vec<Value> {
        let (code, stdout, stderr) =
            self.cli(&["runs", "list", dag_id, "--json", "--limit", "100"]);
        if code != 0 && stderr.contains(&format!("no DAG \"{dag_id}\" in the database")) {
            return Vec::new();
        }
        assert_eq!(code, 0, "runs list {dag_id}: {stderr}");
        oldest_first(&stdout)
    }

    /// `runs show ID RUN --json`.
    fn show(&self, dag_id: &str, run_id: &str) -> Value {
        let stdout = self.ok(&["runs", "show", dag_id, run_id, "--json"]);
        serde_json::from_str(&stdout).expect("runs show --json")
    }

    /// `dags trigger ID ARGS... --wait`: the run id and the exit code.
    fn trigger_wait(&self, dag_id: &str, args: &[&str]) -> (String, i32) {
        let mut all = vec!["dags", "trigger", dag_id, "--wait"];
        all.extend(args);
        let (code, stdout, stderr) = self.cli(&all);
        let run_id = stdout.lines().next().unwrap_or_default().trim().to_owned();
        assert!(
            run_id.starts_with("manual__"),
            "trigger printed no run id\nstdout: {stdout}\nstderr: {stderr}"
        );
        (run_id, code)
    }

    /// `tasks logs ID RUN TASK --try N`.
    fn log(&self, dag_id: &str, run_id: &str, task_id: &str, try_number: u32) -> String {
        let try_number = try_number.to_string();
        self.ok(&[
            "tasks",
            "logs",
            dag_id,
            run_id,
            task_id,
            "--try",
            &try_number,
        ])
    }

    /// Waits until `dag_id` has `count` runs, all finished; returns them oldest first.
    fn wait_for_finished_runs(
        &self,
        standalone: &Running,
        dag_id: &str,
        count: usize,
    ) -> Vec<Value> {
        let mut last = Vec::new();
        let start = Instant::now();
        while start.elapsed() < RUN_DEADLINE {
            last = self.runs_so_far(dag_id);
            let finished = last
                .iter()
                .all(|run| matches!(run["state"].as_str(), Some("success" | "failed")));
            if last.len() >= count && finished {
                return last;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "timed out waiting for {count} finished runs of {dag_id}; runs: {}\nstandalone stderr:\n{}",
            serde_json::to_string_pretty(&last).unwrap(),
            standalone.stderr()
        );
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.work.join(name))
            .unwrap_or_else(|error| panic!("reading work file {name}: {error}"))
    }
}

/// The runs of a `runs list --json` (newest first), oldest first.
fn oldest_first(stdout: &str) -> Vec<Value> {
    let mut runs: Vec<Value> = serde_json::from_str(stdout).expect("runs list --json");
    runs.reverse();
    runs
}

/// The string values of `keys` in `object`.
fn strings(object: &Value, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .map(|key| {
            object[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in {object}"))
                .to_owned()
        })
        .collect()
}

/// Task id -> (state, try_number) of a `runs show --json`.
fn task_states(show: &Value) -> BTreeMap<String, (String, i64)> {
    show["task_instances"]
        .as_array()
        .expect("task_instances")
        .iter()
        .map(|ti| {
            (
                ti["task_id"].as_str().unwrap().to_owned(),
                (
                    ti["state"].as_str().unwrap().to_owned(),
                    ti["try_number"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

fn state_of<'a>(states: &'a BTreeMap<String, (String, i64)>, task: &str) -> &'a str {
    &states
        .get(task)
        .unwrap_or_else(|| panic!("no task instance {task}: {states:?}"))
        .0
}

/// A task command that records its start and end (seconds since the epoch, as
/// `<prefix>.start` / `<prefix>.end` in the work folder) around `sleep 0.5`.
fn stamped_sleep(prefix: &str) -> String {
    format!(
        "date +%s.%N > \"$WORK/{prefix}.start\"; sleep 0.5; date +%s.%N > \"$WORK/{prefix}.end\""
    )
}

/// The `(start, end)` a [`stamped_sleep`] task recorded.
fn interval(world: &World, prefix: &str) -> (f64, f64) {
    let time = |suffix: &str| -> f64 {
        world
            .read(&format!("{prefix}.{suffix}"))
            .trim()
            .parse()
            .unwrap_or_else(|error| panic!("{prefix}.{suffix}: {error}"))
    };
    (time("start"), time("end"))
}

/// Lets the scheduler run for `duration` (several passes at its 200 ms SQLite poll interval)
/// before a test checks that something did NOT happen: a negative needs time to show.
fn let_the_scheduler_run(duration: Duration) {
    std::thread::sleep(duration);
}

// --- 1. catch-up ------------------------------------------------------------------------------

#[test]
fn catchup_creates_each_missed_interval_exactly_once() {
    let world = World::new();
    world.dag(
        "catchup_daily",
        r#"
version: 1
schedule: "@daily"
start_date: 2024-01-01
end_date: 2024-01-05
catchup: true
max_active_runs: 16
tasks:
  hello:
    run: echo "hello {{ ds }}"
"#,
    );
    // Without catch-up, only the latest complete interval (`next-runs` at the same moment says
    // which; asked before and after in case midnight passes in between).
    world.dag(
        "latest_only",
        r#"
version: 1
schedule: "@daily"
start_date: 2024-01-01
catchup: false
tasks:
  hello:
    run: echo "hello {{ ds }}"
"#,
    );
    let due_now = || -> String {
        let now = chrono::Utc::now().to_rfc3339();
        let next = world.ok(&["dags", "next-runs", "latest_only", "--now", &now, "--json"]);
        let next: Vec<Value> = serde_json::from_str(&next).unwrap();
        let due: Vec<&Value> = next.iter().filter(|row| row["due"] == true).collect();
        assert_eq!(due.len(), 1, "{next:?}");
        due[0]["logical_date"].as_str().unwrap().to_owned()
    };
    let due_before = due_now();
    let standalone = world.standalone();
    let runs = world.wait_for_finished_runs(&standalone, "catchup_daily", 5);
    let latest = world.wait_for_finished_runs(&standalone, "latest_only", 1);
    let due_after = due_now();
    assert_eq!(latest.len(), 1, "{latest:?}");
    let latest_date = latest[0]["logical_date"].as_str().unwrap();
    assert!(
        latest_date == due_before || latest_date == due_after,
        "created {latest_date}, next-runs said {due_before} / {due_after}"
    );

    let fields = [
        "run_id",
        "run_type",
        "logical_date",
        "data_interval_start",
        "data_interval_end",
    ];
    let created: Vec<Vec<String>> = runs.iter().map(|run| strings(run, &fields)).collect();
    let expected: Vec<Vec<String>> = (1..=5)
        .map(|day| {
            vec![
                format!("scheduled__2024-01-0{day}T00:00:00+00:00"),
                "scheduled".to_owned(),
                format!("2024-01-0{day}T00:00:00Z"),
                format!("2024-01-0{day}T00:00:00Z"),
                format!("2024-01-0{}T00:00:00Z", day + 1),
            ]
        })
        .collect();
    assert_eq!(created, expected);
    for run in &runs {
        assert_eq!(run["state"], "success", "{run}");
    }

    // The runs are exactly what `dags next-runs` says is due (at any later moment: the DAG
    // ended on 2024-01-05).
    let next = world.ok(&[
        "dags",
        "next-runs",
        "catchup_daily",
        "--now",
        "2030-06-01T00:00:00Z",
        "--json",
    ]);
    let next: Vec<Value> = serde_json::from_str(&next).unwrap();
    assert!(
        next.iter().all(|row| row["due"] == true),
        "nothing comes after end_date: {next:?}"
    );
    let due: Vec<Vec<String>> = next.iter().map(|row| strings(row, &fields[2..])).collect();
    let intervals: Vec<Vec<String>> = runs.iter().map(|run| strings(run, &fields[2..])).collect();
    assert_eq!(due, intervals);

    // Each run ran its task for its own interval.
    let log = world.log("catchup_daily", &created[2][0], "hello", 1);
    assert!(log.contains("hello 2024-01-03\n"), "{log}");

    // More scheduler passes create nothing more.
    let_the_scheduler_run(Duration::from_secs(2));
    let again = world.runs("catchup_daily");
    assert_eq!(again.len(), 5, "{again:?}");
    assert_eq!(world.runs("latest_only").len(), 1);
    let ids = |runs: &[Value]| -> Vec<String> {
        runs.iter()
            .map(|r| r["run_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&again), ids(&runs));
}

// --- 2. trigger rules -------------------------------------------------------------------------

/// Every trigger rule of DESIGN §5.
const RULES: [&str; 11] = [
    "all_success",
    "all_failed",
    "all_done",
    "all_skipped",
    "one_success",
    "one_failed",
    "one_done",
    "none_failed",
    "none_failed_min_one_success",
    "none_skipped",
    "always",
];

/// Upstream sets the rules are tried against: `ok` ends success (`true`), `fail` failed
/// (`exit 1`), `skip` skipped (`exit 99`), `uf` upstream_failed (it depends on `fail`),
/// `late_fail` failed after `skip` ended.
///
/// The order in which upstream tasks end matters, in Airflow as here: a rule is evaluated
/// whenever an upstream task ends, and a "can never be met" state is set on what has ended so
/// far. all_success after [skip, fail] ends skipped when `skip` ends first and
/// upstream_failed when `fail` does. So the DAG fixes the order: `skip` runs after `fail`
/// (`all_done`), hence after `uf` too, and `late_fail` after `skip`.
const UPSTREAM_SETS: [(&str, &[&str]); 6] = [
    ("ok", &["ok"]),
    ("mixed", &["ok", "fail", "skip", "uf"]),
    ("skip", &["skip"]),
    ("failed", &["fail", "uf"]),
    ("okskip", &["ok", "skip"]),
    ("skipfirst", &["skip", "late_fail"]),
];

/// The final state of a downstream task (`true`) with each rule (rows, in `RULES` order) after
/// each upstream set (columns, in `UPSTREAM_SETS` order).
///
/// How we know Airflow 2.10 ends in the same states: its scheduler evaluates
/// `TriggerRuleDep._evaluate_direct_relatives` (airflow/ti_deps/deps/trigger_rule_dep.py) with
/// `flag_upstream_failed=True`. With the counts of the direct upstream tasks' finished states,
/// that first sets the states of rules that can never be met -- all_success: upstream_failed
/// on any failed/upstream_failed, else skipped on any skipped; all_failed: skipped on any
/// success/skipped; one_success: skipped when all done and all skipped, else upstream_failed
/// when all done and none succeeded; one_failed: skipped when all done without a failure;
/// one_done: skipped when all done with no success and no failed; none_failed and
/// none_failed_min_one_success: upstream_failed on any failure (the latter also skipped when
/// all are skipped); none_skipped: skipped on any skipped; all_skipped: skipped on any
/// success/failed/upstream_failed -- and otherwise runs the task once its rule is met (always:
/// at once). The same table, rule by rule, is `scheduler/tests/trigger_rules.rs`, derived from
/// that code; this test checks that the whole system (workers' exit codes, the scheduler's
/// propagation, the run's state) ends where that table says.
const EXPECTED: [[&str; 6]; 11] = {
    const OK: &str = "success";
    const SK: &str = "skipped";
    const UF: &str = "upstream_failed";
    [
        // ok mixed skip failed okskip skipfirst
        [OK, UF, SK, UF, SK, SK], // all_success
        [SK, SK, SK, OK, SK, SK], // all_failed
        [OK, OK, OK, OK, OK, OK], // all_done
        [SK, SK, OK, SK, SK, SK], // all_skipped
        [OK, OK, SK, UF, OK, UF], // one_success
        [SK, OK, SK, OK, SK, OK], // one_failed
        [OK, OK, SK, OK, OK, OK], // one_done
        [OK, UF, OK, UF, OK, UF], // none_failed
        [OK, UF, SK, UF, OK, UF], // none_failed_min_one_success
        [OK, SK, SK, OK, SK, SK], // none_skipped
        [OK, OK, OK, OK, OK, OK], // always
    ]
};

#[test]
fn every_trigger_rule_ends_as_in_airflow() {
    let world = World::new();
    let mut yaml = String::from(
        r#"version: 1
tasks:
  ok:
    run: "true"
  fail:
    run: exit 1
  uf:
    depends_on: fail
    run: "true"
  skip:
    depends_on: fail
    trigger_rule: all_done
    run: exit 99
  late_fail:
    depends_on: skip
    trigger_rule: all_done
    run: exit 1
"#,
    );
    for (set, upstream) in UPSTREAM_SETS {
        for rule in RULES {
            yaml.push_str(&format!(
                "  {set}_{rule}:\n    depends_on: [{}]\n    trigger_rule: {rule}\n    run: \"true\"\n",
                upstream.join(", ")
            ));
        }
    }
    world.dag("rules_matrix", &yaml);

    // Airflow's DagRun.update_state: a run fails when any leaf ended failed or
    // upstream_failed, and succeeds when every leaf ended success or skipped -- a failed task
    // that is not a leaf does not fail the run.
    world.dag(
        "rules_leaves",
        r#"
version: 1
tasks:
  ok:
    run: "true"
  fail:
    run: exit 1
  skip:
    run: exit 99
  after_fail:
    depends_on: fail
    trigger_rule: all_failed
    run: "true"
  after_skip:
    depends_on: skip
    run: "true"
  cleanup:
    depends_on: [ok, fail, skip]
    trigger_rule: all_done
    run: "true"
"#,
    );
    let standalone = world.standalone();

    let (run_id, code) = world.trigger_wait("rules_matrix", &[]);
    let show = world.show("rules_matrix", &run_id);
    let states = task_states(&show);
    assert_eq!(code, 1, "leaves ended upstream_failed: {states:?}");
    assert_eq!(show["state"], "failed");
    assert_eq!(state_of(&states, "ok"), "success");
    assert_eq!(state_of(&states, "fail"), "failed");
    assert_eq!(state_of(&states, "skip"), "skipped");
    assert_eq!(state_of(&states, "uf"), "upstream_failed");
    assert_eq!(state_of(&states, "late_fail"), "failed");
    let mut wrong = Vec::new();
    for (column, (set, upstream)) in UPSTREAM_SETS.iter().enumerate() {
        for (row, rule) in RULES.iter().enumerate() {
            let task = format!("{set}_{rule}");
            let expected = EXPECTED[row][column];
            let actual = state_of(&states, &task);
            if actual != expected {
                wrong.push(format!(
                    "{rule} after {upstream:?}: expected {expected}, got {actual}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\nstandalone stderr:\n{}",
        wrong.join("\n"),
        standalone.stderr()
    );
    // Tasks that ran, ran once; tasks that were skipped or upstream_failed never ran.
    for (task, (state, try_number)) in &states {
        let expected_tries = if matches!(state.as_str(), "success" | "failed") || task == "skip" {
            1
        } else {
            0
        };
        assert_eq!(*try_number, expected_tries, "{task} {state}");
    }

    let (run_id, code) = world.trigger_wait("rules_leaves", &[]);
    let show = world.show("rules_leaves", &run_id);
    let states = task_states(&show);
    assert_eq!(code, 0, "no leaf failed: {states:?}");
    assert_eq!(show["state"], "success");
    let expected = [
        ("ok", "success"),
        ("fail", "failed"),
        ("skip", "skipped"),
        ("after_fail", "success"),
        ("after_skip", "skipped"),
        ("cleanup", "success"),
    ];
    for (task, state) in expected {
        assert_eq!(state_of(&states, task), state, "{task}: {states:?}");
    }
}

// --- 3. retries -------------------------------------------------------------------------------

#[test]
fn retries_back_off_exponentially_and_keep_a_log_per_try() {
    let world = World::new();
    world.dag(
        "flaky",
        r#"
version: 1
env:
  WORK: "@WORK@"
tasks:
  flaky:
    retries: 2
    retry_delay: 1s
    retry_exponential_backoff: true
    run: |
      n=$(cat "$WORK/count.$UPDRAFT_TASK_ID" 2>/dev/null || echo 0)
      n=$((n + 1))
      echo $n > "$WORK/count.$UPDRAFT_TASK_ID"
      echo "$(date +%s.%N)" > "$WORK/start.$n"
      echo "attempt $UPDRAFT_TRY_NUMBER, call $n, rendered try {{ ti.try_number }}"
      date +%s.%N > "$WORK/end.$n"
      [ $n -ge 3 ]
  hopeless:
    retries: 1
    retry_delay: 1s
    run: |
      echo "hopeless attempt $UPDRAFT_TRY_NUMBER"
      exit 1
"#,
    );
    let standalone = world.standalone();
    let started = Instant::now();
    let (run_id, code) = world.trigger_wait("flaky", &[]);
    let show = world.show("flaky", &run_id);
    let states = task_states(&show);
    assert_eq!(code, 1, "hopeless fails the run: {states:?}");
    assert!(started.elapsed() < RUN_DEADLINE);
    assert_eq!(states["flaky"], ("success".to_owned(), 3), "{states:?}");
    assert_eq!(states["hopeless"], ("failed".to_owned(), 2), "{states:?}");
    assert_eq!(world.read("count.flaky").trim(), "3");

    // Each try has its own log, with its own output only.
    for try_number in 1..=3 {
        let log = world.log("flaky", &run_id, "flaky", try_number);
        assert!(
            log.contains(&format!(
                "attempt {try_number}, call {try_number}, rendered try {try_number}\n"
            )),
            "try {try_number}: {log}"
        );
        for other in (1..=3).filter(|&n| n != try_number) {
            assert!(
                !log.contains(&format!("attempt {other},")),
                "try {try_number}: {log}"
            );
        }
    }
    // Without --try: the latest.
    let latest = world.ok(&["tasks", "logs", "flaky", &run_id, "flaky"]);
    assert!(latest.contains("attempt 3,"), "{latest}");
    for try_number in 1..=2 {
        let log = world.log("flaky", &run_id, "hopeless", try_number);
        assert!(
            log.contains(&format!("hopeless attempt {try_number}\n")),
            "{log}"
        );
    }

    // Backoff: retry 1 waits retry_delay (1 s), retry 2 twice that (2 s). The upper bounds
    // tell 1 s and 2 s apart from 2 s and 4 s, with room for a busy machine.
    let stamp = |name: &str| -> f64 { world.read(name).trim().parse().unwrap() };
    let gap1 = stamp("start.2") - stamp("end.1");
    let gap2 = stamp("start.3") - stamp("end.2");
    assert!(
        (1.0..1.9).contains(&gap1),
        "try 2 started {gap1:.3}s after try 1 ended\n{}",
        standalone.stderr()
    );
    assert!(
        (2.0..3.9).contains(&gap2),
        "try 3 started {gap2:.3}s after try 2 ended\n{}",
        standalone.stderr()
    );
}

// --- 4. timeouts ------------------------------------------------------------------------------

/// Whether process `pid` is gone: no `/proc/<pid>`, or a zombie (state `Z`), which is dead but
/// not reaped -- on this machine PID 1 does not reap orphans.
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_timeout_kills_the_whole_process_tree() {
    let world = World::new();
    world.dag(
        "hangs",
        r#"
version: 1
env:
  WORK: "@WORK@"
tasks:
  hang:
    timeout: 1s
    kill_grace: 1s
    retries: 0
    run: sleep 300 & echo $! > "$WORK/hang.pid"; sleep 300
  stubborn:
    timeout: 1s
    kill_grace: 1s
    retries: 0
    # SIGTERM is ignored by the shell and, inherited, by its background sleep: only the
    # SIGKILL after kill_grace ends them.
    run: trap "" TERM; sleep 300 & echo $! > "$WORK/stubborn.pid"; sleep 300
"#,
    );
    let standalone = world.standalone();
    let started = Instant::now();
    let (run_id, code) = world.trigger_wait("hangs", &[]);
    let took = started.elapsed();
    assert_eq!(code, 1);
    assert!(
        took < Duration::from_secs(10),
        "the run took {took:?}\n{}",
        standalone.stderr()
    );
    let states = task_states(&world.show("hangs", &run_id));
    assert_eq!(states["hang"], ("failed".to_owned(), 1));
    assert_eq!(states["stubborn"], ("failed".to_owned(), 1));

    for task in ["hang", "stubborn"] {
        let pid: u32 = world
            .read(&format!("{task}.pid"))
            .trim()
            .parse()
            .expect("a pid");
        assert!(
            process_gone(pid),
            "the background sleep {pid} of {task} outlived its try: {}",
            std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()
        );
        let log = world.log("hangs", &run_id, task, 1);
        assert!(log.contains("timed out after 1s"), "{task}: {log}");
    }
    let log = world.log("hangs", &run_id, "stubborn", 1);
    assert!(log.contains("SIGKILL"), "{log}");
}

// --- 5. pools and max_active_tasks ------------------------------------------------------------

#[test]
fn pools_and_max_active_tasks_limit_concurrency() {
    let world = World::new();
    world.ok(&["pools", "set", "two", "2"]);
    let mut pooled = String::from("version: 1\nenv:\n  WORK: \"@WORK@\"\ntasks:\n");
    for n in 1..=6 {
        pooled.push_str(&format!(
            "  t{n}:\n    pool: two\n    run: {}\n",
            stamped_sleep(&format!("pooled.t{n}"))
        ));
    }
    world.dag("pooled", &pooled);
    let mut serial =
        String::from("version: 1\nmax_active_tasks: 1\nenv:\n  WORK: \"@WORK@\"\ntasks:\n");
    for n in 1..=3 {
        serial.push_str(&format!(
            "  t{n}:\n    run: {}\n",
            stamped_sleep(&format!("serial.{{{{ ds }}}}.t{n}"))
        ));
    }
    world.dag("serial", &serial);
    let standalone = world.standalone();

    // Both DAGs run at once: their limits are their own. `max_active_tasks` holds across the
    // DAG's runs, as in Airflow: two runs of `serial` still run one task at a time.
    let pooled_run = world.ok(&["dags", "trigger", "pooled"]);
    for day in ["2024-01-01", "2024-01-02"] {
        world.ok(&["dags", "trigger", "serial", "--logical-date", day]);
    }
    let runs = world.wait_for_finished_runs(&standalone, "pooled", 1);
    assert_eq!(runs[0]["state"], "success");
    let runs = world.wait_for_finished_runs(&standalone, "serial", 2);
    assert!(runs.iter().all(|run| run["state"] == "success"), "{runs:?}");

    let pooled: Vec<(f64, f64)> = (1..=6)
        .map(|n| interval(&world, &format!("pooled.t{n}")))
        .collect();
    let states = task_states(&world.show("pooled", pooled_run.trim()));
    assert_eq!(states.len(), 6);
    assert!(
        states.values().all(|(state, _)| state == "success"),
        "{states:?}"
    );
    // At most two at once, and the pool's two slots were used (it does not serialize).
    assert_eq!(max_overlap(&pooled), 2, "{pooled:?}");

    let serial: Vec<(f64, f64)> = ["2024-01-01", "2024-01-02"]
        .iter()
        .flat_map(|day| (1..=3).map(move |n| format!("serial.{day}.t{n}")))
        .map(|prefix| interval(&world, &prefix))
        .collect();
    assert_eq!(max_overlap(&serial), 1, "{serial:?}");
}

// --- 6. templates and outputs -----------------------------------------------------------------

#[test]
fn templates_and_outputs_reach_downstream_tasks() {
    let world = World::new();
    world.dag(
        "templated",
        r#"
version: 1
env:
  WORK: "@WORK@"
params:
  region: eu
tasks:
  a:
    outputs: [rows]
    run: echo rows=42 >> "$UPDRAFT_OUTPUT"
  b:
    depends_on: a
    run: echo "{{ ds }} {{ ds_nodash }} {{ outputs.a.rows }} {{ params.region }} {{ ti.try_number }} $UPDRAFT_RUN_ID" > "$WORK/result.txt"
  c:
    depends_on: a
    exec: [sh, -c, 'printf "%s|" "$@" > "$WORK/exec.txt"', sh, "{{ ds }} {{ params.region }}", "{{ outputs.a.rows }}", "$HOME"]
"#,
    );
    // `other` is declared but `a` never writes it: only known when `b` is rendered.
    world.dag(
        "bad_template",
        r#"
version: 1
tasks:
  a:
    outputs: [rows, other]
    run: echo rows=1 >> "$UPDRAFT_OUTPUT"
  b:
    depends_on: a
    retries: 1
    retry_delay: 1s
    run: echo "{{ outputs.a.other }}"
"#,
    );
    let standalone = world.standalone();

    let (run_id, code) = world.trigger_wait(
        "templated",
        &[
            "--conf",
            r#"{"region": "us"}"#,
            "--logical-date",
            "2024-03-05",
        ],
    );
    assert_eq!(run_id, "manual__2024-03-05T00:00:00+00:00");
    assert_eq!(code, 0, "{}", standalone.stderr());
    assert_eq!(
        world.read("result.txt"),
        "2024-03-05 20240305 42 us 1 manual__2024-03-05T00:00:00+00:00\n"
    );
    // exec: each argument rendered, none split or expanded by a shell.
    assert_eq!(world.read("exec.txt"), "2024-03-05 us|42|$HOME|");

    let (run_id, code) = world.trigger_wait("bad_template", &[]);
    assert_eq!(code, 1);
    let states = task_states(&world.show("bad_template", &run_id));
    assert_eq!(state_of(&states, "a"), "success");
    // A template error is a failed try like any other, as in Airflow (where rendering is
    // part of running the try and `handle_failure` retries it): the retry fails the same way.
    assert_eq!(states["b"], ("failed".to_owned(), 2), "{states:?}");
    for try_number in 1..=2 {
        let log = world.log("bad_template", &run_id, "b", try_number);
        assert!(log.contains("cannot render"), "{log}");
        assert!(
            log.contains("other"),
            "the log names what is undefined: {log}"
        );
    }
}

// --- 7. max_active_runs -----------------------------------------------------------------------

#[test]
fn max_active_runs_one_never_overlaps_runs() {
    let world = World::new();
    world.dag(
        "one_at_a_time",
        &format!(
            r#"
version: 1
schedule: "@daily"
start_date: 2024-01-01
end_date: 2024-01-03
catchup: true
max_active_runs: 1
env:
  WORK: "@WORK@"
tasks:
  first:
    run: {}
  second:
    depends_on: first
    run: {}
"#,
            stamped_sleep("{{ ds }}.first"),
            stamped_sleep("{{ ds }}.second")
        ),
    );
    let standalone = world.standalone();
    let runs = world.wait_for_finished_runs(&standalone, "one_at_a_time", 3);
    assert_eq!(runs.len(), 3);
    let mut windows = Vec::new();
    for (run, day) in runs.iter().zip(["2024-01-01", "2024-01-02", "2024-01-03"]) {
        assert_eq!(run["state"], "success", "{run}");
        assert_eq!(run["logical_date"], format!("{day}T00:00:00Z"));
        let (start, _) = interval(&world, &format!("{day}.first"));
        let (_, end) = interval(&world, &format!("{day}.second"));
        windows.push((start, end));
    }
    assert_eq!(max_overlap(&windows), 1, "{windows:?}");
    // Oldest first, as catch-up creates them.
    assert!(windows.windows(2).all(|w| w[0].1 <= w[1].0), "{windows:?}");
}

// --- 8. dags test and tasks test --------------------------------------------------------------

#[test]
fn dags_test_and_tasks_test_run_in_the_terminal() {
    let world = World::new();
    world.dag(
        "works",
        r#"
version: 1
tasks:
  a:
    run: echo "hello from a"
  b:
    depends_on: a
    run: echo "hello from b on {{ ds }}"
"#,
    );
    world.dag(
        "breaks",
        r#"
version: 1
tasks:
  boom:
    run: echo "going down"; exit 3
"#,
    );
    // Known to the database (so that `runs list` answers), and nothing has run.
    world.ok(&["dags", "unpause", "works"]);
    world.ok(&["dags", "unpause", "breaks"]);

    // `tasks test`: output on stdout, exit code from the task, nothing recorded.
    let (code, stdout, stderr) = world.cli(&[
        "tasks",
        "test",
        "works",
        "b",
        "--logical-date",
        "2024-02-03",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("hello from b on 2024-02-03\n"), "{stdout}");
    let (code, stdout, _) = world.cli(&["tasks", "test", "breaks", "boom"]);
    assert_eq!(code, 1);
    assert!(stdout.contains("going down\n"), "{stdout}");
    assert_eq!(world.runs("works"), Vec::<Value>::new());
    assert_eq!(world.runs("breaks"), Vec::<Value>::new());

    // `dags test`: a whole run, every task's log on stdout prefixed with its task.
    let (code, stdout, stderr) =
        world.cli(&["dags", "test", "works", "--logical-date", "2024-02-03"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("[a] hello from a\n"), "{stdout}");
    assert!(
        stdout.contains("[b] hello from b on 2024-02-03\n"),
        "{stdout}"
    );
    let (code, stdout, stderr) = world.cli(&["dags", "test", "breaks"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("[boom] going down\n"), "{stdout}");
}

// --- 9. pause ---------------------------------------------------------------------------------

#[test]
fn pause_holds_a_dags_runs_and_unpause_resumes_them() {
    let world = World::new();
    let daily = r#"
version: 1
schedule: "@daily"
start_date: 2024-01-01
end_date: 2024-01-03
catchup: true
tasks:
  hello:
    run: echo "hello {{ ds }}"
"#;
    world.dag("held", daily);
    // The same DAG unpaused: once its runs are done, the scheduler has passed over `held`
    // several times.
    world.dag("free", daily);
    world.ok(&["dags", "pause", "held"]);
    // A manual run of a paused DAG is created but does not start.
    let manual = world.ok(&["dags", "trigger", "held"]);
    let manual = manual.trim();

    let standalone = world.standalone();
    world.wait_for_finished_runs(&standalone, "free", 3);
    let_the_scheduler_run(Duration::from_secs(1));
    let runs = world.runs("held");
    assert_eq!(runs.len(), 1, "only the manual run: {runs:?}");
    assert_eq!(runs[0]["run_id"], manual);
    assert_eq!(runs[0]["state"], "queued");

    world.ok(&["dags", "unpause", "held"]);
    let runs = world.wait_for_finished_runs(&standalone, "held", 4);
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert!(runs.iter().all(|run| run["state"] == "success"), "{runs:?}");
    let scheduled = runs
        .iter()
        .filter(|run| run["run_type"] == "scheduled")
        .count();
    assert_eq!(scheduled, 3, "{runs:?}");

    // Paused while a run runs: its running try finishes, its next task waits for unpause.
    world.dag(
        "chain",
        r#"
version: 1
env:
  WORK: "@WORK@"
tasks:
  first:
    run: |
      touch "$WORK/first.started"
      for i in $(seq 100); do [ -e "$WORK/release" ] && exit 0; sleep 0.1; done; exit 1
  second:
    depends_on: first
    run: echo second
"#,
    );
    let run_id = world.ok(&["dags", "trigger", "chain"]);
    let run_id = run_id.trim();
    wait_for_file(&world, "first.started", &standalone);
    world.ok(&["dags", "pause", "chain"]);
    std::fs::write(world.work.join("release"), "").unwrap();
    let started = Instant::now();
    loop {
        let states = task_states(&world.show("chain", run_id));
        if state_of(&states, "first") == "success" {
            break;
        }
        assert!(started.elapsed() < RUN_DEADLINE, "{states:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let_the_scheduler_run(Duration::from_secs(1));
    let show = world.show("chain", run_id);
    assert_eq!(show["state"], "running");
    assert_eq!(state_of(&task_states(&show), "second"), "none", "{show}");
    world.ok(&["dags", "unpause", "chain"]);
    let runs = world.wait_for_finished_runs(&standalone, "chain", 1);
    assert_eq!(runs[0]["state"], "success", "{runs:?}");
}

/// Waits until the work file `name` exists.
fn wait_for_file(world: &World, name: &str, standalone: &Running) {
    let started = Instant::now();
    while !world.work.join(name).exists() {
        assert!(
            started.elapsed() < RUN_DEADLINE,
            "no {name}\n{}",
            standalone.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `logical_date` of a `runs list --json` row.
fn logical_date(run: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(run["logical_date"].as_str().unwrap())
        .unwrap()
        .to_utc()
}

#[test]
fn pause_stops_a_live_schedule_and_unpause_resumes_without_catchup() {
    let world = World::new();
    world.dag(
        "ticking",
        r#"
version: 1
schedule:
  every: 1s
start_date: 2024-01-01
catchup: false
tasks:
  tick:
    run: echo "tick {{ ts }}"
"#,
    );
    let standalone = world.standalone();
    let ticks = |runs: &[Value]| -> Vec<String> {
        runs.iter()
            .map(|run| run["run_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let started = Instant::now();
    while world.runs_so_far("ticking").len() < 2 {
        assert!(
            started.elapsed() < RUN_DEADLINE,
            "no runs of an every-1s DAG\n{}",
            standalone.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    world.ok(&["dags", "pause", "ticking"]);
    // A scheduler pass that began before the pause may still add its run.
    let_the_scheduler_run(Duration::from_millis(500));
    let before = ticks(&world.runs("ticking"));
    let_the_scheduler_run(Duration::from_secs(2));
    assert_eq!(
        ticks(&world.runs("ticking")),
        before,
        "runs were created while paused"
    );

    let unpaused_at = chrono::Utc::now();
    world.ok(&["dags", "unpause", "ticking"]);
    let runs = world.wait_for_finished_runs(&standalone, "ticking", before.len() + 1);
    let new: Vec<&Value> = runs
        .iter()
        .filter(|run| !before.contains(&run["run_id"].as_str().unwrap().to_owned()))
        .collect();
    assert!(!new.is_empty());
    // Without catch-up the intervals missed while paused are not made up for: the first new
    // run is the latest complete interval at unpause time, [floor(t) - 1s, floor(t)).
    for run in &new {
        assert!(
            logical_date(run) >= unpaused_at - chrono::Duration::seconds(2),
            "a run for an interval missed while paused: {run}"
        );
        assert_eq!(run["state"], "success", "{run}");
    }
}

// --- 10. Postgres -----------------------------------------------------------------------------

#[test]
fn catchup_and_a_manual_run_on_postgres() {
    use updraft_metadata::Backend;
    use updraft_metadata::testing::{TestDatabase, backends};

    // Only locally with UPDRAFT_TEST_POSTGRES=skip; under CI=true `backends()` always has
    // Postgres, and an unreachable server fails `TestDatabase::new` with instructions.
    if !backends().contains(&Backend::Postgres) {
        eprintln!("skipped: UPDRAFT_TEST_POSTGRES=skip");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let database = runtime.block_on(TestDatabase::new(Backend::Postgres));
    let mut world = World::new();
    world.database_url = Some(database.url().to_owned());

    // Every process refuses an unmigrated Postgres database; migrate it first.
    world.ok(&["db", "migrate"]);
    world.ok(&["pools", "set", "one", "1"]);
    // Catch-up, outputs and templates, a pool shared by the runs, and a retry: the queries
    // that differ between the backends (queueing within limits, claims, ending tries).
    world.dag(
        "pg_daily",
        &format!(
            r#"
version: 1
schedule: "@daily"
start_date: 2024-01-01
end_date: 2024-01-05
catchup: true
env:
  WORK: "@WORK@"
tasks:
  extract:
    outputs: [rows]
    run: echo "extract {{{{ ds }}}}"; echo rows=7 >> "$UPDRAFT_OUTPUT"
  load:
    depends_on: extract
    pool: one
    run: echo "load {{{{ ds }}}} rows {{{{ outputs.extract.rows }}}}"; {}
  flaky:
    depends_on: extract
    retries: 1
    retry_delay: 1s
    run: echo "flaky try $UPDRAFT_TRY_NUMBER"; [ "$UPDRAFT_TRY_NUMBER" -ge 2 ]
"#,
            stamped_sleep("{{ ds }}.load")
        ),
    );
    let standalone = world.standalone();
    let runs = world.wait_for_finished_runs(&standalone, "pg_daily", 5);
    let days = [
        "2024-01-01",
        "2024-01-02",
        "2024-01-03",
        "2024-01-04",
        "2024-01-05",
    ];
    let dates: Vec<&str> = runs
        .iter()
        .map(|run| run["logical_date"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = days.iter().map(|day| format!("{day}T00:00:00Z")).collect();
    assert_eq!(dates, expected);
    for run in &runs {
        assert_eq!(run["state"], "success", "{run}\n{}", standalone.stderr());
        let run_id = run["run_id"].as_str().unwrap();
        let states = task_states(&world.show("pg_daily", run_id));
        assert_eq!(states["extract"], ("success".to_owned(), 1), "{run_id}");
        assert_eq!(states["load"], ("success".to_owned(), 1), "{run_id}");
        assert_eq!(states["flaky"], ("success".to_owned(), 2), "{run_id}");
    }
    // (Each command opens the database, a few tenths of a second on Postgres in a debug
    // build: the logs of one run stand for the others.)
    let run_id = runs[2]["run_id"].as_str().unwrap();
    let log = world.log("pg_daily", run_id, "load", 1);
    assert!(log.contains("load 2024-01-03 rows 7\n"), "{log}");
    let log = world.log("pg_daily", run_id, "flaky", 1);
    assert!(log.contains("flaky try 1\n"), "{log}");
    // The pool's one slot is shared by the five runs.
    let loads: Vec<(f64, f64)> = days
        .iter()
        .map(|day| interval(&world, &format!("{day}.load")))
        .collect();
    assert_eq!(max_overlap(&loads), 1, "{loads:?}");

    let (run_id, code) = world.trigger_wait("pg_daily", &["--logical-date", "2024-06-01"]);
    assert_eq!(code, 0, "{}", standalone.stderr());
    let states = task_states(&world.show("pg_daily", &run_id));
    assert_eq!(states["load"], ("success".to_owned(), 1));
    let log = world.log("pg_daily", &run_id, "load", 1);
    assert!(log.contains("load 2024-06-01 rows 7\n"), "{log}");

    let_the_scheduler_run(Duration::from_secs(1));
    assert_eq!(world.runs("pg_daily").len(), 6);
    drop(standalone);
    drop(database);
}
