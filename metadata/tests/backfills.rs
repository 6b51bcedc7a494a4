//! Backfills in the store (`create_backfill`, progress, state changes, completion), on both
//! backends.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use updraft_core::ids::{BackfillId, DagId, DagRunId, TaskId};
use updraft_core::scope::Scope;
use updraft_core::state::{BackfillState, DagRunState, RunType, TaskMove, TaskState};
use updraft_metadata::testing::each_backend;
use updraft_metadata::{
    BackfillCreated, BackfillMove, BackfillProgress, Claim, CreateOutcome, DEFAULT_POOL, DagRun,
    DagSync, Error, NewBackfill, NewDagRun, NewTaskInstance, QueueRequest, Rerun, Store,
    TaskInstance, TaskRetries, WorkerRef,
};

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, day, hour, 0, 0).unwrap()
}

fn sales() -> DagId {
    DagId::parse("sales").unwrap()
}

fn task(id: &str) -> TaskId {
    TaskId::parse(id).unwrap()
}

/// A store with DAG `sales` (version `v1`).
async fn with_dag(store: &Store) {
    let sync = DagSync {
        dag_id: sales(),
        fileloc: "dags/sales.yaml".to_owned(),
        owner: "data-eng".to_owned(),
        description: None,
        tags: Vec::new(),
        schedule: Some("@daily".to_owned()),
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

/// The run of `day` as a backfill would create it (or as the scheduler would, for
/// `RunType::Scheduled`).
fn new_run(day: u32, run_type: RunType) -> NewDagRun {
    NewDagRun {
        dag_id: sales(),
        run_id: format!("{run_type}__2024-01-{day:02}"),
        run_type,
        logical_date: at(day, 0),
        data_interval_start: at(day, 0),
        data_interval_end: at(day, 0) + Duration::days(1),
        run_after: at(day, 0) + Duration::days(1),
        conf: json!({"region": "eu"}),
        version_hash: "v1".to_owned(),
        backfill_id: None,
    }
}

fn new_backfill(from: u32, to: u32) -> NewBackfill {
    NewBackfill {
        dag_id: sales(),
        from_date: at(from, 0),
        to_date: at(to, 0),
        options: json!({"reprocess": "failed", "max_active_runs": 2}),
        created_by: "ada".to_owned(),
    }
}

/// A scheduled run of `day` that ran `extract` and `load` (one try each) and ended `end`.
async fn finished_run(store: &Store, day: u32, end: DagRunState) -> (DagRun, Vec<TaskInstance>) {
    let CreateOutcome::Created(run) = store
        .create_dag_run(&new_run(day, RunType::Scheduled), at(day, 1))
        .await
        .unwrap()
    else {
        panic!("the run of day {day} exists");
    };
    let tasks: Vec<NewTaskInstance> = ["extract", "load"]
        .into_iter()
        .map(|task_id| NewTaskInstance {
            task_id: task(task_id),
            max_tries: 0,
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
    let ti_end = match end {
        DagRunState::Success => TaskState::Success,
        _ => TaskState::Failed,
    };
    for ti in &instances {
        assert!(
            store
                .set_task_state(ti.id, TaskState::None, ti_end, at(day, 2))
                .await
                .unwrap()
        );
    }
    for (from, to) in [
        (DagRunState::Queued, DagRunState::Running),
        (DagRunState::Running, end),
    ] {
        assert!(
            store
                .set_dag_run_state(run.id, from, to, at(day, 2))
                .await
                .unwrap()
        );
    }
    let run = store.get_dag_run(run.id).await.unwrap().unwrap();
    let instances = store.list_task_instances(run.id).await.unwrap();
    (run, instances)
}

fn retries(task_id: &str, retries: i32) -> TaskRetries {
    TaskRetries {
        task_id: task(task_id),
        retries,
    }
}

async fn create(
    store: &Store,
    backfill: &NewBackfill,
    days: &[u32],
    reruns: &[Rerun],
) -> BackfillCreated {
    let runs: Vec<NewDagRun> = days
        .iter()
        .map(|day| new_run(*day, RunType::Backfill))
        .collect();
    store
        .create_backfill(backfill, &runs, reruns, &[retries("load", 3)], at(20, 0))
        .await
        .unwrap()
}

async fn events(store: &Store) -> Vec<(String, String, serde_json::Value)> {
    let mut events: Vec<_> = store
        .list_events(Some(&sales()), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|event| (event.actor, event.event, event.details))
        .collect();
    events.reverse();
    events
}

#[tokio::test]
async fn a_backfill_and_its_runs_are_created_together() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let created = create(&store, &new_backfill(1, 3), &[1, 2, 3], &[]).await;
        assert_eq!((created.created, created.rerun), (3, 0));
        assert!(created.taken.is_empty());
        let backfill = &created.backfill;
        assert_eq!(backfill.state, BackfillState::Running);
        assert_eq!((backfill.from_date, backfill.to_date), (at(1, 0), at(3, 0)));
        assert_eq!(backfill.created_by, "ada");
        assert_eq!(backfill.created_at, at(20, 0));
        assert_eq!(backfill.completed_at, None);
        assert_eq!(backfill.options["max_active_runs"], 2);
        assert_eq!(
            store.get_backfill(backfill.id).await.unwrap().as_ref(),
            Some(backfill)
        );

        let runs = store.list_backfill_runs(backfill.id).await.unwrap();
        assert_eq!(runs.len(), 3);
        for (run, day) in runs.iter().zip(1..) {
            assert_eq!(run.run_type, RunType::Backfill);
            assert_eq!(run.run_id, format!("backfill__2024-01-{day:02}"));
            assert_eq!(run.logical_date, at(day, 0));
            assert_eq!(run.data_interval_end, at(day + 1, 0));
            assert_eq!(run.state, DagRunState::Queued);
            assert_eq!(run.backfill_id, Some(backfill.id));
            assert_eq!(run.conf, json!({"region": "eu"}));
            assert_eq!(run.queued_at, Some(at(20, 0)));
        }
        assert_eq!(
            store.backfill_progress(backfill.id).await.unwrap(),
            BackfillProgress {
                queued: 3,
                ..BackfillProgress::default()
            }
        );
        // The scheduler's list; backfill runs do not move the schedule.
        let unfinished = store.list_unfinished_backfills().await.unwrap();
        assert_eq!(unfinished, std::slice::from_ref(backfill));
        assert_eq!(store.last_automated_run(&sales()).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn dates_taken_by_other_runs_are_skipped_not_duplicated() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        // The scheduler created day 2 between the decision and the write.
        let (scheduled, _) = finished_run(&store, 2, DagRunState::Success).await;
        let created = create(&store, &new_backfill(1, 3), &[1, 2, 3], &[]).await;
        assert_eq!(created.created, 2);
        assert_eq!(created.taken, [at(2, 0)]);
        let runs = store.list_backfill_runs(created.backfill.id).await.unwrap();
        let days: Vec<DateTime<Utc>> = runs.iter().map(|run| run.logical_date).collect();
        assert_eq!(days, [at(1, 0), at(3, 0)]);
        let untouched = store.get_dag_run(scheduled.id).await.unwrap().unwrap();
        assert_eq!(untouched, scheduled);
        assert_eq!(
            store
                .last_automated_run(&sales())
                .await
                .unwrap()
                .map(|r| r.logical_date),
            Some(at(2, 0)),
            "the latest scheduled run, not the later backfill run"
        );
        // What a backfill decides against: the runs holding dates in the range, not manual
        // runs (they share dates).
        let mut manual = new_run(2, RunType::Manual);
        manual.run_id = "manual__2024-01-02".to_owned();
        let _ = store.create_dag_run(&manual, at(20, 0)).await.unwrap();
        let dated = store
            .list_dated_runs(&sales(), at(2, 0), at(3, 0))
            .await
            .unwrap();
        let held: Vec<(&str, DateTime<Utc>)> = dated
            .iter()
            .map(|run| (run.run_id.as_str(), run.logical_date))
            .collect();
        assert_eq!(
            held,
            [
                ("scheduled__2024-01-02", at(2, 0)),
                ("backfill__2024-01-03", at(3, 0))
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn a_rerun_clears_the_run_with_fresh_retries_and_joins_the_backfill() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let (failed, instances) = finished_run(&store, 1, DagRunState::Failed).await;
        let (succeeded, _) = finished_run(&store, 2, DagRunState::Success).await;
        let reruns = [
            Rerun {
                dag_run_id: failed.id,
                expected: DagRunState::Failed,
            },
            // Decided as failed, but it succeeded meanwhile: left alone.
            Rerun {
                dag_run_id: succeeded.id,
                expected: DagRunState::Failed,
            },
        ];
        let created = create(&store, &new_backfill(1, 3), &[3], &reruns).await;
        assert_eq!((created.created, created.rerun), (1, 1));
        assert_eq!(created.taken, [at(2, 0)]);

        let run = store.get_dag_run(failed.id).await.unwrap().unwrap();
        assert_eq!(run.state, DagRunState::Queued);
        assert_eq!(run.backfill_id, Some(created.backfill.id));
        assert_eq!(
            run.run_type,
            RunType::Scheduled,
            "a re-run keeps its type and id"
        );
        assert_eq!(run.queued_at, Some(at(20, 0)));
        assert_eq!((run.start_date, run.end_date), (None, None));
        for before in &instances {
            let ti = store.get_task_instance(before.id).await.unwrap().unwrap();
            assert_eq!(ti.state, TaskState::None, "{}", ti.task_id);
            assert_eq!(ti.end_date, None);
            assert_eq!(ti.rendered_command, None);
            let retries = if ti.task_id.as_str() == "load" { 3 } else { 0 };
            assert_eq!(ti.max_tries, ti.try_number + retries, "{}", ti.task_id);
        }
        let other = store.get_dag_run(succeeded.id).await.unwrap().unwrap();
        assert_eq!(other, succeeded);

        let runs = store.list_backfill_runs(created.backfill.id).await.unwrap();
        assert_eq!(runs.len(), 2);
        let progress = store.backfill_progress(created.backfill.id).await.unwrap();
        assert_eq!(progress.queued, 2);
        assert_eq!((progress.task_instances, progress.tasks_done), (2, 0));
    })
    .await;
}

#[tokio::test]
async fn progress_counts_runs_by_state_and_finished_task_instances() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let (failed, _) = finished_run(&store, 1, DagRunState::Failed).await;
        let created = create(
            &store,
            &new_backfill(1, 3),
            &[2, 3],
            &[Rerun {
                dag_run_id: failed.id,
                expected: DagRunState::Failed,
            }],
        )
        .await;
        let id = created.backfill.id;
        let runs = store.list_backfill_runs(id).await.unwrap();
        // Day 1 runs again and succeeds one task; day 2 starts.
        store
            .set_dag_run_state(
                runs[0].id,
                DagRunState::Queued,
                DagRunState::Running,
                at(21, 0),
            )
            .await
            .unwrap();
        let tis = store.list_task_instances(runs[0].id).await.unwrap();
        store
            .set_task_state(tis[0].id, TaskState::None, TaskState::Success, at(21, 0))
            .await
            .unwrap();
        store
            .set_dag_run_state(
                runs[1].id,
                DagRunState::Queued,
                DagRunState::Running,
                at(21, 0),
            )
            .await
            .unwrap();
        let progress = store.backfill_progress(id).await.unwrap();
        assert_eq!(
            progress,
            BackfillProgress {
                queued: 1,
                running: 2,
                success: 0,
                failed: 0,
                task_instances: 2,
                tasks_done: 1,
            }
        );
        assert_eq!((progress.runs(), progress.finished()), (3, 0));
    })
    .await;
}

#[tokio::test]
async fn pause_resume_and_cancel_are_compare_and_sets() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let id = create(&store, &new_backfill(1, 3), &[1, 2, 3], &[])
            .await
            .backfill
            .id;
        let pause = store
            .set_backfill_state(id, BackfillState::Running, BackfillState::Paused, at(21, 0))
            .await
            .unwrap();
        assert_eq!(
            pause,
            BackfillMove {
                moved: true,
                runs_failed: 0
            }
        );
        // Not running any more: a second pause writes nothing.
        let again = store
            .set_backfill_state(id, BackfillState::Running, BackfillState::Paused, at(21, 0))
            .await
            .unwrap();
        assert!(!again.moved);
        assert!(matches!(
            store
                .set_backfill_state(
                    id,
                    BackfillState::Paused,
                    BackfillState::Completed,
                    at(21, 0)
                )
                .await,
            Err(Error::Invalid(_))
        ));
        let resume = store
            .set_backfill_state(id, BackfillState::Paused, BackfillState::Running, at(22, 0))
            .await
            .unwrap();
        assert!(resume.moved);

        // One run is running when the backfill is cancelled: it finishes, the queued fail.
        let runs = store.list_backfill_runs(id).await.unwrap();
        store
            .set_dag_run_state(
                runs[0].id,
                DagRunState::Queued,
                DagRunState::Running,
                at(22, 0),
            )
            .await
            .unwrap();
        let cancel = store
            .set_backfill_state(
                id,
                BackfillState::Running,
                BackfillState::Cancelled,
                at(23, 0),
            )
            .await
            .unwrap();
        assert_eq!(
            cancel,
            BackfillMove {
                moved: true,
                runs_failed: 2
            }
        );
        let backfill = store.get_backfill(id).await.unwrap().unwrap();
        assert_eq!(backfill.state, BackfillState::Cancelled);
        assert_eq!(backfill.completed_at, Some(at(23, 0)));
        let states: Vec<DagRunState> = store
            .list_backfill_runs(id)
            .await
            .unwrap()
            .iter()
            .map(|run| run.state)
            .collect();
        assert_eq!(
            states,
            [
                DagRunState::Running,
                DagRunState::Failed,
                DagRunState::Failed
            ]
        );
        let failed = store.get_dag_run(runs[1].id).await.unwrap().unwrap();
        assert_eq!(failed.end_date, Some(at(23, 0)));
        assert!(store.list_unfinished_backfills().await.unwrap().is_empty());
        assert!(!store.complete_backfill(id, at(23, 0)).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn a_backfill_completes_once_every_run_finished() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let id = create(&store, &new_backfill(1, 2), &[1, 2], &[])
            .await
            .backfill
            .id;
        let runs = store.list_backfill_runs(id).await.unwrap();
        for run in &runs {
            store
                .set_dag_run_state(run.id, DagRunState::Queued, DagRunState::Running, at(21, 0))
                .await
                .unwrap();
        }
        store
            .set_dag_run_state(
                runs[0].id,
                DagRunState::Running,
                DagRunState::Success,
                at(21, 1),
            )
            .await
            .unwrap();
        assert!(
            !store.complete_backfill(id, at(21, 1)).await.unwrap(),
            "a run is still running"
        );
        store
            .set_dag_run_state(
                runs[1].id,
                DagRunState::Running,
                DagRunState::Failed,
                at(21, 2),
            )
            .await
            .unwrap();
        // Paused, it waits to be resumed.
        store
            .set_backfill_state(id, BackfillState::Running, BackfillState::Paused, at(21, 2))
            .await
            .unwrap();
        assert!(!store.complete_backfill(id, at(21, 3)).await.unwrap());
        store
            .set_backfill_state(id, BackfillState::Paused, BackfillState::Running, at(21, 3))
            .await
            .unwrap();
        assert!(store.complete_backfill(id, at(21, 4)).await.unwrap());
        assert!(
            !store.complete_backfill(id, at(21, 5)).await.unwrap(),
            "once"
        );
        let backfill = store.get_backfill(id).await.unwrap().unwrap();
        assert_eq!(backfill.state, BackfillState::Completed);
        assert_eq!(backfill.completed_at, Some(at(21, 4)));
        let last = events(&store).await.pop().unwrap();
        assert_eq!(
            (last.0.as_str(), last.1.as_str()),
            ("scheduler", "backfill_completed")
        );
        assert_eq!(
            store.backfill_progress(id).await.unwrap(),
            BackfillProgress {
                success: 1,
                failed: 1,
                ..BackfillProgress::default()
            }
        );
    })
    .await;
}

#[tokio::test]
async fn backfills_are_listed_newest_first_per_dag() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let first = create(&store, &new_backfill(1, 1), &[1], &[])
            .await
            .backfill;
        let second = create(&store, &new_backfill(2, 2), &[2], &[])
            .await
            .backfill;
        let all = store.list_backfills(None, 10).await.unwrap();
        assert_eq!(all, [second.clone(), first.clone()]);
        assert_eq!(
            store.list_backfills(Some(&sales()), 1).await.unwrap(),
            [second]
        );
        let other = DagId::parse("other").unwrap();
        assert!(
            store
                .list_backfills(Some(&other), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .get_backfill(BackfillId(first.id.0 + 100))
                .await
                .unwrap(),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn an_unknown_dag_or_a_reversed_range_writes_nothing() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let mut unknown = new_backfill(1, 2);
        unknown.dag_id = DagId::parse("nope").unwrap();
        assert!(matches!(
            store
                .create_backfill(&unknown, &[], &[], &[], at(20, 0))
                .await,
            Err(Error::NotFound(_))
        ));
        let mut wrong_version = new_run(1, RunType::Backfill);
        wrong_version.version_hash = "v9".to_owned();
        assert!(matches!(
            store
                .create_backfill(&new_backfill(1, 2), &[wrong_version], &[], &[], at(20, 0))
                .await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            store
                .create_backfill(&new_backfill(3, 2), &[], &[], &[], at(20, 0))
                .await,
            Err(Error::Invalid(_))
        ));
        assert!(store.list_backfills(None, 10).await.unwrap().is_empty());
        assert!(events(&store).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_claim_kept_to_a_run_or_a_backfill_takes_only_their_task_instances() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let backfill = create(&store, &new_backfill(1, 1), &[1], &[])
            .await
            .backfill;
        let CreateOutcome::Created(scheduled) = store
            .create_dag_run(&new_run(5, RunType::Scheduled), at(20, 0))
            .await
            .unwrap()
        else {
            panic!("the run of day 5 exists");
        };
        let backfill_run = store.list_backfill_runs(backfill.id).await.unwrap()[0].id;
        // One queued task instance in each run.
        let mut requests = Vec::new();
        for run in [backfill_run, scheduled.id] {
            let new = NewTaskInstance {
                task_id: task("load"),
                max_tries: 0,
                pool: DEFAULT_POOL.to_owned(),
                pool_slots: 1,
                queue: "default".to_owned(),
                priority_weight: 1,
                rendered_command: None,
            };
            let ti = store
                .create_task_instances(run, &[new], at(20, 0))
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
                    at(20, 0),
                )
                .await
                .unwrap();
            requests.push(QueueRequest {
                task_instance: ti.id,
                plan: json!({"run": "true"}),
                rate_limit: None,
            });
        }
        assert_eq!(
            store
                .queue_task_instances(&requests, at(20, 0))
                .await
                .unwrap()
                .len(),
            2
        );

        let worker = WorkerRef {
            id: "w1",
            hostname: "host",
        };
        let queues = ["default".to_owned()];
        let claim = |scope| store.claim_task_instances(worker, &queues, scope, 10, at(20, 1));
        let runs_claimed = |claims: Vec<Claim>| -> Vec<DagRunId> {
            claims.iter().map(|c| c.instance.dag_run_id).collect()
        };
        // Nothing of another run or backfill is taken.
        assert!(claim(Scope::Run(DagRunId(-1))).await.unwrap().is_empty());
        assert!(
            claim(Scope::Backfill(BackfillId(-1)))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            runs_claimed(claim(Scope::Backfill(backfill.id)).await.unwrap()),
            [backfill_run]
        );
        assert_eq!(
            runs_claimed(claim(Scope::Run(scheduled.id)).await.unwrap()),
            [scheduled.id]
        );
        assert!(claim(Scope::Everything).await.unwrap().is_empty());
    })
    .await;
}
