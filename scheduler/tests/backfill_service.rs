//! The scheduler loop with backfills, tick by tick on a real store (both backends), with the
//! clock as a parameter and task instances finished by hand instead of by a worker: backfill
//! runs start within their backfill's own `max_active_runs`, not while it is paused, newest
//! first when it runs backwards, while their DAG is paused; the backfill completes when its
//! runs have finished.

use chrono::{DateTime, Utc};
use updraft_core::backfill::{BackfillOptions, Reprocess, decide, intervals};
use updraft_core::dag::LoadOptions;
use updraft_core::ids::{BackfillId, DagId};
use updraft_core::state::{BackfillState, DagRunState, RunType, TaskState};
use updraft_metadata::testing::each_backend;
use updraft_metadata::{DagRun, NewBackfill, NewDagRun, Store};
use updraft_scheduler::service::{Scheduler, Settings};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn now() -> DateTime<Utc> {
    at("2024-02-01T12:00:00Z")
}

const DAG: &str = "version: 1\nid: d\nschedule: \"@daily\"\nstart_date: 2024-01-01\n\
                   max_active_runs: 3\ntasks:\n  t: {run: \"true\"}\n";

fn dag_id() -> DagId {
    DagId::parse("d").unwrap()
}

/// Creates a backfill of DAG `d` from January `from` to `to` with `options`, as
/// `updraft dags backfill` does.
async fn backfill(store: &Store, from: u32, to: u32, options: BackfillOptions) -> BackfillId {
    let row = store.get_dag(&dag_id()).await.unwrap().unwrap();
    let version = store
        .get_dag_version(&dag_id(), &row.version_hash)
        .await
        .unwrap()
        .unwrap();
    let dag: updraft_core::dag::Dag = serde_json::from_value(version.serialized).unwrap();
    let from = at(&format!("2024-01-{from:02}T00:00:00Z"));
    let to = at(&format!("2024-01-{to:02}T00:00:00Z"));
    let runs = intervals(&dag, from, to, options.run_backwards, None, now())
        .unwrap()
        .runs;
    let decisions = decide(&runs, &[], Reprocess::None, now());
    let runs: Vec<NewDagRun> = decisions
        .iter()
        .map(|decision| NewDagRun {
            dag_id: dag.id.clone(),
            run_id: RunType::Backfill.run_id(decision.interval.logical_date),
            run_type: RunType::Backfill,
            logical_date: decision.interval.logical_date,
            data_interval_start: decision.interval.data_interval_start,
            data_interval_end: decision.interval.data_interval_end,
            run_after: decision.interval.run_after,
            conf: options.conf.clone(),
            version_hash: row.version_hash.clone(),
            backfill_id: None,
        })
        .collect();
    let new = NewBackfill {
        dag_id: dag.id.clone(),
        from_date: from,
        to_date: to,
        options: options.to_json(),
        created_by: "test".to_owned(),
    };
    store
        .create_backfill(&new, &runs, &[], &[], now())
        .await
        .unwrap()
        .backfill
        .id
}

/// The days (of January) of a backfill's runs in `state`.
async fn days(store: &Store, backfill: BackfillId, state: DagRunState) -> Vec<u32> {
    use chrono::Datelike;
    store
        .list_backfill_runs(backfill)
        .await
        .unwrap()
        .iter()
        .filter(|run| run.state == state)
        .map(|run| run.logical_date.day())
        .collect()
}

/// Ends every unfinished task instance of the running runs `success`, as a worker would.
async fn finish_running(store: &Store, runs: &[DagRun]) {
    for run in runs.iter().filter(|run| run.state == DagRunState::Running) {
        for ti in store.list_task_instances(run.id).await.unwrap() {
            if !ti.state.is_finished() {
                assert!(
                    store
                        .set_task_state(ti.id, ti.state, TaskState::Success, now())
                        .await
                        .unwrap()
                );
            }
        }
    }
}

#[tokio::test]
async fn backfill_runs_start_within_their_own_limits_and_the_backfill_completes() {
    each_backend(|db| async move {
        let store = db.store().await;
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join("d.yaml"), DAG).unwrap();
        let settings = Settings::new(folder.path().to_owned(), LoadOptions::default());
        let mut scheduler = Scheduler::new(store.clone(), settings, "test".to_owned());

        // The first tick syncs the DAG and starts its latest scheduled run (no catch-up).
        scheduler.tick(now()).await.unwrap();
        let scheduled = store.list_unfinished_runs().await.unwrap();
        assert_eq!(scheduled.len(), 1);
        assert_eq!(scheduled[0].run_type, RunType::Scheduled);
        assert_eq!(scheduled[0].state, DagRunState::Running);

        // The DAG is paused: a backfill is explicit and runs all the same.
        store.set_paused(&dag_id(), true).await.unwrap();
        let forwards = backfill(
            &store,
            1,
            5,
            BackfillOptions {
                max_active_runs: Some(2),
                ..BackfillOptions::default()
            },
        )
        .await;
        let backwards = backfill(
            &store,
            10,
            12,
            BackfillOptions {
                max_active_runs: Some(1),
                run_backwards: true,
                ..BackfillOptions::default()
            },
        )
        .await;
        scheduler.tick(now()).await.unwrap();
        // Each within its own limit, apart from the DAG's (whose scheduled run holds 1 of 3).
        assert_eq!(days(&store, forwards, DagRunState::Running).await, [1, 2]);
        assert_eq!(days(&store, forwards, DagRunState::Queued).await, [3, 4, 5]);
        assert_eq!(days(&store, backwards, DagRunState::Running).await, [12]);

        // Paused, a backfill's running runs finish and no other starts.
        store
            .set_backfill_state(
                forwards,
                BackfillState::Running,
                BackfillState::Paused,
                now(),
            )
            .await
            .unwrap();
        finish_running(&store, &store.list_backfill_runs(forwards).await.unwrap()).await;
        scheduler.tick(now()).await.unwrap();
        scheduler.tick(now()).await.unwrap();
        assert_eq!(days(&store, forwards, DagRunState::Success).await, [1, 2]);
        assert_eq!(
            days(&store, forwards, DagRunState::Running).await,
            [] as [u32; 0]
        );
        assert_eq!(days(&store, forwards, DagRunState::Queued).await, [3, 4, 5]);

        // Resumed, it goes on; the backward one goes on newest first.
        store
            .set_backfill_state(
                forwards,
                BackfillState::Paused,
                BackfillState::Running,
                now(),
            )
            .await
            .unwrap();
        finish_running(&store, &store.list_backfill_runs(backwards).await.unwrap()).await;
        scheduler.tick(now()).await.unwrap();
        assert_eq!(days(&store, forwards, DagRunState::Running).await, [3, 4]);
        scheduler.tick(now()).await.unwrap();
        assert_eq!(days(&store, backwards, DagRunState::Success).await, [12]);
        assert_eq!(days(&store, backwards, DagRunState::Running).await, [11]);

        // Everything finishes; each backfill completes once its last run has.
        for _ in 0..10 {
            for id in [forwards, backwards] {
                finish_running(&store, &store.list_backfill_runs(id).await.unwrap()).await;
            }
            scheduler.tick(now()).await.unwrap();
        }
        for id in [forwards, backwards] {
            let backfill = store.get_backfill(id).await.unwrap().unwrap();
            assert_eq!(backfill.state, BackfillState::Completed, "backfill {id}");
            assert_eq!(backfill.completed_at, Some(now()));
        }
        assert_eq!(
            days(&store, forwards, DagRunState::Success).await,
            [1, 2, 3, 4, 5]
        );
        // The paused DAG's scheduled run was not stepped meanwhile.
        let scheduled = store.get_dag_run(scheduled[0].id).await.unwrap().unwrap();
        assert_eq!(scheduled.state, DagRunState::Running);
    })
    .await;
}
