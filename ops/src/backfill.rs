//! Backfills: planning one (a dry run, which changes nothing), starting it, and pausing,
//! resuming or cancelling it. What a backfill does with each date is decided by
//! `updraft_core::backfill`; this module reads what the decision needs and writes it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use updraft_core::backfill::{
    self as plan, Action, BackfillError, BackfillOptions, Counts, Decision, ExistingRun,
    MAX_RUNS_WITHOUT_YES, Reprocess,
};
use updraft_core::dag::Dag;
use updraft_core::ids::BackfillId;
use updraft_core::state::{BackfillState, RunType};
use updraft_metadata::{
    Backfill, BackfillCreated, BackfillMove, DagRow, NewBackfill, NewDagRun, NewEvent, Rerun,
    Store, TaskRetries,
};

use crate::dags::{check_conf, load_dag};
use crate::{Actor, Error, event};

/// Whose words a refusal uses: the command line's flags (`--from`) or the web's fields
/// (`from`), which has no `--yes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    Cli,
    Web,
}

/// A backfill as asked, its dates still as written (they are read in the DAG's timezone).
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub from: String,
    pub to: String,
    pub reprocess: Reprocess,
    pub max_active_runs: Option<u32>,
    pub run_backwards: bool,
    /// A JSON object, checked against the DAG's params.
    pub conf: serde_json::Value,
    /// At most this many runs; `None` (the CLI's `--yes`): any number.
    pub limit: Option<usize>,
    pub face: Face,
}

/// What a backfill asks for from the web and the API: the options of `updraft dags backfill`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// First logical date: `YYYY-MM-DD` (midnight in the DAG's timezone), a date-time
    /// without offset (in the DAG's timezone), or RFC 3339.
    pub from: String,
    /// Last logical date, inclusive; the same forms.
    pub to: String,
    /// `none` (default), `failed` or `all`: which dates that have a finished run run again.
    #[serde(default)]
    pub reprocess: Option<String>,
    /// Runs of this backfill running at once, 1 to 10,000; default: the DAG's.
    #[serde(default)]
    pub max_active_runs: Option<u32>,
    /// Newest logical date first.
    #[serde(default)]
    pub run_backwards: bool,
    /// Every run's conf: a JSON object whose keys override the DAG's params.
    #[serde(default)]
    pub conf: Option<serde_json::Value>,
    /// Only say what would happen.
    #[serde(default)]
    pub dry_run: bool,
}

impl BackfillRequest {
    /// The request as an [`Ask`] of the web: at most 10,000 runs.
    pub fn ask(&self) -> Result<Ask, Error> {
        let reprocess = match self.reprocess.as_deref() {
            None => Reprocess::None,
            Some(text) => text
                .parse::<Reprocess>()
                .map_err(|error| Error::Invalid(format!("reprocess: {error}")))?,
        };
        if let Some(n) = self.max_active_runs
            && !(1..=10_000).contains(&n)
        {
            return Err(Error::Invalid(format!(
                "max_active_runs must be from 1 to 10000, not {n}"
            )));
        }
        Ok(Ask {
            from: self.from.clone(),
            to: self.to.clone(),
            reprocess,
            max_active_runs: self.max_active_runs,
            run_backwards: self.run_backwards,
            conf: self.conf.clone().unwrap_or_else(|| json!({})),
            limit: Some(MAX_RUNS_WITHOUT_YES),
            face: Face::Web,
        })
    }
}

/// A planned backfill: each interval's decision, and what [`create`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The range asked for, as instants.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The oldest and newest logical dates of the intervals.
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    /// What the user should know: dates outside start_date/end_date, a paused DAG.
    pub warnings: Vec<String>,
    /// Every interval, in the order its runs start.
    pub decisions: Vec<Decision>,
    pub counts: Counts,
    pub options: BackfillOptions,
}

/// Plans a backfill of `dag` (whose row is `row`): checks the conf, reads the dates in the
/// DAG's timezone, lists the intervals and decides each against the runs that hold their
/// dates. Changes nothing. A refusal is [`Error::Invalid`], in the words of `ask.face`.
pub async fn plan(
    store: &Store,
    row: &DagRow,
    dag: &Dag,
    ask: Ask,
    now: DateTime<Utc>,
) -> Result<Planned, Error> {
    check_conf(dag, &ask.conf)?;
    let tz = dag.timetable.timezone;
    let (from_label, to_label) = match ask.face {
        Face::Cli => ("--from", "--to"),
        Face::Web => ("from", "to"),
    };
    let refused = |error: BackfillError| Error::Invalid(refusal(&error, ask.face));
    let from = plan::parse_date(from_label, &ask.from, tz).map_err(refused)?;
    let to = plan::parse_date(to_label, &ask.to, tz).map_err(refused)?;
    let intervals =
        plan::intervals(dag, from, to, ask.run_backwards, ask.limit, now).map_err(refused)?;
    let (first, last) = intervals.runs.iter().fold((to, from), |(low, high), run| {
        (low.min(run.logical_date), high.max(run.logical_date))
    });
    let existing: Vec<ExistingRun> = store
        .list_dated_runs(&dag.id, first, last)
        .await?
        .into_iter()
        .map(|run| ExistingRun {
            id: run.id,
            run_id: run.run_id,
            logical_date: run.logical_date,
            state: run.state,
        })
        .collect();
    let decisions = plan::decide(&intervals.runs, &existing, ask.reprocess, now);
    let mut warnings = intervals.warnings;
    if row.is_paused {
        warnings.push(format!(
            "DAG \"{}\" is paused; a backfill is explicit, so its runs run all the same",
            dag.id
        ));
    }
    Ok(Planned {
        from,
        to,
        first,
        last,
        warnings,
        counts: Counts::of(&decisions),
        decisions,
        options: BackfillOptions {
            reprocess: ask.reprocess,
            max_active_runs: ask.max_active_runs,
            run_backwards: ask.run_backwards,
            conf: ask.conf,
        },
    })
}

/// A refusal in the words of `face`.
fn refusal(error: &BackfillError, face: Face) -> String {
    match (face, error) {
        (Face::Cli, error) => error.to_string(),
        (Face::Web, BackfillError::ReversedRange { from, to }) => {
            format!("from {from} is after to {to}")
        }
        (
            Face::Web,
            BackfillError::TooManyRuns {
                dag_id,
                from,
                to,
                limit,
            },
        ) => format!(
            "the range from {from} to {to} yields more than {limit} runs of DAG \"{dag_id}\"; \
             narrow it, or use `updraft dags backfill {dag_id} --yes` for more"
        ),
        (Face::Web, BackfillError::BackwardsDependsOnPast { dag_id, tasks }) => format!(
            "DAG \"{dag_id}\" has tasks with depends_on_past ({tasks}): run backwards, each run \
             would wait for an earlier one that has not run; leave out run_backwards"
        ),
        (Face::Web, error) => error.to_string(),
    }
}

/// Writes a planned backfill: its row, its new runs and its re-runs, and its event, in one
/// transaction. [`Error::Conflict`] when every interval is skipped.
pub async fn create(
    store: &Store,
    actor: &Actor,
    row: &DagRow,
    dag: &Dag,
    planned: &Planned,
    now: DateTime<Utc>,
) -> Result<BackfillCreated, Error> {
    if planned.counts.runs() == 0 {
        return Err(Error::Conflict(format!(
            "nothing to backfill: every one of the {} interval(s) is skipped (see the dry run \
             for why)",
            planned.decisions.len()
        )));
    }
    let decisions = &planned.decisions;
    let runs: Vec<NewDagRun> = decisions
        .iter()
        .filter(|decision| decision.action == Action::Create)
        .map(|decision| {
            let interval = decision.interval;
            NewDagRun {
                dag_id: dag.id.clone(),
                run_id: RunType::Backfill.run_id(interval.logical_date),
                run_type: RunType::Backfill,
                logical_date: interval.logical_date,
                data_interval_start: interval.data_interval_start,
                data_interval_end: interval.data_interval_end,
                run_after: interval.run_after,
                conf: planned.options.conf.clone(),
                version_hash: row.version_hash.clone(),
                backfill_id: None,
            }
        })
        .collect();
    let reruns: Vec<Rerun> = decisions
        .iter()
        .filter(|decision| decision.action == Action::Rerun)
        .filter_map(|decision| decision.existing.as_ref())
        .map(|run| Rerun {
            dag_run_id: run.id,
            expected: run.state,
        })
        .collect();
    let retries: Vec<TaskRetries> = dag
        .tasks
        .values()
        .map(|task| TaskRetries {
            task_id: task.id.clone(),
            retries: i32::try_from(task.retries).unwrap_or(i32::MAX),
        })
        .collect();
    let backfill = NewBackfill {
        dag_id: dag.id.clone(),
        from_date: planned.from,
        to_date: planned.to,
        options: planned.options.to_json(),
        created_by: actor.to_string(),
    };
    let mut change = store.change("create a backfill").await?;
    let created = change
        .create_backfill(&backfill, &runs, &reruns, &retries, now)
        .await?;
    change
        .commit(&NewEvent {
            details: json!({
                "backfill_id": created.backfill.id,
                "from_date": backfill.from_date,
                "to_date": backfill.to_date,
                "options": backfill.options,
                "created": created.created,
                "rerun": created.rerun,
            }),
            ..event(actor, "backfill_create", &dag.id, now)
        })
        .await?;
    Ok(created)
}

/// One interval of a planned backfill, as the API and the page show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedInterval {
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    /// `create`, `re-run` or `skip`.
    pub action: String,
    /// Why, in words: "no run yet", "run scheduled__... failed".
    pub reason: String,
    /// The run that holds the date, if any.
    pub run_id: Option<String>,
}

/// What a backfill would do, as the API and the page show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackfillPlan {
    pub dag_id: updraft_core::ids::DagId,
    /// The range asked for, as instants.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The DAG's timezone, in which dates without offset were read.
    pub timezone: String,
    /// The DAG's schedule in words.
    pub schedule: String,
    pub create: usize,
    pub rerun: usize,
    pub skip: usize,
    /// What the user should know: dates outside start_date/end_date, a paused DAG.
    pub warnings: Vec<String>,
    /// Every interval, in the order its runs start.
    pub intervals: Vec<PlannedInterval>,
}

impl BackfillPlan {
    pub fn of(dag: &Dag, planned: &Planned) -> BackfillPlan {
        BackfillPlan {
            dag_id: dag.id.clone(),
            from: planned.from,
            to: planned.to,
            timezone: dag.timetable.timezone.name().to_owned(),
            schedule: dag.timetable.describe(),
            create: planned.counts.create,
            rerun: planned.counts.rerun,
            skip: planned.counts.skip,
            warnings: planned.warnings.clone(),
            intervals: planned
                .decisions
                .iter()
                .map(|decision| PlannedInterval {
                    logical_date: decision.interval.logical_date,
                    data_interval_start: decision.interval.data_interval_start,
                    data_interval_end: decision.interval.data_interval_end,
                    action: decision.action.as_str().to_owned(),
                    reason: decision.reason.clone(),
                    run_id: decision.existing.as_ref().map(|run| run.run_id.clone()),
                })
                .collect(),
        }
    }
}

/// The answer of a backfill request: the plan, and on a start the backfill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackfillOutcome {
    pub dry_run: bool,
    /// `None` on a dry run.
    pub backfill: Option<Backfill>,
    pub created: usize,
    pub rerun: usize,
    /// Dates another run took between the plan and the write: skipped, never duplicated.
    pub taken: Vec<DateTime<Utc>>,
    pub plan: BackfillPlan,
}

/// The web's and the API's backfill of `dag_id`: the plan (a dry run, which changes nothing)
/// or, when `request.dry_run` is false, the plan and its start.
pub async fn backfill(
    store: &Store,
    actor: &Actor,
    dag_id: &updraft_core::ids::DagId,
    request: &BackfillRequest,
    now: DateTime<Utc>,
) -> Result<BackfillOutcome, Error> {
    let (row, dag) = load_dag(store, dag_id).await?;
    let planned = plan(store, &row, &dag, request.ask()?, now).await?;
    let view = BackfillPlan::of(&dag, &planned);
    if request.dry_run {
        return Ok(BackfillOutcome {
            dry_run: true,
            backfill: None,
            created: 0,
            rerun: 0,
            taken: Vec::new(),
            plan: view,
        });
    }
    let created = create(store, actor, &row, &dag, &planned, now).await?;
    Ok(BackfillOutcome {
        dry_run: false,
        backfill: Some(created.backfill),
        created: created.created,
        rerun: created.rerun,
        taken: created.taken,
        plan: view,
    })
}

/// Pauses, resumes (`running`) or cancels backfill `id`, from the state it is in. A move its
/// state does not allow is [`Error::Conflict`] saying which state allows it.
pub async fn set_state(
    store: &Store,
    actor: &Actor,
    id: BackfillId,
    new: BackfillState,
    now: DateTime<Utc>,
) -> Result<BackfillMove, Error> {
    let backfill = store
        .get_backfill(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no backfill {id}")))?;
    if !backfill.state.can_move_to(new) {
        let allowed = match new {
            BackfillState::Paused => "only a running backfill can be paused",
            BackfillState::Running => "only a paused backfill can be resumed",
            _ => "only a running or paused backfill can be cancelled",
        };
        return Err(Error::Conflict(format!(
            "backfill {id} is {}: {allowed}",
            backfill.state
        )));
    }
    let mut change = store.change("change a backfill's state").await?;
    let moved = change
        .set_backfill_state(id, backfill.state, new, now)
        .await?;
    if !moved.moved {
        return Err(Error::Conflict(format!(
            "backfill {id} changed meanwhile (it was {})",
            backfill.state
        )));
    }
    change
        .commit(&NewEvent {
            details: json!({
                "backfill_id": id,
                "from": backfill.state,
                "runs_failed": moved.runs_failed,
            }),
            ..event(actor, &format!("backfill_{new}"), &backfill.dag_id, now)
        })
        .await?;
    Ok(moved)
}
