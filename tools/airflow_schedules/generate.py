"""Computes the runs Airflow 2.10 creates for a table of schedules, as the expected values of
core/tests/schedule_airflow.rs.

Airflow itself cannot be installed offline (its constraints file lives on GitHub), so this
script replays the logic of Airflow 2.10's timetables -- CronDataIntervalTimetable,
CronTriggerTimetable, DeltaDataIntervalTimetable, OnceTimetable and their CronMixin (files
airflow/timetables/interval.py, trigger.py, simple.py, _cron.py in apache/airflow 2.10) -- on
the same libraries Airflow uses: croniter for cron and pendulum for time zones. The functions
below are transcriptions of those methods, with `utcnow()` replaced by the case's `now`.

Run (writes core/tests/fixtures/airflow/schedules.json):
    python3 -m venv /tmp/cronvenv && /tmp/cronvenv/bin/pip install croniter==7.0.0 pendulum==3.3.0
    /tmp/cronvenv/bin/python tools/airflow_schedules/generate.py
"""

import datetime
import json
import pathlib
from importlib.metadata import version

import pendulum
from croniter import croniter

PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}


def make_aware(naive, tz):
    # airflow.utils.timezone.make_aware: fold=1, then pendulum's convert.
    return pendulum.instance(tz.convert(naive.replace(fold=1)))


class Cron:
    """airflow/timetables/_cron.py CronMixin."""

    def __init__(self, expression, tz):
        self.expression = PRESETS.get(expression, expression)
        self.tz = pendulum.timezone(tz)

    def covers_every_hour(self):
        return croniter(self.expression).expanded[1] == ["*"]

    def get_next(self, current):
        naive = current.in_timezone(self.tz).naive()
        scheduled = croniter(self.expression, start_time=naive).get_next(datetime.datetime)
        if not self.covers_every_hour():
            return make_aware(scheduled, self.tz).in_timezone("UTC")
        delta = scheduled - naive
        return (current.in_timezone(self.tz) + delta).in_timezone("UTC")

    def get_prev(self, current):
        naive = current.in_timezone(self.tz).naive()
        scheduled = croniter(self.expression, start_time=naive).get_prev(datetime.datetime)
        if not self.covers_every_hour():
            return make_aware(scheduled, self.tz).in_timezone("UTC")
        delta = naive - scheduled
        return (current.in_timezone(self.tz) - delta).in_timezone("UTC")

    def align_to_next(self, current):
        next_time = self.get_next(current)
        if self.get_prev(next_time) != current:
            return next_time
        return current

    def align_to_prev(self, current):
        prev_time = self.get_prev(current)
        if self.get_next(prev_time) != current:
            return prev_time
        return current

    def skip_to_latest(self, earliest, now):
        # CronDataIntervalTimetable._skip_to_latest
        last_start = self.get_prev(now)
        next_start = self.get_next(last_start)
        if next_start == now:
            new_start = last_start
        elif next_start > now:
            new_start = self.get_prev(last_start)
        else:
            raise AssertionError("next schedule shouldn't be earlier")
        if earliest is None:
            return new_start
        return max(new_start, self.align_to_next(earliest))


class Delta:
    """DeltaDataIntervalTimetable."""

    def __init__(self, seconds):
        self.delta = datetime.timedelta(seconds=seconds)

    def get_next(self, current):
        return current + self.delta

    def get_prev(self, current):
        return current - self.delta

    def align_to_next(self, current):
        return current

    def align_to_prev(self, current):
        return current

    def skip_to_latest(self, earliest, now):
        new_start = self.get_prev(now)
        if earliest is None:
            return new_start
        return max(new_start, earliest)


def interval_info(table, last, earliest, latest, catchup, now):
    """_DataIntervalTimetable.next_dagrun_info: returns (start, end) or None."""
    if not catchup:
        earliest = table.skip_to_latest(earliest, now)
    elif earliest is not None:
        earliest = table.align_to_next(earliest)
    if last is None:
        if earliest is None:
            return None
        start = earliest
    else:
        aligned_end = table.align_to_prev(last[1])
        start = max(aligned_end, earliest) if earliest is not None else aligned_end
    if latest is not None and start > latest:
        return None
    return (start, table.get_next(start), table.get_next(start))  # start, end, run_after


def trigger_info(table, last, earliest, latest, catchup, now):
    """CronTriggerTimetable.next_dagrun_info with interval 0."""
    if catchup:
        if last is not None:
            tick = table.get_next(last[1])
        elif earliest is None:
            return None
        else:
            tick = table.align_to_next(earliest)
    else:
        candidates = [table.align_to_prev(now)]
        if last is not None:
            candidates.append(table.get_next(last[1]))
        if earliest is not None:
            candidates.append(table.align_to_next(earliest))
        tick = max(candidates)
    if latest is not None and latest < tick:
        return None
    return (tick, tick, tick)


def once_info(last, earliest, latest):
    """OnceTimetable.next_dagrun_info."""
    if last is not None or earliest is None:
        return None
    if latest is not None and earliest > latest:
        return None
    return (earliest, earliest, earliest)


def parse_time(text, tz):
    if "T" in text:
        return pendulum.parse(text).in_timezone("UTC")
    return pendulum.parse(text, tz=tz).in_timezone("UTC")


def runs(case):
    tz = case.get("timezone", "UTC")
    schedule = case["schedule"]
    mode = case.get("data_interval", "previous")
    earliest = parse_time(case["start_date"], tz)
    latest = parse_time(case["end_date"], tz) if case.get("end_date") else None
    catchup = case["catchup"]
    now = pendulum.parse(case["now"]).in_timezone("UTC")
    if schedule == "@once":
        step = lambda last: once_info(last, earliest, latest)  # noqa: E731
    elif schedule.startswith("every "):
        table = Delta(int(schedule.split()[1]))
        step = lambda last: interval_info(table, last, earliest, latest, catchup, now)  # noqa
    else:
        table = Cron(schedule, tz)
        info = interval_info if mode == "previous" else trigger_info
        step = lambda last: info(table, last, earliest, latest, catchup, now)  # noqa: E731
    due, upcoming, last = [], [], None
    while len(upcoming) < case["count"]:
        result = step(last)
        if result is None:
            break
        start, end, run_after = result
        row = {
            "logical_date": fmt(start),
            "data_interval_start": fmt(start),
            "data_interval_end": fmt(end),
            "run_after": fmt(run_after),
        }
        (due if run_after <= now else upcoming).append(row)
        last = (start, end)
    return due, upcoming


def fmt(t):
    return t.in_timezone("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def case(name, schedule, start_date, now, catchup=False, **extra):
    return {"name": name, "schedule": schedule, "start_date": start_date, "now": now,
            "catchup": catchup, "count": extra.pop("count", 4), **extra}


CASES = [
    # Cron fields: ranges, lists, steps, names.
    case("business_hours_every_15m", "*/15 9-17 * * MON-FRI", "2024-03-01", "2024-03-04T10:07:00Z"),
    case("first_and_fifteenth", "0 0 1,15 * *", "2024-01-01", "2024-03-20T00:00:00Z", catchup=True),
    case("noon_in_january_and_july", "0 12 * JAN,JUL *", "2024-01-01", "2024-01-03T13:00:00Z", catchup=True),
    case("friday_the_13th_is_dom_or_dow", "0 0 13 * FRI", "2024-09-01", "2024-09-21T00:00:00Z", catchup=True),
    case("sunday_as_0", "0 0 * * 0", "2024-01-01", "2024-01-20T00:00:00Z", catchup=True),
    case("sunday_as_7", "30 6 * * 7", "2024-01-01", "2024-01-20T00:00:00Z", catchup=True),
    case("step_in_range", "5-50/15 */6 * * *", "2024-01-01", "2024-01-01T13:00:00Z", catchup=True),
    case("last_day_of_month", "0 23 L * *", "2024-01-01", "2024-03-02T00:00:00Z", catchup=True),
    # Presets.
    case("preset_hourly", "@hourly", "2024-01-01", "2024-01-01T03:30:00Z", catchup=True),
    case("preset_daily", "@daily", "2024-01-01", "2024-01-04T00:00:00Z", catchup=True),
    case("preset_weekly", "@weekly", "2024-01-01", "2024-01-20T00:00:00Z", catchup=True),
    case("preset_monthly", "@monthly", "2024-01-01", "2024-03-15T00:00:00Z", catchup=True),
    case("preset_quarterly", "@quarterly", "2024-01-01", "2024-08-01T00:00:00Z", catchup=True),
    case("preset_yearly", "@yearly", "2022-06-01", "2024-08-01T00:00:00Z", catchup=True),
    case("preset_once", "@once", "2024-01-01T06:00:00Z", "2024-01-02T00:00:00Z", count=2),
    case("preset_once_in_the_future", "@once", "2024-05-01", "2024-01-02T00:00:00Z", count=2),
    # Catchup off: only the latest complete interval is due.
    case("daily_no_catchup", "0 2 * * *", "2024-01-01", "2024-03-10T12:00:00Z"),
    case("daily_no_catchup_on_a_boundary", "0 2 * * *", "2024-01-01", "2024-03-10T02:00:00Z"),
    case("start_date_in_the_future", "0 2 * * *", "2024-06-01", "2024-03-10T12:00:00Z"),
    case("start_date_off_the_schedule", "0 2 * * *", "2024-01-01T05:00:00Z", "2024-01-04T00:00:00Z", catchup=True),
    case("end_date_stops_catchup", "0 0 * * *", "2024-01-01", "2024-02-01T00:00:00Z", catchup=True, end_date="2024-01-05"),
    # Fixed intervals (`every:`), anchored at start_date.
    case("every_15m_catchup", "every 900", "2024-01-01T00:05:00Z", "2024-01-01T01:10:00Z", catchup=True),
    case("every_1d_no_catchup", "every 86400", "2024-01-01", "2024-01-10T06:00:00Z"),
    # Instant data intervals (CronTriggerTimetable).
    case("instant_catchup", "0 2 * * *", "2024-01-01", "2024-01-04T03:00:00Z", catchup=True, data_interval="instant"),
    case("instant_no_catchup", "*/10 * * * *", "2024-01-01", "2024-01-04T03:17:00Z", data_interval="instant"),
    # DST: Europe/Berlin springs forward 2024-03-31 02:00 -> 03:00, falls back 2024-10-27 03:00 -> 02:00.
    case("berlin_0230_spring_forward", "30 2 * * *", "2024-03-28", "2024-04-02T00:00:00Z", catchup=True, timezone="Europe/Berlin"),
    case("berlin_0230_fall_back", "30 2 * * *", "2024-10-25", "2024-10-29T00:00:00Z", catchup=True, timezone="Europe/Berlin"),
    case("berlin_hourly_spring_forward", "0 * * * *", "2024-03-31", "2024-03-31T03:00:00Z", catchup=True, timezone="Europe/Berlin"),
    case("berlin_hourly_fall_back", "0 * * * *", "2024-10-27", "2024-10-27T04:00:00Z", catchup=True, timezone="Europe/Berlin"),
    case("berlin_every_30m_across_the_fold", "*/30 * * * *", "2024-10-27T00:00:00Z", "2024-10-27T02:30:00Z", catchup=True, timezone="Europe/Berlin"),
    case("berlin_daily_midnight_across_both", "@daily", "2024-03-29", "2024-04-02T00:00:00Z", catchup=True, timezone="Europe/Berlin"),
    case("berlin_instant_0230_spring_forward", "30 2 * * *", "2024-03-29", "2024-04-02T00:00:00Z", catchup=True, timezone="Europe/Berlin", data_interval="instant"),
    # DST: America/New_York springs forward 2024-03-10 02:00 -> 03:00, falls back 2024-11-03 02:00 -> 01:00.
    case("new_york_0230_spring_forward", "30 2 * * *", "2024-03-08", "2024-03-12T12:00:00Z", catchup=True, timezone="America/New_York"),
    case("new_york_0130_fall_back", "30 1 * * *", "2024-11-01", "2024-11-05T12:00:00Z", catchup=True, timezone="America/New_York"),
    case("new_york_hourly_fall_back", "0 * * * *", "2024-11-03", "2024-11-03T08:00:00Z", catchup=True, timezone="America/New_York"),
    case("new_york_every_30m_across_the_fold", "*/30 * * * *", "2024-11-03T04:00:00Z", "2024-11-03T07:00:00Z", catchup=True, timezone="America/New_York"),
    case("new_york_weekdays_no_catchup", "30 1 * * MON-FRI", "2024-01-01", "2024-11-04T12:00:00Z", timezone="America/New_York"),
]


def main():
    out = {
        "generated_by": "tools/airflow_schedules/generate.py",
        "replays": "Airflow 2.10 timetables (interval.py, trigger.py, simple.py, _cron.py)",
        "croniter": version("croniter"),
        "pendulum": version("pendulum"),
        "cases": [],
    }
    for c in CASES:
        due, upcoming = runs(c)
        out["cases"].append({**c, "due": due, "upcoming": upcoming})
    path = pathlib.Path(__file__).resolve().parents[2] / "core/tests/fixtures/airflow/schedules.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {len(CASES)} cases to {path}")


if __name__ == "__main__":
    main()
