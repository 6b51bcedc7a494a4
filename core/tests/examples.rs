//! The example DAGs in `dags/` (what `updraft standalone` runs on a fresh machine) load, and
//! every task of each renders for a scheduled run, with its upstream tasks' declared outputs.

use std::path::Path;

use chrono::{TimeZone, Utc};
use updraft_core::dag::{LoadOptions, load_paths};
use updraft_core::render::{Context, Outputs, RunContext, effective_params, render_task};
use updraft_core::state::RunType;

#[test]
fn every_example_dag_loads_and_every_task_renders() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dags");
    let load = load_paths(&[folder], &LoadOptions::default());
    assert!(load.errors.is_empty(), "{:?}", load.errors);
    assert!(!load.dags.is_empty());
    let logical_date = Utc.with_ymd_and_hms(2024, 3, 4, 6, 0, 0).unwrap();
    for loaded in &load.dags {
        let dag = &loaded.dag;
        let run = RunContext {
            dag_id: dag.id.clone(),
            run_id: "scheduled__2024-03-04T06:00:00+00:00".to_owned(),
            run_type: RunType::Scheduled,
            logical_date,
            data_interval_start: logical_date,
            data_interval_end: logical_date + chrono::Duration::days(1),
            params: effective_params(dag, &serde_json::json!({})).expect("default params"),
            conf: serde_json::json!({}),
            catalog: Default::default(),
        };
        for task in dag.tasks.values() {
            let outputs: Outputs = dag
                .upstream(task.id.as_str())
                .into_iter()
                .map(|up| {
                    let values = up.outputs.iter().map(|name| (name.clone(), "1".to_owned()));
                    (up.id.to_string(), values.collect())
                })
                .collect();
            let ctx = Context {
                run: &run,
                task_id: task.id.clone(),
                try_number: 1,
                outputs,
            };
            if let Err(error) = render_task(dag, task, &ctx) {
                panic!("{} task {}: {error}", dag.id, task.id);
            }
        }
    }
}
