//! The store API, every test on both backends.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use updraft_core::ids::{DagId, DagRunId, TaskId, TaskInstanceId, TryKey};
use updraft_core::notify::NotifyEvent;
use updraft_core::schedule::RunInterval;
use updraft_core::state::{DagRunState, RunType, TaskState};
use updraft_metadata::testing::each_backend;
use updraft_metadata::{
    Attempt, CreateOutcome, DEFAULT_POOL, DagRun, DagSync, DagSyncOutcome, Error, ImportError,
    NewApiToken, NewDagRun, NewEvent, NewNotification, NewTaskInstance, NewTaskTry, NextRun, Role,
    Store, TaskInstance,
};

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, day, hour, 0, 0).unwrap()
}

/// The key of `ti`'s try `try_number`.
fn try_of(ti: &TaskInstance, try_number: i32) -> TryKey {
    TryKey {
        task_instance: ti.id,
        try_number,
    }
}

/// Records try 1 of `ti`, started on day 3 by no particular worker.
async fn start_first_try(store: &Store, ti: &TaskInstance) {
    let started = NewTaskTry {
        key: try_of(ti, 1),
        worker_id: None,
        hostname: None,
        pid: None,
        start_date: at(3, 0),
    };
    store.insert_task_try(&started).await.unwrap();
}

fn dag_id(id: &str) -> DagId {
    DagId::parse(id).unwrap()
}

fn dag_sync(id: &str, hash: &str) -> DagSync {
    DagSync {
        dag_id: dag_id(id),
        fileloc: format!("dags/{id}.yaml"),
        owner: "data-eng".to_owned(),
        description: Some("Load sales.".to_owned()),
        tags: vec!["sales".to_owned(), "daily".to_owned()],
        schedule: Some("0 2 * * *".to_owned()),
        timezone: "Europe/Berlin".to_owned(),
        max_active_runs: 16,
        max_active_tasks: 8,
        paused_on_creation: false,
        version_hash: hash.to_owned(),
        serialized: json!({"id": id, "hash": hash}),
        source: format!("id: {id}\n"),
    }
}

fn new_run(dag: &str, run_id: &str, run_type: RunType, logical_date: DateTime<Utc>) -> NewDagRun {
    NewDagRun {
        dag_id: dag_id(dag),
        run_id: run_id.to_owned(),
        run_type,
        logical_date,
        data_interval_start: logical_date,
        data_interval_end: logical_date + Duration::days(1),
        run_after: logical_date + Duration::days(1),
        conf: json!({"region": "eu"}),
        version_hash: "v1".to_owned(),
        backfill_id: None,
    }
}

fn new_task(task_id: &str) -> NewTaskInstance {
    NewTaskInstance {
        task_id: TaskId::parse(task_id).unwrap(),
        max_tries: 2,
        pool: DEFAULT_POOL.to_owned(),
        pool_slots: 1,
        queue: "default".to_owned(),
        priority_weight: 1,
        rendered_command: Some(json!({"run": format!("echo {task_id}")})),
    }
}

/// A store with DAG `sales` (version `v1`).
async fn with_dag(store: &Store) {
    let outcome = store.upsert_dag(&dag_sync("sales", "v1"), at(1, 0)).await;
    assert_eq!(outcome.unwrap(), DagSyncOutcome::Created);
}

async fn created_run(store: &Store, run: &NewDagRun) -> DagRun {
    match store.create_dag_run(run, at(2, 0)).await.unwrap() {
        CreateOutcome::Created(run) => run,
        CreateOutcome::AlreadyExists(run) => panic!("{} already exists", run.run_id),
    }
}

/// A store with DAG `sales`, one scheduled run and its tasks `extract`, `load`.
async fn with_tasks(store: &Store) -> Vec<TaskInstance> {
    with_dag(store).await;
    let run = created_run(store, &new_run("sales", "r1", RunType::Scheduled, at(1, 0))).await;
    store
        .create_task_instances(run.id, &[new_task("extract"), new_task("load")], at(2, 0))
        .await
        .unwrap()
}

fn event(at: DateTime<Utc>, dag: Option<&str>, what: &str) -> NewEvent {
    NewEvent {
        at,
        actor: "ada".to_owned(),
        dag_id: dag.map(dag_id),
        run_id: dag.map(|_| "r1".to_owned()),
        task_id: dag.map(|_| TaskId::parse("load").unwrap()),
        event: what.to_owned(),
        details: json!({"why": what}),
    }
}

// --- dag sync -----------------------------------------------------------------------------

#[tokio::test]
async fn upsert_dag_stores_the_dag_and_its_version() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let dag = store.get_dag(&dag_id("sales")).await.unwrap().unwrap();
        assert_eq!(dag.dag_id.as_str(), "sales");
        assert_eq!(dag.fileloc, "dags/sales.yaml");
        assert!(!dag.is_paused);
        assert!(dag.is_active);
        assert_eq!(dag.version_hash, "v1");
        assert_eq!(dag.last_parsed_at, at(1, 0));
        assert_eq!(dag.tags, ["sales", "daily"]);
        assert_eq!(dag.schedule.as_deref(), Some("0 2 * * *"));
        assert_eq!(dag.timezone, "Europe/Berlin");
        assert_eq!((dag.max_active_runs, dag.max_active_tasks), (16, 8));
        assert_eq!(dag.next_run, None);
        let version = store
            .get_dag_version(&dag_id("sales"), "v1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(version.serialized, json!({"id": "sales", "hash": "v1"}));
        assert_eq!(version.source, "id: sales\n");
        assert_eq!(version.created_at, at(1, 0));
        assert_eq!(store.get_dag(&dag_id("other")).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn a_dag_version_is_added_only_when_the_hash_changes() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let sales = dag_id("sales");
        let same = store.upsert_dag(&dag_sync("sales", "v1"), at(1, 1)).await;
        assert_eq!(same.unwrap(), DagSyncOutcome::Unchanged);
        let changed = store.upsert_dag(&dag_sync("sales", "v2"), at(1, 2)).await;
        assert_eq!(changed.unwrap(), DagSyncOutcome::Changed);
        assert_eq!(
            store.get_dag(&sales).await.unwrap().unwrap().version_hash,
            "v2"
        );
        // Back to the first content: its version row is the one stored at first.
        let back = store.upsert_dag(&dag_sync("sales", "v1"), at(1, 3)).await;
        assert_eq!(back.unwrap(), DagSyncOutcome::Changed);
        let v1 = store.get_dag_version(&sales, "v1").await.unwrap().unwrap();
        assert_eq!(v1.created_at, at(1, 0));
        let v2 = store.get_dag_version(&sales, "v2").await.unwrap().unwrap();
        assert_eq!(v2.created_at, at(1, 2));
        assert_eq!(
            store.get_dag(&sales).await.unwrap().unwrap().last_parsed_at,
            at(1, 3)
        );
    })
    .await;
}

#[tokio::test]
async fn a_sync_keeps_the_pause_and_the_next_run_of_a_known_dag() {
    each_backend(|db| async move {
        let store = db.store().await;
        let sales = dag_id("sales");
        let mut paused = dag_sync("sales", "v1");
        paused.paused_on_creation = true;
        store.upsert_dag(&paused, at(1, 0)).await.unwrap();
        assert!(store.get_dag(&sales).await.unwrap().unwrap().is_paused);
        store.set_paused(&sales, false).await.unwrap();
        let next = RunInterval {
            logical_date: at(2, 1),
            data_interval_start: at(2, 1),
            data_interval_end: at(3, 1),
            run_after: at(3, 1),
        };
        let set_next = |next| NextRun {
            dag_id: sales.clone(),
            next,
        };
        store.set_next_runs(&[set_next(Some(next))]).await.unwrap();
        store.upsert_dag(&paused, at(1, 1)).await.unwrap();
        let dag = store.get_dag(&sales).await.unwrap().unwrap();
        assert!(!dag.is_paused);
        assert_eq!(dag.next_run, Some(next));
        store.set_next_runs(&[set_next(None)]).await.unwrap();
        assert_eq!(store.get_dag(&sales).await.unwrap().unwrap().next_run, None);
    })
    .await;
}

#[tokio::test]
async fn pausing_an_unknown_dag_is_not_found() {
    each_backend(|db| async move {
        let store = db.store().await;
        let error = store.set_paused(&dag_id("nope"), true).await.unwrap_err();
        assert_eq!(error.to_string(), "dag 'nope' not found");
    })
    .await;
}

#[tokio::test]
async fn dags_missing_from_a_sync_become_inactive_until_seen_again() {
    each_backend(|db| async move {
        let store = db.store().await;
        for id in ["c", "a", "b"] {
            store
                .upsert_dag(&dag_sync(id, "v1"), at(1, 0))
                .await
                .unwrap();
        }
        let inactive = store.mark_dags_inactive_except(&[dag_id("a")]).await;
        assert_eq!(inactive.unwrap(), 2);
        let dags = store.list_dags().await.unwrap();
        let listed: Vec<(&str, bool)> = dags
            .iter()
            .map(|dag| (dag.dag_id.as_str(), dag.is_active))
            .collect();
        assert_eq!(listed, [("a", true), ("b", false), ("c", false)]);
        // Already inactive DAGs are not counted again.
        assert_eq!(store.mark_dags_inactive_except(&[]).await.unwrap(), 1);
        store
            .upsert_dag(&dag_sync("b", "v1"), at(1, 1))
            .await
            .unwrap();
        assert!(
            store
                .get_dag(&dag_id("b"))
                .await
                .unwrap()
                .unwrap()
                .is_active
        );
    })
    .await;
}

#[tokio::test]
async fn import_errors_are_replaced_as_a_set() {
    each_backend(|db| async move {
        let store = db.store().await;
        let error = |file: &str| ImportError {
            filename: file.to_owned(),
            message: format!("{file}:3:5: unknown key 'shedule' (did you mean 'schedule'?)"),
            at: at(1, 0),
        };
        store
            .replace_import_errors(&[error("dags/b.yaml"), error("dags/a.yaml")])
            .await
            .unwrap();
        assert_eq!(
            store.list_import_errors().await.unwrap(),
            [error("dags/a.yaml"), error("dags/b.yaml")]
        );
        store
            .replace_import_errors(&[error("dags/c.yaml")])
            .await
            .unwrap();
        assert_eq!(
            store.list_import_errors().await.unwrap(),
            [error("dags/c.yaml")]
        );
        store.replace_import_errors(&[]).await.unwrap();
        assert!(store.list_import_errors().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn schedulers_replacing_the_same_import_errors_at_once_both_succeed() {
    each_backend(|db| async move {
        let stores = [db.store().await, db.connect().await];
        let errors: Vec<ImportError> = ["dags/a.yaml", "dags/b.yaml"]
            .iter()
            .map(|file| ImportError {
                filename: file.to_string(),
                message: format!("{file}:1:1: broken"),
                at: at(1, 0),
            })
            .collect();
        for _ in 0..20 {
            let (first, second) = tokio::join!(
                stores[0].replace_import_errors(&errors),
                stores[1].replace_import_errors(&errors)
            );
            first.unwrap();
            second.unwrap();
            assert_eq!(stores[0].list_import_errors().await.unwrap(), errors);
        }
    })
    .await;
}

// --- dag runs ------------------------------------------------------------------------------

#[tokio::test]
async fn a_created_run_is_queued_with_its_dates_and_version() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let run = created_run(
            &store,
            &new_run("sales", "r1", RunType::Scheduled, at(1, 0)),
        )
        .await;
        assert_eq!(run.dag_id.as_str(), "sales");
        assert_eq!(run.run_id, "r1");
        assert_eq!(run.run_type, RunType::Scheduled);
        assert_eq!(run.state, DagRunState::Queued);
        assert_eq!(run.logical_date, at(1, 0));
        assert_eq!(run.data_interval_end, at(2, 0));
        assert_eq!(run.run_after, at(2, 0));
        assert_eq!(run.conf, json!({"region": "eu"}));
        assert_eq!(run.version_hash, "v1");
        assert_eq!(run.queued_at, Some(at(2, 0)));
        assert_eq!(
            (run.start_date, run.end_date, run.backfill_id),
            (None, None, None)
        );
        assert_eq!(store.get_dag_run(run.id).await.unwrap(), Some(run.clone()));
        let by_run_id = store.get_dag_run_by_run_id(&dag_id("sales"), "r1").await;
        assert_eq!(by_run_id.unwrap(), Some(run));
        assert_eq!(store.get_dag_run(DagRunId(-1)).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn scheduled_and_backfill_runs_are_unique_per_logical_date() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let first = created_run(
            &store,
            &new_run("sales", "r1", RunType::Scheduled, at(1, 0)),
        )
        .await;
        for (run_id, run_type) in [("r2", RunType::Scheduled), ("b1", RunType::Backfill)] {
            let again = new_run("sales", run_id, run_type, at(1, 0));
            assert_eq!(
                store.create_dag_run(&again, at(3, 0)).await.unwrap(),
                CreateOutcome::AlreadyExists(first.clone())
            );
        }
        // Another date is another run.
        created_run(
            &store,
            &new_run("sales", "r2", RunType::Scheduled, at(2, 0)),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn manual_runs_may_share_a_logical_date_but_not_a_run_id() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        created_run(
            &store,
            &new_run("sales", "r1", RunType::Scheduled, at(1, 0)),
        )
        .await;
        let m1 = created_run(&store, &new_run("sales", "m1", RunType::Manual, at(1, 0))).await;
        created_run(&store, &new_run("sales", "m2", RunType::Manual, at(1, 0))).await;
        let same_id = new_run("sales", "m1", RunType::Manual, at(5, 0));
        assert_eq!(
            store.create_dag_run(&same_id, at(3, 0)).await.unwrap(),
            CreateOutcome::AlreadyExists(m1)
        );
    })
    .await;
}

#[tokio::test]
async fn a_run_of_an_unknown_dag_or_version_is_not_found() {
    each_backend(|db| async move {
        let store = db.store().await;
        let error = store
            .create_dag_run(&new_run("nope", "r1", RunType::Manual, at(1, 0)), at(1, 0))
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "dag 'nope' with version 'v1' not found");
        with_dag(&store).await;
        let mut unknown_version = new_run("sales", "r1", RunType::Manual, at(1, 0));
        unknown_version.version_hash = "v9".to_owned();
        let error = store.create_dag_run(&unknown_version, at(1, 0)).await;
        assert!(matches!(error.unwrap_err(), Error::NotFound(_)));
    })
    .await;
}

#[tokio::test]
async fn dag_runs_are_listed_newest_first_by_page_and_state() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let mut ids = Vec::new();
        for day in 1..=5 {
            let run_id = format!("r{day}");
            let run = new_run("sales", &run_id, RunType::Scheduled, at(day, 0));
            ids.push(created_run(&store, &run).await.id);
        }
        store
            .set_dag_run_state(ids[1], DagRunState::Queued, DagRunState::Running, at(6, 0))
            .await
            .unwrap();
        let sales = dag_id("sales");
        let run_ids = |runs: Vec<DagRun>| runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
        let all = store.list_dag_runs(&sales, None, 10, 0).await.unwrap();
        assert_eq!(run_ids(all), ["r5", "r4", "r3", "r2", "r1"]);
        let page = store.list_dag_runs(&sales, None, 2, 1).await.unwrap();
        assert_eq!(run_ids(page), ["r4", "r3"]);
        let running = store
            .list_dag_runs(&sales, Some(DagRunState::Running), 10, 0)
            .await
            .unwrap();
        assert_eq!(run_ids(running), ["r2"]);
        assert!(
            store
                .list_dag_runs(&dag_id("other"), None, 10, 0)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn run_states_move_by_compare_and_set_and_stamp_their_dates() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let run = created_run(
            &store,
            &new_run("sales", "r1", RunType::Scheduled, at(1, 0)),
        )
        .await;
        let (queued, running, success) = (
            DagRunState::Queued,
            DagRunState::Running,
            DagRunState::Success,
        );
        assert!(
            store
                .set_dag_run_state(run.id, queued, running, at(3, 0))
                .await
                .unwrap()
        );
        // Someone else already started it: the second writer loses.
        assert!(
            !store
                .set_dag_run_state(run.id, queued, running, at(3, 1))
                .await
                .unwrap()
        );
        assert!(
            store
                .set_dag_run_state(run.id, running, success, at(4, 0))
                .await
                .unwrap()
        );
        let done = store.get_dag_run(run.id).await.unwrap().unwrap();
        assert_eq!(done.state, success);
        assert_eq!(
            (done.start_date, done.end_date),
            (Some(at(3, 0)), Some(at(4, 0)))
        );
        // Clearing puts it back to queued with fresh dates.
        assert!(
            store
                .set_dag_run_state(run.id, success, queued, at(5, 0))
                .await
                .unwrap()
        );
        let cleared = store.get_dag_run(run.id).await.unwrap().unwrap();
        assert_eq!(cleared.queued_at, Some(at(5, 0)));
        assert_eq!((cleared.start_date, cleared.end_date), (None, None));
        let illegal = store
            .set_dag_run_state(run.id, queued, queued, at(6, 0))
            .await;
        assert!(matches!(
            illegal.unwrap_err(),
            Error::IllegalDagRunTransition { .. }
        ));
    })
    .await;
}

// --- task instances ------------------------------------------------------------------------

#[tokio::test]
async fn task_instances_are_created_for_a_run_once() {
    each_backend(|db| async move {
        let store = db.store().await;
        let created = with_tasks(&store).await;
        let task_ids: Vec<&str> = created.iter().map(|ti| ti.task_id.as_str()).collect();
        assert_eq!(task_ids, ["extract", "load"]);
        let extract = &created[0];
        assert_eq!(extract.dag_id.as_str(), "sales");
        assert_eq!(extract.run_id, "r1");
        assert_eq!(extract.state, TaskState::None);
        assert_eq!((extract.try_number, extract.max_tries), (0, 2));
        assert_eq!(
            (extract.pool.as_str(), extract.pool_slots),
            (DEFAULT_POOL, 1)
        );
        assert_eq!(extract.queue, "default");
        assert_eq!(
            extract.rendered_command,
            Some(json!({"run": "echo extract"}))
        );
        assert_eq!(extract.updated_at, at(2, 0));
        // Again with one more task: only the new one is created.
        let run_id = extract.dag_run_id;
        let more = store
            .create_task_instances(run_id, &[new_task("load"), new_task("report")], at(3, 0))
            .await
            .unwrap();
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].task_id.as_str(), "report");
        let listed = store.list_task_instances(run_id).await.unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[..2], created[..]);
        assert_eq!(
            store.get_task_instance(extract.id).await.unwrap().as_ref(),
            Some(extract)
        );
        let error = store
            .create_task_instances(DagRunId(-1), &[new_task("x")], at(3, 0))
            .await;
        assert_eq!(error.unwrap_err().to_string(), "dag run -1 not found");
    })
    .await;
}

#[tokio::test]
async fn the_grid_reads_the_task_instances_of_the_runs_shown() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let mut run_ids = Vec::new();
        for day in 1..=3 {
            let run = new_run("sales", &format!("r{day}"), RunType::Scheduled, at(day, 0));
            let run = created_run(&store, &run).await;
            let tasks = [new_task("extract"), new_task("load")];
            store
                .create_task_instances(run.id, &tasks, at(4, 0))
                .await
                .unwrap();
            run_ids.push(run.id);
        }
        let shown = [run_ids[2], run_ids[0]];
        let grid = store.list_task_instances_of_runs(&shown).await.unwrap();
        let cells: Vec<(&str, &str)> = grid
            .iter()
            .map(|ti| (ti.run_id.as_str(), ti.task_id.as_str()))
            .collect();
        assert_eq!(
            cells,
            [
                ("r1", "extract"),
                ("r1", "load"),
                ("r3", "extract"),
                ("r3", "load")
            ]
        );
        assert!(
            store
                .list_task_instances_of_runs(&[])
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn task_state_compare_and_set_loses_when_the_state_moved() {
    each_backend(|db| async move {
        let store = db.store().await;
        let ti = with_tasks(&store).await.remove(0);
        use TaskState::*;
        assert!(
            store
                .set_task_state(ti.id, None, Scheduled, at(3, 0))
                .await
                .unwrap()
        );
        // A stale writer still believes it is `none`.
        assert!(
            !store
                .set_task_state(ti.id, None, Skipped, at(3, 1))
                .await
                .unwrap()
        );
        let stored = store.get_task_instance(ti.id).await.unwrap().unwrap();
        assert_eq!(stored.state, Scheduled);
        assert_eq!(stored.updated_at, at(3, 0));
        assert!(
            store
                .set_task_state(ti.id, Scheduled, Queued, at(3, 2))
                .await
                .unwrap()
        );
        assert!(
            store
                .set_task_state(ti.id, Queued, Running, at(3, 3))
                .await
                .unwrap()
        );
        assert!(
            store
                .set_task_state(ti.id, Running, Success, at(3, 4))
                .await
                .unwrap()
        );
        let done = store.get_task_instance(ti.id).await.unwrap().unwrap();
        assert_eq!(done.queued_at, Some(at(3, 2)));
        assert_eq!(
            (done.start_date, done.end_date),
            (Some(at(3, 3)), Some(at(3, 4)))
        );
    })
    .await;
}

#[tokio::test]
async fn illegal_task_transitions_never_reach_the_database() {
    each_backend(|db| async move {
        let store = db.store().await;
        let ti = with_tasks(&store).await.remove(0);
        let error = store
            .set_task_state(ti.id, TaskState::None, TaskState::Running, at(3, 0))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "a task instance cannot move from none to running"
        );
        assert!(matches!(
            store
                .set_task_state(ti.id, TaskState::Success, TaskState::Success, at(3, 0))
                .await,
            Err(Error::IllegalTaskTransition { .. })
        ));
        let stored = store.get_task_instance(ti.id).await.unwrap().unwrap();
        assert_eq!(stored, ti);
    })
    .await;
}

#[tokio::test]
async fn every_task_state_can_be_stored() {
    each_backend(|db| async move {
        let store = db.store().await;
        let ti = with_tasks(&store).await.remove(0);
        use TaskState::*;
        // A walk of legal moves through every state.
        let walk = [
            None,
            Scheduled,
            Queued,
            Running,
            UpForReschedule,
            Scheduled,
            Queued,
            UpForRetry,
            Scheduled,
            Queued,
            Running,
            Skipped,
            None,
            UpstreamFailed,
            None,
            Removed,
            Success,
            Failed,
            None,
        ];
        for pair in walk.windows(2) {
            let moved = store
                .set_task_state(ti.id, pair[0], pair[1], at(3, 0))
                .await;
            assert!(moved.unwrap(), "{} -> {}", pair[0], pair[1]);
        }
        for state in TaskState::ALL {
            assert!(walk.contains(state), "the walk misses {state}");
        }
    })
    .await;
}

#[tokio::test]
async fn only_one_of_many_concurrent_writers_wins_a_move() {
    each_backend(|db| async move {
        let store = db.store().await;
        let ti = with_tasks(&store).await.remove(0);
        let moves = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .set_task_state(ti.id, TaskState::None, TaskState::Scheduled, at(3, 0))
                    .await
                    .unwrap()
            })
        });
        let mut winners = 0;
        for handle in moves.collect::<Vec<_>>() {
            winners += usize::from(handle.await.unwrap());
        }
        assert_eq!(winners, 1);
    })
    .await;
}

// --- tries, logs and outputs --------------------------------------------------------------

#[tokio::test]
async fn each_try_keeps_its_own_row() {
    each_backend(|db| async move {
        let store = db.store().await;
        let ti = with_tasks(&store).await.remove(0);
        let attempt = |try_number| NewTaskTry {
            key: try_of(&ti, try_number),
            worker_id: Some("w1".to_owned()),
            hostname: Some("host-a".to_owned()),
            pid: Some(4242),
            start_date: at(3, 0),
        };
        let first = store.insert_task_try(&attempt(1)).await.unwrap();
        assert_eq!(first.state, TaskState::Running);
        assert_eq!(
            (first.pid, first.end_date, first.exit_code),
            (Some(4242), None, None)
        );
        let duplicate = store.insert_task_try(&attempt(1)).await.unwrap_err();
        assert_eq!(
            duplicate.to_string(),
            format!("try 1 of task instance {} is already recorded", ti.id)
        );
        let failed = store
            .finish_task_try(try_of(&ti, 1), TaskState::UpForRetry, Some(1), at(3, 1))
            .await;
        assert!(failed.unwrap());
        // Ending it twice: the second loses.
        let again = store
            .finish_task_try(try_of(&ti, 1), TaskState::Failed, Some(1), at(3, 2))
            .await;
        assert!(!again.unwrap());
        store.insert_task_try(&attempt(2)).await.unwrap();
        assert!(matches!(
            store
                .finish_task_try(try_of(&ti, 2), TaskState::Queued, None, at(3, 3))
                .await,
            Err(Error::IllegalTaskTransition { .. })
        ));
        let tries = store.list_task_tries(ti.id).await.unwrap();
        assert_eq!(tries.len(), 2);
        assert_eq!(tries[0].state, TaskState::UpForRetry);
        assert_eq!(
            (tries[0].end_date, tries[0].exit_code),
            (Some(at(3, 1)), Some(1))
        );
        assert_eq!(tries[1].state, TaskState::Running);
        let mut orphan = attempt(1);
        orphan.key.task_instance = TaskInstanceId(-1);
        let error = store.insert_task_try(&orphan).await.unwrap_err();
        assert_eq!(error.to_string(), "task instance -1 not found");
    })
    .await;
}

#[tokio::test]
async fn a_try_log_is_appended_in_chunks_and_read_by_range() {
    each_backend(|db| async move {
        let store = db.store().await;
        let ti = with_tasks(&store).await.remove(0);
        start_first_try(&store, &ti).await;
        // The second chunk ends inside a UTF-8 character: bytes are kept as they are.
        let chunks: [&[u8]; 3] = [b"hello\n", b"caf\xc3", b"\xa9\n"];
        for (i, chunk) in chunks.iter().enumerate() {
            let seq = store.append_task_log(try_of(&ti, 1), chunk).await.unwrap();
            assert_eq!(seq, i as i64 + 1);
        }
        let first_two = store.read_task_log(try_of(&ti, 1), 0, 2).await.unwrap();
        assert_eq!(first_two.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2]);
        let rest = store.read_task_log(try_of(&ti, 1), 2, 100).await.unwrap();
        assert_eq!(rest.len(), 1);
        let all: Vec<u8> = store
            .read_task_log(try_of(&ti, 1), 0, 100)
            .await
            .unwrap()
            .into_iter()
            .flat_map(|chunk| chunk.data)
            .collect();
        assert_eq!(String::from_utf8(all).unwrap(), "hello\ncafé\n");
        assert!(
            store
                .read_task_log(try_of(&ti, 2), 0, 100)
                .await
                .unwrap()
                .is_empty()
        );
        let error = store
            .append_task_log(try_of(&ti, 2), b"x")
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("try 2 of task instance {} not found", ti.id)
        );
    })
    .await;
}

#[tokio::test]
async fn concurrent_log_appends_get_distinct_seqs() {
    each_backend(|db| async move {
        let store = db.store().await;
        let ti = with_tasks(&store).await.remove(0);
        start_first_try(&store, &ti).await;
        let key = try_of(&ti, 1);
        let appends: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .append_task_log(key, format!("{i}\n").as_bytes())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for append in appends {
            seqs.push(append.await.unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, [1, 2, 3, 4]);
    })
    .await;
}

#[tokio::test]
async fn outputs_are_read_per_run_and_overwritten_by_name() {
    each_backend(|db| async move {
        let store = db.store().await;
        let tis = with_tasks(&store).await;
        let pair = |name: &str, value: &str| (name.to_owned(), value.to_owned());
        store
            .set_task_outputs(tis[1].id, &[pair("rows", "10"), pair("path", "/tmp/a")])
            .await
            .unwrap();
        store
            .set_task_outputs(tis[0].id, &[pair("rows", "7")])
            .await
            .unwrap();
        store
            .set_task_outputs(tis[1].id, &[pair("rows", "12")])
            .await
            .unwrap();
        let outputs = store.list_task_outputs(tis[0].dag_run_id).await.unwrap();
        let listed: Vec<(&str, &str, &str)> = outputs
            .iter()
            .map(|o| (o.task_id.as_str(), o.name.as_str(), o.value.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("extract", "rows", "7"),
                ("load", "path", "/tmp/a"),
                ("load", "rows", "12")
            ]
        );
        let error = store
            .set_task_outputs(TaskInstanceId(-1), &[pair("a", "b")])
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "task instance -1 not found");
    })
    .await;
}

// --- pools, events, users -----------------------------------------------------------------

#[tokio::test]
async fn pools_are_set_listed_and_deleted_but_never_the_default() {
    each_backend(|db| async move {
        let store = db.store().await;
        let default = store.get_pool(DEFAULT_POOL).await.unwrap().unwrap();
        assert_eq!(default.slots, 128);
        let warehouse = store
            .set_pool("warehouse", 4, Some("the DWH"), None)
            .await
            .unwrap();
        assert_eq!(
            (warehouse.slots, warehouse.description.as_str()),
            (4, "the DWH")
        );
        // Resizing keeps the description unless a new one is given.
        let resized = store.set_pool("warehouse", 2, None, None).await.unwrap();
        assert_eq!(
            (resized.slots, resized.description.as_str()),
            (2, "the DWH")
        );
        let names: Vec<String> = store
            .list_pools()
            .await
            .unwrap()
            .into_iter()
            .map(|pool| pool.name)
            .collect();
        assert_eq!(names, [DEFAULT_POOL, "warehouse"]);
        store.delete_pool("warehouse").await.unwrap();
        assert_eq!(store.get_pool("warehouse").await.unwrap(), None);
        let error = store.delete_pool("warehouse").await.unwrap_err();
        assert_eq!(error.to_string(), "pool 'warehouse' not found");
        let error = store.delete_pool(DEFAULT_POOL).await.unwrap_err();
        assert!(matches!(error, Error::Conflict(_)), "{error:?}");
        assert!(store.get_pool(DEFAULT_POOL).await.unwrap().is_some());
        store.set_pool(DEFAULT_POOL, 64, None, None).await.unwrap();
        assert!(matches!(
            store.set_pool("bad", -1, None, None).await,
            Err(Error::Invalid(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn the_event_log_lists_newest_first() {
    each_backend(|db| async move {
        let store = db.store().await;
        let first = store
            .append_event(&event(at(1, 0), Some("sales"), "trigger"))
            .await;
        assert_eq!(first.unwrap().task_id.unwrap().as_str(), "load");
        store
            .append_event(&event(at(3, 0), None, "login"))
            .await
            .unwrap();
        store
            .append_event(&event(at(2, 0), Some("sales"), "pause"))
            .await
            .unwrap();
        let whats = |events: Vec<updraft_metadata::EventLog>| {
            events.into_iter().map(|e| e.event).collect::<Vec<_>>()
        };
        assert_eq!(
            whats(store.list_events(None, 10).await.unwrap()),
            ["login", "pause", "trigger"]
        );
        assert_eq!(
            whats(store.list_events(None, 2).await.unwrap()),
            ["login", "pause"]
        );
        let sales = dag_id("sales");
        let of_sales = store.list_events(Some(&sales), 10).await.unwrap();
        assert_eq!(of_sales[0].details, json!({"why": "pause"}));
        assert_eq!(whats(of_sales), ["pause", "trigger"]);
    })
    .await;
}

#[tokio::test]
async fn user_names_are_checked_like_ids() {
    each_backend(|db| async move {
        let store = db.store().await;
        for name in ["ada", "ada.lovelace@example.com", "etl-bot_2"] {
            store
                .create_user(name, "hash", Role::Viewer, at(1, 0))
                .await
                .unwrap();
        }
        let long = "a".repeat(65);
        for (name, message) in [
            ("", "a user needs a name"),
            (long.as_str(), "is longer than 64 characters"),
            (
                "<script>",
                "user name \"<script>\" may only hold letters, digits and _ . - @",
            ),
            (
                "ada\nforged: line",
                "user name \"ada\\nforged: line\" may only hold",
            ),
            ("ad a", "may only hold"),
        ] {
            let error = store
                .create_user(name, "hash", Role::Viewer, at(1, 0))
                .await
                .unwrap_err();
            assert!(matches!(error, Error::Invalid(_)), "{name:?}: {error:?}");
            assert!(error.to_string().contains(message), "{name:?}: {error}");
        }
        assert_eq!(store.list_users().await.unwrap().len(), 3);
    })
    .await;
}

#[tokio::test]
async fn api_tokens_expire_are_listed_and_are_revoked_one_at_a_time() {
    each_backend(|db| async move {
        let store = db.store().await;
        for name in ["ada", "bob"] {
            store
                .create_user(name, "hash", Role::Admin, at(1, 0))
                .await
                .unwrap();
        }
        let expiring = NewApiToken {
            name: "ci".to_owned(),
            expires_at: Some(at(3, 0)),
        };
        let ci = store
            .create_api_token("ada", "ci-hash", &expiring, at(2, 0))
            .await
            .unwrap();
        let forever = NewApiToken {
            name: "prometheus".to_owned(),
            expires_at: None,
        };
        let prometheus = store
            .create_api_token("ada", "prometheus-hash", &forever, at(2, 0))
            .await
            .unwrap();
        let bobs = store
            .create_api_token("bob", "bob-hash", &forever, at(2, 0))
            .await
            .unwrap();
        let past = NewApiToken {
            name: String::new(),
            expires_at: Some(at(1, 0)),
        };
        let error = store
            .create_api_token("ada", "past-hash", &past, at(2, 0))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Invalid(_)), "{error:?}");

        let user = |hash: &'static str, now| {
            let store = store.clone();
            async move {
                store
                    .get_user_by_token(hash, now)
                    .await
                    .unwrap()
                    .map(|user| user.username)
            }
        };
        assert_eq!(user("ci-hash", at(2, 23)).await.as_deref(), Some("ada"));
        assert_eq!(user("ci-hash", at(3, 0)).await, None, "expired");
        assert_eq!(
            user("prometheus-hash", at(9, 0)).await.as_deref(),
            Some("ada")
        );

        let listed = store.list_api_tokens(Some("ada"), 10).await.unwrap();
        assert_eq!(listed, [prometheus.clone(), ci.clone()]);
        assert_eq!(ci.status(at(2, 0)), "active");
        assert_eq!(ci.status(at(3, 0)), "expired");
        assert_eq!(store.list_api_tokens(None, 10).await.unwrap().len(), 3);
        assert_eq!(
            store.list_api_tokens(None, 1).await.unwrap(),
            std::slice::from_ref(&bobs)
        );

        // Only its owner (or anyone, when no owner is named) revokes a token, once.
        let error = store
            .revoke_api_token(prometheus.id, Some("bob"), at(4, 0))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::NotFound(_)), "{error:?}");
        let revoked = store
            .revoke_api_token(prometheus.id, Some("ada"), at(4, 0))
            .await
            .unwrap();
        assert_eq!(revoked.revoked_at, Some(at(4, 0)));
        assert_eq!(revoked.status(at(4, 0)), "revoked");
        assert_eq!(user("prometheus-hash", at(4, 0)).await, None);
        assert_eq!(user("bob-hash", at(4, 0)).await.as_deref(), Some("bob"));
        let again = store
            .revoke_api_token(prometheus.id, None, at(5, 0))
            .await
            .unwrap_err();
        assert!(matches!(again, Error::Conflict(_)), "{again:?}");
        let missing = store
            .revoke_api_token(9999, None, at(5, 0))
            .await
            .unwrap_err();
        assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
        store
            .revoke_api_token(bobs.id, None, at(5, 0))
            .await
            .unwrap();
        assert_eq!(user("bob-hash", at(5, 0)).await, None);
    })
    .await;
}

#[tokio::test]
async fn a_new_sqlite_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("home/updraft.db");
    let store = Store::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    // The write-ahead log and the shared memory exist while the store is open.
    for file in ["updraft.db", "updraft.db-wal", "updraft.db-shm"] {
        let file = path.with_file_name(file);
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    store.close().await;
}

#[tokio::test]
async fn users_are_created_found_and_deleted_by_name() {
    each_backend(|db| async move {
        let store = db.store().await;
        let ada = store
            .create_user("ada", "$argon2id$hash", Role::Admin, at(1, 0))
            .await
            .unwrap();
        assert_eq!((ada.username.as_str(), ada.role), ("ada", Role::Admin));
        assert!(
            !format!("{ada:?}").contains("argon2"),
            "Debug hides the hash"
        );
        store
            .create_user("bob", "$argon2id$other", Role::Viewer, at(1, 0))
            .await
            .unwrap();
        let taken = store.create_user("ada", "x", Role::Viewer, at(1, 0)).await;
        assert_eq!(taken.unwrap_err().to_string(), "user 'ada' already exists");
        let names: Vec<String> = store
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|user| user.username)
            .collect();
        assert_eq!(names, ["ada", "bob"]);
        assert_eq!(store.get_user("ada").await.unwrap(), Some(ada.clone()));
        let forever = NewApiToken::default();
        store
            .create_api_token("ada", "token-hash", &forever, at(2, 0))
            .await
            .unwrap();
        assert_eq!(
            store
                .get_user_by_token("token-hash", at(2, 0))
                .await
                .unwrap(),
            Some(ada)
        );
        assert_eq!(
            store.get_user_by_token("other", at(2, 0)).await.unwrap(),
            None
        );
        let error = store
            .create_api_token("nobody", "t", &forever, at(2, 0))
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "user 'nobody' not found");
        store.delete_user("ada").await.unwrap();
        assert_eq!(store.get_user("ada").await.unwrap(), None);
        assert_eq!(
            store
                .get_user_by_token("token-hash", at(2, 0))
                .await
                .unwrap(),
            None
        );
        let error = store.delete_user("ada").await.unwrap_err();
        assert_eq!(error.to_string(), "user 'ada' not found");
    })
    .await;
}

#[test]
fn stores_opening_a_new_sqlite_file_at_once_all_connect() {
    // Processes started together (a scheduler and a worker) race to switch a new file to WAL,
    // each migrating as soon as it is connected; a loser of that race is told "database is
    // locked" at once, without the busy handler being asked.
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("updraft.db").display());
        let start = std::sync::Barrier::new(6);
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    start.wait();
                    runtime.block_on(async {
                        let store = Store::connect(&url).await.unwrap();
                        store.migrate().await.unwrap();
                        store.close().await;
                    });
                });
            }
        });
    }
}

// --- notifications ------------------------------------------------------------------------

/// A notification is made once per (event, notifier), taken by one sender at a time, tried
/// again when due, and failed for good when told so; one left `sending` by a dead sender is
/// taken again; the cursor only moves forward.
#[tokio::test]
async fn notifications_are_made_once_and_taken_by_one_sender_at_a_time() {
    each_backend(|db| async move {
        let store = db.store().await;
        let tis = with_tasks(&store).await;
        let logged = store
            .append_event(&event(at(3, 0), Some("sales"), "deadline_missed"))
            .await
            .unwrap();
        let after = store.events_after(logged.id - 1, 10).await.unwrap();
        assert_eq!(after.iter().map(|e| e.id).collect::<Vec<_>>(), [logged.id]);
        let new = |target: &str| NewNotification {
            event_id: logged.id,
            dag_run_id: tis[0].dag_run_id,
            target: target.to_owned(),
            event: NotifyEvent::DeadlineMissed,
            channel: json!({"webhook": {"url": "https://h.example"}}),
            notice: json!({"event": "deadline_missed"}),
        };
        let made = store
            .add_notifications(&[new("dag.0"), new("dag.1")], at(3, 0))
            .await
            .unwrap();
        assert_eq!(made, 2);
        // Another scheduler that read the same event makes nothing more.
        assert_eq!(
            store
                .add_notifications(&[new("dag.0")], at(3, 0))
                .await
                .unwrap(),
            0
        );
        let taken = store
            .take_due_notifications(at(3, 0), at(2, 0), 1)
            .await
            .unwrap();
        assert_eq!((taken.len(), taken[0].attempts), (1, 1));
        let second = store
            .take_due_notifications(at(3, 0), at(2, 0), 10)
            .await
            .unwrap();
        assert_eq!(second.len(), 1, "the other one only");
        assert_ne!(second[0].id, taken[0].id);
        store
            .end_notification_attempt(taken[0].id, &Attempt::Sent, at(3, 0))
            .await
            .unwrap();
        let failed = Attempt::Failed {
            error: "the receiver answered HTTP 500".to_owned(),
            retry_at: Some(at(4, 0)),
        };
        store
            .end_notification_attempt(second[0].id, &failed, at(3, 0))
            .await
            .unwrap();
        // Not due before its retry time; then its second attempt, and failed for good.
        assert!(
            store
                .take_due_notifications(at(3, 0), at(2, 0), 10)
                .await
                .unwrap()
                .is_empty()
        );
        let again = store
            .take_due_notifications(at(4, 0), at(3, 0), 10)
            .await
            .unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 2));
        // Its sender died: once stale, it is taken again.
        let retaken = store
            .take_due_notifications(at(6, 0), at(5, 0), 10)
            .await
            .unwrap();
        assert_eq!((retaken.len(), retaken[0].attempts), (1, 3));
        let given_up = Attempt::Failed {
            error: "the receiver answered HTTP 500".to_owned(),
            retry_at: None,
        };
        store
            .end_notification_attempt(retaken[0].id, &given_up, at(6, 0))
            .await
            .unwrap();
        let listed = store
            .list_run_notifications(tis[0].dag_run_id)
            .await
            .unwrap();
        let states: Vec<(&str, &str)> = listed
            .iter()
            .map(|n| (n.target.as_str(), n.state.as_str()))
            .collect();
        assert_eq!(states, [("dag.0", "sent"), ("dag.1", "failed")]);
        assert_eq!(
            listed[1].last_error.as_deref(),
            Some("the receiver answered HTTP 500")
        );
        // The cursor moves forward only.
        let start = store.notifier_cursor().await.unwrap();
        store.advance_notifier_cursor(start + 5).await.unwrap();
        store.advance_notifier_cursor(start + 2).await.unwrap();
        assert_eq!(store.notifier_cursor().await.unwrap(), start + 5);
    })
    .await;
}
