//! One end-to-end test's world: an Updraft home, a DAGs folder, a work folder its tasks write
//! to, and the database URL when it is not the home's SQLite file.
//!
//! State is read through the CLI's `--json` outputs (`runs list`, `runs show`) and `tasks logs`.
//! What the tasks did is read from files their command ([`TASK_SH`]) appends to: one file per
//! task instance, a `start` line and an `end` line per try, and an `alive` line when a process of
//! an earlier try of the same task instance is still running as a new try starts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use updraft_core::ids::DagId;
use updraft_metadata::testing::{TestDatabase, backends};
use updraft_metadata::{Backend, EventLog, Store, TaskInstance, TaskTry};

use super::{Running, run, updraft};

/// Runs a future to its end on a runtime of its own (the tests themselves are not async).
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// How long a test waits for its runs to end after the last fault.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// The command of every task here: `sh "$WORK/task.sh" SECONDS`. It appends to
/// `$WORK/ti/<run id>/<task id>`:
/// - `alive TRY PID STATE` for each process of an earlier try of this task instance that still
///   runs as this try starts (a zombie process, dead but not reaped, does not count);
/// - `start TRY SHELL_PID SLEEP_PID TIME`, then sleeps SECONDS;
/// - `end TRY TIME` when the sleep ended by itself.
///
/// It writes nothing to stdout: a try whose worker died must not die of SIGPIPE.
pub const TASK_SH: &str = r#"dir="$WORK/ti/$UPDRAFT_RUN_ID"
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
pub struct World {
    pub root: tempfile::TempDir,
    pub home: PathBuf,
    pub dags: PathBuf,
    pub work: PathBuf,
    pub database_url: Option<String>,
}

impl World {
    pub fn new() -> World {
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

    /// A world on a fresh, migrated database of the shared Postgres server (see
    /// `updraft_metadata::testing`), dropped with the returned guard. `None` only when the
    /// Postgres tests are skipped (locally, `UPDRAFT_TEST_POSTGRES=skip`; never under CI).
    pub fn on_postgres() -> Option<(World, TestDatabase)> {
        if !backends().contains(&Backend::Postgres) {
            eprintln!("skipped: UPDRAFT_TEST_POSTGRES=skip (not under CI)");
            return None;
        }
        let database = block_on(TestDatabase::new(Backend::Postgres));
        let mut world = World::new();
        world.database_url = Some(database.url().to_owned());
        world.ok(&["db", "migrate"]);
        Some((world, database))
    }

    /// Runs `f` with a store on the world's database (closed afterwards), in a runtime of its
    /// own: for what the CLI does not show, or for writes a test makes as the web UI would.
    pub fn with_store<T>(&self, f: impl AsyncFnOnce(&Store) -> T) -> T {
        block_on(async {
            let store = self.store().await;
            let value = f(&store).await;
            store.close().await;
            value
        })
    }

    /// The events named `event` of DAG `dag_id` in the event log, newest first.
    pub fn events(&self, dag_id: &str, event: &str) -> Vec<EventLog> {
        self.with_store(async |store| {
            store
                .list_events(None, 1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| {
                    e.event == event && e.dag_id.as_ref().is_some_and(|d| d.as_str() == dag_id)
                })
                .collect()
        })
    }

    /// The task instances of run `run_id` of `dag_id` by task id, with their tries (oldest
    /// first), read through the store.
    pub fn instances(
        &self,
        dag_id: &str,
        run_id: &str,
    ) -> BTreeMap<String, (TaskInstance, Vec<TaskTry>)> {
        self.with_store(async |store| {
            let dag_id = DagId::parse(dag_id).unwrap();
            let run = store.get_dag_run_by_run_id(&dag_id, run_id).await.unwrap();
            let run = run.unwrap_or_else(|| panic!("run {run_id} of {dag_id} exists"));
            let mut instances = BTreeMap::new();
            for instance in store.list_task_instances(run.id).await.unwrap() {
                let tries = store.list_task_tries(instance.id).await.unwrap();
                instances.insert(instance.task_id.to_string(), (instance, tries));
            }
            instances
        })
    }

    /// Waits until workers `names` are registered and running (`workers list`).
    pub fn workers_running(&self, names: &[&str]) {
        super::wait_for("the workers to register", RUN_DEADLINE, || {
            let listed: Value =
                serde_json::from_str(&self.ok(&["workers", "list", "--json"])).unwrap();
            let running: Vec<&str> = listed
                .as_array()
                .unwrap()
                .iter()
                .filter(|worker| worker["state"] == "running")
                .map(|worker| worker["id"].as_str().unwrap())
                .collect();
            names
                .iter()
                .all(|name| running.contains(name))
                .then_some(())
        })
    }

    /// Triggers a manual run of `dag_id` as soon as the scheduler has synced it; returns its
    /// run id.
    pub fn trigger(&self, dag_id: &str) -> String {
        super::wait_for("the DAG to be synced and triggered", RUN_DEADLINE, || {
            let (code, stdout, _) = run(self.command(&["dags", "trigger", dag_id]));
            (code == 0).then(|| stdout.lines().next().unwrap().trim().to_owned())
        })
    }

    /// Writes `dags/<name>.yaml`, with `@WORK@` replaced by the work folder's path.
    pub fn dag(&self, name: &str, yaml: &str) {
        let yaml = yaml.replace("@WORK@", &self.work.display().to_string());
        std::fs::write(self.dags.join(format!("{name}.yaml")), yaml).expect("write a DAG file");
    }

    /// `updraft` with this world's home, DAGs folder and database.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_on(self.database_url.as_deref(), args)
    }

    /// `updraft` with this world's home and DAGs folder on the database of `url`.
    pub fn command_on(&self, url: Option<&str>, args: &[&str]) -> Command {
        let mut command = updraft(&self.home);
        command.arg("--dags-folder").arg(&self.dags);
        if let Some(url) = url {
            command.arg("--database-url").arg(url);
        }
        command.args(args);
        command
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
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
    pub fn start(&self, name: &str, args: &[&str], banner: usize) -> Running {
        self.start_on(self.database_url.as_deref(), name, args, banner)
    }

    /// [`World::start`] on the database of `url` (through a proxy, say).
    pub fn start_on(&self, url: Option<&str>, name: &str, args: &[&str], banner: usize) -> Running {
        let mut command = self.command_on(url, args);
        command.env("UPDRAFT_LOG", "info");
        Running::start(
            command,
            &self.root.path().join(format!("{name}.stderr")),
            banner,
        )
    }

    pub fn standalone(&self, name: &str, args: &[&str]) -> Running {
        let mut all = vec!["standalone", "--port", "0"];
        all.extend(args);
        self.start(name, &all, 5)
    }

    /// A DAG's runs, oldest first; none while the scheduler has not synced the DAG yet.
    pub fn runs(&self, dag_id: &str) -> Vec<Value> {
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
    pub fn task_states(&self, dag_id: &str, run_id: &str) -> BTreeMap<String, (String, i64)> {
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
    pub fn running(&self, dag_id: &str) -> Vec<(String, String, i64)> {
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
    pub fn log(&self, dag_id: &str, run_id: &str, task_id: &str, try_number: i64) -> String {
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
    pub fn finished_runs(&self, dag_id: &str, count: usize, processes: &[&Running]) -> Vec<Value> {
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
    pub fn records(&self) -> BTreeMap<(String, String), Record> {
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

    /// A store on the world's database: its `--database-url`, else the home's SQLite file.
    pub async fn store(&self) -> Store {
        let url = match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite:{}", self.home.join("updraft.db").display()),
        };
        Store::open(&url).await.unwrap()
    }

    pub fn record(&self, run_id: &str, task_id: &str) -> Option<Record> {
        self.records()
            .remove(&(run_id.to_owned(), task_id.to_owned()))
    }
}

/// What one task instance's tries recorded (see [`TASK_SH`]).
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// In the order they started.
    pub tries: Vec<TryRecord>,
    /// `alive` lines: a process of an earlier try ran when a later one started.
    pub alive: Vec<String>,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct TryRecord {
    pub number: i64,
    /// The shell's and its `sleep`'s.
    pub pids: [u32; 2],
    pub start: f64,
    /// `None` when the try was killed before its sleep ended.
    pub end: Option<f64>,
}

impl Record {
    pub fn parse(text: &str) -> Record {
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

    pub fn try_(&self, number: i64) -> Option<&TryRecord> {
        self.tries.iter().find(|t| t.number == number)
    }

    /// The tries of this task instance ran one at a time: each started once, in order of try
    /// number, after every process of the earlier tries was gone; the last one ran to its end.
    pub fn assert_one_try_at_a_time(&self, what: &str) {
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
    pub fn try_process_runs(&self, run_id: &str, task_id: &str, number: i64, pid: u32) -> bool {
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
pub fn let_the_scheduler_run(duration: Duration) {
    std::thread::sleep(duration);
}

/// Waits until a try of task `task_id` (of any run) has started and not ended; returns its
/// (run id, try).
pub fn started(world: &World, task_id: &str, processes: &[&Running]) -> (String, TryRecord) {
    let (run, _, try_) = started_any(world, &[task_id], processes);
    (run, try_)
}

/// Waits until a try of one of `task_ids` (of any run) has started and not ended; returns its
/// (run id, task id, try).
pub fn started_any(
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

pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
