//! The queue: queueing within limits, claims, heartbeats, ends of tries, zombies and wake-ups,
//! every test on both backends.

use std::time::Duration as StdDuration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use updraft_core::ids::{DagId, TaskId, TaskInstanceId, TryKey};
use updraft_core::rate::RateLimit;
use updraft_core::scope::Scope;
use updraft_core::state::{RunType, TaskMove, TaskState, WorkerState};
use updraft_metadata::testing::{TestDatabase, backends, each_backend};
use updraft_metadata::{
    Backend, Changes, Clear, CreateOutcome, DEFAULT_POOL, DagSync, Missed, NewDagRun, NewEvent,
    NewTaskInstance, QueueRequest, Store, TaskInstance, Topic, TryEnd, Worker, WorkerRef,
};

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 2, 0, minute, 0).unwrap()
}

const WORKER: WorkerRef<'static> = WorkerRef {
    id: "w1",
    hostname: "host-a",
};

fn default_queue() -> Vec<String> {
    vec!["default".to_owned()]
}

/// DAG `sales` with `max_active_tasks`, one run, and task instances `(task, pool, slots,
/// queue, priority)`, all `scheduled`.
async fn scheduled(
    store: &Store,
    max_active_tasks: i32,
    tasks: &[(&str, &str, i32, &str, i32)],
) -> Vec<TaskInstance> {
    let instances = created(store, max_active_tasks, tasks).await;
    schedule_all(store, &instances).await;
    instances
}

/// Moves `instances` from `none` to `scheduled`.
async fn schedule_all(store: &Store, instances: &[TaskInstance]) {
    let moves: Vec<_> = instances
        .iter()
        .map(|ti| TaskMove {
            task_instance: ti.id,
            from: TaskState::None,
            to: TaskState::Scheduled,
        })
        .collect();
    assert!(
        store
            .set_task_states(&moves, at(0))
            .await
            .unwrap()
            .iter()
            .all(|m| *m)
    );
}

/// [`scheduled`], but the task instances are left in state `none`.
async fn created(
    store: &Store,
    max_active_tasks: i32,
    tasks: &[(&str, &str, i32, &str, i32)],
) -> Vec<TaskInstance> {
    store
        .upsert_dag(
            &DagSync {
                dag_id: DagId::parse("sales").unwrap(),
                fileloc: "dags/sales.yaml".to_owned(),
                owner: "data-eng".to_owned(),
                description: None,
                tags: vec![],
                schedule: None,
                timezone: "UTC".to_owned(),
                max_active_runs: 16,
                max_active_tasks,
                paused_on_creation: false,
                version_hash: "v1".to_owned(),
                serialized: json!({}),
                source: String::new(),
            },
            at(0),
        )
        .await
        .unwrap();
    run_with_tasks(store, "r1", at(0), tasks).await
}

/// Run `run_id` of DAG `sales` at `logical_date`, with task instances `(task, pool, slots,
/// queue, priority)` in state `none`.
async fn run_with_tasks(
    store: &Store,
    run_id: &str,
    logical_date: DateTime<Utc>,
    tasks: &[(&str, &str, i32, &str, i32)],
) -> Vec<TaskInstance> {
    let run = NewDagRun {
        dag_id: DagId::parse("sales").unwrap(),
        run_id: run_id.to_owned(),
        run_type: RunType::Manual,
        logical_date,
        data_interval_start: logical_date,
        data_interval_end: logical_date,
        run_after: at(0),
        conf: json!({}),
        version_hash: "v1".to_owned(),
        backfill_id: None,
    };
    let CreateOutcome::Created(run) = store.create_dag_run(&run, at(0)).await.unwrap() else {
        panic!("run exists");
    };
    let new: Vec<NewTaskInstance> = tasks
        .iter()
        .map(|&(task, pool, slots, queue, priority)| NewTaskInstance {
            task_id: TaskId::parse(task).unwrap(),
            max_tries: 1,
            pool: pool.to_owned(),
            pool_slots: slots,
            queue: queue.to_owned(),
            priority_weight: priority,
            rendered_command: None,
        })
        .collect();
    store
        .create_task_instances(run.id, &new, at(0))
        .await
        .unwrap()
}

/// `count` task instances `t00`, `t01`, ... of one run, in the default pool and queue, queued
/// at `at(1)`, their DAG's `max_active_tasks` leaving room for them all.
async fn queued_alike(store: &Store, count: usize) -> Vec<TaskInstance> {
    let tasks: Vec<String> = (0..count).map(|i| format!("t{i:02}")).collect();
    let specs: Vec<_> = tasks
        .iter()
        .map(|task| (task.as_str(), DEFAULT_POOL, 1, "default", 1))
        .collect();
    let tis = scheduled(store, count as i32, &specs).await;
    store
        .queue_task_instances(&requests(&tis), at(1))
        .await
        .unwrap();
    tis
}

/// [`queued_alike`], all claimed by [`WORKER`] at `at(2)` under their first try.
async fn claimed_alike(store: &Store, count: usize) -> Vec<TaskInstance> {
    let tis = queued_alike(store, count).await;
    store
        .claim_task_instances(WORKER, &default_queue(), Scope::Everything, count, at(2))
        .await
        .unwrap();
    tis
}

/// The key of a claimed task instance's first try.
fn first_try(instance: &TaskInstance) -> TryKey {
    TryKey {
        task_instance: instance.id,
        try_number: 1,
    }
}

fn requests(instances: &[TaskInstance]) -> Vec<QueueRequest> {
    instances
        .iter()
        .map(|ti| QueueRequest {
            task_instance: ti.id,
            plan: json!({"command": {"run": format!("echo {}", ti.task_id)}}),
            rate_limit: None,
        })
        .collect()
}

async fn state_of(store: &Store, id: TaskInstanceId) -> TaskState {
    store.get_task_instance(id).await.unwrap().unwrap().state
}

/// A scheduler's step moves task instances and queues those it made ready in one
/// transaction, within the limits, and does not queue one whose move did not happen.
#[tokio::test]
async fn a_step_moves_and_queues_what_it_made_ready_in_one_transaction() {
    each_backend(|db| async move {
        let store = db.store().await;
        let tis = created(
            &store,
            2,
            &[
                ("a", DEFAULT_POOL, 1, "default", 3),
                ("b", DEFAULT_POOL, 1, "default", 2),
                ("c", DEFAULT_POOL, 1, "default", 1),
            ],
        )
        .await;
        // Another party moved `a` first: its move fails, and it is not queued.
        assert!(
            store
                .set_task_state(tis[0].id, TaskState::None, TaskState::Skipped, at(1))
                .await
                .unwrap()
        );
        let moves: Vec<_> = tis
            .iter()
            .map(|ti| TaskMove {
                task_instance: ti.id,
                from: TaskState::None,
                to: TaskState::Scheduled,
            })
            .collect();
        let stepped = store
            .step_task_instances(&moves, &requests(&tis), at(2))
            .await
            .unwrap();
        assert_eq!(stepped.moved, [false, true, true]);
        assert_eq!(
            stepped.queued,
            [tis[1].id, tis[2].id],
            "max_active_tasks 2 has room"
        );
        let states: Vec<TaskState> = store
            .list_task_instances(tis[0].dag_run_id)
            .await
            .unwrap()
            .iter()
            .map(|ti| ti.state)
            .collect();
        assert_eq!(
            states,
            [TaskState::Skipped, TaskState::Queued, TaskState::Queued]
        );
        // A move the state machine forbids is refused before anything is written.
        let refused = store
            .step_task_instances(
                &[TaskMove {
                    task_instance: tis[1].id,
                    from: TaskState::Success,
                    to: TaskState::Running,
                }],
                &[],
                at(3),
            )
            .await;
        assert!(
            matches!(
                refused,
                Err(updraft_metadata::Error::IllegalTaskTransition { .. })
            ),
            "{refused:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn queueing_stops_at_the_pools_slots() {
    each_backend(|db| async move {
        let store = db.store().await;
        store.set_pool("db", 3, None, None).await.unwrap();
        let tis = scheduled(
            &store,
            16,
            &[
                ("a", "db", 2, "default", 1),
                ("b", "db", 2, "default", 1),
                ("c", "db", 1, "default", 1),
            ],
        )
        .await;
        // a takes 2 of 3 slots; b (2) does not fit, c (1) does.
        let queued = store
            .queue_task_instances(&requests(&tis), at(1))
            .await
            .unwrap();
        assert_eq!(queued, [tis[0].id, tis[2].id]);
        assert_eq!(state_of(&store, tis[1].id).await, TaskState::Scheduled);
        let a = store.get_task_instance(tis[0].id).await.unwrap().unwrap();
        assert_eq!(a.queued_at, Some(at(1)));
        assert_eq!(
            a.rendered_command,
            Some(json!({"command": {"run": "echo a"}}))
        );
        // Nothing more fits until one finishes.
        assert!(
            store
                .queue_task_instances(&requests(&tis[1..2]), at(2))
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn queueing_stops_at_max_active_tasks_and_waits_for_missing_pools() {
    each_backend(|db| async move {
        let store = db.store().await;
        let tis = scheduled(
            &store,
            2,
            &[
                ("a", DEFAULT_POOL, 1, "default", 1),
                ("b", "nowhere", 1, "default", 1),
                ("c", DEFAULT_POOL, 1, "default", 1),
                ("d", DEFAULT_POOL, 1, "default", 1),
            ],
        )
        .await;
        let queued = store
            .queue_task_instances(&requests(&tis), at(1))
            .await
            .unwrap();
        assert_eq!(queued, [tis[0].id, tis[2].id]);
        assert_eq!(state_of(&store, tis[1].id).await, TaskState::Scheduled);
        assert_eq!(state_of(&store, tis[3].id).await, TaskState::Scheduled);
    })
    .await;
}

#[tokio::test]
async fn claims_take_the_highest_priority_of_the_workers_queues_first() {
    each_backend(|db| async move {
        let store = db.store().await;
        let tis = scheduled(
            &store,
            16,
            &[
                ("low", DEFAULT_POOL, 1, "default", 1),
                ("high", DEFAULT_POOL, 1, "default", 10),
                ("gpu", DEFAULT_POOL, 1, "gpu", 100),
            ],
        )
        .await;
        store
            .queue_task_instances(&requests(&tis), at(1))
            .await
            .unwrap();
        let claims = store
            .claim_task_instances(WORKER, &default_queue(), Scope::Everything, 1, at(2))
            .await
            .unwrap();
        assert_eq!(claims.len(), 1);
        let claim = &claims[0];
        assert_eq!(claim.instance.task_id.as_str(), "high");
        assert_eq!(claim.instance.state, TaskState::Running);
        assert_eq!(claim.instance.try_number, 1);
        assert_eq!(claim.instance.worker_id.as_deref(), Some("w1"));
        assert_eq!(claim.fileloc, "dags/sales.yaml");
        let tries = store.list_task_tries(claim.instance.id).await.unwrap();
        assert_eq!(tries.len(), 1);
        assert_eq!(tries[0].state, TaskState::Running);
        assert_eq!(tries[0].hostname.as_deref(), Some("host-a"));
        // The gpu task is not on this worker's queues.
        let rest = store
            .claim_task_instances(WORKER, &default_queue(), Scope::Everything, 10, at(3))
            .await
            .unwrap();
        let names: Vec<&str> = rest.iter().map(|c| c.instance.task_id.as_str()).collect();
        assert_eq!(names, ["low"]);
        assert_eq!(state_of(&store, tis[2].id).await, TaskState::Queued);
    })
    .await;
}

#[tokio::test]
async fn concurrent_claimers_never_take_the_same_task_instance() {
    each_backend(|db| async move {
        let store = db.store().await;
        let tis = queued_alike(&store, 40).await;
        let claimers = (0..4).map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("w{n}");
                let mut mine = Vec::new();
                loop {
                    let worker = WorkerRef {
                        id: &id,
                        hostname: "h",
                    };
                    let claims = store
                        .claim_task_instances(
                            worker,
                            &["default".to_owned()],
                            Scope::Everything,
                            3,
                            at(2),
                        )
                        .await
                        .unwrap();
                    if claims.is_empty() {
                        return mine;
                    }
                    mine.extend(claims.into_iter().map(|c| c.instance.id));
                }
            })
        });
        let mut all: Vec<TaskInstanceId> = Vec::new();
        for claimer in claimers {
            all.extend(claimer.await.unwrap());
        }
        all.sort_unstable();
        let mut expected: Vec<TaskInstanceId> = tis.iter().map(|ti| ti.id).collect();
        expected.sort_unstable();
        assert_eq!(all, expected, "each task instance claimed exactly once");
    })
    .await;
}

#[tokio::test]
async fn heartbeats_answer_which_tries_are_still_the_workers() {
    each_backend(|db| async move {
        let store = db.store().await;
        let tis = claimed_alike(&store, 2).await;
        let mut ours = store.heartbeat_worker("w1", None, at(3)).await.unwrap();
        ours.sort_unstable();
        assert_eq!(ours, [first_try(&tis[0]), first_try(&tis[1])]);
        // A user marks b failed: the worker must kill it.
        assert_eq!(
            store
                .set_task_states(
                    &[TaskMove {
                        task_instance: tis[1].id,
                        from: TaskState::Running,
                        to: TaskState::Failed
                    }],
                    at(4)
                )
                .await
                .unwrap(),
            [true]
        );
        assert_eq!(
            store.heartbeat_worker("w1", None, at(5)).await.unwrap(),
            [first_try(&tis[0])]
        );
        assert_eq!(
            store
                .get_task_instance(tis[0].id)
                .await
                .unwrap()
                .unwrap()
                .heartbeat_at,
            Some(at(5))
        );
    })
    .await;
}

/// On Postgres a heartbeat skips the rows another transaction holds (an end of the worker being
/// written) instead of waiting for them: waiting, it deadlocked with a batch of ends that
/// locked the same rows in another order. The held try is still the worker's in the answer.
/// (SQLite has one writer at a time: there a heartbeat waits for the write lock.)
#[tokio::test]
async fn a_heartbeat_does_not_wait_for_rows_another_transaction_holds() {
    use sqlx::Connection;

    if !backends().contains(&Backend::Postgres) {
        eprintln!("skipped: needs Postgres");
        return;
    }
    let db = TestDatabase::new(Backend::Postgres).await;
    let store = db.store().await;
    let tis = claimed_alike(&store, 2).await;
    let mut holder = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("SELECT id FROM task_instance WHERE id = $1 FOR UPDATE")
        .bind(tis[0].id.0)
        .execute(&mut *held)
        .await
        .unwrap();

    let heartbeat = store.heartbeat_worker("w1", None, at(3));
    let mut ours = tokio::time::timeout(StdDuration::from_secs(10), heartbeat)
        .await
        .expect("the heartbeat waited for the held row")
        .unwrap();
    ours.sort_unstable();
    assert_eq!(ours, [first_try(&tis[0]), first_try(&tis[1])]);
    held.rollback().await.unwrap();
    let mut beats = Vec::new();
    for ti in &tis {
        let ti = store.get_task_instance(ti.id).await.unwrap().unwrap();
        beats.push(ti.heartbeat_at);
    }
    assert_eq!(beats, [Some(at(2)), Some(at(3))], "only the free row beat");
    holder.close().await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn an_ended_try_records_its_outcome_outputs_and_wakes_the_scheduler() {
    each_backend(|db| async move {
        let store = db.store().await;
        let mut wakeups = store.subscribe(Topic::Scheduler);
        let tis = scheduled(&store, 16, &[("a", DEFAULT_POOL, 1, "default", 1)]).await;
        store
            .queue_task_instances(&requests(&tis), at(1))
            .await
            .unwrap();
        store
            .claim_task_instances(WORKER, &default_queue(), Scope::Everything, 1, at(2))
            .await
            .unwrap();
        // The run's creation woke it once already; a new subscriber's first look is at
        // everything (and so is its listener's first, on Postgres).
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        wakeups.wait(StdDuration::ZERO).await;
        assert!(wakeups.take_changes().everything);
        // A scheduler in another process is woken too (Postgres).
        let elsewhere = db.store().await;
        let mut there = elsewhere.subscribe(Topic::Scheduler);
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        there.wait(StdDuration::ZERO).await;
        there.take_changes();
        let outputs = vec![("rows".to_owned(), "42".to_owned())];
        let end = TryEnd {
            key: first_try(&tis[0]),
            worker_id: Some("w1".to_owned()),
            state: TaskState::UpForRetry,
            exit_code: Some(3),
            next_retry_at: Some(at(10)),
            outputs: outputs.clone(),
            log_tail: b"last words\n".to_vec(),
        };
        assert!(store.end_try(&end, at(4)).await.unwrap());
        assert!(
            wakeups.wait(StdDuration::from_secs(5)).await,
            "the scheduler is woken"
        );
        let ended = Changes::of_instances(&[(tis[0].dag_run_id, tis[0].id)]);
        assert_eq!(
            wakeups.take_changes(),
            ended,
            "it says which task instance of which run"
        );
        if db.backend() == Backend::Postgres {
            assert!(
                there.wait(StdDuration::from_secs(5)).await,
                "LISTEN/NOTIFY reached the other store"
            );
            assert_eq!(there.take_changes(), ended, "the payload says it");
        }
        let ti = store.get_task_instance(tis[0].id).await.unwrap().unwrap();
        assert_eq!(
            (ti.state, ti.next_retry_at, ti.end_date),
            (TaskState::UpForRetry, Some(at(10)), Some(at(4)))
        );
        let tries = store.list_task_tries(ti.id).await.unwrap();
        assert_eq!(
            (tries[0].state, tries[0].exit_code),
            (TaskState::UpForRetry, Some(3))
        );
        let stored = store.list_task_outputs(ti.dag_run_id).await.unwrap();
        assert_eq!(
            (stored[0].name.as_str(), stored[0].value.as_str()),
            ("rows", "42")
        );
        let log = store.read_task_log(first_try(&ti), 0, 10).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(
            log[0].data, b"last words\n",
            "the log's tail went with the end"
        );
        let events = store.list_events(None, 1).await.unwrap();
        assert_eq!(events[0].event, "try_ended");
        assert_eq!(events[0].actor, "worker w1");
        assert_eq!(events[0].task_id.as_ref().map(|t| t.as_str()), Some("a"));
        assert_eq!(
            events[0].details,
            json!({"state": "up_for_retry", "try_number": 1, "exit_code": 3})
        );
        // Ending it again changes nothing.
        assert!(!store.end_try(&end, at(5)).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn a_try_moved_away_keeps_its_new_state_when_its_process_ends() {
    each_backend(|db| async move {
        let store = db.store().await;
        let tis = scheduled(&store, 16, &[("a", DEFAULT_POOL, 1, "default", 1)]).await;
        store
            .queue_task_instances(&requests(&tis), at(1))
            .await
            .unwrap();
        store
            .claim_task_instances(WORKER, &default_queue(), Scope::Everything, 1, at(2))
            .await
            .unwrap();
        store
            .set_task_states(
                &[TaskMove {
                    task_instance: tis[0].id,
                    from: TaskState::Running,
                    to: TaskState::Skipped,
                }],
                at(3),
            )
            .await
            .unwrap();
        let end = TryEnd {
            key: first_try(&tis[0]),
            worker_id: Some("w1".to_owned()),
            state: TaskState::Failed,
            exit_code: None,
            next_retry_at: None,
            outputs: Vec::new(),
            log_tail: Vec::new(),
        };
        assert!(!store.end_try(&end, at(4)).await.unwrap());
        assert_eq!(state_of(&store, tis[0].id).await, TaskState::Skipped);
        let tries = store.list_task_tries(tis[0].id).await.unwrap();
        assert_eq!(tries[0].state, TaskState::Failed, "the try row still ends");
    })
    .await;
}

#[tokio::test]
async fn ends_written_together_each_record_their_own_outcome() {
    each_backend(|db| async move {
        let store = db.store().await;
        let tis = queued_alike(&store, 40).await;
        // More than one claim statement takes on Postgres (32): the claim goes on.
        let claims = store
            .claim_task_instances(WORKER, &default_queue(), Scope::Everything, 40, at(2))
            .await
            .unwrap();
        assert_eq!(claims.len(), 40);
        // One of them was marked meanwhile: its end must not move it back.
        let moved_away = tis[1].id;
        store
            .set_task_states(
                &[TaskMove {
                    task_instance: moved_away,
                    from: TaskState::Running,
                    to: TaskState::Skipped,
                }],
                at(3),
            )
            .await
            .unwrap();
        let ends: Vec<TryEnd> = tis
            .iter()
            .enumerate()
            .map(|(i, ti)| TryEnd {
                key: first_try(ti),
                worker_id: Some("w1".to_owned()),
                state: if i % 2 == 0 {
                    TaskState::Success
                } else {
                    TaskState::Failed
                },
                exit_code: Some((i % 2) as i32),
                next_retry_at: None,
                outputs: vec![("index".to_owned(), i.to_string())],
                log_tail: format!("try of {} \u{e9}\n", ti.task_id)
                    .into_bytes()
                    .into_iter()
                    .chain([0xff])
                    .collect(),
            })
            .collect();
        let moved = store.end_tries(&ends, at(4)).await.unwrap();
        let expected: Vec<bool> = tis.iter().map(|ti| ti.id != moved_away).collect();
        assert_eq!(moved, expected);
        for (i, ti) in tis.iter().enumerate() {
            let stored = store.get_task_instance(ti.id).await.unwrap().unwrap();
            let tries = store.list_task_tries(ti.id).await.unwrap();
            assert_eq!(tries[0].state, ends[i].state, "every try row ends");
            assert_eq!(tries[0].exit_code, ends[i].exit_code);
            let log = store.read_task_log(first_try(ti), 0, 10).await.unwrap();
            assert_eq!(log.len(), 1);
            assert_eq!(log[0].data, ends[i].log_tail, "bytes survive as they were");
            if ti.id == moved_away {
                assert_eq!(stored.state, TaskState::Skipped);
            } else {
                assert_eq!(stored.state, ends[i].state);
                assert_eq!(stored.end_date, Some(at(4)));
            }
        }
        let outputs = store.list_task_outputs(tis[0].dag_run_id).await.unwrap();
        assert_eq!(
            outputs.len(),
            39,
            "outputs only where the task instance moved"
        );
        let events = store.list_events(None, 100).await.unwrap();
        let ended: Vec<_> = events.iter().filter(|e| e.event == "try_ended").collect();
        assert_eq!(ended.len(), 39);
        let third = ended
            .iter()
            .find(|e| e.task_id.as_ref().map(|t| t.as_str()) == Some("t02"))
            .unwrap();
        assert_eq!(
            third.details,
            json!({"state": "success", "try_number": 1, "exit_code": 0})
        );
        assert_eq!(third.actor, "worker w1");
        // Nothing to end is no write; a forbidden move is refused before any write.
        assert!(store.end_tries(&[], at(5)).await.unwrap().is_empty());
        let mut queued_again = ends[0].clone();
        queued_again.state = TaskState::Queued;
        assert!(store.end_tries(&[queued_again], at(5)).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn zombies_are_running_tries_with_a_stale_heartbeat() {
    each_backend(|db| async move {
        let store = db.store().await;
        let tis = scheduled(
            &store,
            16,
            &[
                ("a", DEFAULT_POOL, 1, "default", 1),
                ("b", DEFAULT_POOL, 1, "default", 1),
            ],
        )
        .await;
        store
            .queue_task_instances(&requests(&tis), at(1))
            .await
            .unwrap();
        store
            .claim_task_instances(WORKER, &default_queue(), Scope::Everything, 1, at(2))
            .await
            .unwrap();
        let other = WorkerRef {
            id: "w2",
            hostname: "host-b",
        };
        store
            .claim_task_instances(other, &default_queue(), Scope::Everything, 1, at(2))
            .await
            .unwrap();
        store.heartbeat_worker("w2", None, at(9)).await.unwrap();
        let zombies = store.list_zombies(at(5)).await.unwrap();
        assert_eq!(zombies.len(), 1);
        assert_eq!(zombies[0].worker_id.as_deref(), Some("w1"));
        let end = TryEnd {
            key: first_try(&zombies[0]),
            worker_id: None,
            state: TaskState::Failed,
            exit_code: None,
            next_retry_at: None,
            outputs: Vec::new(),
            log_tail: Vec::new(),
        };
        assert!(store.end_try(&end, at(10)).await.unwrap());
        assert!(store.list_zombies(at(5)).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn workers_and_schedulers_register_and_heartbeat() {
    each_backend(|db| async move {
        let store = db.store().await;
        assert_eq!(store.last_scheduler_heartbeat().await.unwrap(), None);
        store
            .heartbeat_scheduler("s1", "host-a", at(0), at(1))
            .await
            .unwrap();
        store
            .heartbeat_scheduler("s1", "host-a", at(0), at(2))
            .await
            .unwrap();
        assert_eq!(store.last_scheduler_heartbeat().await.unwrap(), Some(at(2)));
        let worker = Worker {
            id: "w1".to_owned(),
            hostname: "host-a".to_owned(),
            queues: vec!["default".to_owned(), "gpu".to_owned()],
            concurrency: 8,
            state: WorkerState::Running,
            started_at: at(0),
            heartbeat_at: at(0),
            pid: Some(42),
        };
        assert!(store.claim_worker_name(&worker, None).await.unwrap());
        // Registered meanwhile by another process: not taken.
        assert!(!store.claim_worker_name(&worker, None).await.unwrap());
        store
            .heartbeat_worker("w1", Some(at(0)), at(3))
            .await
            .unwrap();
        store
            .set_worker_state("w1", WorkerState::Stopping)
            .await
            .unwrap();
        let listed = store.list_workers().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].queues, ["default", "gpu"]);
        assert_eq!(
            (listed[0].state, listed[0].heartbeat_at),
            (WorkerState::Stopping, at(3))
        );
        // Taken over from the row as read before it heartbeated: refused; from the row as it
        // is: taken, running, and the previous holder's heartbeat is refused.
        let seen = listed[0].clone();
        let stale = Worker {
            heartbeat_at: at(1),
            ..seen.clone()
        };
        let again = Worker {
            started_at: at(4),
            heartbeat_at: at(4),
            pid: Some(43),
            ..worker.clone()
        };
        assert!(!store.claim_worker_name(&again, Some(&stale)).await.unwrap());
        assert!(store.claim_worker_name(&again, Some(&seen)).await.unwrap());
        let taken = store.get_worker("w1").await.unwrap().unwrap();
        assert_eq!((taken.state, taken.pid), (WorkerState::Running, Some(43)));
        assert!(matches!(
            store.heartbeat_worker("w1", Some(at(0)), at(5)).await,
            Err(updraft_metadata::Error::Conflict(_))
        ));
        store
            .heartbeat_worker("w1", Some(at(4)), at(5))
            .await
            .unwrap();
        // Its tries reaped, a worker is lost until it heartbeats again; a stopped one stays so.
        store.mark_workers_lost(at(6)).await.unwrap();
        let lost = store.get_worker("w1").await.unwrap().unwrap();
        assert_eq!(lost.status(at(6)), updraft_metadata::WorkerStatus::Lost);
        store
            .heartbeat_worker("w1", Some(at(4)), at(7))
            .await
            .unwrap();
        let back = store.get_worker("w1").await.unwrap().unwrap();
        assert_eq!(back.status(at(7)), updraft_metadata::WorkerStatus::Running);
        store
            .set_worker_state("w1", WorkerState::Stopped)
            .await
            .unwrap();
        store.mark_workers_lost(at(20)).await.unwrap();
        assert_eq!(
            store.get_worker("w1").await.unwrap().unwrap().state,
            WorkerState::Stopped
        );
        assert_eq!(
            store.get_worker("w1").await.unwrap().map(|w| w.concurrency),
            Some(8)
        );
        assert_eq!(store.get_worker("w2").await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn worker_loads_count_the_task_instances_running_under_each_worker() {
    each_backend(|db| async move {
        let store = db.store().await;
        for (id, hostname) in [("w1", "host-a"), ("w2", "host-b"), ("w3", "host-a")] {
            let worker = Worker {
                id: id.to_owned(),
                hostname: hostname.to_owned(),
                queues: default_queue(),
                concurrency: 4,
                state: WorkerState::Running,
                started_at: at(0),
                heartbeat_at: at(0),
                pid: None,
            };
            assert!(store.claim_worker_name(&worker, None).await.unwrap());
        }
        let tis = scheduled(
            &store,
            16,
            &[
                ("a", DEFAULT_POOL, 1, "default", 1),
                ("b", DEFAULT_POOL, 1, "default", 1),
                ("c", DEFAULT_POOL, 1, "default", 1),
            ],
        )
        .await;
        store
            .queue_task_instances(&requests(&tis), at(1))
            .await
            .unwrap();
        for (worker, limit) in [("w1", 2), ("w2", 1)] {
            let worker = WorkerRef {
                id: worker,
                hostname: "host",
            };
            let claimed = store
                .claim_task_instances(worker, &default_queue(), Scope::Everything, limit, at(2))
                .await
                .unwrap();
            assert_eq!(claimed.len(), limit);
        }
        // w1 claimed a and b, w2 claimed c (same priority: by id); a try that ended does not
        // count.
        let ended = TryEnd {
            key: first_try(&tis[2]),
            worker_id: Some("w2".to_owned()),
            state: TaskState::Success,
            exit_code: Some(0),
            next_retry_at: None,
            outputs: Vec::new(),
            log_tail: Vec::new(),
        };
        assert!(store.end_try(&ended, at(3)).await.unwrap());
        let loads: Vec<(String, String, i64)> = store
            .list_worker_loads()
            .await
            .unwrap()
            .into_iter()
            .map(|load| (load.worker.hostname, load.worker.id, load.running))
            .collect();
        assert_eq!(
            loads,
            [
                ("host-a".to_owned(), "w1".to_owned(), 2),
                ("host-a".to_owned(), "w3".to_owned(), 0),
                ("host-b".to_owned(), "w2".to_owned(), 0),
            ]
        );
    })
    .await;
}

#[test]
fn a_worker_that_stopped_heartbeating_is_lost_unless_it_stopped() {
    use updraft_metadata::WorkerStatus;
    let worker = |state: WorkerState| Worker {
        id: "w1".to_owned(),
        hostname: "host-a".to_owned(),
        queues: default_queue(),
        concurrency: 4,
        state,
        started_at: at(0),
        heartbeat_at: at(0),
        pid: None,
    };
    let soon = at(0) + chrono::Duration::seconds(5);
    let late = at(0) + chrono::Duration::seconds(11);
    assert_eq!(
        worker(WorkerState::Running).status(soon),
        WorkerStatus::Running
    );
    assert_eq!(
        worker(WorkerState::Stopping).status(soon),
        WorkerStatus::Stopping
    );
    assert_eq!(
        worker(WorkerState::Running).status(late),
        WorkerStatus::Lost
    );
    assert_eq!(
        worker(WorkerState::Stopping).status(late),
        WorkerStatus::Lost
    );
    assert_eq!(
        worker(WorkerState::Stopped).status(late),
        WorkerStatus::Stopped
    );
}

#[tokio::test]
async fn queueing_wakes_the_workers_of_another_store_on_postgres_and_this_one_anywhere() {
    each_backend(|db| async move {
        let store = db.store().await;
        let mut here = store.subscribe(Topic::Workers);
        let elsewhere = db.store().await;
        let mut there = elsewhere.subscribe(Topic::Workers);
        // Give the listener time to start listening.
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        there.wait(StdDuration::ZERO).await;
        let tis = scheduled(&store, 16, &[("a", DEFAULT_POOL, 1, "default", 1)]).await;
        store
            .queue_task_instances(&requests(&tis), at(1))
            .await
            .unwrap();
        assert!(here.wait(StdDuration::from_secs(5)).await);
        if db.backend() == Backend::Postgres {
            assert!(
                there.wait(StdDuration::from_secs(5)).await,
                "LISTEN/NOTIFY reached the other store"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn schedulers_queueing_at_once_never_exceed_pool_slots_or_queue_twice() {
    each_backend(|db| async move {
        let store = db.store().await;
        store.set_pool("two", 2, None, None).await.unwrap();
        let tasks: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
        let specs: Vec<(&str, &str, i32, &str, i32)> = tasks
            .iter()
            .map(|task| (task.as_str(), "two", 1, "default", 1))
            .collect();
        let tis = scheduled(&store, 16, &specs).await;
        // Three stores (three schedulers) offer the same task instances at once, in different
        // orders, from the same snapshot.
        let mut attempts = tokio::task::JoinSet::new();
        for offset in 0..3 {
            let other = db.store().await;
            let mut offered = requests(&tis);
            offered.rotate_left(offset * 3);
            attempts.spawn(async move {
                let queued = other.queue_task_instances(&offered, at(1)).await.unwrap();
                other.close().await;
                queued
            });
        }
        let mut queued = Vec::new();
        while let Some(attempt) = attempts.join_next().await {
            queued.extend(attempt.unwrap());
        }
        assert_eq!(
            queued.len(),
            2,
            "two slots, each task instance queued once: {queued:?}"
        );
        let mut states = Vec::new();
        for ti in &tis {
            states.push(state_of(&store, ti.id).await);
        }
        assert_eq!(
            states.iter().filter(|s| **s == TaskState::Queued).count(),
            2,
            "{states:?}"
        );
    })
    .await;
}

/// Task `call` of DAG `sales`, `scheduled` in each of `runs` runs (`r1`, `r2`, ...).
async fn one_task_in_runs(store: &Store, runs: u32) -> Vec<TaskInstance> {
    let call = [("call", DEFAULT_POOL, 1, "default", 1)];
    let mut instances = scheduled(store, 100, &call).await;
    for n in 2..=runs {
        let more = run_with_tasks(store, &format!("r{n}"), at(n), &call).await;
        schedule_all(store, &more).await;
        instances.extend(more);
    }
    instances
}

fn seconds(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// [`WORKER`] claims what is queued (up to 10) at `now`; returns how many it claimed.
async fn claim_all(store: &Store, now: DateTime<Utc>) -> usize {
    store
        .claim_task_instances(WORKER, &default_queue(), Scope::Everything, 10, now)
        .await
        .unwrap()
        .len()
}

/// A task's rate limit holds across its runs: the queued count at once, and the tries started
/// in the window until a period after each started; the refused are told when to ask again.
#[tokio::test]
async fn a_tasks_rate_limit_counts_its_queued_and_started_tries_across_runs() {
    each_backend(|db| async move {
        let store = db.store().await;
        let tis = one_task_in_runs(&store, 5).await;
        let limited = |tis: &[TaskInstance]| -> Vec<QueueRequest> {
            requests(tis)
                .into_iter()
                .map(|request| QueueRequest {
                    rate_limit: Some("2/m".parse().unwrap()),
                    ..request
                })
                .collect()
        };
        let stepped = store
            .step_task_instances(&[], &limited(&tis), at(1))
            .await
            .unwrap();
        assert_eq!(stepped.queued, [tis[0].id, tis[1].id]);
        // Nothing started yet: the queued count until a period from now.
        for ti in &tis[2..] {
            assert_eq!(stepped.rate_limited[&ti.id], at(2), "{}", ti.run_id);
        }
        assert_eq!(stepped.rate_limited.len(), 3);
        assert_eq!(claim_all(&store, at(1) + seconds(30)).await, 2);
        // A minute after the first queueing the two tries started 30 s ago still count.
        let stepped = store
            .step_task_instances(&[], &limited(&tis[2..]), at(2))
            .await
            .unwrap();
        assert!(stepped.queued.is_empty());
        assert_eq!(stepped.rate_limited[&tis[2].id], at(2) + seconds(30));
        // Once they left the window, two more.
        let stepped = store
            .step_task_instances(&[], &limited(&tis[2..]), at(2) + seconds(31))
            .await
            .unwrap();
        assert_eq!(stepped.queued, [tis[2].id, tis[3].id]);
        assert_eq!(state_of(&store, tis[4].id).await, TaskState::Scheduled);
        // Without its limit the task queues at once.
        let stepped = store
            .step_task_instances(&[], &requests(&tis[4..]), at(2) + seconds(32))
            .await
            .unwrap();
        assert_eq!(stepped.queued, [tis[4].id]);
    })
    .await;
}

/// A pool's rate limit is kept with the pool and holds for all its tasks.
#[tokio::test]
async fn a_pools_rate_limit_holds_for_all_its_tasks() {
    each_backend(|db| async move {
        let store = db.store().await;
        let three: RateLimit = "3/m".parse().unwrap();
        let pool = store
            .set_pool("api", 10, None, Some(Some(three)))
            .await
            .unwrap();
        assert_eq!(pool.rate_limit, Some(three));
        // Resizing keeps the limit.
        let pool = store.set_pool("api", 20, None, None).await.unwrap();
        assert_eq!(pool.rate_limit, Some(three));
        let tasks = ["a", "b", "c", "d", "e"];
        let specs: Vec<_> = tasks
            .iter()
            .map(|&task| (task, "api", 1, "default", 1))
            .collect();
        let tis = scheduled(&store, 100, &specs).await;
        let stepped = store
            .step_task_instances(&[], &requests(&tis), at(1))
            .await
            .unwrap();
        assert_eq!(stepped.queued, [tis[0].id, tis[1].id, tis[2].id]);
        assert_eq!(stepped.rate_limited[&tis[3].id], at(2));
        claim_all(&store, at(1) + seconds(10)).await;
        let stepped = store
            .step_task_instances(&[], &requests(&tis[3..]), at(2) + seconds(11))
            .await
            .unwrap();
        assert_eq!(stepped.queued, [tis[3].id, tis[4].id]);
        // Removed, the limit is gone from the pool.
        let pool = store.set_pool("api", 20, None, Some(None)).await.unwrap();
        assert_eq!(pool.rate_limit, None);
        assert_eq!(
            store
                .list_pools()
                .await
                .unwrap()
                .iter()
                .find(|p| p.name == "api")
                .unwrap()
                .rate_limit,
            None
        );
    })
    .await;
}

/// Records that `missed` missed its deadline `due` at `now`, with its event, if the store
/// agrees; returns whether it did.
async fn miss(store: &Store, missed: Missed, due: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let mut change = store.change("record a missed deadline").await.unwrap();
    if !change.miss_deadline(missed, due, now).await.unwrap() {
        return false;
    }
    let event = NewEvent {
        at: now,
        actor: "scheduler".to_owned(),
        dag_id: None,
        run_id: None,
        task_id: None,
        event: "deadline_missed".to_owned(),
        details: json!({}),
    };
    change.commit(&event).await.unwrap();
    true
}

/// A task instance's first start is kept across its tries and forgotten by a clear; a missed
/// deadline is recorded once, and only for what had not finished by its due time.
#[tokio::test]
async fn a_missed_deadline_is_recorded_once_and_only_when_not_finished_in_time() {
    each_backend(|db| async move {
        let store = db.store().await;
        let tis = claimed_alike(&store, 2).await;
        let first = store.get_task_instance(tis[0].id).await.unwrap().unwrap();
        assert_eq!(first.first_start_date, Some(at(2)));
        // Task instance 0 runs past its due time: missed, once.
        let (running, done) = (tis[0].id, tis[1].id);
        assert!(miss(&store, Missed::TaskInstance(running), at(3), at(4)).await);
        assert!(!miss(&store, Missed::TaskInstance(running), at(3), at(5)).await);
        let marked = store.get_task_instance(running).await.unwrap().unwrap();
        assert_eq!(marked.deadline_missed_at, Some(at(4)));
        // Task instance 1 ended at 3: due at 4 it was in time, due at 2 it was late.
        let end = TryEnd {
            key: first_try(&tis[1]),
            worker_id: Some("w1".to_owned()),
            state: TaskState::Success,
            exit_code: Some(0),
            next_retry_at: None,
            outputs: vec![],
            log_tail: vec![],
        };
        assert!(store.end_try(&end, at(3)).await.unwrap());
        assert!(!miss(&store, Missed::TaskInstance(done), at(4), at(9)).await);
        assert!(miss(&store, Missed::TaskInstance(done), at(2), at(9)).await);
        // The run, unfinished: once.
        let run = tis[0].dag_run_id;
        assert!(miss(&store, Missed::Run(run), at(3), at(4)).await);
        assert!(!miss(&store, Missed::Run(run), at(3), at(4)).await);
        let runs = store.get_dag_runs(&[run]).await.unwrap();
        assert_eq!(runs[0].deadline_missed_at, Some(at(4)));
        // A clear forgets the first start; the next claim is the new first start, and the
        // miss stays recorded (a deadline fires once).
        store
            .clear_task_instances(
                &[Clear {
                    task_instance: done,
                    retries: 0,
                }],
                at(10),
            )
            .await
            .unwrap();
        let cleared = store.get_task_instance(done).await.unwrap().unwrap();
        assert_eq!(cleared.first_start_date, None);
        assert!(cleared.deadline_missed_at.is_some());
    })
    .await;
}
