//! Backfills end to end (issue 4): the real `updraft` binary on real SQLite files, with an
//! `updraft standalone` scheduler where a test needs one, and without (the command then runs
//! the backfill itself). State is read through the CLI's `--json` outputs (`backfills show`,
//! `backfills list`, `runs list`, `runs show`); what the tasks did, from files they wrote.
//!
//! Each test has its own home (database), DAGs folder and work folder, so they run in
//! parallel.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use common::{Running, run, updraft, wait_for};
use serde_json::Value;

/// How long a test waits for a backfill to end before it fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// One test's world: an Updraft home, a DAGs folder and a folder the tasks write to.
struct World {
    _root: tempfile::TempDir,
    home: PathBuf,
    dags: PathBuf,
    work: PathBuf,
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
        }
    }

    /// Writes `dags/<id>.yaml`, with `@WORK@` replaced by the work folder's path.
    fn dag(&self, id: &str, yaml: &str) {
        let yaml = yaml.replace("@WORK@", &self.work.display().to_string());
        std::fs::write(self.dags.join(format!("{id}.yaml")), yaml).expect("write a DAG file");
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = updraft(&self.home);
        command.arg("--dags-folder").arg(&self.dags).args(args);
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

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("--json output")
    }

    fn standalone(&self) -> Running {
        Running::standalone(&self.home, &self.dags, &[], &[])
    }

    /// Waits until the standalone scheduler has synced `dag_id`: it has heartbeaten by then
    /// (a tick heartbeats before it syncs), so a backfill sees a live scheduler.
    fn wait_for_sync(&self, standalone: &Running, dag_id: &str) {
        let start = Instant::now();
        loop {
            let (code, _, _) = self.cli(&["runs", "list", dag_id, "--json"]);
            if code == 0 {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the scheduler did not sync {dag_id}: {}",
                standalone.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `backfills show ID --json`.
    fn backfill(&self, id: i64) -> Value {
        self.json(&["backfills", "show", &id.to_string(), "--json"])
    }

    /// Waits until backfill `id` is in `state` with no run running, and (unless paused, when
    /// they wait) none queued.
    fn wait_for_backfill(&self, id: i64, state: &str) -> Value {
        let mut last = Value::Null;
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            last = self.backfill(id);
            let progress = &last["progress"];
            let idle = progress["running"] == 0 && (state == "paused" || progress["queued"] == 0);
            if last["state"] == state && idle {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("backfill {id} did not end {state}: {last:#}");
    }

    /// `runs list ID --json`, oldest first.
    fn runs(&self, dag_id: &str) -> Vec<Value> {
        let mut runs: Vec<Value> =
            serde_json::from_str(&self.ok(&["runs", "list", dag_id, "--json", "--limit", "1000"]))
                .expect("runs list --json");
        runs.reverse();
        runs
    }

    /// Starts `updraft ARGS` in the background, its output into files.
    fn spawn(&self, name: &str, args: &[&str]) -> Background {
        let stdout = self.work.join(format!("{name}.stdout"));
        let stderr = self.work.join(format!("{name}.stderr"));
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("updraft starts");
        Background {
            child,
            stdout,
            stderr,
        }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.work.join(name))
            .unwrap_or_else(|error| panic!("reading work file {name}: {error}"))
    }
}

/// An `updraft` command running in the background; killed when dropped.
struct Background {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            read_or_empty(&self.stdout),
            read_or_empty(&self.stderr)
        )
    }

    /// Waits until its stdout contains `text`.
    fn wait_for_output(&self, text: &str) {
        let start = Instant::now();
        while !read_or_empty(&self.stdout).contains(text) {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {text:?}\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for it to exit; returns its exit code.
    fn wait(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().expect("exited, not killed");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "updraft did not exit\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to clean up.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The backfill id in "backfill N created".
fn backfill_id(stdout: &str) -> i64 {
    stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("backfill ")?
                .split_once(" created")?
                .0
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no backfill id in:\n{stdout}"))
}

fn strs<'a>(values: &'a [Value], key: &str) -> Vec<&'a str> {
    values
        .iter()
        .map(|value| {
            value[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key}: {value}"))
        })
        .collect()
}

/// `YYYY-MM-DDT00:00:00Z` of 2024-01-`day`.
fn midnight(day: u32) -> String {
    format!("2024-01-{day:02}T00:00:00Z")
}

/// A daily DAG whose first task records what it ran for in `<ds>.txt`.
const RECORDING_DAILY: &str = r#"
version: 1
schedule: "@daily"
start_date: 2024-01-01
params:
  region: eu
tasks:
  extract:
    run: echo "$UPDRAFT_RUN_TYPE $UPDRAFT_DATA_INTERVAL_START $UPDRAFT_DATA_INTERVAL_END {{ params.region }}" > "@WORK@/$UPDRAFT_DS.txt"
  load:
    depends_on: extract
    run: "true"
"#;

// --- the 30-day backfill -------------------------------------------------------------------

#[test]
fn a_30_day_backfill_makes_30_successful_runs_with_the_right_data_intervals() {
    let world = World::new();
    world.dag("daily", RECORDING_DAILY);
    let (code, stdout, stderr) = world.cli(&[
        "dags",
        "backfill",
        "daily",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-30",
        "--conf",
        r#"{"region": "us"}"#,
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    // No scheduler runs: the command says it runs the backfill itself.
    assert!(
        stdout.contains(
            "no scheduler is running (no heartbeat ever): running the backfill in this process"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("create 30, re-run 0, skip 0"), "{stdout}");
    // Without a terminal: one line per finished run, then the summary.
    let finished: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("run backfill__"))
        .collect();
    assert_eq!(finished.len(), 30, "{stdout}");
    assert!(finished.iter().all(|line| line.contains(" success in ")));
    assert!(finished[29].ends_with("(30/30)"), "{}", finished[29]);
    assert!(
        stdout.contains("backfill 1 completed in") && stdout.contains(": 30 run(s) succeeded"),
        "{stdout}"
    );

    let runs = world.runs("daily");
    assert_eq!(runs.len(), 30, "exactly 30 runs: {runs:#?}");
    for (run, day) in runs.iter().zip(1..) {
        assert_eq!(run["run_type"], "backfill");
        assert_eq!(run["state"], "success");
        assert_eq!(
            run["run_id"],
            format!("backfill__2024-01-{day:02}T00:00:00+00:00")
        );
        assert_eq!(run["logical_date"], midnight(day));
        assert_eq!(run["data_interval_start"], midnight(day));
        let end = NaiveDate::from_ymd_opt(2024, 1, day).unwrap() + Days::new(1);
        assert_eq!(
            run["data_interval_end"],
            format!("{}T00:00:00Z", end.format("%Y-%m-%d"))
        );
        // The task saw the same interval, and the backfill's conf.
        let recorded = world.read(&format!("2024-01-{day:02}.txt"));
        assert_eq!(
            recorded.trim(),
            format!(
                "backfill 2024-01-{day:02}T00:00:00+00:00 {}T00:00:00+00:00 us",
                end.format("%Y-%m-%d")
            )
        );
    }
    let backfill = world.backfill(1);
    assert_eq!(backfill["state"], "completed");
    assert_eq!(backfill["dag_id"], "daily");
    assert_eq!(backfill["from_date"], midnight(1));
    assert_eq!(backfill["to_date"], midnight(30));
    assert_eq!(backfill["options"]["reprocess"], "none");
    assert_eq!(backfill["options"]["conf"]["region"], "us");
    assert_eq!(backfill["progress"]["success"], 30);
    assert_eq!(backfill["progress"]["tasks_done"], 60);
    assert!(backfill["completed_at"].is_string());
    let list = world.json(&["backfills", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], 1);
}

// --- --reprocess ---------------------------------------------------------------------------

/// Runs `dags backfill flaky` over January 1st to 3rd with `extra` arguments.
fn backfill_flaky(world: &World, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "dags",
        "backfill",
        "flaky",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-03",
    ];
    args.extend(extra);
    world.cli(&args)
}

/// Task id -> try number of one run.
fn tries(world: &World, run_id: &str) -> Vec<(String, i64)> {
    let show = world.json(&["runs", "show", "flaky", run_id, "--json"]);
    show["task_instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ti| {
            (
                ti["task_id"].as_str().unwrap().to_owned(),
                ti["try_number"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn reprocess_none_skips_failed_re_runs_failed_and_all_re_runs_everything() {
    let world = World::new();
    // January 2nd fails until the file `fixed` exists.
    world.dag(
        "flaky",
        r#"
version: 1
schedule: "@daily"
start_date: 2024-01-01
tasks:
  work:
    run: test "{{ ds }}" != 2024-01-02 || test -f "@WORK@/fixed"
"#,
    );
    let day2 = "backfill__2024-01-02T00:00:00+00:00";

    let (code, stdout, stderr) = backfill_flaky(&world, &[]);
    assert_eq!(
        code, 1,
        "a failed run exits 1\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains(
            "2 run(s) succeeded, 1 failed:\n  flaky backfill__2024-01-02T00:00:00+00:00\n"
        ),
        "the failed runs are listed: {stdout}"
    );

    // none: every date has a run, so nothing to do.
    let (code, stdout, _) = backfill_flaky(&world, &["--reprocess", "none"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("create 0, re-run 0, skip 3"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "skip 2024-01-02T00:00:00Z: run {day2} failed (--reprocess failed re-runs it)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("nothing to backfill: every interval is skipped"),
        "{stdout}"
    );
    assert_eq!(
        world
            .json(&["backfills", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // failed: only the failed date runs again, cleared (its next try is 2).
    std::fs::write(world.work.join("fixed"), "").unwrap();
    let (code, stdout, stderr) = backfill_flaky(&world, &["--reprocess", "failed"]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("create 0, re-run 1, skip 2"), "{stdout}");
    assert!(
        stdout.contains("backfill 2 created: 0 new run(s), 1 re-run(s)"),
        "{stdout}"
    );
    let runs = world.runs("flaky");
    assert_eq!(strs(&runs, "state"), ["success"; 3]);
    assert_eq!(tries(&world, day2), [("work".to_owned(), 2)]);
    assert_eq!(
        tries(&world, "backfill__2024-01-01T00:00:00+00:00"),
        [("work".to_owned(), 1)]
    );
    let second = world.backfill(2);
    assert_eq!(strs(second["runs"].as_array().unwrap(), "run_id"), [day2]);

    // all: every finished date runs again; still one run per date.
    let (code, stdout, stderr) = backfill_flaky(&world, &["--reprocess", "all"]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("create 0, re-run 3, skip 0"), "{stdout}");
    let runs = world.runs("flaky");
    assert_eq!(runs.len(), 3);
    assert_eq!(strs(&runs, "state"), ["success"; 3]);
    assert_eq!(tries(&world, day2), [("work".to_owned(), 3)]);
    assert_eq!(
        tries(&world, "backfill__2024-01-03T00:00:00+00:00"),
        [("work".to_owned(), 2)]
    );
    assert_eq!(world.backfill(3)["progress"]["success"], 3);
}

// --- --dry-run -----------------------------------------------------------------------------

#[test]
fn dry_run_prints_each_decision_and_changes_nothing() {
    let world = World::new();
    world.dag("daily", RECORDING_DAILY);
    world.ok(&[
        "dags",
        "backfill",
        "daily",
        "--from",
        "2024-01-02",
        "--to",
        "2024-01-02",
    ]);
    let before = world.runs("daily");

    let (code, stdout, stderr) = world.cli(&[
        "dags",
        "backfill",
        "daily",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-03",
        "--reprocess",
        "failed",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "stderr: {stderr}");
    let expected = "\
Backfill of DAG daily: 3 interval(s) from 2024-01-01T00:00:00Z to 2024-01-03T00:00:00Z (every day at 00:00 (UTC))
  create 2, re-run 0, skip 1
LOGICAL_DATE          INTERVAL_END          ACTION  WHY
2024-01-01T00:00:00Z  2024-01-02T00:00:00Z  create  no run yet
2024-01-02T00:00:00Z  2024-01-03T00:00:00Z  skip    run backfill__2024-01-02T00:00:00+00:00 succeeded (--reprocess all re-runs it)
2024-01-03T00:00:00Z  2024-01-04T00:00:00Z  create  no run yet
dry run: nothing was changed
";
    assert_eq!(stdout, expected);
    assert_eq!(world.runs("daily"), before, "no run was created or changed");
    let backfills = world.json(&["backfills", "list", "--json"]);
    assert_eq!(
        backfills.as_array().unwrap().len(),
        1,
        "no backfill was created"
    );
}

// --- a killed CLI, cancel, pause and resume, under a standalone scheduler -------------------

/// A daily DAG whose task takes `seconds`.
fn sleepy(seconds: &str) -> String {
    format!(
        "version: 1\nschedule: \"@daily\"\nstart_date: 2024-01-01\ntasks:\n  work:\n    run: \
         sleep {seconds}\n"
    )
}

#[test]
fn a_killed_cli_leaves_the_backfill_to_the_scheduler_which_finishes_it() {
    let world = World::new();
    world.dag("sleepy", &sleepy("0.3"));
    let standalone = world.standalone();
    world.wait_for_sync(&standalone, "sleepy");
    let mut cli = world.spawn(
        "backfill",
        &[
            "dags",
            "backfill",
            "sleepy",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-10",
            "--max-active-runs",
            "2",
        ],
    );
    cli.wait_for_output("the scheduler runs it");
    let id = backfill_id(&read_or_empty(&cli.stdout));
    cli.wait_for_output("run backfill__");
    cli.kill9();
    let backfill = world.wait_for_backfill(id, "completed");
    assert_eq!(backfill["progress"]["success"], 10, "{backfill:#}");
    let runs = backfill["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 10);
    assert_eq!(strs(runs, "state"), ["success"; 10]);
}

#[test]
fn ctrl_c_detaches_and_says_how_to_follow_or_cancel() {
    let world = World::new();
    world.dag("sleepy", &sleepy("0.3"));
    let standalone = world.standalone();
    world.wait_for_sync(&standalone, "sleepy");
    let mut cli = world.spawn(
        "backfill",
        &[
            "dags",
            "backfill",
            "sleepy",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-06",
            "--max-active-runs",
            "1",
        ],
    );
    cli.wait_for_output("the scheduler runs it");
    let id = backfill_id(&read_or_empty(&cli.stdout));
    // SAFETY: kill(2) with our own child's pid and a valid signal number.
    unsafe { libc::kill(cli.child.id() as i32, libc::SIGINT) };
    assert_eq!(cli.wait(), 130, "{}", cli.output());
    let stdout = read_or_empty(&cli.stdout);
    assert!(
        stdout.ends_with(&format!(
            "\ndetached: backfill {id} goes on\n  it runs under the scheduler\n  follow it:  \
             updraft backfills show {id}\n  cancel it:  updraft backfills cancel {id}\n"
        )),
        "{stdout}"
    );
    let backfill = world.wait_for_backfill(id, "completed");
    assert_eq!(backfill["progress"]["success"], 6, "{backfill:#}");
}

#[test]
fn cancel_fails_the_queued_runs_and_lets_the_running_one_finish() {
    let world = World::new();
    world.dag("sleepy", &sleepy("1"));
    let standalone = world.standalone();
    world.wait_for_sync(&standalone, "sleepy");
    let mut cli = world.spawn(
        "backfill",
        &[
            "dags",
            "backfill",
            "sleepy",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-05",
            "--max-active-runs",
            "1",
        ],
    );
    cli.wait_for_output("the scheduler runs it");
    wait_for("the first run to start", DEADLINE, || {
        (world.backfill(1)["progress"]["running"] == 1).then_some(())
    });
    let stdout = world.ok(&["backfills", "cancel", "1"]);
    assert_eq!(
        stdout,
        "backfill 1 cancelled: 4 queued run(s) failed, 1 running run(s) finish\n"
    );
    // The follower sees the end: exit 1, with the failed runs listed.
    assert_eq!(cli.wait(), 1, "{}", cli.output());
    let output = read_or_empty(&cli.stdout);
    assert!(
        output.contains("backfill 1 was cancelled in ")
            && output.contains("1 run(s) succeeded, 4 failed:"),
        "{output}"
    );
    let backfill = world.wait_for_backfill(1, "cancelled");
    let runs = backfill["runs"].as_array().unwrap();
    assert_eq!(
        strs(runs, "state"),
        ["success", "failed", "failed", "failed", "failed"]
    );
    // A finished backfill cannot be cancelled again; an unknown one is bad input.
    let (code, _, stderr) = world.cli(&["backfills", "cancel", "1"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "error: backfill 1 is cancelled: only a running or paused backfill can be cancelled\n"
    );
    let (code, _, stderr) = world.cli(&["backfills", "pause", "7"]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr,
        "error: no backfill 7; see them with `updraft backfills list`\n"
    );
}

#[test]
fn a_paused_backfill_starts_no_run_until_resumed() {
    let world = World::new();
    world.dag("sleepy", &sleepy("0.5"));
    let standalone = world.standalone();
    world.wait_for_sync(&standalone, "sleepy");
    let mut cli = world.spawn(
        "backfill",
        &[
            "dags",
            "backfill",
            "sleepy",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-04",
            "--max-active-runs",
            "1",
        ],
    );
    cli.wait_for_output("the scheduler runs it");
    wait_for("the first run to start", DEADLINE, || {
        (world.backfill(1)["progress"]["running"] == 1).then_some(())
    });
    let stdout = world.ok(&["backfills", "pause", "1"]);
    assert!(stdout.starts_with("backfill 1 paused"), "{stdout}");
    // The running run finishes; nothing else starts.
    let paused = world.wait_for_backfill(1, "paused");
    let started = |backfill: &Value| {
        let progress = &backfill["progress"];
        progress["success"].as_i64().unwrap() + progress["failed"].as_i64().unwrap()
    };
    let done = started(&paused);
    std::thread::sleep(Duration::from_secs(2));
    let still = world.backfill(1);
    assert_eq!(still["state"], "paused");
    assert_eq!(started(&still), done, "{still:#}");
    assert_eq!(still["progress"]["running"], 0);
    assert_eq!(still["progress"]["queued"], 4 - done);

    world.ok(&["backfills", "resume", "1"]);
    assert_eq!(cli.wait(), 0, "{}", cli.output());
    let backfill = world.wait_for_backfill(1, "completed");
    assert_eq!(backfill["progress"]["success"], 4);
    drop(standalone);
}

// --- explicit: paused DAGs, catchup: false; refused: manual-only ----------------------------

#[test]
fn a_paused_dag_and_a_catchup_false_dag_backfill_all_the_same() {
    let world = World::new();
    world.dag("daily", RECORDING_DAILY);
    world.dag(
        "latest_only",
        "version: 1\nschedule: \"@daily\"\nstart_date: 2024-01-01\ncatchup: false\ntasks:\n  \
         t: {run: \"true\"}\n",
    );
    world.ok(&["dags", "pause", "daily"]);
    let (code, stdout, stderr) = world.cli(&[
        "dags",
        "backfill",
        "daily",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-03",
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains(
            "warning: DAG \"daily\" is paused; a backfill is explicit, so its runs run all the same"
        ),
        "{stderr}"
    );
    assert_eq!(strs(&world.runs("daily"), "state"), ["success"; 3]);

    let (code, stdout, stderr) = world.cli(&[
        "dags",
        "backfill",
        "latest_only",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-03",
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let runs = world.runs("latest_only");
    assert_eq!(
        strs(&runs, "logical_date"),
        [midnight(1), midnight(2), midnight(3)]
    );
}

#[test]
fn a_range_outside_start_and_end_date_is_warned_about_not_dropped() {
    let world = World::new();
    world.dag(
        "bounded",
        "version: 1\nschedule: \"@daily\"\nstart_date: 2024-01-02\nend_date: 2024-01-02\ntasks:\n  \
         t: {run: \"true\"}\n",
    );
    let (code, stdout, stderr) = world.cli(&[
        "dags",
        "backfill",
        "bounded",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-03",
    ]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        stderr,
        "warning: 1 of the 3 intervals lie before the DAG's start_date 2024-01-02T00:00:00Z: \
         they are backfilled all the same\nwarning: 1 of the 3 intervals lie after the DAG's \
         end_date 2024-01-02T00:00:00Z: they are backfilled all the same\n"
    );
    assert_eq!(world.runs("bounded").len(), 3);
}

#[test]
fn every_bad_input_gets_a_precise_message_and_exit_2() {
    let world = World::new();
    world.dag("daily", RECORDING_DAILY);
    world.dag("manual", "version: 1\ntasks:\n  t: {run: \"true\"}\n");
    world.dag(
        "minutely",
        "version: 1\nschedule: \"* * * * *\"\nstart_date: 2024-01-01\ntasks:\n  t: {run: \"true\"}\n",
    );
    let cases: &[(&[&str], &str)] = &[
        (
            &["dailly", "--from", "2024-01-01", "--to", "2024-01-02"],
            "error: no DAG \"dailly\" in the database or in DAGS; did you mean \"daily\"?\n",
        ),
        (
            &["manual", "--from", "2024-01-01", "--to", "2024-01-02"],
            "error: DAG \"manual\" has no schedule (manual runs only), so it has no intervals \
             to backfill; create runs with `updraft dags trigger manual --logical-date DATE`\n",
        ),
        (
            &["daily", "--from", "2024-01-05", "--to", "2024-01-01"],
            "error: --from 2024-01-05T00:00:00Z is after --to 2024-01-01T00:00:00Z\n",
        ),
        (
            &["daily", "--from", "2024-01-32", "--to", "2024-02-01"],
            "error: --from: bad date \"2024-01-32\"; write a date (2024-03-01: midnight in the \
             DAG's timezone, UTC) or an RFC 3339 date-time (2024-03-01T06:00:00Z)\n",
        ),
        (
            &["daily", "--from", "2024-01-01", "--to", "soon"],
            "error: --to: bad date \"soon\"; write a date (2024-03-01: midnight in the DAG's \
             timezone, UTC) or an RFC 3339 date-time (2024-03-01T06:00:00Z)\n",
        ),
        (
            &[
                "daily",
                "--from",
                "2024-01-01T06:00:00Z",
                "--to",
                "2024-01-01T18:00:00Z",
            ],
            "error: no run of DAG \"daily\" (every day at 00:00 (UTC)) has a logical date from \
             2024-01-01T06:00:00Z to 2024-01-01T18:00:00Z: the range yields no intervals\n",
        ),
        (
            &["minutely", "--from", "2024-01-01", "--to", "2024-01-08"],
            "error: the range from 2024-01-01T00:00:00Z to 2024-01-08T00:00:00Z yields more \
             than 10000 runs of DAG \"minutely\"; check the dates, or pass --yes to backfill \
             them all\n",
        ),
        (
            &[
                "daily",
                "--from",
                "2024-01-01",
                "--to",
                "2024-01-02",
                "--conf",
                "[1]",
            ],
            "error: invalid value '[1]' for '--conf <CONF>': not a JSON object; write e.g. \
             '{\"region\": \"eu\"}'\n\nFor more information, try '--help'.\n",
        ),
        (
            &[
                "daily",
                "--from",
                "2024-01-01",
                "--to",
                "2024-01-02",
                "--conf",
                "{\"region\": 5}",
            ],
            "error: bad params for DAG \"daily\": param \"region\": expected string, found 5\n",
        ),
    ];
    let dags = world.dags.display().to_string();
    for (args, expected) in cases {
        let mut all = vec!["dags", "backfill"];
        all.extend(*args);
        let (code, stdout, stderr) = world.cli(&all);
        assert_eq!(code, 2, "{args:?}\nstdout: {stdout}\nstderr: {stderr}");
        assert_eq!(stderr, expected.replace("DAGS", &dags), "{args:?}");
        assert_eq!(stdout, "", "{args:?}: nothing is planned");
    }
    // clap's own usage errors exit 2 as well.
    for args in [
        &["daily", "--from", "2024-01-01"][..],
        &[
            "daily",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-02",
            "--reprocess",
            "some",
        ],
        &[
            "daily",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-02",
            "--max-active-runs",
            "0",
        ],
    ] {
        let mut all = vec!["dags", "backfill"];
        all.extend(args);
        let (code, _, stderr) = world.cli(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
    }
    // None of the refused backfills left anything.
    let backfills = world.json(&["backfills", "list", "--json"]);
    assert_eq!(backfills, serde_json::json!([]));
    // With --yes, more than 10,000 runs are allowed (dry run: nothing is run).
    let (code, stdout, stderr) = world.cli(&[
        "dags",
        "backfill",
        "minutely",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-08",
        "--yes",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("create 10081, re-run 0, skip 0"),
        "{}",
        &stdout[..200]
    );
}

// --- scheduled and backfill runs never collide ---------------------------------------------

#[test]
fn scheduled_and_backfill_runs_never_share_a_logical_date() {
    let world = World::new();
    // A catch-up DAG that started 8 days ago: the scheduler owes it 8 runs.
    let today = Utc::now().date_naive();
    let start = today - Days::new(8);
    world.dag(
        "catchup",
        &format!(
            "version: 1\nschedule: \"@daily\"\nstart_date: {start}\ncatchup: true\n\
             max_active_runs: 2\ntasks:\n  t: {{run: \"true\"}}\n"
        ),
    );
    // Before any scheduler: a backfill takes days 3 to 5, ahead of the catch-up.
    let from = (start + Days::new(2)).to_string();
    let to = (start + Days::new(4)).to_string();
    world.ok(&["dags", "backfill", "catchup", "--from", &from, "--to", &to]);

    let standalone = world.standalone();
    let runs = wait_for("8 finished runs", DEADLINE, || {
        let runs = world.runs("catchup");
        let done = runs.len() >= 8
            && runs
                .iter()
                .all(|run| run["state"] == "success" || run["state"] == "failed");
        done.then_some(runs)
    });
    // One run per date, the backfill's days kept, none skipped by the scheduler.
    let dates: Vec<String> = (0..8)
        .map(|day| format!("{}T00:00:00Z", start + Days::new(day)))
        .collect();
    assert_eq!(
        strs(&runs, "logical_date"),
        dates,
        "{}",
        standalone.stderr()
    );
    let types: Vec<&str> = strs(&runs, "run_type");
    assert_eq!(
        types,
        [
            "scheduled",
            "scheduled",
            "backfill",
            "backfill",
            "backfill",
            "scheduled",
            "scheduled",
            "scheduled"
        ]
    );
    assert_eq!(strs(&runs, "state"), ["success"; 8]);

    // And the other way: with the scheduler's runs in place, a backfill skips their dates.
    let from = start.to_string();
    let to = (start + Days::new(7)).to_string();
    let (code, stdout, stderr) =
        world.cli(&["dags", "backfill", "catchup", "--from", &from, "--to", &to]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("create 0, re-run 0, skip 8"), "{stdout}");
    assert_eq!(world.runs("catchup").len(), 8);
}
