//! `updraft tasks ...`: test one task, read the logs of its tries, and clear task instances so
//! that the scheduler runs them again (DESIGN §5 "Clearing").

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use chrono::Utc;
use tokio::sync::mpsc;
use updraft_core::ids::{DagRunId, TaskId, TryKey};
use updraft_core::render::{self, Context, RunContext};
use updraft_core::secret::Catalog;
use updraft_core::state::{RunType, TaskState, test_run_id};
use updraft_core::suggest::did_you_mean;
use updraft_core::time::WrittenTime;
use updraft_metadata::Store;
use updraft_ops as ops;
use updraft_ops::clear::Selection;
use updraft_process::{self as process, Ending, Files, Spawn};

use crate::args::in_zone;
use crate::cli::TasksCommand;
use crate::config::{Config, KeyFile};
use crate::lookup::{find_dag, find_dag_row, find_run};
use crate::term::{actor as cli_actor, confirm, print_table, rfc3339, usage_error};
use crate::wiring::{open_store, runtime};

/// Log chunks read per query.
const LOG_PAGE: i64 = 1000;
/// How often `tasks logs --follow` looks for new chunks while the try runs.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Runs `updraft tasks ...` and returns the exit code.
pub fn run(config: &Config, command: TasksCommand) -> Result<i32> {
    match command {
        TasksCommand::Test {
            dag_id,
            task_id,
            logical_date,
        } => test(config, &dag_id, &task_id, logical_date),
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
        } => clear(
            config,
            ClearArgs {
                dag_id,
                tasks,
                downstream,
                upstream,
                from,
                to,
                only_failed,
                yes,
            },
        ),
    }
}

// --- test ---------------------------------------------------------------------------------

/// `tasks test`: renders one task for `logical_date` and runs it, output to the terminal;
/// nothing is recorded. Exit 0 when it succeeds or skips, 1 when not.
fn test(
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
        let hint = did_you_mean(task_id, known.iter().copied());
        bail!("DAG \"{}\" has no task \"{task_id}\"{hint}", dag.id);
    };
    let conf = serde_json::json!({});
    let params = render::effective_params(&dag, &conf)
        .map_err(|problems| anyhow!("params: {}", problems.join("; ")))?;
    let secrets = config.secrets(KeyFile::Read)?;
    runtime()?.block_on(async {
        // The database only when the task's templates read variables or connections.
        let store = match render::reads_catalog(&dag, task) {
            true => Some(open_store(config).await?),
            false => None,
        };
        let catalog = match &store {
            Some(store) => updraft_secrets::catalog(store, &secrets).await?,
            None => Catalog::default(),
        };
        let run = RunContext {
            dag_id: dag.id.clone(),
            run_id: test_run_id(logical_date),
            run_type: RunType::Manual,
            logical_date,
            data_interval_start: logical_date,
            data_interval_end: logical_date,
            params,
            conf,
            catalog: Arc::new(catalog),
        };
        let context = Context {
            run: &run,
            task_id: task.id.clone(),
            try_number: 1,
            outputs: render::Outputs::new(),
        };
        let rendered = render::render_task(&dag, task, &context)?;
        let (rendered, mut masker) = match &store {
            Some(store) => updraft_secrets::resolve_rendered(store, &secrets, rendered).await?,
            None => {
                let masker = updraft_secrets::masker(&secrets, &rendered, std::iter::empty());
                (rendered, masker)
            }
        };
        if let Some(store) = store {
            store.close().await;
        }
        let folder = Path::new(&dag.fileloc)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let spawn = Spawn {
            command: rendered.command.clone(),
            env: rendered.env.clone().into_iter().collect(),
            inherit_env: rendered.inherit_env.clone(),
            working_dir: match &rendered.working_dir {
                Some(dir) => folder.join(dir),
                None => folder,
            },
            timeout: task.timeout,
            kill_grace: task.kill_grace,
            files: Files::Scratch(Arc::default()),
        };
        let (log, mut chunks) = mpsc::channel::<Vec<u8>>(64);
        let output_masker = masker.clone();
        let printer = tokio::spawn(async move {
            while let Some(chunk) = chunks.recv().await {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&masker.push(&chunk));
                let _ = out.flush();
            }
            let _ = std::io::stdout().lock().write_all(&masker.finish());
        });
        let finished = process::run(spawn, log, std::future::pending(), |_| {}).await;
        printer.await?;
        for (name, value) in &finished.outputs {
            println!("output {name}={}", output_masker.mask(value));
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

// --- logs ---------------------------------------------------------------------------------

async fn logs(
    store: &Store,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    try_number: Option<i32>,
    follow: bool,
) -> Result<i32> {
    let dag = find_dag_row(store, dag_id).await?;
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
    let key = TryKey {
        task_instance: ti.id,
        try_number: number,
    };
    match print_log(store, key, follow).await {
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
async fn print_log(store: &Store, key: TryKey, follow: bool) -> Result<()> {
    let mut stdout = std::io::stdout();
    let mut after = 0;
    loop {
        // Read the try's state before its log: a try that had ended by then has written its
        // last chunk, so the read below is the last one needed.
        let running = follow
            && store
                .list_task_tries(key.task_instance)
                .await?
                .iter()
                .any(|t| t.try_number == key.try_number && t.state == TaskState::Running);
        loop {
            let chunks = store.read_task_log(key, after, LOG_PAGE).await?;
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

/// `tasks clear` as given on the command line.
struct ClearArgs {
    dag_id: String,
    tasks: Vec<String>,
    downstream: bool,
    upstream: bool,
    from: Option<WrittenTime>,
    to: Option<WrittenTime>,
    only_failed: bool,
    yes: bool,
}

fn clear(config: &Config, args: ClearArgs) -> Result<i32> {
    let runtime = runtime()?;
    let store = runtime.block_on(open_store(config))?;
    let code = clear_with(&runtime, &store, args);
    runtime.block_on(store.close());
    code
}

/// Selects, lists, confirms (outside the async runtime: it reads the terminal), then clears.
fn clear_with(runtime: &tokio::runtime::Runtime, store: &Store, args: ClearArgs) -> Result<i32> {
    let row = runtime.block_on(find_dag_row(store, &args.dag_id))?;
    let (_, dag) = runtime.block_on(ops::dags::load_dag(store, &row.dag_id))?;
    let tz = dag.timetable.timezone;
    let (from, to) = match (
        args.from
            .map(|from| in_zone("--from", from, tz))
            .transpose(),
        args.to.map(|to| in_zone("--to", to, tz)).transpose(),
    ) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(message), _) | (_, Err(message)) => return Ok(usage_error(message)),
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
    let mut tasks = Vec::new();
    for task in &args.tasks {
        match TaskId::parse(task) {
            Ok(task) => tasks.push(task),
            Err(error) => return Ok(usage_error(format!("bad task id \"{task}\": {error}"))),
        }
    }
    let selection = Selection {
        tasks,
        downstream: args.downstream,
        upstream: args.upstream,
        from,
        to,
        run_id: None,
        only_failed: args.only_failed,
    };
    let instances = match runtime.block_on(ops::clear::select(store, &dag, &selection, None)) {
        Err(ops::Error::NotFound(message) | ops::Error::Invalid(message)) => {
            return Ok(usage_error(message));
        }
        selected => selected?,
    };
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
    if !args.yes {
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
    runtime.block_on(ops::clear::clear(
        store,
        &cli_actor(),
        &dag,
        &selection,
        &instances,
        Utc::now(),
    ))?;
    let runs: HashSet<DagRunId> = instances.iter().map(|ti| ti.dag_run_id).collect();
    println!(
        "cleared {} task instance(s) in {} run(s)",
        instances.len(),
        runs.len()
    );
    Ok(0)
}
