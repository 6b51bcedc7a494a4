//! The worker loop (DESIGN §6): claim queued task instances of its queues, run each try as a
//! child process ([`crate::process`]), ship its log to the database while it runs, and record
//! how it ended. The same worker runs inside `updraft standalone` and as `updraft worker`.
//!
//! - Claims happen when a slot is free and something woke the worker (work was queued, in this
//!   process or, on Postgres, in any), or at the latest every `poll_interval`. A slot is a
//!   running process: a try frees it when its process ends, before its end is written. While
//!   other tries run, a freed slot waits up to `CLAIM_LINGER` for a third of the slots to free,
//!   so that one claim takes several task instances.
//! - Every `heartbeat_interval` the worker heartbeats its tries. A try the database no longer
//!   says is running under this worker was moved away (cleared, marked, its run timed out, or
//!   reaped as a zombie): its process group is killed. Kills also wake the worker at once.
//! - A worker restarted under the same id finds the tries its previous life left `running`:
//!   it kills what is left of their process groups on this host (by their recorded pid, or by
//!   the mark `UPDRAFT_WORKER_TRY` in their environment when it died before recording it) and
//!   ends them as failed or up for retry, without waiting for the zombie threshold. Pids are
//!   recorded together at the heartbeat after their tries started: most tries end sooner and
//!   cost no write for it.
//! - A worker asked to stop claims nothing more, heartbeats on, and waits for its running
//!   tries up to its shutdown timeout; then it kills them and records them failed or up for
//!   retry.
//! - A try's outcome is never dropped: the worker's end writer (`ends.rs`) writes the
//!   ends of tries that finish together, and while the database is unreachable it keeps them
//!   and writes them when the database answers again. A try stays the worker's (heartbeated,
//!   never taken for lost) until its end is written.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use updraft_core::ids::{TaskInstanceId, TryKey};
use updraft_core::plan::{Planned, TryPlan};
use updraft_core::render::{Rendered, TryEnding};
use updraft_core::retry::{RetryPolicy, after_failed_try};
use updraft_core::scope::Scope;
use updraft_core::secret::{Masker, SecretsConfig};
use updraft_core::state::{HandlerName, TaskState, WorkerState};
use updraft_core::time::human_duration;
use updraft_metadata::{Claim, Error, Store, Topic, TryEnd, TryPid, WorkerRef};

use crate::ends::{Ends, Expected};
use crate::handler::{HandlerJob, LOG_TAIL_BYTES, Place};
use crate::name::{self, Claimant, Name};
use updraft_process::{self as process, Ending, Files, OutputFolder, Spawn, TryFolder};

/// How a worker is configured.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The name it takes (see [`crate::name`]); stable across restarts of the same worker, so
    /// that its tries are found again.
    pub name: Name,
    pub hostname: String,
    pub queues: Vec<String>,
    /// Tries run at once.
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub heartbeat_interval: Duration,
    /// Also print every try's log to stdout, prefixed with its task (`dags test`).
    pub echo: bool,
    /// Whose task instances it claims: any, or only one run's or one backfill's.
    pub scope: Scope,
    /// Once asked to stop, how long running tries may go on before they are killed (and end
    /// failed or up for retry); `None` waits for them however long they take.
    pub shutdown_timeout: Option<Duration>,
    /// Names of its own environment every try gets, besides the basics and what the DAG lists
    /// (`updraft_core::worker_env`).
    pub inherit_env: Vec<String>,
    /// Where the secrets that plans refer to come from, and the keys that open them.
    pub secrets: Arc<SecretsConfig>,
    /// The most a try's command may write to its stored log; the rest is counted, not kept.
    pub max_log_bytes: u64,
    /// The web UI's address (`--base-url`), for the links handlers are given.
    pub base_url: Option<String>,
}

/// A try's stored log is cut at this size by default: a task that prints gigabytes must not
/// write them all into the metadata database.
pub const MAX_LOG_BYTES: u64 = 20 * 1024 * 1024;

/// The connections a worker needs to a Postgres server: one for its loop (claims, heartbeats),
/// one for its end writer, one for shipping its tries' logs, and the one that listens for
/// wake-ups (see `Connections::Kept`).
pub const CONNECTIONS: u32 = 4;

/// How long a freed slot may wait for others before it is claimed for, while other tries run:
/// a claim for a third of the slots at once costs the database much less per task instance
/// than one claim per slot (the `workers` benchmark drained 1,300-1,520 trivial tries a second
/// with a claim per freed slot, 1,390-1,580 with claims of a third after up to 5 ms, 1,510-1,660
/// after up to 20 ms, in runs side by side). A try that ends while nothing else runs (the next
/// task of a chain) is claimed for at once, and next to a task that runs for seconds 20 ms do
/// not show.
const CLAIM_LINGER: Duration = Duration::from_millis(20);

/// The shortest time between two kill checks triggered by wake-ups.
const KILL_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// How often a log is shipped to the database while its try runs.
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// A log buffer this large is shipped at once.
const LOG_FLUSH_BYTES: usize = 64 * 1024;

/// Set in the environment of every try's process: which worker's try it is. The pid of a try
/// is recorded only after its process started; a worker that died in between left a process
/// nobody knows the pid of, and its next life finds it by this mark.
const TRY_MARK: &str = "UPDRAFT_WORKER_TRY";

/// The value of [`TRY_MARK`]: the worker, the task instance, the try and the instant of its
/// claim (which tells apart the tries of two databases on one host).
fn try_mark(worker_id: &str, key: TryKey, claimed: DateTime<Utc>) -> String {
    let TryKey {
        task_instance,
        try_number,
    } = key;
    format!(
        "{worker_id} {task_instance} {try_number} {}",
        claimed.timestamp_micros()
    )
}

/// The process ids of started tries that the database does not know yet: recorded together at the next heartbeat, so that a try costs no write of its own for
/// its pid (most tries end sooner, and their entry goes with them).
type Pids = Arc<Mutex<HashMap<TryKey, u32>>>;

/// A worker bound to a database.
pub struct Worker {
    store: Store,
    settings: Settings,
    /// The name it took, and when (its row's `started_at`, which each heartbeat checks): set
    /// as `run` starts.
    id: String,
    held_since: Option<DateTime<Utc>>,
    pids: Pids,
    /// Where the handlers write `$UPDRAFT_OUTPUT`; removed with the worker.
    outputs: Arc<OutputFolder>,
    /// Where the tries write theirs and record their exits: the folder of the worker's name,
    /// which its next life reads.
    tries: TryFolder,
}

/// A try running in this worker: its cancel switch, `None` until it is to be killed.
struct Running {
    cancel: watch::Sender<Option<Cancel>>,
}

/// Why a running try is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    /// The database no longer says it is this worker's: it was cleared, marked, timed out with
    /// its run, or reaped as a zombie (and maybe running elsewhere already).
    MovedAway,
    /// The worker was asked to stop and the try was still running after this shutdown timeout.
    Shutdown(Duration),
}

/// Whether the database answered the worker's last claim or heartbeat: an outage is logged
/// when it starts and when it ends, not at every attempt in between.
#[derive(Debug, Default)]
struct Health {
    failing: bool,
}

impl Health {
    /// The answer's value, or `None` (logging the error when the outage starts).
    fn check<T>(&mut self, what: &str, answer: Result<T, String>) -> Option<T> {
        match answer {
            Ok(value) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("the metadata database answers again");
                }
                Some(value)
            }
            Err(error) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(
                        "cannot {what}: {error}; the running tries go on, their outcomes wait"
                    );
                }
                None
            }
        }
    }
}

/// The longest the worker loop waits for one claim or heartbeat. Past it the database counts
/// as unreachable for now: the pool would otherwise keep trying to connect for its whole acquire
/// timeout (30 s), the loop deaf to kills, ended tries and shutdown meanwhile.
const DATABASE_PATIENCE: Duration = Duration::from_secs(5);

/// `call`'s answer, or an error once [`DATABASE_PATIENCE`] ran out (the call is dropped: a
/// claim whose commit happened is found again by the next heartbeat, see `heartbeat`).
async fn patiently<T>(call: impl Future<Output = Result<T, Error>>) -> Result<T, String> {
    match tokio::time::timeout(DATABASE_PATIENCE, call).await {
        Ok(answer) => answer.map_err(|error| error.to_string()),
        Err(_) => Err(out_of_patience()),
    }
}

fn out_of_patience() -> String {
    format!(
        "the database did not answer within {}",
        human_duration(DATABASE_PATIENCE)
    )
}

/// Completes at `at`; never when `at` is `None`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Worker {
    pub fn new(store: Store, settings: Settings) -> Worker {
        let id = match &settings.name {
            Name::Given(id) | Name::FirstFree(id) | Name::OfHome(id) => id.clone(),
        };
        let database = store.url().to_owned();
        Worker {
            store,
            settings,
            held_since: None,
            pids: Pids::default(),
            outputs: Arc::default(),
            tries: TryFolder::of_worker(&database, &id),
            id,
        }
    }

    /// Takes the worker's name (see [`crate::name`]) and ends what its previous life left
    /// running (adopting the outcome of a command that ended meanwhile), unless it did so
    /// already; returns the name. `standalone` calls it before its scheduler starts, so that
    /// the scheduler does not take those tries for zombies first.
    pub async fn register(&mut self) -> Result<&str, Error> {
        if self.held_since.is_none() {
            let me = Claimant {
                hostname: &self.settings.hostname,
                pid: std::process::id(),
                queues: &self.settings.queues,
                concurrency: self.settings.concurrency as i32,
            };
            let (id, held_since) = name::take(&self.store, &self.settings.name, &me).await?;
            self.tries = TryFolder::of_worker(self.store.url(), &id);
            self.id = id;
            self.held_since = Some(held_since);
            self.recover().await?;
        }
        Ok(&self.id)
    }

    /// Registers (see [`Worker::register`]), then claims and runs tries until `shutdown`
    /// completes; then stops claiming and waits for the running tries.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.register().await?;

        let ends = Ends::start(self.store.clone());
        let mut wakeups = self.store.subscribe(Topic::Workers);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tries: JoinSet<(TryKey, Option<HandlerJob>)> = JoinSet::new();
        // The handlers of ended tries (see `handler`): they hold no slot, but at most
        // `concurrency` run at once.
        let mut handlers: JoinSet<()> = JoinSet::new();
        let handler_slots = Arc::new(Semaphore::new(self.settings.concurrency));
        // Every claimed try until its end is recorded: the heartbeat keeps them all this
        // worker's.
        let mut running: HashMap<TryKey, Running> = HashMap::new();
        // The tries of `running` whose process is over and whose end is being recorded: their
        // slots are free (a slot is a process running), so the next claim need not wait for
        // the database to confirm an end.
        let mut ending: HashSet<TryKey> = HashSet::new();
        let (slot_freed, mut freed_slots) = mpsc::unbounded_channel::<TryKey>();
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut claim_now = true;
        // A claim waiting for more slots to free (see `CLAIM_LINGER`) is made at the latest then.
        let mut claim_at: Option<tokio::time::Instant> = None;
        let mut last_heartbeat = tokio::time::Instant::now();
        // A wake-up that came too soon after a heartbeat to look for kills at once: look then.
        let mut kill_check_at: Option<tokio::time::Instant> = None;
        // Set once `shutdown` completed: no more claims; the running tries are killed at this
        // instant (never, without a shutdown timeout).
        let mut stopping: Option<Option<tokio::time::Instant>> = None;
        // When a shutdown was asked with a timeout: the handlers' deadline too.
        let mut shutdown_deadline: Option<tokio::time::Instant> = None;
        let mut health = Health::default();
        // Set when another process took over this worker's name: claim nothing more, stop once
        // the killed tries ended.
        let mut taken_over = false;
        loop {
            if taken_over && stopping.is_none() {
                stopping = Some(None);
            }
            if stopping.is_some() && running.is_empty() {
                break;
            }
            let busy = running.len() - ending.len();
            let free = self.settings.concurrency - busy;
            let now = tokio::time::Instant::now();
            let wanted = claim_now && stopping.is_none() && free > 0;
            let lingered = claim_at.is_some_and(|at| now >= at);
            let due = claim_is_due(free, self.settings.concurrency, lingered);
            if !wanted {
                claim_at = None;
            } else if !due {
                claim_at.get_or_insert(now + CLAIM_LINGER);
            } else {
                claim_at = None;
                let claimed = patiently(self.claim(free)).await;
                claim_now = false;
                if let Some(claims) = health.check("claim task instances", claimed) {
                    // A full claim may have left more behind: look again.
                    claim_now = claims.len() == free;
                    ends.saturated(claim_now);
                    for claim in claims {
                        let key = claim.instance.try_key();
                        let (cancel, cancelled) = watch::channel(None);
                        running.insert(key, Running { cancel });
                        let job = self.job(claim, ends.clone(), slot_freed.clone(), cancelled);
                        tries.spawn(async move { (key, job.await) });
                    }
                }
            }
            let kill_at = stopping.flatten();
            tokio::select! {
                () = &mut shutdown, if stopping.is_none() => {
                    let deadline = self
                        .settings
                        .shutdown_timeout
                        .map(|timeout| tokio::time::Instant::now() + timeout);
                    stopping = Some(deadline);
                    shutdown_deadline = deadline;
                    if let Err(error) = self.store.set_worker_state(&self.id, WorkerState::Stopping).await {
                        tracing::warn!("cannot record that the worker is stopping: {error}");
                    }
                }
                () = sleep_until_some(kill_at) => {
                    let timeout = self.settings.shutdown_timeout.unwrap_or_default();
                    for try_ in running.values() {
                        try_.cancel.send_replace(Some(Cancel::Shutdown(timeout)));
                    }
                    stopping = Some(None);
                }
                Some(key) = freed_slots.recv() => {
                    // Every slot freed by now is taken by the next claim, all at once. (A try
                    // whose end was recorded, and which left `running`, before its slot's
                    // message was read frees nothing more.)
                    let freed = std::iter::once(key)
                        .chain(std::iter::from_fn(|| freed_slots.try_recv().ok()));
                    for key in freed {
                        if running.contains_key(&key) {
                            ending.insert(key);
                        }
                    }
                    claim_now = true;
                }
                Some(done) = tries.join_next() => {
                    if let Ok((key, handler)) = done {
                        running.remove(&key);
                        ending.remove(&key);
                        if let Some(handler) = handler {
                            let slots = handler_slots.clone();
                            handlers.spawn(async move {
                                let _slot = slots.acquire_owned().await;
                                handler.run().await;
                            });
                        }
                    }
                    claim_now = true;
                }
                Some(_) = handlers.join_next() => {}
                woken = wakeups.wait(self.settings.poll_interval) => {
                    claim_now = true;
                    // A wake-up may be a kill: look, but not more often than KILL_CHECK_INTERVAL
                    // (most wake-ups are queued work); one that comes sooner is looked at then.
                    if woken && !running.is_empty() {
                        let due = last_heartbeat + KILL_CHECK_INTERVAL;
                        if tokio::time::Instant::now() >= due {
                            taken_over |= !self.heartbeat(&running, &mut health).await;
                            last_heartbeat = tokio::time::Instant::now();
                            kill_check_at = None;
                        } else {
                            kill_check_at = Some(due);
                        }
                    }
                }
                () = sleep_until_some(claim_at) => {}
                () = sleep_until_some(kill_check_at) => {
                    kill_check_at = None;
                    taken_over |= !self.heartbeat(&running, &mut health).await;
                    last_heartbeat = tokio::time::Instant::now();
                }
                _ = heartbeat.tick() => {
                    taken_over |= !self.heartbeat(&running, &mut health).await;
                    last_heartbeat = tokio::time::Instant::now();
                    kill_check_at = None;
                }
            }
        }
        // The handlers still running get what is left of the shutdown timeout; then their
        // processes are stopped (dropping a handler's future kills its process group).
        let drained = async { while handlers.join_next().await.is_some() {} };
        match shutdown_deadline {
            Some(deadline) => {
                let _ = tokio::time::timeout_at(deadline, drained).await;
            }
            None => drained.await,
        }
        handlers.shutdown().await;
        if taken_over {
            return Err(Error::Conflict(format!(
                "another process took over the worker name '{}'",
                self.id
            )));
        }
        if let Err(error) = self
            .store
            .set_worker_state(&self.id, WorkerState::Stopped)
            .await
        {
            tracing::warn!("cannot record that the worker stopped: {error}");
        }
        Ok(())
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Claim>, Error> {
        let worker = WorkerRef {
            id: &self.id,
            hostname: &self.settings.hostname,
        };
        self.store
            .claim_task_instances(
                worker,
                &self.settings.queues,
                self.settings.scope,
                limit,
                Utc::now(),
            )
            .await
    }

    /// Heartbeats; cancels the tries that are not this worker's any more. While the database
    /// does not answer, the tries go on running; when it answers again, the tries that were
    /// moved away meanwhile (reaped as zombies past the threshold, cleared, marked) are killed.
    ///
    /// Returns false when another process took over this worker's name (it was silent past
    /// [`name::STALE_AFTER`]): its tries were reaped meanwhile, and the worker must stop.
    async fn heartbeat(&self, running: &HashMap<TryKey, Running>, health: &mut Health) -> bool {
        let beat = self
            .store
            .heartbeat_worker(&self.id, self.held_since, Utc::now());
        let answer = match tokio::time::timeout(DATABASE_PATIENCE, beat).await {
            Ok(Err(Error::Conflict(reason))) => {
                tracing::error!(
                    "{reason} while this worker was cut off from the database: it kills its \
                     tries (they were reaped as zombies) and stops"
                );
                for try_ in running.values() {
                    try_.cancel.send_replace(Some(Cancel::MovedAway));
                }
                return false;
            }
            Ok(answer) => answer.map_err(|error| error.to_string()),
            Err(_) => Err(out_of_patience()),
        };
        if let Some(ours) = health.check("heartbeat", answer) {
            // The pids of the tries started since, that still run (the others' went with them).
            let started: Vec<TryPid> = std::mem::take(&mut *self.pids.lock().expect("pids lock"))
                .into_iter()
                .filter(|(key, _)| ours.contains(key))
                .map(|(key, pid)| TryPid { key, pid })
                .collect();
            if let Err(error) = patiently(self.store.set_try_pids(&started)).await {
                tracing::warn!("cannot record the pids of tries, retrying: {error}");
                let mut pids = self.pids.lock().expect("pids lock");
                for TryPid { key, pid } in started {
                    pids.insert(key, pid);
                }
            }
            for (key, try_) in running {
                if !ours.contains(key) && try_.cancel.borrow().is_none() {
                    try_.cancel.send_replace(Some(Cancel::MovedAway));
                }
            }
            // A claim whose commit succeeded but whose answer was lost (the connection
            // dropped) left tries that are this worker's but that it never started; its own
            // heartbeat would keep them from ever becoming zombies.
            let why = "this worker never started this try (the answer to its claim was lost)";
            for &key in ours.iter().filter(|key| !running.contains_key(key)) {
                if let Err(error) = self.end_lost_try(key, why).await {
                    tracing::warn!("cannot end a lost try: {error}");
                }
            }
        }
        true
    }

    /// Ends the tries this worker's previous life left running: kills what is left of their
    /// processes on this host, then fails or retries them.
    async fn recover(&self) -> Result<(), Error> {
        let leftovers = self
            .store
            .heartbeat_worker(&self.id, self.held_since, Utc::now())
            .await?;
        let why = format!(
            "worker {} restarted while this try ran; it is ended as a zombie",
            self.id
        );
        for key in leftovers {
            self.end_lost_try(key, &why).await?;
        }
        // What still runs of a previous life's tries in this database belongs to tries a
        // scheduler reaped (and retried elsewhere) while this worker was away: it must not run
        // beside them. (A namesake of another database claimed its tries at other instants.)
        // The files such tries left have nobody to adopt them.
        let mut killed = 0;
        for (group, mark) in process::groups_with_env_prefix(TRY_MARK, &format!("{} ", self.id)) {
            if self.marks_a_try_here(&mark).await? {
                process::kill_group(group, libc::SIGKILL);
                killed += 1;
            }
        }
        if killed > 0 {
            tracing::warn!(
                "killed {killed} process group(s) of tries that were reaped while worker {} was \
                 away",
                self.id
            );
        }
        self.tries.clear();
        Ok(())
    }

    /// Whether a [`TRY_MARK`] names a try of this database that this worker claimed on this
    /// host (see [`try_mark`]).
    async fn marks_a_try_here(&self, mark: &str) -> Result<bool, Error> {
        let mut parts = mark.split(' ').skip(1);
        let (Some(Ok(id)), Some(Ok(try_number)), Some(Ok(claimed)), None) = (
            parts.next().map(str::parse::<TaskInstanceId>),
            parts.next().map(str::parse::<i32>),
            parts.next().map(str::parse::<i64>),
            parts.next(),
        ) else {
            return Ok(false);
        };
        let tries = self.store.list_task_tries(id).await?;
        Ok(tries.iter().any(|t| {
            t.try_number == try_number
                && t.start_date.timestamp_micros() == claimed
                && t.worker_id.as_deref() == Some(self.id.as_str())
                && t.hostname.as_deref() == Some(self.settings.hostname.as_str())
        }))
    }

    /// Ends a try the database says this worker runs but which it does not run (any more):
    /// kills what is left of its processes on this host; then, if its command had ended and
    /// recorded its exit (see [`process::TryFiles`]), records that outcome (its command is not run
    /// again), else fails or retries it.
    async fn end_lost_try(&self, key: TryKey, why: &str) -> Result<(), Error> {
        let TryKey {
            task_instance: id,
            try_number,
        } = key;
        let now = Utc::now();
        let Some(instance) = self.store.get_task_instance(id).await? else {
            return Ok(());
        };
        let tries = self.store.list_task_tries(id).await?;
        let here = tries
            .iter()
            .find(|t| t.try_number == try_number)
            .filter(|t| t.hostname.as_deref() == Some(self.settings.hostname.as_str()));
        match here.map(|t| (t.pid, t.start_date)) {
            Some((Some(pid), _)) => {
                process::kill_group(pid as u32, libc::SIGKILL);
            }
            // The previous life died between spawning the try and recording its pid: its
            // processes are found by the mark they were started with.
            Some((None, claimed)) => {
                let mark = try_mark(&self.id, key, claimed);
                for group in process::groups_with_env(TRY_MARK, &mark) {
                    process::kill_group(group, libc::SIGKILL);
                }
            }
            None => {}
        }
        // Read after the kill: a command that ended before it recorded its exit then.
        let files = self.tries.files_at(key);
        let recorded = files.recorded_exit();
        let plan = plan_of(instance.rendered_command.as_ref()).ok();
        let mut outputs = Vec::new();
        let mut message = format!("\nupdraft: {why}\n");
        let (state, next_retry_at) = match (&plan, recorded) {
            (Some(plan), Some(code)) => {
                let (state, at) = plan.after_exit(code, try_number, instance.max_tries, now);
                message = format!(
                    "\nupdraft: worker {} was not there when this try's command ended; the \
                     command had exited with code {code}, so the try is {state} and the command \
                     is not run again (what it printed after its worker died is not in this \
                     log)\n",
                    self.id
                );
                let (read, warnings) = files.outputs();
                // Masked as the try's own end masks them: by the secrets its plan refers to.
                let rendered = match &plan.command {
                    Planned::Ready(rendered) => Some((**rendered).clone()),
                    Planned::RenderError(_) => None,
                };
                let masker = match rendered {
                    None => Ok(Masker::default()),
                    Some(rendered) => updraft_secrets::resolve_rendered(
                        &self.store,
                        &self.settings.secrets,
                        rendered,
                    )
                    .await
                    .map(|(_, masker)| masker),
                };
                match masker {
                    Ok(masker) => {
                        outputs = read
                            .into_iter()
                            .map(|(name, value)| (name, masker.mask(&value)))
                            .collect();
                    }
                    Err(error) => message.push_str(&format!(
                        "updraft: its outputs are dropped: the secrets to mask them with cannot \
                         be looked up ({error})\n"
                    )),
                }
                for warning in warnings {
                    message.push_str(&format!("updraft: {warning}\n"));
                }
                (state, at)
            }
            (Some(plan), None) => plan.after_failure(try_number, instance.max_tries, now),
            // Without its plan, the task instance's own budget of tries still decides.
            (None, _) => {
                after_failed_try(&RetryPolicy::default(), try_number, instance.max_tries, now)
            }
        };
        self.store.append_task_log(key, message.as_bytes()).await?;
        self.store
            .end_try(
                &TryEnd {
                    key,
                    worker_id: Some(self.id.clone()),
                    state,
                    exit_code: recorded.filter(|_| plan.is_some()),
                    next_retry_at,
                    outputs,
                    log_tail: Vec::new(),
                },
                now,
            )
            .await?;
        files.remove();
        Ok(())
    }

    /// The future that runs one claimed try to its end.
    fn job(
        &self,
        claim: Claim,
        ends: Ends,
        slot_freed: mpsc::UnboundedSender<TryKey>,
        cancelled: watch::Receiver<Option<Cancel>>,
    ) -> impl Future<Output = Option<HandlerJob>> + Send + 'static {
        let store = self.store.clone();
        let worker_id = self.id.clone();
        let echo = self.settings.echo;
        let pids = self.pids.clone();
        let outputs = self.outputs.clone();
        let tries = self.tries.clone();
        let inherit_env = self.settings.inherit_env.clone();
        let secrets = self.settings.secrets.clone();
        let max_log_bytes = self.settings.max_log_bytes;
        let base_url = self.settings.base_url.clone();
        let expected = ends.expect();
        async move {
            let try_ = Try {
                store,
                ends,
                expected,
                slot_freed,
                worker_id,
                echo,
                claim,
                pids,
                outputs,
                tries,
                inherit_env,
                secrets,
                max_log_bytes,
                base_url,
            };
            try_.run(cancelled).await
        }
    }
}

/// How a try ends: its state, and when it is retried if it is.
type Outcome = (TaskState, Option<DateTime<Utc>>);

/// One claimed try, from spawn to its recorded outcome.
struct Try {
    store: Store,
    ends: Ends,
    /// Tells the end writer that this try's end is still to come (see [`Ends::expect`]).
    expected: Expected,
    /// Told when the try's process (and handler) is over, before its end is recorded.
    slot_freed: mpsc::UnboundedSender<TryKey>,
    worker_id: String,
    echo: bool,
    claim: Claim,
    pids: Pids,
    /// For the try's handler.
    outputs: Arc<OutputFolder>,
    /// For the try itself (see [`process::TryFiles`]).
    tries: TryFolder,
    /// The worker's [`Settings::inherit_env`].
    inherit_env: Vec<String>,
    /// The worker's [`Settings::secrets`].
    secrets: Arc<SecretsConfig>,
    /// The worker's [`Settings::max_log_bytes`].
    max_log_bytes: u64,
    /// The worker's [`Settings::base_url`].
    base_url: Option<String>,
}

impl Try {
    /// Runs the try to its recorded end; returns its handler, to run after it.
    async fn run(self, cancelled: watch::Receiver<Option<Cancel>>) -> Option<HandlerJob> {
        let ti = &self.claim.instance;
        let key = ti.try_key();
        let prepared = self.prepare().await;
        // What the try is handed of its secrets never reaches its log or outputs.
        let masker = match &prepared {
            Ok((_, _, masker)) => masker.clone(),
            Err(_) => Masker::default(),
        };
        let (log, log_rx) = mpsc::channel::<Vec<u8>>(256);
        let shipper = tokio::spawn(ship_log(
            self.store.clone(),
            key,
            self.echo.then(|| ti.task_id.to_string()),
            masker.clone(),
            log_rx,
        ));
        let (plan, rendered) = match prepared {
            Ok((plan, rendered, _)) => (plan, rendered),
            Err((why, outcome)) => {
                self.did_not_start(&why, outcome, log, shipper).await;
                return None;
            }
        };
        let folder = dag_folder(&self.claim.fileloc);
        // A worker on a host without the DAGs folder still runs the tasks that need no file of
        // it (their definition and command come from the database), each in a scratch folder
        // of its own, removed after the try. A `working_dir` names files: it must exist.
        let scratch = match folder.is_dir() || rendered.working_dir.is_some() {
            true => None,
            false => tempfile::Builder::new()
                .prefix("updraft-try-")
                .tempdir()
                .ok(),
        };
        let folder = match &scratch {
            Some(scratch) => {
                let note = format!(
                    "updraft: the DAG's folder {} is not on this host; running in {}\n",
                    folder.display(),
                    scratch.path().display()
                );
                let _ = log.send(note.into_bytes()).await;
                scratch.path().to_path_buf()
            }
            None => folder,
        };
        let working_dir = match &rendered.working_dir {
            Some(dir) => folder.join(dir),
            None => folder.clone(),
        };
        let mut env: Vec<(String, String)> = rendered.env.clone().into_iter().collect();
        if let Some(claimed) = ti.start_date {
            let mark = try_mark(&self.worker_id, key, claimed);
            env.push((TRY_MARK.to_owned(), mark));
        }
        // Without its folder of files a try runs all the same, but a death of its worker
        // meanwhile leaves nothing to adopt: it would run again.
        let files = match self.tries.files(key) {
            Ok(files) => Some(files),
            Err(error) => {
                let note = format!(
                    "updraft: cannot record this try's exit beside the worker ({error}); if the \
                     worker dies while it runs, it runs again\n"
                );
                let _ = log.send(note.into_bytes()).await;
                None
            }
        };
        let inherit_env: Vec<String> = rendered
            .inherit_env
            .iter()
            .chain(&self.inherit_env)
            .cloned()
            .collect();
        let spawn = Spawn {
            command: rendered.command.clone(),
            env,
            inherit_env: inherit_env.clone(),
            working_dir,
            timeout: plan.timeout,
            kill_grace: plan.kill_grace,
            files: match &files {
                Some(files) => Files::Try(files.clone()),
                None => Files::Scratch(self.outputs.clone()),
            },
        };
        let log_for_cancel = log.clone();
        let mut why = cancelled.clone();
        let cancel = async move {
            let _ = why.wait_for(Option::is_some).await;
            let message = match *why.borrow() {
                Some(Cancel::MovedAway) => "this try is no longer this worker's (it was cleared, \
                    marked, timed out with its run, or reaped as a zombie)"
                    .to_owned(),
                Some(Cancel::Shutdown(timeout)) => format!(
                    "the worker is stopping and this try still ran after its shutdown timeout \
                     ({})",
                    human_duration(timeout)
                ),
                None => unreachable!("waited for a reason"),
            };
            let _ = log_for_cancel
                .send(format!("updraft: {message}\n").into_bytes())
                .await;
        };
        let pids = self.pids.clone();
        let (output, forwarded) = capped(log.clone(), self.max_log_bytes);
        let finished = process::run(spawn, output, cancel, move |pid| {
            pids.lock().expect("pids lock").insert(key, pid);
        })
        .await;
        // All the command wrote is in the log before what the worker says of it.
        let _ = forwarded.await;
        self.pids.lock().expect("pids lock").remove(&key);

        let now = Utc::now();
        let (state, next_retry_at, exit_code) = match finished.ending {
            Ending::Exited(code) => {
                let (state, at) = plan.after_exit(code, ti.try_number, ti.max_tries, now);
                (state, at, Some(code))
            }
            // Stopped with its worker: a failure of the try, retried where tries remain (as
            // Airflow's task runner treats SIGTERM).
            Ending::Cancelled if matches!(*cancelled.borrow(), Some(Cancel::Shutdown(_))) => {
                let (state, at) = plan.after_failure(ti.try_number, ti.max_tries, now);
                (state, at, None)
            }
            Ending::Cancelled => (TaskState::Failed, None, None),
            _ => {
                let (state, at) = plan.after_failure(ti.try_number, ti.max_tries, now);
                (state, at, None)
            }
        };
        let _ = log
            .send(footer(&finished.ending, state, next_retry_at).into_bytes())
            .await;
        let handler =
            HandlerName::of_try(state).and_then(|name| Some((name, rendered.handler(name)?)));
        if let Some((name, _)) = handler {
            let note = format!(
                "updraft: the {name} handler runs now; its output is kept beside this try\n"
            );
            let _ = log.send(note.into_bytes()).await;
        }
        let outputs = finished
            .outputs
            .into_iter()
            .map(|(name, value)| (name, masker.mask(&value)))
            .collect();
        drop(log);
        let (rest, log_tail) = shipper.await.unwrap_or_default();
        let reason = process::describe(&finished.ending);
        let handler = handler.map(|(name, handler)| {
            let ending = TryEnding {
                state,
                exit_code,
                reason: &reason,
                log_tail: &log_tail,
            };
            let place = Place {
                folder,
                inherit_env,
                outputs: self.outputs.clone(),
                base_url: self.base_url.clone(),
                scratch,
            };
            HandlerJob::new(
                self.store.clone(),
                &self.claim,
                name,
                handler,
                &ending,
                place,
                masker,
            )
        });
        self.end(state, exit_code, next_retry_at, outputs, rest)
            .await;
        // Stored: nothing is left to adopt.
        if let Some(files) = files {
            files.remove();
        }
        handler
    }

    /// The try's plan and command, the secrets it refers to filled in, and a masker of them; or
    /// why the try cannot start, and how it ends then. Without its plan the try fails, its task
    /// instance's own budget of tries still saying whether it is retried (after the default
    /// delay); templates that do not render, or secrets that cannot be found, fail it like any
    /// other failure, so retries apply (Airflow renders inside the try).
    async fn prepare(&self) -> Result<(TryPlan, Rendered, Masker), (String, Outcome)> {
        let ti = &self.claim.instance;
        let plan = plan_of(ti.rendered_command.as_ref()).map_err(|why| {
            let policy = RetryPolicy::default();
            let outcome = after_failed_try(&policy, ti.try_number, ti.max_tries, Utc::now());
            (why, outcome)
        })?;
        let failed = |why: String| {
            let outcome = plan.after_failure(ti.try_number, ti.max_tries, Utc::now());
            (why, outcome)
        };
        let rendered = match &plan.command {
            Planned::Ready(rendered) => (**rendered).clone(),
            Planned::RenderError(error) => {
                return Err(failed(format!(
                    "cannot render the task's templates: {error}"
                )));
            }
        };
        match updraft_secrets::resolve_rendered(&self.store, &self.secrets, rendered).await {
            Ok((rendered, masker)) => Ok((plan, rendered, masker)),
            Err(error) => Err(failed(format!("cannot look up the try's secrets: {error}"))),
        }
    }

    /// Ends a try that did not start, saying `why` in its log; it runs no handler (its
    /// handler's own secrets may be what is missing).
    async fn did_not_start(
        self,
        why: &str,
        (state, next_retry_at): Outcome,
        log: mpsc::Sender<Vec<u8>>,
        shipper: tokio::task::JoinHandle<(Vec<u8>, Vec<u8>)>,
    ) {
        let then = match next_retry_at {
            Some(at) => format!("up for retry at {}", at.to_rfc3339()),
            None => state.to_string(),
        };
        let message = format!("updraft: {why}\nupdraft: the try did not start; {then}\n");
        let _ = log.send(message.into_bytes()).await;
        drop(log);
        let (tail, _) = shipper.await.unwrap_or_default();
        self.end(state, None, next_retry_at, Vec::new(), tail).await;
    }

    /// Frees the try's slot, then records the outcome with the end of its log, together with
    /// the ends of the worker's other tries (see [`Ends`]); an outcome is never dropped.
    async fn end(
        self,
        state: TaskState,
        exit_code: Option<i32>,
        next_retry_at: Option<DateTime<Utc>>,
        outputs: Vec<(String, String)>,
        log_tail: Vec<u8>,
    ) {
        let ti = &self.claim.instance;
        let _ = self.slot_freed.send(ti.try_key());
        let end = TryEnd {
            key: ti.try_key(),
            worker_id: Some(self.worker_id),
            state,
            exit_code,
            next_retry_at,
            outputs,
            log_tail,
        };
        self.ends.record(end, self.expected).await;
    }
}

/// The plan of a claimed try (see [`TryPlan`]), or why it has none this worker can read.
fn plan_of(value: Option<&serde_json::Value>) -> Result<TryPlan, String> {
    let value = value.ok_or("the task instance has no plan")?;
    TryPlan::deserialize(value).map_err(|error| format!("unreadable plan: {error}"))
}

/// Whether a worker with `free` of its `concurrency` slots free claims now rather than wait for
/// more to free (see [`CLAIM_LINGER`]): a third of its slots, all of them (nothing runs), or
/// once the first freed slot waited long enough.
fn claim_is_due(free: usize, concurrency: usize, lingered: bool) -> bool {
    free >= concurrency.div_ceil(3) || free == concurrency || lingered
}

/// The last line of a try's log: how it ended and what follows.
fn footer(ending: &Ending, state: TaskState, next_retry_at: Option<DateTime<Utc>>) -> String {
    let then = match next_retry_at {
        Some(at) => format!("; up for retry at {}", at.to_rfc3339()),
        None => format!("; {state}"),
    };
    format!("updraft: {}{then}\n", process::describe(ending))
}

/// A sender for a command's output that passes at most `cap` bytes of it on to `log`, says
/// where it cut, and at the end how much it left out; the returned task ends once the output
/// ends and all of it is passed on.
fn capped(
    log: mpsc::Sender<Vec<u8>>,
    cap: u64,
) -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>) {
    let (output, mut chunks) = mpsc::channel::<Vec<u8>>(256);
    let forwarder = tokio::spawn(async move {
        let (mut passed, mut left_out, mut cut) = (0u64, 0u64, false);
        while let Some(mut chunk) = chunks.recv().await {
            let length = chunk.len() as u64;
            if cut {
                left_out += length;
                continue;
            }
            let room = cap.saturating_sub(passed);
            if length > room {
                left_out += length - room;
                chunk.truncate(room as usize);
                chunk.extend_from_slice(
                    format!(
                        "\nupdraft: the log is cut here, at {cap} bytes (the worker's \
                         --max-log-size); what the command writes after this is not stored\n"
                    )
                    .as_bytes(),
                );
                cut = true;
            }
            passed += length.min(room);
            if log.send(chunk).await.is_err() {
                return;
            }
        }
        if left_out > 0 {
            let note =
                format!("updraft: {left_out} bytes of the command's output were not stored\n");
            let _ = log.send(note.into_bytes()).await;
        }
    });
    (output, forwarder)
}

/// Ships a try's log to the database in chunks (every `LOG_FLUSH_INTERVAL`, or sooner when
/// `LOG_FLUSH_BYTES` are waiting), until the sender side closes; returns what is left, which
/// goes with the try's end, and the log's last `LOG_TAIL_BYTES` (for its handler). Chunks that
/// cannot be written while the database is down wait in memory and go with the next flush.
/// What the try was handed of its secrets is masked first.
async fn ship_log(
    store: Store,
    key: TryKey,
    echo: Option<String>,
    mut masker: Masker,
    mut chunks: mpsc::Receiver<Vec<u8>>,
) -> (Vec<u8>, Vec<u8>) {
    let mut buffer: Vec<u8> = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    let mut keep_tail = |chunk: &[u8]| {
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(LOG_TAIL_BYTES)..]);
        let over = tail.len().saturating_sub(LOG_TAIL_BYTES);
        tail.drain(..over);
    };
    let mut line_start = true;
    let mut flush_at = tokio::time::Instant::now() + LOG_FLUSH_INTERVAL;
    loop {
        let next = tokio::time::timeout_at(flush_at, chunks.recv()).await;
        if matches!(next, Ok(None)) {
            // What is left goes with the try's end, in its transaction.
            let rest = masker.finish();
            if let Some(task) = &echo {
                echo_chunk(task, &rest, &mut line_start);
            }
            keep_tail(&rest);
            buffer.extend(rest);
            return (buffer, tail);
        }
        if let Ok(Some(chunk)) = next {
            let chunk = masker.push(&chunk);
            keep_tail(&chunk);
            if let Some(task) = &echo {
                echo_chunk(task, &chunk, &mut line_start);
            }
            buffer.extend_from_slice(&chunk);
            if buffer.len() < LOG_FLUSH_BYTES {
                continue;
            }
        }
        // A failed write keeps the buffer for the next flush (or the try's end).
        if !buffer.is_empty() && store.append_task_log(key, &buffer).await.is_ok() {
            buffer.clear();
        }
        flush_at = tokio::time::Instant::now() + LOG_FLUSH_INTERVAL;
    }
}

/// Prints a chunk of a try's log to stdout, each line prefixed with its task.
fn echo_chunk(task: &str, chunk: &[u8], line_start: &mut bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for piece in chunk.split_inclusive(|&b| b == b'\n') {
        if *line_start {
            let _ = write!(out, "[{task}] ");
        }
        let _ = out.write_all(piece);
        *line_start = piece.ends_with(b"\n");
    }
    let _ = out.flush();
}

/// The folder of a DAG file: commands run there unless `working_dir` says otherwise.
fn dag_folder(fileloc: &str) -> PathBuf {
    Path::new(fileloc)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_waits_for_a_third_of_the_slots_unless_nothing_runs_or_it_waited() {
        // Eight slots: claims take three or more at once.
        assert!(!claim_is_due(1, 8, false));
        assert!(!claim_is_due(2, 8, false));
        assert!(claim_is_due(3, 8, false));
        assert!(
            claim_is_due(2, 8, true),
            "the first freed slot waited long enough"
        );
        // A chain's next task is claimed for as soon as its predecessor ended.
        assert!(claim_is_due(8, 8, false));
        assert!(claim_is_due(1, 1, false));
        assert!(claim_is_due(1, 2, false));
        assert!(!claim_is_due(1, 4, false));
        assert!(claim_is_due(2, 4, false));
    }
}
