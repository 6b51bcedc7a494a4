//! clean: `db clean` over a long history (a million task instances, bulk-seeded) while a
//! scheduler of the same database keeps running.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use chrono::Utc;
use updraft_core::dag::LoadOptions;
use updraft_metadata::{CLEAN_BATCH, CLEAN_BATCH_TASK_INSTANCES, SeedRuns};

use crate::floors::Floor;
use crate::harness::{Databases, Executor, InProcess, chain_tasks, load_and_sync};
use crate::report::Figure;

/// Tasks of the clean workload's DAG.
const CLEAN_TASKS: usize = 100;

/// `runs` finished hourly runs of one DAG of 100 tasks (10,000 runs: a million task
/// instances), all of them old, deleted by the store's clean (`db clean`'s) in batches of at
/// most `CLEAN_BATCH_TASK_INSTANCES` task instances while an in-process scheduler runs on the
/// same database. The time of one
/// batch's transaction stands beside the commit floor; the whole clean's rate is in task
/// instances a second. Checked: every run but the DAG's latest scheduled one is gone, with its
/// task instances, and the scheduler heartbeat went on.
pub async fn clean(
    databases: &Databases,
    scratch: &Path,
    runs: usize,
    floor: &Floor,
) -> Result<Figure> {
    let folder = scratch.join(format!("clean-{runs}"));
    std::fs::create_dir_all(&folder)?;
    let yaml = format!(
        "version: 1\nid: bench_clean\nschedule: \"@hourly\"\nstart_date: 2024-01-01\ntasks:\n{}",
        chain_tasks(CLEAN_TASKS)
    );
    std::fs::write(folder.join("bench_clean.yaml"), yaml)?;
    let (_database, store) = databases.fresh(databases.backend).await?;
    // Paused: the scheduler has nothing to run, only to go on while the clean deletes.
    let load = load_and_sync(&store, &folder, &LoadOptions::default(), 1, true).await?;
    let dag = &load.dags[0].dag;
    let task_ids: Vec<_> = dag.tasks.keys().cloned().collect();
    let made = store
        .seed_finished_runs(SeedRuns {
            dag_id: &dag.id,
            version_hash: &dag.version_hash(),
            task_ids: &task_ids,
            runs: runs as i64,
            first: chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")?.to_utc(),
            step: chrono::Duration::hours(1),
        })
        .await?;
    let instances = runs * CLEAN_TASKS;
    ensure!(
        made == instances as u64,
        "expected {instances} seeded task instances, made {made}"
    );
    let scheduler =
        InProcess::start(&store, &folder, LoadOptions::default(), Executor::Nothing).await;
    let beat = store.last_scheduler_heartbeat().await?;

    let start = Instant::now();
    let mut batches = 0usize;
    let cleaned = store
        .clean(Utc::now(), None, CLEAN_BATCH, |deleted| {
            if deleted.runs > 0 {
                batches += 1;
            }
        })
        .await?;
    let took = start.elapsed().as_secs_f64();
    // A heartbeat every 2 s: one came during a clean that long.
    if took > 3.0 {
        let after = store.last_scheduler_heartbeat().await?;
        ensure!(
            after > beat,
            "the scheduler stopped heartbeating during the clean"
        );
    }
    scheduler.stop().await?;
    ensure!(
        cleaned.runs == runs as u64 - 1
            && cleaned.task_instances == (instances - CLEAN_TASKS) as u64,
        "expected all runs but the latest deleted, got {cleaned:?}"
    );
    let left = store.list_dag_runs(&dag.id, None, 10, 0).await?;
    ensure!(
        left.len() == 1,
        "{} runs left, not the latest alone",
        left.len()
    );
    store.close().await;
    let per_batch = took / batches.max(1) as f64;
    Ok(Figure {
        workload: format!("clean-{runs}"),
        metric: "one batch of the clean",
        value: per_batch * 1000.0,
        unit: "ms",
        floor: floor.name,
        ratio: per_batch / floor.value,
        checked: format!(
            "{} runs and {} task instances deleted in {batches} batches of at most \
             {CLEAN_BATCH_TASK_INSTANCES} task instances, \
             {took:.2} s ({:.0} task instances/s) while a scheduler ran; the latest scheduled \
             run kept",
            cleaned.runs,
            cleaned.task_instances,
            cleaned.task_instances as f64 / took
        ),
    })
}
