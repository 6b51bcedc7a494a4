//! `updraft tasks ...`: test one task, read the logs of its tries, and clear task instances so
//! that the scheduler runs them again (DESIGN §5 "Clearing").

use std::collections::{BTreeSet, HashSet};
use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, Utc};
use serde_json::json;
use updraft_core::dag::Dag;
use updraft_core::state::TaskState;
use updraft_core::suggest::did_you_mean;
use updraft_metadata::{NewEvent, Store, TaskInstance};

use super::runs::{find_dag, find_run};
use super::{open_store, parse_time, print_table, rfc3339, runtime};
use crate::cli::TasksCommand;
use crate::config::Config;

/// Log chunks read per query.
const LOG_PAGE: i64 = 1000;
/// How often `tasks logs --follow` looks for new chunks while the try runs.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Runs read per query while selecting what to clear.
const RUN_PAGE: i64 = 500;

/// Runs `updraft tasks ...` and returns the exit code.
pub fn run(config: &Config, command: TasksCommand) -> Result<i32> {
    match command {
        TasksCommand::Test {
            dag_id,
            task_id,
            logical_date,
        } => super::local_run::test_task(config, &dag_id, &task_id, logical_date.as_deref()),
        TasksCommand::Logs {
            dag_id,
            run_id,
            task_id,
            try_number,
            follow,
        } => runtime()?.block_on(async {
            let store = open_store(config).await?;
            let code = logs(&store, &dag_id, &run_id, &task_id, try_number, follow).await;
            store.close().await;
            code
        }),
        TasksCommand::Clear {
            dag_id,
            tasks,
            downstream,
            upstream,
            from,
            to,
            only_failed,
            yes,
        } => {
            let from = match from.map(|text| parse_time("--from", &text)).transpose() {
                Ok(from) => from,
                Err(error) => return Ok(usage_error(error)),
            };
            let to = match to.map(|text| parse_time("--to", &text)).transpose() {
                Ok(to) => to,
                Err(error) => return Ok(usage_error(error)),
            };
            if let (Some(from), Some(to)) = (from, to)
                && from > to
            {
                return Ok(usage_error(format!(
                    "--from {} is after --to {}",
                    rfc3339(from),
                    rfc3339(to)
                )));
            }
            let request = ClearRequest {
                dag_id,
                tasks,
                downstream,
                upstream,
                from,
                to,
                only_failed,
                yes,
            };
            clear(config, &request)
        }
    }
}

/// Prints `error: message` for a command line that cannot be right, and returns exit code 2
/// (clap's code for the same kind of mistake).
pub(super) fn usage_error(message: impl Display) -> i32 {
    eprintln!("error: {message}");
    2
}

// --- logs ---------------------------------------------------------------------------------

async fn logs(
    store: &Store,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    try_number: Option<i32>,
    follow: bool,
) -> Result<i32> {
    let dag = find_dag(store, dag_id).await?;
    let run = find_run(store, &dag, run_id).await?;
    let instances = store.list_task_instances(run.id).await?;
    let Some(ti) = instances.iter().find(|ti| ti.task_id.as_str() == task_id) else {
        let hint = did_you_mean(task_id, instances.iter().map(|ti| ti.task_id.as_str()));
        return Err(anyhow!(
            "run \"{run_id}\" of DAG \"{dag_id}\" has no task \"{task_id}\"{hint}"
        ));
    };
    let tries = store.list_task_tries(ti.id).await?;
    if tries.is_empty() {
        return Err(anyhow!(
            "task \"{task_id}\" of run \"{run_id}\" has not run yet (state: {})",
            ti.state
        ));
    }
    let number = try_number.unwrap_or(ti.try_number);
    if !tries.iter().any(|attempt| attempt.try_number == number) {
        let known: Vec<String> = tries.iter().map(|t| t.try_number.to_string()).collect();
        return Err(anyhow!(
            "task \"{task_id}\" of run \"{run_id}\" has no try {number}; its tries: {}",
            known.join(", ")
        ));
    }
    match print_log(store, ti.id, number, follow).await {
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            // The reader (e.g. `head`) has seen enough.
            Ok(0)
        }
        Err(error) => Err(error),
        Ok(()) => Ok(0),
    }
}

/// Writes the log of a try to stdout as it was captured; with `follow`, keeps writing new
/// chunks until the try is no longer running.
async fn print_log(
    store: &Store,
    task_instance_id: i64,
    try_number: i32,
    follow: bool,
) -> Result<()> {
    let mut stdout = std::io::stdout();
    let mut after = 0;
    loop {
        // Read the try's state before its log: a try that had ended by then has written its
        // last chunk, so the read below is the last one needed.
        let running = follow
            && store
                .list_task_tries(task_instance_id)
                .await?
                .iter()
                .any(|t| t.try_number == try_number && t.state == TaskState::Running);
        loop {
            let chunks = store
                .read_task_log(task_instance_id, try_number, after, LOG_PAGE)
                .await?;
            for chunk in &chunks {
                stdout.write_all(&chunk.data)?;
                after = chunk.seq;
            }
            stdout.flush()?;
            if (chunks.len() as i64) < LOG_PAGE {
                break;
            }
        }
        if !running {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

// --- clear --------------------------------------------------------------------------------

/// `tasks clear` as given on the command line, its times parsed.
struct ClearRequest {
    dag_id: String,
    tasks: Vec<String>,
    downstream: bool,
    upstream: bool,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    only_failed: bool,
    yes: bool,
}

fn clear(config: &Config, request: &ClearRequest) -> Result<i32> {
    let runtime = runtime()?;
    let store = runtime.block_on(open_store(config))?;
    let code = clear_with(&runtime, &store, request);
    runtime.block_on(store.close());
    code
}

/// Selects, lists, confirms (outside the async runtime: it reads the terminal), then clears.
fn clear_with(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    request: &ClearRequest,
) -> Result<i32> {
    let dag = runtime.block_on(current_dag(store, &request.dag_id))?;
    let tasks = match tasks_to_clear(&dag, &request.tasks, request.downstream, request.upstream) {
        Ok(tasks) => tasks,
        Err(message) => return Ok(usage_error(message)),
    };
    let instances = runtime.block_on(select_instances(store, &dag, &tasks, request))?;
    if instances.is_empty() {
        println!("nothing to clear");
        return Ok(0);
    }
    let rows: Vec<[String; 3]> = instances
        .iter()
        .map(|ti| {
            [
                ti.run_id.clone(),
                ti.task_id.to_string(),
                ti.state.to_string(),
            ]
        })
        .collect();
    print_table(["RUN_ID", "TASK", "STATE"], &rows);
    if !request.yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "error: not clearing {} task instance(s) without confirmation: stdin is not a \
                 terminal; pass --yes",
                instances.len()
            );
            return Ok(1);
        }
        if !confirm(&format!("Clear {} task instance(s)?", instances.len()))? {
            eprintln!("cancelled: nothing was cleared");
            return Ok(1);
        }
    }
    runtime.block_on(apply_clear(store, &dag, &instances))?;
    let runs: HashSet<i64> = instances.iter().map(|ti| ti.dag_run_id).collect();
    println!(
        "cleared {} task instance(s) in {} run(s)",
        instances.len(),
        runs.len()
    );
    Ok(0)
}

/// The DAG as its current version defines it: the graph clearing follows.
async fn current_dag(store: &Store, dag_id: &str) -> Result<Dag> {
    let row = find_dag(store, dag_id).await?;
    let version = store
        .get_dag_version(&row.dag_id, &row.version_hash)
        .await?
        .ok_or_else(|| {
            anyhow!(
                "DAG \"{dag_id}\" names version {} that is not stored",
                row.version_hash
            )
        })?;
    serde_json::from_value(version.serialized).with_context(|| {
        format!(
            "reading the stored version {} of DAG \"{dag_id}\"",
            row.version_hash
        )
    })
}

/// The ids of the tasks to clear: `tasks` (every task of the DAG when empty) with, as asked,
/// every task downstream and upstream of them. An unknown task is an error with a suggestion.
fn tasks_to_clear(
    dag: &Dag,
    tasks: &[String],
    downstream: bool,
    upstream: bool,
) -> Result<BTreeSet<String>, String> {
    if tasks.is_empty() {
        return Ok(dag.tasks.keys().map(|id| id.to_string()).collect());
    }
    let mut selected = BTreeSet::new();
    for task_id in tasks {
        if dag.task(task_id).is_none() {
            let hint = did_you_mean(task_id, dag.tasks.keys().map(|id| id.as_str()));
            return Err(format!(
                "DAG \"{}\" has no task \"{task_id}\"{hint}",
                dag.id
            ));
        }
        selected.insert(task_id.clone());
        let mut related = Vec::new();
        if downstream {
            related.extend(dag.downstream(task_id));
        }
        if upstream {
            related.extend(dag.upstream(task_id));
        }
        selected.extend(related.into_iter().map(|task| task.id.to_string()));
    }
    Ok(selected)
}

/// The task instances of `tasks` in the DAG's runs within `[from, to]` (by logical date),
/// newest run first; with `only_failed`, only those that failed or were upstream_failed.
async fn select_instances(
    store: &Store,
    dag: &Dag,
    tasks: &BTreeSet<String>,
    request: &ClearRequest,
) -> Result<Vec<TaskInstance>> {
    let mut selected = Vec::new();
    let mut offset = 0;
    loop {
        let runs = store.list_dag_runs(&dag.id, None, RUN_PAGE, offset).await?;
        offset += RUN_PAGE;
        // Newest first: once a run is before `from`, so are all the others.
        let past_from = runs
            .last()
            .is_some_and(|run| request.from.is_some_and(|from| run.logical_date < from));
        let in_range: Vec<i64> = runs
            .iter()
            .filter(|run| request.from.is_none_or(|from| run.logical_date >= from))
            .filter(|run| request.to.is_none_or(|to| run.logical_date <= to))
            .map(|run| run.id)
            .collect();
        let mut instances = store.list_task_instances_of_runs(&in_range).await?;
        // Keep the runs' order (newest first), not the ids' order.
        instances.sort_by_key(|ti| in_range.iter().position(|id| *id == ti.dag_run_id));
        selected.extend(instances.into_iter().filter(|ti| {
            tasks.contains(ti.task_id.as_str())
                && (!request.only_failed
                    || matches!(ti.state, TaskState::Failed | TaskState::UpstreamFailed))
        }));
        if (runs.len() as i64) < RUN_PAGE || past_from {
            return Ok(selected);
        }
    }
}

/// Clears `instances`, each with a fresh budget of its task's retries, and records who did.
async fn apply_clear(store: &Store, dag: &Dag, instances: &[TaskInstance]) -> Result<()> {
    let clears: Vec<(i64, i32)> = instances
        .iter()
        .map(|ti| {
            let retries = dag.task(ti.task_id.as_str()).map_or(0, |task| task.retries);
            (ti.id, i32::try_from(retries).unwrap_or(i32::MAX))
        })
        .collect();
    let now = Utc::now();
    let report = store.clear_task_instances(&clears, now).await?;
    let cleared: Vec<serde_json::Value> = instances
        .iter()
        .map(|ti| json!({"run_id": ti.run_id, "task_id": ti.task_id, "state": ti.state}))
        .collect();
    store
        .append_event(&NewEvent {
            at: now,
            actor: std::env::var("USER")
                .ok()
                .filter(|user| !user.is_empty())
                .unwrap_or_else(|| "cli".to_owned()),
            dag_id: Some(dag.id.clone()),
            run_id: None,
            task_id: None,
            event: "clear".to_owned(),
            details: json!({
                "task_instances": cleared,
                "runs_requeued": report.runs_requeued,
            }),
        })
        .await?;
    Ok(())
}

/// Asks `question [y/N]` on the terminal; only `y` or `yes` is a yes.
fn confirm(question: &str) -> Result<bool> {
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use updraft_core::dag::{LoadOptions, decode};

    use super::*;

    /// extract -> transform -> load, and extract -> audit.
    fn dag() -> Dag {
        let text = "\
tasks:
  extract: {run: x}
  transform: {run: x, depends_on: extract}
  load: {run: x, depends_on: transform}
  audit: {run: x, depends_on: extract}
";
        decode("etl.yaml", text, &LoadOptions::default()).unwrap()
    }

    fn check(tasks: &[&str], downstream: bool, upstream: bool, expected: &[&str]) {
        let tasks: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
        let selected = tasks_to_clear(&dag(), &tasks, downstream, upstream).unwrap();
        assert_eq!(selected.iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn no_task_means_every_task() {
        check(
            &[],
            false,
            false,
            &["audit", "extract", "load", "transform"],
        );
    }

    #[test]
    fn downstream_and_upstream_are_transitive() {
        check(&["transform"], false, false, &["transform"]);
        check(
            &["extract"],
            true,
            false,
            &["audit", "extract", "load", "transform"],
        );
        check(&["load"], false, true, &["extract", "load", "transform"]);
        check(
            &["transform"],
            true,
            true,
            &["extract", "load", "transform"],
        );
        check(
            &["load", "audit"],
            false,
            true,
            &["audit", "extract", "load", "transform"],
        );
    }

    #[test]
    fn an_unknown_task_suggests_the_closest() {
        let tasks = ["lod".to_owned()];
        assert_eq!(
            tasks_to_clear(&dag(), &tasks, false, false).unwrap_err(),
            "DAG \"etl\" has no task \"lod\"; did you mean \"load\"?"
        );
    }
}
