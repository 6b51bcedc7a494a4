//! The DAG's handlers: `on_success`/`on_failure` of a run, run by the scheduler once the run's
//! end is recorded, through the same process module as tasks: in their own process group,
//! within `HANDLER_TIMEOUT`, in the background (never holding up the loop), their output kept
//! in `handler_run` beside the run.

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use updraft_core::dag::Dag;
use updraft_core::links;
use updraft_core::render::{self, RenderedHandler, run_handler_environment};
use updraft_core::secret::{Catalog, Masker, SecretsConfig};
use updraft_core::state::{DagRunState, HandlerName};
use updraft_metadata::{DagRun, HandlerRun, Store};
use updraft_process::{self as process, Files, HANDLER_KILL_GRACE, HANDLER_TIMEOUT, Spawn};

use super::Settings;

/// Runs a DAG's `on_success`/`on_failure` handler for a run that ended in `state`, in the DAG
/// file's folder, in the background; what it did is recorded beside the run, the secrets it
/// was handed masked.
pub(super) fn run_dag_handler(
    store: &Store,
    settings: &Settings,
    dag: Arc<Dag>,
    run: &DagRun,
    state: DagRunState,
) {
    let Some(name) = HandlerName::of_run(state) else {
        return;
    };
    if dag.handler(name).is_none() {
        return;
    }
    let (store, secrets, run) = (store.clone(), settings.secrets.clone(), run.clone());
    let url = settings.base_url.as_ref().map(|base| {
        let page = links::run_url(run.dag_id.as_str(), &run.run_id);
        format!("{}{page}", base.trim_end_matches('/'))
    });
    tokio::spawn(async move {
        let (dag_id, run_id) = (dag.id.clone(), run.run_id.clone());
        let (handler, masker) = match rendered(&store, &secrets, &dag, &run, state).await {
            Ok(Some(handler)) => handler,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%dag_id, %run_id, "cannot run the DAG's {name} handler: {error}");
                return;
            }
        };
        let mut env: Vec<(String, String)> = handler.env.into_iter().collect();
        env.extend(
            run_handler_environment(state, url)
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value)),
        );
        let spawn = Spawn {
            command: handler.command,
            env,
            inherit_env: handler.inherit_env,
            working_dir: Path::new(&dag.fileloc)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            timeout: Some(HANDLER_TIMEOUT),
            kill_grace: HANDLER_KILL_GRACE,
            files: Files::Scratch(Arc::default()),
        };
        let start_date = Utc::now();
        let (ending, log) = process::run_handler(spawn, masker).await;
        let ran = HandlerRun {
            dag_run_id: run.id,
            try_key: None,
            handler: name,
            start_date,
            end_date: Utc::now(),
            ending: process::describe(&ending),
            log,
        };
        tracing::info!(%dag_id, %run_id, ending = %ran.ending, "the DAG's {name} handler ran");
        if let Err(error) = store.record_handler_run(&ran).await {
            tracing::warn!(%dag_id, %run_id, "cannot record the DAG's {name} handler's run: {error}");
        }
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
    let context = run.template_context(dag, Arc::new(catalog))?;
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
