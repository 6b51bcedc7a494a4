//! `updraft dags ...`: read, check, trigger, pause and test DAGs (`dags backfill` is the
//! `backfill` module's). Reading and checking need only the DAG files; trigger, pause and test
//! write to the metadata database.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use updraft_core::ids::{DagRunId, TaskInstanceId};

use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_core::dag::{Command, FolderLoad, load_paths};
use updraft_core::schedule::RunInterval;
use updraft_core::state::{DagRunState, TaskState, test_run_id};
use updraft_core::time::WrittenTime;
use updraft_metadata::{CreateOutcome, NewDagRun, Store};
use updraft_ops as ops;
use updraft_ops::dags::{Trigger, check_conf};
use updraft_scheduler::sync::{SyncOptions, sync_dags};

use crate::args::in_zone;
use crate::config::Config;
use crate::embedded::Embedded;
use crate::lookup::{find_dag, load_folder, stored_dag};
use crate::term::{actor, duration as human_duration, print_table};
use crate::wiring::{open_store, runtime};

/// `dags schema`: the JSON Schema of DAG files.
pub fn schema() -> Result<i32> {
    println!("{}", updraft_core::dag::JSON_SCHEMA.trim_end());
    Ok(0)
}

/// `dags trigger`: a manual run, its id printed; with `wait`, followed to its end.
pub fn trigger(
    config: &Config,
    dag_id: &str,
    conf: Option<serde_json::Value>,
    logical_date: Option<WrittenTime>,
    wait: bool,
) -> Result<i32> {
    runtime()?.block_on(async {
        let store = open_store(config).await?;
        let (row, dag) = stored_dag(config, &store, dag_id).await?;
        let logical_date = logical_date
            .map(|written| in_zone("--logical-date", written, dag.timetable.timezone))
            .transpose()
            .map_err(|message| anyhow!(message))?;
        let request = Trigger { conf, logical_date };
        let run = ops::dags::trigger(&store, &actor(), &row.dag_id, &request, Utc::now())
            .await?;
        println!("{}", run.run_id);
        if row.is_paused {
            eprintln!(
                "note: DAG \"{dag_id}\" is paused: the run waits until `updraft dags unpause {dag_id}`"
            );
        }
        let code = if wait { follow_run(&store, run.id).await? } else { 0 };
        store.close().await;
        Ok(code)
    })
}

/// Follows a run until it ends, printing each task instance as it finishes; 0 when the run
/// succeeded, 1 when it failed.
async fn follow_run(store: &Store, id: DagRunId) -> Result<i32> {
    let mut reported: HashMap<TaskInstanceId, (TaskState, i32)> = HashMap::new();
    loop {
        let run = store
            .get_dag_run(id)
            .await?
            .ok_or_else(|| anyhow!("the run was deleted"))?;
        for ti in store.list_task_instances(id).await? {
            let seen = (ti.state, ti.try_number);
            let worth = ti.state.is_finished() || ti.state == TaskState::UpForRetry;
            if worth && reported.get(&ti.id) != Some(&seen) {
                eprintln!("{} {} (try {})", ti.task_id, ti.state, ti.try_number);
                reported.insert(ti.id, seen);
            }
        }
        if run.state.is_finished() {
            eprintln!(
                "run {} {} in {}",
                run.run_id,
                run.state,
                human_duration(run.start_date, run.end_date)
            );
            return Ok(if run.state == DagRunState::Success {
                0
            } else {
                1
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `dags pause` and `dags unpause`.
pub fn set_paused(config: &Config, dag_id: &str, paused: bool) -> Result<i32> {
    runtime()?.block_on(async {
        let store = open_store(config).await?;
        let (row, _) = stored_dag(config, &store, dag_id).await?;
        ops::dags::set_paused(&store, &actor(), &row.dag_id, paused, Utc::now()).await?;
        println!(
            "DAG {dag_id} is {}",
            if paused { "paused" } else { "unpaused" }
        );
        store.close().await;
        Ok(0)
    })
}

/// `dags test`: one manual run of the DAG, stepped by a scheduler and run by a worker in this
/// process that take on nothing but this run. Exit 0 when it succeeds, 1 when not.
pub fn test(
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
        let load = load_folder(config)?;
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
        // A manual run under a test run id of its own, so that a test never meets another
        // run of the same logical date.
        let run = NewDagRun {
            run_id: test_run_id(now),
            ..NewDagRun::manual(dag.id.clone(), dag.version_hash(), logical_date, conf, now)
        };
        let (CreateOutcome::Created(run) | CreateOutcome::AlreadyExists(run)) =
            store.create_dag_run(&run, now).await?;
        println!("testing {} as run {}", dag.id, run.run_id);

        let embedded = Embedded::for_run(&store, config, &dag, run.id)?;
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
        embedded.stop().await?;

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

/// Prints a note about broken files to stderr, so a listing never hides them.
fn warn_about_errors(load: &FolderLoad) {
    if !load.errors.is_empty() {
        eprintln!(
            "warning: {} DAG file(s) have errors and are not listed; run `updraft dags validate`",
            load.errors.len()
        );
    }
}

/// `dags list`: the DAGs of the DAGs folder.
pub fn list(config: &Config, json: bool) -> Result<i32> {
    let load = load_folder(config)?;
    if json {
        #[derive(Serialize)]
        struct Row<'a> {
            dag_id: &'a str,
            schedule: String,
            description: &'a Option<String>,
            owner: &'a Option<String>,
            tags: &'a [String],
            tasks: usize,
            fileloc: &'a str,
        }
        let rows: Vec<Row> = load
            .dags
            .iter()
            .map(|loaded| Row {
                dag_id: loaded.dag.id.as_str(),
                schedule: loaded.dag.timetable.schedule.to_string(),
                description: &loaded.dag.description,
                owner: &loaded.dag.owner,
                tags: &loaded.dag.tags,
                tasks: loaded.dag.tasks.len(),
                fileloc: &loaded.dag.fileloc,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let rows: Vec<[String; 5]> = load
            .dags
            .iter()
            .map(|loaded| {
                let dag = &loaded.dag;
                [
                    dag.id.to_string(),
                    dag.timetable.schedule.to_string(),
                    dag.tasks.len().to_string(),
                    dag.tags.join(","),
                    dag.fileloc.clone(),
                ]
            })
            .collect();
        print_table(["DAG_ID", "SCHEDULE", "TASKS", "TAGS", "FILE"], &rows);
    }
    warn_about_errors(&load);
    Ok(0)
}

/// `dags show`: one DAG of the DAGs folder, its schedule and tasks.
pub fn show(config: &Config, dag_id: &str, json: bool) -> Result<i32> {
    let dag = find_dag(config, dag_id)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&dag)?);
        return Ok(0);
    }
    let mut out = String::new();
    let line = |out: &mut String, label: &str, value: &str| {
        out.push_str(&format!("{label:<14}{value}\n"));
    };
    line(&mut out, "dag_id", dag.id.as_str());
    if let Some(description) = &dag.description {
        line(&mut out, "description", description);
    }
    if let Some(owner) = &dag.owner {
        line(&mut out, "owner", owner);
    }
    if !dag.tags.is_empty() {
        line(&mut out, "tags", &dag.tags.join(", "));
    }
    line(&mut out, "file", &dag.fileloc);
    line(&mut out, "schedule", &dag.timetable.describe());
    let timetable = &dag.timetable;
    if let Some(start) = timetable.start_date {
        line(&mut out, "start_date", &start.to_rfc3339());
    }
    if let Some(end) = timetable.end_date {
        line(&mut out, "end_date", &end.to_rfc3339());
    }
    line(&mut out, "catchup", &timetable.catchup.to_string());
    line(
        &mut out,
        "limits",
        &format!(
            "max_active_runs {}, max_active_tasks {}",
            dag.max_active_runs, dag.max_active_tasks
        ),
    );
    if let Some(timeout) = dag.timeout {
        line(
            &mut out,
            "timeout",
            &humantime::format_duration(timeout).to_string(),
        );
    }
    for (name, param) in &dag.params {
        let default = param
            .default
            .as_ref()
            .map(|d| format!(" = {d}"))
            .unwrap_or_default();
        line(
            &mut out,
            "param",
            &format!("{name}: {}{default}", param.kind.as_str()),
        );
    }
    out.push('\n');
    print!("{out}");
    let rows: Vec<[String; 5]> = dag
        .tasks
        .values()
        .map(|task| {
            let command = match &task.command {
                Command::Run(script) => match script.trim_end().split_once('\n') {
                    Some((first, _)) => format!("{first} ..."),
                    None => script.clone(),
                },
                Command::Exec(argv) => format!("exec {argv:?}"),
            };
            let depends_on: Vec<&str> = task.depends_on.iter().map(|d| d.as_str()).collect();
            [
                task.id.to_string(),
                depends_on.join(","),
                task.trigger_rule.to_string(),
                task.retries.to_string(),
                command,
            ]
        })
        .collect();
    print_table(
        ["TASK", "DEPENDS_ON", "TRIGGER_RULE", "RETRIES", "COMMAND"],
        &rows,
    );
    Ok(0)
}

/// `dags validate`: every problem of the DAG files at `paths` (the DAGs folder when none).
pub fn validate(config: &Config, paths: Vec<PathBuf>) -> Result<i32> {
    let paths = if paths.is_empty() {
        vec![config.dags_folder.clone()]
    } else {
        paths
    };
    let load = load_paths(&paths, &config.load);
    let problems: usize = load.errors.iter().map(|e| e.diagnostics.len()).sum();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for error in &load.errors {
        writeln!(out, "{error}")?;
    }
    if problems == 0 {
        eprintln!("{} DAG file(s) valid", load.dags.len());
        Ok(0)
    } else {
        eprintln!(
            "{problems} problem(s) in {} file(s); {} DAG file(s) valid",
            load.errors.len(),
            load.dags.len()
        );
        Ok(1)
    }
}

/// `dags next-runs`: the runs due at `now` (default: now) and the next `count` after them.
pub fn next_runs(
    config: &Config,
    dag_id: &str,
    now: Option<WrittenTime>,
    count: usize,
    json: bool,
) -> Result<i32> {
    let dag = find_dag(config, dag_id)?;
    let now = match now {
        Some(written) => {
            in_zone("--now", written, dag.timetable.timezone).map_err(|message| anyhow!(message))?
        }
        None => Utc::now(),
    };
    let due = dag.timetable.due_runs(now);
    let upcoming = dag.timetable.upcoming(due.last(), now, count);

    #[derive(Serialize)]
    struct Row {
        logical_date: String,
        data_interval_start: String,
        data_interval_end: String,
        run_after: String,
        due: bool,
    }
    let rfc3339 = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let row = |run: &RunInterval, due: bool| Row {
        logical_date: rfc3339(run.logical_date),
        data_interval_start: rfc3339(run.data_interval_start),
        data_interval_end: rfc3339(run.data_interval_end),
        run_after: rfc3339(run.run_after),
        due,
    };
    let rows: Vec<Row> = due
        .iter()
        .map(|run| row(run, true))
        .chain(upcoming.iter().map(|run| row(run, false)))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!("{}  (at {})", dag.timetable.describe(), rfc3339(now));
    let table: Vec<[String; 5]> = rows
        .into_iter()
        .map(|r| {
            [
                r.logical_date,
                r.data_interval_start,
                r.data_interval_end,
                r.run_after,
                if r.due { "due" } else { "" }.to_owned(),
            ]
        })
        .collect();
    print_table(
        [
            "LOGICAL_DATE",
            "INTERVAL_START",
            "INTERVAL_END",
            "RUN_AFTER",
            "DUE",
        ],
        &table,
    );
    Ok(0)
}
