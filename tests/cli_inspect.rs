//! `updraft runs ...`, `tasks logs`, `tasks clear` and `pools ...` through the real binary, on
//! both backends. The database is filled through the store the way the scheduler and a worker
//! fill it, without running either.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use updraft_core::dag::{LoadOptions, load_paths};
use updraft_core::ids::{DagId, TaskId, TryKey};
use updraft_core::scope::Scope;
use updraft_core::state::{DagRunState, RunType, TaskState};
use updraft_metadata::testing::each_backend;
use updraft_metadata::{
    CreateOutcome, DagRun, NewDagRun, NewTaskInstance, Store, TaskInstance, TryEnd, WorkerRef,
};
use updraft_scheduler::sync::{SyncOptions, sync_dags};

use common::{repo, run, updraft};

const WORKER: WorkerRef<'static> = WorkerRef {
    id: "w1",
    hostname: "host1",
};

/// How long a test waits for the binary before it fails.
const DEADLINE: Duration = Duration::from_secs(30);

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, day, hour, 0, 0).unwrap()
}

fn sales_daily() -> DagId {
    DagId::parse("sales_daily").unwrap()
}

/// `updraft --database-url URL ARGS`: (exit code, stdout, stderr).
fn updraft_on(home: &Path, url: &str, args: &[&str]) -> (i32, String, String) {
    let mut command = updraft(home);
    command.args(["--database-url", url]).args(args);
    run(command)
}

/// The runs of `sales_daily` (extract -> transform -> load -> cleanup) that the tests read.
struct Seeded {
    /// `scheduled__2025-01-01`, failed: transform failed all 3 tries, load upstream_failed.
    failed: DagRun,
    /// `scheduled__2025-01-02`, success: every task succeeded at its first try.
    success: DagRun,
    /// `manual__2025-01-03`, running: extract runs its first try.
    running: DagRun,
}

/// Syncs the example DAGs and records three runs of `sales_daily` with their tries and logs.
async fn seed(store: &Store) -> Seeded {
    let load = load_paths(&[repo().join("dags")], &LoadOptions::default());
    let options = SyncOptions {
        paused_on_creation: true,
    };
    sync_dags(store, &load, options, at(1, 0)).await.unwrap();

    let failed = new_run(store, "scheduled__2025-01-01", RunType::Scheduled, 1).await;
    let tis = task_instances(store, &failed).await;
    run_tries(store, &tis[0], &[(TaskState::Success, "extracted\n")]).await;
    let transform = [
        (TaskState::UpForRetry, "try 1\n"),
        (TaskState::UpForRetry, "try 2\n"),
        (TaskState::Failed, "try 3\n"),
    ];
    run_tries(store, &tis[1], &transform).await;
    let moved = store.set_task_state(
        tis[2].id,
        TaskState::None,
        TaskState::UpstreamFailed,
        at(1, 9),
    );
    assert!(moved.await.unwrap());
    run_tries(store, &tis[3], &[(TaskState::Success, "cleaned\n")]).await;
    end_run(store, &failed, DagRunState::Failed).await;

    let success = new_run(store, "scheduled__2025-01-02", RunType::Scheduled, 2).await;
    for ti in task_instances(store, &success).await {
        run_tries(store, &ti, &[(TaskState::Success, "ok\n")]).await;
    }
    end_run(store, &success, DagRunState::Success).await;

    let running = new_run(store, "manual__2025-01-03", RunType::Manual, 3).await;
    let tis = task_instances(store, &running).await;
    run_tries(store, &tis[0], &[(TaskState::Running, "partial\n")]).await;
    let started = store.set_dag_run_state(
        running.id,
        DagRunState::Queued,
        DagRunState::Running,
        at(3, 1),
    );
    assert!(started.await.unwrap());

    Seeded {
        failed: store.get_dag_run(failed.id).await.unwrap().unwrap(),
        success: store.get_dag_run(success.id).await.unwrap().unwrap(),
        running: store.get_dag_run(running.id).await.unwrap().unwrap(),
    }
}

/// A run of `sales_daily` at midnight of January `day`, created then.
async fn new_run(store: &Store, run_id: &str, run_type: RunType, day: u32) -> DagRun {
    let dag = store.get_dag(&sales_daily()).await.unwrap().unwrap();
    let run = NewDagRun {
        dag_id: sales_daily(),
        run_id: run_id.to_owned(),
        run_type,
        logical_date: at(day, 0),
        data_interval_start: at(day, 0),
        data_interval_end: at(day + 1, 0),
        run_after: at(day + 1, 0),
        conf: json!({"region": "eu"}),
        version_hash: dag.version_hash,
        backfill_id: None,
    };
    match store.create_dag_run(&run, at(day, 0)).await.unwrap() {
        CreateOutcome::Created(run) => run,
        CreateOutcome::AlreadyExists(run) => panic!("{} already exists", run.run_id),
    }
}

/// The task instances of a run, in file order: extract, transform, load, cleanup.
async fn task_instances(store: &Store, run: &DagRun) -> Vec<TaskInstance> {
    let tasks: Vec<NewTaskInstance> = ["extract", "transform", "load", "cleanup"]
        .into_iter()
        .map(|task_id| NewTaskInstance {
            task_id: TaskId::parse(task_id).unwrap(),
            max_tries: if task_id == "load" { 3 } else { 2 },
            pool: "default_pool".to_owned(),
            pool_slots: 1,
            queue: "default".to_owned(),
            priority_weight: 1,
            rendered_command: None,
        })
        .collect();
    store
        .create_task_instances(run.id, &tasks, run.logical_date)
        .await
        .unwrap()
}

/// Runs one try per entry, as the scheduler queues and a worker claims and ends it, each
/// writing its log line; a `running` entry leaves its try running.
async fn run_tries(store: &Store, ti: &TaskInstance, tries: &[(TaskState, &str)]) {
    let mut from = TaskState::None;
    for (number, (state, log)) in (1..).zip(tries) {
        let now = ti.updated_at + chrono::Duration::minutes(number.into());
        for (a, b) in [
            (from, TaskState::Scheduled),
            (TaskState::Scheduled, TaskState::Queued),
        ] {
            assert!(store.set_task_state(ti.id, a, b, now).await.unwrap());
        }
        let queues = ["default".to_owned()];
        let claims = store
            .claim_task_instances(WORKER, &queues, Scope::Run(ti.dag_run_id), 1, now)
            .await
            .unwrap();
        assert_eq!(
            (claims[0].instance.id, claims[0].instance.try_number),
            (ti.id, number)
        );
        let key = try_of(ti, number);
        store.append_task_log(key, log.as_bytes()).await.unwrap();
        if *state != TaskState::Running {
            end_try(store, key, *state, now + chrono::Duration::seconds(30)).await;
        }
        from = *state;
    }
}

/// The key of `ti`'s try `try_number`.
fn try_of(ti: &TaskInstance, try_number: i32) -> TryKey {
    TryKey {
        task_instance: ti.id,
        try_number,
    }
}

async fn end_try(store: &Store, key: TryKey, state: TaskState, now: DateTime<Utc>) {
    let end = TryEnd {
        key,
        worker_id: Some(WORKER.id.to_owned()),
        state,
        exit_code: Some(if state == TaskState::Success { 0 } else { 1 }),
        next_retry_at: None,
        outputs: Vec::new(),
        log_tail: Vec::new(),
    };
    assert!(store.end_try(&end, now).await.unwrap());
}

/// Moves a queued run to running an hour after its logical date, then to `end` an hour later.
async fn end_run(store: &Store, run: &DagRun, end: DagRunState) {
    let start = run.logical_date + chrono::Duration::hours(1);
    let moved = store.set_dag_run_state(run.id, DagRunState::Queued, DagRunState::Running, start);
    assert!(moved.await.unwrap());
    let end_at = start + chrono::Duration::hours(1);
    let moved = store.set_dag_run_state(run.id, DagRunState::Running, end, end_at);
    assert!(moved.await.unwrap());
}

async fn task_instance(store: &Store, run: &DagRun, task_id: &str) -> TaskInstance {
    let tis = store.list_task_instances(run.id).await.unwrap();
    tis.into_iter()
        .find(|ti| ti.task_id.as_str() == task_id)
        .unwrap()
}

// --- runs ---------------------------------------------------------------------------------

#[tokio::test]
async fn runs_list_json_has_every_run_newest_first() {
    each_backend(|db| async move {
        let store = db.store().await;
        seed(&store).await;
        let home = tempfile::tempdir().unwrap();
        let args = ["runs", "list", "sales_daily", "--json"];
        let (code, stdout, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(code, 0, "{stderr}");
        let runs: Vec<Value> = serde_json::from_str(&stdout).unwrap();
        let ids: Vec<&str> = runs.iter().map(|r| r["run_id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            [
                "manual__2025-01-03",
                "scheduled__2025-01-02",
                "scheduled__2025-01-01"
            ]
        );
        assert_eq!(
            runs[2],
            json!({
                "run_id": "scheduled__2025-01-01",
                "run_type": "scheduled",
                "state": "failed",
                "logical_date": "2025-01-01T00:00:00Z",
                "data_interval_start": "2025-01-01T00:00:00Z",
                "data_interval_end": "2025-01-02T00:00:00Z",
                "start_date": "2025-01-01T01:00:00Z",
                "end_date": "2025-01-01T02:00:00Z",
                "duration_seconds": 3600.0,
                "deadline_missed_at": null,
            })
        );
        assert_eq!(runs[0]["state"], "running");
        assert_eq!(runs[0]["run_type"], "manual");
        assert_eq!(runs[0]["end_date"], Value::Null);
        assert_eq!(runs[0]["duration_seconds"], Value::Null);

        let args = ["runs", "list", "sales_daily", "--json", "--limit", "1"];
        let (_, stdout, _) = updraft_on(home.path(), db.url(), &args);
        let runs: Vec<Value> = serde_json::from_str(&stdout).unwrap();
        assert_eq!(runs.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn runs_list_prints_a_table() {
    each_backend(|db| async move {
        let store = db.store().await;
        seed(&store).await;
        let home = tempfile::tempdir().unwrap();
        let (code, stdout, stderr) =
            updraft_on(home.path(), db.url(), &["runs", "list", "sales_daily"]);
        assert_eq!(code, 0, "{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines[0],
            "RUN_ID                 TYPE       STATE    LOGICAL_DATE          STARTED               \
             ENDED                 DURATION"
        );
        assert_eq!(
            lines[3],
            "scheduled__2025-01-01  scheduled  failed   2025-01-01T00:00:00Z  2025-01-01T01:00:00Z  \
             2025-01-01T02:00:00Z  1h"
        );
        assert!(lines[1].starts_with("manual__2025-01-03     manual     running"));
        assert_eq!(lines.len(), 4);
    })
    .await;
}

#[tokio::test]
async fn runs_show_json_has_the_run_and_its_task_instances() {
    each_backend(|db| async move {
        let store = db.store().await;
        seed(&store).await;
        let home = tempfile::tempdir().unwrap();
        let args = [
            "runs",
            "show",
            "sales_daily",
            "scheduled__2025-01-01",
            "--json",
        ];
        let (code, stdout, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(code, 0, "{stderr}");
        let run: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(run["run_id"], "scheduled__2025-01-01");
        assert_eq!(run["state"], "failed");
        assert_eq!(run["run_type"], "scheduled");
        assert_eq!(run["logical_date"], "2025-01-01T00:00:00Z");
        assert_eq!(run["conf"], json!({"region": "eu"}));
        let tis = run["task_instances"].as_array().unwrap();
        let summary: Vec<(&str, &str, i64)> = tis
            .iter()
            .map(|ti| {
                (
                    ti["task_id"].as_str().unwrap(),
                    ti["state"].as_str().unwrap(),
                    ti["try_number"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("extract", "success", 1),
                ("transform", "failed", 3),
                ("load", "upstream_failed", 0),
                ("cleanup", "success", 1),
            ]
        );
        assert_eq!(tis[1]["max_tries"], 2);
        assert_eq!(tis[0]["duration_seconds"], 30.0);
        assert_eq!(tis[2]["start_date"], Value::Null);
        assert_eq!(tis[2]["duration_seconds"], Value::Null);
    })
    .await;
}

#[tokio::test]
async fn runs_show_prints_the_run_then_its_tasks() {
    each_backend(|db| async move {
        let store = db.store().await;
        seed(&store).await;
        let home = tempfile::tempdir().unwrap();
        let args = ["runs", "show", "sales_daily", "manual__2025-01-03"];
        let (code, stdout, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.contains("run_id         manual__2025-01-03\n"),
            "{stdout}"
        );
        assert!(stdout.contains("state          running\n"), "{stdout}");
        assert!(
            stdout.contains("\nTASK       STATE    TRIES  STARTED"),
            "{stdout}"
        );
        assert!(
            stdout.contains("\nextract    running  1      2025-01-03"),
            "{stdout}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_unknown_dag_or_run_is_an_error_that_helps() {
    each_backend(|db| async move {
        let store = db.store().await;
        seed(&store).await;
        let home = tempfile::tempdir().unwrap();
        let (code, stdout, stderr) =
            updraft_on(home.path(), db.url(), &["runs", "list", "sales_dayly"]);
        assert_eq!((code, stdout.as_str()), (1, ""));
        assert_eq!(
            stderr,
            "error: no DAG \"sales_dayly\" in the database; did you mean \"sales_daily\"?\n"
        );

        let args = ["runs", "show", "sales_daily", "nope"];
        let (code, _, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(code, 1);
        assert_eq!(
            stderr,
            "error: DAG \"sales_daily\" has no run \"nope\"; see its runs with \
             `updraft runs list sales_daily`\n"
        );

        let args = ["tasks", "clear", "no_such_dag", "--yes"];
        let (code, _, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(code, 1);
        assert_eq!(stderr, "error: no DAG \"no_such_dag\" in the database\n");
    })
    .await;
}

// --- tasks logs ---------------------------------------------------------------------------

#[tokio::test]
async fn logs_print_the_current_try_or_the_one_asked_for() {
    each_backend(|db| async move {
        let store = db.store().await;
        seed(&store).await;
        let home = tempfile::tempdir().unwrap();
        let logs = |task: &str, more: &[&str]| {
            let mut args = vec![
                "tasks",
                "logs",
                "sales_daily",
                "scheduled__2025-01-01",
                task,
            ];
            args.extend_from_slice(more);
            updraft_on(home.path(), db.url(), &args)
        };
        assert_eq!(
            logs("transform", &[]),
            (0, "try 3\n".to_owned(), String::new())
        );
        assert_eq!(
            logs("transform", &["--try", "1"]),
            (0, "try 1\n".to_owned(), String::new())
        );
        assert_eq!(
            logs("extract", &[]),
            (0, "extracted\n".to_owned(), String::new())
        );

        let (code, _, stderr) = logs("transform", &["--try", "7"]);
        assert_eq!(code, 1);
        assert_eq!(
            stderr,
            "error: task \"transform\" of run \"scheduled__2025-01-01\" has no try 7; \
             its tries: 1, 2, 3\n"
        );
        let (code, _, stderr) = logs("load", &[]);
        assert_eq!(code, 1);
        assert_eq!(
            stderr,
            "error: task \"load\" of run \"scheduled__2025-01-01\" has not run yet \
             (state: upstream_failed)\n"
        );
        let (code, _, stderr) = logs("lod", &[]);
        assert_eq!(code, 1);
        assert!(stderr.contains("did you mean \"load\"?"), "{stderr}");
    })
    .await;
}

#[tokio::test]
async fn a_long_log_is_printed_whole_in_order() {
    each_backend(|db| async move {
        let store = db.store().await;
        let seeded = seed(&store).await;
        let ti = task_instance(&store, &seeded.success, "load").await;
        let mut expected = "ok\n".to_owned();
        for line in 0..2500 {
            let text = format!("line {line}\n");
            store
                .append_task_log(try_of(&ti, 1), text.as_bytes())
                .await
                .unwrap();
            expected.push_str(&text);
        }
        let home = tempfile::tempdir().unwrap();
        let args = [
            "tasks",
            "logs",
            "sales_daily",
            "scheduled__2025-01-02",
            "load",
        ];
        let (code, stdout, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout == expected, "the log differs");
    })
    .await;
}

/// Reads a child's stdout on a thread, so that the test can wait for text with a deadline.
struct Output {
    received: mpsc::Receiver<Vec<u8>>,
    text: Vec<u8>,
}

impl Output {
    fn of(child: &mut Child) -> Output {
        let mut stdout = child.stdout.take().unwrap();
        let (send, received) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buffer) {
                if send.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Output {
            received,
            text: Vec::new(),
        }
    }

    /// Waits until everything read so far is `expected`.
    fn wait_for(&mut self, expected: &str) {
        let deadline = Instant::now() + DEADLINE;
        while self.text != expected.as_bytes() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.received.recv_timeout(left) {
                Ok(bytes) => self.text.extend(bytes),
                Err(_) => panic!(
                    "waited for {expected:?}, got {:?}",
                    String::from_utf8_lossy(&self.text)
                ),
            }
        }
    }
}

/// Waits for a child to exit, killing it at the deadline.
fn exit_code(mut child: Child) -> i32 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap();
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("updraft did not exit in {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn follow_prints_new_chunks_until_the_try_ends() {
    each_backend(|db| async move {
        let store = db.store().await;
        let seeded = seed(&store).await;
        let ti = task_instance(&store, &seeded.running, "extract").await;
        let home = tempfile::tempdir().unwrap();
        let mut command = updraft(home.path());
        command
            .args(["--database-url", db.url()])
            .args([
                "tasks",
                "logs",
                "sales_daily",
                "manual__2025-01-03",
                "extract",
            ])
            .arg("--follow")
            .stdout(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut output = Output::of(&mut child);
        output.wait_for("partial\n");
        store
            .append_task_log(try_of(&ti, 1), b"more\n")
            .await
            .unwrap();
        output.wait_for("partial\nmore\n");
        store
            .append_task_log(try_of(&ti, 1), b"last\n")
            .await
            .unwrap();
        end_try(&store, try_of(&ti, 1), TaskState::Success, at(3, 2)).await;
        assert_eq!(exit_code(child), 0);
        output.wait_for("partial\nmore\nlast\n");
    })
    .await;
}

// --- tasks clear --------------------------------------------------------------------------

#[tokio::test]
async fn clear_with_downstream_resets_the_tasks_and_queues_the_run_again() {
    each_backend(|db| async move {
        let store = db.store().await;
        let seeded = seed(&store).await;
        let home = tempfile::tempdir().unwrap();
        let mut command = updraft(home.path());
        command
            .args([
                "tasks",
                "clear",
                "sales_daily",
                "--task",
                "transform",
                "--downstream",
            ])
            .args([
                "--from",
                "2025-01-01",
                "--to",
                "2025-01-01T12:00:00Z",
                "--yes",
            ])
            .args(["--database-url", db.url()])
            .env("USER", "ada");
        let (code, stdout, stderr) = run(command);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(
            stdout,
            "RUN_ID                 TASK       STATE\n\
             scheduled__2025-01-01  transform  failed\n\
             scheduled__2025-01-01  load       upstream_failed\n\
             scheduled__2025-01-01  cleanup    success\n\
             cleared 3 task instance(s) in 1 run(s)\n"
        );

        let transform = task_instance(&store, &seeded.failed, "transform").await;
        assert_eq!(transform.state, TaskState::None);
        // Three tries done, then a fresh budget of its 2 retries; the tries keep their rows.
        assert_eq!((transform.try_number, transform.max_tries), (3, 5));
        assert_eq!(store.list_task_tries(transform.id).await.unwrap().len(), 3);
        let load = task_instance(&store, &seeded.failed, "load").await;
        assert_eq!((load.state, load.max_tries), (TaskState::None, 3));
        let extract = task_instance(&store, &seeded.failed, "extract").await;
        assert_eq!(extract.state, TaskState::Success);
        let run = store.get_dag_run(seeded.failed.id).await.unwrap().unwrap();
        assert_eq!(run.state, DagRunState::Queued);
        let other = store.get_dag_run(seeded.success.id).await.unwrap().unwrap();
        assert_eq!(other.state, DagRunState::Success);

        // The seeded tries logged their ends; the clear is the one user action.
        let events: Vec<_> = store
            .list_events(Some(&sales_daily()), 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|event| event.event != "try_ended")
            .collect();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].actor.as_str(), events[0].event.as_str()),
            ("ada", "clear")
        );
        assert_eq!(
            events[0].details["task_instances"][0],
            json!({"run_id": "scheduled__2025-01-01", "task_id": "transform", "state": "failed"})
        );
    })
    .await;
}

#[tokio::test]
async fn clear_only_failed_with_upstream_over_every_run() {
    each_backend(|db| async move {
        let store = db.store().await;
        let seeded = seed(&store).await;
        let home = tempfile::tempdir().unwrap();
        let args = [
            "tasks",
            "clear",
            "sales_daily",
            "--task",
            "load",
            "--upstream",
            "--only-failed",
            "--yes",
        ];
        let (code, stdout, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.ends_with("cleared 2 task instance(s) in 1 run(s)\n"),
            "{stdout}"
        );
        let extract = task_instance(&store, &seeded.failed, "extract").await;
        assert_eq!(extract.state, TaskState::Success, "extract did not fail");
        let transform = task_instance(&store, &seeded.failed, "transform").await;
        assert_eq!(transform.state, TaskState::None);
    })
    .await;
}

#[tokio::test]
async fn clear_of_a_running_run_keeps_it_running() {
    each_backend(|db| async move {
        let store = db.store().await;
        let seeded = seed(&store).await;
        let home = tempfile::tempdir().unwrap();
        let args = [
            "tasks",
            "clear",
            "sales_daily",
            "--task",
            "extract",
            "--from",
            "2025-01-03",
            "--yes",
        ];
        let (code, stdout, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.contains("manual__2025-01-03  extract  running\n"),
            "{stdout}"
        );
        let extract = task_instance(&store, &seeded.running, "extract").await;
        assert_eq!(extract.state, TaskState::None);
        let run = store.get_dag_run(seeded.running.id).await.unwrap().unwrap();
        assert_eq!(run.state, DagRunState::Running);
        // The worker's next heartbeat no longer returns the try: it kills it.
        let running = store
            .heartbeat_worker(WORKER.id, None, at(3, 3))
            .await
            .unwrap();
        assert!(running.is_empty(), "{running:?}");
    })
    .await;
}

#[tokio::test]
async fn clear_refuses_without_a_terminal_or_yes_and_says_nothing_when_nothing_matches() {
    each_backend(|db| async move {
        let store = db.store().await;
        let seeded = seed(&store).await;
        let home = tempfile::tempdir().unwrap();
        let args = ["tasks", "clear", "sales_daily", "--only-failed"];
        let (code, stdout, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(code, 1);
        assert!(
            stdout.contains("scheduled__2025-01-01  transform  failed\n"),
            "{stdout}"
        );
        assert_eq!(
            stderr,
            "error: not clearing 2 task instance(s) without confirmation: stdin is not a \
             terminal; pass --yes\n"
        );
        let transform = task_instance(&store, &seeded.failed, "transform").await;
        assert_eq!(transform.state, TaskState::Failed, "nothing was cleared");

        let args = [
            "tasks",
            "clear",
            "sales_daily",
            "--from",
            "2030-01-01",
            "--yes",
        ];
        let (code, stdout, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout, "nothing to clear\n");
    })
    .await;
}

#[tokio::test]
async fn clear_rejects_an_unknown_task_and_bad_dates() {
    each_backend(|db| async move {
        let store = db.store().await;
        seed(&store).await;
        let home = tempfile::tempdir().unwrap();
        let args = [
            "tasks",
            "clear",
            "sales_daily",
            "--task",
            "transfrom",
            "--yes",
        ];
        let (code, stdout, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!((code, stdout.as_str()), (2, ""));
        assert_eq!(
            stderr,
            "error: DAG \"sales_daily\" has no task \"transfrom\"; did you mean \"transform\"?\n"
        );

        let args = [
            "tasks",
            "clear",
            "sales_daily",
            "--from",
            "yesterday",
            "--yes",
        ];
        let (code, _, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(code, 2);
        assert!(
            stderr.starts_with("error: invalid value 'yesterday' for '--from <FROM>': not a time"),
            "{stderr}"
        );

        let args = [
            "tasks",
            "clear",
            "sales_daily",
            "--from",
            "2025-02-01",
            "--to",
            "2025-01-01",
        ];
        let (code, _, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(
            (code, stderr.as_str()),
            (
                2,
                // Dates are midnight in the DAG's timezone (Europe/Berlin), as everywhere.
                "error: --from 2025-01-31T23:00:00Z is after --to 2024-12-31T23:00:00Z\n"
            )
        );
    })
    .await;
}

// --- pools --------------------------------------------------------------------------------

#[tokio::test]
async fn pools_set_list_and_delete() {
    each_backend(|db| async move {
        db.store().await;
        let home = tempfile::tempdir().unwrap();
        let pools = |args: &[&str]| {
            let mut all = vec!["pools"];
            all.extend(args);
            updraft_on(home.path(), db.url(), &all)
        };
        let (code, stdout, stderr) = pools(&["set", "etl", "4", "--description", "ETL jobs"]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout, "pool \"etl\": 4 slot(s)\n");
        // A resize without --description keeps the description; one without --rate-limit
        // keeps the rate limit.
        let (code, stdout, stderr) = pools(&["set", "etl", "5", "--rate-limit", "10/m"]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout, "pool \"etl\": 5 slot(s), at most 10/m\n");
        let (code, _, stderr) = pools(&["set", "etl", "6"]);
        assert_eq!(code, 0, "{stderr}");
        let (code, _, stderr) = pools(&["set", "etl", "6", "--rate-limit", "ten/minute"]);
        assert_eq!(code, 2);
        assert_eq!(
            stderr,
            "error: --rate-limit: bad rate limit \"ten/minute\" (the count is not a whole \
             number); write tries per period, e.g. 10/m, 2/s or 100/h\n"
        );

        let (code, stdout, _) = pools(&["list", "--json"]);
        assert_eq!(code, 0);
        let listed: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            listed,
            json!([
                {"name": "default_pool", "slots": 128, "description": "Default pool", "rate_limit": null},
                {"name": "etl", "slots": 6, "description": "ETL jobs", "rate_limit": "10/m"},
            ])
        );
        let (_, stdout, _) = pools(&["list"]);
        assert_eq!(
            stdout,
            "NAME          SLOTS  RATE LIMIT  DESCRIPTION\n\
             default_pool  128    -           Default pool\n\
             etl           6      10/m        ETL jobs\n"
        );
        let (code, stdout, _) = pools(&["set", "etl", "6", "--rate-limit", "none"]);
        assert_eq!((code, stdout.as_str()), (0, "pool \"etl\": 6 slot(s)\n"));

        let (code, _, stderr) = pools(&["delete", "etll"]);
        assert_eq!(code, 1);
        assert_eq!(stderr, "error: no pool \"etll\"; did you mean \"etl\"?\n");
        let (code, stdout, stderr) = pools(&["delete", "etl"]);
        assert_eq!(
            (code, stdout.as_str()),
            (0, "deleted pool \"etl\"\n"),
            "{stderr}"
        );
        let (_, stdout, _) = pools(&["list", "--json"]);
        assert_eq!(
            serde_json::from_str::<Value>(&stdout).unwrap()[1],
            Value::Null
        );
    })
    .await;
}

#[tokio::test]
async fn pools_refuse_negative_slots_and_deleting_the_default_pool() {
    each_backend(|db| async move {
        db.store().await;
        let home = tempfile::tempdir().unwrap();
        let args = ["pools", "set", "etl", "--", "-3"];
        let (code, _, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(code, 2);
        assert_eq!(
            stderr,
            "error: pool 'etl': slots must be 0 or more, not -3\n"
        );

        let args = ["pools", "delete", "default_pool"];
        let (code, _, stderr) = updraft_on(home.path(), db.url(), &args);
        assert_eq!(code, 1);
        assert_eq!(
            stderr,
            "error: the default pool 'default_pool' cannot be deleted (resize it instead)\n"
        );
    })
    .await;
}
