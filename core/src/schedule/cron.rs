//! Cron expressions on a DAG's wall clock, with Airflow's DST policy.
//!
//! croner parses standard 5-field crontab (day-of-month and day-of-week OR-ed when both are
//! restricted, 0 and 7 both Sunday, names, `L`/`W`/`#`) and finds ticks on naive local time.
//! Turning a local tick into an instant is ours, as Airflow does it (croniter + pendulum):
//! - a local time in the spring gap moves forward by the gap (02:30 -> 03:30 in Berlin);
//! - an ambiguous local time in the autumn fold takes the later instant, once;
//! - a pattern whose hour field covers every hour steps in absolute time instead, so an hourly
//!   job runs in both repeated hours and skips none.

use std::sync::Arc;

use chrono::offset::LocalResult;
use chrono::{DateTime, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Airflow's presets, and croniter's aliases of them.
const PRESETS: &[(&str, &str)] = &[
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@quarterly", "0 0 1 */3 *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
];

/// Each field's name and what it takes, for messages.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L, W"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT, L, #"),
];

/// A parsed cron schedule; equal when their texts are equal.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// As written in the DAG file (a preset stays a preset).
    text: String,
    /// Shared: DAGs are cloned often, the parsed pattern is a few hundred bytes.
    cron: Arc<Cron>,
    /// The hour field matches all 24 hours: step in absolute time across DST changes.
    every_hour: bool,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .dom_and_dow(false)
        .build()
}

impl CronSchedule {
    pub fn parse(expression: &str) -> Result<CronSchedule, String> {
        let text = expression.trim();
        let pattern = if text.starts_with('@') {
            match PRESETS.iter().find(|(name, _)| *name == text) {
                Some((_, pattern)) => *pattern,
                None => {
                    let names = PRESETS.iter().map(|(name, _)| *name).chain(["@once"]);
                    let hint = crate::suggest::did_you_mean(text, names);
                    return Err(format!(
                        "unknown preset \"{text}\"{hint} (presets: @once @hourly @daily \
                         @weekly @monthly @quarterly @yearly)"
                    ));
                }
            }
        } else {
            text
        };
        let fields: Vec<&str> = pattern.split_whitespace().collect();
        if fields.len() != 5 {
            let extra = if matches!(fields.len(), 6 | 7) {
                "; Updraft reads 5-field crontab, without seconds or years"
            } else {
                ""
            };
            return Err(format!(
                "invalid cron \"{text}\": expected 5 fields (minute hour day-of-month month \
                 day-of-week), found {}{extra}",
                fields.len()
            ));
        }
        let cron = parser().parse(pattern).map_err(|error| {
            format!(
                "invalid cron \"{text}\": {}",
                field_problem(&fields, &error)
            )
        })?;
        // A pattern such as `0 0 30 2 *` parses but never fires.
        let epoch = NaiveDateTime::default();
        if cron.find_next_occurrence(&epoch, false).is_err() {
            return Err(format!("invalid cron \"{text}\": it never matches a date"));
        }
        let every_hour = (0..24).all(|hour| cron.pattern.hour_match(hour).unwrap_or(false));
        Ok(CronSchedule {
            text: text.to_owned(),
            cron: Arc::new(cron),
            every_hour,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// croner's description in words, without its final period.
    pub fn describe(&self) -> String {
        self.cron.describe().trim_end_matches('.').to_owned()
    }

    /// The first tick strictly after `t`, on the wall clock of `tz`.
    pub fn next_after(&self, t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let naive = t.with_timezone(&tz).naive_local();
        let Ok(scheduled) = self.cron.find_next_occurrence(&naive, false) else {
            return DateTime::<Utc>::MAX_UTC;
        };
        if self.every_hour {
            t + (scheduled - naive)
        } else {
            localize(tz, scheduled)
        }
    }

    /// The last tick strictly before `t`, on the wall clock of `tz`.
    pub fn prev_before(&self, t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let naive = t.with_timezone(&tz).naive_local();
        let Ok(scheduled) = self.cron.find_previous_occurrence(&naive, false) else {
            return DateTime::<Utc>::MIN_UTC;
        };
        if self.every_hour {
            t - (naive - scheduled)
        } else {
            localize(tz, scheduled)
        }
    }
}

/// A local time as an instant: the later one in a fold, shifted forward through a gap.
fn localize(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(instant) => instant.with_timezone(&Utc),
        LocalResult::Ambiguous(_, later) => later.with_timezone(&Utc),
        LocalResult::None => {
            // In the gap: read the wall time with the offset in force before it, which lands
            // the instant after the gap by as much as the wall time was into it.
            let before = (1..=3)
                .find_map(|hours| {
                    tz.from_local_datetime(&(local - chrono::Duration::hours(hours)))
                        .latest()
                })
                .expect("DST gaps are shorter than three hours");
            let offset = before.offset().fix();
            (local - offset).and_utc()
        }
    }
}

/// Which field croner refused, in words.
fn field_problem(fields: &[&str], error: &croner::errors::CronError) -> String {
    for (index, field) in fields.iter().enumerate() {
        let mut probe = ["*"; 5];
        probe[index] = field;
        if let Err(field_error) = parser().parse(&probe.join(" ")) {
            let (name, takes) = FIELDS[index];
            return format!(
                "{name} field \"{field}\": {} ({name} takes {takes})",
                plain(&field_error)
            );
        }
    }
    plain(error)
}

/// croner's message, as a lowercase clause.
fn plain(error: &croner::errors::CronError) -> String {
    let text = match error {
        croner::errors::CronError::ComponentError(message)
        | croner::errors::CronError::InvalidPattern(message)
        | croner::errors::CronError::IllegalCharacters(message) => message.clone(),
        other => other.to_string(),
    };
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn next(expression: &str, tz: Tz, after: &str) -> String {
        let cron = CronSchedule::parse(expression).unwrap();
        cron.next_after(at(after), tz).to_rfc3339()
    }

    #[test]
    fn parse_errors_name_the_field() {
        let cases = [
            (
                "",
                "invalid cron \"\": expected 5 fields (minute hour day-of-month month day-of-week), found 0",
            ),
            (
                "0 0 2 * * *",
                "invalid cron \"0 0 2 * * *\": expected 5 fields (minute hour day-of-month month day-of-week), found 6; Updraft reads 5-field crontab, without seconds or years",
            ),
            (
                "@dayly",
                "unknown preset \"@dayly\"; did you mean \"@daily\"? (presets: @once @hourly @daily @weekly @monthly @quarterly @yearly)",
            ),
            (
                "0 0 30 2 *",
                "invalid cron \"0 0 30 2 *\": it never matches a date",
            ),
        ];
        for (expression, message) in cases {
            assert_eq!(CronSchedule::parse(expression).unwrap_err(), message);
        }
        let error = CronSchedule::parse("0 25 * * *").unwrap_err();
        assert!(
            error.starts_with("invalid cron \"0 25 * * *\": hour field \"25\": "),
            "{error}"
        );
        let error = CronSchedule::parse("0 0 * * FUN").unwrap_err();
        assert!(error.contains("day-of-week field \"FUN\""), "{error}");
    }

    #[test]
    fn names_ranges_lists_and_steps_parse() {
        for expression in [
            "*/15 9-17 * * MON-FRI",
            "0 0 1,15 * *",
            "0 12 * JAN,JUL *",
            "0 23 L * *",
            "0 0 * * 5#2",
            "@quarterly",
        ] {
            assert!(CronSchedule::parse(expression).is_ok(), "{expression}");
        }
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // 2024-09-06 is a Friday; the 13th is a Friday too, so the next after it is the 20th.
        assert_eq!(
            next("0 0 13 * FRI", Tz::UTC, "2024-09-06T00:00:00Z"),
            "2024-09-13T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 13 * FRI", Tz::UTC, "2024-10-11T00:00:00Z"),
            "2024-10-13T00:00:00+00:00"
        );
    }

    #[test]
    fn sunday_is_0_and_7() {
        assert_eq!(
            next("0 0 * * 0", Tz::UTC, "2024-01-01T00:00:00Z"),
            "2024-01-07T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * 7", Tz::UTC, "2024-01-01T00:00:00Z"),
            "2024-01-07T00:00:00+00:00"
        );
    }

    #[test]
    fn dst_edges_follow_airflow() {
        let berlin = Tz::Europe__Berlin;
        let new_york = Tz::America__New_York;
        let cases = [
            // Spring gap: 02:30 does not exist on 2024-03-31 in Berlin; it fires at 03:30 CEST.
            (
                "30 2 * * *",
                berlin,
                "2024-03-30T01:30:00Z",
                "2024-03-31T01:30:00+00:00",
            ),
            // Autumn fold: 02:30 happens twice on 2024-10-27; the later instant (CET), once.
            (
                "30 2 * * *",
                berlin,
                "2024-10-26T00:30:00Z",
                "2024-10-27T01:30:00+00:00",
            ),
            (
                "30 2 * * *",
                berlin,
                "2024-10-27T01:30:00Z",
                "2024-10-28T01:30:00+00:00",
            ),
            // Hourly steps in absolute time: both 02:00 (CEST, then CET) run.
            (
                "0 * * * *",
                berlin,
                "2024-10-27T00:00:00Z",
                "2024-10-27T01:00:00+00:00",
            ),
            (
                "0 * * * *",
                berlin,
                "2024-10-27T01:00:00Z",
                "2024-10-27T02:00:00+00:00",
            ),
            // ...and no hour is skipped in the spring.
            (
                "0 * * * *",
                berlin,
                "2024-03-31T00:00:00Z",
                "2024-03-31T01:00:00+00:00",
            ),
            // New York: 01:30 on 2024-11-03 is EST, the later one.
            (
                "30 1 * * *",
                new_york,
                "2024-11-02T05:30:00Z",
                "2024-11-03T06:30:00+00:00",
            ),
            (
                "30 2 * * *",
                new_york,
                "2024-03-09T07:30:00Z",
                "2024-03-10T07:30:00+00:00",
            ),
        ];
        for (expression, tz, after, expected) in cases {
            assert_eq!(
                next(expression, tz, after),
                expected,
                "{expression} in {tz} after {after}"
            );
        }
    }

    #[test]
    fn previous_ticks() {
        let cron = CronSchedule::parse("0 2 * * *").unwrap();
        assert_eq!(
            cron.prev_before(at("2024-03-10T02:00:00Z"), Tz::UTC),
            at("2024-03-09T02:00:00Z")
        );
    }

    #[test]
    fn describes_in_words() {
        let cron = CronSchedule::parse("0 2 * * *").unwrap();
        assert!(!cron.describe().is_empty());
        assert!(!cron.describe().ends_with('.'));
    }
}
