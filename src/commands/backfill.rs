//! `updraft dags backfill` and `updraft backfills ...`: run a DAG over a range of past dates,
//! and follow, pause, resume or cancel such a backfill.
//!
//! What a backfill does is decided by `updraft_scheduler::backfill` (pure); this module reads
//! what it needs, prints the plan, asks, writes the backfill in one transaction
//! (`Store::create_backfill`) and follows it. The runs belong to the scheduler: a closed
//! terminal or a Ctrl-C only stops the following. When no scheduler is alive, this process
//! runs a scheduler and a worker limited to the backfill until it ends.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use updraft_core::dag::Dag;
use updraft_core::ids::DagId;
use updraft_core::state::{BackfillState, DagRunState};
use updraft_executor::name::Name;
use updraft_executor::worker::Worker;
use updraft_metadata::{
    Backfill, BackfillCreated, BackfillProgress, DagRow, DagRun, NewBackfill, Rerun, Store,
};
use updraft_scheduler::backfill::{
    self as plan, Action, BackfillError, BackfillOptions, Counts, Decision, ExistingRun,
    MAX_RUNS_WITHOUT_YES, Reprocess,
};
use updraft_scheduler::service::Scheduler;
use updraft_webserver::backfill::{
    BackfillPlan, BackfillRequest, BackfillStarted, Backfills, BoxFuture, PlannedInterval,
};
use updraft_webserver::{AppError, actions};

use super::dags::{actor, stored_dag};
use super::local_run::{check_params, parse_conf};
use super::serve::{hostname, scheduler_settings, stopped, worker_settings};
use super::tasks::usage_error;
use super::{human_duration, open_store, print_table, rfc3339, runtime};
use crate::cli::{BackfillArgs, BackfillsCommand, SchedulerArgs};
use crate::config::Config;

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
    let conf = match parse_conf(args.conf.as_deref()) {
        Ok(conf) => conf,
        Err(error) => return Ok(usage_error(error)),
    };
    let runtime = runtime()?;
    let store = runtime.block_on(open_store(config))?;
    let code = backfill_with(&runtime, &store, config, &args, conf);
    runtime.block_on(store.close());
    code
}

/// Looks up, plans, prints, confirms (outside the async runtime: it reads the terminal),
/// creates and follows.
fn backfill_with(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    config: &Config,
    args: &BackfillArgs,
    conf: serde_json::Value,
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
        from: ("--from", &args.from),
        to: ("--to", &args.to),
        reprocess: args.reprocess,
        max_active_runs: args.max_active_runs,
        run_backwards: args.run_backwards,
        conf,
        limit: (!args.yes).then_some(MAX_RUNS_WITHOUT_YES),
    };
    let planned = match runtime.block_on(plan(store, &dag, ask, Utc::now()))? {
        Ok(planned) => planned,
        Err(refusal) => return Ok(usage_error(refusal)),
    };
    let (decisions, counts) = (&planned.decisions, planned.counts);

    println!(
        "Backfill of DAG {}: {} interval(s) from {} to {} ({})",
        dag.id,
        decisions.len(),
        plan::local(planned.first, tz),
        plan::local(planned.last, tz),
        dag.timetable.describe()
    );
    println!(
        "  create {}, re-run {}, skip {}",
        counts.create, counts.rerun, counts.skip
    );
    for warning in &planned.warnings {
        eprintln!("warning: {warning}");
    }
    if row.is_paused {
        eprintln!("note: {}", paused_note(&dag.id));
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

fn paused_note(dag_id: &DagId) -> String {
    format!("DAG \"{dag_id}\" is paused; a backfill is explicit, so its runs run all the same")
}

// --- planning and creating: the one path of the CLI and the web ----------------------------

/// A backfill as asked, before anything is parsed: the CLI's flags, or the web's form or JSON.
pub struct Ask<'a> {
    /// The field's name in messages (`--from`, `from`) and the text given.
    pub from: (&'static str, &'a str),
    pub to: (&'static str, &'a str),
    pub reprocess: Reprocess,
    pub max_active_runs: Option<u32>,
    pub run_backwards: bool,
    /// A JSON object, checked against the DAG's params.
    pub conf: serde_json::Value,
    /// At most this many runs; `None` (the CLI's `--yes`): any number.
    pub limit: Option<usize>,
}

/// A planned backfill: each interval's decision, and what [`create`] writes.
pub struct Planned {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The oldest and newest logical dates of the intervals.
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub warnings: Vec<String>,
    pub decisions: Vec<Decision>,
    pub counts: Counts,
    pub options: BackfillOptions,
}

/// Why a backfill cannot be made as asked: bad input (the CLI exits 2, the web answers 400).
#[derive(Debug)]
pub enum Refusal {
    /// The conf does not fit the DAG's params.
    Params(String),
    Plan(BackfillError),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Params(message) => f.write_str(message),
            Refusal::Plan(error) => error.fmt(f),
        }
    }
}

/// Plans a backfill of `dag`: checks the conf, reads the dates in the DAG's timezone, lists
/// the intervals and decides each against the runs that hold their dates. Changes nothing.
/// The outer error is broken machinery (the database), the inner one bad input.
pub async fn plan(
    store: &Store,
    dag: &Dag,
    ask: Ask<'_>,
    now: DateTime<Utc>,
) -> Result<std::result::Result<Planned, Refusal>> {
    if let Err(error) = check_params(dag, &ask.conf) {
        return Ok(Err(Refusal::Params(format!("{error:#}"))));
    }
    let tz = dag.timetable.timezone;
    let dates = plan::parse_date(ask.from.0, ask.from.1, tz)
        .and_then(|from| Ok((from, plan::parse_date(ask.to.0, ask.to.1, tz)?)));
    let (from, to) = match dates {
        Ok(dates) => dates,
        Err(error) => return Ok(Err(Refusal::Plan(error))),
    };
    let intervals = match plan::intervals(dag, from, to, ask.run_backwards, ask.limit, now) {
        Ok(intervals) => intervals,
        Err(error) => return Ok(Err(Refusal::Plan(error))),
    };
    let (first, last) = intervals.runs.iter().fold((to, from), |(low, high), run| {
        (low.min(run.logical_date), high.max(run.logical_date))
    });
    let existing: Vec<ExistingRun> = store
        .list_dated_runs(&dag.id, first, last)
        .await?
        .iter()
        .map(ExistingRun::from)
        .collect();
    let decisions = plan::decide(&intervals.runs, &existing, ask.reprocess, now);
    Ok(Ok(Planned {
        from,
        to,
        first,
        last,
        warnings: intervals.warnings,
        counts: Counts::of(&decisions),
        decisions,
        options: BackfillOptions {
            reprocess: ask.reprocess,
            max_active_runs: ask.max_active_runs,
            run_backwards: ask.run_backwards,
            conf: ask.conf,
        },
    }))
}

/// Writes a planned backfill: its row, its new runs and its re-runs in one transaction, and
/// the event log row with `created_by` as the actor (`Store::create_backfill`).
pub async fn create(
    store: &Store,
    row: &DagRow,
    dag: &Dag,
    planned: &Planned,
    created_by: String,
    now: DateTime<Utc>,
) -> std::result::Result<BackfillCreated, updraft_metadata::Error> {
    let decisions = &planned.decisions;
    let runs = plan::new_runs(&dag.id, &row.version_hash, decisions, &planned.options.conf);
    let reruns: Vec<Rerun> = decisions
        .iter()
        .filter(|decision| decision.action == Action::Rerun)
        .filter_map(|decision| decision.existing.as_ref())
        .map(|run| Rerun {
            dag_run_id: run.id,
            expected: run.state,
        })
        .collect();
    let retries: Vec<_> = dag
        .tasks
        .values()
        .map(|task| {
            (
                task.id.clone(),
                i32::try_from(task.retries).unwrap_or(i32::MAX),
            )
        })
        .collect();
    let backfill = NewBackfill {
        dag_id: dag.id.clone(),
        from_date: planned.from,
        to_date: planned.to,
        options: planned.options.to_json(),
        created_by,
    };
    store
        .create_backfill(&backfill, &runs, &reruns, &retries, now)
        .await
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
    let created = create(store, row, dag, planned, actor(), Utc::now()).await?;
    let id = created.backfill.id;
    println!(
        "backfill {id} created: {} new run(s), {} re-run(s)",
        created.created, created.rerun
    );
    for date in &created.taken {
        eprintln!(
            "warning: {} was taken by another run meanwhile: skipped",
            plan::local(*date, tz)
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
            Some(Embedded::start(store, config, dag, id))
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

/// A scheduler and a worker in this process that step and run one backfill's runs only.
struct Embedded {
    stop: watch::Sender<bool>,
    scheduler: tokio::task::JoinHandle<()>,
    worker: tokio::task::JoinHandle<Result<(), updraft_metadata::Error>>,
}

impl Embedded {
    fn start(store: &Store, config: &Config, dag: &Dag, backfill_id: i64) -> Embedded {
        let (stop, stopping) = watch::channel(false);
        let args = SchedulerArgs {
            zombie_threshold: Duration::from_secs(30),
            poll_interval: None,
        };
        let mut settings = scheduler_settings(config, &args);
        settings.only_backfill = Some(backfill_id);
        let host = hostname();
        let scheduler = Scheduler::new(store.clone(), settings, host.clone());
        let scheduler = tokio::spawn(scheduler.run(stopped(stopping.clone())));
        let mut queues: Vec<String> = dag.tasks.values().map(|t| t.queue.clone()).collect();
        queues.sort();
        queues.dedup();
        let worker = worker_settings(
            Name::Given(format!(
                "{host}:backfill:{backfill_id}:{}",
                std::process::id()
            )),
            host,
            queues,
            16,
        );
        let worker = tokio::spawn(Worker::new(store.clone(), worker).run(stopped(stopping)));
        Embedded {
            stop,
            scheduler,
            worker,
        }
    }

    /// Stops both; the worker lets its running tries finish.
    async fn stop(self) -> Result<()> {
        self.stop.send_replace(true);
        self.scheduler.await?;
        self.worker.await??;
        Ok(())
    }
}

/// Follows backfill `id` until it ends: a progress bar on a terminal, else one line per
/// finished run. Returns the backfill as it ended, or `None` when Ctrl-C (or SIGTERM)
/// detached.
async fn follow(
    store: &Store,
    id: i64,
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
    let mut reported: HashMap<i64, DagRunState> = HashMap::new();
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
                plan::local(decision.interval.logical_date, tz),
                plan::local(decision.interval.data_interval_end, tz),
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
            plan::local(decision.interval.logical_date, tz),
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
    id: i64,
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
async fn find(store: &Store, id: i64) -> Result<std::result::Result<Backfill, i32>> {
    Ok(match store.get_backfill(id).await? {
        Some(backfill) => Ok(backfill),
        None => Err(usage_error(format!(
            "no backfill {id}; see them with `updraft backfills list`"
        ))),
    })
}

async fn show(store: &Store, id: i64, json: bool) -> Result<i32> {
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
async fn change(store: &Store, id: i64, new: BackfillState) -> Result<i32> {
    let backfill = match find(store, id).await? {
        Ok(backfill) => backfill,
        Err(code) => return Ok(code),
    };
    let verb = match new {
        BackfillState::Paused => "paused",
        BackfillState::Running => "resumed",
        _ => "cancelled",
    };
    if !backfill.state.can_move_to(new) {
        let allowed = match new {
            BackfillState::Paused => "only a running backfill can be paused",
            BackfillState::Running => "only a paused backfill can be resumed",
            _ => "only a running or paused backfill can be cancelled",
        };
        eprintln!("error: backfill {id} is {}: {allowed}", backfill.state);
        return Ok(1);
    }
    let before = store.backfill_progress(id).await?;
    let moved = store
        .set_backfill_state(id, backfill.state, new, &actor(), Utc::now())
        .await?;
    if !moved.moved {
        eprintln!(
            "error: backfill {id} changed meanwhile (it was {}); see `updraft backfills show {id}`",
            backfill.state
        );
        return Ok(1);
    }
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

// --- the web's backfills ---------------------------------------------------------------------

/// The web server's [`Backfills`]: the same [`plan`] and [`create`] as `updraft dags
/// backfill`, over DAGs already in the database (the web server reads no DAG files), never
/// more than 10,000 runs (the CLI's `--yes` has no counterpart on the web).
pub struct WebBackfills;

/// The implementation `router` and `serve` take.
pub fn web_backfills() -> Arc<dyn Backfills> {
    Arc::new(WebBackfills)
}

impl WebBackfills {
    async fn planned(
        store: &Store,
        dag_id: &DagId,
        request: &BackfillRequest,
        now: DateTime<Utc>,
    ) -> std::result::Result<(DagRow, Dag, Planned), AppError> {
        let (row, dag) = actions::load_dag(store, dag_id).await?;
        let reprocess = match request.reprocess.as_deref() {
            None => Reprocess::None,
            Some(text) => text
                .parse::<Reprocess>()
                .map_err(|error| AppError::BadRequest(format!("reprocess: {error}")))?,
        };
        if let Some(n) = request.max_active_runs
            && !(1..=10_000).contains(&n)
        {
            return Err(AppError::BadRequest(format!(
                "max_active_runs must be from 1 to 10000, not {n}"
            )));
        }
        let conf = request
            .conf
            .clone()
            .unwrap_or_else(|| serde_json::json!({}));
        if !conf.is_object() {
            return Err(AppError::BadRequest(format!(
                "conf must be a JSON object, found {conf}"
            )));
        }
        let ask = Ask {
            from: ("from", &request.from),
            to: ("to", &request.to),
            reprocess,
            max_active_runs: request.max_active_runs,
            run_backwards: request.run_backwards,
            conf,
            limit: Some(MAX_RUNS_WITHOUT_YES),
        };
        match plan(store, &dag, ask, now).await {
            Ok(Ok(planned)) => Ok((row, dag, planned)),
            Ok(Err(refusal)) => Err(AppError::BadRequest(web_message(&refusal))),
            Err(error) => Err(AppError::Internal(format!("{error:#}"))),
        }
    }
}

/// A refusal in the web's words: its fields are `from` and `to`, and it has no `--yes`.
fn web_message(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Plan(BackfillError::ReversedRange { from, to }) => {
            format!("from {from} is after to {to}")
        }
        Refusal::Plan(BackfillError::TooManyRuns {
            dag_id,
            from,
            to,
            limit,
        }) => format!(
            "the range from {from} to {to} yields more than {limit} runs of DAG \"{dag_id}\"; \
             narrow it, or use `updraft dags backfill {dag_id} --yes` for more"
        ),
        Refusal::Plan(BackfillError::BackwardsDependsOnPast { dag_id, tasks }) => format!(
            "DAG \"{dag_id}\" has tasks with depends_on_past ({tasks}): run backwards, each run \
             would wait for an earlier one that has not run; leave out run_backwards"
        ),
        other => other.to_string(),
    }
}

/// The plan as the web shows it.
fn plan_view(row: &DagRow, dag: &Dag, planned: &Planned) -> BackfillPlan {
    let mut warnings = planned.warnings.clone();
    if row.is_paused {
        warnings.push(paused_note(&dag.id));
    }
    BackfillPlan {
        dag_id: dag.id.clone(),
        from: planned.from,
        to: planned.to,
        timezone: dag.timetable.timezone.name().to_owned(),
        schedule: dag.timetable.describe(),
        create: planned.counts.create,
        rerun: planned.counts.rerun,
        skip: planned.counts.skip,
        warnings,
        intervals: planned
            .decisions
            .iter()
            .map(|decision| PlannedInterval {
                logical_date: decision.interval.logical_date,
                data_interval_start: decision.interval.data_interval_start,
                data_interval_end: decision.interval.data_interval_end,
                action: decision.action.as_str().to_owned(),
                reason: decision.reason.clone(),
                run_id: decision.existing.as_ref().map(|run| run.run_id.clone()),
            })
            .collect(),
    }
}

impl Backfills for WebBackfills {
    fn plan<'a>(
        &'a self,
        store: &'a Store,
        dag_id: &'a DagId,
        request: &'a BackfillRequest,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, std::result::Result<BackfillPlan, AppError>> {
        Box::pin(async move {
            let (row, dag, planned) = WebBackfills::planned(store, dag_id, request, now).await?;
            Ok(plan_view(&row, &dag, &planned))
        })
    }

    fn start<'a>(
        &'a self,
        store: &'a Store,
        dag_id: &'a DagId,
        request: &'a BackfillRequest,
        created_by: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, std::result::Result<BackfillStarted, AppError>> {
        Box::pin(async move {
            let (row, dag, planned) = WebBackfills::planned(store, dag_id, request, now).await?;
            if planned.counts.runs() == 0 {
                return Err(AppError::Conflict(format!(
                    "nothing to backfill: every one of the {} interval(s) is skipped (see the \
                     dry run for why)",
                    planned.decisions.len()
                )));
            }
            let created = create(store, &row, &dag, &planned, created_by.to_owned(), now).await?;
            Ok(BackfillStarted {
                backfill: created.backfill,
                created: created.created,
                rerun: created.rerun,
                taken: created.taken,
                plan: plan_view(&row, &dag, &planned),
            })
        })
    }
}

#[cfg(test)]
#[path = "backfill_web_tests.rs"]
mod web_tests;
