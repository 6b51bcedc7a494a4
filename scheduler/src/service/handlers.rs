//! The DAG's handlers: `on_success`/`on_failure` of a run, run by the scheduler when the run
//! ends.

use std::path::Path;

use updraft_core::dag::{Command, Dag};
use updraft_core::render;
use updraft_core::state::DagRunState;
use updraft_metadata::DagRun;

use super::run_context;

/// Runs a DAG's `on_success`/`on_failure` handler for a run that ended in `state`, in the DAG
/// file's folder, in the background; its output goes to the scheduler's log.
pub(super) fn run_dag_handler(dag: &Dag, run: &DagRun, state: DagRunState) {
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
