//! A try's handler (`on_success`, `on_retry` or `on_failure`), run once the try's end is
//! recorded: a process of its own (its process group, within `HANDLER_TIMEOUT`), holding no
//! slot of the worker, its output kept in `handler_run` beside the try. The state it reacts to
//! is stored before it starts, so nothing it does (sleep, fail, hang) delays a downstream task
//! or changes a state; a worker that stops waits for its handlers up to its shutdown timeout,
//! then stops them. A handler runs at most once: one cut short by its worker's death is not
//! run again.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use updraft_core::ids::{DagRunId, TryKey};
use updraft_core::links;
use updraft_core::render::{RenderedHandler, TryEnding, try_handler_environment};
use updraft_core::secret::Masker;
use updraft_core::state::HandlerName;
use updraft_metadata::{Claim, HandlerRun, Store};
use updraft_process::{self as process, Files, OutputFolder, Spawn};

/// The end of a try's log a handler is told (`UPDRAFT_LOG_TAIL`).
pub(crate) const LOG_TAIL_BYTES: usize = 4096;

/// A handler waiting to run after its try.
pub(crate) struct HandlerJob {
    store: Store,
    dag_run_id: DagRunId,
    key: TryKey,
    name: HandlerName,
    spawn: Spawn,
    masker: Masker,
    _scratch: Option<tempfile::TempDir>,
}

/// Where a handler runs and what it may inherit: its try's.
pub(crate) struct Place {
    pub folder: PathBuf,
    pub inherit_env: Vec<String>,
    pub outputs: Arc<OutputFolder>,
    /// The web UI's address, for `UPDRAFT_TASK_URL`.
    pub base_url: Option<String>,
    /// The scratch folder `folder` is, when the DAG's folder is not on this host: kept until
    /// the handler ends.
    pub scratch: Option<tempfile::TempDir>,
}

impl HandlerJob {
    /// The handler `name` (`handler`, rendered with the try) after the try of `claim` ended
    /// as `ending` says.
    pub(crate) fn new(
        store: Store,
        claim: &Claim,
        name: HandlerName,
        handler: &RenderedHandler,
        ending: &TryEnding<'_>,
        place: Place,
        masker: Masker,
    ) -> HandlerJob {
        let ti = &claim.instance;
        let url = place.base_url.map(|base| {
            let page = links::task_url(ti.dag_id.as_str(), &ti.run_id, ti.task_id.as_str());
            format!("{}{page}?try={}", base.trim_end_matches('/'), ti.try_number)
        });
        let mut env: Vec<(String, String)> = handler.env.clone().into_iter().collect();
        env.extend(
            try_handler_environment(ending, url)
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value)),
        );
        HandlerJob {
            store,
            dag_run_id: ti.dag_run_id,
            key: ti.try_key(),
            name,
            spawn: Spawn {
                command: handler.command.clone(),
                env,
                inherit_env: place.inherit_env,
                working_dir: place.folder,
                timeout: Some(process::HANDLER_TIMEOUT),
                kill_grace: process::HANDLER_KILL_GRACE,
                files: Files::Scratch(place.outputs),
            },
            masker,
            _scratch: place.scratch,
        }
    }

    /// Runs the handler and records what it did.
    pub(crate) async fn run(self) {
        let start_date = Utc::now();
        let (ending, log) = process::run_handler(self.spawn, self.masker).await;
        let run = HandlerRun {
            dag_run_id: self.dag_run_id,
            try_key: Some(self.key),
            handler: self.name,
            start_date,
            end_date: Utc::now(),
            ending: process::describe(&ending),
            log,
        };
        if let Err(error) = self.store.record_handler_run(&run).await {
            tracing::warn!(
                task_instance = %self.key.task_instance,
                try_number = self.key.try_number,
                "cannot record the {} handler's run ({}): {error}",
                self.name,
                run.ending
            );
        }
    }
}
