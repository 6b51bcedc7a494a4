//! A scheduler and a worker in this process, limited to one run (`dags test`) or to one
//! backfill's runs (`dags backfill` when no scheduler is alive): one [`Scope`] for both, so
//! that the worker claims what the scheduler queues and nothing else, and one token that
//! stops both.

use anyhow::Result;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use updraft_core::dag::Dag;
use updraft_core::ids::{BackfillId, DagRunId};
use updraft_core::scope::Scope;
use updraft_executor::name::Name;
use updraft_executor::worker::Worker;
use updraft_metadata::Store;
use updraft_scheduler::service::Scheduler;

use crate::config::{Config, KeyFile};
use crate::wiring::{hostname, scheduler_settings, worker_settings};

/// Tries the embedded worker runs at once, as a standalone's worker by default.
const CONCURRENCY: u32 = 16;

/// The running scheduler and worker; [`Embedded::stop`] stops them.
pub struct Embedded {
    stop: CancellationToken,
    scheduler: JoinHandle<()>,
    worker: JoinHandle<Result<(), updraft_metadata::Error>>,
}

impl Embedded {
    /// Runs run `run_id` of `dag`, every try's log echoed on stdout (`dags test`).
    pub fn for_run(
        store: &Store,
        config: &Config,
        dag: &Dag,
        run_id: DagRunId,
    ) -> Result<Embedded> {
        let name = format!("{}:test:{}", hostname(), std::process::id());
        Embedded::start(store, config, dag, Scope::Run(run_id), name, true)
    }

    /// Runs the runs of backfill `backfill_id` of `dag` (`dags backfill`).
    pub fn for_backfill(
        store: &Store,
        config: &Config,
        dag: &Dag,
        backfill_id: BackfillId,
    ) -> Result<Embedded> {
        let name = format!(
            "{}:backfill:{backfill_id}:{}",
            hostname(),
            std::process::id()
        );
        Embedded::start(
            store,
            config,
            dag,
            Scope::Backfill(backfill_id),
            name,
            false,
        )
    }

    /// Starts both on `scope`, the worker as `name` on every queue of `dag`'s tasks.
    fn start(
        store: &Store,
        config: &Config,
        dag: &Dag,
        scope: Scope,
        name: String,
        echo: bool,
    ) -> Result<Embedded> {
        let secrets = config.secrets(KeyFile::Read)?;
        let stop = CancellationToken::new();
        let host = hostname();
        let scheduler = Scheduler::new(
            store.clone(),
            scheduler_settings(config, scope, secrets.clone()),
            host.clone(),
        );
        let scheduler = tokio::spawn(scheduler.run(stop.clone().cancelled_owned()));
        let mut settings = worker_settings(
            Name::Given(name),
            host,
            queues_of(dag),
            CONCURRENCY,
            secrets,
        );
        settings.scope = scope;
        settings.echo = echo;
        let worker = Worker::new(store.clone(), settings);
        let worker = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
        Ok(Embedded {
            stop,
            scheduler,
            worker,
        })
    }

    /// Stops both; the worker lets its running tries finish.
    pub async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.scheduler.await?;
        self.worker.await??;
        Ok(())
    }
}

/// Every queue a DAG's tasks use: the embedded worker serves them all.
fn queues_of(dag: &Dag) -> Vec<String> {
    let mut queues: Vec<String> = dag.tasks.values().map(|t| t.queue.clone()).collect();
    queues.sort();
    queues.dedup();
    queues
}
