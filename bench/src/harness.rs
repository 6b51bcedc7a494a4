//! What the workloads run on: fresh databases, generated DAG files synced into them, the
//! scheduler and an executor in this process (as `updraft standalone` runs them), and real
//! `updraft` processes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use updraft_core::dag::Dag;
use updraft_core::dag::{FolderLoad, LoadOptions, load_paths};
use updraft_core::scope::Scope;
use updraft_core::state::TaskState;
use updraft_executor::name::Name;
use updraft_executor::worker::{self, Worker};
use updraft_metadata::{
    Backend, DagRow, ScratchDatabase, SeedRuns, Store, Topic, TryEnd, WorkerRef,
};
use updraft_scheduler::service::{self, Scheduler};
use updraft_scheduler::sync::{SyncOptions, sync_dags};

/// Where the workloads keep their metadata: a fresh database each, on one backend.
pub struct Databases {
    pub backend: Backend,
    /// A Postgres server where scratch databases may be created.
    pub postgres_url: String,
}

impl Databases {
    /// A fresh, migrated database of `backend`, removed when the first value is dropped (after
    /// the store is closed).
    pub async fn fresh(&self, backend: Backend) -> Result<(ScratchDatabase, Store)> {
        let scratch = match backend {
            Backend::Sqlite => ScratchDatabase::sqlite()?,
            Backend::Postgres => ScratchDatabase::postgres(&self.postgres_url)
                .await
                .context(
                    "this needs a Postgres server where the user may create databases: start \
                     one, or point --postgres-url (UPDRAFT_BENCH_POSTGRES_URL) at one",
                )?,
        };
        let store = Store::connect(scratch.url()).await?;
        store.migrate().await?;
        Ok((scratch, store))
    }
}

/// `count` shrunk by `scale`, at least 3.
pub fn scaled(count: usize, scale: f64) -> usize {
    ((count as f64 * scale).round() as usize).max(3)
}

/// The DAG shapes the pipeline workloads run, every task `true`.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// n tasks, each depending on the one before.
    Chain(usize),
    /// One root, n parallel tasks, one join.
    Fanout(usize),
}

impl Shape {
    pub fn tasks(self) -> usize {
        match self {
            Shape::Chain(n) => n,
            Shape::Fanout(n) => n + 2,
        }
    }

    pub fn dag_file(self, id: &str) -> String {
        let mut text = format!("version: 1\nid: {id}\ntasks:\n");
        match self {
            Shape::Chain(n) => text.push_str(&chain_tasks(n)),
            Shape::Fanout(n) => {
                text.push_str("  root: {run: \"true\"}\n");
                for i in 0..n {
                    text.push_str(&format!(
                        "  p{i:04}: {{run: \"true\", depends_on: [root]}}\n"
                    ));
                }
                let all: Vec<String> = (0..n).map(|i| format!("p{i:04}")).collect();
                text.push_str(&format!(
                    "  join: {{run: \"true\", depends_on: [{}]}}\n",
                    all.join(", ")
                ));
            }
        }
        text
    }

    pub fn name(self) -> String {
        match self {
            Shape::Chain(n) => format!("chain-{n}"),
            Shape::Fanout(n) => format!("fanout-{n}"),
        }
    }
}

/// The `tasks:` entries of a chain of `n` tasks of `true`, each depending on the one before.
pub fn chain_tasks(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("  t{i:04}: {{run: \"true\""));
        if i > 0 {
            text.push_str(&format!(", depends_on: [t{:04}]", i - 1));
        }
        text.push_str("}\n");
    }
    text
}

/// Loads the generated DAG files of `folder`, checks there are `count` and all valid, and
/// syncs them into `store` (`paused` or not).
pub async fn load_and_sync(
    store: &Store,
    folder: &Path,
    options: &LoadOptions,
    count: usize,
    paused: bool,
) -> Result<FolderLoad> {
    let load = load_paths(&[folder.to_path_buf()], options);
    ensure!(
        load.errors.is_empty() && load.dags.len() == count,
        "expected {count} valid generated DAGs, found {} and {} errors",
        load.dags.len(),
        load.errors.len()
    );
    let sync = SyncOptions {
        paused_on_creation: paused,
    };
    sync_dags(store, &load, sync, Utc::now()).await?;
    Ok(load)
}

/// What runs the tasks of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// A worker of concurrency 16 spawning each task's process, as `updraft standalone` does.
    Processes,
    /// A loop that claims queued task instances and ends each try `success` at once: the
    /// scheduler and the metadata database alone are measured.
    NoOp,
    /// Nothing: tasks stay queued (cron-storm measures run creation only).
    Nothing,
}

/// The scheduler, its notifier and an executor in this process, as `updraft standalone` runs
/// them.
pub struct InProcess {
    stop: CancellationToken,
    scheduler: tokio::task::JoinHandle<()>,
    notifier: tokio::task::JoinHandle<()>,
    worker: Option<tokio::task::JoinHandle<Result<(), updraft_metadata::Error>>>,
}

impl InProcess {
    /// Starts both and lets the scheduler's first tick (its own sync) pass, so that a clock
    /// started afterwards measures runs, not start-up.
    pub async fn start(
        store: &Store,
        dags_folder: &Path,
        options: LoadOptions,
        executor: Executor,
    ) -> InProcess {
        let stop = CancellationToken::new();
        let mut settings = service::Settings::new(dags_folder.to_path_buf(), options);
        settings.poll_interval = Duration::from_millis(200);
        let scheduler = Scheduler::new(store.clone(), settings, "bench".to_owned());
        let scheduler = tokio::spawn(scheduler.run(stop.clone().cancelled_owned()));
        let notifier = tokio::spawn(updraft_notifier::run(
            store.clone(),
            updraft_notifier::Settings {
                secrets: Default::default(),
                base_url: None,
            },
            stop.clone(),
        ));
        let worker = Worker::new(
            store.clone(),
            worker::Settings {
                name: Name::Given("bench".to_owned()),
                hostname: "bench".to_owned(),
                queues: vec!["default".to_owned()],
                concurrency: 16,
                poll_interval: Duration::from_millis(200),
                heartbeat_interval: Duration::from_secs(1),
                echo: false,
                scope: Scope::Everything,
                shutdown_timeout: None,
                inherit_env: Vec::new(),
                secrets: Default::default(),
                max_log_bytes: worker::MAX_LOG_BYTES,
                base_url: None,
            },
        );
        let worker = match executor {
            Executor::Processes => Some(tokio::spawn(worker.run(stop.clone().cancelled_owned()))),
            Executor::NoOp => Some(tokio::spawn(no_op_worker(store.clone(), stop.clone()))),
            Executor::Nothing => None,
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        InProcess {
            stop,
            scheduler,
            notifier,
            worker,
        }
    }

    pub async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.scheduler.await?;
        self.notifier.await?;
        if let Some(worker) = self.worker {
            worker.await??;
        }
        Ok(())
    }
}

/// [`Executor::NoOp`]: claims what is queued and ends each try `success` at once, waking on
/// the same signal as a worker, until `stop` is cancelled.
async fn no_op_worker(
    store: Store,
    stop: CancellationToken,
) -> Result<(), updraft_metadata::Error> {
    let mut wakeups = store.subscribe(Topic::Workers);
    let me = WorkerRef {
        id: "bench-no-op",
        hostname: "bench",
    };
    let queues = ["default".to_owned()];
    while !stop.is_cancelled() {
        let claims = store
            .claim_task_instances(me, &queues, Scope::Everything, 64, Utc::now())
            .await?;
        if claims.is_empty() {
            tokio::select! {
                _ = wakeups.wait(Duration::from_millis(200)) => {}
                () = stop.cancelled() => {}
            }
            continue;
        }
        // A worker writes the ends of the tries that ended together (one transaction).
        let ends: Vec<TryEnd> = claims
            .iter()
            .map(|claim| TryEnd {
                key: claim.instance.try_key(),
                worker_id: Some(me.id.to_owned()),
                state: TaskState::Success,
                exit_code: Some(0),
                next_retry_at: None,
                outputs: Vec::new(),
                log_tail: Vec::new(),
            })
            .collect();
        store.end_tries(&ends, Utc::now()).await?;
    }
    Ok(())
}

/// The `updraft` binary the workloads run as real processes.
pub struct Updraft {
    path: PathBuf,
}

impl Updraft {
    pub fn new(path: PathBuf) -> Updraft {
        Updraft { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `updraft` logging warnings only, without stdin, killed if its handle is dropped (so a
    /// workload that fails leaves no process behind); the caller gives its flags.
    pub fn bare(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.path);
        command
            .env("UPDRAFT_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// [`Updraft::bare`] with `folder` as its home, `folder/dags` as its DAGs folder and the
    /// database of `url`: a standalone and the commands run beside it share this environment.
    pub fn command(&self, folder: &Path, url: &str) -> tokio::process::Command {
        let mut command = self.bare();
        command
            .env("UPDRAFT_HOME", folder)
            .env("UPDRAFT_DAGS_FOLDER", folder.join("dags"))
            .env("UPDRAFT_DATABASE_URL", url);
        command
    }
}

/// An `updraft standalone` process, its web server on a free port of 127.0.0.1. Dropped before
/// [`Standalone::stop`] (a workload failed), it is killed.
pub struct Standalone {
    child: tokio::process::Child,
    pub pid: u32,
    /// Its stderr, shown when it fails.
    stderr: PathBuf,
}

impl Standalone {
    /// Starts one in the environment of [`Updraft::command`].
    pub fn start(updraft: &Updraft, folder: &Path, url: &str) -> Result<Standalone> {
        let stderr = folder.join("standalone.stderr");
        let child = updraft
            .command(folder, url)
            .args(["standalone", "--host", "127.0.0.1", "--port", "0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        let pid = child.id().expect("a child not waited for has a pid");
        Ok(Standalone { child, pid, stderr })
    }

    /// Waits until its scheduler has recorded a heartbeat and `dags` DAGs are in `store`;
    /// returns their rows.
    pub async fn wait_synced(&mut self, store: &Store, dags: usize) -> Result<Vec<DagRow>> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the standalone exited ({status}): {}", self.stderr());
            }
            let rows = store.list_dags().await?;
            if rows.len() == dags && store.last_scheduler_heartbeat().await?.is_some() {
                return Ok(rows);
            }
            ensure!(
                Instant::now() < deadline,
                "the standalone synced {} of {dags} DAGs in 5 minutes",
                rows.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops it with SIGTERM (SIGKILL after 10 s) and checks that it exited with 0.
    pub async fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) with our own child's pid (not waited for yet) and a valid signal.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let Ok(status) = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await
        else {
            self.child.kill().await?;
            bail!("the standalone did not stop within 10 s of SIGTERM (killed)");
        };
        let status = status?;
        ensure!(
            status.success(),
            "the standalone exited ({status}) on SIGTERM: {}",
            self.stderr()
        );
        Ok(())
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// A fresh database with a long history: DAG `id` (hourly, paused: no scheduler should think
/// these runs are its to make) of `tasks` chained tasks, written in `folder`, and `runs` of its
/// runs finished, with their task instances, seeded in bulk (checked).
pub struct History {
    /// Dropped with the history: the scratch database goes with it.
    _database: ScratchDatabase,
    pub store: Store,
    pub dag: Dag,
    /// How long the seeding took.
    pub seeded_in: Duration,
}

impl History {
    pub async fn seed(
        databases: &Databases,
        folder: &Path,
        id: &str,
        runs: usize,
        tasks: usize,
    ) -> Result<History> {
        std::fs::create_dir_all(folder)?;
        let yaml = format!(
            "version: 1\nid: {id}\nschedule: \"@hourly\"\nstart_date: 2024-01-01\ntasks:\n{}",
            chain_tasks(tasks)
        );
        std::fs::write(folder.join(format!("{id}.yaml")), yaml)?;
        let (database, store) = databases.fresh(databases.backend).await?;
        let load = load_and_sync(&store, folder, &LoadOptions::default(), 1, true).await?;
        let dag = load.dags[0].dag.clone();
        let task_ids: Vec<_> = dag.tasks.keys().cloned().collect();
        let seeding = Instant::now();
        let made = store
            .seed_finished_runs(SeedRuns {
                dag_id: &dag.id,
                version_hash: &dag.version_hash(),
                task_ids: &task_ids,
                runs: runs as i64,
                first: chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")?.to_utc(),
                step: chrono::Duration::hours(1),
            })
            .await?;
        let instances = runs * tasks;
        ensure!(
            made == instances as u64,
            "expected {instances} seeded task instances, made {made}"
        );
        Ok(History {
            _database: database,
            store,
            dag,
            seeded_in: seeding.elapsed(),
        })
    }
}
