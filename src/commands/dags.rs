//! `updraft dags ...`: commands that read DAG files. None of them needs a database.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use updraft_core::dag::{Command, Dag, FolderLoad, load_paths};
use updraft_core::schedule::RunInterval;
use updraft_core::suggest::did_you_mean;

use crate::cli::DagsCommand;
use crate::config::Config;

pub fn run(config: &Config, command: DagsCommand) -> Result<i32> {
    match command {
        DagsCommand::List { json } => list(config, json),
        DagsCommand::Show { dag_id, json } => show(config, &dag_id, json),
        DagsCommand::Validate { paths } => validate(config, paths),
        DagsCommand::Schema => {
            println!("{}", updraft_core::dag::JSON_SCHEMA.trim_end());
            Ok(0)
        }
        DagsCommand::NextRuns {
            dag_id,
            now,
            count,
            json,
        } => next_runs(config, &dag_id, now.as_deref(), count, json),
    }
}

fn load_folder(config: &Config) -> Result<FolderLoad> {
    if !config.dags_folder.is_dir() {
        bail!(
            "the DAGs folder {} does not exist: pass --dags-folder or set UPDRAFT_DAGS_FOLDER",
            config.dags_folder.display()
        );
    }
    Ok(load_paths(
        std::slice::from_ref(&config.dags_folder),
        &config.load,
    ))
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

fn list(config: &Config, json: bool) -> Result<i32> {
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

fn find_dag(config: &Config, dag_id: &str) -> Result<Dag> {
    let load = load_folder(config)?;
    if let Some(loaded) = load
        .dags
        .iter()
        .find(|loaded| loaded.dag.id.as_str() == dag_id)
    {
        return Ok(loaded.dag.clone());
    }
    let hint = did_you_mean(dag_id, load.dags.iter().map(|l| l.dag.id.as_str()));
    let broken = if load.errors.is_empty() {
        String::new()
    } else {
        format!(
            " ({} file(s) there have errors: run `updraft dags validate`)",
            load.errors.len()
        )
    };
    Err(anyhow!(
        "no DAG \"{dag_id}\" in {}{hint}{broken}",
        config.dags_folder.display()
    ))
}

fn show(config: &Config, dag_id: &str, json: bool) -> Result<i32> {
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

fn validate(config: &Config, paths: Vec<PathBuf>) -> Result<i32> {
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

/// `--now` as RFC 3339, or a date meaning midnight UTC.
fn parse_now(text: &str) -> Result<DateTime<Utc>> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(instant.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc());
    }
    bail!(
        "--now: bad time \"{text}\"; write RFC 3339 (2024-03-01T12:00:00Z) or a date (2024-03-01)"
    )
}

fn next_runs(
    config: &Config,
    dag_id: &str,
    now: Option<&str>,
    count: usize,
    json: bool,
) -> Result<i32> {
    let now = match now {
        Some(text) => parse_now(text)?,
        None => Utc::now(),
    };
    let dag = find_dag(config, dag_id)?;
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

/// Left-aligned columns two spaces apart; the last column is not padded.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let format_row = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        line.trim_end().to_owned()
    };
    println!("{}", format_row(header.to_vec()));
    for row in rows {
        println!("{}", format_row(row.iter().map(String::as_str).collect()));
    }
}
