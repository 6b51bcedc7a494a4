//! idle-100 and idle-10000: what a real `updraft standalone` costs while nothing is due, its
//! CPU share and peak RSS read from `/proc`; with no DAG, the floor of both.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::Utc;

use crate::floors::Floor;
use crate::harness::{Databases, Standalone, Updraft};
use crate::report::Figure;

/// What an idle `updraft standalone` costs, measured from outside its process.
pub struct Idle {
    dags: usize,
    /// Its CPU time (user and system, all threads) over the window, in percent of one core.
    pub cpu_percent: f64,
    /// The peak of its resident memory, sampled every second over the window.
    pub rss_mb: f64,
    window: Duration,
}

impl Idle {
    pub fn figures(&self, cpu_floor: &Floor, rss_floor: &Floor) -> Vec<Figure> {
        let checked = format!(
            "{} DAGs synced, none due, no run created, exit 0 on SIGTERM; over {:.0} s once \
             settled",
            self.dags,
            self.window.as_secs_f64()
        );
        vec![
            Figure {
                workload: format!("idle-{}", self.dags),
                metric: "CPU share",
                value: self.cpu_percent,
                unit: cpu_floor.unit,
                floor: cpu_floor.name,
                ratio: self.cpu_percent / cpu_floor.value,
                checked: checked.clone(),
            },
            Figure {
                workload: format!("idle-{}", self.dags),
                metric: "peak RSS",
                value: self.rss_mb,
                unit: rss_floor.unit,
                floor: rss_floor.name,
                ratio: self.rss_mb / rss_floor.value,
                checked,
            },
        ]
    }
}

/// An `updraft standalone` process with `dags` one-task DAG files none of which is ever due
/// (daily from a start date far ahead), on a fresh database: once every DAG is synced and
/// start-up has settled (5 s), its CPU share and peak RSS over 20 s (both shrunk by `scale`,
/// to at least 1 s and 2 s).
pub async fn standalone(
    databases: &Databases,
    updraft: &Updraft,
    scratch: &Path,
    dags: usize,
    scale: f64,
) -> Result<Idle> {
    let folder = scratch.join(format!("idle-{dags}"));
    std::fs::create_dir_all(folder.join("dags"))?;
    for i in 0..dags {
        std::fs::write(
            folder.join(format!("dags/idle_{i:05}.yaml")),
            format!(
                "version: 1\nid: idle_{i:05}\nschedule: \"0 3 * * *\"\nstart_date: 2999-01-01\n\
                 tasks:\n  only: {{run: \"true\"}}\n"
            ),
        )?;
    }
    let (database, store) = databases.fresh(databases.backend).await?;
    let mut standalone = Standalone::start(updraft, &folder, database.url())?;
    standalone.wait_synced(&store, dags).await?;
    let settle = Duration::from_secs(5).mul_f64(scale);
    tokio::time::sleep(settle.max(Duration::from_secs(1))).await;

    let window = Duration::from_secs(20)
        .mul_f64(scale)
        .max(Duration::from_secs(2));
    let pid = standalone.pid;
    let start = Instant::now();
    let ticks = cpu_ticks(pid)?;
    let mut rss = rss_bytes(pid)?;
    while start.elapsed() < window {
        let left = window.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        rss = rss.max(rss_bytes(pid)?);
    }
    let cpu_seconds = (cpu_ticks(pid)? - ticks) as f64 / clock_ticks_per_second();
    let window = start.elapsed();
    standalone.stop().await?;

    let rows = store.list_dags().await?;
    let now = Utc::now();
    let waiting = rows
        .iter()
        .filter(|row| row.is_active && !row.is_paused)
        .filter(|row| {
            row.next_run
                .as_ref()
                .is_some_and(|next| next.run_after > now)
        })
        .count();
    ensure!(
        rows.len() == dags && waiting == dags,
        "expected {dags} active DAGs whose next run is ahead, found {waiting} of {}",
        rows.len()
    );
    let runs = store.count_runs_by_state().await?;
    ensure!(runs.is_empty(), "expected no run, found {runs:?}");
    store.close().await;
    Ok(Idle {
        dags,
        cpu_percent: 100.0 * cpu_seconds / window.as_secs_f64(),
        rss_mb: rss as f64 / (1024.0 * 1024.0),
        window,
    })
}

/// The CPU time process `pid` has used (user and system, all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Numbered from the state (field 3): the command name before it is in parentheses and
    // may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("a malformed /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    let field = |n: usize| -> Result<u64> {
        Ok(fields
            .get(n - 3)
            .context("a short /proc/PID/stat")?
            .parse()?)
    };
    Ok(field(14)? + field(15)?)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a configuration value and has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The resident memory of process `pid` (VmRSS), in bytes.
fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kilobytes: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .context("no VmRSS in /proc/PID/status")?
        .trim()
        .trim_end_matches(" kB")
        .parse()?;
    Ok(kilobytes * 1024)
}
