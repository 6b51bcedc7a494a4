//! The timetable against Airflow's behaviour. The expected runs in
//! `fixtures/airflow/schedules.json` come from a real Airflow 2.10.5:
//! `tools/airflow_schedules/generate.py` builds an Airflow `DAG` for each case and asks
//! `DAG.next_dagrun_info` for runs the way Airflow's scheduler does on an empty database, with
//! Airflow's clock frozen at the case's `now`. The file records the versions it was made with
//! (apache-airflow, croniter, pendulum).

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::Deserialize;
use updraft_core::schedule::{DataIntervalMode, RunInterval, Schedule, Timetable, parse_timezone};

#[derive(Deserialize)]
struct Fixture {
    #[serde(rename = "apache-airflow")]
    airflow: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    schedule: String,
    timezone: Option<String>,
    data_interval: Option<String>,
    start_date: String,
    end_date: Option<String>,
    catchup: bool,
    now: String,
    count: usize,
    due: Vec<RunInterval>,
    upcoming: Vec<RunInterval>,
}

/// A date is midnight in the DAG's timezone; a date-time is an instant (as in DAG files).
fn instant(text: &str, tz: chrono_tz::Tz) -> DateTime<Utc> {
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => {
            let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap();
            tz.from_local_datetime(&date.and_hms_opt(0, 0, 0).unwrap())
                .unwrap()
                .with_timezone(&Utc)
        }
    }
}

fn timetable(case: &Case) -> Timetable {
    let tz = parse_timezone(case.timezone.as_deref().unwrap_or("UTC")).unwrap();
    let schedule = match case.schedule.strip_prefix("every ") {
        Some(seconds) => {
            Schedule::every(std::time::Duration::from_secs(seconds.parse().unwrap())).unwrap()
        }
        None => Schedule::parse_cron(&case.schedule).unwrap(),
    };
    let mode: DataIntervalMode = case
        .data_interval
        .as_deref()
        .unwrap_or("previous")
        .parse()
        .unwrap();
    Timetable::new(
        schedule,
        tz,
        mode,
        Some(instant(&case.start_date, tz)),
        case.end_date.as_deref().map(|d| instant(d, tz)),
        case.catchup,
    )
}

#[test]
fn runs_match_airflow_for_every_case() {
    let fixture: Fixture =
        serde_json::from_str(include_str!("fixtures/airflow/schedules.json")).unwrap();
    assert_eq!(fixture.airflow, "2.10.5");
    assert!(fixture.cases.len() >= 70, "the fixture lost cases");
    let mut failures = Vec::new();
    for case in &fixture.cases {
        let timetable = timetable(case);
        let now = instant(&case.now, chrono_tz::Tz::UTC);
        let due = timetable.due_runs(now);
        let upcoming = timetable.upcoming(due.last(), now, case.count);
        if due != case.due {
            failures.push(format!(
                "{}: due\n  airflow: {:?}\n  updraft: {:?}",
                case.name, case.due, due
            ));
        }
        if upcoming != case.upcoming {
            failures.push(format!(
                "{}: upcoming\n  airflow: {:?}\n  updraft: {:?}",
                case.name, case.upcoming, upcoming
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
