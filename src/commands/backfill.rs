//! `updraft dags backfill` and `updraft backfills ...`: run a DAG over a range of past dates,
//! and follow, pause, resume or cancel such a backfill.
//!
//! What a backfill does is planned and written by `updraft_ops::backfill`; this module prints
//! the plan, asks, and follows the backfill. The runs belong to the scheduler: a closed
//! terminal or a Ctrl-C only stops the following. When no scheduler is alive, this process
//! runs a scheduler and a worker limited to the backfill until it ends.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Result, anyhow};
use chrono::Utc;
use chrono_tz::Tz;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use updraft_core::backfill::{Action, BackfillOptions, Decision, MAX_RUNS_WITHOUT_YES};
use updraft_core::dag::Dag;
use updraft_core::ids::{BackfillId, DagId, DagRunId};
use updraft_core::state::{BackfillState, DagRunState};
use updraft_core::time::local;
use updraft_metadata::{Backfill, BackfillProgress, DagRow, DagRun, Store};
use updraft_ops as ops;
use updraft_ops::backfill::{Ask, Face, Planned};

use crate::cli::{BackfillArgs, BackfillsCommand};
use crate::config::Config;
use crate::embedded::Embedded;
use crate::lookup::stored_dag;
use crate::term::{actor, confirm, duration as human_duration, print_table, rfc3339, usage_error};
use crate::wiring::{open_store, runtime};

/// A scheduler whose last heartbeat is older than this is taken for dead: the command then
/// runs the backfill itself. Schedulers heartbeat every 2 s.
const FRESH_HEARTBEAT: Duration = Duration::from_secs(10);

/// How often the progress is read from the database while following.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);

/// Exit code of a follow interrupted by Ctrl-C (the backfill goes on), as shells report it.
const DETACHED: i32 = 130;

/// Skipped intervals listed before a backfill starts; `--dry-run` lists all.
const SKIPPED_SHOWN: usize = 10;

/// `updraft dags backfill`.
pub fn backfill(config: &Config, args: BackfillArgs) -> Result<i32> {
    let runtime = runtime()?;
    let store = runtime.block_on(open_store(config))?;
    let code = backfill_with(&runtime, &store, config, args);
    runtime.block_on(store.close());
    code
}

/// Looks up, plans, prints, confirms (outside the async runtime: it reads the terminal),
/// creates and follows.
fn backfill_with(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    config: &Config,
    args: BackfillArgs,
) -> Result<i32> {
    let (row, dag) = match runtime.block_on(stored_dag(config, store, &args.dag_id)) {
        Ok(found) => found,
        Err(error) => {
            // A DAG that is neither stored nor in the folder is bad input; anything else
            // (the database) is broken machinery.
            let known = match DagId::parse(&args.dag_id) {
                Ok(id) => runtime.block_on(store.get_dag(&id))?.is_some(),
                Err(_) => false,
            };
            return if known {
                Err(error)
            } else {
                Ok(usage_error(format!("{error:#}")))
            };
        }
    };
    let tz = dag.timetable.timezone;
    let ask = Ask {
        from: args.from.clone(),
        to: args.to.clone(),
        reprocess: args.reprocess,
        max_active_runs: args.max_active_runs,
        run_backwards: args.run_backwards,
        conf: args.conf.clone().unwrap_or_else(|| serde_json::json!({})),
        limit: (!args.yes).then_some(MAX_RUNS_WITHOUT_YES),
        face: Face::Cli,
    };
    let planned = match runtime.block_on(ops::backfill::plan(store, &row, &dag, ask, Utc::now())) {
        Ok(planned) => planned,
        Err(ops::Error::Invalid(message)) => return Ok(usage_error(message)),
        Err(error) => return Err(error.into()),
    };
    let (decisions, counts) = (&planned.decisions, planned.counts);

    println!(
        "Backfill of DAG {}: {} interval(s) from {} to {} ({})",
        dag.id,
        decisions.len(),
        local(planned.first, tz),
        local(planned.last, tz),
        dag.timetable.describe()
    );
    println!(
        "  create {}, re-run {}, skip {}",
        counts.create, counts.rerun, counts.skip
    );
    for warning in &planned.warnings {
        eprintln!("warning: {warning}");
    }
    if args.dry_run {
        print_decisions(decisions, tz);
        println!("dry run: nothing was changed");
        return Ok(0);
    }
    print_skipped(decisions, tz);
    if counts.runs() == 0 {
        println!("nothing to backfill: every interval is skipped");
        return Ok(0);
    }
    if !args.yes && std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        let question = format!(
            "Backfill {} run(s) of DAG {} ({} new, {} re-run)?",
            counts.runs(),
            dag.id,
            counts.create,
            counts.rerun
        );
        if !confirm(&question)? {
            eprintln!("cancelled: nothing was created");
            return Ok(1);
        }
    }
    runtime.block_on(create_and_follow(store, config, &row, &dag, &planned))
}

/// Writes the backfill, then follows it to its end (running it here when no scheduler is
/// alive); returns the exit code.
async fn create_and_follow(
    store: &Store,
    config: &Config,
    row: &DagRow,
    dag: &Dag,
    planned: &Planned,
) -> Result<i32> {
    let tz = dag.timetable.timezone;
    // From here on, Ctrl-C (or SIGTERM) detaches instead of killing: registered before
    // anything is written, so that no signal can come between the write and the following.
    let mut signals = Signals {
        interrupt: signal(SignalKind::interrupt())?,
        terminate: signal(SignalKind::terminate())?,
    };
    let created = ops::backfill::create(store, &actor(), row, dag, planned, Utc::now()).await?;
    let id = created.backfill.id;
    println!(
        "backfill {id} created: {} new run(s), {} re-run(s)",
        created.created, created.rerun
    );
    for date in &created.taken {
        eprintln!(
            "warning: {} was taken by another run meanwhile: skipped",
            local(*date, tz)
        );
    }
    let total = created.created + created.rerun;

    let heartbeat = store.last_scheduler_heartbeat().await?;
    let age = heartbeat.map(|at| (Utc::now() - at).to_std().unwrap_or_default());
    let embedded = match age {
        Some(age) if age < FRESH_HEARTBEAT => {
            println!(
                "the scheduler runs it (last heartbeat {} ago); Ctrl-C stops following, not \
                 the backfill",
                human_duration(heartbeat, Some(Utc::now()))
            );
            None
        }
        _ => {
            let last = match heartbeat {
                Some(at) => format!("last heartbeat {}", rfc3339(at)),
                None => "no heartbeat ever".to_owned(),
            };
            println!(
                "no scheduler is running ({last}): running the backfill in this process with \
                 an embedded scheduler and worker until it ends"
            );
            Some(Embedded::for_backfill(store, config, dag, id)?)
        }
    };
    let outcome = follow(store, id, total, &mut signals, dag.tasks.len()).await;
    if let Some(embedded) = embedded {
        if matches!(outcome, Ok(None)) {
            eprintln!("stopping the embedded scheduler and worker: running tries finish first");
        }
        embedded.stop().await?;
    }
    let outcome = outcome?;
    let Some(backfill) = outcome else {
        println!();
        println!("detached: backfill {id} goes on");
        if heartbeat_is_fresh(store).await? {
            println!("  it runs under the scheduler");
        } else {
            println!(
                "  no scheduler is running: it continues when one starts (`updraft scheduler` \
                 or `updraft standalone`)"
            );
        }
        println!("  follow it:  updraft backfills show {id}");
        println!("  cancel it:  updraft backfills cancel {id}");
        return Ok(DETACHED);
    };
    summarize(store, &backfill).await
}

async fn heartbeat_is_fresh(store: &Store) -> Result<bool> {
    let heartbeat = store.last_scheduler_heartbeat().await?;
    Ok(
        heartbeat
            .is_some_and(|at| (Utc::now() - at).to_std().unwrap_or_default() < FRESH_HEARTBEAT),
    )
}

/// The signals that detach from a backfill being followed.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

/// Follows backfill `id` until it ends: a progress bar on a terminal, else one line per
/// finished run. Returns the backfill as it ended, or `None` when Ctrl-C (or SIGTERM)
/// detached.
async fn follow(
    store: &Store,
    id: BackfillId,
    total_runs: usize,
    signals: &mut Signals,
    tasks_per_run: usize,
) -> Result<Option<Backfill>> {
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        let bar = ProgressBar::new(total_runs as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:20}] {pos}/{len} runs, ETA {eta} · {wide_msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    } else {
        None
    };
    let tasks_total = total_runs * tasks_per_run;
    let mut reported: HashMap<DagRunId, DagRunState> = HashMap::new();
    let mut finished = 0usize;
    loop {
        let backfill = store
            .get_backfill(id)
            .await?
            .ok_or_else(|| anyhow!("backfill {id} was deleted"))?;
        let progress = store.backfill_progress(id).await?;
        let runs = store.list_backfill_runs(id).await?;
        for run in &runs {
            if !run.state.is_finished() {
                reported.remove(&run.id);
                continue;
            }
            if reported.insert(run.id, run.state) == Some(run.state) {
                continue;
            }
            finished += 1;
            if bar.is_none() {
                println!(
                    "run {} {} in {} ({finished}/{total_runs})",
                    run.run_id,
                    run.state,
                    human_duration(run.start_date, run.end_date)
                );
            }
        }
        if let Some(bar) = &bar {
            bar.set_length(progress.runs().max(0) as u64);
            bar.set_position(progress.finished().max(0) as u64);
            bar.set_message(progress_message(&backfill, &progress, tasks_total));
        }
        let unfinished = progress.queued + progress.running;
        let ended = match backfill.state {
            BackfillState::Completed => true,
            BackfillState::Cancelled => unfinished == 0,
            BackfillState::Running | BackfillState::Paused => false,
        };
        if ended {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(Some(backfill));
        }
        tokio::select! {
            _ = signals.interrupt.recv() => {
                if let Some(bar) = bar {
                    bar.abandon();
                }
                return Ok(None);
            }
            _ = signals.terminate.recv() => {
                if let Some(bar) = bar {
                    bar.abandon();
                }
                return Ok(None);
            }
            () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
        }
    }
}

/// The bar's words: runs by state, tasks done, and the backfill's state when not running.
fn progress_message(
    backfill: &Backfill,
    progress: &BackfillProgress,
    tasks_total: usize,
) -> String {
    let mut message = format!(
        "{} done, {} failed, {} running, {} queued · tasks {}/{}",
        progress.success,
        progress.failed,
        progress.running,
        progress.queued,
        progress.tasks_done,
        tasks_total.max(progress.task_instances.max(0) as usize)
    );
    if backfill.state != BackfillState::Running {
        message.push_str(&format!(" · {}", backfill.state));
    }
    message
}

/// The end of a followed backfill: 0 when every run succeeded, 1 (with the failed runs
/// listed) when not.
async fn summarize(store: &Store, backfill: &Backfill) -> Result<i32> {
    let runs = store.list_backfill_runs(backfill.id).await?;
    let failed: Vec<&DagRun> = runs
        .iter()
        .filter(|run| run.state == DagRunState::Failed)
        .collect();
    let succeeded = runs.len() - failed.len();
    let took = human_duration(Some(backfill.created_at), backfill.completed_at);
    let verb = match backfill.state {
        BackfillState::Cancelled => "was cancelled",
        _ => "completed",
    };
    if failed.is_empty() {
        println!(
            "backfill {} {verb} in {took}: {succeeded} run(s) succeeded",
            backfill.id
        );
        return Ok(0);
    }
    println!(
        "backfill {} {verb} in {took}: {succeeded} run(s) succeeded, {} failed:",
        backfill.id,
        failed.len()
    );
    for run in &failed {
        println!("  {} {}", backfill.dag_id, run.run_id);
    }
    println!(
        "see a run with `updraft runs show {} RUN_ID`; re-run the failed ones with \
         `--reprocess failed`",
        backfill.dag_id
    );
    Ok(1)
}

fn print_decisions(decisions: &[Decision], tz: Tz) {
    let rows: Vec<[String; 4]> = decisions
        .iter()
        .map(|decision| {
            [
                local(decision.interval.logical_date, tz),
                local(decision.interval.data_interval_end, tz),
                decision.action.as_str().to_owned(),
                decision.reason.clone(),
            ]
        })
        .collect();
    print_table(["LOGICAL_DATE", "INTERVAL_END", "ACTION", "WHY"], &rows);
}

/// Lists the skipped intervals (the first few): nothing is skipped silently.
fn print_skipped(decisions: &[Decision], tz: Tz) {
    let skipped: Vec<&Decision> = decisions
        .iter()
        .filter(|decision| decision.action == Action::Skip)
        .collect();
    for decision in skipped.iter().take(SKIPPED_SHOWN) {
        println!(
            "  skip {}: {}",
            local(decision.interval.logical_date, tz),
            decision.reason
        );
    }
    if skipped.len() > SKIPPED_SHOWN {
        println!(
            "  ... and {} more skipped (--dry-run lists them all)",
            skipped.len() - SKIPPED_SHOWN
        );
    }
}

// --- updraft backfills ---------------------------------------------------------------------

/// `updraft backfills ...`.
pub fn run(config: &Config, command: BackfillsCommand) -> Result<i32> {
    runtime()?.block_on(async {
        let store = open_store(config).await?;
        let code = match command {
            BackfillsCommand::List { dag, limit, json } => {
                list(&store, dag.as_deref(), limit, json).await
            }
            BackfillsCommand::Show { id, json } => show(&store, id, json).await,
            BackfillsCommand::Pause { id } => change(&store, id, BackfillState::Paused).await,
            BackfillsCommand::Resume { id } => change(&store, id, BackfillState::Running).await,
            BackfillsCommand::Cancel { id } => change(&store, id, BackfillState::Cancelled).await,
        };
        store.close().await;
        code
    })
}

/// A backfill in `--json` output.
#[derive(Serialize)]
struct BackfillJson<'a> {
    id: BackfillId,
    dag_id: &'a str,
    from_date: String,
    to_date: String,
    state: &'static str,
    options: &'a serde_json::Value,
    created_by: &'a str,
    created_at: String,
    completed_at: Option<String>,
    progress: BackfillProgress,
}

impl<'a> BackfillJson<'a> {
    fn new(backfill: &'a Backfill, progress: BackfillProgress) -> Self {
        BackfillJson {
            id: backfill.id,
            dag_id: backfill.dag_id.as_str(),
            from_date: rfc3339(backfill.from_date),
            to_date: rfc3339(backfill.to_date),
            state: backfill.state.as_str(),
            options: &backfill.options,
            created_by: &backfill.created_by,
            created_at: rfc3339(backfill.created_at),
            completed_at: backfill.completed_at.map(rfc3339),
            progress,
        }
    }
}

async fn list(store: &Store, dag: Option<&str>, limit: i64, json: bool) -> Result<i32> {
    if limit < 1 {
        return Ok(usage_error(format!(
            "--limit must be 1 or more, not {limit}"
        )));
    }
    let dag = match dag {
        Some(text) => match DagId::parse(text) {
            Ok(id) => Some(id),
            Err(error) => return Ok(usage_error(format!("bad DAG id \"{text}\": {error}"))),
        },
        None => None,
    };
    let backfills = store.list_backfills(dag.as_ref(), limit).await?;
    let mut progress = Vec::with_capacity(backfills.len());
    for backfill in &backfills {
        progress.push(store.backfill_progress(backfill.id).await?);
    }
    if json {
        let rows: Vec<BackfillJson> = backfills
            .iter()
            .zip(progress)
            .map(|(backfill, progress)| BackfillJson::new(backfill, progress))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    if backfills.is_empty() {
        println!("no backfills yet; create one with `updraft dags backfill DAG --from D --to D`");
        return Ok(0);
    }
    let rows: Vec<[String; 9]> = backfills
        .iter()
        .zip(&progress)
        .map(|(backfill, progress)| {
            [
                backfill.id.to_string(),
                backfill.dag_id.to_string(),
                rfc3339(backfill.from_date),
                rfc3339(backfill.to_date),
                backfill.state.to_string(),
                format!("{}/{}", progress.finished(), progress.runs()),
                progress.failed.to_string(),
                backfill.created_by.clone(),
                rfc3339(backfill.created_at),
            ]
        })
        .collect();
    print_table(
        [
            "ID", "DAG_ID", "FROM", "TO", "STATE", "DONE", "FAILED", "BY", "CREATED",
        ],
        &rows,
    );
    Ok(0)
}

/// The backfill `id`, or an error that says how to list them.
async fn find(store: &Store, id: BackfillId) -> Result<std::result::Result<Backfill, i32>> {
    Ok(match store.get_backfill(id).await? {
        Some(backfill) => Ok(backfill),
        None => Err(usage_error(format!(
            "no backfill {id}; see them with `updraft backfills list`"
        ))),
    })
}

async fn show(store: &Store, id: BackfillId, json: bool) -> Result<i32> {
    let backfill = match find(store, id).await? {
        Ok(backfill) => backfill,
        Err(code) => return Ok(code),
    };
    let progress = store.backfill_progress(id).await?;
    let runs = store.list_backfill_runs(id).await?;
    if json {
        #[derive(Serialize)]
        struct RunJson<'a> {
            run_id: &'a str,
            state: &'static str,
            logical_date: String,
            data_interval_start: String,
            data_interval_end: String,
            start_date: Option<String>,
            end_date: Option<String>,
        }
        #[derive(Serialize)]
        struct ShowJson<'a> {
            #[serde(flatten)]
            backfill: BackfillJson<'a>,
            runs: Vec<RunJson<'a>>,
        }
        let show = ShowJson {
            backfill: BackfillJson::new(&backfill, progress),
            runs: runs
                .iter()
                .map(|run| RunJson {
                    run_id: &run.run_id,
                    state: run.state.as_str(),
                    logical_date: rfc3339(run.logical_date),
                    data_interval_start: rfc3339(run.data_interval_start),
                    data_interval_end: rfc3339(run.data_interval_end),
                    start_date: run.start_date.map(rfc3339),
                    end_date: run.end_date.map(rfc3339),
                })
                .collect(),
        };
        println!("{}", serde_json::to_string_pretty(&show)?);
        return Ok(0);
    }
    let options = BackfillOptions::from_json(&backfill.options);
    let fields = [
        ("backfill", backfill.id.to_string()),
        ("dag_id", backfill.dag_id.to_string()),
        (
            "range",
            format!(
                "{} to {}",
                rfc3339(backfill.from_date),
                rfc3339(backfill.to_date)
            ),
        ),
        ("state", backfill.state.to_string()),
        (
            "options",
            format!(
                "reprocess {}, max_active_runs {}, run_backwards {}, conf {}",
                options.reprocess,
                options
                    .max_active_runs
                    .map_or_else(|| "the DAG's".to_owned(), |n| n.to_string()),
                options.run_backwards,
                options.conf
            ),
        ),
        (
            "created",
            format!(
                "{} by {}",
                rfc3339(backfill.created_at),
                backfill.created_by
            ),
        ),
        (
            "ended",
            backfill.completed_at.map(rfc3339).unwrap_or_default(),
        ),
        (
            "runs",
            format!(
                "{} succeeded, {} failed, {} running, {} queued",
                progress.success, progress.failed, progress.running, progress.queued
            ),
        ),
        (
            "tasks",
            format!(
                "{} of {} started task instances done",
                progress.tasks_done, progress.task_instances
            ),
        ),
    ];
    for (label, value) in fields {
        println!("{}", format!("{label:<11}{value}").trim_end());
    }
    println!();
    let rows: Vec<[String; 4]> = runs
        .iter()
        .map(|run| {
            [
                run.run_id.clone(),
                run.state.to_string(),
                rfc3339(run.logical_date),
                human_duration(run.start_date, run.end_date),
            ]
        })
        .collect();
    print_table(["RUN_ID", "STATE", "LOGICAL_DATE", "DURATION"], &rows);
    Ok(0)
}

/// `pause`, `resume` or `cancel`: moves the backfill from its current state to `new`.
async fn change(store: &Store, id: BackfillId, new: BackfillState) -> Result<i32> {
    if let Err(code) = find(store, id).await? {
        return Ok(code);
    }
    let verb = match new {
        BackfillState::Paused => "paused",
        BackfillState::Running => "resumed",
        _ => "cancelled",
    };
    let before = store.backfill_progress(id).await?;
    let moved = match ops::backfill::set_state(store, &actor(), id, new, Utc::now()).await {
        Ok(moved) => moved,
        Err(ops::Error::Conflict(message) | ops::Error::NotFound(message)) => {
            eprintln!("error: {message}");
            return Ok(1);
        }
        Err(error) => return Err(error.into()),
    };
    match new {
        BackfillState::Paused => println!(
            "backfill {id} {verb}: no more of its runs start ({} running finish); resume it with \
             `updraft backfills resume {id}`",
            before.running
        ),
        BackfillState::Running => println!("backfill {id} {verb}"),
        _ => println!(
            "backfill {id} {verb}: {} queued run(s) failed, {} running run(s) finish",
            moved.runs_failed, before.running
        ),
    }
    Ok(0)
}
