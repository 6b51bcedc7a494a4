//! `updraft runs ...`: read a DAG's runs and their task instances from the metadata database.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_metadata::{DagRun, Store, TaskInstance};

use crate::cli::RunsCommand;
use crate::config::Config;
use crate::lookup::{find_dag_row, find_run};
use crate::term::usage_error;
use crate::term::{duration as human_duration, print_table, rfc3339};
use crate::wiring::{open_store, runtime};

/// Runs `updraft runs ...` and returns the exit code.
pub fn run(config: &Config, command: RunsCommand) -> Result<i32> {
    runtime()?.block_on(async {
        let store = open_store(config).await?;
        let code = match command {
            RunsCommand::List {
                dag_id,
                limit,
                json,
            } => list(&store, &dag_id, limit, json).await,
            RunsCommand::Show {
                dag_id,
                run_id,
                json,
            } => show(&store, &dag_id, &run_id, json).await,
        };
        store.close().await;
        code
    })
}

/// Seconds from `start` to `end`, to the millisecond; `None` until both are known.
fn duration_seconds(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Option<f64> {
    Some((end? - start?).num_milliseconds() as f64 / 1000.0)
}

fn optional_time(time: Option<DateTime<Utc>>) -> String {
    time.map(rfc3339).unwrap_or_default()
}

/// A run in `--json` output.
#[derive(Serialize)]
struct RunJson<'a> {
    run_id: &'a str,
    run_type: &'static str,
    state: &'static str,
    logical_date: String,
    data_interval_start: String,
    data_interval_end: String,
    start_date: Option<String>,
    end_date: Option<String>,
    /// `null` while the run has not ended.
    duration_seconds: Option<f64>,
    /// When it missed its DAG's deadline; `null` if it has not.
    deadline_missed_at: Option<String>,
}

impl<'a> RunJson<'a> {
    fn new(run: &'a DagRun) -> Self {
        RunJson {
            run_id: &run.run_id,
            run_type: run.run_type.as_str(),
            state: run.state.as_str(),
            logical_date: rfc3339(run.logical_date),
            data_interval_start: rfc3339(run.data_interval_start),
            data_interval_end: rfc3339(run.data_interval_end),
            start_date: run.start_date.map(rfc3339),
            end_date: run.end_date.map(rfc3339),
            duration_seconds: duration_seconds(run.start_date, run.end_date),
            deadline_missed_at: run.deadline_missed_at.map(rfc3339),
        }
    }
}

async fn list(store: &Store, dag_id: &str, limit: i64, json: bool) -> Result<i32> {
    if limit < 1 {
        return Ok(usage_error(format!(
            "--limit must be 1 or more, not {limit}"
        )));
    }
    let dag = find_dag_row(store, dag_id).await?;
    let runs = store.list_dag_runs(&dag.dag_id, None, limit, 0).await?;
    if json {
        let rows: Vec<RunJson> = runs.iter().map(RunJson::new).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    if runs.is_empty() {
        println!("DAG \"{}\" has no runs yet", dag.dag_id);
        return Ok(0);
    }
    let rows: Vec<[String; 7]> = runs
        .iter()
        .map(|run| {
            [
                run.run_id.clone(),
                run.run_type.to_string(),
                run.state.to_string(),
                rfc3339(run.logical_date),
                optional_time(run.start_date),
                optional_time(run.end_date),
                human_duration(run.start_date, run.end_date),
            ]
        })
        .collect();
    print_table(
        [
            "RUN_ID",
            "TYPE",
            "STATE",
            "LOGICAL_DATE",
            "STARTED",
            "ENDED",
            "DURATION",
        ],
        &rows,
    );
    Ok(0)
}

/// A task instance in `runs show --json`.
#[derive(Serialize)]
struct TaskInstanceJson<'a> {
    task_id: &'a str,
    state: &'static str,
    try_number: i32,
    max_tries: i32,
    start_date: Option<String>,
    end_date: Option<String>,
    duration_seconds: Option<f64>,
    /// When it missed its task's deadline; `null` if it has not.
    deadline_missed_at: Option<String>,
}

impl<'a> TaskInstanceJson<'a> {
    fn new(ti: &'a TaskInstance) -> Self {
        TaskInstanceJson {
            task_id: ti.task_id.as_str(),
            state: ti.state.as_str(),
            try_number: ti.try_number,
            max_tries: ti.max_tries,
            start_date: ti.start_date.map(rfc3339),
            end_date: ti.end_date.map(rfc3339),
            duration_seconds: duration_seconds(ti.start_date, ti.end_date),
            deadline_missed_at: ti.deadline_missed_at.map(rfc3339),
        }
    }
}

async fn show(store: &Store, dag_id: &str, run_id: &str, json: bool) -> Result<i32> {
    let dag = find_dag_row(store, dag_id).await?;
    let run = find_run(store, &dag, run_id).await?;
    let instances = store.list_task_instances(run.id).await?;
    if json {
        #[derive(Serialize)]
        struct ShowJson<'a> {
            #[serde(flatten)]
            run: RunJson<'a>,
            conf: &'a serde_json::Value,
            task_instances: Vec<TaskInstanceJson<'a>>,
        }
        let show = ShowJson {
            run: RunJson::new(&run),
            conf: &run.conf,
            task_instances: instances.iter().map(TaskInstanceJson::new).collect(),
        };
        println!("{}", serde_json::to_string_pretty(&show)?);
        return Ok(0);
    }
    let fields = [
        ("dag_id", run.dag_id.to_string()),
        ("run_id", run.run_id.clone()),
        ("type", run.run_type.to_string()),
        ("state", run.state.to_string()),
        ("logical_date", rfc3339(run.logical_date)),
        (
            "data_interval",
            format!(
                "{} to {}",
                rfc3339(run.data_interval_start),
                rfc3339(run.data_interval_end)
            ),
        ),
        ("started", optional_time(run.start_date)),
        ("ended", optional_time(run.end_date)),
        ("duration", human_duration(run.start_date, run.end_date)),
        ("conf", run.conf.to_string()),
    ];
    for (label, value) in fields {
        println!("{}", format!("{label:<15}{value}").trim_end());
    }
    println!();
    let rows: Vec<[String; 6]> = instances
        .iter()
        .map(|ti| {
            [
                ti.task_id.to_string(),
                ti.state.to_string(),
                ti.try_number.to_string(),
                optional_time(ti.start_date),
                optional_time(ti.end_date),
                human_duration(ti.start_date, ti.end_date),
            ]
        })
        .collect();
    print_table(
        ["TASK", "STATE", "TRIES", "STARTED", "ENDED", "DURATION"],
        &rows,
    );
    Ok(0)
}
