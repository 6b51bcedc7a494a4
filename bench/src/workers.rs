//! workers: a queue of trivial task instances drained by four `updraft worker` processes on
//! Postgres, beside the raw `SKIP LOCKED` claim rate of the same server and the bare spawn rate
//! of as many processes.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use chrono::Utc;
use updraft_core::dag::LoadOptions;
use updraft_core::plan::TryPlan;
use updraft_core::render;
use updraft_core::state::{TaskMove, TaskState, WorkerState};
use updraft_metadata::{Backend, CreateOutcome, NewDagRun, NewTaskInstance, QueueRequest, Store};

use crate::floors::bare_spawns;
use crate::harness::{Databases, Updraft, load_and_sync};
use crate::report::Figure;

/// Worker processes and slots of the workers workload (issue 6: 4 x 8).
const WORKER_PROCESSES: usize = 4;
const WORKER_CONCURRENCY: usize = 8;
/// Parallel tasks of each run of the workers workload's DAG.
const WORKER_TASKS: usize = 50;

/// `count` task instances of `true` queued at once on a scratch Postgres database, drained by
/// four `updraft worker` processes of concurrency 8: from the commit that queues them to the
/// end of the last try (its recorded end), in tasks per second. Beside it, the raw
/// `FOR UPDATE SKIP LOCKED` claim rate of the same server, measured in the same run with as
/// many claimers (four pools of eight), each claiming one row at a time: what the database can
/// hand out before any of a try's own work (its row, log, process and end). And the rate at
/// which this machine starts and ends the tasks' processes alone, as many at a time: the
/// ceiling of any worker here, as most of a trivial try's CPU is its process. Postgres only.
pub async fn workers(
    databases: &Databases,
    updraft: &Updraft,
    scratch: &Path,
    count: usize,
) -> Result<Vec<Figure>> {
    let claimers = WORKER_PROCESSES * WORKER_CONCURRENCY;
    let raw_seconds = {
        let (floor_database, store) = databases.fresh(Backend::Postgres).await?;
        store.prepare_claim_floor(count as i64).await?;
        let mut stores = vec![store];
        for _ in 1..WORKER_PROCESSES {
            stores.push(Store::open(floor_database.url()).await?);
        }
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (process, store) in stores.iter().enumerate() {
            for slot in 0..WORKER_CONCURRENCY {
                let (store, claimer) = (store.clone(), format!("c{process}.{slot}"));
                tasks.spawn(async move {
                    let mut claimed = 0usize;
                    while store.claim_floor_row(&claimer).await?.is_some() {
                        claimed += 1;
                    }
                    anyhow::Ok(claimed)
                });
            }
        }
        let mut claimed = 0;
        while let Some(done) = tasks.join_next().await {
            claimed += done??;
        }
        let seconds = start.elapsed().as_secs_f64();
        for store in &stores {
            store.close().await;
        }
        ensure!(
            claimed == count,
            "the claim floor claimed {claimed} rows of {count}"
        );
        seconds
    };
    let raw_rate = count as f64 / raw_seconds;
    let spawn_seconds = bare_spawns(count, claimers).await?;
    let spawn_rate = count as f64 / spawn_seconds;

    let folder = scratch.join(format!("workers-{count}"));
    std::fs::create_dir_all(folder.join("dags"))?;
    let mut yaml = format!(
        "version: 1\nid: bench_workers\nmax_active_runs: {runs}\nmax_active_tasks: {count}\n\
         tasks:\n",
        runs = count.div_ceil(WORKER_TASKS),
    );
    for i in 0..WORKER_TASKS.min(count) {
        yaml.push_str(&format!(
            "  t{i:02}: {{run: \"true\", queue: bench, pool: bench}}\n"
        ));
    }
    std::fs::write(folder.join("dags/bench_workers.yaml"), yaml)?;
    let (database, store) = databases.fresh(Backend::Postgres).await?;
    store.set_pool("bench", count as i32, None, None).await?;
    let options = LoadOptions::default();
    let load = load_and_sync(&store, &folder.join("dags"), &options, 1, true).await?;
    let now = Utc::now();
    let dag = &load.dags[0].dag;

    // The task instances, scheduled and rendered as the scheduler would leave them, in runs of
    // 50 parallel tasks.
    let mut requests = Vec::with_capacity(count);
    let mut run_ids = Vec::new();
    for n in 0..count.div_ceil(WORKER_TASKS) {
        let run = NewDagRun {
            run_id: format!("bench_{n:05}"),
            ..NewDagRun::manual(
                dag.id.clone(),
                dag.version_hash(),
                now,
                serde_json::json!({}),
                now,
            )
        };
        let CreateOutcome::Created(run) = store.create_dag_run(&run, now).await? else {
            bail!("bench run {n} exists already");
        };
        let tasks: Vec<NewTaskInstance> = dag
            .tasks
            .values()
            .take(count - n * WORKER_TASKS)
            .map(|task| NewTaskInstance {
                task_id: task.id.clone(),
                max_tries: 0,
                pool: task.pool.clone(),
                pool_slots: 1,
                queue: task.queue.clone(),
                priority_weight: 1,
                rendered_command: None,
            })
            .collect();
        let instances = store.create_task_instances(run.id, &tasks, now).await?;
        let moves: Vec<_> = instances
            .iter()
            .map(|ti| TaskMove {
                task_instance: ti.id,
                from: TaskState::None,
                to: TaskState::Scheduled,
            })
            .collect();
        store.set_task_states(&moves, now).await?;
        let context = run
            .template_context(dag, Default::default())
            .map_err(anyhow::Error::msg)?;
        for ti in &instances {
            let task = dag.task(ti.task_id.as_str()).expect("a task of the DAG");
            let plan = TryPlan::new(
                dag,
                task,
                &render::Context {
                    run: &context,
                    task_id: ti.task_id.clone(),
                    try_number: 1,
                    outputs: render::Outputs::new(),
                },
            );
            requests.push(QueueRequest {
                task_instance: ti.id,
                plan: serde_json::to_value(plan)?,
                rate_limit: None,
            });
        }
        run_ids.push(run.id);
    }
    ensure!(
        requests.len() == count,
        "made {} of {count} task instances",
        requests.len()
    );

    // The workers, started and registered before anything is queued.
    let mut processes = Vec::with_capacity(WORKER_PROCESSES);
    for i in 0..WORKER_PROCESSES {
        let stderr = std::fs::File::create(folder.join(format!("worker-{i}.stderr")))?;
        let child = updraft
            .bare()
            .arg("--database-url")
            .arg(database.url())
            .arg("--dags-folder")
            .arg(folder.join("dags"))
            .args([
                "worker",
                "--name",
                &format!("bench-{i}"),
                "--queues",
                "bench",
            ])
            .args(["--concurrency", &WORKER_CONCURRENCY.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()?;
        processes.push(child);
    }
    let waiting = Instant::now();
    loop {
        let registered = store
            .list_workers()
            .await?
            .iter()
            .filter(|worker| worker.state == WorkerState::Running)
            .count();
        if registered == WORKER_PROCESSES {
            break;
        }
        for (i, process) in processes.iter_mut().enumerate() {
            if let Some(status) = process.try_wait()? {
                let stderr = std::fs::read_to_string(folder.join(format!("worker-{i}.stderr")))?;
                bail!("worker {i} exited ({status}) before it registered: {stderr}");
            }
        }
        ensure!(
            waiting.elapsed() < Duration::from_secs(60),
            "the workers did not register in a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // One transaction queues them all and wakes the workers as it commits.
    let queued = store.queue_task_instances(&requests, Utc::now()).await?;
    let start = Utc::now();
    ensure!(queued.len() == count, "queued {} of {count}", queued.len());
    let last_run = *run_ids.last().expect("a run");
    let mut watched = vec![last_run];
    let instances = loop {
        // The last run's task instances are claimed last (same priority and queue time: by
        // id); once they are done, look at all of them.
        let instances = store.list_task_instances_of_runs(&watched).await?;
        if instances.iter().all(|ti| ti.state.is_finished()) {
            if watched.len() == run_ids.len() {
                break instances;
            }
            watched = run_ids.clone();
            continue;
        }
        ensure!(
            (Utc::now() - start).num_seconds() < 600,
            "the workers did not drain the queue in 10 minutes"
        );
        // The figure ends at the last try's recorded end, not at this look: looking seldom
        // keeps the benchmark's own reads out of the workers' way.
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for process in &mut processes {
        if let Some(pid) = process.id() {
            // SAFETY: kill(2) with our own child's pid and a valid signal number.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    for process in &mut processes {
        process.wait().await?;
    }
    let succeeded = instances
        .iter()
        .filter(|ti| ti.state == TaskState::Success && ti.try_number == 1)
        .count();
    ensure!(
        instances.len() == count && succeeded == count,
        "expected {count} task instances to succeed in one try, {succeeded} of {} did",
        instances.len()
    );
    let last_end = instances
        .iter()
        .filter_map(|ti| ti.end_date)
        .max()
        .expect("ended task instances");
    let seconds = (last_end - start).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for ti in &instances {
        *per_worker
            .entry(ti.worker_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let mut shares: Vec<usize> = per_worker.into_values().collect();
    shares.sort_unstable();
    store.close().await;
    drop(database);

    let rate = count as f64 / seconds;
    let raw_floor = "raw SKIP LOCKED claim";
    let spawn_floor = "bare spawn of the tasks";
    Ok(vec![
        Figure {
            workload: format!("workers-{count}"),
            metric: "raw claims per second",
            value: raw_rate,
            unit: "/s",
            floor: raw_floor,
            ratio: 1.0,
            checked: format!(
                "{count} rows claimed once each by {claimers} claimers in {raw_seconds:.3} s"
            ),
        },
        Figure {
            workload: format!("workers-{count}"),
            metric: "bare spawns per second",
            value: spawn_rate,
            unit: "/s",
            floor: spawn_floor,
            ratio: 1.0,
            checked: format!(
                "{count} processes of `sh -c true`, {claimers} at a time, started and waited \
                 for by one process without a database in {spawn_seconds:.3} s: what no \
                 worker can beat on this machine"
            ),
        },
        Figure {
            workload: format!("workers-{count}"),
            metric: "tasks per second",
            value: rate,
            unit: "/s",
            floor: raw_floor,
            // How many times the raw claim's time one task costs.
            ratio: raw_rate / rate,
            checked: format!(
                "{count} tasks of `true` succeeded in one try on {WORKER_PROCESSES} workers x \
                 {WORKER_CONCURRENCY} in {seconds:.3} s (tries per worker {shares:?}); {:.0}% \
                 of the bare spawn rate",
                100.0 * rate / spawn_rate
            ),
        },
    ])
}
