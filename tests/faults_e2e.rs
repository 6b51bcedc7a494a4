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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Running, run, updraft, wait_for};
use serde_json::Value;

/// How long a test waits for its runs to end after the last fault.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// The command of every task here: `sh "$WORK/task.sh" SECONDS`. It appends to
/// `$WORK/ti/<run id>/<task id>`:
/// - `alive TRY PID STATE` for each process of an earlier try of this task instance that still
///   runs as this try starts (a zombie process, dead but not reaped, does not count);
/// - `start TRY SHELL_PID SLEEP_PID TIME`, then sleeps SECONDS;
/// - `end TRY TIME` when the sleep ended by itself.
///
/// It writes nothing to stdout: a try whose worker died must not die of SIGPIPE.
const TASK_SH: &str = r#"dir="$WORK/ti/$UPDRAFT_RUN_ID"
mkdir -p "$dir"
f="$dir/$UPDRAFT_TASK_ID"
if [ -f "$f" ]; then
  awk '$1 == "start" { print $2, $3; print $2, $4 }' "$f" | while read -r try pid; do
    state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d ' ' -f 1)
    case "$state" in ''|Z|X) continue ;; esac
    # The pid may have been reused: it is that try's process only with that try's environment.
    same=$(tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -cxF \
      -e "WORK=$WORK" -e "UPDRAFT_RUN_ID=$UPDRAFT_RUN_ID" \
      -e "UPDRAFT_TASK_ID=$UPDRAFT_TASK_ID" -e "UPDRAFT_TRY_NUMBER=$try")
    if [ "$same" = 4 ]; then
      echo "alive $UPDRAFT_TRY_NUMBER $pid $state" >> "$f"
    fi
  done
fi
sleep "$1" &
echo "start $UPDRAFT_TRY_NUMBER $$ $! $(date +%s.%N)" >> "$f"
wait $!
echo "end $UPDRAFT_TRY_NUMBER $(date +%s.%N)" >> "$f"
"#;

/// One test's world: an Updraft home, a DAGs folder, a work folder the tasks write to, and the
/// database URL when it is not the home's SQLite file.
struct World {
    root: tempfile::TempDir,
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
        std::fs::write(work.join("task.sh"), TASK_SH).expect("write task.sh");
        World {
            root,
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
    fn command(&self, args: &[&str]) -> Command {
        let mut command = updraft(&self.home);
        command.arg("--dags-folder").arg(&self.dags);
        if let Some(url) = &self.database_url {
            command.arg("--database-url").arg(url);
        }
        command.args(args);
        command
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = run(self.command(args));
        assert_eq!(
            code, 0,
            "updraft {args:?} failed\nstdout: {stdout}\nstderr: {stderr}"
        );
        stdout
    }

    /// A long-running command (`standalone`, `scheduler`, `worker`), its stderr in
    /// `<root>/<name>.stderr` (one file per life, so a killed life's stderr stays readable),
    /// logging at info. `banner` is how many stdout lines it prints when started.
    fn start(&self, name: &str, args: &[&str], banner: usize) -> Running {
        let mut command = self.command(args);
        command.env("UPDRAFT_LOG", "info");
        Running::start(
            command,
            &self.root.path().join(format!("{name}.stderr")),
            banner,
        )
    }

    fn standalone(&self, name: &str, args: &[&str]) -> Running {
        let mut all = vec!["standalone", "--port", "0"];
        all.extend(args);
        self.start(name, &all, 5)
    }

    /// A DAG's runs, oldest first; none while the scheduler has not synced the DAG yet.
    fn runs(&self, dag_id: &str) -> Vec<Value> {
        let (code, stdout, stderr) =
            run(self.command(&["runs", "list", dag_id, "--json", "--limit", "100"]));
        if code != 0 && stderr.contains(&format!("no DAG \"{dag_id}\" in the database")) {
            return Vec::new();
        }
        assert_eq!(code, 0, "runs list {dag_id}: {stderr}");
        let mut runs: Vec<Value> = serde_json::from_str(&stdout).expect("runs list --json");
        runs.reverse();
        runs
    }

    /// Task id -> (state, try_number) of one run, from `runs show --json`.
    fn task_states(&self, dag_id: &str, run_id: &str) -> BTreeMap<String, (String, i64)> {
        let show: Value =
            serde_json::from_str(&self.ok(&["runs", "show", dag_id, run_id, "--json"]))
                .expect("runs show --json");
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

    /// The task instances of `dag_id` that the database says are running: (run, task, try).
    fn running(&self, dag_id: &str) -> Vec<(String, String, i64)> {
        let mut running = Vec::new();
        for run in self.runs(dag_id) {
            let run_id = run["run_id"].as_str().unwrap();
            for (task_id, (state, try_number)) in self.task_states(dag_id, run_id) {
                if state == "running" {
                    running.push((run_id.to_owned(), task_id, try_number));
                }
            }
        }
        running
    }

    /// `tasks logs DAG RUN TASK --try N`.
    fn log(&self, dag_id: &str, run_id: &str, task_id: &str, try_number: i64) -> String {
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

    /// Waits until `dag_id` has `count` runs, all finished; returns them oldest first. On a
    /// timeout, says what the runs and `processes` were doing.
    fn finished_runs(&self, dag_id: &str, count: usize, processes: &[&Running]) -> Vec<Value> {
        let start = Instant::now();
        let mut last = Vec::new();
        while start.elapsed() < RUN_DEADLINE {
            last = self.runs(dag_id);
            let finished = last
                .iter()
                .all(|run| matches!(run["state"].as_str(), Some("success" | "failed")));
            if last.len() >= count && finished {
                return last;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let stderr: Vec<String> = processes.iter().map(|p| p.stderr()).collect();
        panic!(
            "timed out waiting for {count} finished runs of {dag_id}; runs: {}\nstderr:\n{}",
            serde_json::to_string_pretty(&last).unwrap(),
            stderr.join("\n---\n")
        );
    }

    /// What the task instances' commands recorded, by (run id, task id).
    fn records(&self) -> BTreeMap<(String, String), Record> {
        let mut records = BTreeMap::new();
        let Ok(runs) = std::fs::read_dir(self.work.join("ti")) else {
            return records;
        };
        for run in runs {
            let run = run.unwrap();
            for task in std::fs::read_dir(run.path()).unwrap() {
                let task = task.unwrap();
                let text = std::fs::read_to_string(task.path()).unwrap();
                let key = (
                    run.file_name().into_string().unwrap(),
                    task.file_name().into_string().unwrap(),
                );
                records.insert(key, Record::parse(&text));
            }
        }
        records
    }

    fn record(&self, run_id: &str, task_id: &str) -> Option<Record> {
        self.records()
            .remove(&(run_id.to_owned(), task_id.to_owned()))
    }
}

/// A store on the world's SQLite file.
async fn sqlite_store(world: &World) -> updraft_metadata::Store {
    updraft_metadata::Store::open(&format!(
        "sqlite:{}",
        world.home.join("updraft.db").display()
    ))
    .await
    .unwrap()
}

/// What one task instance's tries recorded (see [`TASK_SH`]).
#[derive(Debug, Clone, Default)]
struct Record {
    /// In the order they started.
    tries: Vec<TryRecord>,
    /// `alive` lines: a process of an earlier try ran when a later one started.
    alive: Vec<String>,
    text: String,
}

#[derive(Debug, Clone)]
struct TryRecord {
    number: i64,
    /// The shell's and its `sleep`'s.
    pids: [u32; 2],
    start: f64,
    /// `None` when the try was killed before its sleep ended.
    end: Option<f64>,
}

impl Record {
    fn parse(text: &str) -> Record {
        let mut record = Record {
            text: text.to_owned(),
            ..Record::default()
        };
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["start", number, shell, sleep, at] => record.tries.push(TryRecord {
                    number: number.parse().unwrap(),
                    pids: [shell.parse().unwrap(), sleep.parse().unwrap()],
                    start: at.parse().unwrap(),
                    end: None,
                }),
                ["end", number, at] => {
                    let number: i64 = number.parse().unwrap();
                    let try_ = record
                        .tries
                        .iter_mut()
                        .rfind(|t| t.number == number)
                        .unwrap_or_else(|| panic!("an end without a start: {text}"));
                    assert!(try_.end.is_none(), "try {number} ended twice: {text}");
                    try_.end = Some(at.parse().unwrap());
                }
                ["alive", ..] => record.alive.push(line.to_owned()),
                _ => panic!("unexpected line {line:?} in:\n{text}"),
            }
        }
        record
    }

    fn try_(&self, number: i64) -> Option<&TryRecord> {
        self.tries.iter().find(|t| t.number == number)
    }

    /// The tries of this task instance ran one at a time: each started once, in order of try
    /// number, after every process of the earlier tries was gone; the last one ran to its end.
    fn assert_one_try_at_a_time(&self, what: &str) {
        assert!(
            self.alive.is_empty(),
            "{what}: a process of an earlier try still ran when a later try started:\n{}",
            self.text
        );
        for pair in self.tries.windows(2) {
            let (earlier, later) = (&pair[0], &pair[1]);
            assert!(
                earlier.number < later.number && earlier.start < later.start,
                "{what}: tries out of order or started twice:\n{}",
                self.text
            );
            if let Some(end) = earlier.end {
                assert!(
                    end <= later.start,
                    "{what}: try {} ran until {end}, after try {} started at {}:\n{}",
                    earlier.number,
                    later.number,
                    later.start,
                    self.text
                );
            }
        }
        let last = self
            .tries
            .last()
            .unwrap_or_else(|| panic!("{what}: no try"));
        assert!(
            last.end.is_some(),
            "{what}: the last try did not finish:\n{}",
            self.text
        );
    }
}

impl World {
    /// Whether a process of try `number` of the task instance (run, task) still runs: `pid`
    /// exists, is not a zombie waiting to be reaped, and has that try's environment (a pid
    /// alone may have been reused).
    fn try_process_runs(&self, run_id: &str, task_id: &str, number: i64, pid: u32) -> bool {
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
            format!("WORK={}", self.work.display()),
            format!("UPDRAFT_RUN_ID={run_id}"),
            format!("UPDRAFT_TASK_ID={task_id}"),
            format!("UPDRAFT_TRY_NUMBER={number}"),
        ]
        .iter()
        .all(|wanted| environ.contains(&wanted.as_bytes()))
    }
}

/// Lets the scheduler make several more passes before a test checks that something did NOT
/// happen (no run created twice): a negative needs time to show.
fn let_the_scheduler_run(duration: Duration) {
    std::thread::sleep(duration);
}

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

/// Waits until a try of task `task_id` (of any run) has started and not ended; returns its
/// (run id, try).
fn started(world: &World, task_id: &str, processes: &[&Running]) -> (String, TryRecord) {
    let (run, _, try_) = started_any(world, &[task_id], processes);
    (run, try_)
}

/// Waits until a try of one of `task_ids` (of any run) has started and not ended; returns its
/// (run id, task id, try).
fn started_any(
    world: &World,
    task_ids: &[&str],
    processes: &[&Running],
) -> (String, String, TryRecord) {
    let start = Instant::now();
    loop {
        let found = world
            .records()
            .into_iter()
            .find_map(|((run, task), record)| {
                let last = record.tries.last()?;
                (task_ids.contains(&task.as_str()) && last.end.is_none())
                    .then(|| (run, task, last.clone()))
            });
        if let Some(found) = found {
            return found;
        }
        if start.elapsed() > RUN_DEADLINE {
            let stderr: Vec<String> = processes.iter().map(|p| p.stderr()).collect();
            panic!(
                "no try of {task_ids:?} started\nstderr:\n{}",
                stderr.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
    // in that try's log, and a new try ran.
    for (run_id, task_id, try_number) in &leftovers {
        let states = world.task_states("chain", run_id);
        let (state, now) = &states[task_id];
        assert_eq!(state, "success", "{run_id} {task_id}");
        assert!(
            *now > *try_number,
            "{run_id} {task_id}: try {try_number} was left running, yet try_number is {now}"
        );
        let log = world.log("chain", run_id, task_id, *try_number);
        assert!(
            log.contains("restarted while this try ran; it is ended as a zombie"),
            "{run_id} {task_id} try {try_number}: {log}"
        );
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
    for (_, task_id, try_number) in &leftovers {
        assert_eq!(states[task_id], ("success".to_owned(), try_number + 1));
    }
    for ((run_id, task_id), record) in world.records() {
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
    let world = World::new();
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
    let world = World::new();
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

    // Each try of w1 is a zombie, says its log; a retry ran on w2 where one was left.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(sqlite_store(&world));
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

// --- 3. Postgres stopped under the processes ---------------------------------------------------

/// A Postgres server of the test's own: a cluster in a temporary folder (its socket there too)
/// on a free port, run as the `postgres` OS user when the test runs as root. Stopped when
/// dropped, also when the test panics. The shared server on 5432 is never touched.
struct Postgres {
    /// Owned by the server's OS user; holds `data/`, the socket and `postgres.log`.
    root: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The uid to run the server's programs as (through `runuser`), when not our own.
    as_postgres: bool,
}

impl Postgres {
    /// Creates and starts the cluster. `None` only when the test may be skipped: locally with
    /// `UPDRAFT_TEST_POSTGRES=skip` (the rule of `updraft_metadata::testing`); otherwise a
    /// missing `initdb` fails the test, and under `CI=true` always.
    fn start() -> Option<Postgres> {
        use updraft_metadata::Backend;
        use updraft_metadata::testing::backends;
        if !backends().contains(&Backend::Postgres) {
            eprintln!("skipped: UPDRAFT_TEST_POSTGRES=skip (not under CI)");
            return None;
        }
        let bin = postgres_bin().unwrap_or_else(|| {
            panic!(
                "this test runs a Postgres server of its own and needs initdb and pg_ctl in \
                 /usr/lib/postgresql/<version>/bin (Debian: apt-get install postgresql); none \
                 found. Locally, UPDRAFT_TEST_POSTGRES=skip leaves the Postgres tests out \
                 (ignored when CI=true)."
            )
        });
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let root = tempfile::tempdir().expect("a temporary folder for Postgres");
        if as_postgres {
            let id = |flag: &str| -> u32 {
                let output = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .expect("id runs");
                assert!(
                    output.status.success(),
                    "running as root, this test runs Postgres as the OS user postgres, which \
                     does not exist: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                String::from_utf8(output.stdout)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            };
            std::os::unix::fs::chown(root.path(), Some(id("-u")), Some(id("-g")))
                .expect("give the cluster's folder to postgres");
        }
        let mut postgres = Postgres {
            root,
            bin,
            port: 0,
            as_postgres,
        };
        let data = postgres.data();
        let data = data.to_str().unwrap();
        postgres.ok(
            "initdb",
            &["-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        // Another process may take the free port before the server binds it: try a few.
        for _ in 0..5 {
            postgres.port = free_port();
            if postgres.pg_ctl_start() {
                return Some(postgres);
            }
        }
        panic!("Postgres did not start:\n{}", postgres.log());
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("postgres.log")).unwrap_or_default()
    }

    /// One of the server's programs, as its OS user, in the cluster's folder.
    fn program(&self, name: &str, args: &[&str]) -> Command {
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join(name));
            command
        } else {
            Command::new(self.bin.join(name))
        };
        command.args(args).current_dir(self.root.path());
        command
    }

    fn ok(&self, name: &str, args: &[&str]) {
        let output = self
            .program(name, args)
            .output()
            .expect("a Postgres program runs");
        assert!(
            output.status.success(),
            "{name} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }

    /// Starts the server on `self.port`; false when it did not start.
    fn pg_ctl_start(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.root.path().display()
        );
        let log = self.root.path().join("postgres.log");
        let data = self.data();
        self.program(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .output()
        .expect("pg_ctl runs")
        .status
        .success()
    }

    fn start_again(&self) {
        assert!(
            self.pg_ctl_start(),
            "Postgres did not start again on port {}:\n{}",
            self.port,
            self.log()
        );
    }

    fn stop(&self, mode: &str) -> bool {
        let data = self.data();
        self.program(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", mode, "-w", "stop"],
        )
        .output()
        .is_ok_and(|output| output.status.success())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fails harmlessly when the server is not running.
        self.stop("immediate");
    }
}

/// The folder of the newest installed `initdb` and `pg_ctl`.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A TCP port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

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

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
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
