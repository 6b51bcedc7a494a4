//! The floors: what this machine does in this run without Updraft around it (a process
//! spawned, a file parsed, a commit, an idle standalone), measured before the workloads so that
//! each figure is read as a multiple of one.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde::Serialize;
use updraft_metadata::Backend;

use crate::harness::{Databases, Updraft};
use crate::report::human;
use crate::{idle, parse};

/// Spawn and wait of `/bin/true`, by this process.
pub const SPAWN: &str = "spawn /bin/true";
/// The floor of the bare spawn rate: processes of `sh -c true` started and waited for by
/// this process alone, 16 at a time (a worker's slots) in their own process groups.
pub const BARE_SPAWN: &str = "bare spawn (sh -c true, 16 at once)";
/// Loading one realistic DAG file of 20 tasks.
pub const PARSE: &str = "parse one DAG file (20 tasks)";
/// Loading one dense DAG file of [`parse::DENSE_FLOOR_TASKS`] tasks.
pub const PARSE_DENSE: &str = "parse a dense DAG file (1,000 tasks)";
/// One small write transaction committed, on each backend.
pub const COMMIT_SQLITE: &str = "one commit on SQLite";
pub const COMMIT_POSTGRES: &str = "one commit on Postgres";
/// The floors of the idle workloads: a standalone with no DAG, measured as they measure theirs.
pub const IDLE_CPU: &str = "idle standalone, 0 DAGs: CPU";
pub const IDLE_RSS: &str = "idle standalone, 0 DAGs: RSS";

#[derive(Debug, Serialize)]
pub struct Floor {
    pub name: &'static str,
    /// Seconds per operation, or the idle standalone's CPU share and peak RSS.
    pub value: f64,
    pub unit: &'static str,
}

/// The floors of one run, in the order they were measured.
pub struct Floors(Vec<Floor>);

impl Floors {
    /// Measures every floor, in `scratch`. The Postgres commit floor is left out when no
    /// Postgres answers and the workloads run on SQLite (said on stdout unless `json`); the idle
    /// standalone's is measured only when an idle workload runs (`idle_scale`: their
    /// `--scale`).
    pub fn measure(
        runtime: &tokio::runtime::Runtime,
        databases: &Databases,
        updraft: &Updraft,
        scratch: &Path,
        idle_scale: Option<f64>,
        json: bool,
    ) -> Result<Floors> {
        let mut floors = vec![
            Floor {
                name: SPAWN,
                value: spawn_floor()?.as_secs_f64(),
                unit: "s",
            },
            Floor {
                name: BARE_SPAWN,
                // 1-2 s on a 2-core machine.
                value: runtime.block_on(bare_spawns(2000, 16))? / 2000.0,
                unit: "s",
            },
            Floor {
                name: PARSE,
                value: parse::floor(scratch)?.as_secs_f64(),
                unit: "s",
            },
            Floor {
                name: PARSE_DENSE,
                value: parse::dense_floor(scratch)?.as_secs_f64(),
                unit: "s",
            },
            Floor {
                name: COMMIT_SQLITE,
                value: runtime
                    .block_on(commit_floor(databases, Backend::Sqlite))?
                    .as_secs_f64(),
                unit: "s",
            },
        ];
        match runtime.block_on(commit_floor(databases, Backend::Postgres)) {
            Ok(floor) => floors.push(Floor {
                name: COMMIT_POSTGRES,
                value: floor.as_secs_f64(),
                unit: "s",
            }),
            Err(error) if databases.backend == Backend::Sqlite => {
                if !json {
                    println!("(no Postgres commit floor: {error:#})");
                }
            }
            Err(error) => return Err(error),
        }
        if let Some(scale) = idle_scale {
            // Once per run, for both idle workloads: it takes as long as one of them.
            let idle = runtime.block_on(idle::standalone(databases, updraft, scratch, 0, scale))?;
            floors.push(Floor {
                name: IDLE_CPU,
                value: idle.cpu_percent,
                unit: "% of a core",
            });
            floors.push(Floor {
                name: IDLE_RSS,
                value: idle.rss_mb,
                unit: "MB",
            });
        }
        Ok(Floors(floors))
    }

    /// The floor `name`, which a workload compares with: measured, or the bench is wrong.
    pub fn get(&self, name: &str) -> &Floor {
        self.0
            .iter()
            .find(|floor| floor.name == name)
            .expect("a measured floor")
    }

    pub fn print(&self) {
        println!("floors (this machine, this run):");
        for floor in &self.0 {
            let value = match floor.unit {
                "s" => human(floor.value),
                unit => format!("{:.2} {unit}", floor.value),
            };
            println!("  {:<36} {value}", floor.name);
        }
    }

    pub fn into_list(self) -> Vec<Floor> {
        self.0
    }
}

/// The median of `runs` timings of `f`.
pub fn median(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn spawn_floor() -> Result<Duration> {
    median(51, || {
        let status = std::process::Command::new("/bin/true").status()?;
        ensure!(status.success(), "/bin/true failed");
        Ok(())
    })
}

/// One small write transaction committed (a pool upsert), the unit every state move costs. On
/// SQLite (WAL, `synchronous = NORMAL`, as Updraft runs it) a commit is not fsynced; on
/// Postgres it is.
async fn commit_floor(databases: &Databases, backend: Backend) -> Result<Duration> {
    let (_scratch, store) = databases.fresh(backend).await?;
    let mut times = Vec::with_capacity(101);
    for slots in 0..101 {
        let start = Instant::now();
        store.set_pool("floor", slots, None, None).await?;
        times.push(start.elapsed());
    }
    store.close().await;
    times.sort();
    Ok(times[times.len() / 2])
}

/// The seconds `count` processes of `sh -c true` take when `at_once` of them run at a time,
/// started (in a process group of their own, as a try's) and waited for by this process
/// alone: a worker's tasks without a database, a log or a worker around them.
pub async fn bare_spawns(count: usize, at_once: usize) -> Result<f64> {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let left = std::sync::Arc::new(AtomicUsize::new(count));
    let start = Instant::now();
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..at_once {
        let left = left.clone();
        slots.spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let status = tokio::process::Command::new("/bin/sh")
                    .args(["-c", "true"])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .process_group(0)
                    .status()
                    .await?;
                ensure!(status.success(), "sh -c true failed: {status}");
            }
            anyhow::Ok(())
        });
    }
    while let Some(slot) = slots.join_next().await {
        slot??;
    }
    Ok(start.elapsed().as_secs_f64())
}
