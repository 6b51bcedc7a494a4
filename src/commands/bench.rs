//! `updraft bench`: measured speed, printed beside floors measured in the same run on the same
//! machine, because these machines are noisy and absolute figures mislead.
//!
//! Each workload also checks its answer (counts, states), so a fast wrong result cannot pass.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use chrono::Utc;
use serde::Serialize;
use tokio::sync::watch;
use updraft_core::dag::{LoadOptions, load_paths};
use updraft_core::state::{BackfillState, DagRunState, RunType, TaskState};
use updraft_executor::worker::Worker;
use updraft_metadata::{CreateOutcome, NewBackfill, NewDagRun, Store};
use updraft_scheduler::backfill::{self as plan, BackfillOptions, ExistingRun, Reprocess};
use updraft_scheduler::service::{self, Scheduler};
use updraft_scheduler::sync::{SyncOptions, sync_dags};

use crate::cli::BenchArgs;

/// Every workload, in the order they run by default.
pub const WORKLOADS: &[&str] = &["parse-10k", "chain-40", "fanout-200", "backfill-365"];

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
            "chain-40" => run_dag(
                scratch.path(),
                Shape::Chain(scaled(40, args.scale)),
                &floors[0],
            )?,
            "fanout-200" => run_dag(
                scratch.path(),
                Shape::Fanout(scaled(200, args.scale)),
                &floors[0],
            )?,
            "backfill-365" => backfill(scratch.path(), scaled(365, args.scale), &floors[0])?,
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

/// `count` shrunk by `scale`, at least 3.
fn scaled(count: usize, scale: f64) -> usize {
    ((count as f64 * scale).round() as usize).max(3)
}

/// The DAG shapes the pipeline workloads run, every task `true`.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// n tasks, each depending on the one before.
    Chain(usize),
    /// One root, n parallel tasks, one join.
    Fanout(usize),
}

impl Shape {
    fn tasks(self) -> usize {
        match self {
            Shape::Chain(n) => n,
            Shape::Fanout(n) => n + 2,
        }
    }

    fn dag_file(self) -> String {
        let mut text = String::from("version: 1\nid: bench\ntasks:\n");
        match self {
            Shape::Chain(n) => {
                for i in 0..n {
                    text.push_str(&format!("  t{i:04}: {{run: \"true\""));
                    if i > 0 {
                        text.push_str(&format!(", depends_on: [t{:04}]", i - 1));
                    }
                    text.push_str("}\n");
                }
            }
            Shape::Fanout(n) => {
                text.push_str("  root: {run: \"true\"}\n");
                for i in 0..n {
                    text.push_str(&format!(
                        "  p{i:04}: {{run: \"true\", depends_on: [root]}}\n"
                    ));
                }
                let all: Vec<String> = (0..n).map(|i| format!("p{i:04}")).collect();
                text.push_str(&format!(
                    "  join: {{run: \"true\", depends_on: [{}]}}\n",
                    all.join(", ")
                ));
            }
        }
        text
    }

    fn name(self) -> String {
        match self {
            Shape::Chain(n) => format!("chain-{n}"),
            Shape::Fanout(n) => format!("fanout-{n}"),
        }
    }
}

/// Trigger to success of one run of `shape` on a fresh SQLite database, with the scheduler and
/// a worker of concurrency 16 in this process, as `updraft standalone` runs them.
fn run_dag(scratch: &Path, shape: Shape, floor: &Floor) -> Result<Figure> {
    let folder = scratch.join(shape.name());
    std::fs::create_dir_all(folder.join("dags"))?;
    std::fs::write(folder.join("dags/bench.yaml"), shape.dag_file())?;
    let url = format!("sqlite:{}", folder.join("updraft.db").display());
    let runtime = crate::commands::runtime()?;
    let seconds = runtime.block_on(async {
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        let options = LoadOptions::default();
        let load = load_paths(&[folder.join("dags")], &options);
        ensure!(load.errors.is_empty(), "the generated DAG is valid");
        let now = Utc::now();
        sync_dags(
            &store,
            &load,
            SyncOptions {
                paused_on_creation: false,
            },
            now,
        )
        .await?;
        let dag = &load.dags[0].dag;

        let parts = InProcess::start(&store, &folder.join("dags"), options).await;

        let start = Instant::now();
        let now = Utc::now();
        let run = NewDagRun {
            dag_id: dag.id.clone(),
            run_id: "bench".to_owned(),
            run_type: RunType::Manual,
            logical_date: now,
            data_interval_start: now,
            data_interval_end: now,
            run_after: now,
            conf: serde_json::json!({}),
            version_hash: dag.version_hash(),
            backfill_id: None,
        };
        let CreateOutcome::Created(run) = store.create_dag_run(&run, now).await? else {
            bail!("the bench run exists already");
        };
        let finished = loop {
            let current = store.get_dag_run(run.id).await?.expect("the run exists");
            if current.state.is_finished() {
                break current;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(600),
                "the run did not finish in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let seconds = start.elapsed().as_secs_f64();
        parts.stop().await?;
        ensure!(
            finished.state == DagRunState::Success,
            "the run ended {}",
            finished.state
        );
        let instances = store.list_task_instances(run.id).await?;
        let succeeded = instances
            .iter()
            .filter(|ti| ti.state == TaskState::Success)
            .count();
        ensure!(
            succeeded == shape.tasks() && instances.iter().all(|ti| ti.try_number == 1),
            "expected {} task instances to succeed in one try, {succeeded} did",
            shape.tasks()
        );
        store.close().await;
        Ok(seconds)
    })?;
    let tasks = shape.tasks();
    Ok(Figure {
        workload: shape.name(),
        metric: "trigger to success",
        value: seconds,
        unit: "s",
        floor: floor.name,
        ratio: seconds / (floor.seconds * tasks as f64),
        checked: format!(
            "{tasks} tasks succeeded in one try, {:.1} ms per task",
            seconds * 1000.0 / tasks as f64
        ),
    })
}

/// Tasks in each run of the backfill workload.
const BACKFILL_CHAIN: usize = 10;

/// A backfill of `runs` days of a daily 10-task chain of `true`, on a fresh SQLite database,
/// from planning to the backfill completed, with the scheduler and a worker of concurrency 16
/// in this process (as `updraft standalone`, or `dags backfill` without a scheduler, runs
/// them). The DAG keeps its default `max_active_runs` (16), which the backfill takes.
fn backfill(scratch: &Path, runs: usize, floor: &Floor) -> Result<Figure> {
    let folder = scratch.join(format!("backfill-{runs}"));
    std::fs::create_dir_all(folder.join("dags"))?;
    let mut yaml = String::from(
        "version: 1\nid: bench_backfill\nschedule: \"@daily\"\nstart_date: 2024-01-01\ntasks:\n",
    );
    for i in 0..BACKFILL_CHAIN {
        yaml.push_str(&format!("  t{i:02}: {{run: \"true\""));
        if i > 0 {
            yaml.push_str(&format!(", depends_on: [t{:02}]", i - 1));
        }
        yaml.push_str("}\n");
    }
    std::fs::write(folder.join("dags/bench_backfill.yaml"), yaml)?;
    let url = format!("sqlite:{}", folder.join("updraft.db").display());
    let runtime = crate::commands::runtime()?;
    let seconds = runtime.block_on(async {
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        let options = LoadOptions::default();
        let load = load_paths(&[folder.join("dags")], &options);
        ensure!(load.errors.is_empty(), "the generated DAG is valid");
        // Paused, so that the scheduler creates no scheduled run beside the backfill's.
        sync_dags(
            &store,
            &load,
            SyncOptions {
                paused_on_creation: true,
            },
            Utc::now(),
        )
        .await?;
        let dag = load.dags[0].dag.clone();

        let parts = InProcess::start(&store, &folder.join("dags"), options).await;

        let start = Instant::now();
        let now = Utc::now();
        let from = dag.timetable.start_date.expect("a start date");
        let to = from + chrono::Duration::days(runs as i64 - 1);
        let intervals = plan::intervals(&dag, from, to, false, None, now)?;
        let existing: Vec<ExistingRun> = store
            .list_dated_runs(&dag.id, from, to)
            .await?
            .iter()
            .map(ExistingRun::from)
            .collect();
        let decisions = plan::decide(&intervals.runs, &existing, Reprocess::None, now);
        let new_runs = plan::new_runs(
            &dag.id,
            &dag.version_hash(),
            &decisions,
            &serde_json::json!({}),
        );
        let backfill = NewBackfill {
            dag_id: dag.id.clone(),
            from_date: from,
            to_date: to,
            options: BackfillOptions::default().to_json(),
            created_by: "bench".to_owned(),
        };
        let created = store
            .create_backfill(&backfill, &new_runs, &[], &[], now)
            .await?;
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
        let ids: Vec<i64> = finished.iter().map(|run| run.id).collect();
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
        Ok(seconds)
    })?;
    let tasks = runs * BACKFILL_CHAIN;
    Ok(Figure {
        workload: format!("backfill-{runs}"),
        metric: "backfill to completed",
        value: seconds,
        unit: "s",
        floor: floor.name,
        ratio: seconds / (floor.seconds * tasks as f64),
        checked: format!(
            "{runs} runs and {tasks} tasks succeeded in one try, {:.1} ms per task",
            seconds * 1000.0 / tasks as f64
        ),
    })
}

/// The scheduler and a worker of concurrency 16 in this process, as `updraft standalone` runs
/// them.
struct InProcess {
    stop: watch::Sender<bool>,
    scheduler: tokio::task::JoinHandle<()>,
    worker: tokio::task::JoinHandle<Result<(), updraft_metadata::Error>>,
}

impl InProcess {
    /// Starts both and lets the scheduler's first tick (its own sync) pass, so that a clock
    /// started afterwards measures runs, not start-up.
    async fn start(store: &Store, dags_folder: &Path, options: LoadOptions) -> InProcess {
        let (stop, stopping) = watch::channel(false);
        let stopped = |mut stop: watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let mut settings = service::Settings::new(dags_folder.to_path_buf(), options);
        settings.poll_interval = Duration::from_millis(200);
        let scheduler = Scheduler::new(store.clone(), settings, "bench".to_owned());
        let scheduler = tokio::spawn(scheduler.run(stopped(stopping.clone())));
        let worker = Worker::new(
            store.clone(),
            updraft_executor::worker::Settings {
                id: "bench".to_owned(),
                hostname: "bench".to_owned(),
                queues: vec!["default".to_owned()],
                concurrency: 16,
                poll_interval: Duration::from_millis(200),
                heartbeat_interval: Duration::from_secs(1),
                echo: false,
                only_run: None,
            },
        );
        let worker = tokio::spawn(worker.run(stopped(stopping)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        InProcess {
            stop,
            scheduler,
            worker,
        }
    }

    async fn stop(self) -> Result<()> {
        self.stop.send_replace(true);
        self.scheduler.await?;
        self.worker.await??;
        Ok(())
    }
}
