//! Sessions and the web UI's reads (filters, pages, pool usage), every test on both backends.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use updraft_core::ids::{DagId, DagRunId, TaskId};
use updraft_core::state::{DagRunState, RunType, TaskMove, TaskState};
use updraft_metadata::testing::each_backend;
use updraft_metadata::{
    CreateOutcome, DagFilter, DagSync, Error, NewDagRun, NewEvent, NewTaskInstance, PoolUsage,
    Role, RunFilter, Store,
};

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, day, hour, 0, 0).unwrap()
}

fn dag_id(id: &str) -> DagId {
    DagId::parse(id).unwrap()
}

async fn with_dag(store: &Store, id: &str, tags: &[&str]) {
    let sync = DagSync {
        dag_id: dag_id(id),
        fileloc: format!("dags/{id}.yaml"),
        owner: "data-eng".to_owned(),
        description: None,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        schedule: None,
        timezone: "UTC".to_owned(),
        max_active_runs: 16,
        max_active_tasks: 16,
        paused_on_creation: false,
        version_hash: "v1".to_owned(),
        serialized: json!({}),
        source: String::new(),
    };
    store.upsert_dag(&sync, at(1, 0)).await.unwrap();
}

async fn run(store: &Store, dag: &str, day: u32, run_type: RunType) -> DagRunId {
    let new = NewDagRun {
        dag_id: dag_id(dag),
        run_id: format!("{}__{day}", run_type.as_str()),
        run_type,
        logical_date: at(day, 0),
        data_interval_start: at(day, 0),
        data_interval_end: at(day, 0),
        run_after: at(day, 0),
        conf: json!({}),
        version_hash: "v1".to_owned(),
        backfill_id: None,
    };
    let CreateOutcome::Created(run) = store.create_dag_run(&new, at(day, 0)).await.unwrap() else {
        panic!("run exists");
    };
    run.id
}

fn task(id: &str) -> NewTaskInstance {
    NewTaskInstance {
        task_id: TaskId::parse(id).unwrap(),
        max_tries: 1,
        pool: "default_pool".to_owned(),
        pool_slots: 2,
        queue: "default".to_owned(),
        priority_weight: 1,
        rendered_command: None,
    }
}

#[tokio::test]
async fn a_session_finds_its_user_until_it_expires_or_ends() {
    each_backend(|db| async move {
        let store = db.store().await;
        let user = store
            .create_user("ada", "hash", Role::Viewer, at(1, 0))
            .await
            .unwrap();
        store
            .create_session(user.id, "token-hash", "csrf", at(1, 0), at(2, 0))
            .await
            .unwrap();
        let session = store
            .get_session("token-hash", at(1, 12))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(session.user.username, "ada");
        assert_eq!(session.user.role, Role::Viewer);
        assert_eq!(session.csrf_token, "csrf");
        assert_eq!(session.expires_at, at(2, 0));
        assert!(!format!("{session:?}").contains("csrf\""));
        assert_eq!(store.get_session("other", at(1, 12)).await.unwrap(), None);
        assert_eq!(
            store.get_session("token-hash", at(2, 0)).await.unwrap(),
            None
        );

        store.delete_session("token-hash").await.unwrap();
        assert_eq!(
            store.get_session("token-hash", at(1, 12)).await.unwrap(),
            None
        );
        store.delete_session("token-hash").await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn sessions_of_a_deleted_user_end_and_an_unknown_user_has_none() {
    each_backend(|db| async move {
        let store = db.store().await;
        let user = store
            .create_user("ada", "hash", Role::Admin, at(1, 0))
            .await
            .unwrap();
        store
            .create_session(user.id, "t1", "c", at(1, 0), at(9, 0))
            .await
            .unwrap();
        store.delete_user("ada").await.unwrap();
        assert_eq!(store.get_session("t1", at(1, 1)).await.unwrap(), None);
        let error = store
            .create_session(user.id, "t2", "c", at(1, 0), at(9, 0))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::NotFound(_)), "{error:?}");
        let error = store
            .create_session(user.id, "t3", "c", at(2, 0), at(1, 0))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Invalid(_)), "{error:?}");
    })
    .await;
}

#[tokio::test]
async fn a_new_session_removes_the_expired_ones() {
    each_backend(|db| async move {
        let store = db.store().await;
        let user = store
            .create_user("ada", "hash", Role::Admin, at(1, 0))
            .await
            .unwrap();
        store
            .create_session(user.id, "old", "c", at(1, 0), at(2, 0))
            .await
            .unwrap();
        store
            .create_session(user.id, "new", "c", at(3, 0), at(4, 0))
            .await
            .unwrap();
        // Asked at a time when both would be live: only the new one is left.
        assert_eq!(store.get_session("old", at(1, 0)).await.unwrap(), None);
        assert!(store.get_session("new", at(3, 0)).await.unwrap().is_some());
    })
    .await;
}

#[tokio::test]
async fn the_dag_list_filters_by_search_tag_and_pause() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store, "Sales_daily", &["sales", "daily"]).await;
        with_dag(&store, "sales-hourly", &["sales"]).await;
        with_dag(&store, "marketing", &["daily"]).await;
        store.set_paused(&dag_id("marketing"), true).await.unwrap();
        let ids = |rows: Vec<updraft_metadata::DagRow>| {
            rows.into_iter()
                .map(|r| r.dag_id.to_string())
                .collect::<Vec<_>>()
        };
        let page = |filter: DagFilter, limit, offset| {
            let store = store.clone();
            async move { ids(store.list_dags_page(&filter, limit, offset).await.unwrap()) }
        };
        assert_eq!(
            page(DagFilter::default(), 10, 0).await,
            ["Sales_daily", "marketing", "sales-hourly"]
        );
        assert_eq!(page(DagFilter::default(), 1, 1).await, ["marketing"]);
        let search = |text: &str| DagFilter {
            search: Some(text.to_owned()),
            ..DagFilter::default()
        };
        assert_eq!(
            page(search("SALES"), 10, 0).await,
            ["Sales_daily", "sales-hourly"]
        );
        // `_` is a character, not a wildcard.
        assert_eq!(page(search("s_d"), 10, 0).await, ["Sales_daily"]);
        assert_eq!(page(search("%"), 10, 0).await, Vec::<String>::new());
        let tag = DagFilter {
            tag: Some("daily".to_owned()),
            ..DagFilter::default()
        };
        assert_eq!(page(tag, 10, 0).await, ["Sales_daily", "marketing"]);
        let paused = DagFilter {
            paused: Some(true),
            ..DagFilter::default()
        };
        assert_eq!(page(paused, 10, 0).await, ["marketing"]);
        let active = DagFilter {
            paused: Some(false),
            tag: Some("sales".to_owned()),
            search: Some("hour".to_owned()),
        };
        assert_eq!(page(active, 10, 0).await, ["sales-hourly"]);
        assert_eq!(store.list_dag_tags().await.unwrap(), ["daily", "sales"]);
    })
    .await;
}

#[tokio::test]
async fn runs_are_paged_and_filtered_by_state_and_type() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store, "etl", &[]).await;
        let first = run(&store, "etl", 1, RunType::Scheduled).await;
        run(&store, "etl", 2, RunType::Manual).await;
        run(&store, "etl", 3, RunType::Scheduled).await;
        store
            .set_dag_run_state(first, DagRunState::Queued, DagRunState::Failed, at(4, 0))
            .await
            .unwrap();
        let etl = dag_id("etl");
        let run_ids = |filter, limit, offset| {
            let store = store.clone();
            let etl = etl.clone();
            async move {
                store
                    .list_runs_page(&etl, filter, limit, offset)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.run_id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            run_ids(RunFilter::default(), 10, 0).await,
            ["scheduled__3", "manual__2", "scheduled__1"]
        );
        assert_eq!(run_ids(RunFilter::default(), 1, 1).await, ["manual__2"]);
        let scheduled = RunFilter {
            run_type: Some(RunType::Scheduled),
            state: None,
        };
        assert_eq!(
            run_ids(scheduled, 10, 0).await,
            ["scheduled__3", "scheduled__1"]
        );
        let failed = RunFilter {
            run_type: Some(RunType::Scheduled),
            state: Some(DagRunState::Failed),
        };
        assert_eq!(run_ids(failed, 10, 0).await, ["scheduled__1"]);
        let dots = store.recent_runs(&etl, 2).await.unwrap();
        assert_eq!(dots.len(), 2);
        assert_eq!(dots[0].run_id, "scheduled__3");
        assert_eq!(dots[0].state, DagRunState::Queued);
    })
    .await;
}

#[tokio::test]
async fn task_instances_are_found_by_key_and_by_range() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store, "etl", &[]).await;
        let mut runs = Vec::new();
        for day in 1..=3 {
            let id = run(&store, "etl", day, RunType::Scheduled).await;
            store
                .create_task_instances(id, &[task("extract"), task("load")], at(day, 0))
                .await
                .unwrap();
            runs.push(id);
        }
        let etl = dag_id("etl");
        let load = TaskId::parse("load").unwrap();
        let found = store
            .find_task_instance(&etl, "scheduled__2", &load)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.dag_run_id, found.task_id.as_str()),
            (runs[1], "load")
        );
        let missing = store
            .find_task_instance(&etl, "scheduled__9", &load)
            .await
            .unwrap();
        assert_eq!(missing, None);

        let in_range = store
            .task_instances_in_range(&etl, std::slice::from_ref(&load), at(2, 0), at(3, 0), 10)
            .await
            .unwrap();
        let keys: Vec<(&str, &str)> = in_range
            .iter()
            .map(|ti| (ti.run_id.as_str(), ti.task_id.as_str()))
            .collect();
        assert_eq!(keys, [("scheduled__3", "load"), ("scheduled__2", "load")]);
        let limited = store
            .task_instances_in_range(&etl, &[load], at(1, 0), at(3, 0), 1)
            .await
            .unwrap();
        assert_eq!(limited.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn pool_usage_counts_the_slots_of_running_and_queued_task_instances() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store, "etl", &[]).await;
        let id = run(&store, "etl", 1, RunType::Scheduled).await;
        let created = store
            .create_task_instances(id, &[task("a"), task("b"), task("c")], at(1, 0))
            .await
            .unwrap();
        assert_eq!(store.pool_usage().await.unwrap(), []);
        let moves = [
            TaskMove {
                task_instance: created[0].id,
                from: TaskState::None,
                to: TaskState::Scheduled,
            },
            TaskMove {
                task_instance: created[1].id,
                from: TaskState::None,
                to: TaskState::Scheduled,
            },
        ];
        store.set_task_states(&moves, at(1, 1)).await.unwrap();
        let moves = [
            TaskMove {
                task_instance: created[0].id,
                from: TaskState::Scheduled,
                to: TaskState::Queued,
            },
            TaskMove {
                task_instance: created[1].id,
                from: TaskState::Scheduled,
                to: TaskState::Queued,
            },
        ];
        store.set_task_states(&moves, at(1, 1)).await.unwrap();
        store
            .set_task_state(
                created[1].id,
                TaskState::Queued,
                TaskState::Running,
                at(1, 2),
            )
            .await
            .unwrap();
        assert_eq!(
            store.pool_usage().await.unwrap(),
            [(
                "default_pool".to_owned(),
                PoolUsage {
                    running: 2,
                    queued: 2
                }
            )]
        );
    })
    .await;
}

#[tokio::test]
async fn events_and_backfills_are_paged_newest_first() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store, "etl", &[]).await;
        for (hour, dag) in [(1, Some("etl")), (2, None), (3, Some("etl"))] {
            store
                .append_event(&NewEvent {
                    at: at(1, hour),
                    actor: "ada".to_owned(),
                    dag_id: dag.map(dag_id),
                    run_id: None,
                    task_id: None,
                    event: format!("e{hour}"),
                    details: json!({}),
                })
                .await
                .unwrap();
        }
        let events = |dag: Option<DagId>, limit, offset| {
            let store = store.clone();
            async move {
                store
                    .list_events_page(dag.as_ref(), limit, offset)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.event)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(events(None, 10, 0).await, ["e3", "e2", "e1"]);
        assert_eq!(events(None, 1, 1).await, ["e2"]);
        assert_eq!(events(Some(dag_id("etl")), 10, 1).await, ["e1"]);
        assert!(
            store
                .list_backfills_page(Some(&dag_id("etl")), 10, 0)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}
