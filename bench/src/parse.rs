//! parse-10k and parse-dense: loading DAG files, with their floors (one realistic file, one
//! dense file of 1,000 tasks).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use updraft_core::dag::{LoadOptions, load_paths};

use crate::floors::{Floor, median};
use crate::harness::scaled;
use crate::report::Figure;

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

/// The floor of parse-10k: one file of [`dag_file`], loaded.
pub fn floor(scratch: &Path) -> Result<Duration> {
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
pub fn parse_10k(scratch: &Path, scale: f64, floor: &Floor) -> Result<Figure> {
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
        ratio: seconds / (floor.value * count as f64),
        checked: format!("{count} DAGs, {tasks} tasks, 0 errors"),
    })
}

/// The floor of `parse-dense`: a dense file of this many tasks.
pub const DENSE_FLOOR_TASKS: usize = 1_000;

/// A DAG file of `tasks` tasks, each depending on the 20 before it and templated.
fn dense_file(tasks: usize) -> String {
    let mut text = String::from("version: 1\nid: dense\ntasks:\n");
    for task in 0..tasks {
        let upstream: Vec<String> = (task.saturating_sub(20)..task)
            .map(|before| format!("t{before}"))
            .collect();
        text.push_str(&format!(
            "  t{task}: {{run: \"echo {{{{ ds }}}}\", depends_on: [{}]}}\n",
            upstream.join(", ")
        ));
    }
    text
}

fn load_dense(path: &Path, tasks: usize) -> Result<()> {
    let load = load_paths(&[path.to_owned()], &LoadOptions::default());
    ensure!(
        load.errors.is_empty() && load.dags.len() == 1 && load.dags[0].dag.tasks.len() == tasks,
        "the dense file of {tasks} tasks loads"
    );
    Ok(())
}

/// The floor of parse-dense: a dense file of [`DENSE_FLOOR_TASKS`], loaded.
pub fn dense_floor(scratch: &Path) -> Result<Duration> {
    let path = scratch.join("dense-floor.yaml");
    std::fs::write(&path, dense_file(DENSE_FLOOR_TASKS))?;
    median(11, || load_dense(&path, DENSE_FLOOR_TASKS))
}

/// One DAG file of 20,000 tasks, each depending on the 20 before it: validation is linear in
/// tasks and edges when it takes 20 times the floor's file of 1,000 (ratio 1).
pub fn parse_dense(scratch: &Path, scale: f64, floor: &Floor) -> Result<Figure> {
    let tasks = scaled(20_000, scale).max(DENSE_FLOOR_TASKS);
    let path = scratch.join("dense.yaml");
    std::fs::write(&path, dense_file(tasks))?;
    let start = Instant::now();
    load_dense(&path, tasks)?;
    let seconds = start.elapsed().as_secs_f64();
    let times = tasks as f64 / DENSE_FLOOR_TASKS as f64;
    Ok(Figure {
        workload: format!("parse-dense-{tasks}"),
        metric: "load time",
        value: seconds,
        unit: "s",
        floor: floor.name,
        ratio: seconds / (floor.value * times),
        checked: format!("1 DAG, {tasks} tasks, {} edges", tasks * 20 - 210),
    })
}
