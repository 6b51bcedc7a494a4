//! Every action on a real store, both backends: its change and its event log row are written
//! together, and an action that is refused or fails writes neither.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use updraft_core::dag::{Dag, LoadOptions, decode};
use updraft_core::ids::{DagId, TaskId};
use updraft_core::state::{BackfillState, DagRunState, TaskState};
use updraft_metadata::testing::each_backend;
use updraft_metadata::{Backend, DagSync, EventLog, NewTaskInstance, Store};
use updraft_ops::backfill::{Ask, Face};
use updraft_ops::clear::Selection;
use updraft_ops::dags::Trigger;
use updraft_ops::mark::Mark;
use updraft_ops::{Actor, Error};

const ETL: &str = "\
schedule: '@daily'
start_date: 2024-01-01
params:
  region: {type: string, default: eu, enum: [eu, us]}
tasks:
  extract: {run: 'echo extract'}
  load: {run: 'echo load', depends_on: extract, retries: 2}
";

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap()
}

fn now() -> DateTime<Utc> {
    at(20)
}

fn etl() -> DagId {
    DagId::parse("etl").unwrap()
}

fn ada() -> Actor {
    Actor::User("ada".to_owned())
}

/// A store with DAG `etl` synced from [`ETL`].
async fn with_dag(store: &Store) -> Dag {
    let dag = decode("etl.yaml", ETL, &LoadOptions::default()).unwrap();
    let sync = DagSync {
        dag_id: dag.id.clone(),
        fileloc: dag.fileloc.clone(),
        owner: "data-eng".to_owned(),
        description: None,
        tags: Vec::new(),
        schedule: Some("@daily".to_owned()),
        timezone: "UTC".to_owned(),
        max_active_runs: 16,
        max_active_tasks: 16,
        paused_on_creation: false,
        version_hash: dag.version_hash(),
        serialized: serde_json::to_value(&dag).unwrap(),
        source: ETL.to_owned(),
    };
    store.upsert_dag(&sync, at(1)).await.unwrap();
    dag
}

/// The events of `etl`, oldest first.
async fn events(store: &Store) -> Vec<EventLog> {
    let mut events = store.list_events(Some(&etl()), 100).await.unwrap();
    events.reverse();
    events
}

/// A manual run of `etl` at `day` with its two task instances, `extract` in `state`.
async fn run_with(store: &Store, day: u32, extract: TaskState) -> String {
    let trigger = Trigger {
        conf: None,
        logical_date: Some(at(day)),
    };
    let run = updraft_ops::dags::trigger(store, &ada(), &etl(), &trigger, now())
        .await
        .unwrap();
    let instances: Vec<NewTaskInstance> = ["extract", "load"]
        .iter()
        .map(|task| NewTaskInstance {
            task_id: TaskId::parse(task).unwrap(),
            max_tries: 0,
            pool: "default_pool".to_owned(),
            pool_slots: 1,
            queue: "default".to_owned(),
            priority_weight: 1,
            rendered_command: None,
        })
        .collect();
    store
        .create_task_instances(run.id, &instances, now())
        .await
        .unwrap();
    if extract != TaskState::None {
        let ti = store
            .find_task_instance(&etl(), &run.run_id, &TaskId::parse("extract").unwrap())
            .await
            .unwrap()
            .unwrap();
        // A running one was scheduled and queued first.
        let path = match extract {
            TaskState::Running => vec![
                TaskState::None,
                TaskState::Scheduled,
                TaskState::Queued,
                TaskState::Running,
            ],
            other => vec![TaskState::None, other],
        };
        for step in path.windows(2) {
            let moved = store
                .set_task_state(ti.id, step[0], step[1], now())
                .await
                .unwrap();
            assert!(moved);
        }
    }
    run.run_id
}

#[tokio::test]
async fn a_trigger_creates_its_run_and_its_event_together() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let trigger = Trigger {
            conf: Some(json!({"region": "us"})),
            logical_date: Some(at(3)),
        };
        let run = updraft_ops::dags::trigger(&store, &ada(), &etl(), &trigger, now())
            .await
            .unwrap();
        assert_eq!(run.run_id, "manual__2024-01-03T00:00:00+00:00");
        assert_eq!(run.conf, json!({"region": "us"}));
        let recorded = events(&store).await;
        assert_eq!(recorded.len(), 1);
        assert_eq!(
            (recorded[0].actor.as_str(), recorded[0].event.as_str()),
            ("ada", "trigger")
        );
        assert_eq!(recorded[0].run_id.as_deref(), Some(run.run_id.as_str()));
        assert_eq!(recorded[0].details["conf"], json!({"region": "us"}));

        // The same run again, a conf that does not fit: refused, nothing written.
        let again = updraft_ops::dags::trigger(&store, &ada(), &etl(), &trigger, now()).await;
        assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
        let bad = Trigger {
            conf: Some(json!({"region": "mars"})),
            logical_date: Some(at(4)),
        };
        let refused = updraft_ops::dags::trigger(&store, &ada(), &etl(), &bad, now()).await;
        assert!(
            matches!(&refused, Err(Error::Invalid(message)) if message.contains("region")),
            "{refused:?}"
        );
        let unknown = DagId::parse("nope").unwrap();
        let missing = updraft_ops::dags::trigger(&store, &ada(), &unknown, &bad, now()).await;
        assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
        assert_eq!(
            store
                .list_dag_runs(&etl(), None, 10, 0)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(events(&store).await.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_change_whose_event_cannot_be_written_is_not_made() {
    each_backend(|db| async move {
        // Postgres refuses a NUL in text, so the event of this actor cannot be stored: the run
        // it would record must not be stored either. (SQLite stores it: nothing to refuse.)
        if db.backend() != Backend::Postgres {
            return;
        }
        let store = db.store().await;
        with_dag(&store).await;
        let actor = Actor::User("a\0b".to_owned());
        let trigger = Trigger::default();
        let failed = updraft_ops::dags::trigger(&store, &actor, &etl(), &trigger, now()).await;
        assert!(matches!(failed, Err(Error::Store(_))), "{failed:?}");
        assert!(
            store
                .list_dag_runs(&etl(), None, 10, 0)
                .await
                .unwrap()
                .is_empty()
        );
        let paused = updraft_ops::dags::set_paused(&store, &actor, &etl(), true, now()).await;
        assert!(matches!(paused, Err(Error::Store(_))), "{paused:?}");
        assert!(!store.get_dag(&etl()).await.unwrap().unwrap().is_paused);
        assert!(events(&store).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn pausing_and_unpausing_are_recorded_with_who_did_it() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let root = Actor::Cli("root".to_owned());
        updraft_ops::dags::set_paused(&store, &ada(), &etl(), true, now())
            .await
            .unwrap();
        assert!(store.get_dag(&etl()).await.unwrap().unwrap().is_paused);
        updraft_ops::dags::set_paused(&store, &root, &etl(), false, now())
            .await
            .unwrap();
        assert!(!store.get_dag(&etl()).await.unwrap().unwrap().is_paused);
        let recorded: Vec<(String, String)> = events(&store)
            .await
            .into_iter()
            .map(|event| (event.actor, event.event))
            .collect();
        assert_eq!(
            recorded,
            [
                ("ada".to_owned(), "pause".to_owned()),
                ("root".to_owned(), "unpause".to_owned())
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn a_clear_selects_resets_and_records_what_it_cleared() {
    each_backend(|db| async move {
        let store = db.store().await;
        let dag = with_dag(&store).await;
        let first = run_with(&store, 1, TaskState::Failed).await;
        let second = run_with(&store, 2, TaskState::Success).await;
        let selection = Selection {
            tasks: vec![TaskId::parse("extract").unwrap()],
            downstream: true,
            from: Some(at(1)),
            to: Some(at(1)),
            ..Selection::default()
        };
        let selected = updraft_ops::clear::select(&store, &dag, &selection, None)
            .await
            .unwrap();
        let picked: Vec<(&str, &str)> = selected
            .iter()
            .map(|ti| (ti.run_id.as_str(), ti.task_id.as_str()))
            .collect();
        assert_eq!(
            picked,
            [(first.as_str(), "extract"), (first.as_str(), "load")]
        );
        // Every run, only the failed: the first run's extract alone. A limit refuses more.
        let failed = Selection {
            only_failed: true,
            ..Selection::default()
        };
        let only = updraft_ops::clear::select(&store, &dag, &failed, None)
            .await
            .unwrap();
        assert_eq!(only.len(), 1);
        let wide = updraft_ops::clear::select(&store, &dag, &Selection::default(), Some(3)).await;
        assert!(matches!(wide, Err(Error::Invalid(_))), "{wide:?}");

        let report = updraft_ops::clear::clear(&store, &ada(), &dag, &selection, &selected, now())
            .await
            .unwrap();
        assert_eq!(report.task_instances, 2);
        let extract = store
            .find_task_instance(&etl(), &first, &TaskId::parse("extract").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(extract.state, TaskState::None);
        let untouched = store
            .find_task_instance(&etl(), &second, &TaskId::parse("extract").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(untouched.state, TaskState::Success);
        let event = events(&store).await.pop().unwrap();
        assert_eq!(
            (event.actor.as_str(), event.event.as_str()),
            ("ada", "clear")
        );
        assert_eq!(event.details["task_instances"].as_array().unwrap().len(), 2);
        assert_eq!(event.details["downstream"], true);
    })
    .await;
}

#[tokio::test]
async fn a_mark_moves_by_compare_and_set_and_records_only_what_it_did() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let run_id = run_with(&store, 1, TaskState::Running).await;
        let extract = TaskId::parse("extract").unwrap();
        let marked = updraft_ops::mark::mark_task(
            &store,
            &ada(),
            &etl(),
            &run_id,
            &extract,
            Mark::Failed,
            now(),
        )
        .await
        .unwrap();
        assert_eq!(marked, TaskState::Failed);
        let again = updraft_ops::mark::mark_task(
            &store,
            &ada(),
            &etl(),
            &run_id,
            &extract,
            Mark::Failed,
            now(),
        )
        .await;
        assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
        let before = events(&store).await.len();

        // Marking the run success marks every task instance success, in the same change.
        let moved =
            updraft_ops::mark::mark_run(&store, &ada(), &etl(), &run_id, Mark::Success, now())
                .await
                .unwrap();
        assert_eq!((moved.success, moved.failed, moved.skipped), (2, 0, 0));
        let run = store
            .get_dag_run_by_run_id(&etl(), &run_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(run.state, DagRunState::Success);
        let states: Vec<TaskState> = store
            .list_task_instances(run.id)
            .await
            .unwrap()
            .iter()
            .map(|ti| ti.state)
            .collect();
        assert_eq!(states, [TaskState::Success, TaskState::Success]);
        let cancelled = updraft_ops::mark::cancel_run(&store, &ada(), &etl(), &run_id, now()).await;
        assert!(
            matches!(cancelled, Err(Error::Conflict(_))),
            "{cancelled:?}"
        );

        let recorded: Vec<String> = events(&store)
            .await
            .into_iter()
            .skip(before)
            .map(|event| event.event)
            .collect();
        assert_eq!(recorded, ["mark_success"]);
    })
    .await;
}

#[tokio::test]
async fn a_cancel_fails_the_running_and_skips_the_rest() {
    each_backend(|db| async move {
        let store = db.store().await;
        with_dag(&store).await;
        let run_id = run_with(&store, 1, TaskState::Running).await;
        let run = store
            .get_dag_run_by_run_id(&etl(), &run_id)
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .set_dag_run_state(run.id, DagRunState::Queued, DagRunState::Running, now())
                .await
                .unwrap()
        );
        let cancelled = updraft_ops::mark::cancel_run(&store, &ada(), &etl(), &run_id, now())
            .await
            .unwrap();
        assert_eq!(
            (
                cancelled.task_instances_failed,
                cancelled.task_instances_skipped
            ),
            (1, 1)
        );
        let run = store.get_dag_run(run.id).await.unwrap().unwrap();
        assert_eq!(run.state, DagRunState::Failed);
        let event = events(&store).await.pop().unwrap();
        assert_eq!(
            (event.actor.as_str(), event.event.as_str()),
            ("ada", "cancel")
        );
        assert_eq!(event.details["task_instances"]["failed"], 1);
    })
    .await;
}

#[tokio::test]
async fn a_backfill_and_its_moves_are_recorded_with_who_made_them() {
    each_backend(|db| async move {
        let store = db.store().await;
        let dag = with_dag(&store).await;
        let row = store.get_dag(&etl()).await.unwrap().unwrap();
        let ask = Ask {
            from: "2024-01-01".to_owned(),
            to: "2024-01-03".to_owned(),
            reprocess: Default::default(),
            max_active_runs: Some(2),
            run_backwards: false,
            conf: json!({"region": "us"}),
            limit: None,
            face: Face::Cli,
        };
        let planned = updraft_ops::backfill::plan(&store, &row, &dag, ask.clone(), now())
            .await
            .unwrap();
        assert_eq!(planned.counts.create, 3);
        let created = updraft_ops::backfill::create(&store, &ada(), &row, &dag, &planned, now())
            .await
            .unwrap();
        assert_eq!(created.created, 3);
        assert_eq!(created.backfill.created_by, "ada");
        let runs = store.list_backfill_runs(created.backfill.id).await.unwrap();
        assert_eq!(runs[0].run_id, "backfill__2024-01-01T00:00:00+00:00");
        assert_eq!(runs[0].conf, json!({"region": "us"}));

        // Planned again, every date is taken: nothing to create, refused as a conflict.
        let again = updraft_ops::backfill::plan(&store, &row, &dag, ask, now())
            .await
            .unwrap();
        let nothing = updraft_ops::backfill::create(&store, &ada(), &row, &dag, &again, now()).await;
        assert!(matches!(nothing, Err(Error::Conflict(_))), "{nothing:?}");

        let id = created.backfill.id;
        let bob = Actor::Cli("bob".to_owned());
        let later = now() + Duration::hours(1);
        updraft_ops::backfill::set_state(&store, &ada(), id, BackfillState::Paused, later)
            .await
            .unwrap();
        let resume_twice = updraft_ops::backfill::set_state(&store, &bob, id, BackfillState::Paused, later).await;
        assert!(
            matches!(&resume_twice, Err(Error::Conflict(message)) if message.contains("only a running backfill")),
            "{resume_twice:?}"
        );
        updraft_ops::backfill::set_state(&store, &bob, id, BackfillState::Running, later)
            .await
            .unwrap();
        let moved = updraft_ops::backfill::set_state(&store, &bob, id, BackfillState::Cancelled, later)
            .await
            .unwrap();
        assert_eq!(moved.runs_failed, 3);
        let recorded: Vec<(String, String)> = events(&store)
            .await
            .into_iter()
            .map(|event| (event.actor, event.event))
            .collect();
        let expected = [
            ("ada", "backfill_create"),
            ("ada", "backfill_paused"),
            ("bob", "backfill_running"),
            ("bob", "backfill_cancelled"),
        ]
        .map(|(actor, event)| (actor.to_owned(), event.to_owned()));
        assert_eq!(recorded, expected);
    })
    .await;
}

#[tokio::test]
async fn a_backfill_refusal_names_the_fields_of_whoever_asked() {
    each_backend(|db| async move {
        let store = db.store().await;
        let dag = with_dag(&store).await;
        let row = store.get_dag(&etl()).await.unwrap().unwrap();
        let reversed = |face| Ask {
            from: "2024-01-05".to_owned(),
            to: "2024-01-01".to_owned(),
            reprocess: Default::default(),
            max_active_runs: None,
            run_backwards: false,
            conf: json!({}),
            limit: None,
            face,
        };
        for (face, expected) in [(Face::Cli, "--from"), (Face::Web, "from 2024")] {
            let refused =
                updraft_ops::backfill::plan(&store, &row, &dag, reversed(face), now()).await;
            assert!(
                matches!(&refused, Err(Error::Invalid(message)) if message.starts_with(expected)),
                "{refused:?}"
            );
        }
        assert!(store.list_backfills(None, 10).await.unwrap().is_empty());
    })
    .await;
}
