//! `updraft dags list | show | schema | next-runs` through the real binary.

mod common;

use std::path::Path;

use common::{run, updraft};
use serde_json::Value;

fn dags(home: &Path, folder: &Path, args: &[&str]) -> (i32, String, String) {
    let mut command = updraft(home);
    command
        .arg("dags")
        .args(args)
        .arg("--dags-folder")
        .arg(folder);
    run(command)
}

#[test]
fn list_shows_every_example_dag() {
    let home = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = dags(home.path(), Path::new("dags"), &["list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["dag_id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "api_healthcheck",
            "fanout_reports",
            "hourly_metrics",
            "manual_backup",
            "region_report",
            "sales_daily",
            "warehouse_maintenance"
        ]
    );
    assert_eq!(stderr, "", "no file of dags/ has errors");
}

#[test]
fn show_json_has_tasks_dependencies_and_schedule() {
    let home = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = dags(
        home.path(),
        Path::new("dags"),
        &["show", "sales_daily", "--json"],
    );
    assert_eq!(code, 0, "{stderr}");
    let dag: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(dag["timetable"]["schedule"], "0 2 * * *");
    assert_eq!(dag["timetable"]["timezone"], "Europe/Berlin");
    assert_eq!(
        dag["tasks"]["load"]["depends_on"],
        serde_json::json!(["transform"])
    );
    assert_eq!(dag["tasks"]["load"]["retries"], 3);
    assert_eq!(dag["tasks"]["cleanup"]["trigger_rule"], "all_done");
}

#[test]
fn show_of_an_unknown_dag_suggests_the_closest() {
    let home = tempfile::tempdir().unwrap();
    let (code, _, stderr) = dags(home.path(), Path::new("dags"), &["show", "sales_dayly"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        "error: no DAG \"sales_dayly\" in dags; did you mean \"sales_daily\"?\n"
    );
}

#[test]
fn schema_is_json_schema() {
    let home = tempfile::tempdir().unwrap();
    let (code, stdout, _) = dags(home.path(), Path::new("dags"), &["schema"]);
    assert_eq!(code, 0);
    let schema: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(schema["properties"]["tasks"].is_object());
}

/// Writes one DAG file per fixture case and compares `next-runs --json` with the runs Airflow
/// creates (see core/tests/schedule_airflow.rs for where those values come from).
#[test]
fn next_runs_match_airflow() {
    let fixture: Value = serde_json::from_str(include_str!(
        "../core/tests/fixtures/airflow/schedules.json"
    ))
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let schedule = case["schedule"].as_str().unwrap();
        let timing = match schedule.strip_prefix("every ") {
            Some(seconds) => format!("  every: {seconds}s\n"),
            None => format!("  cron: \"{schedule}\"\n"),
        };
        let mut text = format!(
            "id: {name}\nschedule:\n{timing}  timezone: {}\n  data_interval: {}\n\
             start_date: \"{}\"\ncatchup: {}\n",
            case["timezone"].as_str().unwrap_or("UTC"),
            case["data_interval"].as_str().unwrap_or("previous"),
            case["start_date"].as_str().unwrap(),
            case["catchup"],
        );
        if let Some(end) = case["end_date"].as_str() {
            text.push_str(&format!("end_date: \"{end}\"\n"));
        }
        text.push_str("tasks:\n  only:\n    run: \"true\"\n");
        std::fs::write(folder.path().join(format!("{name}.yaml")), text).unwrap();

        let count = case["count"].to_string();
        let (code, stdout, stderr) = dags(
            home.path(),
            folder.path(),
            &[
                "next-runs",
                name,
                "--now",
                case["now"].as_str().unwrap(),
                "--count",
                &count,
                "--json",
            ],
        );
        assert_eq!(code, 0, "{name}: {stderr}");
        let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
        let expected: Vec<Value> = case["due"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| (run, true))
            .chain(
                case["upcoming"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|run| (run, false)),
            )
            .map(|(run, due)| {
                let mut run = run.clone();
                run["due"] = Value::Bool(due);
                run
            })
            .collect();
        assert_eq!(rows, expected, "{name}");
        checked += 1;
    }
    assert!(checked >= 30);
}

#[test]
fn next_runs_shows_several_schedules_their_jitter_and_misfire_grace() {
    let home = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(
        folder.path().join("opening.yaml"),
        "version: 1\nstart_date: 2024-01-01\ncatchup: true\n\
         schedule: [{cron: \"0 8 * * 1-5\", jitter: 5m, timezone: Europe/Berlin, \
         misfire_grace: 10m}, {cron: \"0 10 * * 6,0\", jitter: 5m, timezone: Europe/Berlin, \
         misfire_grace: 10m}]\n\
         tasks:\n  open: {run: \"true\"}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = dags(
        home.path(),
        folder.path(),
        &[
            "next-runs",
            "opening",
            "--now",
            "2024-01-05T12:00:00Z",
            "--count",
            "3",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let dates: Vec<(&str, bool)> = rows
        .iter()
        .map(|row| {
            (
                row["logical_date"].as_str().unwrap(),
                row["due"].as_bool().unwrap(),
            )
        })
        .collect();
    // Weekdays at 08:00 Berlin (07:00 UTC), the weekend at 10:00 (09:00 UTC); each run's
    // interval ends at the union's next tick, and it starts up to 5 minutes after it.
    assert_eq!(
        dates,
        [
            ("2024-01-01T07:00:00Z", true),
            ("2024-01-02T07:00:00Z", true),
            ("2024-01-03T07:00:00Z", true),
            ("2024-01-04T07:00:00Z", true),
            ("2024-01-05T07:00:00Z", false),
            ("2024-01-06T09:00:00Z", false),
            ("2024-01-07T09:00:00Z", false),
        ]
    );
    let friday = &rows[4];
    assert_eq!(friday["data_interval_end"], "2024-01-06T09:00:00Z");
    let end = friday["data_interval_end"].as_str().unwrap();
    let after = friday["run_after"].as_str().unwrap();
    assert!(after >= end && after <= "2024-01-06T09:05:00Z", "{friday}");
    let (code, text, _) = dags(
        home.path(),
        folder.path(),
        &["next-runs", "opening", "--now", "2024-01-05T12:00:00Z"],
    );
    assert_eq!(code, 0);
    assert!(
        text.contains(", and ")
            && text.contains("each start delayed up to 5m, a run not started within 10m skipped"),
        "{text}"
    );
}

#[test]
fn next_runs_refuses_a_bad_now() {
    let home = tempfile::tempdir().unwrap();
    let (code, _, stderr) = dags(
        home.path(),
        Path::new("dags"),
        &["next-runs", "sales_daily", "--now", "yesterday"],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid value 'yesterday' for '--now <NOW>': not a time"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_get_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let (code, _, stderr) = dags(
        home.path(),
        Path::new("dags"),
        &["list", "--default-timezone", "Europe/Berln"],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("error: --default-timezone: unknown timezone \"Europe/Berln\"")
            && stderr.contains("did you mean \"Europe/Berlin\"?"),
        "{stderr}"
    );

    let (code, _, stderr) = dags(home.path(), Path::new("dags"), &["lst"]);
    assert_eq!(code, 2, "clap's usage errors exit 2");
    assert!(stderr.contains("unrecognized subcommand 'lst'"), "{stderr}");

    let (code, _, stderr) = dags(home.path(), Path::new("no/such/folder"), &["list"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("the DAGs folder no/such/folder does not exist"),
        "{stderr}"
    );
}
