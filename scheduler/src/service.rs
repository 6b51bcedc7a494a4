//! The scheduler loop: the edge where the pure decisions of this crate meet the database.
//!
//! Each tick reads a snapshot, decides, and writes the decisions as compare-and-sets:
//! 1. sync the DAGs folder when any file changed (new, edited, deleted);
//! 2. create the scheduled runs that are due (catch-up within `max_active_runs`);
//! 3. start queued runs within `max_active_runs`, step every running run ([`step_run`]) and
//!    queue the task instances that are ready, with their templates rendered, within pools
//!    and `max_active_tasks`;
//! 4. end the tries of workers that stopped heartbeating (zombies).
//!
//! A tick runs when something wakes the scheduler (a run was created or a try ended, from this
//! process or, on Postgres, any other), when a retry delay or a timeout runs out, and at least
//! every `poll_interval`. A failed tick (say the database restarts) is logged and tried again:
//! the state lives in the database, so nothing is lost and nothing is done twice.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use updraft_core::dag::{Command, Dag, LoadOptions, dag_files, load_paths};
use updraft_core::ids::DagId;
use updraft_core::render::{self, Context, RunContext};
use updraft_core::retry::{AfterFailure, after_failure};
use updraft_core::state::{BackfillState, DagRunState, RunType, TaskState};
use updraft_metadata::{
    CreateOutcome, DagRow, DagRun, Error, NewDagRun, NewEvent, NewTaskInstance, Store,
    TaskInstance, Topic, TryEnd,
};

use crate::backfill::{BackfillOptions, start_order};
use crate::runs::runs_to_create;
use crate::step::{TaskSnapshot, step_run, waiting_on_past};
use crate::sync::{SyncOptions, sync_dags};

/// What the scheduler is told by its configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dags_folder: PathBuf,
    pub load: LoadOptions,
    pub sync: SyncOptions,
    /// The longest wait between two ticks when nothing wakes the scheduler.
    pub poll_interval: Duration,
    /// A running try whose worker has not heartbeaten for this long is a zombie.
    pub zombie_threshold: Duration,
    /// Step only this run: no sync, no new runs, no zombies (`dags test`).
    pub only_run: Option<i64>,
    /// Step only the runs of this backfill: no sync, no new runs, no zombies, no heartbeat
    /// (`dags backfill` when no scheduler is alive).
    pub only_backfill: Option<i64>,
}

impl Settings {
    pub fn new(dags_folder: PathBuf, load: LoadOptions) -> Settings {
        Settings {
            dags_folder,
            load,
            sync: SyncOptions {
                paused_on_creation: false,
            },
            poll_interval: Duration::from_secs(1),
            zombie_threshold: Duration::from_secs(30),
            only_run: None,
            only_backfill: None,
        }
    }
}

/// How often the scheduler records that it is alive, and looks for zombies.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(2);

/// A scheduler: one per process, several may share a Postgres database.
pub struct Scheduler {
    store: Store,
    settings: Settings,
    id: String,
    hostname: String,
    started_at: DateTime<Utc>,
    /// Parsed DAG versions by (dag id, version hash): immutable, so cached for good.
    versions: HashMap<(DagId, String), Arc<Dag>>,
    /// The DAG files as last seen (path, modified, length); `None` before the first sync.
    files: Option<Vec<(PathBuf, Option<SystemTime>, u64)>>,
    /// DAG versions whose schedule has no further run.
    exhausted: HashSet<(DagId, String)>,
    last_housekeeping: Option<DateTime<Utc>>,
    /// Pool names, refreshed at housekeeping: a task naming another pool waits, and the
    /// scheduler says so once per pool.
    pools: HashSet<String>,
    warned_pools: HashSet<String>,
    /// The unfinished backfills, read at the start of each tick: their runs start within the
    /// backfill's own `max_active_runs`, not at all while it is paused.
    backfills: HashMap<i64, ActiveBackfill>,
    /// How long the latest complete tick took: recorded with the heartbeat, for `/metrics`.
    last_loop: Option<Duration>,
}

/// An unfinished backfill as the scheduler needs it.
struct ActiveBackfill {
    state: BackfillState,
    options: BackfillOptions,
}

/// Whose `max_active_runs` a run counts against: its DAG's, or its backfill's (counted apart,
/// so a backfill neither waits for nor holds up the DAG's scheduled runs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot {
    Dag(DagId),
    Backfill(i64),
}

impl Scheduler {
    pub fn new(store: Store, settings: Settings, hostname: String) -> Scheduler {
        let started_at = Utc::now();
        Scheduler {
            id: format!(
                "{hostname}:{}:{}",
                std::process::id(),
                started_at.timestamp_micros()
            ),
            store,
            settings,
            hostname,
            started_at,
            versions: HashMap::new(),
            files: None,
            exhausted: HashSet::new(),
            last_housekeeping: None,
            pools: HashSet::new(),
            warned_pools: HashSet::new(),
            backfills: HashMap::new(),
            last_loop: None,
        }
    }

    /// Runs until `shutdown` completes. Database errors are logged and the tick is tried again
    /// after a pause: a database restart only delays the runs.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut wakeups = self.store.subscribe(Topic::Scheduler);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut failing = false;
        loop {
            let now = Utc::now();
            let began = std::time::Instant::now();
            let wait = match self.tick(now).await {
                Ok(wake_at) => {
                    self.last_loop = Some(began.elapsed());
                    if failing {
                        tracing::info!("the metadata database answers again");
                        failing = false;
                    }
                    let until_wake = wake_at
                        .and_then(|at| (at - Utc::now()).to_std().ok())
                        .unwrap_or(Duration::ZERO);
                    match wake_at {
                        Some(_) => until_wake.min(self.settings.poll_interval),
                        None => self.settings.poll_interval,
                    }
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!("scheduler tick failed, retrying: {error}");
                        failing = true;
                    }
                    self.settings.poll_interval
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                _ = wakeups.wait(wait) => {}
            }
        }
    }

    /// One pass over everything; returns when the next pass is needed at the latest.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, Error> {
        if let Some(only) = self.settings.only_run {
            let run = self.store.get_dag_run(only).await?;
            let runs: Vec<DagRun> = run.into_iter().filter(|r| !r.state.is_finished()).collect();
            return self.step_runs(&runs, &HashSet::new(), now).await;
        }
        if let Some(only) = self.settings.only_backfill {
            self.read_backfills().await?;
            self.backfills.retain(|id, _| *id == only);
            let mut runs = self.store.list_unfinished_runs().await?;
            runs.retain(|run| run.backfill_id == Some(only));
            let wake_at = self.step_runs(&runs, &HashSet::new(), now).await?;
            self.complete_backfills(&runs, now).await?;
            return Ok(wake_at);
        }
        let housekeeping = self
            .last_housekeeping
            .is_none_or(|last| (now - last).to_std().unwrap_or_default() >= HOUSEKEEPING_INTERVAL);
        if housekeeping {
            self.store
                .heartbeat_scheduler(&self.id, &self.hostname, self.started_at, now)
                .await?;
            if let Some(took) = self.last_loop {
                self.store.record_scheduler_loop(&self.id, took).await?;
            }
            self.refresh_pools().await?;
        }
        let changed = self.sync_if_changed(now).await?;
        // Backfills before runs: a backfill and its runs are created together, so every
        // backfill read here has its runs in the list below.
        self.read_backfills().await?;
        let mut runs = self.store.list_unfinished_runs().await?;
        let (mut wake_at, paused) = self.create_scheduled_runs(&mut runs, &changed, now).await?;
        let stepped = self.step_runs(&runs, &paused, now).await?;
        wake_at = earliest(wake_at, stepped);
        self.complete_backfills(&runs, now).await?;
        if housekeeping {
            self.reap_zombies(now).await?;
            self.last_housekeeping = Some(now);
        }
        Ok(wake_at)
    }

    /// Loads and syncs the DAGs folder when its files changed; returns the DAGs created or
    /// changed.
    async fn sync_if_changed(&mut self, now: DateTime<Utc>) -> Result<HashSet<DagId>, Error> {
        let folder = self.settings.dags_folder.clone();
        let files = fingerprint(&folder);
        if self.files.as_ref() == Some(&files) {
            return Ok(HashSet::new());
        }
        let load_options = self.settings.load.clone();
        let load = tokio::task::spawn_blocking(move || load_paths(&[folder], &load_options))
            .await
            .expect("loading DAG files does not panic");
        let report = sync_dags(&self.store, &load, self.settings.sync, now).await?;
        for error in &load.errors {
            tracing::warn!("{error}");
        }
        if !report.created.is_empty() || !report.changed.is_empty() || report.deactivated > 0 {
            tracing::info!(
                created = report.created.len(),
                changed = report.changed.len(),
                deactivated = report.deactivated,
                "synced the DAGs folder"
            );
        }
        for loaded in load.dags {
            let key = (loaded.dag.id.clone(), loaded.dag.version_hash());
            self.versions
                .entry(key)
                .or_insert_with(|| Arc::new(loaded.dag));
        }
        self.files = Some(files);
        Ok(report.created.into_iter().chain(report.changed).collect())
    }

    /// The parsed DAG of a version, from the cache or the database.
    /// Reads the pool names again (a task naming another pool waits for it).
    async fn refresh_pools(&mut self) -> Result<(), Error> {
        self.pools = self
            .store
            .list_pools()
            .await?
            .into_iter()
            .map(|pool| pool.name)
            .collect();
        Ok(())
    }

    async fn dag(&mut self, dag_id: &DagId, version_hash: &str) -> Result<Arc<Dag>, Error> {
        let key = (dag_id.clone(), version_hash.to_owned());
        if let Some(dag) = self.versions.get(&key) {
            return Ok(dag.clone());
        }
        let dag = Arc::new(self.store.load_dag(dag_id, version_hash).await?);
        self.versions.insert(key, dag.clone());
        Ok(dag)
    }

    /// Creates the scheduled runs that are due and records each DAG's next run. New runs are
    /// added to `runs`. Returns when a DAG is due next, and the paused DAGs.
    async fn create_scheduled_runs(
        &mut self,
        runs: &mut Vec<DagRun>,
        changed: &HashSet<DagId>,
        now: DateTime<Utc>,
    ) -> Result<(Option<DateTime<Utc>>, HashSet<DagId>), Error> {
        let mut wake_at = None;
        let mut paused = HashSet::new();
        for row in self.store.list_dags().await? {
            if row.is_paused {
                paused.insert(row.dag_id.clone());
            }
            if !row.is_active || row.is_paused || row.schedule.is_none() {
                continue;
            }
            let key = (row.dag_id.clone(), row.version_hash.clone());
            let due = match &row.next_run {
                _ if changed.contains(&row.dag_id) => true,
                Some(next) => next.run_after <= now,
                None => !self.exhausted.contains(&key),
            };
            if !due {
                wake_at = earliest(wake_at, row.next_run.map(|next| next.run_after));
                continue;
            }
            let next = self.create_runs_of(&row, runs, now).await?;
            if next.is_none() {
                self.exhausted.insert(key);
            }
            wake_at = earliest(wake_at, next);
        }
        Ok((wake_at, paused))
    }

    async fn create_runs_of(
        &mut self,
        row: &DagRow,
        runs: &mut Vec<DagRun>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, Error> {
        let dag = self.dag(&row.dag_id, &row.version_hash).await?;
        let mut last = self.store.last_automated_run(&row.dag_id).await?;
        // Backfill runs count against their backfill's limit, not the DAG's.
        let mut active = runs
            .iter()
            .filter(|run| run.dag_id == row.dag_id && run.backfill_id.is_none())
            .count();
        // A date a backfill run holds is stepped over (the unique index refuses a second run),
        // so walk on until the free slots are used or no interval is due.
        loop {
            let due = runs_to_create(
                &dag.timetable,
                last.as_ref(),
                active,
                row.max_active_runs.max(1) as u32,
                row.is_paused,
                now,
            );
            if due.is_empty() {
                break;
            }
            for interval in due {
                let run = NewDagRun {
                    dag_id: row.dag_id.clone(),
                    run_id: format!("scheduled__{}", interval.logical_date.to_rfc3339()),
                    run_type: RunType::Scheduled,
                    logical_date: interval.logical_date,
                    data_interval_start: interval.data_interval_start,
                    data_interval_end: interval.data_interval_end,
                    run_after: interval.run_after,
                    conf: serde_json::json!({}),
                    version_hash: row.version_hash.clone(),
                    backfill_id: None,
                };
                match self.store.create_dag_run(&run, now).await? {
                    CreateOutcome::Created(created) => {
                        tracing::info!(dag_id = %created.dag_id, run_id = %created.run_id, "created a run");
                        runs.push(created);
                        active += 1;
                    }
                    // Another scheduler created it since this one's snapshot: it counts
                    // against max_active_runs here too while it is unfinished.
                    CreateOutcome::AlreadyExists(existing)
                        if existing.backfill_id.is_none()
                            && !existing.state.is_finished()
                            && !runs.iter().any(|run| run.id == existing.id) =>
                    {
                        runs.push(existing);
                        active += 1;
                    }
                    CreateOutcome::AlreadyExists(_) => {}
                }
                last = Some(interval);
            }
        }
        let next = dag.timetable.next_dagrun_info(last.as_ref(), now);
        self.store.set_next_run(&row.dag_id, next.as_ref()).await?;
        Ok(next.map(|next| next.run_after))
    }

    /// Starts queued runs within `max_active_runs`, steps running ones, and queues what is
    /// ready. The runs of paused DAGs wait, as in Airflow (their running tries finish). Returns
    /// the earliest instant a run needs another step by the clock.
    async fn step_runs(
        &mut self,
        runs: &[DagRun],
        paused: &HashSet<DagId>,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, Error> {
        let mut running: HashMap<Slot, usize> = HashMap::new();
        for run in runs.iter().filter(|run| run.state == DagRunState::Running) {
            *running.entry(slot(run)).or_default() += 1;
        }
        let backwards: HashSet<i64> = self
            .backfills
            .iter()
            .filter(|(_, backfill)| backfill.options.run_backwards)
            .map(|(id, _)| *id)
            .collect();
        let mut wake_at = None;
        let mut ready: Vec<Ready> = Vec::new();
        // Queued and running task instances per DAG, to offer the queue only what can fit.
        let mut active: HashMap<DagId, usize> = HashMap::new();
        // The task instances of the running runs, in one query rather than one per run (a
        // backfill keeps many runs running); a run started below reads its own.
        let stepped: Vec<i64> = runs
            .iter()
            .filter(|run| run.state == DagRunState::Running)
            .filter(|run| run.backfill_id.is_some() || !paused.contains(&run.dag_id))
            .map(|run| run.id)
            .collect();
        let mut instances_of: HashMap<i64, Vec<TaskInstance>> = HashMap::new();
        let mut steps = Vec::new();
        if !stepped.is_empty() {
            for ti in self.store.list_task_instances_of_runs(&stepped).await? {
                instances_of.entry(ti.dag_run_id).or_default().push(ti);
            }
        }
        // A backfill is explicit: its runs run while their DAG is paused.
        for run in start_order(runs, &backwards)
            .into_iter()
            .map(|index| &runs[index])
            .filter(|run| run.backfill_id.is_some() || !paused.contains(&run.dag_id))
        {
            let dag = match self.dag(&run.dag_id, &run.version_hash).await {
                Ok(dag) => dag,
                Err(error @ (Error::NotFound(_) | Error::Corrupt { .. })) => {
                    self.finish_run(run, DagRunState::Failed, Some(error.to_string()), now)
                        .await?;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let mut run = run.clone();
            if run.state == DagRunState::Queued {
                if run.run_after > now {
                    wake_at = earliest(wake_at, Some(run.run_after));
                    continue;
                }
                let backfill = run.backfill_id.and_then(|id| self.backfills.get(&id));
                if backfill.is_some_and(|backfill| backfill.state == BackfillState::Paused) {
                    continue;
                }
                let max_active_runs = backfill.map_or(dag.max_active_runs as usize, |backfill| {
                    backfill.options.max_active_runs_or(dag.max_active_runs)
                });
                let active = running.entry(slot(&run)).or_default();
                if *active >= max_active_runs {
                    continue;
                }
                if !self.start_run(&run, &dag, max_active_runs, now).await? {
                    continue;
                }
                *active += 1;
                run.state = DagRunState::Running;
                run.start_date = Some(now);
            }
            let instances = match instances_of.remove(&run.id) {
                Some(instances) => instances,
                None => self.store.list_task_instances(run.id).await?,
            };
            let past = if dag.tasks.values().any(|task| task.depends_on_past) {
                let previous = self
                    .store
                    .previous_task_states(&run.dag_id, run.logical_date)
                    .await?
                    .map(|states| states.into_iter().collect::<HashMap<_, _>>());
                waiting_on_past(&dag, previous.as_ref())
            } else {
                HashSet::new()
            };
            let snapshots: Vec<TaskSnapshot> = instances
                .iter()
                .map(|ti| TaskSnapshot {
                    id: ti.id,
                    task_id: ti.task_id.clone(),
                    state: ti.state,
                    next_retry_at: ti.next_retry_at,
                })
                .collect();
            let step = step_run(&dag, run.start_date, &snapshots, &past, now);
            wake_at = earliest(wake_at, step.wake_at);
            steps.push((run, dag, instances, step));
        }
        // Every run's moves in one transaction: one write per tick, not one per run.
        let moves: Vec<(i64, TaskState, TaskState)> = steps
            .iter()
            .flat_map(|(_, _, _, step)| step.moves.iter().copied())
            .collect();
        let mut moved = self.store.set_task_states(&moves, now).await?.into_iter();
        for (run, dag, instances, step) in steps {
            let mut states: HashMap<i64, TaskState> =
                instances.iter().map(|ti| (ti.id, ti.state)).collect();
            for (&(id, _, to), moved) in step.moves.iter().zip(moved.by_ref()) {
                if moved {
                    states.insert(id, to);
                }
            }
            if let Some(state) = step.finish {
                self.finish_run(&run, state, step.reason, now).await?;
                continue;
            }
            let run = Arc::new(run);
            for ti in instances {
                if matches!(states[&ti.id], TaskState::Queued | TaskState::Running) {
                    *active.entry(ti.dag_id.clone()).or_default() += 1;
                }
                if states[&ti.id] == TaskState::Scheduled {
                    ready.push(Ready {
                        instance: ti,
                        run: run.clone(),
                        dag: dag.clone(),
                    });
                }
            }
        }
        self.queue(ready, &active, now).await?;
        Ok(wake_at)
    }

    /// Reads the unfinished backfills (their state and options).
    async fn read_backfills(&mut self) -> Result<(), Error> {
        self.backfills = self
            .store
            .list_unfinished_backfills()
            .await?
            .into_iter()
            .map(|backfill| {
                let active = ActiveBackfill {
                    state: backfill.state,
                    options: BackfillOptions::from_json(&backfill.options),
                };
                (backfill.id, active)
            })
            .collect();
        Ok(())
    }

    /// Marks completed each running backfill none of whose runs was unfinished in `runs` (the
    /// list read after the backfills, at the start of this tick). The store checks again as it
    /// writes, so a run re-queued meanwhile keeps its backfill running.
    async fn complete_backfills(
        &mut self,
        runs: &[DagRun],
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let busy: HashSet<i64> = runs.iter().filter_map(|run| run.backfill_id).collect();
        let done: Vec<i64> = self
            .backfills
            .iter()
            .filter(|(id, backfill)| backfill.state == BackfillState::Running && !busy.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if self.store.complete_backfill(id, now).await? {
                tracing::info!(backfill_id = id, "backfill completed");
                self.backfills.remove(&id);
            }
        }
        Ok(())
    }

    /// Creates a queued run's task instances and moves it to running, within
    /// `max_active_runs` (checked again by the store as it writes: another scheduler may have
    /// started runs since this one's snapshot). In this order: a scheduler that dies (or loses
    /// the database) between the two writes leaves a queued run that the next pass starts
    /// again (creating task instances is idempotent), never a running run without task
    /// instances, which nothing would ever step.
    async fn start_run(
        &self,
        run: &DagRun,
        dag: &Dag,
        max_active_runs: usize,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let tasks: Vec<NewTaskInstance> = dag
            .tasks
            .values()
            .map(|task| NewTaskInstance {
                task_id: task.id.clone(),
                max_tries: task.retries as i32,
                pool: task.pool.clone(),
                pool_slots: task.pool_slots as i32,
                queue: task.queue.clone(),
                priority_weight: task.priority_weight,
                rendered_command: None,
            })
            .collect();
        self.store
            .create_task_instances(run.id, &tasks, now)
            .await?;
        if !self
            .store
            .start_dag_run(run, max_active_runs as i64, now)
            .await?
        {
            return Ok(false);
        }
        self.event(run, "run_started", serde_json::json!({}), now)
            .await?;
        Ok(true)
    }

    /// Renders and queues ready task instances, highest priority first. Only as many per DAG
    /// as its `max_active_tasks` leaves room for beside the `active` ones are rendered and
    /// offered; the store checks every limit again as it queues.
    async fn queue(
        &mut self,
        mut ready: Vec<Ready>,
        active: &HashMap<DagId, usize>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        ready.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.instance.priority_weight),
                r.run.logical_date,
                r.instance.id,
            )
        });
        let mut room: HashMap<DagId, usize> = HashMap::new();
        ready.retain(|r| {
            let room = room.entry(r.instance.dag_id.clone()).or_insert_with(|| {
                let busy = active.get(&r.instance.dag_id).copied().unwrap_or(0);
                (r.dag.max_active_tasks as usize).saturating_sub(busy)
            });
            let fits = *room > 0;
            *room = room.saturating_sub(1);
            fits
        });
        if ready.is_empty() {
            return Ok(());
        }
        if self.pools.is_empty() {
            self.refresh_pools().await?;
        }
        for r in &ready {
            let pool = &r.instance.pool;
            if !self.pools.contains(pool) && self.warned_pools.insert(pool.clone()) {
                tracing::warn!(
                    "task {}.{} waits for pool \"{pool}\", which does not exist: create it with \
                     `updraft pools set {pool} SLOTS`",
                    r.instance.dag_id,
                    r.instance.task_id
                );
            }
        }
        // Per run: its template context (or why it has none) and its tasks' outputs.
        let mut contexts: HashMap<i64, (Result<RunContext, String>, render::Outputs)> =
            HashMap::new();
        for r in &ready {
            if contexts.contains_key(&r.run.id) {
                continue;
            }
            let mut outputs = render::Outputs::new();
            if r.dag.tasks.values().any(|t| !t.outputs.is_empty()) {
                for output in self.store.list_task_outputs(r.run.id).await? {
                    outputs
                        .entry(output.task_id.to_string())
                        .or_default()
                        .insert(output.name, output.value);
                }
            }
            contexts.insert(r.run.id, (run_context(&r.dag, &r.run), outputs));
        }
        let mut requests = Vec::with_capacity(ready.len());
        for r in &ready {
            let Some(task) = r.dag.task(r.instance.task_id.as_str()) else {
                continue;
            };
            let (run_context, outputs) = &contexts[&r.run.id];
            // A template that cannot render fails the try that would run it, with the reason
            // in its log: the worker reads it from the rendered command.
            let rendered = run_context.as_ref().map_err(Clone::clone).and_then(|run| {
                let context = Context {
                    run,
                    task_id: r.instance.task_id.clone(),
                    try_number: (r.instance.try_number + 1) as u32,
                    outputs: outputs.clone(),
                };
                render::render_task(&r.dag, task, &context).map_err(|error| error.to_string())
            });
            let rendered = match rendered {
                Ok(rendered) => serde_json::to_value(rendered).expect("rendered JSON"),
                Err(message) => serde_json::json!({ "error": message }),
            };
            requests.push((r.instance.id, rendered));
        }
        self.store.queue_task_instances(&requests, now).await?;
        Ok(())
    }

    /// Ends a run in `state`: the event log says why, the DAG's handler runs.
    async fn finish_run(
        &self,
        run: &DagRun,
        state: DagRunState,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        if !self
            .store
            .set_dag_run_state(run.id, run.state, state, now)
            .await?
        {
            return Ok(());
        }
        tracing::info!(dag_id = %run.dag_id, run_id = %run.run_id, %state, reason, "run finished");
        self.event(
            run,
            "run_finished",
            serde_json::json!({ "state": state, "reason": reason }),
            now,
        )
        .await?;
        if let Some(dag) = self
            .versions
            .get(&(run.dag_id.clone(), run.version_hash.clone()))
        {
            run_dag_handler(dag, run, state);
        }
        Ok(())
    }

    /// Ends the tries of workers that stopped heartbeating: failed, or up for retry.
    async fn reap_zombies(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        let threshold = chrono::Duration::from_std(self.settings.zombie_threshold)
            .unwrap_or(chrono::Duration::MAX);
        let cutoff = now.checked_sub_signed(threshold).unwrap_or(now);
        for zombie in self.store.list_zombies(cutoff).await? {
            let Some(run) = self.store.get_dag_run(zombie.dag_run_id).await? else {
                continue;
            };
            let dag = self.dag(&run.dag_id, &run.version_hash).await?;
            let message = format!(
                "\nupdraft: try {} is a zombie: its worker {} on {} stopped heartbeating at {}\n",
                zombie.try_number,
                zombie.worker_id.as_deref().unwrap_or("?"),
                zombie.hostname.as_deref().unwrap_or("?"),
                zombie
                    .heartbeat_at
                    .map_or_else(|| "start".to_owned(), |at| at.to_rfc3339()),
            );
            let (state, next_retry_at) = after_zombie(&dag, &zombie, now);
            let ended = self
                .store
                .end_try(
                    &TryEnd {
                        task_instance_id: zombie.id,
                        try_number: zombie.try_number,
                        worker_id: None,
                        state,
                        exit_code: None,
                        next_retry_at,
                        outputs: Vec::new(),
                        log_tail: Vec::new(),
                    },
                    now,
                )
                .await?;
            // Another scheduler may have ended it first: the one that did says so, once.
            if !ended {
                continue;
            }
            tracing::warn!(dag_id = %zombie.dag_id, task_id = %zombie.task_id, "{}", message.trim());
            match self
                .store
                .append_task_log(zombie.id, zombie.try_number, message.as_bytes())
                .await
            {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn event(
        &self,
        run: &DagRun,
        event: &str,
        details: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        self.store
            .append_event(&NewEvent {
                at: now,
                actor: "scheduler".to_owned(),
                dag_id: Some(run.dag_id.clone()),
                run_id: Some(run.run_id.clone()),
                task_id: None,
                event: event.to_owned(),
                details,
            })
            .await?;
        Ok(())
    }
}

/// A task instance ready to queue, with its run and DAG version.
struct Ready {
    instance: TaskInstance,
    run: Arc<DagRun>,
    dag: Arc<Dag>,
}

/// What every try of `run` knows; an error when the run's conf does not fit the DAG's params.
pub fn run_context(dag: &Dag, run: &DagRun) -> Result<RunContext, String> {
    let params = render::effective_params(dag, &run.conf)
        .map_err(|problems| format!("params: {}", problems.join("; ")))?;
    Ok(RunContext {
        dag_id: dag.id.clone(),
        run_id: run.run_id.clone(),
        run_type: run.run_type,
        logical_date: run.logical_date,
        data_interval_start: run.data_interval_start,
        data_interval_end: run.data_interval_end,
        params,
        conf: run.conf.clone(),
    })
}

/// What a zombie's try ends in: up for retry while tries remain, else failed.
fn after_zombie(
    dag: &Dag,
    zombie: &TaskInstance,
    now: DateTime<Utc>,
) -> (TaskState, Option<DateTime<Utc>>) {
    let Some(task) = dag.task(zombie.task_id.as_str()) else {
        return (TaskState::Failed, None);
    };
    match after_failure(
        task,
        zombie.try_number.max(0) as u32,
        zombie.max_tries.max(0) as u32,
        now,
    ) {
        AfterFailure::RetryAt(at) => (TaskState::UpForRetry, Some(at)),
        AfterFailure::Fail => (TaskState::Failed, None),
    }
}

/// Runs a DAG's `on_success`/`on_failure` handler for a run that ended in `state`, in the DAG
/// file's folder, in the background; its output goes to the scheduler's log.
fn run_dag_handler(dag: &Dag, run: &DagRun, state: DagRunState) {
    let handler = run_context(dag, run).and_then(|context| {
        render::render_dag_handler(dag, state, &context).map_err(|error| error.to_string())
    });
    let handler = match handler {
        Ok(Some(handler)) => handler,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(dag_id = %dag.id, "cannot render the DAG's {state} handler: {error}");
            return;
        }
    };
    let folder = Path::new(&dag.fileloc)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let dag_id = dag.id.clone();
    tokio::spawn(async move {
        let mut command = match &handler.command {
            Command::Run(line) => {
                let mut command = tokio::process::Command::new("sh");
                command.arg("-c").arg(line);
                command
            }
            Command::Exec(argv) => {
                let mut command = tokio::process::Command::new(&argv[0]);
                command.args(&argv[1..]);
                command
            }
        };
        command
            .current_dir(&folder)
            .envs(handler.env.iter())
            .stdin(std::process::Stdio::null())
            .process_group(0);
        match command.output().await {
            Ok(output) => tracing::info!(
                %dag_id,
                status = %output.status,
                output = %String::from_utf8_lossy(&output.stdout),
                errors = %String::from_utf8_lossy(&output.stderr),
                "DAG handler ran"
            ),
            Err(error) => tracing::warn!(%dag_id, "cannot start the DAG's handler: {error}"),
        }
    });
}

/// The DAG files under `folder` with their modification times and sizes: when this changes,
/// the folder is loaded again. A missing folder has no files.
fn fingerprint(folder: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    dag_files(folder)
        .unwrap_or_default()
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (path, modified, len)
        })
        .collect()
}

/// The `max_active_runs` a run counts against: its backfill's, else its DAG's.
fn slot(run: &DagRun) -> Slot {
    match run.backfill_id {
        Some(id) => Slot::Backfill(id),
        None => Slot::Dag(run.dag_id.clone()),
    }
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
