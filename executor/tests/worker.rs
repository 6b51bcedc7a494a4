//! The worker loop against a real database (both backends).

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use updraft_core::dag::{LoadOptions, decode};
use updraft_core::ids::{DagId, TaskId, TaskInstanceId, TryKey};
use updraft_core::plan::TryPlan;
use updraft_core::render::{Context, RunContext};
use updraft_core::scope::Scope;
use updraft_core::state::{RunType, TaskMove, TaskState, WorkerState};
use updraft_executor::name::Name;
use updraft_executor::worker::{Settings, Worker};
use updraft_metadata::testing::each_backend;
use updraft_metadata::{
    CreateOutcome, DagSync, Error, NewDagRun, NewTaskInstance, QueueRequest, Store, TaskInstance,
    TryEnd, Worker as WorkerRow, WorkerRef,
};

/// Settings of a worker `id` on host `host` serving `default`, quick to heartbeat.
fn settings(id: &str, host: &str) -> Settings {
    Settings {
        name: Name::Given(id.to_owned()),
        hostname: host.to_owned(),
        queues: vec!["default".to_owned()],
        concurrency: 4,
        poll_interval: Duration::from_millis(100),
        heartbeat_interval: Duration::from_millis(200),
        echo: false,
        scope: Scope::Everything,
        shutdown_timeout: None,
        inherit_env: Vec::new(),
        secrets: Default::default(),
        max_log_bytes: updraft_executor::worker::MAX_LOG_BYTES,
        base_url: None,
    }
}

/// Runs `worker` on a task of its own until `true` is sent on the returned switch.
fn start(worker: Worker) -> (watch::Sender<bool>, JoinHandle<Result<(), Error>>) {
    let (stop, mut stopping) = watch::channel(false);
    let running = tokio::spawn(worker.run(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    }));
    (stop, running)
}

/// Syncs the DAG of `yaml` (its file in `folder`), creates a manual run of it and queues each
/// of its task instances with its command rendered, as the scheduler would; returns them in
/// file order.
async fn queued(store: &Store, folder: &std::path::Path, yaml: &str) -> Vec<TaskInstance> {
    let fileloc = folder.join("dag.yaml").display().to_string();
    let dag = decode(&fileloc, yaml, &LoadOptions::default()).expect("a valid DAG");
    let now = Utc::now();
    store
        .upsert_dag(
            &DagSync {
                dag_id: dag.id.clone(),
                fileloc: fileloc.clone(),
                owner: String::new(),
                description: None,
                tags: vec![],
                schedule: None,
                timezone: "UTC".to_owned(),
                max_active_runs: 16,
                max_active_tasks: 16,
                paused_on_creation: false,
                version_hash: dag.version_hash(),
                serialized: serde_json::to_value(&dag).unwrap(),
                source: yaml.to_owned(),
            },
            now,
        )
        .await
        .unwrap();
    let run = NewDagRun {
        dag_id: dag.id.clone(),
        run_id: "r".to_owned(),
        run_type: RunType::Manual,
        logical_date: now,
        data_interval_start: now,
        data_interval_end: now,
        run_after: now,
        conf: json!({}),
        version_hash: dag.version_hash(),
        backfill_id: None,
    };
    let CreateOutcome::Created(run) = store.create_dag_run(&run, now).await.unwrap() else {
        panic!("the run exists");
    };
    let new: Vec<NewTaskInstance> = dag
        .tasks
        .values()
        .map(|task| NewTaskInstance {
            task_id: task.id.clone(),
            max_tries: task.retries as i32,
            pool: task.pool.clone(),
            pool_slots: 1,
            queue: task.queue.clone(),
            priority_weight: 1,
            rendered_command: None,
        })
        .collect();
    let instances = store
        .create_task_instances(run.id, &new, now)
        .await
        .unwrap();
    let moves: Vec<_> = instances
        .iter()
        .map(|ti| TaskMove {
            task_instance: ti.id,
            from: TaskState::None,
            to: TaskState::Scheduled,
        })
        .collect();
    store.set_task_states(&moves, now).await.unwrap();
    let context = RunContext {
        dag_id: dag.id.clone(),
        run_id: run.run_id.clone(),
        run_type: run.run_type,
        logical_date: now,
        data_interval_start: now,
        data_interval_end: now,
        params: Default::default(),
        conf: json!({}),
        catalog: Default::default(),
    };
    let requests: Vec<QueueRequest> = instances
        .iter()
        .map(|ti| {
            let task = dag.task(ti.task_id.as_str()).unwrap();
            let context = Context {
                run: &context,
                task_id: ti.task_id.clone(),
                try_number: 1,
                outputs: Default::default(),
            };
            let plan = TryPlan::new(&dag, task, &context);
            QueueRequest {
                task_instance: ti.id,
                plan: serde_json::to_value(plan).unwrap(),
                rate_limit: None,
            }
        })
        .collect();
    store.queue_task_instances(&requests, now).await.unwrap();
    instances
}

/// Polls task instance `id` until `done` holds for it, at most 10 s.
async fn wait_until(
    store: &Store,
    id: TaskInstanceId,
    what: &str,
    done: impl Fn(&TaskInstance) -> bool,
) -> TaskInstance {
    let start = Instant::now();
    loop {
        let current = store.get_task_instance(id).await.unwrap().unwrap();
        if done(&current) {
            return current;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The key of `ti`'s first try.
fn first_try(ti: &TaskInstance) -> TryKey {
    TryKey {
        task_instance: ti.id,
        try_number: 1,
    }
}

async fn log_of(store: &Store, key: TryKey) -> String {
    let chunks = store.read_task_log(key, 0, 1000).await.unwrap();
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|chunk| chunk.data).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Registers `id` as held by a live process (this one: its pid is alive) on `host`.
async fn held(store: &Store, id: &str, host: &str) -> WorkerRow {
    let now = Utc::now();
    let row = WorkerRow {
        id: id.to_owned(),
        hostname: host.to_owned(),
        queues: vec!["default".to_owned()],
        concurrency: 4,
        state: WorkerState::Running,
        started_at: now,
        heartbeat_at: now,
        pid: Some(std::process::id() as i32),
    };
    assert!(store.claim_worker_name(&row, None).await.unwrap());
    row
}

#[tokio::test]
async fn a_worker_refuses_the_name_of_a_live_worker_on_any_host_and_names_its_holder() {
    each_backend(|db| async move {
        let store = db.store().await;
        held(&store, "w1", "elsewhere").await;
        held(&store, "w2", "here").await;
        let pid = std::process::id();
        for (id, host) in [("w1", "elsewhere"), ("w2", "here")] {
            let refused = Worker::new(store.clone(), settings(id, "here"))
                .run(std::future::pending())
                .await;
            match refused {
                Err(Error::Conflict(message)) => assert!(
                    message.starts_with(&format!(
                        "the worker name '{id}' is held by process {pid} on host {host}"
                    )) && message
                        .ends_with("give this worker another name (--name), or stop that one"),
                    "{message}"
                ),
                other => panic!("expected a conflict, got {other:?}"),
            }
            // The other worker's row is untouched.
            let row = store.get_worker(id).await.unwrap().unwrap();
            assert_eq!(row.hostname, host);
        }
        // A standalone has no --name: it is told what to do instead.
        held(&store, "box:standalone", "box").await;
        let standalone = Settings {
            name: Name::OfHome("box:standalone".to_owned()),
            ..settings("unused", "box")
        };
        match Worker::new(store.clone(), standalone).register().await {
            Err(Error::Conflict(message)) => assert!(
                message.ends_with("stop it, or give this one a database of its own"),
                "{message}"
            ),
            other => panic!("expected a conflict, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn without_a_name_a_worker_takes_the_first_free_numbered_one() {
    each_backend(|db| async move {
        let store = db.store().await;
        held(&store, "here:1", "here").await;
        let unnamed = || {
            Worker::new(
                store.clone(),
                Settings {
                    name: Name::FirstFree("here".to_owned()),
                    ..settings("unused", "here")
                },
            )
        };
        let (mut first, mut second, mut third) = (unnamed(), unnamed(), unnamed());
        assert_eq!(first.register().await.unwrap(), "here:2");
        assert_eq!(second.register().await.unwrap(), "here:3");
        // Stopped, its name is free again.
        store
            .set_worker_state("here:1", WorkerState::Stopped)
            .await
            .unwrap();
        assert_eq!(third.register().await.unwrap(), "here:1");
    })
    .await;
}

#[tokio::test]
async fn a_worker_whose_name_was_taken_over_stops_with_a_conflict() {
    each_backend(|db| async move {
        let store = db.store().await;
        let (_stop, running) = start(Worker::new(store.clone(), settings("w1", "here")));
        let start = Instant::now();
        let row = loop {
            if let Some(row) = store.get_worker("w1").await.unwrap() {
                break row;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the worker registers"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Another process takes the name over, as if this one had been silent too long.
        let now = Utc::now();
        let taker = WorkerRow {
            hostname: "elsewhere".to_owned(),
            started_at: now,
            heartbeat_at: now,
            ..row.clone()
        };
        let mut seen = row;
        while !store.claim_worker_name(&taker, Some(&seen)).await.unwrap() {
            seen = store.get_worker("w1").await.unwrap().unwrap();
        }
        let stopped = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the worker stops")
            .unwrap();
        assert!(matches!(stopped, Err(Error::Conflict(_))), "{stopped:?}");
        let row = store.get_worker("w1").await.unwrap().unwrap();
        assert_eq!(
            (row.hostname.as_str(), row.state),
            ("elsewhere", WorkerState::Running)
        );
    })
    .await;
}

#[tokio::test]
async fn a_stopping_worker_heartbeats_its_tries_until_they_end() {
    each_backend(|db| async move {
        let store = db.store().await;
        let folder = tempfile::tempdir().unwrap();
        let yaml = "version: 1\nid: drain\ntasks:\n  slow: {run: sleep 1.5}\n";
        let ti = queued(&store, folder.path(), yaml).await.remove(0);
        let (stop, worker) = start(Worker::new(store.clone(), settings("w1", "here")));
        wait_until(&store, ti.id, "the try to start", |ti| {
            ti.state == TaskState::Running
        })
        .await;
        stop.send_replace(true);
        let start = Instant::now();
        while store.get_worker("w1").await.unwrap().unwrap().state != WorkerState::Stopping {
            assert!(start.elapsed() < Duration::from_secs(5), "never stopping");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Draining, the worker heartbeats on: a long drain does not make its tries zombies.
        let stopping_since = store.get_task_instance(ti.id).await.unwrap().unwrap();
        let later = wait_until(&store, ti.id, "a heartbeat while stopping", |ti| {
            ti.state != TaskState::Running || ti.heartbeat_at > stopping_since.heartbeat_at
        })
        .await;
        assert_eq!(later.state, TaskState::Running, "{later:?}");
        worker.await.unwrap().unwrap();
        let ended = store.get_task_instance(ti.id).await.unwrap().unwrap();
        assert_eq!(ended.state, TaskState::Success);
        assert_eq!(
            store.get_worker("w1").await.unwrap().unwrap().state,
            WorkerState::Stopped
        );
    })
    .await;
}

#[tokio::test]
async fn a_stopping_worker_kills_the_tries_left_at_its_shutdown_timeout_and_records_them() {
    each_backend(|db| async move {
        let store = db.store().await;
        let folder = tempfile::tempdir().unwrap();
        let yaml = "version: 1\nid: stop\ntasks:\n  \
                    retried: {run: sleep 30, retries: 1, retry_delay: 1m}\n  \
                    failed: {run: sleep 30}\n";
        let tis = queued(&store, folder.path(), yaml).await;
        let mut settings = settings("w1", "here");
        settings.shutdown_timeout = Some(Duration::from_millis(300));
        let (stop, worker) = start(Worker::new(store.clone(), settings));
        for ti in &tis {
            wait_until(&store, ti.id, "the try to start", |ti| {
                ti.state == TaskState::Running
            })
            .await;
        }
        let asked = Instant::now();
        stop.send_replace(true);
        worker.await.unwrap().unwrap();
        // The timeout, then SIGTERM ends `sleep` at once.
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "{:?}",
            asked.elapsed()
        );
        let retried = store.get_task_instance(tis[0].id).await.unwrap().unwrap();
        assert_eq!(retried.state, TaskState::UpForRetry, "{retried:?}");
        assert!(retried.next_retry_at.is_some());
        let failed = store.get_task_instance(tis[1].id).await.unwrap().unwrap();
        assert_eq!(failed.state, TaskState::Failed, "{failed:?}");
        for ti in &tis {
            let log = log_of(&store, first_try(ti)).await;
            assert!(
                log.contains(
                    "updraft: the worker is stopping and this try still ran after its shutdown \
                     timeout (300ms)"
                ),
                "{log}"
            );
            let tries = store.list_task_tries(ti.id).await.unwrap();
            assert_eq!(
                tries[0].state,
                store.get_task_instance(ti.id).await.unwrap().unwrap().state
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_try_claimed_under_its_name_that_it_never_started_is_ended() {
    each_backend(|db| async move {
        let store = db.store().await;
        let now = Utc::now();
        let dag_id = DagId::parse("lost").unwrap();
        store
            .upsert_dag(
                &DagSync {
                    dag_id: dag_id.clone(),
                    fileloc: "dags/lost.yaml".to_owned(),
                    owner: String::new(),
                    description: None,
                    tags: vec![],
                    schedule: None,
                    timezone: "UTC".to_owned(),
                    max_active_runs: 16,
                    max_active_tasks: 16,
                    paused_on_creation: false,
                    version_hash: "v1".to_owned(),
                    serialized: json!({}),
                    source: String::new(),
                },
                now,
            )
            .await
            .unwrap();
        let run = NewDagRun {
            dag_id,
            run_id: "r".to_owned(),
            run_type: RunType::Manual,
            logical_date: now,
            data_interval_start: now,
            data_interval_end: now,
            run_after: now,
            conf: json!({}),
            version_hash: "v1".to_owned(),
            backfill_id: None,
        };
        let CreateOutcome::Created(run) = store.create_dag_run(&run, now).await.unwrap() else {
            panic!("exists");
        };
        let ti = store
            .create_task_instances(
                run.id,
                &[NewTaskInstance {
                    task_id: TaskId::parse("t").unwrap(),
                    max_tries: 0,
                    pool: "default_pool".to_owned(),
                    pool_slots: 1,
                    queue: "elsewhere".to_owned(),
                    priority_weight: 1,
                    rendered_command: None,
                }],
                now,
            )
            .await
            .unwrap()
            .remove(0);
        store
            .set_task_states(
                &[TaskMove {
                    task_instance: ti.id,
                    from: TaskState::None,
                    to: TaskState::Scheduled,
                }],
                now,
            )
            .await
            .unwrap();
        store
            .queue_task_instances(
                &[QueueRequest {
                    task_instance: ti.id,
                    plan: json!({"error": "unused"}),
                    rate_limit: None,
                }],
                now,
            )
            .await
            .unwrap();

        let worker = Worker::new(
            store.clone(),
            Settings {
                concurrency: 2,
                ..settings("w1", "host")
            },
        );
        let (stop, worker) = start(worker);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A claim under w1's name whose answer never reached w1 (it serves no such queue).
        let claimed = store
            .claim_task_instances(
                WorkerRef {
                    id: "w1",
                    hostname: "host",
                },
                &["elsewhere".to_owned()],
                Scope::Everything,
                1,
                Utc::now(),
            )
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);

        let start = std::time::Instant::now();
        let ended = loop {
            let current = store.get_task_instance(ti.id).await.unwrap().unwrap();
            if current.state != TaskState::Running {
                break current;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the lost try was never ended"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(ended.state, TaskState::Failed, "no retries left");
        let log = store.read_task_log(first_try(&ti), 0, 100).await.unwrap();
        let text: Vec<u8> = log.into_iter().flat_map(|chunk| chunk.data).collect();
        assert!(
            String::from_utf8_lossy(&text).contains("never started this try"),
            "{}",
            String::from_utf8_lossy(&text)
        );
        stop.send_replace(true);
        worker.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_worker_without_the_dags_folder_runs_tasks_that_need_no_file_of_it() {
    each_backend(|db| async move {
        let store = db.store().await;
        // The folder the scheduler read the DAG from, not on this worker's host.
        let elsewhere = tempfile::tempdir().unwrap().path().join("dags");
        let yaml = "version: 1\nid: remote\ntasks:\n  \
                    anywhere: {run: 'echo \"ran in $(pwd)\"'}\n  \
                    scripted: {run: ./step.sh, working_dir: scripts}\n";
        let tis = queued(&store, &elsewhere, yaml).await;
        let (stop, worker) = start(Worker::new(store.clone(), settings("w1", "here")));
        let anywhere = wait_until(&store, tis[0].id, "the try to end", |ti| {
            ti.state.is_finished()
        })
        .await;
        let scripted = wait_until(&store, tis[1].id, "the try to end", |ti| {
            ti.state.is_finished()
        })
        .await;
        stop.send_replace(true);
        worker.await.unwrap().unwrap();
        let log = log_of(&store, first_try(&tis[0])).await;
        assert_eq!(anywhere.state, TaskState::Success, "{log}");
        assert!(
            log.contains(&format!(
                "updraft: the DAG's folder {} is not on this host; running in ",
                elsewhere.display()
            )) && log.contains("ran in /")
                && log.contains("/updraft-try-"),
            "{log}"
        );
        // A task whose files are in a working_dir cannot run without them, and says why.
        let log = log_of(&store, first_try(&tis[1])).await;
        assert_eq!(scripted.state, TaskState::Failed, "{log}");
        let missing = format!("working directory {}", elsewhere.join("scripts").display());
        assert!(log.contains(&missing), "{log}");
    })
    .await;
}

/// An end the database cannot store does not wedge the worker: on Postgres a retry 100,000
/// years ahead is a timestamp it refuses, so the try is recorded as failed with the reason in
/// its log, and the ends written with it or after it are recorded as they are. SQLite stores
/// the same retry.
#[tokio::test]
async fn an_end_the_database_refuses_is_recorded_as_failed_and_holds_back_no_other() {
    each_backend(|db| async move {
        let store = db.store().await;
        let folder = tempfile::tempdir().unwrap();
        let yaml = "version: 1\nid: refused\ntasks:\n  \
                    far: {run: 'exit 3', retries: 1, retry_delay: 100000y}\n  \
                    fine: {run: 'echo fine'}\n";
        let tis = queued(&store, folder.path(), yaml).await;
        let (stop, worker) = start(Worker::new(store.clone(), settings("w1", "here")));
        let mut ended = Vec::new();
        for ti in &tis {
            ended.push(
                wait_until(&store, ti.id, "the try to end", |ti| {
                    !matches!(ti.state, TaskState::Queued | TaskState::Running)
                })
                .await,
            );
        }
        stop.send_replace(true);
        worker.await.unwrap().unwrap();
        let far_log = log_of(&store, first_try(&tis[0])).await;
        match db.backend() {
            updraft_metadata::Backend::Postgres => {
                assert_eq!(ended[0].state, TaskState::Failed, "{far_log}");
                assert!(
                    far_log.contains(
                        "updraft: the database refused this try's outcome (up_for_retry, exit \
                         code 3), so it is recorded as failed: "
                    ),
                    "{far_log}"
                );
            }
            updraft_metadata::Backend::Sqlite => {
                assert_eq!(ended[0].state, TaskState::UpForRetry, "{far_log}");
            }
        }
        assert_eq!(ended[1].state, TaskState::Success);
        assert_eq!(
            log_of(&store, first_try(&tis[1])).await.lines().next(),
            Some("fine")
        );
    })
    .await;
}

#[tokio::test]
async fn a_worker_coming_back_kills_what_is_left_of_its_reaped_tries_and_forgets_their_files() {
    each_backend(|db| async move {
        let store = db.store().await;
        let folder = tempfile::tempdir().unwrap();
        let name = format!("w-{}-{}", std::process::id(), db.backend());
        let yaml = "version: 1\nid: reaped\ntasks:\n  only: {run: \"true\"}\n";
        queued(&store, folder.path(), yaml).await;
        // A previous life claimed the try; a scheduler reaped it while the worker was away.
        let worker_ref = WorkerRef {
            id: &name,
            hostname: "here",
        };
        let queues = ["default".to_owned()];
        let claim = store
            .claim_task_instances(worker_ref, &queues, Scope::Everything, 1, Utc::now())
            .await
            .unwrap()
            .remove(0);
        let ti = &claim.instance;
        let reaped = TryEnd {
            key: ti.try_key(),
            worker_id: None,
            state: TaskState::Failed,
            exit_code: None,
            next_retry_at: None,
            outputs: Vec::new(),
            log_tail: Vec::new(),
        };
        assert!(store.end_try(&reaped, Utc::now()).await.unwrap());
        let claimed = ti.start_date.unwrap().timestamp_micros();
        let orphan = |claimed: i64| {
            std::process::Command::new("sleep")
                .arg("30")
                .env(
                    "UPDRAFT_WORKER_TRY",
                    format!("{name} {} {} {claimed}", ti.id, ti.try_number),
                )
                .process_group(0)
                .spawn()
                .unwrap()
        };
        // Its process still runs; so does one of a namesake in another database (claimed at
        // another instant), which is not this worker's to kill.
        let mut ours = orphan(claimed);
        let mut namesakes = orphan(claimed + 1);
        let stale = updraft_process::TryFolder::of_worker(store.url(), &name)
            .files(ti.try_key())
            .unwrap();
        std::fs::write(&stale.exit, "0\n").unwrap();
        let mut worker = Worker::new(store.clone(), settings(&name, "here"));
        worker.register().await.unwrap();
        let start = Instant::now();
        while ours.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the orphan is killed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            namesakes.try_wait().unwrap().is_none(),
            "the namesake's runs on"
        );
        namesakes.kill().unwrap();
        namesakes.wait().unwrap();
        assert_eq!(stale.recorded_exit(), None, "its files are gone");
        // The reaped try keeps the outcome the scheduler gave it.
        let after = store.get_task_instance(ti.id).await.unwrap().unwrap();
        assert_eq!(after.state, TaskState::Failed);
    })
    .await;
}

#[tokio::test]
async fn a_worker_runs_and_judges_a_try_by_its_plan_whatever_became_of_its_dag() {
    each_backend(|db| async move {
        let store = db.store().await;
        let folder = tempfile::tempdir().unwrap();
        let yaml = "version: 1\nid: planned\ntasks:\n  \
                    skips: {run: 'exit 3', skip_on_exit_code: [3]}\n  \
                    slow: {run: 'sleep 30', timeout: 1s, kill_grace: 1s}\n";
        let tis = queued(&store, folder.path(), yaml).await;
        // The stored DAG is unreadable now (as after a broken upgrade or a hand edit): the
        // worker needs none of it, every try has its plan.
        db.execute("UPDATE dag_version SET serialized = '{}'").await;
        let (stop, worker) = start(Worker::new(store.clone(), settings("w1", "here")));
        let skips = wait_until(&store, tis[0].id, "the try to end", |ti| {
            ti.state.is_finished()
        })
        .await;
        let slow = wait_until(&store, tis[1].id, "the try to time out", |ti| {
            ti.state.is_finished()
        })
        .await;
        stop.send_replace(true);
        worker.await.unwrap().unwrap();
        assert_eq!(
            skips.state,
            TaskState::Skipped,
            "{}",
            log_of(&store, first_try(&tis[0])).await
        );
        let log = log_of(&store, first_try(&tis[1])).await;
        assert_eq!(slow.state, TaskState::Failed, "{log}");
        assert!(log.contains("timed out after 1s"), "{log}");
    })
    .await;
}
