//! A cron storm shared by three schedulers on one database (both backends): many DAGs due at
//! the same minute, three schedulers ticking at once. Each run is created exactly once, each
//! DAG's next run moves on exactly once, and no tick fails.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use updraft_core::dag::LoadOptions;
use updraft_core::ids::DagRunId;
use updraft_core::state::{DagRunState, RunType};
use updraft_metadata::testing::each_backend;
use updraft_scheduler::service::{Scheduler, Settings};

/// More DAGs than a scheduler takes in one batch, so that the batches of the three overlap.
const DAGS: usize = 1_200;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test]
async fn three_schedulers_create_each_run_of_a_storm_exactly_once() {
    each_backend(|db| async move {
        let folder = tempfile::tempdir().unwrap();
        for i in 0..DAGS {
            std::fs::write(
                folder.path().join(format!("storm_{i:04}.yaml")),
                format!(
                    "version: 1\nid: storm_{i:04}\nschedule: \"* * * * *\"\n\
                     start_date: 2024-01-01\ncatchup: false\ntasks:\n  only: {{run: \"true\"}}\n"
                ),
            )
            .unwrap();
        }
        let mut schedulers = Vec::new();
        for n in 0..3 {
            let settings = Settings::new(folder.path().to_owned(), LoadOptions::default());
            schedulers.push(Scheduler::new(db.store().await, settings, format!("s{n}")));
        }
        let store = db.store().await;
        // Two minutes: the first ticks sync and create each DAG's latest run, the next ones
        // the following minute's wave.
        for now in [at("2024-03-01T12:00:10Z"), at("2024-03-01T12:01:00Z")] {
            let [a, b, c] = &mut schedulers[..] else {
                unreachable!()
            };
            let (ra, rb, rc) = tokio::join!(a.tick(now), b.tick(now), c.tick(now));
            for result in [ra, rb, rc] {
                result.expect("no tick fails");
            }
        }
        let runs = store.list_unfinished_runs().await.unwrap();
        let mut per_dag: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
        for run in &runs {
            assert_eq!(run.run_type, RunType::Scheduled);
            assert_eq!(run.state, DagRunState::Running, "each run started");
            per_dag
                .entry(run.dag_id.to_string())
                .or_default()
                .push(run.logical_date);
        }
        assert_eq!(per_dag.len(), DAGS);
        for (dag, mut dates) in per_dag {
            dates.sort();
            assert_eq!(
                dates,
                [at("2024-03-01T11:59:00Z"), at("2024-03-01T12:00:00Z")],
                "{dag}: one run per minute, once"
            );
        }
        for row in store.list_dags().await.unwrap() {
            let next = row.next_run.expect("a next run");
            assert_eq!(
                next.logical_date,
                at("2024-03-01T12:01:00Z"),
                "{}: the next run moved on once",
                row.dag_id
            );
        }
        // Every run got its task instance, once.
        let ids: Vec<DagRunId> = runs.iter().map(|run| run.id).collect();
        let instances = store.list_task_instances_of_runs(&ids).await.unwrap();
        assert_eq!(instances.len(), runs.len());
    })
    .await;
}
