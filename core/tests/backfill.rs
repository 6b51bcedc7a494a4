//! What a backfill creates, re-runs or skips, and what it refuses. Pure: no database, no
//! clock.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use updraft_core::backfill::{
    Action, BackfillError, BackfillOptions, Counts, ExistingRun, MAX_RUNS_WITHOUT_YES, Reprocess,
    decide, intervals, parse_date,
};
use updraft_core::dag::{Dag, LoadOptions, decode};
use updraft_core::ids::DagRunId;
use updraft_core::schedule::RunInterval;
use updraft_core::state::DagRunState;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Long after every range below: nothing is in the future unless a test says so.
fn now() -> DateTime<Utc> {
    at("2030-01-01T00:00:00Z")
}

fn dag(yaml: &str) -> Dag {
    decode("t.yaml", yaml, &LoadOptions::default()).unwrap()
}

/// A daily DAG (`extra` lines added at the top level).
fn daily(extra: &str) -> Dag {
    dag(&format!(
        "schedule: \"@daily\"\nstart_date: 2024-01-01\n{extra}tasks:\n  t: {{run: x}}\n"
    ))
}

fn dates(runs: &[RunInterval]) -> Vec<String> {
    runs.iter()
        .map(|run| run.logical_date.format("%m-%dT%H:%M").to_string())
        .collect()
}

/// Intervals of `dag` from `from` to `to` (RFC 3339), forwards, with the default limit.
fn range(dag: &Dag, from: &str, to: &str) -> Result<Vec<RunInterval>, BackfillError> {
    intervals(
        dag,
        at(from),
        at(to),
        false,
        Some(MAX_RUNS_WITHOUT_YES),
        now(),
    )
    .map(|intervals| intervals.runs)
}

#[test]
fn a_daily_range_is_inclusive_with_one_day_data_intervals() {
    let runs = range(&daily(""), "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z").unwrap();
    assert_eq!(runs.len(), 30, "February 2024 has 29 days, plus March 1st");
    for (day, run) in runs.iter().enumerate() {
        let start = at("2024-02-01T00:00:00Z") + Duration::days(day as i64);
        assert_eq!(run.logical_date, start);
        assert_eq!(run.data_interval_start, start);
        assert_eq!(run.data_interval_end, start + Duration::days(1));
        assert_eq!(run.run_after, start + Duration::days(1));
    }
}

#[test]
fn a_range_that_starts_between_ticks_begins_at_the_next_tick() {
    let runs = range(&daily(""), "2024-02-01T06:00:00Z", "2024-02-03T23:00:00Z").unwrap();
    assert_eq!(dates(&runs), ["02-02T00:00", "02-03T00:00"]);
}

#[test]
fn dates_are_midnight_in_the_dags_timezone() {
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let dag = dag(
        "schedule: {cron: \"0 0 * * *\", timezone: Europe/Berlin}\nstart_date: \
                   2024-01-01\ntasks:\n  t: {run: x}\n",
    );
    let from = parse_date("--from", "2024-03-30", berlin).unwrap();
    let to = parse_date("--to", "2024-04-01", berlin).unwrap();
    assert_eq!(from, at("2024-03-29T23:00:00Z"));
    assert_eq!(
        to,
        at("2024-03-31T22:00:00Z"),
        "summer time from March 31st"
    );
    let runs = intervals(&dag, from, to, false, None, now()).unwrap().runs;
    let logical: Vec<DateTime<Utc>> = runs.iter().map(|run| run.logical_date).collect();
    assert_eq!(
        logical,
        [
            at("2024-03-29T23:00:00Z"),
            at("2024-03-30T23:00:00Z"),
            at("2024-03-31T22:00:00Z"),
        ]
    );
    assert_eq!(
        runs[1].data_interval_end,
        at("2024-03-31T22:00:00Z"),
        "the DST day is 23 hours long"
    );
}

#[test]
fn parse_date_takes_dates_local_date_times_and_rfc_3339() {
    let utc = Tz::UTC;
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    for (text, tz, expected) in [
        ("2024-01-15", utc, "2024-01-15T00:00:00Z"),
        ("2024-01-15", berlin, "2024-01-14T23:00:00Z"),
        ("2024-01-15T06:30:00", berlin, "2024-01-15T05:30:00Z"),
        ("2024-01-15 06:30", utc, "2024-01-15T06:30:00Z"),
        ("2024-01-15T06:30:00+02:00", berlin, "2024-01-15T04:30:00Z"),
        ("2024-01-15T06:30:00Z", berlin, "2024-01-15T06:30:00Z"),
        // 02:30 does not exist on March 31st in Berlin: moved past the gap.
        ("2024-03-31T02:30:00", berlin, "2024-03-31T01:30:00Z"),
    ] {
        assert_eq!(
            parse_date("--from", text, tz).unwrap(),
            at(expected),
            "{text} in {tz}"
        );
    }
    for text in ["2024-13-01", "yesterday", "2024/01/01", ""] {
        let error = parse_date("--to", text, berlin).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "--to: bad date \"{text}\"; write a date (2024-03-01: midnight in the DAG's \
                 timezone, Europe/Berlin) or an RFC 3339 date-time (2024-03-01T06:00:00Z)"
            )
        );
    }
}

#[test]
fn run_backwards_starts_with_the_newest_date() {
    let runs = intervals(
        &daily(""),
        at("2024-02-01T00:00:00Z"),
        at("2024-02-03T00:00:00Z"),
        true,
        None,
        now(),
    )
    .unwrap()
    .runs;
    assert_eq!(dates(&runs), ["02-03T00:00", "02-02T00:00", "02-01T00:00"]);
}

#[test]
fn catchup_false_and_end_date_do_not_limit_a_backfill_but_are_warned_about() {
    let dag = daily("catchup: false\nend_date: 2024-02-02\n");
    let result = intervals(
        &dag,
        at("2023-12-30T00:00:00Z"),
        at("2024-02-03T00:00:00Z"),
        false,
        None,
        now(),
    )
    .unwrap();
    assert_eq!(result.runs.len(), 36);
    assert_eq!(
        result.warnings,
        [
            "2 of the 36 intervals lie before the DAG's start_date 2024-01-01T00:00:00Z: they \
             are backfilled all the same",
            "1 of the 36 intervals lie after the DAG's end_date 2024-02-02T00:00:00Z: they are \
             backfilled all the same",
        ]
    );
    let inside = intervals(
        &dag,
        at("2024-01-01T00:00:00Z"),
        at("2024-01-31T00:00:00Z"),
        false,
        None,
        now(),
    )
    .unwrap();
    assert!(inside.warnings.is_empty());
}

#[test]
fn fixed_intervals_tick_on_the_start_date_grid() {
    let dag =
        dag("schedule: {every: 6h}\nstart_date: 2024-01-01T01:00:00Z\ntasks:\n  t: {run: x}\n");
    let runs = range(&dag, "2024-01-02T00:00:00Z", "2024-01-02T23:59:00Z").unwrap();
    assert_eq!(
        dates(&runs),
        ["01-02T01:00", "01-02T07:00", "01-02T13:00", "01-02T19:00"]
    );
    assert_eq!(runs[0].data_interval_end, at("2024-01-02T07:00:00Z"));
    // Before start_date the grid goes on backwards.
    let before = range(&dag, "2023-12-31T12:00:00Z", "2024-01-01T02:00:00Z").unwrap();
    assert_eq!(
        dates(&before),
        ["12-31T13:00", "12-31T19:00", "01-01T01:00"]
    );
}

#[test]
fn instant_data_intervals_are_the_tick() {
    let dag = dag(
        "schedule: {cron: \"0 */12 * * *\", data_interval: instant}\nstart_date: 2024-01-01\n\
         tasks:\n  t: {run: x}\n",
    );
    let runs = range(&dag, "2024-01-02T00:00:00Z", "2024-01-02T12:00:00Z").unwrap();
    assert_eq!(dates(&runs), ["01-02T00:00", "01-02T12:00"]);
    assert_eq!(runs[1].data_interval_start, runs[1].data_interval_end);
}

#[test]
fn once_backfills_its_start_date_when_in_range() {
    let dag = dag("schedule: \"@once\"\nstart_date: 2024-01-05\ntasks:\n  t: {run: x}\n");
    let runs = range(&dag, "2024-01-01T00:00:00Z", "2024-01-31T00:00:00Z").unwrap();
    assert_eq!(dates(&runs), ["01-05T00:00"]);
    assert!(matches!(
        range(&dag, "2024-02-01T00:00:00Z", "2024-02-02T00:00:00Z"),
        Err(BackfillError::NoIntervals { .. })
    ));
}

#[test]
fn refusals_are_typed_errors_with_precise_messages() {
    let manual = dag("tasks:\n  t: {run: x}\n");
    let past = daily("");
    let mut depends = daily("");
    depends
        .tasks
        .values_mut()
        .for_each(|task| task.depends_on_past = true);
    let minutely = dag("schedule: \"* * * * *\"\nstart_date: 2024-01-01\ntasks:\n  t: {run: x}\n");
    let cases: Vec<(&Dag, &str, &str, bool, &str)> = vec![
        (
            &manual,
            "2024-01-01T00:00:00Z",
            "2024-01-02T00:00:00Z",
            false,
            "DAG \"t\" has no schedule (manual runs only), so it has no intervals to backfill; \
             create runs with `updraft dags trigger t --logical-date DATE`",
        ),
        (
            &past,
            "2024-01-05T00:00:00Z",
            "2024-01-01T00:00:00Z",
            false,
            "--from 2024-01-05T00:00:00Z is after --to 2024-01-01T00:00:00Z",
        ),
        (
            &past,
            "2024-01-05T01:00:00Z",
            "2024-01-05T23:00:00Z",
            false,
            "no run of DAG \"t\" (every day at 00:00 (UTC)) has a logical date from \
             2024-01-05T01:00:00Z to 2024-01-05T23:00:00Z: the range yields no intervals",
        ),
        (
            &minutely,
            "2024-01-01T00:00:00Z",
            "2024-01-08T00:00:00Z",
            false,
            "the range from 2024-01-01T00:00:00Z to 2024-01-08T00:00:00Z yields more than \
             10000 runs of DAG \"t\"; check the dates, or pass --yes to backfill them all",
        ),
        (
            &past,
            "2030-01-01T00:00:00Z",
            "2030-02-01T00:00:00Z",
            false,
            "every interval from 2030-01-01T00:00:00Z to 2030-02-01T00:00:00Z ends in the \
             future (the first at 2030-01-02T00:00:00Z): nothing can be backfilled yet; the \
             scheduler runs them when they are due",
        ),
        (
            &depends,
            "2024-01-01T00:00:00Z",
            "2024-01-02T00:00:00Z",
            true,
            "DAG \"t\" has tasks with depends_on_past (t): run backwards, each run would wait \
             for an earlier one that has not run; leave out --run-backwards",
        ),
    ];
    for (dag, from, to, backwards, message) in cases {
        let error = intervals(
            dag,
            at(from),
            at(to),
            backwards,
            Some(MAX_RUNS_WITHOUT_YES),
            now(),
        )
        .unwrap_err();
        assert_eq!(error.to_string(), message);
    }
    // With --yes (no limit) the minutely range is fine: 7 days of minutes.
    let all = intervals(
        &minutely,
        at("2024-01-01T00:00:00Z"),
        at("2024-01-08T00:00:00Z"),
        false,
        None,
        now(),
    )
    .unwrap();
    assert_eq!(all.runs.len(), 7 * 24 * 60 + 1);
    // Depending on the past is fine forwards.
    assert!(
        intervals(
            &depends,
            at("2024-01-01T00:00:00Z"),
            at("2024-01-02T00:00:00Z"),
            false,
            None,
            now()
        )
        .is_ok()
    );
}

#[test]
fn exactly_the_limit_is_allowed() {
    let dag = dag("schedule: \"* * * * *\"\nstart_date: 2024-01-01\ntasks:\n  t: {run: x}\n");
    let from = at("2024-01-01T00:00:00Z");
    let to = from + Duration::minutes(MAX_RUNS_WITHOUT_YES as i64 - 1);
    let runs = intervals(&dag, from, to, false, Some(MAX_RUNS_WITHOUT_YES), now()).unwrap();
    assert_eq!(runs.runs.len(), MAX_RUNS_WITHOUT_YES);
    assert!(matches!(
        intervals(
            &dag,
            from,
            to + Duration::minutes(1),
            false,
            Some(MAX_RUNS_WITHOUT_YES),
            now()
        ),
        Err(BackfillError::TooManyRuns { .. })
    ));
}

fn interval(day: u32) -> RunInterval {
    let start = at(&format!("2024-01-{day:02}T00:00:00Z"));
    RunInterval {
        logical_date: start,
        data_interval_start: start,
        data_interval_end: start + Duration::days(1),
        run_after: start + Duration::days(1),
    }
}

fn existing(day: u32, state: DagRunState) -> ExistingRun {
    ExistingRun {
        id: DagRunId(i64::from(day)),
        run_id: format!("scheduled__2024-01-{day:02}"),
        logical_date: interval(day).logical_date,
        state,
    }
}

/// The decision table: existing run x --reprocess -> action and reason.
#[test]
fn decisions_by_existing_run_and_reprocess_mode() {
    use Action::{Create, Rerun, Skip};
    use DagRunState::{Failed, Queued, Running, Success};
    let table: &[(Option<DagRunState>, Reprocess, Action, &str)] = &[
        (None, Reprocess::None, Create, "no run yet"),
        (None, Reprocess::Failed, Create, "no run yet"),
        (None, Reprocess::All, Create, "no run yet"),
        (
            Some(Queued),
            Reprocess::All,
            Skip,
            "run scheduled__2024-01-01 is queued: left alone",
        ),
        (
            Some(Running),
            Reprocess::None,
            Skip,
            "run scheduled__2024-01-01 is running: left alone",
        ),
        (
            Some(Running),
            Reprocess::Failed,
            Skip,
            "run scheduled__2024-01-01 is running: left alone",
        ),
        (
            Some(Running),
            Reprocess::All,
            Skip,
            "run scheduled__2024-01-01 is running: left alone",
        ),
        (
            Some(Failed),
            Reprocess::None,
            Skip,
            "run scheduled__2024-01-01 failed (--reprocess failed re-runs it)",
        ),
        (
            Some(Failed),
            Reprocess::Failed,
            Rerun,
            "run scheduled__2024-01-01 failed",
        ),
        (
            Some(Failed),
            Reprocess::All,
            Rerun,
            "run scheduled__2024-01-01 failed",
        ),
        (
            Some(Success),
            Reprocess::None,
            Skip,
            "run scheduled__2024-01-01 succeeded (--reprocess all re-runs it)",
        ),
        (
            Some(Success),
            Reprocess::Failed,
            Skip,
            "run scheduled__2024-01-01 succeeded (--reprocess all re-runs it)",
        ),
        (
            Some(Success),
            Reprocess::All,
            Rerun,
            "run scheduled__2024-01-01 succeeded; --reprocess all",
        ),
    ];
    for (state, reprocess, action, reason) in table {
        let runs: Vec<ExistingRun> = state.iter().map(|state| existing(1, *state)).collect();
        let decisions = decide(&[interval(1)], &runs, *reprocess, now());
        let decision = &decisions[0];
        assert_eq!(
            (decision.action, decision.reason.as_str()),
            (*action, *reason),
            "existing {state:?}, --reprocess {reprocess}"
        );
        assert_eq!(decision.existing, runs.first().cloned());
    }
}

#[test]
fn an_interval_not_yet_ended_is_left_to_the_scheduler() {
    let today = interval(10);
    let decisions = decide(
        &[interval(9), today],
        &[],
        Reprocess::None,
        at("2024-01-10T12:00:00Z"),
    );
    assert_eq!(decisions[0].action, Action::Create);
    assert_eq!(decisions[1].action, Action::Skip);
    assert_eq!(
        decisions[1].reason,
        "its data interval ends at 2024-01-11T00:00:00Z, in the future: the scheduler runs it \
         when due"
    );
}

#[test]
fn decisions_keep_the_order_and_count_by_action() {
    let intervals: Vec<RunInterval> = (1..=5).rev().map(interval).collect();
    let runs = [
        existing(2, DagRunState::Failed),
        existing(4, DagRunState::Success),
    ];
    let decisions = decide(&intervals, &runs, Reprocess::Failed, now());
    let actions: Vec<Action> = decisions.iter().map(|d| d.action).collect();
    assert_eq!(
        actions,
        [
            Action::Create,
            Action::Skip,
            Action::Create,
            Action::Rerun,
            Action::Create
        ]
    );
    assert_eq!(
        Counts::of(&decisions),
        Counts {
            create: 3,
            rerun: 1,
            skip: 1
        }
    );
}

#[test]
fn options_round_trip_and_default_to_the_dags_limit() {
    let options = BackfillOptions {
        reprocess: Reprocess::Failed,
        max_active_runs: Some(3),
        run_backwards: true,
        conf: serde_json::json!({"a": 1}),
    };
    let json = options.to_json();
    assert_eq!(
        json,
        serde_json::json!({"reprocess": "failed", "max_active_runs": 3, "run_backwards": true,
                           "conf": {"a": 1}})
    );
    assert_eq!(BackfillOptions::from_json(&json), options);
    assert_eq!(options.max_active_runs_or(16), 3);
    let unreadable = BackfillOptions::from_json(&serde_json::json!({"reprocess": 7}));
    assert_eq!(unreadable, BackfillOptions::default());
    assert_eq!(unreadable.max_active_runs_or(16), 16);
    assert_eq!("all".parse::<Reprocess>(), Ok(Reprocess::All));
    assert!("some".parse::<Reprocess>().is_err());
}
