//! backfill-365: a backfill of a year of daily runs, from planning to completed, run by the
//! scheduler and a worker in this process.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use chrono::Utc;
use updraft_core::backfill::Reprocess;
use updraft_core::dag::LoadOptions;
use updraft_core::ids::DagRunId;
use updraft_core::state::{BackfillState, DagRunState, TaskState};
use updraft_ops::backfill::{Ask, Face};
use updraft_ops::{self as ops, Actor};

use crate::floors::Floor;
use crate::harness::{Databases, Executor, InProcess, chain_tasks, load_and_sync};
use crate::report::Figure;

/// Tasks in each run of the backfill workload.
const BACKFILL_CHAIN: usize = 10;

/// A backfill of `runs` days of a daily 10-task chain of `true`, on a fresh SQLite database,
/// from planning to the backfill completed, with the scheduler and a worker of concurrency 16
/// in this process (as `updraft standalone`, or `dags backfill` without a scheduler, runs
/// them). The DAG keeps its default `max_active_runs` (16), which the backfill takes.
pub async fn backfill(
    databases: &Databases,
    scratch: &Path,
    runs: usize,
    floor: &Floor,
) -> Result<Figure> {
    let folder = scratch.join(format!("backfill-{runs}"));
    std::fs::create_dir_all(folder.join("dags"))?;
    let yaml = format!(
        "version: 1\nid: bench_backfill\nschedule: \"@daily\"\nstart_date: 2024-01-01\ntasks:\n{}",
        chain_tasks(BACKFILL_CHAIN)
    );
    std::fs::write(folder.join("dags/bench_backfill.yaml"), yaml)?;
    let seconds = {
        let (_database, store) = databases.fresh(databases.backend).await?;
        let options = LoadOptions::default();
        // Paused, so that the scheduler creates no scheduled run beside the backfill's.
        let load = load_and_sync(&store, &folder.join("dags"), &options, 1, true).await?;
        let dag = load.dags[0].dag.clone();

        let parts =
            InProcess::start(&store, &folder.join("dags"), options, Executor::Processes).await;

        let start = Instant::now();
        let now = Utc::now();
        let from = dag.timetable.start_date.expect("a start date");
        let to = from + chrono::Duration::days(runs as i64 - 1);
        let row = store.get_dag(&dag.id).await?.expect("the DAG is synced");
        let ask = Ask {
            from: from.to_rfc3339(),
            to: to.to_rfc3339(),
            reprocess: Reprocess::None,
            max_active_runs: None,
            run_backwards: false,
            conf: serde_json::json!({}),
            limit: None,
            face: Face::Cli,
        };
        let planned = ops::backfill::plan(&store, &row, &dag, ask, now).await?;
        let actor = Actor::Cli("bench".to_owned());
        let created = ops::backfill::create(&store, &actor, &row, &dag, &planned, now).await?;
        ensure!(
            created.created == runs,
            "expected {runs} backfill runs, created {}",
            created.created
        );
        let id = created.backfill.id;
        loop {
            let current = store.get_backfill(id).await?.expect("the backfill exists");
            if current.state == BackfillState::Completed {
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(600),
                "the backfill did not complete in 10 minutes"
            );
            // Completion is marked by a scheduler tick (200 ms apart at most): polling faster
            // would only take CPU from the workload.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seconds = start.elapsed().as_secs_f64();
        parts.stop().await?;
        let finished = store.list_backfill_runs(id).await?;
        let succeeded = finished
            .iter()
            .filter(|run| run.state == DagRunState::Success)
            .count();
        ensure!(
            finished.len() == runs && succeeded == runs,
            "expected {runs} runs to succeed, {succeeded} of {} did",
            finished.len()
        );
        let ids: Vec<DagRunId> = finished.iter().map(|run| run.id).collect();
        let instances = store.list_task_instances_of_runs(&ids).await?;
        ensure!(
            instances.len() == runs * BACKFILL_CHAIN
                && instances
                    .iter()
                    .all(|ti| ti.state == TaskState::Success && ti.try_number == 1),
            "expected {} task instances to succeed in one try",
            runs * BACKFILL_CHAIN
        );
        store.close().await;
        seconds
    };
    let tasks = runs * BACKFILL_CHAIN;
    Ok(Figure {
        workload: format!("backfill-{runs}"),
        metric: "backfill to completed",
        value: seconds,
        unit: "s",
        floor: floor.name,
        ratio: seconds / (floor.value * tasks as f64),
        checked: format!(
            "{runs} runs and {tasks} tasks succeeded in one try, {:.1} ms per task",
            seconds * 1000.0 / tasks as f64
        ),
    })
}
