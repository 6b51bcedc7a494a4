//! clean: `db clean` over a long history (a million task instances, bulk-seeded) while a
//! scheduler of the same database keeps running.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use chrono::Utc;
use updraft_core::dag::LoadOptions;
use updraft_metadata::{CLEAN_BATCH, CLEAN_BATCH_TASK_INSTANCES};

use crate::floors::Floor;
use crate::harness::{Databases, Executor, History, InProcess};
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
    let history = History::seed(databases, &folder, "bench_clean", runs, CLEAN_TASKS).await?;
    let (store, dag) = (&history.store, &history.dag);
    let instances = runs * CLEAN_TASKS;
    // The DAG is paused: the scheduler has nothing to run, only to go on while the clean
    // deletes.
    let scheduler =
        InProcess::start(store, &folder, LoadOptions::default(), Executor::Nothing).await;
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
