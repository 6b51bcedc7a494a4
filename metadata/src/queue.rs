//! The queue (DESIGN §6): the scheduler queues task instances within their pool's slots and
//! their DAG's `max_active_tasks`, workers claim them by priority, heartbeat their tries and
//! report how each ended; the scheduler ends the tries of workers that stopped heartbeating.
//!
//! Limits are checked in the transaction that queues, against counts read in it (never
//! count-then-write): on Postgres the pool and DAG rows involved are locked first, on SQLite the
//! transaction holds the single write lock from its start.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use updraft_core::ids::{BackfillId, DagRunId, TaskInstanceId, TryKey};
use updraft_core::rate::{RateLimit, Window};
use updraft_core::scope::Scope;
use updraft_core::state::{TaskMove, TaskState, WorkerState};

use crate::dags::lock_dags_in;
use crate::db::{Handle, Row, Tx, query, query_split, sqlite_time};
use crate::signal::{Changes, Topic};
use crate::tasks::{TaskInstance, check_moves, id_and_run, kills, move_task_states_in};
use crate::{Backend, Error, Store};

/// A task instance a worker claimed: now `running` under its try `try_number` (its plan in
/// `rendered_command`), with the folder its command runs in.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub instance: TaskInstance,
    /// The DAG file of its DAG (commands run in its folder).
    pub fileloc: String,
}

/// The worker claiming or heartbeating.
#[derive(Debug, Clone, Copy)]
pub struct WorkerRef<'a> {
    pub id: &'a str,
    pub hostname: &'a str,
}

/// How a try ended: the input of [`Store::end_tries`].
#[derive(Debug, Clone, PartialEq)]
pub struct TryEnd {
    pub key: TryKey,
    /// The worker that ran it; `None` when the scheduler ends a zombie's try.
    pub worker_id: Option<String>,
    /// `success`, `failed`, `skipped` or `up_for_retry`.
    pub state: TaskState,
    pub exit_code: Option<i32>,
    /// When `up_for_retry`: not before this instant.
    pub next_retry_at: Option<DateTime<Utc>>,
    pub outputs: Vec<(String, String)>,
    /// The end of the try's log that is not shipped yet: appended in the same transaction, so
    /// a try's last lines cost no write of their own.
    pub log_tail: Vec<u8>,
}

/// A `scheduled` task instance to queue, with the plan of its next try (stored as its
/// `rendered_command`, which the worker that claims it runs by): the input of
/// [`Store::step_task_instances`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRequest {
    pub task_instance: TaskInstanceId,
    pub plan: serde_json::Value,
    /// Its task's rate limit, across the task's runs.
    pub rate_limit: Option<RateLimit>,
}

/// The process (group) id of a running try: the input of [`Store::set_try_pids`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryPid {
    pub key: TryKey,
    pub pid: u32,
}

/// How many times a transaction that Postgres failed to break a deadlock is tried again.
pub(crate) const DEADLOCK_RETRIES: u32 = 3;

/// A registered worker (table `worker`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Worker {
    pub id: String,
    pub hostname: String,
    pub queues: Vec<String>,
    pub concurrency: i32,
    pub state: WorkerState,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// The process holding the worker's name, on `hostname`.
    pub pid: Option<i32>,
}

/// A worker heartbeats every second: one whose last heartbeat is older than this is gone (killed,
/// cut off from the database, or its machine is down), whatever its row's `state` says.
pub const WORKER_LOST_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// How a worker is doing, as `workers list` and the web UI show it: its row's `state`
/// (`running`, `stopping`, `stopped`, or `lost` once a scheduler reaped its tries), or `lost`
/// when a worker that did not stop has not heartbeaten for [`WORKER_LOST_AFTER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    Running,
    Stopping,
    Stopped,
    Lost,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Running => "running",
            WorkerStatus::Stopping => "stopping",
            WorkerStatus::Stopped => "stopped",
            WorkerStatus::Lost => "lost",
        }
    }
}

impl std::fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registered worker with what it runs now: a row of `workers list` and of the web UI's
/// workers page.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerLoad {
    #[serde(flatten)]
    pub worker: Worker,
    /// Task instances running under it (its load, out of `concurrency`).
    pub running: i64,
}

/// The most task instances one claim statement takes on Postgres: a worker with more free
/// slots claims again (see [`Store::claim_task_instances`]).
const MOST_CLAIMED_AT_ONCE: usize = 32;

/// The claim statements on Postgres, by how many task instances they take (1 to
/// [`MOST_CLAIMED_AT_ONCE`]), for a worker of [`Scope::Everything`], of a run and of a
/// backfill: see [`claim_on_postgres`].
static CLAIMS_ON_POSTGRES: LazyLock<[Vec<String>; 3]> = LazyLock::new(|| {
    let claims = |scope| {
        (1..=MOST_CLAIMED_AT_ONCE)
            .map(|limit| claim_on_postgres(limit, scope))
            .collect()
    };
    [
        claims(Scope::Everything),
        claims(Scope::Run(DagRunId(0))),
        claims(Scope::Backfill(BackfillId(0))),
    ]
});

/// The claim of up to `limit` task instances on Postgres, in one statement: each queue (`$1`, a
/// JSON array) read on its own in the order of its partial index (`task_instance_queued_idx`),
/// so that a claim reads a few rows per queue however long the queues are (with `queue IN
/// (...)` the planner reads and sorts the whole queue: 5 ms for 5,000 queued rows); the claimed
/// rows' tries recorded; their runs' versions and DAG files returned. A worker limited to a
/// run or a backfill claims only the task instances of run `$5`, or of the runs of backfill
/// `$5` (the id in `scope` is not written, only which kind it is).
///
/// The limit is written into the text, one statement per limit, and so is the kind of scope:
/// Postgres plans a prepared statement anew at every call while a plan for the values at hand
/// looks cheaper than the generic one, which it did with `LIMIT $n` or with `$5 IS NULL OR ...`
/// (planning cost as much as running it). Without them it plans once per connection.
fn claim_on_postgres(limit: usize, scope: Scope) -> String {
    let run = match scope {
        Scope::Everything => "",
        Scope::Run(_) => " AND dag_run_id = $5",
        Scope::Backfill(_) => " AND dag_run_id IN (SELECT id FROM dag_run WHERE backfill_id = $5)",
    };
    format!(
        "WITH claimed AS (UPDATE task_instance SET state = 'running', \
             try_number = try_number + 1, worker_id = $2, hostname = $3, heartbeat_at = $4, \
             start_date = $4, first_start_date = COALESCE(first_start_date, $4), \
             end_date = NULL, updated_at = $4 \
           WHERE id = ANY(ARRAY(SELECT t.id FROM jsonb_array_elements_text($1) AS q(queue) \
             CROSS JOIN LATERAL (SELECT id, priority_weight, queued_at FROM task_instance \
                 WHERE state = 'queued' AND queue = q.queue{run} \
                 ORDER BY priority_weight DESC, queued_at, id \
                 LIMIT {limit} FOR UPDATE SKIP LOCKED) AS t \
             ORDER BY t.priority_weight DESC, t.queued_at, t.id LIMIT {limit})) \
           RETURNING *), \
         tries AS (INSERT INTO task_try (task_instance_id, try_number, state, worker_id, \
             hostname, start_date) \
           SELECT id, try_number, 'running', $2, $3, $4 FROM claimed) \
         SELECT c.*, d.fileloc FROM claimed c JOIN dag d ON d.dag_id = c.dag_id"
    )
}

/// What [`Store::step_task_instances`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stepped {
    /// For each move, in order, whether it moved.
    pub moved: Vec<bool>,
    /// The task instances queued, in the order of the requests.
    pub queued: Vec<TaskInstanceId>,
    /// The requests a rate limit held back, each with when its limit may have room again.
    pub rate_limited: HashMap<TaskInstanceId, DateTime<Utc>>,
}

/// A task instance to queue and the limits it must fit in.
#[derive(Debug, Clone)]
struct Candidate {
    id: TaskInstanceId,
    dag_id: String,
    task_id: String,
    pool: String,
    pool_slots: i64,
    rate_limit: Option<RateLimit>,
}

/// What a rate limit limits: a task across its runs, or a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Limited {
    Task { dag_id: String, task_id: String },
    Pool(String),
}

impl Candidate {
    /// The rate limits it falls under: its task's, and its pool's (of `pool_limits`).
    fn limited(&self, pool_limits: &HashMap<String, RateLimit>) -> Vec<(Limited, RateLimit)> {
        let task = self.rate_limit.map(|limit| {
            let task = Limited::Task {
                dag_id: self.dag_id.clone(),
                task_id: self.task_id.clone(),
            };
            (task, limit)
        });
        let pool = pool_limits
            .get(&self.pool)
            .map(|&limit| (Limited::Pool(self.pool.clone()), limit));
        task.into_iter().chain(pool).collect()
    }
}

/// What is in use when a queueing transaction starts: slots per pool, task instances per DAG,
/// tries started per rate limit's window.
#[derive(Debug)]
struct Occupancy {
    now: DateTime<Utc>,
    /// Pool name -> (slots, slots in use by queued and running task instances).
    pools: HashMap<String, (i64, i64)>,
    /// DAG id -> (max_active_tasks, queued and running task instances).
    dags: HashMap<String, (i64, i64)>,
    /// The pools with a rate limit.
    pool_limits: HashMap<String, RateLimit>,
    /// The windows of the candidates' rate limits, ending now.
    windows: HashMap<Limited, Window>,
}

/// Why a candidate was not admitted.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// No slot in its pool, or its DAG is at `max_active_tasks`: it waits for room.
    NoRoom,
    /// A rate limit's window is full until then.
    RateLimited(DateTime<Utc>),
}

impl Occupancy {
    fn new(now: DateTime<Utc>) -> Occupancy {
        Occupancy {
            now,
            pools: HashMap::new(),
            dags: HashMap::new(),
            pool_limits: HashMap::new(),
            windows: HashMap::new(),
        }
    }

    /// Takes room for `candidate` if its pool, its DAG and its rate limits have it. A task
    /// instance whose pool does not exist waits for it.
    fn admit(&mut self, candidate: &Candidate) -> Result<(), Refusal> {
        let Some(&(slots, used)) = self.pools.get(&candidate.pool) else {
            return Err(Refusal::NoRoom);
        };
        let Some(&(max_active, active)) = self.dags.get(&candidate.dag_id) else {
            return Err(Refusal::NoRoom);
        };
        if used + candidate.pool_slots > slots || active >= max_active {
            return Err(Refusal::NoRoom);
        }
        let limited = candidate.limited(&self.pool_limits);
        for (subject, _) in &limited {
            if let Some(window) = self.windows.get(subject)
                && !window.has_room()
            {
                return Err(Refusal::RateLimited(window.frees_at(self.now)));
            }
        }
        for (subject, _) in &limited {
            if let Some(window) = self.windows.get_mut(subject) {
                window.take();
            }
        }
        self.pools.entry(candidate.pool.clone()).or_default().1 += candidate.pool_slots;
        self.dags.entry(candidate.dag_id.clone()).or_default().1 += 1;
        Ok(())
    }

    /// Gives back the room [`Occupancy::admit`] took for `candidate`.
    fn release(&mut self, candidate: &Candidate) {
        if let Some((_, used)) = self.pools.get_mut(&candidate.pool) {
            *used -= candidate.pool_slots;
        }
        if let Some((_, active)) = self.dags.get_mut(&candidate.dag_id) {
            *active -= 1;
        }
        for (subject, _) in candidate.limited(&self.pool_limits) {
            if let Some(window) = self.windows.get_mut(&subject) {
                window.give_back();
            }
        }
    }
}

impl Worker {
    /// How the worker is doing at `now` (see [`WorkerStatus`]).
    pub fn status(&self, now: DateTime<Utc>) -> WorkerStatus {
        let silent = (now - self.heartbeat_at).to_std().unwrap_or_default();
        match self.state {
            WorkerState::Stopped => WorkerStatus::Stopped,
            WorkerState::Lost => WorkerStatus::Lost,
            _ if silent > WORKER_LOST_AFTER => WorkerStatus::Lost,
            WorkerState::Stopping => WorkerStatus::Stopping,
            WorkerState::Running => WorkerStatus::Running,
        }
    }

    fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(Worker {
            id: row.get("id")?,
            hostname: row.get("hostname")?,
            queues: row.json("queues")?,
            concurrency: row.get("concurrency")?,
            state: row.name("state")?,
            started_at: row.get("started_at")?,
            heartbeat_at: row.get("heartbeat_at")?,
            pid: row.get("pid")?,
        })
    }
}

impl Store {
    /// Moves `scheduled` task instances to `queued` as [`Store::step_task_instances`] does,
    /// without moves; returns the ids queued. The scheduler queues in its steps; the bench and
    /// the tests queue by hand (feature `scratch`).
    #[cfg(feature = "scratch")]
    pub async fn queue_task_instances(
        &self,
        requests: &[QueueRequest],
        now: DateTime<Utc>,
    ) -> Result<Vec<TaskInstanceId>, Error> {
        Ok(self.step_task_instances(&[], requests, now).await?.queued)
    }

    /// A scheduler's step in one transaction: the compare-and-set `moves` (as
    /// [`Store::set_task_states`]), then the `requests`, among them the task instances the
    /// moves made `scheduled`: each `scheduled` one moves to `queued` with its rendered
    /// command, in the order given (the caller's priority order), as far as its pool's slots
    /// and its DAG's `max_active_tasks` allow; the others stay `scheduled`. On Postgres the
    /// pools and DAGs of the requests are locked first, so that every transaction that queues
    /// takes its locks in the same order: pools, DAGs, task instances.
    ///
    /// A transaction Postgres fails to break a cycle of lock waits (another scheduler's
    /// transaction holding what this one waits for) is tried again, at most
    /// [`DEADLOCK_RETRIES`] times.
    pub async fn step_task_instances(
        &self,
        moves: &[TaskMove],
        requests: &[QueueRequest],
        now: DateTime<Utc>,
    ) -> Result<Stepped, Error> {
        let mut attempt = 0;
        loop {
            match self.step_task_instances_once(moves, requests, now).await {
                Err(error) if error.is_deadlock() && attempt < DEADLOCK_RETRIES => attempt += 1,
                stepped => return stepped,
            }
        }
    }

    async fn step_task_instances_once(
        &self,
        moves: &[TaskMove],
        requests: &[QueueRequest],
        now: DateTime<Utc>,
    ) -> Result<Stepped, Error> {
        check_moves(moves)?;
        if moves.is_empty() && requests.is_empty() {
            return Ok(Stepped::default());
        }
        let mut tx = self.begin("step task instances").await?;
        let mut candidates: HashMap<TaskInstanceId, Candidate> = HashMap::new();
        if !requests.is_empty() {
            let limits: HashMap<TaskInstanceId, RateLimit> = requests
                .iter()
                .filter_map(|request| Some((request.task_instance, request.rate_limit?)))
                .collect();
            let ids = serde_json::json!(
                requests
                    .iter()
                    .map(|request| request.task_instance)
                    .collect::<Vec<_>>()
            );
            candidates = tx
                .fetch_all(
                    query_split(
                        "read task instances to queue",
                        "SELECT id, dag_id, task_id, pool, pool_slots FROM task_instance \
                         WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1)::bigint))",
                        "SELECT id, dag_id, task_id, pool, pool_slots FROM task_instance \
                         WHERE id IN (SELECT value FROM json_each($1))",
                    )
                    .bind(&ids),
                    |row| {
                        let id = row.row_id("id")?;
                        Ok(Candidate {
                            id,
                            dag_id: row.get("dag_id")?,
                            task_id: row.get("task_id")?,
                            pool: row.get("pool")?,
                            pool_slots: row.get::<i32>("pool_slots")?.into(),
                            rate_limit: limits.get(&id).copied(),
                        })
                    },
                )
                .await?
                .into_iter()
                .map(|candidate| (candidate.id, candidate))
                .collect();
        }
        let mut occupancy = match candidates.is_empty() {
            true => Occupancy::new(now),
            false => occupancy(&mut tx, candidates.values(), now).await?,
        };
        let (moved, _) = move_task_states_in(&mut tx, moves, now).await?;
        // The requests are admitted in order while there is room, and the admitted queued in
        // one statement; one that is not `scheduled` any more (a move of this step did not
        // happen, or another scheduler queued it first, and it is counted in the occupancy
        // then) gives its room back to the requests after it.
        let mut queued: HashSet<TaskInstanceId> = HashSet::new();
        let mut rate_limited: HashMap<TaskInstanceId, DateTime<Utc>> = HashMap::new();
        let mut pending: Vec<&QueueRequest> = requests
            .iter()
            .filter(|request| candidates.contains_key(&request.task_instance))
            .collect();
        while !pending.is_empty() {
            let (admitted, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|request| {
                let id = request.task_instance;
                match occupancy.admit(&candidates[&id]) {
                    Ok(()) => true,
                    Err(refusal) => {
                        match refusal {
                            Refusal::RateLimited(until) => rate_limited.insert(id, until),
                            Refusal::NoRoom => rate_limited.remove(&id),
                        };
                        false
                    }
                }
            });
            if admitted.is_empty() {
                break;
            }
            let done = queue_in(&mut tx, &admitted, now).await?;
            for request in &admitted {
                if !done.contains(&request.task_instance) {
                    occupancy.release(&candidates[&request.task_instance]);
                }
            }
            let released = done.len() < admitted.len();
            queued.extend(done);
            pending = if released { rest } else { Vec::new() };
        }
        rate_limited.retain(|id, _| !queued.contains(id));
        let queued: Vec<TaskInstanceId> = requests
            .iter()
            .map(|request| request.task_instance)
            .filter(|id| queued.contains(id))
            .collect();
        let wake_workers = !queued.is_empty() || kills(moves, &moved);
        if wake_workers {
            self.notify_in(&mut tx, Topic::Workers).await?;
        }
        tx.commit("step task instances").await?;
        if wake_workers {
            self.wake(Topic::Workers);
        }
        Ok(Stepped {
            moved,
            queued,
            rate_limited,
        })
    }

    /// Claims up to `limit` queued task instances of `queues` for `worker`, highest
    /// `priority_weight` first, then oldest queued: each becomes `running` under a new try
    /// (recorded in `task_try`). A `scope` other than [`Scope::Everything`] restricts the
    /// claim to one run's task instances (`dags test`) or one backfill's.
    /// On Postgres concurrent claimers skip each other's rows
    /// (`FOR UPDATE SKIP LOCKED`); SQLite has one writer at a time.
    ///
    /// On Postgres a statement claims up to [`MOST_CLAIMED_AT_ONCE`] task instances (see
    /// [`claim_on_postgres`]); the claims of one call are not one transaction.
    pub async fn claim_task_instances(
        &self,
        worker: WorkerRef<'_>,
        queues: &[String],
        scope: Scope,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>, Error> {
        let queues = serde_json::json!(queues);
        let mut claims = match self.backend() {
            Backend::Postgres => {
                // One statement per [`MOST_CLAIMED_AT_ONCE`] task instances (one round trip,
                // its own transaction): the claims, their tries' rows, and what the worker
                // needs of their runs and DAG.
                let (statements, kept_to) = match scope {
                    Scope::Everything => (&CLAIMS_ON_POSTGRES[0], None),
                    Scope::Run(run) => (&CLAIMS_ON_POSTGRES[1], Some(run.0)),
                    Scope::Backfill(backfill) => (&CLAIMS_ON_POSTGRES[2], Some(backfill.0)),
                };
                let mut claims: Vec<Claim> = Vec::new();
                while claims.len() < limit {
                    let asked = (limit - claims.len()).min(MOST_CLAIMED_AT_ONCE);
                    let claim = query("claim task instances", &statements[asked - 1])
                        .bind(&queues)
                        .bind(worker.id)
                        .bind(worker.hostname)
                        .bind(now);
                    let claim = match kept_to {
                        Some(id) => claim.bind(id),
                        None => claim,
                    };
                    let claimed = self
                        .fetch_all(claim, |row| {
                            Ok(Claim {
                                instance: TaskInstance::from_row(row)?,
                                fileloc: row.get("fileloc")?,
                            })
                        })
                        .await?;
                    let exhausted = claimed.len() < asked;
                    claims.extend(claimed);
                    if exhausted {
                        break;
                    }
                }
                claims
            }
            Backend::Sqlite => {
                self.claim_on_sqlite(worker, &queues, scope, limit, now)
                    .await?
            }
        };
        claims.sort_by_key(|claim| {
            let ti = &claim.instance;
            (std::cmp::Reverse(ti.priority_weight), ti.queued_at, ti.id)
        });
        Ok(claims)
    }

    /// [`Store::claim_task_instances`] on SQLite: one transaction, which holds the single write
    /// lock from its start.
    async fn claim_on_sqlite(
        &self,
        worker: WorkerRef<'_>,
        queues: &serde_json::Value,
        scope: Scope,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claim>, Error> {
        let (run, backfill) = match scope {
            Scope::Everything => (None, None),
            Scope::Run(run) => (Some(run), None),
            Scope::Backfill(backfill) => (None, Some(backfill)),
        };
        // Between the tries of a chain a worker asks when a slot frees, before the next task
        // is queued, and finds nothing: a read says so without waiting for the turn to write
        // and taking SQLite's single write lock (which the end and the scheduler's step wait
        // for). Work queued after this read wakes the worker, which claims again.
        let found = self
            .fetch_optional(
                query(
                    "look for queued task instances",
                    "SELECT 1 AS found FROM task_instance \
                     WHERE state = 'queued' AND queue IN (SELECT value FROM json_each($1)) \
                       AND ($2 IS NULL OR dag_run_id = $2) \
                       AND ($3 IS NULL OR dag_run_id IN \
                         (SELECT id FROM dag_run WHERE backfill_id = $3)) \
                     LIMIT 1",
                )
                .bind(queues)
                .bind(run)
                .bind(backfill),
                |row| row.get::<i64>("found"),
            )
            .await?;
        if found.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin("claim task instances").await?;
        let claimed = tx
            .fetch_all(
                query(
                    "claim task instances",
                    "UPDATE task_instance SET state = 'running', try_number = try_number + 1, \
                         worker_id = $3, hostname = $4, heartbeat_at = $5, start_date = $5, \
                         first_start_date = COALESCE(first_start_date, $5), \
                         end_date = NULL, updated_at = $5 \
                     WHERE id IN (SELECT id FROM task_instance \
                         WHERE state = 'queued' AND queue IN (SELECT value FROM json_each($1)) \
                           AND ($6 IS NULL OR dag_run_id = $6) \
                           AND ($7 IS NULL OR dag_run_id IN \
                             (SELECT id FROM dag_run WHERE backfill_id = $7)) \
                         ORDER BY priority_weight DESC, queued_at, id \
                         LIMIT $2) \
                     RETURNING *",
                )
                .bind(queues)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .bind(worker.id)
                .bind(worker.hostname)
                .bind(now)
                .bind(run)
                .bind(backfill),
                TaskInstance::from_row,
            )
            .await?;
        if claimed.is_empty() {
            tx.commit("claim task instances").await?;
            return Ok(Vec::new());
        }
        let ids = serde_json::json!(claimed.iter().map(|ti| ti.id).collect::<Vec<_>>());
        tx.execute(
            query(
                "record task tries",
                "INSERT INTO task_try (task_instance_id, try_number, state, worker_id, \
                     hostname, start_date) \
                 SELECT id, try_number, 'running', $2, $3, $4 FROM task_instance \
                 WHERE id IN (SELECT value FROM json_each($1))",
            )
            .bind(&ids)
            .bind(worker.id)
            .bind(worker.hostname)
            .bind(now),
        )
        .await?;
        let mut found: HashMap<TaskInstanceId, String> = tx
            .fetch_all(
                query(
                    "read the runs of claimed task instances",
                    "SELECT t.id, d.fileloc FROM task_instance t \
                     JOIN dag d ON d.dag_id = t.dag_id \
                     WHERE t.id IN (SELECT value FROM json_each($1))",
                )
                .bind(&ids),
                |row| Ok((row.row_id("id")?, row.get("fileloc")?)),
            )
            .await?
            .into_iter()
            .collect();
        let mut claims = Vec::with_capacity(claimed.len());
        for instance in claimed {
            // The foreign keys keep a task instance's run and DAG.
            let fileloc = found.remove(&instance.id).ok_or_else(|| {
                Error::NotFound(format!("the DAG of task instance {}", instance.id))
            })?;
            claims.push(Claim { instance, fileloc });
        }
        tx.commit("claim task instances").await?;
        Ok(claims)
    }

    /// Records the process ids of running tries (each its process group), so that they can be
    /// found and killed if their worker dies. One statement for them all: a worker records the
    /// pids of the tries it started at its next heartbeat, not one write per try.
    pub async fn set_try_pids(&self, pids: &[TryPid]) -> Result<(), Error> {
        if pids.is_empty() {
            return Ok(());
        }
        let pids = serde_json::json!(
            pids.iter()
                .map(|TryPid { key, pid }| serde_json::json!({
                    "id": key.task_instance,
                    "try": key.try_number,
                    "pid": pid,
                }))
                .collect::<Vec<_>>()
        );
        self.execute(
            query_split(
                "record the process ids of tries",
                "UPDATE task_try SET pid = p.pid \
                 FROM jsonb_to_recordset($1) AS p(id bigint, try integer, pid integer) \
                 WHERE task_instance_id = p.id AND try_number = p.try",
                "UPDATE task_try SET pid = p.pid \
                 FROM (SELECT json_extract(value, '$.id') AS id, \
                     json_extract(value, '$.try') AS try, json_extract(value, '$.pid') AS pid \
                     FROM json_each($1)) AS p \
                 WHERE task_instance_id = p.id AND try_number = p.try",
            )
            .bind(&pids),
        )
        .await?;
        Ok(())
    }

    /// Heartbeats the worker and every try it runs; returns the keys of the tries that are still
    /// its own and `running`. A try missing from the answer was moved
    /// away (cleared, marked, timed out with its run, or reaped as a zombie): kill it.
    ///
    /// On Postgres the heartbeat never waits for a row lock: it skips the tries whose rows
    /// another transaction holds (an end of this worker being written, a user's mark) and
    /// answers from its snapshot, where they are still running; the next heartbeat sees how
    /// that transaction ended. Locking the worker's rows instead, in the order its scan met
    /// them, deadlocked with a batch of its ends locking them in another order: Postgres broke
    /// the cycle after a second by failing one of them (the `workers` benchmark hit it in
    /// about one run in three).
    ///
    /// `held_since` is when this process took the worker's name (the row's `started_at`): if
    /// the row says otherwise, another process took the name over (this one was silent too
    /// long) and the answer is [`Error::Conflict`], with nothing written.
    pub async fn heartbeat_worker(
        &self,
        worker_id: &str,
        held_since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<TryKey>, Error> {
        let mut tx = self.begin("heartbeat a worker").await?;
        let sql = match held_since {
            None => {
                "UPDATE worker SET heartbeat_at = $2, \
                     state = CASE state WHEN 'lost' THEN 'running' ELSE state END \
                 WHERE id = $1"
            }
            Some(_) => {
                "UPDATE worker SET heartbeat_at = $2, \
                     state = CASE state WHEN 'lost' THEN 'running' ELSE state END \
                 WHERE id = $1 AND started_at = $3"
            }
        };
        let mut beat = query("heartbeat a worker", sql).bind(worker_id).bind(now);
        if let Some(since) = held_since {
            beat = beat.bind(since);
        }
        let beaten = tx.execute(beat).await?;
        if held_since.is_some() && beaten == 0 {
            return Err(Error::Conflict(format!(
                "another process took over the worker name '{worker_id}'"
            )));
        }
        let running = tx
            .fetch_all(
                query_split(
                    "heartbeat running tries",
                    "WITH beat AS (UPDATE task_instance SET heartbeat_at = $2 \
                       WHERE id IN (SELECT id FROM task_instance \
                         WHERE worker_id = $1 AND state = 'running' FOR UPDATE SKIP LOCKED)) \
                     SELECT id, try_number FROM task_instance \
                     WHERE worker_id = $1 AND state = 'running'",
                    "UPDATE task_instance SET heartbeat_at = $2 \
                     WHERE worker_id = $1 AND state = 'running' \
                     RETURNING id, try_number",
                )
                .bind(worker_id)
                .bind(now),
                |row| {
                    Ok(TryKey {
                        task_instance: row.row_id("id")?,
                        try_number: row.get("try_number")?,
                    })
                },
            )
            .await?;
        tx.commit("heartbeat a worker").await?;
        Ok(running)
    }

    /// Ends a running try (see [`Store::end_tries`]); returns false when its task instance had
    /// been moved away meanwhile.
    pub async fn end_try(&self, end: &TryEnd, now: DateTime<Utc>) -> Result<bool, Error> {
        let moved = self.end_tries(std::slice::from_ref(end), now).await?;
        Ok(moved[0])
    }

    /// Ends running tries, all in one transaction: each task instance moves from `running` to
    /// its end's state (if it is still running that try, under that worker when one is named),
    /// each try row records its outcome, and the outputs and the log's last lines are stored.
    /// Returns, in the order of `ends`, whether each task instance moved; a try whose task
    /// instance had been moved away meanwhile (cleared, marked, reaped) keeps its new state, and
    /// its try row is ended anyway.
    ///
    /// A worker's tries end one by one, but it writes their ends together: one commit for all
    /// the tries that ended while the previous write was under way (see the executor's `ends`).
    pub async fn end_tries(&self, ends: &[TryEnd], now: DateTime<Utc>) -> Result<Vec<bool>, Error> {
        if let Some(end) = ends
            .iter()
            .find(|end| !TaskState::Running.can_move_to(end.state))
        {
            return Err(Error::IllegalTaskTransition {
                from: TaskState::Running,
                to: end.state,
            });
        }
        if ends.is_empty() {
            return Ok(Vec::new());
        }
        if self.backend() == Backend::Postgres {
            return self.end_tries_on_postgres(ends, now).await;
        }
        let mut tx = self.begin("end task tries").await?;
        let moved = end_tries_on_sqlite(&mut tx, ends, now).await?;
        tx.commit("end task tries").await?;
        let instances: Vec<(DagRunId, TaskInstanceId)> = ends
            .iter()
            .zip(&moved)
            .filter_map(|(end, run)| run.map(|run| (run, end.key.task_instance)))
            .collect();
        if !instances.is_empty() {
            self.wake_schedulers(&Changes::of_instances(&instances));
        }
        Ok(moved.iter().map(Option::is_some).collect())
    }

    /// [`Store::end_tries`] on Postgres, in one statement (one round trip, its own transaction):
    /// the ends are a JSON array read as a table, each part a data-modifying `WITH` clause, all
    /// on one snapshot; the events, the outputs and the scheduler's wake-up hang on the task
    /// instances' moves (`moved`), as the SQLite transaction's steps do.
    ///
    /// The updated rows are found by `id = ANY(ARRAY(SELECT id FROM ends))`, which reads them by
    /// primary key. Joined on `ends` alone (which the planner takes for 100 rows), the plan
    /// read every `running` entry of the state index, or all of `task_try`, at every end:
    /// entries that each try's two moves leave behind until vacuum.
    async fn end_tries_on_postgres(
        &self,
        ends: &[TryEnd],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, Error> {
        let rows = end_rows(ends);
        let moved: Vec<(TaskInstanceId, i32, DagRunId)> = self
            .fetch_one(
                query(
                    "end task tries",
                    "WITH ends AS (SELECT * FROM jsonb_to_recordset($1) AS e(id bigint, \
                         try integer, worker text, state text, exit_code integer, \
                         next_retry_at timestamptz, tail text, outputs jsonb)), \
                     moved AS (UPDATE task_instance t SET state = e.state, end_date = $2, \
                         updated_at = $2, next_retry_at = e.next_retry_at \
                       FROM ends e \
                       WHERE t.id = ANY(ARRAY(SELECT id FROM ends)) AND t.id = e.id \
                         AND t.try_number = e.try AND t.state = 'running' \
                         AND (e.worker IS NULL OR t.worker_id = e.worker) \
                       RETURNING t.id, t.try_number, t.dag_run_id, t.dag_id, t.run_id, \
                         t.task_id), \
                     ended AS (UPDATE task_try r SET state = e.state, exit_code = e.exit_code, \
                         end_date = $2 \
                       FROM ends e \
                       WHERE r.task_instance_id = ANY(ARRAY(SELECT id FROM ends)) \
                         AND r.task_instance_id = e.id AND r.try_number = e.try \
                         AND r.state = 'running'), \
                     logged AS (INSERT INTO task_log (task_instance_id, try_number, seq, data) \
                       SELECT e.id, e.try, COALESCE((SELECT MAX(l.seq) FROM task_log l \
                           WHERE l.task_instance_id = e.id AND l.try_number = e.try), 0) + 1, \
                         decode(e.tail, 'hex') \
                       FROM ends e WHERE e.tail <> ''), \
                     event AS (INSERT INTO event_log (at, actor, dag_id, run_id, task_id, \
                         event, details) \
                       SELECT $2, COALESCE('worker ' || e.worker, 'scheduler'), m.dag_id, \
                         m.run_id, m.task_id, 'try_ended', jsonb_build_object('state', e.state, \
                           'try_number', e.try, 'exit_code', e.exit_code) \
                       FROM moved m JOIN ends e ON e.id = m.id), \
                     outputs AS (INSERT INTO task_output (task_instance_id, name, value) \
                       SELECT m.id, output.key, output.value \
                       FROM moved m JOIN ends e ON e.id = m.id \
                         CROSS JOIN jsonb_each_text(e.outputs) AS output \
                       ON CONFLICT (task_instance_id, name) DO UPDATE SET value = excluded.value) \
                     SELECT (SELECT COALESCE(jsonb_agg(jsonb_build_array(id, try_number, \
                         dag_run_id)), '[]'::jsonb) FROM moved) AS moved, \
                       (SELECT pg_notify('updraft_scheduler', CASE \
                           WHEN length(instances) <= 7900 THEN instances \
                           WHEN length(runs) <= 7900 THEN runs ELSE '*' END) \
                         FROM (SELECT string_agg(dag_run_id || '/' || id, ',') AS instances, \
                             string_agg(DISTINCT dag_run_id::text, ',') AS runs \
                           FROM moved) r WHERE runs IS NOT NULL) AS notified",
                )
                .bind(&rows)
                .bind(now),
                |row| row.json("moved"),
            )
            .await?;
        let instances: Vec<(DagRunId, TaskInstanceId)> =
            moved.iter().map(|&(id, _, run)| (run, id)).collect();
        if !instances.is_empty() {
            self.wake_schedulers(&Changes::of_instances(&instances));
        }
        Ok(ends
            .iter()
            .map(|end| {
                moved.iter().any(|&(task_instance, try_number, _)| {
                    end.key
                        == TryKey {
                            task_instance,
                            try_number,
                        }
                })
            })
            .collect())
    }

    /// Marks `lost` the running and stopping workers that have not heartbeaten since `cutoff`
    /// (the zombie threshold's: their tries are reaped); a heartbeat makes one running again.
    pub async fn mark_workers_lost(&self, cutoff: DateTime<Utc>) -> Result<(), Error> {
        self.execute(
            query(
                "mark workers lost",
                "UPDATE worker SET state = 'lost' \
                 WHERE state IN ('running', 'stopping') AND heartbeat_at < $1",
            )
            .bind(cutoff),
        )
        .await?;
        Ok(())
    }

    /// Running task instances whose last heartbeat is older than `cutoff`: their workers died.
    pub async fn list_zombies(&self, cutoff: DateTime<Utc>) -> Result<Vec<TaskInstance>, Error> {
        self.fetch_all(
            query(
                "list zombie task instances",
                "SELECT * FROM task_instance \
                 WHERE state = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < $1) \
                 ORDER BY id",
            )
            .bind(cutoff),
            TaskInstance::from_row,
        )
        .await
    }

    /// Takes the name `worker.id` for this process, as `running`: registers it when no worker
    /// had it (`seen` is `None`), or takes it over from the row read before (`seen`), if that
    /// row is still as it was read. Returns false when another process registered, took over
    /// or heartbeated the name meanwhile: read it again and decide again. Deciding whether a
    /// name may be taken is the caller's (the executor's `name::holder`).
    pub async fn claim_worker_name(
        &self,
        worker: &Worker,
        seen: Option<&Worker>,
    ) -> Result<bool, Error> {
        let queues = serde_json::json!(worker.queues);
        let (what, sql) = match seen {
            None => (
                "register a worker",
                "INSERT INTO worker (id, hostname, queues, concurrency, state, started_at, \
                     heartbeat_at, pid) \
                 VALUES ($1, $2, $3, $4, 'running', $5, $6, $7) \
                 ON CONFLICT (id) DO NOTHING",
            ),
            Some(_) => (
                "take over a worker's name",
                "UPDATE worker SET hostname = $2, queues = $3, concurrency = $4, \
                     state = 'running', started_at = $5, heartbeat_at = $6, pid = $7 \
                 WHERE id = $1 AND state = $8 AND started_at = $9 AND heartbeat_at = $10",
            ),
        };
        let mut claim = query(what, sql)
            .bind(worker.id.as_str())
            .bind(worker.hostname.as_str())
            .bind(&queues)
            .bind(worker.concurrency)
            .bind(worker.started_at)
            .bind(worker.heartbeat_at)
            .bind(worker.pid);
        if let Some(seen) = seen {
            claim = claim
                .bind(seen.state.as_str())
                .bind(seen.started_at)
                .bind(seen.heartbeat_at);
        }
        Ok(self.execute(claim).await? == 1)
    }

    /// Sets a worker's state (`stopping` while it drains, `stopped` when it has left).
    pub async fn set_worker_state(&self, worker_id: &str, state: WorkerState) -> Result<(), Error> {
        self.execute(
            query(
                "set a worker's state",
                "UPDATE worker SET state = $2 WHERE id = $1",
            )
            .bind(worker_id)
            .bind(state.as_str()),
        )
        .await?;
        Ok(())
    }

    /// Every registered worker. The CLI and the web read them with their load
    /// ([`Store::list_worker_loads`]); the bench and the tests read them so (feature
    /// `scratch`).
    #[cfg(feature = "scratch")]
    pub async fn list_workers(&self) -> Result<Vec<Worker>, Error> {
        self.fetch_all(
            query("list workers", "SELECT * FROM worker ORDER BY hostname, id"),
            Worker::from_row,
        )
        .await
    }

    pub async fn get_worker(&self, id: &str) -> Result<Option<Worker>, Error> {
        self.fetch_optional(
            query("read a worker", "SELECT * FROM worker WHERE id = $1").bind(id),
            Worker::from_row,
        )
        .await
    }

    /// Every registered worker with the number of task instances running under it, by host
    /// name and id. One query; the count reads only `running` task instances.
    pub async fn list_worker_loads(&self) -> Result<Vec<WorkerLoad>, Error> {
        self.fetch_all(
            query(
                "list workers and their load",
                "SELECT w.*, COALESCE(r.running, 0) AS running FROM worker w \
                 LEFT JOIN (SELECT worker_id, COUNT(*) AS running FROM task_instance \
                     WHERE state = 'running' GROUP BY worker_id) r ON r.worker_id = w.id \
                 ORDER BY w.hostname, w.id",
            ),
            |row| {
                Ok(WorkerLoad {
                    worker: Worker::from_row(row)?,
                    running: row.get("running")?,
                })
            },
        )
        .await
    }

    /// Records that scheduler `id` is alive at `now`.
    pub async fn heartbeat_scheduler(
        &self,
        id: &str,
        hostname: &str,
        started_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        self.execute(
            query(
                "heartbeat the scheduler",
                "INSERT INTO scheduler (id, hostname, started_at, heartbeat_at) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            )
            .bind(id)
            .bind(hostname)
            .bind(started_at)
            .bind(now),
        )
        .await?;
        Ok(())
    }

    /// The newest scheduler heartbeat, if any scheduler ever ran.
    pub async fn last_scheduler_heartbeat(&self) -> Result<Option<DateTime<Utc>>, Error> {
        self.fetch_one(
            query(
                "read the last scheduler heartbeat",
                "SELECT MAX(heartbeat_at) AS at FROM scheduler",
            ),
            |row| row.get("at"),
        )
        .await
    }
}

/// Moves the `scheduled` task instances of `requests` to `queued` with their rendered
/// commands, in one statement; returns those that moved.
async fn queue_in(
    tx: &mut Tx,
    requests: &[&QueueRequest],
    now: DateTime<Utc>,
) -> Result<HashSet<TaskInstanceId>, Error> {
    let rows = serde_json::Value::Array(
        requests
            .iter()
            .map(|request| {
                serde_json::json!({ "id": request.task_instance, "rendered": request.plan })
            })
            .collect(),
    );
    let queued = tx
        .fetch_all(
            query_split(
                "queue task instances",
                "UPDATE task_instance t SET state = 'queued', queued_at = $2, updated_at = $2, \
                     rendered_command = q.rendered \
                 FROM jsonb_to_recordset($1) AS q(id bigint, rendered jsonb) \
                 WHERE t.id = ANY(ARRAY(SELECT (e ->> 'id')::bigint \
                         FROM jsonb_array_elements($1) AS e)) \
                   AND t.id = q.id AND t.state = 'scheduled' \
                 RETURNING t.id",
                // `NOT INDEXED`: by primary key (the rowid), never by the state index.
                "UPDATE task_instance NOT INDEXED SET state = 'queued', queued_at = $2, \
                     updated_at = $2, rendered_command = q.value -> 'rendered' \
                 FROM json_each($1) AS q \
                 WHERE task_instance.id = q.value ->> 'id' \
                   AND task_instance.state = 'scheduled' \
                 RETURNING task_instance.id",
            )
            .bind(&rows)
            .bind(now),
            |row| row.row_id("id"),
        )
        .await?;
    Ok(queued.into_iter().collect())
}

/// Reads what the candidates' pools and DAGs have in use, and the windows of their rate
/// limits, locking the pools' and DAGs' rows on Postgres so that concurrent schedulers queue
/// one after the other (every queueing of a task or a pool holds its DAG's or its pool's lock,
/// so its window's count is not raced).
///
/// The locks are taken by statements of their own, before the counts are read. Under Postgres's
/// READ COMMITTED a statement reads the snapshot of its start: a `SELECT ... FOR UPDATE` that
/// waited for another scheduler's lock returns the locked rows as that scheduler left them,
/// but a count computed in the same statement would still miss what it queued, and the limit
/// would be exceeded. A count read after the lock is granted sees it.
async fn occupancy(
    tx: &mut Tx,
    candidates: impl Iterator<Item = &Candidate> + Clone,
    now: DateTime<Utc>,
) -> Result<Occupancy, Error> {
    let mut pools: Vec<&str> = Vec::new();
    let mut dags: Vec<&str> = Vec::new();
    for candidate in candidates.clone() {
        pools.push(&candidate.pool);
        dags.push(&candidate.dag_id);
    }
    pools.sort_unstable();
    pools.dedup();
    dags.sort_unstable();
    dags.dedup();
    let (pools, dags) = (serde_json::json!(pools), serde_json::json!(dags));
    if let Handle::Postgres(_) = tx {
        tx.fetch_all(
            query(
                "lock pools",
                "SELECT name FROM pool \
                 WHERE name = ANY(ARRAY(SELECT jsonb_array_elements_text($1))) \
                 ORDER BY name FOR UPDATE",
            )
            .bind(&pools),
            |row| row.get::<String>("name"),
        )
        .await?;
    }
    lock_dags_in(tx, &dags).await?;
    // Both limits in one statement (one round trip): each row a pool (its slots, the slots in
    // use and its rate limit) or a DAG (its `max_active_tasks` and its queued and running
    // task instances). SQLite, without statistics, would count a pool's slots through the
    // pool's index (every task instance it ever had): it is told to use the state's.
    let mut occupancy = Occupancy::new(now);
    let rows = tx
        .fetch_all(
            query_split(
                "read pool slots and dag task limits",
                "SELECT 'pool' AS kind, name, slots::bigint AS room, \
                     (SELECT COALESCE(SUM(pool_slots), 0) FROM task_instance t \
                      WHERE t.pool = p.name AND t.state IN ('queued', 'running'))::bigint AS used, \
                     rate_limit \
                 FROM pool p WHERE name = ANY(ARRAY(SELECT jsonb_array_elements_text($1))) \
                 UNION ALL \
                 SELECT 'dag', dag_id, max_active_tasks::bigint, \
                     (SELECT COUNT(*) FROM task_instance t \
                      WHERE t.dag_id = d.dag_id AND t.state IN ('queued', 'running')), NULL \
                 FROM dag d WHERE dag_id = ANY(ARRAY(SELECT jsonb_array_elements_text($2)))",
                "SELECT 'pool' AS kind, name, slots AS room, \
                     (SELECT COALESCE(SUM(pool_slots), 0) \
                      FROM task_instance t INDEXED BY task_instance_state_dag_id_idx \
                      WHERE t.pool = p.name AND t.state IN ('queued', 'running')) AS used, \
                     rate_limit \
                 FROM pool p WHERE name IN (SELECT value FROM json_each($1)) \
                 UNION ALL \
                 SELECT 'dag', dag_id, max_active_tasks, \
                     (SELECT COUNT(*) FROM task_instance t \
                      WHERE t.dag_id = d.dag_id AND t.state IN ('queued', 'running')), NULL \
                 FROM dag d WHERE dag_id IN (SELECT value FROM json_each($2))",
            )
            .bind(&pools)
            .bind(&dags),
            |row| {
                Ok((
                    row.get::<String>("kind")?,
                    row.get::<String>("name")?,
                    row.get::<i64>("room")?,
                    row.get::<i64>("used")?,
                    row.parsed::<RateLimit>("rate_limit")?,
                ))
            },
        )
        .await?;
    for (kind, name, room, used, rate_limit) in rows {
        if kind == "pool" {
            if let Some(limit) = rate_limit {
                occupancy.pool_limits.insert(name.clone(), limit);
            }
            occupancy.pools.insert(name, (room, used));
        } else {
            occupancy.dags.insert(name, (room, used));
        }
    }
    let mut limited: Vec<(Limited, RateLimit)> = candidates
        .flat_map(|candidate| candidate.limited(&occupancy.pool_limits))
        .collect();
    limited.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    limited.dedup_by(|a, b| a.0 == b.0);
    for (subject, limit) in limited {
        let window = window(tx, &subject, limit, now).await?;
        occupancy.windows.insert(subject, window);
    }
    Ok(occupancy)
}

/// The window of `limit` on `subject` ending at `now`: the tries started in it (found through
/// the task instances whose last try started in it: an earlier try started before), and the
/// task instances queued.
async fn window(
    tx: &mut Tx,
    subject: &Limited,
    limit: RateLimit,
    now: DateTime<Utc>,
) -> Result<Window, Error> {
    // SQLite is told to count the queued by the state index: it has no statistics to tell
    // that few task instances are queued.
    let since = Window::since(limit, now);
    let statement = match subject {
        Limited::Task { dag_id, task_id } => query_split(
            "read a task's rate limit window",
            "SELECT COUNT(*) AS started, MIN(r.start_date) AS oldest, \
                 (SELECT COUNT(*) FROM task_instance q \
                  WHERE q.state = 'queued' AND q.dag_id = $1 AND q.task_id = $2) AS queued \
             FROM task_instance t JOIN task_try r ON r.task_instance_id = t.id \
             WHERE t.dag_id = $1 AND t.task_id = $2 AND t.start_date > $3 AND r.start_date > $3",
            "SELECT COUNT(*) AS started, MIN(r.start_date) AS oldest, \
                 (SELECT COUNT(*) FROM task_instance q INDEXED BY task_instance_state_dag_id_idx \
                  WHERE q.state = 'queued' AND q.dag_id = $1 AND q.task_id = $2) AS queued \
             FROM task_instance t JOIN task_try r ON r.task_instance_id = t.id \
             WHERE t.dag_id = $1 AND t.task_id = $2 AND t.start_date > $3 AND r.start_date > $3",
        )
        .bind(dag_id.as_str())
        .bind(task_id.as_str())
        .bind(since),
        Limited::Pool(pool) => query_split(
            "read a pool's rate limit window",
            "SELECT COUNT(*) AS started, MIN(r.start_date) AS oldest, \
                 (SELECT COUNT(*) FROM task_instance q \
                  WHERE q.state = 'queued' AND q.pool = $1) AS queued \
             FROM task_instance t JOIN task_try r ON r.task_instance_id = t.id \
             WHERE t.pool = $1 AND t.start_date > $2 AND r.start_date > $2",
            "SELECT COUNT(*) AS started, MIN(r.start_date) AS oldest, \
                 (SELECT COUNT(*) FROM task_instance q INDEXED BY task_instance_state_dag_id_idx \
                  WHERE q.state = 'queued' AND q.pool = $1) AS queued \
             FROM task_instance t JOIN task_try r ON r.task_instance_id = t.id \
             WHERE t.pool = $1 AND t.start_date > $2 AND r.start_date > $2",
        )
        .bind(pool.as_str())
        .bind(since),
    };
    let (started, oldest, queued) = tx
        .fetch_one(statement, |row| {
            Ok((
                row.get::<i64>("started")?,
                row.get::<Option<DateTime<Utc>>>("oldest")?,
                row.get::<i64>("queued")?,
            ))
        })
        .await?;
    Ok(Window {
        limit,
        used: u64::try_from(started + queued).unwrap_or(0),
        oldest,
    })
}

/// [`Store::end_tries`] on SQLite, in `tx`: one statement per part, as the parts of the
/// Postgres statement (see [`Store::end_tries_on_postgres`]); for each end, the run of its task
/// instance when it moved.
async fn end_tries_on_sqlite(
    tx: &mut Tx,
    ends: &[TryEnd],
    now: DateTime<Utc>,
) -> Result<Vec<Option<DagRunId>>, Error> {
    let rows = end_rows(ends);
    let moved: HashMap<TaskInstanceId, DagRunId> = tx
        .fetch_all(
            query(
                "end task instances' tries",
                // `NOT INDEXED`: by primary key (the rowid), never by the state index.
                "UPDATE task_instance NOT INDEXED SET state = e.value ->> 'state', \
                     end_date = $2, updated_at = $2, next_retry_at = e.value ->> 'next_retry_at' \
                 FROM json_each($1) AS e \
                 WHERE task_instance.id = e.value ->> 'id' \
                   AND task_instance.try_number = e.value ->> 'try' \
                   AND task_instance.state = 'running' \
                   AND (e.value ->> 'worker' IS NULL \
                     OR task_instance.worker_id = e.value ->> 'worker') \
                 RETURNING task_instance.id, task_instance.dag_run_id",
            )
            .bind(&rows)
            .bind(now),
            id_and_run,
        )
        .await?
        .into_iter()
        .collect();
    tx.execute(
        query(
            "end task tries",
            "UPDATE task_try SET state = e.value ->> 'state', \
                 exit_code = e.value ->> 'exit_code', end_date = $2 \
             FROM json_each($1) AS e \
             WHERE task_try.task_instance_id = e.value ->> 'id' \
               AND task_try.try_number = e.value ->> 'try' AND task_try.state = 'running'",
        )
        .bind(&rows)
        .bind(now),
    )
    .await?;
    if ends.iter().any(|end| !end.log_tail.is_empty()) {
        tx.execute(
            query(
                "append the ends of tries' logs",
                "INSERT INTO task_log (task_instance_id, try_number, seq, data) \
                 SELECT e.value ->> 'id', e.value ->> 'try', \
                     COALESCE((SELECT MAX(l.seq) FROM task_log l \
                         WHERE l.task_instance_id = e.value ->> 'id' \
                           AND l.try_number = e.value ->> 'try'), 0) + 1, \
                     unhex(e.value ->> 'tail') \
                 FROM json_each($1) AS e WHERE e.value ->> 'tail' <> ''",
            )
            .bind(&rows),
        )
        .await?;
    }
    if !moved.is_empty() {
        let ids = serde_json::json!(moved.keys().collect::<Vec<_>>());
        tx.execute(
            query(
                "log the ends of tries",
                "INSERT INTO event_log (at, actor, dag_id, run_id, task_id, event, details) \
                 SELECT $2, e.value ->> 'actor', t.dag_id, t.run_id, t.task_id, 'try_ended', \
                     e.value -> 'details' \
                 FROM json_each($1) AS e JOIN task_instance t ON t.id = e.value ->> 'id' \
                 WHERE e.value ->> 'id' IN (SELECT value FROM json_each($3))",
            )
            .bind(&rows)
            .bind(now)
            .bind(&ids),
        )
        .await?;
        if ends.iter().any(|end| !end.outputs.is_empty()) {
            tx.execute(
                query(
                    "record task outputs",
                    "INSERT INTO task_output (task_instance_id, name, value) \
                     SELECT e.value ->> 'id', o.key, o.value \
                     FROM json_each($1) AS e, json_each(e.value -> 'outputs') AS o \
                     WHERE e.value ->> 'id' IN (SELECT value FROM json_each($2)) \
                     ON CONFLICT (task_instance_id, name) DO UPDATE SET value = excluded.value",
                )
                .bind(&rows)
                .bind(&ids),
            )
            .await?;
        }
    }
    Ok(ends
        .iter()
        .map(|end| moved.get(&end.key.task_instance).copied())
        .collect())
}

/// Try ends as a JSON array of rows, as both backends' statements read them.
fn end_rows(ends: &[TryEnd]) -> serde_json::Value {
    serde_json::Value::Array(
        ends.iter()
            .map(|end| {
                serde_json::json!({
                    "id": end.key.task_instance,
                    "try": end.key.try_number,
                    "worker": end.worker_id,
                    "state": end.state.as_str(),
                    "exit_code": end.exit_code,
                    // The text of times SQLite stores, which Postgres reads too.
                    "next_retry_at": end.next_retry_at.map(sqlite_time),
                    "tail": hex(&end.log_tail),
                    "actor": match &end.worker_id {
                        Some(worker) => format!("worker {worker}"),
                        None => "scheduler".to_owned(),
                    },
                    "details": {
                        "state": end.state,
                        "try_number": end.key.try_number,
                        "exit_code": end.exit_code,
                    },
                    "outputs": serde_json::Map::from_iter(end.outputs.iter().map(
                        |(name, value)| (name.clone(), serde_json::Value::from(value.as_str()))
                    )),
                })
            })
            .collect(),
    )
}

/// Bytes as lowercase hexadecimal text, which Postgres' `decode(text, 'hex')` reads back: how
/// a log's bytes (not always UTF-8) travel inside JSON.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn candidate(id: i64, dag: &str, pool: &str, slots: i64) -> Candidate {
        Candidate {
            id: TaskInstanceId(id),
            dag_id: dag.to_owned(),
            task_id: "t".to_owned(),
            pool: pool.to_owned(),
            pool_slots: slots,
            rate_limit: None,
        }
    }

    #[test]
    fn admits_within_pool_slots_and_max_active_tasks() {
        let mut occupancy = Occupancy::new(at(0));
        occupancy.pools.insert("db".to_owned(), (3, 1));
        occupancy.dags.insert("a".to_owned(), (2, 0));
        occupancy.dags.insert("b".to_owned(), (10, 0));
        // Pool db has 2 free slots: a 2-slot task fits, then nothing more.
        assert_eq!(occupancy.admit(&candidate(1, "b", "db", 2)), Ok(()));
        assert_eq!(
            occupancy.admit(&candidate(2, "b", "db", 1)),
            Err(Refusal::NoRoom)
        );
        occupancy.pools.insert("default_pool".to_owned(), (128, 0));
        // DAG a may have 2 active task instances.
        assert!(
            occupancy
                .admit(&candidate(3, "a", "default_pool", 1))
                .is_ok()
        );
        assert!(
            occupancy
                .admit(&candidate(4, "a", "default_pool", 1))
                .is_ok()
        );
        assert!(
            occupancy
                .admit(&candidate(5, "a", "default_pool", 1))
                .is_err()
        );
    }

    #[test]
    fn released_room_admits_again() {
        let mut occupancy = Occupancy::new(at(0));
        occupancy.pools.insert("db".to_owned(), (1, 0));
        occupancy.dags.insert("a".to_owned(), (16, 0));
        let first = candidate(1, "a", "db", 1);
        assert!(occupancy.admit(&first).is_ok());
        assert!(occupancy.admit(&candidate(2, "a", "db", 1)).is_err());
        occupancy.release(&first);
        assert!(occupancy.admit(&candidate(2, "a", "db", 1)).is_ok());
    }

    #[test]
    fn a_missing_pool_admits_nothing() {
        let mut occupancy = Occupancy::new(at(0));
        occupancy.dags.insert("a".to_owned(), (16, 0));
        assert!(occupancy.admit(&candidate(1, "a", "nowhere", 1)).is_err());
    }

    #[test]
    fn rate_limits_of_a_task_and_of_its_pool_admit_within_their_windows() {
        let mut occupancy = Occupancy::new(at(100));
        occupancy.pools.insert("api".to_owned(), (100, 0));
        occupancy.dags.insert("a".to_owned(), (100, 0));
        let task_limit: RateLimit = "2/m".parse().unwrap();
        let pool_limit: RateLimit = "3/m".parse().unwrap();
        occupancy.pool_limits.insert("api".to_owned(), pool_limit);
        let limited = |id: i64, task: &str| Candidate {
            task_id: task.to_owned(),
            rate_limit: Some(task_limit),
            ..candidate(id, "a", "api", 1)
        };
        let task = |task: &str| Limited::Task {
            dag_id: "a".to_owned(),
            task_id: task.to_owned(),
        };
        // Task x started once at 70 (its window frees at 130); the pool's window is empty.
        occupancy.windows.insert(
            task("x"),
            Window {
                limit: task_limit,
                used: 1,
                oldest: Some(at(70)),
            },
        );
        occupancy.windows.insert(
            task("y"),
            Window {
                limit: task_limit,
                used: 0,
                oldest: None,
            },
        );
        occupancy.windows.insert(
            Limited::Pool("api".to_owned()),
            Window {
                limit: pool_limit,
                used: 0,
                oldest: None,
            },
        );
        let first = limited(1, "x");
        assert_eq!(occupancy.admit(&first), Ok(()));
        assert_eq!(
            occupancy.admit(&limited(2, "x")),
            Err(Refusal::RateLimited(at(130)))
        );
        assert_eq!(occupancy.admit(&limited(3, "y")), Ok(()));
        assert_eq!(occupancy.admit(&limited(4, "y")), Ok(()));
        // The pool's window is full now (3 in a minute): nothing of it before a minute passed.
        assert_eq!(
            occupancy.admit(&candidate(5, "a", "api", 1)),
            Err(Refusal::RateLimited(at(160)))
        );
        // A refusal took nothing; a release gives back both windows' places.
        occupancy.release(&first);
        assert_eq!(occupancy.windows[&task("x")].used, 1);
        assert_eq!(occupancy.admit(&candidate(5, "a", "api", 1)), Ok(()));
    }
}
