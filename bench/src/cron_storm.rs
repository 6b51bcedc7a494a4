//! cron-storm: thousands of DAGs due at the same minute: how fast the scheduler creates and
//! starts their runs.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use chrono::{DurationRound, Utc};
use updraft_core::dag::LoadOptions;
use updraft_core::ids::DagRunId;

use crate::floors::Floor;
use crate::harness::{Databases, Executor, InProcess, load_and_sync};
use crate::report::Figure;

/// `dags` DAGs of one task on `* * * * *` with catch-up off, so all are due at every minute.
/// Once the scheduler has given each its first run, the next minute's wave is measured: runs
/// created per second (from the minute to the last run created) and fire-to-start (from the
/// minute to each run's start). No executor: the tasks stay queued.
pub async fn cron_storm(
    databases: &Databases,
    scratch: &Path,
    dags: usize,
    floor: &Floor,
) -> Result<Figure> {
    let dags_folder = scratch.join(format!("cron-storm-{dags}"));
    std::fs::create_dir_all(&dags_folder)?;
    for i in 0..dags {
        std::fs::write(
            dags_folder.join(format!("storm_{i:05}.yaml")),
            format!(
                "version: 1\nid: storm_{i:05}\nschedule: \"* * * * *\"\nstart_date: 2024-01-01\n\
                 catchup: false\ntasks:\n  only: {{run: \"true\"}}\n"
            ),
        )?;
    }
    let (_database, store) = databases.fresh(databases.backend).await?;
    let options = LoadOptions::default();
    load_and_sync(&store, &dags_folder, &options, dags, false).await?;
    let parts = InProcess::start(&store, &dags_folder, options, Executor::Nothing).await;

    let deadline = Instant::now() + Duration::from_secs(300);
    while store.list_unfinished_runs().await?.len() < dags {
        ensure!(
            Instant::now() < deadline,
            "the first runs were not created in 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now = Utc::now();
    let fire = now.duration_trunc(chrono::TimeDelta::minutes(1))? + chrono::TimeDelta::minutes(1);
    tokio::time::sleep((fire - now).to_std()?).await;
    // The scheduler stamps a run with the start of the tick that made it, so creation and start
    // are timed here, as seen by polling every 100 ms (the resolution of the figures): each
    // poll reads every unfinished run (20,000 at full size) in this process, and polling
    // every 25 ms took the CPU of the scheduler it measured.
    let clock = Instant::now();
    let mut created: HashMap<DagRunId, f64> = HashMap::new();
    let mut started: HashMap<DagRunId, f64> = HashMap::new();
    while started.len() < dags {
        let seen = clock.elapsed().as_secs_f64();
        for run in store.list_unfinished_runs().await? {
            if run.run_after != fire {
                continue;
            }
            created.entry(run.id).or_insert(seen);
            if run.start_date.is_some() {
                started.entry(run.id).or_insert(seen);
            }
        }
        ensure!(
            clock.elapsed() < Duration::from_secs(300),
            "{} of {dags} runs due at {fire} were created and {} started in 5 minutes",
            created.len(),
            started.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    parts.stop().await?;
    store.close().await;

    let all_created = created.values().copied().fold(0.0, f64::max).max(1e-3);
    let mut starts: Vec<f64> = started.into_values().collect();
    starts.sort_by(f64::total_cmp);
    let percentile = |p: f64| starts[((p * starts.len() as f64).ceil() as usize).max(1) - 1];
    Ok(Figure {
        workload: format!("cron-storm-{dags}"),
        metric: "runs created per second",
        value: dags as f64 / all_created,
        unit: "/s",
        floor: floor.name,
        ratio: all_created / (floor.value * dags as f64),
        checked: format!(
            "{dags} runs due at one minute created within {all_created:.2} s and started; \
             fire-to-start p50 {:.2} s, p99 {:.2} s",
            percentile(0.5),
            percentile(0.99)
        ),
    })
}
