//! Backfills (DESIGN §8, issue 4): the runs a backfill of a DAG over a date range calls for,
//! and for each whether it is created, re-run (cleared) or skipped, and why.
//!
//! Pure: the DAG, the range, the runs that already exist and `now` are parameters, so
//! `updraft dags backfill --dry-run` prints exactly what a backfill would do. Creating the
//! backfill and its runs is `updraft_ops::backfill`; the scheduler runs them.
//!
//! The range is inclusive on logical dates, which are those of the DAG's own schedule, in its
//! timezone: a backfill never invents dates the scheduler would not use, so a backfill run and
//! a scheduled run meet on the same logical date (and the unique index keeps only one).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::dag::Dag;
use crate::ids::{DagId, DagRunId};
use crate::schedule::{RunInterval, Schedule, Timetable};
use crate::state::DagRunState;
use crate::time::{WrittenTime, local};

/// Without `--yes`, a backfill of more runs than this is refused: it is likely a typo in a
/// date, and it would fill the scheduler's work list for a long time.
pub const MAX_RUNS_WITHOUT_YES: usize = 10_000;

/// Which dates that already have a run are run again (`--reprocess`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reprocess {
    /// Only dates without a run get one.
    #[default]
    None,
    /// Dates whose run failed are re-run too (their task instances are cleared).
    Failed,
    /// Every date with a finished run is re-run.
    All,
}

impl Reprocess {
    pub const ALL: [Reprocess; 3] = [Reprocess::None, Reprocess::Failed, Reprocess::All];

    pub fn as_str(self) -> &'static str {
        match self {
            Reprocess::None => "none",
            Reprocess::Failed => "failed",
            Reprocess::All => "all",
        }
    }
}

impl fmt::Display for Reprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reprocess {
    type Err = String;

    fn from_str(text: &str) -> Result<Reprocess, String> {
        Reprocess::ALL
            .into_iter()
            .find(|mode| mode.as_str() == text)
            .ok_or_else(|| format!("unknown reprocess mode \"{text}\"; use none, failed or all"))
    }
}

/// What a backfill was asked to do: stored as `backfill.options` (JSON), read back by the
/// scheduler for `max_active_runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackfillOptions {
    pub reprocess: Reprocess,
    /// Runs of this backfill running at once; `None`: the DAG's `max_active_runs`.
    pub max_active_runs: Option<u32>,
    /// Newest logical date first.
    pub run_backwards: bool,
    /// The conf of every run (a JSON object; its keys override the DAG's params).
    pub conf: serde_json::Value,
}

impl Default for BackfillOptions {
    fn default() -> BackfillOptions {
        BackfillOptions {
            reprocess: Reprocess::None,
            max_active_runs: None,
            run_backwards: false,
            conf: serde_json::json!({}),
        }
    }
}

impl BackfillOptions {
    /// The options stored with a backfill. A value this build cannot read gives the defaults:
    /// a backfill's runs must run even if its options were written by another version.
    pub fn from_json(value: &serde_json::Value) -> BackfillOptions {
        serde_json::from_value(value.clone()).unwrap_or_default()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("options serialize")
    }

    /// How many runs of the backfill may run at once, given the DAG's `max_active_runs`.
    pub fn max_active_runs_or(&self, dag_max_active_runs: u32) -> usize {
        self.max_active_runs.unwrap_or(dag_max_active_runs).max(1) as usize
    }
}

/// Why a backfill cannot be made as asked. Each is bad input: `updraft dags backfill` exits 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackfillError {
    #[error(
        "{flag}: bad date \"{text}\"; write a date (2024-03-01: midnight in the DAG's timezone, \
         {timezone}) or an RFC 3339 date-time (2024-03-01T06:00:00Z)"
    )]
    BadDate {
        flag: &'static str,
        text: String,
        timezone: String,
    },
    #[error(
        "DAG \"{dag_id}\" has no schedule (manual runs only), so it has no intervals to \
         backfill; create runs with `updraft dags trigger {dag_id} --logical-date DATE`"
    )]
    ManualOnly { dag_id: DagId },
    #[error("--from {from} is after --to {to}")]
    ReversedRange { from: String, to: String },
    #[error(
        "no run of DAG \"{dag_id}\" ({schedule}) has a logical date from {from} to {to}: \
         the range yields no intervals"
    )]
    NoIntervals {
        dag_id: DagId,
        schedule: String,
        from: String,
        to: String,
    },
    #[error(
        "the range from {from} to {to} yields more than {limit} runs of DAG \"{dag_id}\"; \
         check the dates, or pass --yes to backfill them all"
    )]
    TooManyRuns {
        dag_id: DagId,
        from: String,
        to: String,
        limit: usize,
    },
    #[error(
        "every interval from {from} to {to} ends in the future (the first at {first_end}): \
         nothing can be backfilled yet; the scheduler runs them when they are due"
    )]
    AllInFuture {
        from: String,
        to: String,
        first_end: String,
    },
    #[error(
        "DAG \"{dag_id}\" has tasks with depends_on_past ({tasks}): run backwards, each run \
         would wait for an earlier one that has not run; leave out --run-backwards"
    )]
    BackwardsDependsOnPast { dag_id: DagId, tasks: String },
}

/// A `--from`/`--to` value, read in the DAG's timezone (`crate::time`).
pub fn parse_date(flag: &'static str, text: &str, tz: Tz) -> Result<DateTime<Utc>, BackfillError> {
    WrittenTime::parse(text)
        .and_then(|written| written.in_zone(tz))
        .ok_or_else(|| BackfillError::BadDate {
            flag,
            text: text.trim().to_owned(),
            timezone: tz.name().to_owned(),
        })
}

/// The intervals of a range, in the order their runs start, and what the user should know.
#[derive(Debug, Clone, PartialEq)]
pub struct Intervals {
    pub runs: Vec<RunInterval>,
    /// E.g. the range reaches before the DAG's `start_date`.
    pub warnings: Vec<String>,
}

/// The schedule intervals of `dag` whose logical date lies in `[from, to]`, oldest first (or
/// newest first with `run_backwards`). The DAG's `catchup`, `start_date` and `end_date` do not
/// limit a backfill, which is explicit; dates outside `start_date`/`end_date` are kept and
/// named in a warning. At most `limit` runs (`None`: no limit); more is
/// [`BackfillError::TooManyRuns`]. A range whose every interval ends after `now` is refused:
/// those runs are the scheduler's.
pub fn intervals(
    dag: &Dag,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    run_backwards: bool,
    limit: Option<usize>,
    now: DateTime<Utc>,
) -> Result<Intervals, BackfillError> {
    let timetable = &dag.timetable;
    let tz = timetable.timezone;
    let show = |t: DateTime<Utc>| local(t, tz);
    if timetable.schedule == Schedule::Manual {
        return Err(BackfillError::ManualOnly {
            dag_id: dag.id.clone(),
        });
    }
    if from > to {
        return Err(BackfillError::ReversedRange {
            from: show(from),
            to: show(to),
        });
    }
    if run_backwards {
        let past: Vec<&str> = dag
            .tasks
            .values()
            .filter(|task| task.depends_on_past)
            .map(|task| task.id.as_str())
            .collect();
        if !past.is_empty() {
            return Err(BackfillError::BackwardsDependsOnPast {
                dag_id: dag.id.clone(),
                tasks: past.join(", "),
            });
        }
    }
    let mut runs = walk(timetable, from, to, limit.map(|limit| limit + 1));
    if let Some(limit) = limit
        && runs.len() > limit
    {
        return Err(BackfillError::TooManyRuns {
            dag_id: dag.id.clone(),
            from: show(from),
            to: show(to),
            limit,
        });
    }
    let (Some(first), Some(_)) = (runs.first(), runs.last()) else {
        return Err(BackfillError::NoIntervals {
            dag_id: dag.id.clone(),
            schedule: timetable.describe(),
            from: show(from),
            to: show(to),
        });
    };
    if runs.iter().all(|run| run.run_after > now) {
        return Err(BackfillError::AllInFuture {
            from: show(from),
            to: show(to),
            first_end: show(first.run_after),
        });
    }
    let mut warnings = Vec::new();
    if let Some(start) = timetable.start_date {
        let before = runs.iter().filter(|run| run.logical_date < start).count();
        if before > 0 {
            warnings.push(format!(
                "{before} of the {} intervals lie before the DAG's start_date {}: they are \
                 backfilled all the same",
                runs.len(),
                show(start)
            ));
        }
    }
    if let Some(end) = timetable.end_date {
        let after = runs.iter().filter(|run| run.logical_date > end).count();
        if after > 0 {
            warnings.push(format!(
                "{after} of the {} intervals lie after the DAG's end_date {}: they are \
                 backfilled all the same",
                runs.len(),
                show(end)
            ));
        }
    }
    if run_backwards {
        runs.reverse();
    }
    Ok(Intervals { runs, warnings })
}

/// The timetable's runs with logical dates in `[from, to]`, oldest first, at most `cap`.
fn walk(
    timetable: &Timetable,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    cap: Option<usize>,
) -> Vec<RunInterval> {
    let mut runs: Vec<RunInterval> = Vec::new();
    let anchor = match &timetable.schedule {
        Schedule::Manual => return runs,
        // `@once` has one date, its start_date.
        Schedule::Once => {
            if let Some(start) = timetable.start_date
                && from <= start
                && start <= to
            {
                runs.push(RunInterval {
                    logical_date: start,
                    data_interval_start: start,
                    data_interval_end: start,
                    run_after: start,
                });
            }
            return runs;
        }
        Schedule::Cron(_) | Schedule::AnyOf(_) => from,
        // Fixed intervals tick from start_date: the first tick at or after `from` on that grid,
        // so backfill runs fall on the dates scheduled runs use.
        Schedule::Every(interval) => match timetable.start_date {
            Some(start) => first_tick_at_or_after(start, *interval, from),
            None => from,
        },
    };
    // The DAG's own timetable, with catch-up over exactly the range.
    let mut range = timetable.clone();
    range.start_date = Some(anchor);
    range.end_date = Some(to);
    range.catchup = true;
    // A backfill's runs start as soon as its limits let them: no jitter.
    range.jitter = None;
    while cap.is_none_or(|cap| runs.len() < cap) {
        let Some(run) = range.next_dagrun_info(runs.last(), to) else {
            break;
        };
        // A schedule that answers the same date twice must end the walk, not loop.
        if runs
            .last()
            .is_some_and(|last| run.logical_date <= last.logical_date)
        {
            break;
        }
        // Never: the walk starts at the first tick at or after `from`.
        if run.logical_date < from {
            break;
        }
        runs.push(run);
    }
    runs
}

/// The first instant `start + k * interval` (k any integer) at or after `t`.
fn first_tick_at_or_after(
    start: DateTime<Utc>,
    interval: std::time::Duration,
    t: DateTime<Utc>,
) -> DateTime<Utc> {
    let step = interval.as_nanos() as i128;
    if step == 0 {
        return t;
    }
    let nanos = |d: DateTime<Utc>| {
        i128::from(d.timestamp()) * 1_000_000_000 + i128::from(d.timestamp_subsec_nanos())
    };
    let offset = nanos(t) - nanos(start);
    // Ceiling division, for negative offsets too.
    let k = offset.div_euclid(step) + i128::from(offset.rem_euclid(step) != 0);
    let tick = nanos(start) + k * step;
    let seconds = tick.div_euclid(1_000_000_000) as i64;
    let subsec = tick.rem_euclid(1_000_000_000) as u32;
    DateTime::from_timestamp(seconds, subsec).unwrap_or(t)
}

/// A run that already holds a logical date (a scheduled or backfill run; manual runs share
/// dates and are not in the way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingRun {
    pub id: DagRunId,
    pub run_id: String,
    pub logical_date: DateTime<Utc>,
    pub state: DagRunState,
}

/// What a backfill does with one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new `backfill` run.
    Create,
    /// The existing run is cleared (every task instance back to `none`) and joins the backfill.
    Rerun,
    /// Left alone.
    Skip,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Rerun => "re-run",
            Action::Skip => "skip",
        }
    }
}

/// One interval of a backfill and what happens to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub interval: RunInterval,
    pub action: Action,
    /// Why, in words: "no run yet", "run scheduled__... failed".
    pub reason: String,
    /// The run that holds the date, if any.
    pub existing: Option<ExistingRun>,
}

/// Decides each interval (in the order given) against the runs that exist:
///
/// | existing run        | none       | failed     | all        |
/// |---------------------|------------|------------|------------|
/// | no run              | create     | create     | create     |
/// | queued or running   | skip       | skip       | skip       |
/// | failed              | skip       | re-run     | re-run     |
/// | success             | skip       | skip       | re-run     |
///
/// An interval without a run whose data interval has not ended at `now` is skipped: the
/// scheduler creates it when it is due.
pub fn decide(
    intervals: &[RunInterval],
    existing: &[ExistingRun],
    reprocess: Reprocess,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let by_date: HashMap<DateTime<Utc>, &ExistingRun> =
        existing.iter().map(|run| (run.logical_date, run)).collect();
    intervals
        .iter()
        .map(|interval| {
            let existing = by_date.get(&interval.logical_date).copied();
            let (action, reason) = match existing {
                None if interval.run_after > now => (
                    Action::Skip,
                    format!(
                        "its data interval ends at {}, in the future: the scheduler runs it \
                         when due",
                        interval
                            .run_after
                            .to_rfc3339_opts(SecondsFormat::Secs, true)
                    ),
                ),
                None => (Action::Create, "no run yet".to_owned()),
                Some(run) => match (run.state, reprocess) {
                    (DagRunState::Queued | DagRunState::Running, _) => (
                        Action::Skip,
                        format!("run {} is {}: left alone", run.run_id, run.state),
                    ),
                    (DagRunState::Failed, Reprocess::None) => (
                        Action::Skip,
                        format!("run {} failed (--reprocess failed re-runs it)", run.run_id),
                    ),
                    (DagRunState::Failed, Reprocess::Failed | Reprocess::All) => {
                        (Action::Rerun, format!("run {} failed", run.run_id))
                    }
                    (DagRunState::Success, Reprocess::None | Reprocess::Failed) => (
                        Action::Skip,
                        format!("run {} succeeded (--reprocess all re-runs it)", run.run_id),
                    ),
                    (DagRunState::Success, Reprocess::All) => (
                        Action::Rerun,
                        format!("run {} succeeded; --reprocess all", run.run_id),
                    ),
                },
            };
            Decision {
                interval: *interval,
                action,
                reason,
                existing: existing.cloned(),
            }
        })
        .collect()
}

/// How many intervals each action got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub create: usize,
    pub rerun: usize,
    pub skip: usize,
}

impl Counts {
    pub fn of(decisions: &[Decision]) -> Counts {
        let mut counts = Counts::default();
        for decision in decisions {
            match decision.action {
                Action::Create => counts.create += 1,
                Action::Rerun => counts.rerun += 1,
                Action::Skip => counts.skip += 1,
            }
        }
        counts
    }

    /// Runs the backfill will run: created and re-run.
    pub fn runs(&self) -> usize {
        self.create + self.rerun
    }
}
