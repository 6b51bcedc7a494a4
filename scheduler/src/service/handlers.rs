//! The DAG's handlers: `on_success`/`on_failure` of a run, run by the scheduler when the run
//! ends, through the same process module as tasks: in their own process group, within
//! `HANDLER_TIMEOUT`, their output in the scheduler's log.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;
use updraft_core::dag::Dag;
use updraft_core::render::{self, RenderedHandler};
use updraft_core::secret::{Catalog, Masker, SecretsConfig};
use updraft_core::state::DagRunState;
use updraft_metadata::{DagRun, Store};
use updraft_process::{self as process, Files, HANDLER_KILL_GRACE, HANDLER_TIMEOUT, Spawn};

use super::run_context;

/// The output of a handler kept for the scheduler's log: its first bytes, enough for an
/// error message, not a flood.
const HANDLER_OUTPUT_SHOWN: usize = 64 * 1024;

/// Runs a DAG's `on_success`/`on_failure` handler for a run that ended in `state`, in the DAG
/// file's folder, in the background; its output goes to the scheduler's log, the secrets it
/// was handed masked.
pub(super) fn run_dag_handler(
    store: &Store,
    secrets: &SecretsConfig,
    dag: Arc<Dag>,
    run: &DagRun,
    state: DagRunState,
) {
    let handler = match state {
        DagRunState::Success => &dag.on_success,
        DagRunState::Failed => &dag.on_failure,
        DagRunState::Queued | DagRunState::Running => &None,
    };
    if handler.is_none() {
        return;
    }
    let (store, secrets, run) = (store.clone(), secrets.clone(), run.clone());
    tokio::spawn(async move {
        let (dag_id, run_id) = (dag.id.clone(), run.run_id.clone());
        let handler = match rendered(&store, &secrets, &dag, &run, state).await {
            Ok(Some(handler)) => handler,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%dag_id, %run_id, "cannot run the DAG's {state} handler: {error}");
                return;
            }
        };
        let (handler, mut masker) = handler;
        let spawn = Spawn {
            command: handler.command,
            env: handler.env.into_iter().collect(),
            inherit_env: handler.inherit_env,
            working_dir: Path::new(&dag.fileloc)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            timeout: Some(HANDLER_TIMEOUT),
            kill_grace: HANDLER_KILL_GRACE,
            files: Files::Scratch(Arc::default()),
        };
        let (log, mut chunks) = mpsc::channel::<Vec<u8>>(64);
        let collect = tokio::spawn(async move {
            let mut output = Vec::new();
            while let Some(chunk) = chunks.recv().await {
                let chunk = masker.push(&chunk);
                let room = HANDLER_OUTPUT_SHOWN.saturating_sub(output.len());
                output.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            let rest = masker.finish();
            let room = HANDLER_OUTPUT_SHOWN.saturating_sub(output.len());
            output.extend_from_slice(&rest[..rest.len().min(room)]);
            output
        });
        let finished = process::run(spawn, log, std::future::pending(), |_| {}).await;
        let output = collect.await.unwrap_or_default();
        tracing::info!(
            %dag_id,
            %run_id,
            ending = %process::describe(&finished.ending),
            output = %String::from_utf8_lossy(&output),
            "the DAG's {state} handler ran"
        );
    });
}

/// The handler for a run that ended in `state`, its templates rendered and its secrets
/// resolved; `None` when the DAG has none.
async fn rendered(
    store: &Store,
    secrets: &SecretsConfig,
    dag: &Dag,
    run: &DagRun,
    state: DagRunState,
) -> Result<Option<(RenderedHandler, Masker)>, String> {
    let catalog = match render::dag_handlers_read_catalog(dag) {
        true => updraft_secrets::catalog(store, secrets)
            .await
            .map_err(|error| error.to_string())?,
        false => Catalog::default(),
    };
    let context = run_context(dag, run, Arc::new(catalog))?;
    let Some(handler) =
        render::render_dag_handler(dag, state, &context).map_err(|error| error.to_string())?
    else {
        return Ok(None);
    };
    updraft_secrets::resolve_handler(store, secrets, handler)
        .await
        .map(Some)
        .map_err(|error| error.to_string())
}
