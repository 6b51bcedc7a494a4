//! Due DAGs (`Store::next_due_at`, `Store::take_due_dags`, `DueBatch`) on both backends: only
//! active, unpaused DAGs whose next run is due and which have room are taken, earliest first,
//! with their latest scheduled run; a batch's runs and next runs are written together or not
//! at all; on Postgres two schedulers taking batches at once never take the same DAG. And the
//! scheduler's wake-ups say which runs a write concerned, in this process and in others.

use std::collections::HashSet;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use updraft_core::ids::{DagId, DagRunId};
use updraft_core::schedule::RunInterval;
use updraft_core::state::{DagRunState, RunType, TaskMove, TaskState};
use updraft_metadata::testing::each_backend;
use updraft_metadata::{
    Backend, Changes, CreateOutcome, DagSync, NewBackfill, NewDagRun, NewTaskInstance, NextRun,
    Store, Topic, Wakeups,
};

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, hour, 0, 0).unwrap()
}

fn id(name: &str) -> DagId {
    DagId::parse(name).unwrap()
}

/// The hourly interval that starts at `hour`.
fn hourly(hour: u32) -> RunInterval {
    RunInterval {
        logical_date: at(hour),
        data_interval_start: at(hour),
        data_interval_end: at(hour) + Duration::hours(1),
        run_after: at(hour) + Duration::hours(1),
    }
}

/// DAG `name` (max_active_runs 2) whose next run is `next`.
async fn dag(store: &Store, name: &str, next: Option<RunInterval>) {
    let sync = DagSync {
        dag_id: id(name),
        fileloc: format!("dags/{name}.yaml"),
        owner: String::new(),
        description: None,
        tags: Vec::new(),
        schedule: Some("@hourly".to_owned()),
        timezone: "UTC".to_owned(),
        max_active_runs: 2,
        max_active_tasks: 16,
        paused_on_creation: false,
        version_hash: "v1".to_owned(),
        serialized: json!({}),
        source: String::new(),
    };
    store.upsert_dag(&sync, at(0)).await.unwrap();
    store
        .set_next_runs(&[NextRun {
            dag_id: id(name),
            next,
        }])
        .await
        .unwrap();
}

fn run(name: &str, interval: &RunInterval, run_type: RunType) -> NewDagRun {
    NewDagRun {
        dag_id: id(name),
        run_id: format!("{run_type}__{}", interval.logical_date.to_rfc3339()),
        run_type,
        logical_date: interval.logical_date,
        data_interval_start: interval.data_interval_start,
        data_interval_end: interval.data_interval_end,
        run_after: interval.run_after,
        conf: json!({}),
        version_hash: "v1".to_owned(),
        backfill_id: None,
    }
}

async fn created(store: &Store, new: &NewDagRun) -> updraft_metadata::DagRun {
    match store.create_dag_run(new, at(0)).await.unwrap() {
        CreateOutcome::Created(run) => run,
        CreateOutcome::AlreadyExists(_) => panic!("{} exists", new.run_id),
    }
}

#[tokio::test]
async fn only_due_dags_with_room_are_taken_earliest_first_with_their_latest_run() {
    each_backend(|db| async move {
        let store = db.store().await;
        dag(&store, "late", Some(hourly(3))).await;
        dag(&store, "early", Some(hourly(1))).await;
        dag(&store, "future", Some(hourly(9))).await;
        dag(&store, "exhausted", None).await;
        dag(&store, "paused", Some(hourly(1))).await;
        store.set_paused(&id("paused"), true).await.unwrap();
        dag(&store, "gone", Some(hourly(1))).await;
        store
            .mark_dags_inactive_except(&[
                id("late"),
                id("early"),
                id("future"),
                id("exhausted"),
                id("paused"),
                id("full"),
            ])
            .await
            .unwrap();
        dag(&store, "full", Some(hourly(2))).await;
        // "full" has two unfinished runs, its max_active_runs; "late" one, and a finished one
        // later: the latest scheduled run counts whatever its state.
        created(&store, &run("full", &hourly(0), RunType::Scheduled)).await;
        created(&store, &run("full", &hourly(1), RunType::Manual)).await;
        created(&store, &run("late", &hourly(1), RunType::Scheduled)).await;
        let done = created(&store, &run("late", &hourly(2), RunType::Scheduled)).await;
        store
            .set_dag_run_state(done.id, DagRunState::Queued, DagRunState::Failed, at(3))
            .await
            .unwrap();

        assert_eq!(
            store.next_due_at().await.unwrap(),
            Some(hourly(1).run_after)
        );
        let batch = store.take_due_dags(at(5), 10).await.unwrap();
        let taken: Vec<(&str, i64, Option<DateTime<Utc>>)> = batch
            .dags()
            .iter()
            .map(|due| {
                let last = due.last.map(|last| last.logical_date);
                (due.dag.dag_id.as_str(), due.active_runs, last)
            })
            .collect();
        assert_eq!(
            taken,
            [("early", 0, None), ("late", 1, Some(at(2)))],
            "not future, exhausted, paused, inactive or full"
        );
        // Ended before the next take: a dropped batch rolls back when its connection gets to
        // it, and until then its rows stay locked (and skipped, on Postgres).
        batch.commit(&[]).await.unwrap();
        let first = store.take_due_dags(at(5), 1).await.unwrap();
        assert_eq!(first.dags().len(), 1, "a batch holds at most its limit");
    })
    .await;
}

#[tokio::test]
async fn a_batch_writes_its_runs_and_next_runs_together_or_not_at_all() {
    each_backend(|db| async move {
        let store = db.store().await;
        dag(&store, "sales", Some(hourly(1))).await;
        // A backfill run holds 02:00: the batch's run of that date is skipped.
        let backfill = NewBackfill {
            dag_id: id("sales"),
            from_date: at(2),
            to_date: at(2),
            options: json!({}),
            created_by: "test".to_owned(),
        };
        store
            .create_backfill(
                &backfill,
                &[run("sales", &hourly(2), RunType::Backfill)],
                &[],
                &[],
                at(0),
            )
            .await
            .unwrap();

        let mut batch = store.take_due_dags(at(5), 10).await.unwrap();
        let runs = [
            run("sales", &hourly(1), RunType::Scheduled),
            run("sales", &hourly(2), RunType::Scheduled),
        ];
        let made = batch.create_runs(&runs, at(5)).await.unwrap();
        assert_eq!(made.len(), 1);
        assert_eq!(
            (made[0].logical_date, made[0].state),
            (at(1), DagRunState::Queued)
        );
        // Dropped without a commit: nothing of it is written.
        drop(batch);
        assert_eq!(
            store.list_unfinished_runs().await.unwrap().len(),
            1,
            "the backfill's run"
        );
        assert_eq!(
            store.get_dag(&id("sales")).await.unwrap().unwrap().next_run,
            Some(hourly(1))
        );

        let mut batch = store.take_due_dags(at(5), 10).await.unwrap();
        batch.create_runs(&runs, at(5)).await.unwrap();
        batch
            .commit(&[NextRun {
                dag_id: id("sales"),
                next: Some(hourly(3)),
            }])
            .await
            .unwrap();
        let row = store.get_dag(&id("sales")).await.unwrap().unwrap();
        assert_eq!(row.next_run, Some(hourly(3)));
        let scheduled: Vec<DateTime<Utc>> = store
            .list_unfinished_runs()
            .await
            .unwrap()
            .iter()
            .filter(|run| run.run_type == RunType::Scheduled)
            .map(|run| run.logical_date)
            .collect();
        assert_eq!(scheduled, [at(1)]);
        // Its two unfinished runs (one the backfill's, which counts apart) leave room.
        assert_eq!(
            store.next_due_at().await.unwrap(),
            Some(hourly(3).run_after)
        );
    })
    .await;
}

#[tokio::test]
async fn schedulers_taking_batches_at_once_never_take_the_same_dag() {
    each_backend(|db| async move {
        if db.backend() != Backend::Postgres {
            // SQLite has one writer: a second batch waits for the first.
            return;
        }
        let first = db.store().await;
        let second = db.store().await;
        for n in 0..6 {
            dag(&first, &format!("d{n}"), Some(hourly(1))).await;
        }
        let mine = first.take_due_dags(at(5), 4).await.unwrap();
        let theirs =
            tokio::time::timeout(StdDuration::from_secs(5), second.take_due_dags(at(5), 10))
                .await
                .expect("locked rows are skipped, not waited for")
                .unwrap();
        let names = |batch: &updraft_metadata::DueBatch| -> Vec<String> {
            batch
                .dags()
                .iter()
                .map(|due| due.dag.dag_id.to_string())
                .collect()
        };
        assert_eq!(names(&mine).len(), 4);
        assert_eq!(names(&theirs).len(), 2);
        assert!(
            names(&theirs)
                .iter()
                .all(|name| !names(&mine).contains(name))
        );
    })
    .await;
}

#[tokio::test]
async fn wake_ups_say_which_runs_a_write_concerned() {
    each_backend(|db| async move {
        let store = db.store().await;
        dag(&store, "sales", None).await;
        let mut wakeups = store.subscribe(Topic::Scheduler);
        assert!(
            wakeups.take_changes().everything,
            "a new scheduler looks at everything"
        );
        let elsewhere = db.store().await;
        let mut there = elsewhere.subscribe(Topic::Scheduler);
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        there.take_changes();

        let triggered = created(&store, &run("sales", &hourly(1), RunType::Manual)).await;
        let task = NewTaskInstance {
            task_id: updraft_core::ids::TaskId::parse("t").unwrap(),
            max_tries: 0,
            pool: "default_pool".to_owned(),
            pool_slots: 1,
            queue: "default".to_owned(),
            priority_weight: 1,
            rendered_command: None,
        };
        let ti = store
            .create_task_instances(triggered.id, &[task], at(1))
            .await
            .unwrap()
            .remove(0);
        let marked = created(&store, &run("sales", &hourly(2), RunType::Manual)).await;
        assert!(wakeups.wait(StdDuration::from_secs(5)).await);
        wakeups.take_changes();
        // A user's marks name their runs; the scheduler's own moves wake nobody.
        assert!(
            store
                .set_task_state(ti.id, TaskState::None, TaskState::Success, at(2))
                .await
                .unwrap()
        );
        assert!(
            store
                .set_dag_run_state(marked.id, DagRunState::Queued, DagRunState::Failed, at(2))
                .await
                .unwrap()
        );
        let runs: HashSet<DagRunId> = [triggered.id, marked.id].into_iter().collect();
        let changes = wakeups.take_changes();
        assert_eq!((&changes.runs, changes.everything), (&runs, false));
        // Other processes learn the same: on Postgres from the notifications' payloads (and
        // this one hears them too, which only repeats what it knows), on a SQLite file from
        // its doorbell.
        let seen = gather(&mut there, |seen| runs.is_subset(&seen.runs)).await;
        assert!(runs.is_subset(&seen.runs) && !seen.everything, "{seen:?}");
        if db.backend() == Backend::Postgres {
            gather(&mut wakeups, |seen| runs.is_subset(&seen.runs)).await;
        }
        assert!(
            store
                .set_task_states(
                    &[TaskMove {
                        task_instance: ti.id,
                        from: TaskState::Success,
                        to: TaskState::None
                    }],
                    at(3)
                )
                .await
                .unwrap()[0]
        );
        assert!(wakeups.take_changes().is_empty());
        // A pause may change anything.
        store.set_paused(&id("sales"), true).await.unwrap();
        assert!(wakeups.take_changes().everything);
        assert!(gather(&mut there, |seen| seen.everything).await.everything);
    })
    .await;
}

/// What `wakeups` learns until `enough` holds of it, or for 5 s.
async fn gather(wakeups: &mut Wakeups, enough: impl Fn(&Changes) -> bool) -> Changes {
    let deadline = std::time::Instant::now() + StdDuration::from_secs(5);
    let mut seen = Changes::default();
    while !enough(&seen) && std::time::Instant::now() < deadline {
        wakeups.wait(StdDuration::from_millis(100)).await;
        let changes = wakeups.take_changes();
        seen.everything |= changes.everything;
        seen.runs.extend(changes.runs);
    }
    seen
}
