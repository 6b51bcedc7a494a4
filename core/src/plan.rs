//! [`TryPlan`]: everything a worker needs to run one try and to decide how it ended, settled
//! by the scheduler when it queues the task instance and stored with it
//! (`task_instance.rendered_command`). A worker reads no DAG: a worker on another machine, or
//! one whose DAG file changed since, runs and judges the try exactly as planned.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::dag::model::{humantime_opt, humantime_serde_compat};
use crate::dag::{Dag, Task};
use crate::render::{Context, RenderError, Rendered, render_task};
use crate::retry::{RetryPolicy, after_failed_try};
use crate::state::TaskState;

/// One try's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TryPlan {
    /// What to run, or why its templates did not render (the try then fails with the reason
    /// in its log, and is retried like any failure, as Airflow renders inside the try).
    pub command: Planned,
    /// The try's deadline.
    #[serde(with = "humantime_opt")]
    pub timeout: Option<Duration>,
    /// How long a stopped try has between SIGTERM and SIGKILL.
    #[serde(with = "humantime_serde_compat")]
    pub kill_grace: Duration,
    /// Exit codes that end the try `skipped`.
    pub skip_on_exit_code: Vec<i32>,
    pub retry: RetryPolicy,
}

/// A try's command, rendered or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Planned {
    Ready(Box<Rendered>),
    RenderError(RenderError),
}

impl TryPlan {
    /// The plan of `task`'s try that `ctx` describes, its templates rendered.
    pub fn new(dag: &Dag, task: &Task, ctx: &Context) -> TryPlan {
        TryPlan::with(task, render_task(dag, task, ctx))
    }

    /// The plan of a try of `task` whose command is `rendered` (or why it is not).
    pub fn with(task: &Task, rendered: Result<Rendered, RenderError>) -> TryPlan {
        TryPlan {
            command: match rendered {
                Ok(rendered) => Planned::Ready(Box::new(rendered)),
                Err(error) => Planned::RenderError(error),
            },
            timeout: task.timeout,
            kill_grace: task.kill_grace,
            skip_on_exit_code: task.skip_on_exit_code.clone(),
            retry: RetryPolicy::of(task),
        }
    }

    /// What try `try_number` ends as when its command exited with `code`: success on 0,
    /// skipped on one of `skip_on_exit_code`, else failed or up for retry (and when).
    pub fn after_exit(
        &self,
        code: i32,
        try_number: i32,
        max_tries: i32,
        now: DateTime<Utc>,
    ) -> (TaskState, Option<DateTime<Utc>>) {
        match code {
            0 => (TaskState::Success, None),
            code if self.skip_on_exit_code.contains(&code) => (TaskState::Skipped, None),
            _ => self.after_failure(try_number, max_tries, now),
        }
    }

    /// What try `try_number` ends as when it failed without an exit code of its own (did not
    /// start, timed out, was killed).
    pub fn after_failure(
        &self,
        try_number: i32,
        max_tries: i32,
        now: DateTime<Utc>,
    ) -> (TaskState, Option<DateTime<Utc>>) {
        after_failed_try(&self.retry, try_number, max_tries, now)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::dag::{LoadOptions, decode};
    use crate::render::{Outputs, RunContext};

    fn plan(keys: &str, run: &str) -> TryPlan {
        let text = format!("tasks:\n  t: {{run: '{run}', {keys}}}\n");
        let dag = decode("t.yaml", &text, &LoadOptions::default()).unwrap();
        let at = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
        let run = RunContext {
            dag_id: dag.id.clone(),
            run_id: "manual__x".to_owned(),
            run_type: crate::state::RunType::Manual,
            logical_date: at,
            data_interval_start: at,
            data_interval_end: at,
            params: serde_json::Map::new(),
            conf: serde_json::json!({}),
            catalog: Default::default(),
        };
        let task = dag.task("t").unwrap();
        let context = Context {
            run: &run,
            task_id: task.id.clone(),
            try_number: 1,
            outputs: Outputs::new(),
        };
        TryPlan::new(&dag, task, &context)
    }

    #[test]
    fn a_plan_carries_what_the_worker_needs_and_survives_the_stored_json() {
        let plan = plan(
            "timeout: 1m, kill_grace: 5s, skip_on_exit_code: [3], retries: 2",
            "echo {{ ds }}",
        );
        let Planned::Ready(rendered) = &plan.command else {
            panic!("rendered: {plan:?}");
        };
        assert_eq!(
            rendered.command,
            crate::dag::Command::Run("echo 2024-03-01".to_owned())
        );
        assert_eq!(plan.timeout, Some(Duration::from_secs(60)));
        assert_eq!(plan.kill_grace, Duration::from_secs(5));
        assert_eq!(plan.retry.retries, 2);
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["timeout"], "1m");
        assert_eq!(serde_json::from_value::<TryPlan>(json).unwrap(), plan);
    }

    #[test]
    fn a_template_that_does_not_render_is_planned_as_its_error() {
        let plan = plan("retries: 1", "echo {{ macros.ds_add(\"31/01/2024\", 1) }}");
        let Planned::RenderError(error) = &plan.command else {
            panic!("an error: {plan:?}");
        };
        assert_eq!(error.field, "run");
    }

    #[test]
    fn an_exit_code_decides_the_state() {
        let plan = plan(
            "skip_on_exit_code: [3], retries: 1, retry_delay: 1m",
            "true",
        );
        let now = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
        assert_eq!(plan.after_exit(0, 1, 1, now), (TaskState::Success, None));
        assert_eq!(plan.after_exit(3, 1, 1, now), (TaskState::Skipped, None));
        assert_eq!(
            plan.after_exit(1, 1, 1, now),
            (
                TaskState::UpForRetry,
                Some(now + chrono::Duration::minutes(1))
            )
        );
        assert_eq!(plan.after_exit(1, 2, 1, now), (TaskState::Failed, None));
    }
}
