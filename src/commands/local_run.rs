//! `updraft dags test` and `updraft tasks test`: run a DAG or one task now, in this process,
//! with the logs on the terminal. Nothing else needs to run.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use chrono::Utc;
use tokio::sync::{mpsc, watch};
use updraft_core::dag::{Dag, load_paths};
use updraft_core::render::{self, Context, RunContext};
use updraft_core::scope::Scope;
use updraft_core::state::{DagRunState, RunType, test_run_id};
use updraft_core::time::WrittenTime;
use updraft_executor::name::Name;
use updraft_executor::process::{self, Ending, Files, Spawn};
use updraft_executor::worker::Worker;
use updraft_metadata::{CreateOutcome, NewDagRun};
use updraft_scheduler::service::Scheduler;
use updraft_scheduler::sync::{SyncOptions, sync_dags};

use crate::args::in_zone;
use crate::cli::SchedulerArgs;
use crate::commands::dags::find_dag;
use crate::commands::serve::{hostname, scheduler_settings, stopped, worker_settings};
use crate::commands::{open_store, runtime};
use crate::config::Config;
use crate::term::{duration as human_duration, print_table};
use updraft_ops::dags::check_conf;

/// `dags test`: one manual run of the DAG, stepped by an in-process scheduler and run by an
/// in-process worker that claim nothing but this run. Exit 0 when it succeeds, 1 when not.
pub fn test_dag(
    config: &Config,
    dag_id: &str,
    logical_date: Option<WrittenTime>,
    conf: Option<serde_json::Value>,
) -> Result<i32> {
    let conf = conf.unwrap_or_else(|| serde_json::json!({}));
    let dag = find_dag(config, dag_id)?;
    let logical_date = match logical_date {
        Some(written) => in_zone("--logical-date", written, dag.timetable.timezone)
            .map_err(|message| anyhow!(message))?,
        None => Utc::now(),
    };
    check_conf(&dag, &conf)?;
    runtime()?.block_on(async {
        let store = open_store(config).await?;
        let load = load_paths(std::slice::from_ref(&config.dags_folder), &config.load);
        sync_dags(
            &store,
            &load,
            SyncOptions {
                paused_on_creation: false,
            },
            Utc::now(),
        )
        .await?;
        let now = Utc::now();
        let run = NewDagRun {
            dag_id: dag.id.clone(),
            run_id: test_run_id(now),
            run_type: RunType::Manual,
            logical_date,
            data_interval_start: logical_date,
            data_interval_end: logical_date,
            run_after: now,
            conf,
            version_hash: dag.version_hash(),
            backfill_id: None,
        };
        let (CreateOutcome::Created(run) | CreateOutcome::AlreadyExists(run)) =
            store.create_dag_run(&run, now).await?;
        println!("testing {} as run {}", dag.id, run.run_id);

        let (stop, stopping) = watch::channel(false);
        let mut settings = scheduler_settings(config, &default_scheduler_args());
        settings.scope = Scope::Run(run.id);
        let scheduler = Scheduler::new(store.clone(), settings, hostname());
        let scheduler = tokio::spawn(scheduler.run(stopped(stopping.clone())));
        let mut worker = worker_settings(
            Name::Given(format!("{}:test:{}", hostname(), std::process::id())),
            hostname(),
            queues_of(&dag),
            16,
        );
        worker.echo = true;
        worker.scope = Scope::Run(run.id);
        let worker = tokio::spawn(Worker::new(store.clone(), worker).run(stopped(stopping)));

        let finished = loop {
            let current = store
                .get_dag_run(run.id)
                .await?
                .ok_or_else(|| anyhow!("the test run disappeared"))?;
            if current.state.is_finished() {
                break current;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        stop.send_replace(true);
        scheduler.await?;
        worker.await??;

        let instances = store.list_task_instances(run.id).await?;
        println!();
        let rows: Vec<[String; 4]> = instances
            .iter()
            .map(|ti| {
                [
                    ti.task_id.to_string(),
                    ti.state.to_string(),
                    ti.try_number.to_string(),
                    human_duration(ti.start_date, ti.end_date),
                ]
            })
            .collect();
        print_table(["TASK", "STATE", "TRIES", "DURATION"], &rows);
        println!(
            "run {} {} in {}",
            finished.run_id,
            finished.state,
            human_duration(finished.start_date, finished.end_date)
        );
        store.close().await;
        Ok(if finished.state == DagRunState::Success {
            0
        } else {
            1
        })
    })
}

/// `tasks test`: renders one task for `logical_date` and runs it, output to the terminal;
/// nothing is recorded. Exit 0 when it succeeds or skips, 1 when not.
pub fn test_task(
    config: &Config,
    dag_id: &str,
    task_id: &str,
    logical_date: Option<WrittenTime>,
) -> Result<i32> {
    let dag = find_dag(config, dag_id)?;
    let logical_date = match logical_date {
        Some(written) => in_zone("--logical-date", written, dag.timetable.timezone)
            .map_err(|message| anyhow!(message))?,
        None => Utc::now(),
    };
    let Some(task) = dag.task(task_id) else {
        let known: Vec<&str> = dag.tasks.keys().map(|id| id.as_str()).collect();
        let hint = updraft_core::suggest::did_you_mean(task_id, known.iter().copied());
        bail!("DAG \"{}\" has no task \"{task_id}\"{hint}", dag.id);
    };
    let conf = serde_json::json!({});
    let params = render::effective_params(&dag, &conf)
        .map_err(|problems| anyhow!("params: {}", problems.join("; ")))?;
    let run = RunContext {
        dag_id: dag.id.clone(),
        run_id: test_run_id(logical_date),
        run_type: RunType::Manual,
        logical_date,
        data_interval_start: logical_date,
        data_interval_end: logical_date,
        params,
        conf,
    };
    let context = Context {
        run: &run,
        task_id: task.id.clone(),
        try_number: 1,
        outputs: render::Outputs::new(),
    };
    let rendered = render::render_task(&dag, task, &context)?;
    let folder = Path::new(&dag.fileloc)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let spawn = Spawn {
        command: rendered.command.clone(),
        env: rendered.env.clone().into_iter().collect(),
        working_dir: match &rendered.working_dir {
            Some(dir) => folder.join(dir),
            None => folder,
        },
        timeout: task.timeout,
        kill_grace: task.kill_grace,
        files: Files::Scratch(Arc::default()),
    };
    runtime()?.block_on(async {
        let (log, mut chunks) = mpsc::channel::<Vec<u8>>(64);
        let printer = tokio::spawn(async move {
            while let Some(chunk) = chunks.recv().await {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&chunk);
                let _ = out.flush();
            }
        });
        let finished = process::run(spawn, log, std::future::pending(), |_| {}).await;
        printer.await?;
        for (name, value) in &finished.outputs {
            println!("output {name}={value}");
        }
        let ok = match finished.ending {
            Ending::Exited(0) => true,
            Ending::Exited(code) => task.skip_on_exit_code.contains(&code),
            _ => false,
        };
        println!("{}", process::describe(&finished.ending));
        Ok(if ok { 0 } else { 1 })
    })
}

/// Every queue a DAG's tasks use: the test worker serves them all.
fn queues_of(dag: &Dag) -> Vec<String> {
    let mut queues: Vec<String> = dag.tasks.values().map(|t| t.queue.clone()).collect();
    queues.sort();
    queues.dedup();
    queues
}

fn default_scheduler_args() -> SchedulerArgs {
    SchedulerArgs {
        zombie_threshold: std::time::Duration::from_secs(30),
        poll_interval: None,
    }
}
