//! Times and durations as people write and read them: the one parser of a written time (DAG
//! files, the CLI's flags, the web's forms and the API), and the one formatter of a duration.
//!
//! A written time is an instant (RFC 3339, with its offset) or a wall-clock time without
//! offset, which means nothing until a timezone reads it: `2024-03-01` is midnight in the DAG's
//! timezone, whoever writes it.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;

/// The forms [`WrittenTime::parse`] reads, for messages that refuse a time.
pub const TIME_FORMS: &str = "a date (2024-03-01: midnight in the DAG's timezone), a date-time \
     without offset (2024-03-01T06:00, in the DAG's timezone) or RFC 3339 \
     (2024-03-01T06:00:00Z)";

/// A time as written, before a timezone reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrittenTime {
    /// RFC 3339 with an offset: this instant wherever it is read.
    Instant(DateTime<Utc>),
    /// `YYYY-MM-DD` (midnight), or a date-time without offset: a wall-clock time.
    Wall(NaiveDateTime),
}

impl WrittenTime {
    /// Reads RFC 3339, `YYYY-MM-DD`, or `YYYY-MM-DD[T ]HH:MM[:SS]`; `None` for anything else.
    pub fn parse(text: &str) -> Option<WrittenTime> {
        let text = text.trim();
        if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
            return Some(WrittenTime::Instant(instant.with_timezone(&Utc)));
        }
        if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            return Some(WrittenTime::Wall(date.and_time(chrono::NaiveTime::MIN)));
        }
        [
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(WrittenTime::Wall)
    }

    /// The instant this time means in `tz`. A wall-clock time in a DST gap moves forward past
    /// it, one in the fold takes the earlier instant (as the schedule does); `None` only at the
    /// ends of the calendar.
    pub fn in_zone(self, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            WrittenTime::Instant(instant) => Some(instant),
            WrittenTime::Wall(wall) => (0..=2)
                .find_map(|hours| {
                    tz.from_local_datetime(&(wall + chrono::Duration::hours(hours)))
                        .earliest()
                })
                .map(|instant| instant.with_timezone(&Utc)),
        }
    }
}

/// `text` read in `tz` ([`WrittenTime`]); `None` when it is no time.
pub fn parse_time(text: &str, tz: Tz) -> Option<DateTime<Utc>> {
    WrittenTime::parse(text)?.in_zone(tz)
}

/// An instant as people read it in `tz`: `2024-03-01T00:00:00+01:00`.
pub fn local(time: DateTime<Utc>, tz: Tz) -> String {
    time.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration for people: `350ms`, `4.2s`, `12s`, `3m 4s`, `5m`, `2h 5m`, `3d 4h`. Past a
/// minute only the two largest units count.
pub fn human_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    if millis < 10_000 && !millis.is_multiple_of(1000) {
        return format!("{:.1}s", duration.as_secs_f64());
    }
    let total = duration.as_secs_f64().round() as u64;
    let (days, hours, minutes, seconds) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    match (days, hours, minutes, seconds) {
        (0, 0, 0, _) => format!("{seconds}s"),
        (0, 0, _, 0) => format!("{minutes}m"),
        (0, 0, _, _) => format!("{minutes}m {seconds}s"),
        (0, _, 0, _) => format!("{hours}h"),
        (0, _, _, _) => format!("{hours}h {minutes}m"),
        (_, 0, _, _) => format!("{days}d"),
        _ => format!("{days}d {hours}h"),
    }
}

/// The duration from `start` to `end` for people ([`human_duration`]); empty when either is
/// missing (not started, not ended). A clock that went back counts as no time.
pub fn duration_between(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> String {
    match (start, end) {
        (Some(start), Some(end)) => human_duration((end - start).to_std().unwrap_or_default()),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn a_date_is_midnight_in_the_timezone_that_reads_it() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            parse_time("2024-03-01", berlin),
            Some(utc("2024-02-29T23:00:00Z"))
        );
        assert_eq!(
            parse_time("2024-03-01", Tz::UTC),
            Some(utc("2024-03-01T00:00:00Z"))
        );
        assert_eq!(
            parse_time("2024-07-01 06:30", berlin),
            Some(utc("2024-07-01T04:30:00Z"))
        );
        assert_eq!(
            parse_time("2024-07-01T06:30:00", berlin),
            Some(utc("2024-07-01T04:30:00Z"))
        );
    }

    #[test]
    fn an_instant_is_the_same_in_every_timezone() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let written = "2024-03-01T06:00:00+02:00";
        assert_eq!(parse_time(written, berlin), parse_time(written, Tz::UTC));
        assert_eq!(
            parse_time(written, berlin),
            Some(utc("2024-03-01T04:00:00Z"))
        );
    }

    #[test]
    fn a_wall_clock_time_in_a_dst_gap_moves_forward_and_one_in_the_fold_is_the_earlier() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 02:30 does not exist on 2024-03-31 in Berlin; 03:30 CEST does.
        assert_eq!(
            parse_time("2024-03-31T02:30", berlin),
            Some(utc("2024-03-31T01:30:00Z"))
        );
        // 02:30 happens twice on 2024-10-27: the first is still CEST.
        assert_eq!(
            parse_time("2024-10-27T02:30", berlin),
            Some(utc("2024-10-27T00:30:00Z"))
        );
    }

    #[test]
    fn anything_else_is_no_time() {
        for text in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-03-01T25:00",
            "1709251200",
        ] {
            assert_eq!(WrittenTime::parse(text), None, "{text}");
        }
    }

    #[test]
    fn durations_read_like_people_write_them() {
        let cases = [
            (Duration::from_millis(0), "0ms"),
            (Duration::from_millis(40), "40ms"),
            (Duration::from_millis(999), "999ms"),
            (Duration::from_millis(1000), "1s"),
            (Duration::from_millis(1050), "1.1s"),
            (Duration::from_millis(4240), "4.2s"),
            (Duration::from_secs(12), "12s"),
            (Duration::from_secs(59), "59s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "1m 30s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(3600 + 20), "1h"),
            (Duration::from_secs(3 * 3600 + 5 * 60 + 9), "3h 5m"),
            (Duration::from_secs(86_400 + 59), "1d"),
            (Duration::from_secs(2 * 86_400 + 4 * 3600), "2d 4h"),
        ];
        for (duration, expected) in cases {
            assert_eq!(human_duration(duration), expected, "{duration:?}");
        }
    }

    #[test]
    fn a_duration_between_missing_or_reversed_times_says_so() {
        let start = utc("2024-03-01T00:00:00Z");
        assert_eq!(duration_between(Some(start), None), "");
        assert_eq!(duration_between(None, Some(start)), "");
        assert_eq!(
            duration_between(Some(start), Some(start - chrono::Duration::seconds(5))),
            "0ms"
        );
        assert_eq!(
            duration_between(Some(start), Some(start + chrono::Duration::seconds(75))),
            "1m 15s"
        );
    }
}
