//! The scheduler loop: the edge where the pure decisions of this crate meet the database.
//!
//! A tick costs what happened since the last one, not what exists:
//! 1. sync the DAGs folder when the watcher (or, where notifications do not work, a poll)
//!    saw a file change ([`folder`]);
//! 2. create the runs of the DAGs whose next run is due, read through the due index a batch
//!    at a time, each batch's runs and next runs in one transaction ([`create`]);
//! 3. look at the runs the [`Worklist`] names (a write concerned them, a timer ran out, room
//!    freed, a sweep): start the queued ones within `max_active_runs` in one transaction
//!    ([`start`]), step the running ones ([`advance`]), render and queue what is ready
//!    within pools and `max_active_tasks` ([`queue`]);
//! 4. every few seconds, heartbeat and end the tries of workers that stopped heartbeating
//!    ([`zombies`]).
//!
//! A tick runs when something wakes the scheduler (a wake-up says which runs changed, from
//! this process or, on Postgres, any other), when a timer or the next due DAG runs out, and at
//! least every `poll_interval`. A sweep of every unfinished run is the safety net, at least
//! every [`crate::worklist::SWEEP_INTERVAL`]. A failed tick (say the database restarts) is
//! logged and tried again, with a sweep: the state lives in the database, so nothing is lost
//! and nothing is done twice.

mod advance;
mod create;
mod deadlines;
mod folder;
mod handlers;
mod queue;
mod start;
mod zombies;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use updraft_core::dag::{Dag, LoadOptions};
use updraft_core::ids::{BackfillId, DagId, DagRunId};
use updraft_core::scope::Scope;
use updraft_core::secret::SecretsConfig;
use updraft_core::state::{BackfillState, DagRunState};
use updraft_metadata::{CLEAN_BATCH, DagRun, Error, Store, Topic, Wakeups};

use crate::instances::Instances;
use crate::sync::SyncOptions;
use crate::worklist::Worklist;
use folder::Folder;
use updraft_core::backfill::BackfillOptions;

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
    /// What it steps: everything, or only one run or one backfill's runs (and then it does
    /// nothing else, see [`Scope`]).
    pub scope: Scope,
    /// Where templates' variables and connections come from, and the keys that open them.
    pub secrets: SecretsConfig,
    /// Runs that ended longer ago than this are deleted once a day (with what hangs on them),
    /// and older events (`db clean`); `None` keeps everything.
    pub retention: Option<Duration>,
    /// The web UI's address (`--base-url`), for the links DAG handlers are given.
    pub base_url: Option<String>,
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
            scope: Scope::Everything,
            secrets: SecretsConfig::default(),
            retention: None,
            base_url: None,
        }
    }
}

/// How often the scheduler records that it is alive, and looks for zombies.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(2);

/// How often a scheduler with a retention cleans the database.
const CLEAN_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// A scheduler: one per process, several may share a Postgres database.
pub struct Scheduler {
    store: Store,
    settings: Settings,
    id: String,
    hostname: String,
    started_at: DateTime<Utc>,
    /// The wake-ups of the scheduler topic, subscribed at the first tick.
    wakeups: Option<Wakeups>,
    /// The DAGs folder: watched, and synced when it changed.
    folder: Folder,
    /// Parsed DAG versions by (dag id, version hash): immutable, so cached for good.
    versions: HashMap<(DagId, String), Arc<Dag>>,
    /// Which runs to look at.
    worklist: Worklist,
    /// The unfinished runs as this scheduler last read or wrote them, by id: read at a sweep,
    /// kept by what it writes and by the runs wake-ups name.
    runs: HashMap<DagRunId, DagRun>,
    /// The task instances of the running runs as last read or written.
    instances: Instances,
    /// Paused DAGs (read at a sweep; a pause wakes every scheduler with a sweep): their runs
    /// wait, as in Airflow 2.
    paused: HashSet<DagId>,
    /// When a DAG's next run is due next, as last read; `None` when none is.
    next_due: Option<DateTime<Utc>>,
    last_housekeeping: Option<DateTime<Utc>>,
    /// When the last clean of the retention started, and the clean while it runs.
    last_clean: Option<DateTime<Utc>>,
    cleaning: Option<tokio::task::JoinHandle<()>>,
    /// Pools and their slots, refreshed at housekeeping: a task naming another pool waits, and
    /// the scheduler says so once per pool; a pool that grew makes room.
    pools: HashMap<String, i32>,
    warned_pools: HashSet<String>,
    /// The unfinished backfills, read at a sweep: their runs start within the backfill's own
    /// `max_active_runs`, not at all while it is paused.
    backfills: HashMap<BackfillId, ActiveBackfill>,
    /// A run of a backfill finished (or a sweep read them): look for completed backfills.
    backfills_moved: bool,
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
    Backfill(BackfillId),
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
            folder: Folder::new(settings.dags_folder.clone()),
            store,
            settings,
            hostname,
            started_at,
            wakeups: None,
            versions: HashMap::new(),
            worklist: Worklist::new(),
            runs: HashMap::new(),
            instances: Instances::default(),
            paused: HashSet::new(),
            next_due: None,
            last_housekeeping: None,
            last_clean: None,
            cleaning: None,
            pools: HashMap::new(),
            warned_pools: HashSet::new(),
            backfills: HashMap::new(),
            backfills_moved: false,
            last_loop: None,
        }
    }

    /// Runs until `shutdown` completes. Database errors are logged and the tick is tried again
    /// after a pause: a database restart only delays the runs.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
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
                    // What the failed tick took from the worklist is not lost: the next
                    // tick sweeps.
                    self.worklist = Worklist::new();
                    self.settings.poll_interval
                }
            };
            let folder_changed = self.folder.changes();
            let wakeups = self.wakeups();
            tokio::select! {
                () = &mut shutdown => return,
                _ = wakeups.wait(wait) => {}
                () = folder_changed.notified() => {}
            }
        }
    }

    /// The scheduler's wake-ups, subscribed at the first call.
    fn wakeups(&mut self) -> &mut Wakeups {
        self.wakeups
            .get_or_insert_with(|| self.store.subscribe(Topic::Scheduler))
    }

    /// One pass over what changed; returns when the next pass is needed at the latest. A
    /// scheduler limited to one run or one backfill reads them again and looks at them all
    /// at every tick: its worklist only collects their timers.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, Error> {
        if self.settings.scope != Scope::Everything {
            self.worklist = Worklist::new();
            self.instances.clear();
        }
        if let Scope::Run(only) = self.settings.scope {
            let run = self.store.get_dag_run(only).await?;
            self.runs = run
                .into_iter()
                .filter(|run| !run.state.is_finished())
                .map(|run| (run.id, run))
                .collect();
            let ids = self.runs.keys().copied().collect();
            self.look_at(ids, now).await?;
            return Ok(self.worklist.wake_at());
        }
        if let Scope::Backfill(only) = self.settings.scope {
            self.read_backfills().await?;
            self.backfills.retain(|id, _| *id == only);
            self.runs = self
                .store
                .list_unfinished_runs()
                .await?
                .into_iter()
                .filter(|run| run.backfill_id == Some(only))
                .map(|run| (run.id, run))
                .collect();
            let ids = self.runs.keys().copied().collect();
            self.look_at(ids, now).await?;
            self.complete_backfills(now).await?;
            return Ok(self.worklist.wake_at());
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
            if let Some(retention) = self.settings.retention {
                self.clean_when_due(retention, now);
            }
        }
        let changes = self.wakeups().take_changes();
        self.instances.note(&changes);
        self.worklist.note(&changes);
        if self.folder.needs_sync() {
            self.sync(now).await?;
        }
        if self.worklist.sweep_due(now) {
            self.sweep(now).await?;
        } else {
            self.read_changed_runs(now).await?;
        }
        if self.next_due.is_some_and(|due| due <= now) {
            self.create_due_runs(now).await?;
        }
        let ids = self.worklist.take(now);
        self.look_at(ids, now).await?;
        if self.backfills_moved {
            self.complete_backfills(now).await?;
        }
        if housekeeping {
            self.reap_zombies(now).await?;
            self.last_housekeeping = Some(now);
        }
        Ok(earliest(self.next_due, self.worklist.wake_at()))
    }

    /// Starts the retention's clean in the background when a day has passed since this
    /// scheduler last started one (at once after it starts); scheduling goes on meanwhile, and
    /// the clean's short transactions skip what others hold.
    fn clean_when_due(&mut self, retention: Duration, now: DateTime<Utc>) {
        let running = self
            .cleaning
            .as_ref()
            .is_some_and(|clean| !clean.is_finished());
        let recent = self
            .last_clean
            .is_some_and(|last| (now - last).to_std().unwrap_or_default() < CLEAN_INTERVAL);
        let cutoff = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|retention| now.checked_sub_signed(retention));
        let Some(cutoff) = cutoff.filter(|_| !running && !recent) else {
            return;
        };
        self.last_clean = Some(now);
        let store = self.store.clone();
        self.cleaning = Some(tokio::spawn(async move {
            match store.clean(cutoff, None, CLEAN_BATCH, |_| {}).await {
                Ok(cleaned) => tracing::info!(
                    runs = cleaned.runs,
                    task_instances = cleaned.task_instances,
                    events = cleaned.events,
                    "retention: deleted what ended before {cutoff}"
                ),
                Err(error) => tracing::warn!("retention: the clean stopped: {error}"),
            }
        }));
    }

    /// Reads every unfinished run, the paused DAGs, the backfills and the next due DAG: what
    /// this scheduler knows is replaced by what the database holds.
    async fn sweep(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        self.read_backfills().await?;
        self.paused = self.store.list_paused_dags().await?.into_iter().collect();
        self.runs = self
            .store
            .list_unfinished_runs()
            .await?
            .into_iter()
            .map(|run| (run.id, run))
            .collect();
        self.instances.clear();
        self.worklist.swept(self.runs.keys().copied(), now);
        self.next_due = self.store.next_due_at().await?;
        self.backfills_moved = true;
        Ok(())
    }

    /// Reads again the runs wake-ups named, and those whose tries ended that this scheduler
    /// does not know as running (another scheduler started them): a new run joins the known
    /// ones, a finished one leaves them.
    async fn read_changed_runs(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        let not_running = |id: &DagRunId| {
            self.runs
                .get(id)
                .is_none_or(|run| run.state != DagRunState::Running)
        };
        let ids: HashSet<DagRunId> = self
            .worklist
            .dirty()
            .chain(self.worklist.moved().filter(not_running))
            .collect();
        let ids: Vec<DagRunId> = ids.into_iter().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let read: HashMap<DagRunId, DagRun> = self
            .store
            .get_dag_runs(&ids)
            .await?
            .into_iter()
            .map(|run| (run.id, run))
            .collect();
        for id in ids {
            match read.get(&id) {
                Some(run) if !run.state.is_finished() => {
                    self.runs.insert(id, run.clone());
                }
                // Finished (or deleted): forgotten, and its place may let another start.
                _ => {
                    if let Some(run) = self.runs.remove(&id) {
                        self.freed_by(&run, now);
                    }
                    self.instances.forget(id);
                    self.worklist.finished(id);
                }
            }
        }
        Ok(())
    }

    /// A run left the unfinished ones: its backfill may be complete, its DAG may have room for
    /// a scheduled run.
    fn freed_by(&mut self, run: &DagRun, now: DateTime<Utc>) {
        match run.backfill_id {
            Some(_) => self.backfills_moved = true,
            None => self.next_due = earliest(self.next_due, Some(now)),
        }
    }

    /// Reads the pools again; a pool that is new or grew makes room.
    async fn refresh_pools(&mut self) -> Result<(), Error> {
        let pools: HashMap<String, i32> = self
            .store
            .list_pools()
            .await?
            .into_iter()
            .map(|pool| (pool.name, pool.slots))
            .collect();
        let grew = pools
            .iter()
            .any(|(name, slots)| self.pools.get(name).is_none_or(|before| slots > before));
        if grew && !self.pools.is_empty() {
            self.worklist.room_freed();
        }
        self.pools = pools;
        Ok(())
    }

    /// The parsed DAG of a version, from the cache or the database.
    async fn dag(&mut self, dag_id: &DagId, version_hash: &str) -> Result<Arc<Dag>, Error> {
        let key = (dag_id.clone(), version_hash.to_owned());
        if let Some(dag) = self.versions.get(&key) {
            return Ok(dag.clone());
        }
        let dag = Arc::new(self.store.load_dag(dag_id, version_hash).await?);
        self.versions.insert(key, dag.clone());
        Ok(dag)
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

    /// Marks completed each running backfill none of whose runs is among the unfinished ones
    /// this scheduler knows. The store checks again as it writes, so a run re-queued meanwhile
    /// keeps its backfill running.
    async fn complete_backfills(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        self.backfills_moved = false;
        let busy: HashSet<BackfillId> = self
            .runs
            .values()
            .filter_map(|run| run.backfill_id)
            .collect();
        let done: Vec<BackfillId> = self
            .backfills
            .iter()
            .filter(|(id, backfill)| backfill.state == BackfillState::Running && !busy.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if self.store.complete_backfill(id, now).await? {
                tracing::info!(backfill_id = %id, "backfill completed");
                self.backfills.remove(&id);
            }
        }
        Ok(())
    }
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
