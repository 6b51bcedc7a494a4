//! Starting runs within `max_active_runs` (`Store::start_dag_runs`), on both backends, also with
//! several stores starting runs at once as several schedulers do.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use updraft_core::ids::{BackfillId, DagId};
use updraft_core::state::{DagRunState, RunType};
use updraft_metadata::testing::each_backend;
use updraft_metadata::{
    CreateOutcome, DagRun, DagSync, NewBackfill, NewDagRun, NewTaskInstance, RunStart, Store,
};

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap()
}

fn sales() -> DagId {
    DagId::parse("sales").unwrap()
}

async fn with_dag(store: &Store) {
    let sync = DagSync {
        dag_id: sales(),
        fileloc: "dags/sales.yaml".to_owned(),
        owner: String::new(),
        description: None,
        tags: Vec::new(),
        schedule: Some("@daily".to_owned()),
        timezone: "UTC".to_owned(),
        max_active_runs: 16,
        max_active_tasks: 16,
        paused_on_creation: false,
        version_hash: "v1".to_owned(),
        serialized: json!({}),
        source: String::new(),
    };
    store.upsert_dag(&sync, at(1)).await.unwrap();
}

fn new_run(day: u32, run_type: RunType, backfill_id: Option<BackfillId>) -> NewDagRun {
    NewDagRun {
        dag_id: sales(),
        run_id: format!("{run_type}__2024-01-{day:02}"),
        run_type,
        logical_date: at(day),
        data_interval_start: at(day),
        data_interval_end: at(day) + Duration::days(1),
        run_after: at(day) + Duration::days(1),
        conf: json!({}),
        version_hash: "v1".to_owned(),
        backfill_id,
    }
}

/// Queued scheduled runs of days `days`.
async fn queued_runs(store: &Store, days: std::ops::RangeInclusive<u32>) -> Vec<DagRun> {
    let mut runs = Vec::new();
    for day in days {
        let CreateOutcome::Created(run) = store
            .create_dag_run(&new_run(day, RunType::Scheduled, None), at(1))
            .await
            .unwrap()
        else {
            panic!("day {day} exists");
        };
        runs.push(run);
    }
    runs
}

/// Starts `run` alone, within `max_active_runs`, with no task instance.
async fn start(store: &Store, run: &DagRun, max_active_runs: i64, now: DateTime<Utc>) -> bool {
    let start = RunStart {
        run,
        max_active_runs,
        tasks: &[],
    };
    store.start_dag_runs(&[start], now).await.unwrap()[0]
}

async fn running_count(store: &Store) -> usize {
    store
        .list_unfinished_runs()
        .await
        .unwrap()
        .iter()
        .filter(|run| run.state == DagRunState::Running)
        .count()
}

#[tokio::test]
async fn runs_start_within_max_active_runs_and_backfill_runs_count_apart() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let runs = queued_runs(&store, 1..=3).await;
        assert!(start(&store, &runs[0], 2, at(5)).await);
        assert!(start(&store, &runs[1], 2, at(5)).await);
        assert!(!start(&store, &runs[2], 2, at(5)).await);
        let started = store.get_dag_run(runs[0].id).await.unwrap().unwrap();
        assert_eq!(
            (started.state, started.start_date),
            (DagRunState::Running, Some(at(5)))
        );
        let waiting = store.get_dag_run(runs[2].id).await.unwrap().unwrap();
        assert_eq!(waiting.state, DagRunState::Queued);
        // A run that is not queued any more is not started again.
        assert!(!start(&store, &runs[0], 16, at(6)).await);

        // A backfill's runs count against the backfill's own limit, not the DAG's.
        let backfill = NewBackfill {
            dag_id: sales(),
            from_date: at(10),
            to_date: at(11),
            options: json!({}),
            created_by: "test".to_owned(),
        };
        let created = store
            .create_backfill(
                &backfill,
                &[
                    new_run(10, RunType::Backfill, None),
                    new_run(11, RunType::Backfill, None),
                ],
                &[],
                &[],
                at(5),
            )
            .await
            .unwrap();
        let backfill_runs = store.list_backfill_runs(created.backfill.id).await.unwrap();
        assert!(start(&store, &backfill_runs[0], 1, at(5)).await);
        assert!(!start(&store, &backfill_runs[1], 1, at(5)).await);
        assert_eq!(running_count(&store).await, 3);
    })
    .await;
}

#[tokio::test]
async fn schedulers_starting_runs_at_once_never_exceed_max_active_runs() {
    each_backend(|db| async move {
        let first = db.store().await;
        with_dag(&first).await;
        let runs = queued_runs(&first, 1..=12).await;
        // Three stores (three schedulers' pools) each try to start every run at once, each
        // from the same stale snapshot in which nothing runs.
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let store = db.store().await;
            for run in &runs {
                let (store, run) = (store.clone(), run.clone());
                attempts.spawn(async move { start(&store, &run, 3, at(5)).await });
            }
        }
        let mut started = 0;
        while let Some(attempt) = attempts.join_next().await {
            started += usize::from(attempt.unwrap());
        }
        assert_eq!(started, 3, "each start is counted once");
        assert_eq!(running_count(&first).await, 3);
    })
    .await;
}

#[tokio::test]
async fn runs_started_together_get_their_task_instances_and_events_in_order_within_limits() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let runs = queued_runs(&store, 1..=4).await;
        let tasks: Vec<NewTaskInstance> = ["extract", "load"]
            .iter()
            .map(|task| NewTaskInstance {
                task_id: updraft_core::ids::TaskId::parse(task).unwrap(),
                max_tries: 2,
                pool: "default_pool".to_owned(),
                pool_slots: 1,
                queue: "default".to_owned(),
                priority_weight: 1,
                rendered_command: None,
            })
            .collect();
        // One run already runs: of the four, two more fit under three, in the order given.
        assert!(start(&store, &runs[3], 3, at(5)).await);
        let starts: Vec<RunStart<'_>> = runs[..3]
            .iter()
            .map(|run| RunStart {
                run,
                max_active_runs: 3,
                tasks: &tasks,
            })
            .collect();
        let started = store.start_dag_runs(&starts, at(6)).await.unwrap();
        assert_eq!(started, [true, true, false]);
        for (run, started) in runs[..3].iter().zip(started) {
            let instances = store.list_task_instances(run.id).await.unwrap();
            let read = store.get_dag_run(run.id).await.unwrap().unwrap();
            if started {
                assert_eq!(read.state, DagRunState::Running);
                assert_eq!(read.start_date, Some(at(6)));
                let mut ids: Vec<&str> = instances.iter().map(|ti| ti.task_id.as_str()).collect();
                ids.sort_unstable();
                assert_eq!(ids, ["extract", "load"]);
                assert!(
                    instances
                        .iter()
                        .all(|ti| ti.max_tries == 2 && ti.run_id == run.run_id)
                );
            } else {
                assert_eq!(read.state, DagRunState::Queued);
                assert!(
                    instances.is_empty(),
                    "a run that did not start has no task instance"
                );
            }
        }
        let events = store.list_events(Some(&sales()), 100).await.unwrap();
        let started_events: Vec<&str> = events
            .iter()
            .filter(|event| event.event == "run_started")
            .filter_map(|event| event.run_id.as_deref())
            .collect();
        assert_eq!(started_events.len(), 3, "{started_events:?}");
        assert!(started_events.contains(&runs[0].run_id.as_str()));
        assert!(started_events.contains(&runs[1].run_id.as_str()));
    })
    .await;
}
