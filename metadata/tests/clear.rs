//! `Store::clear_task_instances`, on both backends.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use updraft_core::ids::{DagId, TaskId, TaskInstanceId, TryKey};
use updraft_core::scope::Scope;
use updraft_core::state::{DagRunState, RunType, TaskState};
use updraft_metadata::testing::each_backend;
use updraft_metadata::{
    Clear, ClearReport, CreateOutcome, DEFAULT_POOL, DagRun, DagSync, NewDagRun, NewTaskInstance,
    Store, TaskInstance, TryEnd, WorkerRef,
};

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, day, hour, 0, 0).unwrap()
}

fn dag_id(id: &str) -> DagId {
    DagId::parse(id).unwrap()
}

/// A store with DAG `sales` (version `v1`).
async fn with_dag(store: &Store) {
    let sync = DagSync {
        dag_id: dag_id("sales"),
        fileloc: "dags/sales.yaml".to_owned(),
        owner: "data-eng".to_owned(),
        description: None,
        tags: Vec::new(),
        schedule: None,
        timezone: "UTC".to_owned(),
        max_active_runs: 16,
        max_active_tasks: 16,
        paused_on_creation: false,
        version_hash: "v1".to_owned(),
        serialized: json!({}),
        source: "id: sales\n".to_owned(),
    };
    store.upsert_dag(&sync, at(1, 0)).await.unwrap();
}

/// Run `run_id` of `sales` on `day`, with task instances `extract` and `load` (2 retries).
async fn run_with_tasks(store: &Store, run_id: &str, day: u32) -> (DagRun, Vec<TaskInstance>) {
    let run = NewDagRun {
        dag_id: dag_id("sales"),
        run_id: run_id.to_owned(),
        run_type: RunType::Scheduled,
        logical_date: at(day, 0),
        data_interval_start: at(day, 0),
        data_interval_end: at(day, 0) + Duration::days(1),
        run_after: at(day, 0) + Duration::days(1),
        conf: json!({}),
        version_hash: "v1".to_owned(),
        backfill_id: None,
    };
    let CreateOutcome::Created(run) = store.create_dag_run(&run, at(day, 1)).await.unwrap() else {
        panic!("run {run_id} already exists");
    };
    let tasks: Vec<NewTaskInstance> = ["extract", "load"]
        .into_iter()
        .map(|task_id| NewTaskInstance {
            task_id: TaskId::parse(task_id).unwrap(),
            max_tries: 2,
            pool: DEFAULT_POOL.to_owned(),
            pool_slots: 1,
            queue: "default".to_owned(),
            priority_weight: 1,
            rendered_command: Some(json!({"run": "true"})),
        })
        .collect();
    let instances = store
        .create_task_instances(run.id, &tasks, at(day, 1))
        .await
        .unwrap();
    (run, instances)
}

/// Moves a run from `queued` through `running` to `end` (or leaves it running), two hours
/// after its logical date.
async fn move_run(store: &Store, run: &DagRun, end: DagRunState) {
    let now = run.logical_date + Duration::hours(2);
    assert!(
        store
            .set_dag_run_state(run.id, DagRunState::Queued, DagRunState::Running, now)
            .await
            .unwrap()
    );
    if end != DagRunState::Running {
        assert!(
            store
                .set_dag_run_state(run.id, DagRunState::Running, end, now)
                .await
                .unwrap()
        );
    }
}

/// Runs `tries` tries of `ti` the way the scheduler and a worker do, each with one log line,
/// the last ending in `last` (`running` leaves it running). No other task instance of the
/// store may be queued meanwhile.
async fn run_tries(store: &Store, ti: &TaskInstance, tries: i32, last: TaskState) {
    let worker = WorkerRef {
        id: "w1",
        hostname: "host",
    };
    for try_number in 1..=tries {
        let now = at(3, try_number as u32);
        let from = match try_number {
            1 => TaskState::None,
            _ => TaskState::UpForRetry,
        };
        for (a, b) in [
            (from, TaskState::Scheduled),
            (TaskState::Scheduled, TaskState::Queued),
        ] {
            assert!(store.set_task_state(ti.id, a, b, now).await.unwrap());
        }
        let queues = ["default".to_owned()];
        let claims = store
            .claim_task_instances(worker, &queues, Scope::Everything, 1, now)
            .await
            .unwrap();
        assert_eq!(claims[0].instance.try_number, try_number);
        let key = try_of(ti, try_number);
        store
            .append_task_log(key, format!("try {try_number}\n").as_bytes())
            .await
            .unwrap();
        let state = if try_number < tries {
            TaskState::UpForRetry
        } else {
            last
        };
        if state != TaskState::Running {
            let end = TryEnd {
                key,
                worker_id: Some(worker.id.to_owned()),
                state,
                exit_code: Some(1),
                next_retry_at: None,
                outputs: Vec::new(),
                log_tail: Vec::new(),
            };
            assert!(store.end_try(&end, now).await.unwrap());
        }
    }
}

/// The key of `instance`'s try `try_number`.
fn try_of(instance: &TaskInstance, try_number: i32) -> TryKey {
    TryKey {
        task_instance: instance.id,
        try_number,
    }
}

/// Clears `instance` with `retries` for its task.
fn clear(instance: &TaskInstance, retries: i32) -> Clear {
    Clear {
        task_instance: instance.id,
        retries,
    }
}

#[tokio::test]
async fn a_failed_task_instance_gets_a_fresh_budget_and_its_run_is_queued_again() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let (run, tis) = run_with_tasks(&store, "r1", 5).await;
        run_tries(&store, &tis[0], 3, TaskState::Failed).await;
        move_run(&store, &run, DagRunState::Failed).await;

        let report = store
            .clear_task_instances(&[clear(&tis[0], 2)], at(10, 0))
            .await
            .unwrap();
        assert_eq!(
            report,
            ClearReport {
                task_instances: 1,
                runs_requeued: 1
            }
        );

        let ti = store.get_task_instance(tis[0].id).await.unwrap().unwrap();
        assert_eq!(ti.state, TaskState::None);
        assert_eq!((ti.try_number, ti.max_tries), (3, 5));
        assert_eq!(ti.end_date, None);
        assert_eq!(ti.queued_at, None);
        assert_eq!(ti.next_retry_at, None);
        assert_eq!(ti.rendered_command, None);
        assert_eq!(ti.updated_at, at(10, 0));
        let tries = store.list_task_tries(ti.id).await.unwrap();
        assert_eq!(tries.len(), 3, "every try keeps its row");
        let log = store.read_task_log(try_of(&ti, 2), 0, 10).await.unwrap();
        assert_eq!(log[0].data, b"try 2\n", "every try keeps its log");

        let run = store.get_dag_run(run.id).await.unwrap().unwrap();
        assert_eq!(run.state, DagRunState::Queued);
        assert_eq!(run.queued_at, Some(at(10, 0)));
        assert_eq!((run.start_date, run.end_date), (None, None));

        // The other task instance was not named and is untouched.
        let other = store.get_task_instance(tis[1].id).await.unwrap().unwrap();
        assert_eq!(other, tis[1]);
    })
    .await;
}

#[tokio::test]
async fn a_successful_run_is_queued_again() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let (run, tis) = run_with_tasks(&store, "r1", 5).await;
        run_tries(&store, &tis[0], 1, TaskState::Success).await;
        run_tries(&store, &tis[1], 1, TaskState::Success).await;
        move_run(&store, &run, DagRunState::Success).await;

        let clears = [clear(&tis[0], 2), clear(&tis[1], 0)];
        let report = store
            .clear_task_instances(&clears, at(10, 0))
            .await
            .unwrap();
        assert_eq!(report.task_instances, 2);
        assert_eq!(report.runs_requeued, 1);
        let after = store.list_task_instances(run.id).await.unwrap();
        let budgets: Vec<_> = after.iter().map(|ti| (ti.state, ti.max_tries)).collect();
        assert_eq!(budgets, [(TaskState::None, 3), (TaskState::None, 1)]);
        let run = store.get_dag_run(run.id).await.unwrap().unwrap();
        assert_eq!(run.state, DagRunState::Queued);
    })
    .await;
}

#[tokio::test]
async fn a_running_run_stays_running_and_its_running_task_instance_is_cleared() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let (run, tis) = run_with_tasks(&store, "r1", 5).await;
        run_tries(&store, &tis[0], 1, TaskState::Running).await;
        move_run(&store, &run, DagRunState::Running).await;

        let report = store
            .clear_task_instances(&[clear(&tis[0], 2)], at(10, 0))
            .await
            .unwrap();
        assert_eq!(report.task_instances, 1);
        assert_eq!(report.runs_requeued, 0);
        let ti = store.get_task_instance(tis[0].id).await.unwrap().unwrap();
        assert_eq!(ti.state, TaskState::None);
        assert_eq!((ti.try_number, ti.max_tries), (1, 3));
        let run = store.get_dag_run(run.id).await.unwrap().unwrap();
        assert_eq!(run.state, DagRunState::Running);
        assert_eq!(run.start_date, Some(at(5, 2)));
    })
    .await;
}

#[tokio::test]
async fn clearing_several_runs_requeues_each_finished_one_once() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let (first, first_tis) = run_with_tasks(&store, "r1", 5).await;
        let (second, second_tis) = run_with_tasks(&store, "r2", 6).await;
        move_run(&store, &first, DagRunState::Failed).await;
        move_run(&store, &second, DagRunState::Success).await;
        let clears: Vec<Clear> = first_tis
            .iter()
            .chain(&second_tis)
            .map(|ti| clear(ti, 0))
            .collect();
        let report = store
            .clear_task_instances(&clears, at(10, 0))
            .await
            .unwrap();
        assert_eq!(
            report,
            ClearReport {
                task_instances: 4,
                runs_requeued: 2
            }
        );
    })
    .await;
}

#[tokio::test]
async fn clearing_nothing_changes_nothing() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let (run, _) = run_with_tasks(&store, "r1", 5).await;
        move_run(&store, &run, DagRunState::Failed).await;
        let report = store.clear_task_instances(&[], at(10, 0)).await.unwrap();
        assert_eq!(report, ClearReport::default());
        let run = store.get_dag_run(run.id).await.unwrap().unwrap();
        assert_eq!(run.state, DagRunState::Failed);
    })
    .await;
}

#[tokio::test]
async fn an_unknown_task_instance_is_not_found_and_nothing_is_written() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let (run, tis) = run_with_tasks(&store, "r1", 5).await;
        run_tries(&store, &tis[0], 1, TaskState::Failed).await;
        move_run(&store, &run, DagRunState::Failed).await;
        let error = store
            .clear_task_instances(
                &[
                    clear(&tis[0], 2),
                    Clear {
                        task_instance: TaskInstanceId(999_999),
                        retries: 0,
                    },
                ],
                at(10, 0),
            )
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "task instance 999999 not found");
        let ti = store.get_task_instance(tis[0].id).await.unwrap().unwrap();
        assert_eq!(ti.state, TaskState::Failed);
    })
    .await;
}
