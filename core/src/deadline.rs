//! Deadlines (Airflow's SLA misses, Airflow 3's deadline alerts, Kestra's SLA): the instant by
//! which a run or a task instance should have finished. Pure: when one is due; whether it was
//! missed, and telling so once, is the scheduler's.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// When a run (a DAG's `deadline`) or a task instance (a task's) should have finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deadline {
    /// So long after the run's data interval ends (Airflow's `sla`, counted from there).
    AfterIntervalEnd(#[serde(with = "crate::dag::model::humantime_serde_compat")] Duration),
    /// So long after the run, or the task instance, first started.
    AfterStart(#[serde(with = "crate::dag::model::humantime_serde_compat")] Duration),
    /// At this time of day on the DAG's wall clock: the first one at or after the run's data
    /// interval end.
    At(NaiveTime),
}

impl Deadline {
    /// When it is due for a run whose data interval ends at `interval_end`, of a subject that
    /// first started at `started` (none yet: an `after_start` deadline is not due yet), on
    /// the wall clock of `tz`.
    pub fn due(
        &self,
        interval_end: DateTime<Utc>,
        started: Option<DateTime<Utc>>,
        tz: Tz,
    ) -> Option<DateTime<Utc>> {
        let after = |from: DateTime<Utc>, duration: &Duration| {
            chrono::Duration::from_std(*duration)
                .ok()
                .and_then(|duration| from.checked_add_signed(duration))
        };
        match self {
            Deadline::AfterIntervalEnd(duration) => after(interval_end, duration),
            Deadline::AfterStart(duration) => after(started?, duration),
            Deadline::At(time) => next_wall_time(*time, interval_end, tz),
        }
    }
}

/// The first instant at or after `from` whose wall-clock time in `tz` is `time`. A time that
/// does not exist on a day (skipped by a DST change) is read an hour later, when it would have
/// come on the old offset; a time that happens twice is its first.
fn next_wall_time(time: NaiveTime, from: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    let mut date = from.with_timezone(&tz).date_naive();
    for _ in 0..3 {
        let local = date.and_time(time);
        let instant = tz.from_local_datetime(&local).earliest().or_else(|| {
            // In a DST gap: an hour later is past it (gaps are at most an hour here).
            tz.from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
        });
        if let Some(instant) = instant.map(|t| t.with_timezone(&Utc))
            && instant >= from
        {
            return Some(instant);
        }
        date = date.succ_opt()?;
    }
    None
}

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Deadline::AfterIntervalEnd(duration) => write!(
                f,
                "after_interval_end: {}",
                humantime::format_duration(*duration)
            ),
            Deadline::AfterStart(duration) => {
                write!(f, "after_start: {}", humantime::format_duration(*duration))
            }
            Deadline::At(time) => write!(f, "at: {}", time.format("%H:%M")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn after_interval_end_and_after_start() {
        let end = utc("2025-03-01T06:00:00Z");
        let two_hours = Deadline::AfterIntervalEnd(Duration::from_secs(7200));
        assert_eq!(
            two_hours.due(end, None, Tz::UTC),
            Some(utc("2025-03-01T08:00:00Z"))
        );
        let half_hour = Deadline::AfterStart(Duration::from_secs(1800));
        assert_eq!(half_hour.due(end, None, Tz::UTC), None);
        assert_eq!(
            half_hour.due(end, Some(utc("2025-03-01T06:10:00Z")), Tz::UTC),
            Some(utc("2025-03-01T06:40:00Z"))
        );
    }

    #[test]
    fn at_is_the_first_such_wall_time_from_the_interval_end() {
        let seven = Deadline::At(NaiveTime::from_hms_opt(7, 0, 0).unwrap());
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // The 06:00 Berlin run (05:00 UTC) is due at 07:00 Berlin the same day.
        assert_eq!(
            seven.due(utc("2025-03-01T05:00:00Z"), None, berlin),
            Some(utc("2025-03-01T06:00:00Z"))
        );
        // A run whose interval ends at 23:00 is due at 07:00 the next day.
        assert_eq!(
            seven.due(utc("2025-03-01T22:00:00Z"), None, berlin),
            Some(utc("2025-03-02T06:00:00Z"))
        );
        // On the day clocks go forward, 02:30 does not exist: it is due at 03:30, when 02:30
        // of the old offset comes.
        let half_past_two = Deadline::At(NaiveTime::from_hms_opt(2, 30, 0).unwrap());
        assert_eq!(
            half_past_two.due(utc("2025-03-30T00:00:00Z"), None, berlin),
            Some(utc("2025-03-30T01:30:00Z"))
        );
        // On the day they go back, 02:30 happens twice: the first.
        assert_eq!(
            half_past_two.due(utc("2025-10-26T00:00:00Z"), None, berlin),
            Some(utc("2025-10-26T00:30:00Z"))
        );
    }

    #[test]
    fn shown_and_serialized_as_written() {
        let deadlines = [
            (
                Deadline::AfterIntervalEnd(Duration::from_secs(7200)),
                "after_interval_end: 2h",
            ),
            (
                Deadline::AfterStart(Duration::from_secs(1800)),
                "after_start: 30m",
            ),
            (
                Deadline::At(NaiveTime::from_hms_opt(7, 0, 0).unwrap()),
                "at: 07:00",
            ),
        ];
        for (deadline, shown) in deadlines {
            assert_eq!(deadline.to_string(), shown);
            let json = serde_json::to_value(deadline).unwrap();
            assert_eq!(serde_json::from_value::<Deadline>(json).unwrap(), deadline);
        }
    }
}
