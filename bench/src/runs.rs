//! Runs from trigger to success: chains and fan-outs run by a worker's processes
//! (chain-40, chain-100, fanout-200, fanout-1000) or by the no-op executor
//! (scheduler-chain-100, scheduler-fanout-1000, scheduler-many), and chain-40-cli, run by a
//! real `updraft standalone` and triggered by `updraft dags trigger --wait`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::Utc;
use updraft_core::dag::LoadOptions;
use updraft_core::state::{DagRunState, TaskState};
use updraft_metadata::{CreateOutcome, NewDagRun};

use crate::floors::Floor;
use crate::harness::{Databases, Executor, InProcess, Shape, Standalone, Updraft, load_and_sync};
use crate::report::Figure;

/// Trigger to success of one run of `shape` on a fresh database, with the scheduler and
/// `executor` in this process.
pub async fn trigger_to_success(
    databases: &Databases,
    scratch: &Path,
    shape: Shape,
    executor: Executor,
    floor: &Floor,
) -> Result<Figure> {
    let name = match executor {
        Executor::NoOp => format!("scheduler-{}", shape.name()),
        _ => shape.name(),
    };
    let folder = scratch.join(&name);
    std::fs::create_dir_all(folder.join("dags"))?;
    std::fs::write(folder.join("dags/bench.yaml"), shape.dag_file("bench"))?;
    let seconds = {
        let (_database, store) = databases.fresh(databases.backend).await?;
        let options = LoadOptions::default();
        let load = load_and_sync(&store, &folder.join("dags"), &options, 1, false).await?;
        let dag = &load.dags[0].dag;

        let parts = InProcess::start(&store, &folder.join("dags"), options, executor).await;

        let start = Instant::now();
        let now = Utc::now();
        let run = NewDagRun {
            run_id: "bench".to_owned(),
            ..NewDagRun::manual(
                dag.id.clone(),
                dag.version_hash(),
                now,
                serde_json::json!({}),
                now,
            )
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
        seconds
    };
    let tasks = shape.tasks();
    let ratio = seconds / (floor.value * tasks as f64);
    Ok(match executor {
        Executor::NoOp => {
            // Each task instance moves none -> scheduled -> queued -> running -> success, and
            // the run queued -> running -> success.
            let moves = tasks * 4 + 2;
            Figure {
                workload: name,
                metric: "state moves per second",
                value: moves as f64 / seconds,
                unit: "/s",
                floor: floor.name,
                ratio,
                checked: format!(
                    "{tasks} tasks succeeded in one try, {moves} moves in {seconds:.3} s, \
                     {:.2} ms per task",
                    seconds * 1000.0 / tasks as f64
                ),
            }
        }
        _ => Figure {
            workload: name,
            metric: "trigger to success",
            value: seconds,
            unit: "s",
            floor: floor.name,
            ratio,
            checked: format!(
                "{tasks} tasks succeeded in one try, {:.1} ms per task",
                seconds * 1000.0 / tasks as f64
            ),
        },
    })
}

/// A chain of `tasks` run by a real `updraft standalone` process, triggered from another
/// process as a user would: `updraft dags trigger bench --wait`, timed from its start to its
/// exit.
pub async fn chain_cli(
    databases: &Databases,
    updraft: &Updraft,
    scratch: &Path,
    tasks: usize,
    floor: &Floor,
) -> Result<Figure> {
    let shape = Shape::Chain(tasks);
    let name = format!("{}-cli", shape.name());
    let folder = scratch.join(&name);
    std::fs::create_dir_all(folder.join("dags"))?;
    std::fs::write(folder.join("dags/bench.yaml"), shape.dag_file("bench"))?;
    let (database, store) = databases.fresh(databases.backend).await?;
    let mut standalone = Standalone::start(updraft, &folder, database.url())?;
    let dag = standalone.wait_synced(&store, 1).await?.remove(0);

    let start = Instant::now();
    let trigger = updraft
        .command(&folder, database.url())
        .args(["dags", "trigger", dag.dag_id.as_str(), "--wait"])
        .output()
        .await?;
    let seconds = start.elapsed().as_secs_f64();
    standalone.stop().await?;
    ensure!(
        trigger.status.success(),
        "`updraft dags trigger --wait` exited ({}): {}",
        trigger.status,
        String::from_utf8_lossy(&trigger.stderr)
    );
    let stdout = String::from_utf8(trigger.stdout)?;
    let run_id = stdout.trim();
    let run = store
        .get_dag_run_by_run_id(&dag.dag_id, run_id)
        .await?
        .with_context(|| format!("the triggered run {run_id} is not in the database"))?;
    let instances = store.list_task_instances(run.id).await?;
    let succeeded = instances
        .iter()
        .filter(|ti| ti.state == TaskState::Success && ti.try_number == 1)
        .count();
    ensure!(
        run.state == DagRunState::Success && instances.len() == tasks && succeeded == tasks,
        "expected the run and its {tasks} task instances to succeed in one try: the run is {}, \
         {succeeded} of {} did",
        run.state,
        instances.len()
    );
    store.close().await;
    Ok(Figure {
        workload: name,
        metric: "dags trigger --wait",
        value: seconds,
        unit: "s",
        floor: floor.name,
        ratio: seconds / (floor.value * tasks as f64),
        checked: format!(
            "exit 0, the run and its {tasks} tasks succeeded in one try, {:.1} ms per task",
            seconds * 1000.0 / tasks as f64
        ),
    })
}

/// The DAGs of scheduler-many: one root, 98 parallel tasks, one join.
const MANY_SHAPE: Shape = Shape::Fanout(98);

/// `dags` DAGs of 100 tasks each, synced, then one manual run of each created at once, until
/// all runs succeeded, with the scheduler and the no-op executor in this process: the
/// scheduler and the database alone, with many runs to step at the same time.
pub async fn scheduler_many(
    databases: &Databases,
    scratch: &Path,
    dags: usize,
    floor: &Floor,
) -> Result<Figure> {
    let folder = scratch.join(format!("scheduler-many-{dags}"));
    std::fs::create_dir_all(&folder)?;
    for i in 0..dags {
        let id = format!("many_{i:04}");
        std::fs::write(folder.join(format!("{id}.yaml")), MANY_SHAPE.dag_file(&id))?;
    }
    let (_database, store) = databases.fresh(databases.backend).await?;
    let options = LoadOptions::default();
    let load = load_and_sync(&store, &folder, &options, dags, false).await?;
    let parts = InProcess::start(&store, &folder, options, Executor::NoOp).await;

    let start = Instant::now();
    let now = Utc::now();
    let mut ids = Vec::with_capacity(dags);
    for loaded in &load.dags {
        let dag = &loaded.dag;
        let run = NewDagRun::manual(
            dag.id.clone(),
            dag.version_hash(),
            now,
            serde_json::json!({}),
            now,
        );
        let CreateOutcome::Created(run) = store.create_dag_run(&run, now).await? else {
            bail!("a run of {} exists already", dag.id);
        };
        ids.push(run.id);
    }
    while !store.list_unfinished_runs().await?.is_empty() {
        ensure!(
            start.elapsed() < Duration::from_secs(600),
            "the runs did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    parts.stop().await?;
    let runs = store.count_runs_by_state().await?;
    ensure!(
        runs == [(DagRunState::Success, dags as i64)],
        "expected {dags} runs to succeed, found {runs:?}"
    );
    let tasks = dags * MANY_SHAPE.tasks();
    let instances = store.list_task_instances_of_runs(&ids).await?;
    let succeeded = instances
        .iter()
        .filter(|ti| ti.state == TaskState::Success && ti.try_number == 1)
        .count();
    ensure!(
        instances.len() == tasks && succeeded == tasks,
        "expected {tasks} task instances to succeed in one try, {succeeded} of {} did",
        instances.len()
    );
    store.close().await;

    // Each task instance moves none -> scheduled -> queued -> running -> success, and each
    // run queued -> running -> success.
    let moves = tasks * 4 + dags * 2;
    Ok(Figure {
        workload: format!("scheduler-many-{dags}x{}", MANY_SHAPE.tasks()),
        metric: "state moves per second",
        value: moves as f64 / seconds,
        unit: "/s",
        floor: floor.name,
        ratio: seconds / (floor.value * tasks as f64),
        checked: format!(
            "{dags} runs and {tasks} tasks succeeded in one try, {moves} moves in \
             {seconds:.3} s, {:.2} ms per task",
            seconds * 1000.0 / tasks as f64
        ),
    })
}
