"""Asks a real Airflow which DAG runs its scheduler creates for a table of schedules, and writes
the answers to core/tests/fixtures/airflow/schedules.json, the expected values of
core/tests/schedule_airflow.rs and tests/dags_cli.rs.

Nothing here re-implements Airflow: each case builds an `airflow.models.dag.DAG` (the schedule
string, a timedelta for `every`, or a `CronTriggerTimetable` for `data_interval: instant`) and
calls `DAG.next_dagrun_info` the way the scheduler does on an empty database: first with no
previous run, then with the data interval of the run just created. Airflow's clock
(`airflow.utils.timezone.utcnow`, also imported by name in `airflow.timetables.interval`) is
frozen at the case's `now`. A run is due when its `run_after <= now`.

Run (PyPI access needed; Python 3.11). The file was generated with the versions it records:
apache-airflow 2.10.5, croniter 6.0.0, pendulum 3.0.0. Airflow's constraints file lives on
GitHub, which was not reachable, so those two were pinned by hand; unpinned, pip picks
croniter 7.0.0 and pendulum 3.3.0, which give the same file.
    python3 -m venv /tmp/afvenv
    /tmp/afvenv/bin/pip install "apache-airflow==2.10.5" "croniter==6.0.0" "pendulum==3.0.0"
    /tmp/afvenv/bin/python tools/airflow_schedules/generate.py

Fixture schema (read by both Rust tests, keep it stable): `schedule` is a cron string, a
preset, or `every <seconds>`; `start_date`/`end_date` are a date (midnight in `timezone`) or an
RFC 3339 instant; `now` is an RFC 3339 instant; `count` is how many upcoming runs to list.
"""

import datetime
import json
import os
import pathlib
import tempfile
from importlib.metadata import version

# Airflow reads its configuration when imported: give it a throwaway home, no examples.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="airflow-home-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DEFAULT_TIMEZONE"] = "UTC"

import pendulum  # noqa: E402
import airflow.timetables.interval  # noqa: E402
import airflow.utils.timezone  # noqa: E402
from airflow.models.dag import DAG  # noqa: E402
from airflow.operators.empty import EmptyOperator  # noqa: E402
from airflow.timetables.trigger import CronTriggerTimetable  # noqa: E402

FROZEN_NOW = [None]


def frozen_utcnow():
    return FROZEN_NOW[0]


airflow.utils.timezone.utcnow = frozen_utcnow
airflow.timetables.interval.utcnow = frozen_utcnow


def parse_time(text, tz):
    """A date is midnight in the DAG's timezone, as in Updraft's DAG files."""
    if "T" in text:
        return pendulum.parse(text).in_timezone(tz)
    return pendulum.parse(text, tz=tz)


def build_dag(case):
    tz = case.get("timezone", "UTC")
    schedule = case["schedule"]
    if schedule.startswith("every "):
        schedule = datetime.timedelta(seconds=int(schedule.split()[1]))
    elif case.get("data_interval", "previous") == "instant":
        schedule = CronTriggerTimetable(schedule, timezone=tz)
    # The DAG's timezone is its start_date's, which is how Airflow 2 learns it.
    start = parse_time(case["start_date"], tz)
    end = parse_time(case["end_date"], tz) if case.get("end_date") else None
    dag = DAG(
        dag_id=case["name"],
        schedule=schedule,
        start_date=start,
        end_date=end,
        catchup=case["catchup"],
    )
    EmptyOperator(task_id="only", dag=dag)
    return dag


def runs(case):
    now = pendulum.parse(case["now"]).in_timezone("UTC")
    FROZEN_NOW[0] = now
    dag = build_dag(case)
    due, upcoming = [], []
    info = dag.next_dagrun_info(None)
    while info is not None and len(upcoming) < case["count"]:
        row = {
            "logical_date": fmt(info.logical_date),
            "data_interval_start": fmt(info.data_interval.start),
            "data_interval_end": fmt(info.data_interval.end),
            "run_after": fmt(info.run_after),
        }
        if info.run_after <= now:
            assert not upcoming, f"{case['name']}: a due run after an upcoming one"
            due.append(row)
        else:
            upcoming.append(row)
        info = dag.next_dagrun_info(info.data_interval)
    return due, upcoming


def fmt(t):
    text = t.in_timezone("UTC").strftime("%Y-%m-%dT%H:%M:%S")
    assert t.microsecond == 0, f"sub-second times are not in the fixture format: {t}"
    return text + "Z"


def case(name, schedule, start_date, now, catchup=False, **extra):
    return {"name": name, "schedule": schedule, "start_date": start_date, "now": now,
            "catchup": catchup, "count": extra.pop("count", 4), **extra}


BERLIN = {"timezone": "Europe/Berlin"}
NEW_YORK = {"timezone": "America/New_York"}
INSTANT = {"data_interval": "instant"}

CASES = [
    # Cron fields: ranges, lists, steps, names.
    case("business_hours_every_15m", "*/15 9-17 * * MON-FRI", "2024-03-01", "2024-03-04T10:07:00Z"),
    case("business_hours_over_the_weekend", "*/15 9-17 * * MON-FRI", "2024-03-01", "2024-03-09T12:00:00Z"),
    case("first_and_fifteenth", "0 0 1,15 * *", "2024-01-01", "2024-03-20T00:00:00Z", catchup=True),
    case("noon_in_january_and_july", "0 12 * JAN,JUL *", "2024-01-01", "2024-01-03T13:00:00Z", catchup=True),
    case("noon_in_january_and_july_skips_to_july", "0 12 * JAN,JUL *", "2024-01-01", "2024-02-10T00:00:00Z"),
    case("friday_the_13th_is_dom_or_dow", "0 0 13 * FRI", "2024-09-01", "2024-09-21T00:00:00Z", catchup=True),
    case("sunday_as_0", "0 0 * * 0", "2024-01-01", "2024-01-20T00:00:00Z", catchup=True),
    case("sunday_as_7", "30 6 * * 7", "2024-01-01", "2024-01-20T00:00:00Z", catchup=True),
    case("every_minute_on_sundays_as_7", "* * * * 7", "2024-01-01", "2024-01-07T00:03:30Z", catchup=True),
    case("every_minute_on_sundays_from_saturday", "* * * * 7", "2024-01-01", "2024-01-06T23:00:00Z"),
    case("step_in_range", "5-50/15 */6 * * *", "2024-01-01", "2024-01-01T13:00:00Z", catchup=True),
    case("last_day_of_month", "0 23 L * *", "2024-01-01", "2024-03-02T00:00:00Z", catchup=True),
    case("first_monday_with_hash", "0 9 * * 1#1", "2024-01-01", "2024-03-10T00:00:00Z", catchup=True),
    case("last_friday_croniter_style", "0 18 * * L5", "2024-01-01", "2024-03-10T00:00:00Z", catchup=True),
    # Day of month and day of week are OR-ed unless one is literally `*`: a step is a
    # restriction, and so is a range naming every day (Airflow runs these daily).
    case("stepped_day_of_month_or_monday", "0 0 */10 * MON", "2024-01-01", "2024-01-25T00:00:00Z", catchup=True),
    case("days_1_to_31_or_monday_is_every_day", "0 0 1-31 * MON", "2024-01-01", "2024-01-12T00:00:00Z", catchup=True),
    case("the_13th_or_any_weekday_is_every_day", "0 0 13 * 0-6", "2024-01-01", "2024-01-06T00:00:00Z", catchup=True),
    # croniter syntax that croner spells differently.
    case("start_slash_step", "0/20 * * * *", "2024-01-01", "2024-01-01T01:10:00Z", catchup=True),
    case("hours_wrapping_past_midnight", "0 22-2 * * *", "2024-01-01", "2024-01-02T03:00:00Z", catchup=True),
    case("weekdays_wrapping_past_sunday", "0 6 * * FRI-MON", "2024-01-01", "2024-01-14T00:00:00Z", catchup=True),
    # Presets.
    case("preset_hourly", "@hourly", "2024-01-01", "2024-01-01T03:30:00Z", catchup=True),
    case("preset_daily", "@daily", "2024-01-01", "2024-01-04T00:00:00Z", catchup=True),
    case("preset_midnight", "@midnight", "2024-01-01", "2024-01-04T00:00:00Z", catchup=True),
    case("preset_weekly", "@weekly", "2024-01-01", "2024-01-20T00:00:00Z", catchup=True),
    case("preset_monthly", "@monthly", "2024-01-01", "2024-03-15T00:00:00Z", catchup=True),
    case("preset_quarterly", "@quarterly", "2024-01-01", "2024-08-01T00:00:00Z", catchup=True),
    case("preset_yearly", "@yearly", "2022-06-01", "2024-08-01T00:00:00Z", catchup=True),
    case("preset_annually", "@annually", "2022-06-01", "2024-08-01T00:00:00Z"),
    case("preset_once", "@once", "2024-01-01T06:00:00Z", "2024-01-02T00:00:00Z", count=2),
    case("preset_once_in_the_future", "@once", "2024-05-01", "2024-01-02T00:00:00Z", count=2),
    # Catchup off: only the latest complete interval is due.
    case("daily_no_catchup", "0 2 * * *", "2024-01-01", "2024-03-10T12:00:00Z"),
    case("daily_no_catchup_on_a_boundary", "0 2 * * *", "2024-01-01", "2024-03-10T02:00:00Z"),
    case("daily_no_catchup_a_moment_after_a_boundary", "0 2 * * *", "2024-01-01", "2024-03-10T02:00:00.250000Z"),
    case("hourly_no_catchup_a_moment_after_a_boundary", "0 * * * *", "2024-01-01", "2024-03-10T02:00:00.500000Z"),
    case("start_date_in_the_future", "0 2 * * *", "2024-06-01", "2024-03-10T12:00:00Z"),
    case("start_date_off_the_schedule", "0 2 * * *", "2024-01-01T05:00:00Z", "2024-01-04T00:00:00Z", catchup=True),
    case("start_date_off_the_schedule_no_catchup", "0 2 * * *", "2024-03-09T05:00:00Z", "2024-03-10T12:00:00Z"),
    # end_date: a run whose logical date is past it is not created.
    case("end_date_stops_catchup", "0 0 * * *", "2024-01-01", "2024-02-01T00:00:00Z", catchup=True, end_date="2024-01-05"),
    case("end_date_between_ticks", "0 0 * * *", "2024-01-01", "2024-02-01T00:00:00Z", catchup=True, end_date="2024-01-04T12:00:00Z"),
    case("end_date_in_the_past_no_catchup", "0 0 * * *", "2024-01-01", "2024-02-01T00:00:00Z", end_date="2024-01-05"),
    case("end_date_ahead", "0 0 * * *", "2024-01-01", "2024-01-03T06:00:00Z", catchup=True, end_date="2024-01-05", count=6),
    # Fixed intervals (`every:`): from start_date with catchup; without it Airflow rounds now
    # down to a multiple of the interval since the Unix epoch (DeltaDataIntervalTimetable._round).
    case("every_15m_catchup", "every 900", "2024-01-01T00:05:00Z", "2024-01-01T01:10:00Z", catchup=True),
    case("every_15m_no_catchup", "every 900", "2024-01-01T00:05:00Z", "2024-01-01T01:10:00Z"),
    case("every_1d_no_catchup", "every 86400", "2024-01-01", "2024-01-10T06:00:00Z"),
    case("every_1d_no_catchup_start_off_midnight", "every 86400", "2024-01-01T06:00:00Z", "2024-01-10T12:00:00Z"),
    case("every_7h_no_catchup", "every 25200", "2024-01-01", "2024-01-10T12:00:00Z"),
    case("every_1d_no_catchup_start_in_the_future", "every 86400", "2024-02-01T06:00:00Z", "2024-01-10T12:00:00Z"),
    case("every_1d_in_berlin_is_24h", "every 86400", "2024-03-29", "2024-04-02T00:00:00Z", catchup=True, **BERLIN),
    case("every_1h_end_date", "every 3600", "2024-01-01", "2024-01-02T00:00:00Z", catchup=True, end_date="2024-01-01T03:30:00Z"),
    # Instant data intervals (CronTriggerTimetable).
    case("instant_catchup", "0 2 * * *", "2024-01-01", "2024-01-04T03:00:00Z", catchup=True, **INSTANT),
    case("instant_no_catchup", "*/10 * * * *", "2024-01-01", "2024-01-04T03:17:00Z", **INSTANT),
    case("instant_no_catchup_on_a_tick", "*/10 * * * *", "2024-01-01", "2024-01-04T03:20:00Z", **INSTANT),
    case("instant_start_date_in_the_future", "0 2 * * *", "2024-06-01T01:00:00Z", "2024-03-10T12:00:00Z", **INSTANT),
    case("instant_end_date", "0 2 * * *", "2024-01-01", "2024-01-10T00:00:00Z", catchup=True, end_date="2024-01-04T02:00:00Z", **INSTANT),
    case("instant_weekly_no_catchup", "@weekly", "2024-01-01", "2024-01-10T00:00:00Z", **INSTANT),
    # DST: Europe/Berlin springs forward 2024-03-31 02:00 -> 03:00, falls back 2024-10-27 03:00 -> 02:00.
    case("berlin_0230_spring_forward", "30 2 * * *", "2024-03-28", "2024-04-02T00:00:00Z", catchup=True, **BERLIN),
    case("berlin_0230_fall_back", "30 2 * * *", "2024-10-25", "2024-10-29T00:00:00Z", catchup=True, **BERLIN),
    case("berlin_0230_spring_forward_no_catchup", "30 2 * * *", "2024-03-01", "2024-03-31T02:00:00Z", **BERLIN),
    case("berlin_hourly_spring_forward", "0 * * * *", "2024-03-31", "2024-03-31T03:00:00Z", catchup=True, **BERLIN),
    case("berlin_hourly_fall_back", "0 * * * *", "2024-10-27", "2024-10-27T04:00:00Z", catchup=True, **BERLIN),
    case("berlin_hourly_fall_back_no_catchup", "0 * * * *", "2024-10-01", "2024-10-27T00:30:00Z", **BERLIN),
    case("berlin_every_30m_across_the_fold", "*/30 * * * *", "2024-10-27T00:00:00Z", "2024-10-27T02:30:00Z", catchup=True, **BERLIN),
    case("berlin_every_2h_across_the_fold", "0 */2 * * *", "2024-10-26T20:00:00Z", "2024-10-27T06:00:00Z", catchup=True, **BERLIN),
    case("berlin_daily_midnight_across_both", "@daily", "2024-03-29", "2024-04-02T00:00:00Z", catchup=True, **BERLIN),
    case("berlin_instant_0230_spring_forward", "30 2 * * *", "2024-03-29", "2024-04-02T00:00:00Z", catchup=True, **BERLIN, **INSTANT),
    case("berlin_instant_0230_fall_back", "30 2 * * *", "2024-10-25", "2024-10-29T00:00:00Z", catchup=True, **BERLIN, **INSTANT),
    case("berlin_instant_hourly_fall_back", "0 * * * *", "2024-10-27", "2024-10-27T03:30:00Z", catchup=True, **BERLIN, **INSTANT),
    # DST: America/New_York springs forward 2024-03-10 02:00 -> 03:00, falls back 2024-11-03 02:00 -> 01:00.
    case("new_york_0230_spring_forward", "30 2 * * *", "2024-03-08", "2024-03-12T12:00:00Z", catchup=True, **NEW_YORK),
    case("new_york_0130_fall_back", "30 1 * * *", "2024-11-01", "2024-11-05T12:00:00Z", catchup=True, **NEW_YORK),
    case("new_york_0130_fall_back_no_catchup", "30 1 * * *", "2024-10-01", "2024-11-03T07:00:00Z", **NEW_YORK),
    case("new_york_hourly_spring_forward", "0 * * * *", "2024-03-10", "2024-03-10T09:00:00Z", catchup=True, **NEW_YORK),
    case("new_york_hourly_fall_back", "0 * * * *", "2024-11-03", "2024-11-03T08:00:00Z", catchup=True, **NEW_YORK),
    case("new_york_every_30m_across_the_fold", "*/30 * * * *", "2024-11-03T04:00:00Z", "2024-11-03T07:00:00Z", catchup=True, **NEW_YORK),
    case("new_york_weekdays_no_catchup", "30 1 * * MON-FRI", "2024-01-01", "2024-11-04T12:00:00Z", **NEW_YORK),
    case("new_york_instant_0130_fall_back", "30 1 * * *", "2024-11-01", "2024-11-05T12:00:00Z", catchup=True, **NEW_YORK, **INSTANT),
    case("new_york_instant_every_30m_across_the_fold", "*/30 * * * *", "2024-11-03T04:00:00Z", "2024-11-03T07:00:00Z", catchup=True, **NEW_YORK, **INSTANT),
]


def main():
    out = {
        "generated_by": "tools/airflow_schedules/generate.py",
        "source": "airflow.models.dag.DAG.next_dagrun_info, with utcnow frozen at each case's now",
        "apache-airflow": version("apache-airflow"),
        "croniter": version("croniter"),
        "pendulum": version("pendulum"),
        "cases": [],
    }
    names = set()
    for c in CASES:
        assert c["name"] not in names, c["name"]
        names.add(c["name"])
        due, upcoming = runs(c)
        out["cases"].append({**c, "due": due, "upcoming": upcoming})
    path = pathlib.Path(__file__).resolve().parents[2] / "core/tests/fixtures/airflow/schedules.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {len(CASES)} cases to {path}")


if __name__ == "__main__":
    main()
