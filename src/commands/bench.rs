//! `updraft bench`: measured speed, printed beside floors measured in the same run on the same
//! machine, because these machines are noisy and absolute figures mislead.
//!
//! Each workload also checks its answer (counts, states), so a fast wrong result cannot pass.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use serde::Serialize;
use updraft_core::dag::{LoadOptions, load_paths};

use crate::cli::BenchArgs;

/// Every workload, in the order they run by default.
pub const WORKLOADS: &[&str] = &["parse-10k"];

#[derive(Debug, Serialize)]
struct Floor {
    name: &'static str,
    /// Per operation.
    seconds: f64,
}

#[derive(Debug, Serialize)]
struct Figure {
    workload: String,
    metric: &'static str,
    value: f64,
    unit: &'static str,
    /// The floor this figure is compared with, and how many times the floor it is.
    floor: &'static str,
    ratio: f64,
    /// What the workload checked (so a fast wrong answer cannot pass).
    checked: String,
}

#[derive(Debug, Serialize)]
struct Report {
    floors: Vec<Floor>,
    figures: Vec<Figure>,
}

pub fn run(args: BenchArgs) -> Result<i32> {
    ensure!(
        args.scale > 0.0 && args.scale <= 1.0,
        "--scale must be in (0, 1], found {}",
        args.scale
    );
    let workloads: Vec<String> = if args.workloads.is_empty() {
        WORKLOADS.iter().map(|w| w.to_string()).collect()
    } else {
        args.workloads.clone()
    };
    for workload in &workloads {
        if !WORKLOADS.contains(&workload.as_str()) {
            bail!(
                "unknown workload \"{workload}\"{}; workloads: {}",
                updraft_core::suggest::did_you_mean(workload, WORKLOADS.iter().copied()),
                WORKLOADS.join(", ")
            );
        }
    }
    let scratch = tempfile::tempdir()?;
    let floors = vec![
        Floor {
            name: "spawn /bin/true",
            seconds: spawn_floor()?.as_secs_f64(),
        },
        Floor {
            name: "parse one DAG file (20 tasks)",
            seconds: parse_floor(scratch.path())?.as_secs_f64(),
        },
    ];
    if !args.json {
        println!("floors (this machine, this run):");
        for floor in &floors {
            println!("  {:<32} {}", floor.name, human(floor.seconds));
        }
        println!();
    }
    let mut figures = Vec::new();
    for workload in &workloads {
        let figure = match workload.as_str() {
            "parse-10k" => parse_10k(scratch.path(), args.scale, &floors[1])?,
            _ => unreachable!("workloads were checked above"),
        };
        if !args.json {
            println!(
                "{:<12} {} = {:.3} {} ({:.1}x the floor \"{}\"; {})",
                figure.workload,
                figure.metric,
                figure.value,
                figure.unit,
                figure.ratio,
                figure.floor,
                figure.checked
            );
        }
        figures.push(figure);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Report { floors, figures })?
        );
    }
    Ok(0)
}

fn human(seconds: f64) -> String {
    if seconds < 1e-3 {
        format!("{:.1} µs", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{:.2} ms", seconds * 1e3)
    } else {
        format!("{seconds:.2} s")
    }
}

/// The median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
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

/// A realistic DAG file of 20 tasks: cron with a timezone, defaults, templates, a fan-out.
fn dag_file(index: usize) -> String {
    let mut text = format!(
        "version: 1\nid: bench_{index:05}\ndescription: generated for the parse benchmark\n\
         owner: bench\ntags: [bench]\nschedule:\n  cron: \"{} {} * * *\"\n  timezone: \
         Europe/Berlin\nstart_date: 2024-01-01\ncatchup: false\nparams:\n  region: {{type: \
         string, default: eu, enum: [eu, us]}}\ndefaults:\n  retries: 2\n  retry_delay: 30s\n\
         tasks:\n",
        index % 60,
        index % 24
    );
    for task in 0..20 {
        text.push_str(&format!(
            "  task_{task:02}:\n    run: ./step.sh --date {{{{ ds }}}} --region {{{{ \
             params.region }}}} --part {task}\n"
        ));
        if task > 0 {
            text.push_str(&format!("    depends_on: [task_{:02}]\n", (task - 1) / 2));
        }
        if task % 5 == 0 {
            text.push_str("    timeout: 10m\n    pool: warehouse\n");
        }
    }
    text
}

fn parse_floor(scratch: &Path) -> Result<Duration> {
    let path = scratch.join("floor.yaml");
    std::fs::write(&path, dag_file(0))?;
    let options = LoadOptions::default();
    median(201, || {
        let load = load_paths(std::slice::from_ref(&path), &options);
        ensure!(load.errors.is_empty(), "the generated file is valid");
        Ok(())
    })
}

/// Cold load of 10,000 DAG files of 20 tasks (`--scale` shrinks the count).
fn parse_10k(scratch: &Path, scale: f64, floor: &Floor) -> Result<Figure> {
    let count = ((10_000.0 * scale).round() as usize).max(1);
    let folder = scratch.join("parse-10k");
    std::fs::create_dir_all(&folder)?;
    for index in 0..count {
        std::fs::write(folder.join(format!("dag_{index:05}.yaml")), dag_file(index))?;
    }
    let options = LoadOptions::default();
    let start = Instant::now();
    let load = load_paths(std::slice::from_ref(&folder), &options);
    let seconds = start.elapsed().as_secs_f64();
    ensure!(
        load.errors.is_empty(),
        "generated files failed: {}",
        load.errors[0]
    );
    let tasks: usize = load.dags.iter().map(|loaded| loaded.dag.tasks.len()).sum();
    ensure!(
        load.dags.len() == count && tasks == count * 20,
        "expected {count} DAGs and {} tasks, loaded {} and {tasks}",
        count * 20,
        load.dags.len()
    );
    Ok(Figure {
        workload: format!("parse-{count}"),
        metric: "load time",
        value: seconds,
        unit: "s",
        floor: floor.name,
        ratio: seconds / (floor.seconds * count as f64),
        checked: format!("{count} DAGs, {tasks} tasks, 0 errors"),
    })
}
