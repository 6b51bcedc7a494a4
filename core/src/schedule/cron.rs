//! Cron expressions on a DAG's wall clock, with Airflow's DST policy.
//!
//! croner parses standard 5-field crontab (day-of-month and day-of-week OR-ed when both are
//! restricted, 0 and 7 both Sunday, names, `L`/`W`/`#`) and finds ticks on naive local time;
//! `dialect.rs` first rewrites the spellings croniter (Airflow's parser) reads differently.
//! Turning a local tick into an instant is ours, as Airflow does it (croniter + pendulum):
//! - a local time in the spring gap moves forward by the gap (02:30 -> 03:30 in Berlin);
//! - an ambiguous local time in the autumn fold takes the later instant, once;
//! - a pattern whose hour field covers every hour steps in absolute time instead, so an hourly
//!   job runs in both repeated hours and skips none.

use std::fmt;
use std::sync::Arc;

use chrono::offset::LocalResult;
use chrono::{DateTime, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::{describe, dialect};

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

/// A parsed cron schedule; equal when their texts are equal. Cloning shares the parse
/// (DAGs are cloned often; a parsed pattern is a few hundred bytes).
#[derive(Clone)]
pub struct CronSchedule(Arc<Parsed>);

struct Parsed {
    /// As written in the DAG file (a preset stays a preset).
    text: String,
    cron: Cron,
    /// The hour field matches all 24 hours: step in absolute time across DST changes
    /// (Airflow's `_covers_every_hour`; croniter reduces such a field to `*`).
    every_hour: bool,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.0.text == other.0.text
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronSchedule").field(&self.0.text).finish()
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
    /// Parses a 5-field crontab line, in croniter's reading, or a preset. The error is a
    /// sentence for the DAG's author.
    ///
    /// About 10 µs, nearly all of it croner's (it fills a table of 5,001 years for every
    /// pattern): a caller that meets the same text many times should keep the parsed value,
    /// whose clones are cheap.
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
        let Ok(fields) = <[&str; 5]>::try_from(fields.as_slice()) else {
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
        };
        let invalid = |problem: String| format!("invalid cron \"{text}\": {problem}");
        let line = dialect::rewrite(&fields).map_err(invalid)?;
        let cron = parser()
            .parse(&line)
            .map_err(|error| invalid(field_problem(&fields, &line, &error)))?;
        // A pattern such as `0 0 30 2 *` parses but never fires.
        let epoch = NaiveDateTime::default();
        if cron.find_next_occurrence(&epoch, false).is_err() {
            return Err(invalid("it never matches a date".to_owned()));
        }
        let every_hour = (0..24).all(|hour| cron.pattern.hour_match(hour).unwrap_or(false));
        Ok(CronSchedule(Arc::new(Parsed {
            text: text.to_owned(),
            cron,
            every_hour,
        })))
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.0.text
    }

    /// The pattern in words ("every Monday to Friday at 09:00"), for the common shapes;
    /// `None` for the others, which are best shown as their cron text.
    pub fn describe(&self) -> Option<String> {
        describe::describe(&self.0.cron.pattern)
    }

    /// The first tick strictly after `t`, on the wall clock of `tz` (Airflow's
    /// `CronMixin._get_next`).
    pub fn next_after(&self, t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let naive = t.with_timezone(&tz).naive_local();
        let Ok(scheduled) = self.0.cron.find_next_occurrence(&naive, false) else {
            // Parsing refused patterns that never match; this is past croner's year 5000.
            return DateTime::<Utc>::MAX_UTC;
        };
        self.place(t, naive, scheduled, tz)
    }

    /// The last tick strictly before `t`, on the wall clock of `tz` (Airflow's
    /// `CronMixin._get_prev`).
    pub fn prev_before(&self, t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let naive = t.with_timezone(&tz).naive_local();
        // croner searches whole seconds, so from 10:00:00.5 an exclusive search would start
        // at 09:59:59 and miss the tick at 10:00:00, which croniter finds (and `now` is rarely
        // a whole second).
        let inclusive = naive.nanosecond() != 0;
        let Ok(scheduled) = self.0.cron.find_previous_occurrence(&naive, inclusive) else {
            return DateTime::<Utc>::MIN_UTC;
        };
        self.place(t, naive, scheduled, tz)
    }

    /// A tick found on the wall clock, as an instant.
    fn place(
        &self,
        t: DateTime<Utc>,
        naive: NaiveDateTime,
        scheduled: NaiveDateTime,
        tz: Tz,
    ) -> DateTime<Utc> {
        if self.0.every_hour {
            // Airflow adds the wall-clock distance to the instant itself: through a DST
            // change an hourly pattern stays hourly in absolute time.
            t + (scheduled - naive)
        } else {
            localize(tz, scheduled)
        }
    }
}

/// A local time as an instant, as Airflow's `make_aware` (`fold=1`, then pendulum's
/// `convert`): the later instant in a fold; in a gap, the wall time read with the offset in
/// force before the gap, which lands after the gap by as much as the time was into it.
pub(crate) fn localize(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(instant) => instant.with_timezone(&Utc),
        LocalResult::Ambiguous(_, later) => later.with_timezone(&Utc),
        LocalResult::None => {
            // The offset grows across a gap. Reading the offset at `local - offset` with the
            // offset of one side gives the offset of the other side, so two reads find both,
            // however long the gap (Samoa skipped a whole day in 2011).
            let offset_at = |utc: NaiveDateTime| {
                i64::from(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc())
            };
            let guess = offset_at(local);
            let one = offset_at(local - TimeDelta::seconds(guess));
            let other = offset_at(local - TimeDelta::seconds(one));
            (local - TimeDelta::seconds(one.min(other))).and_utc()
        }
    }
}

/// Which field croner refused, in words. Each rewritten field is tried alone, and named as
/// the user wrote it.
fn field_problem(fields: &[&str; 5], line: &str, error: &croner::errors::CronError) -> String {
    for (index, rewritten) in line.split(' ').enumerate() {
        let mut probe = ["*"; 5];
        probe[index] = rewritten;
        if let Err(field_error) = parser().parse(&probe.join(" ")) {
            let (name, takes) = dialect::describe_field(index);
            return format!(
                "{name} field \"{}\": {} ({name} takes {takes})",
                fields[index],
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
    let text = text.strip_prefix("CronPattern contains ").unwrap_or(text);
    // "Invalid number" reads as "invalid number", but "L not allowed" keeps its letter.
    let first_word = text.split(' ').next().unwrap_or_default();
    if first_word.chars().skip(1).any(|c| c.is_ascii_lowercase()) {
        let mut chars = text.chars();
        if let Some(first) = chars.next() {
            return first.to_lowercase().chain(chars).collect();
        }
    }
    text.to_owned()
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
                "invalid cron \"\": expected 5 fields (minute hour day-of-month month \
                 day-of-week), found 0",
            ),
            (
                "0 0 2 * * *",
                "invalid cron \"0 0 2 * * *\": expected 5 fields (minute hour day-of-month \
                 month day-of-week), found 6; Updraft reads 5-field crontab, without seconds or \
                 years",
            ),
            (
                "0 0 0 1 1 * 2025",
                "invalid cron \"0 0 0 1 1 * 2025\": expected 5 fields (minute hour \
                 day-of-month month day-of-week), found 7; Updraft reads 5-field crontab, \
                 without seconds or years",
            ),
            (
                "@dayly",
                "unknown preset \"@dayly\"; did you mean \"@daily\"? (presets: @once @hourly \
                 @daily @weekly @monthly @quarterly @yearly)",
            ),
            (
                "0 0 30 2 *",
                "invalid cron \"0 0 30 2 *\": it never matches a date",
            ),
            (
                "0 25 * * *",
                "invalid cron \"0 25 * * *\": hour field \"25\": number out of bounds (hour \
                 takes 0-23)",
            ),
            (
                "60 * * * *",
                "invalid cron \"60 * * * *\": minute field \"60\": number out of bounds \
                 (minute takes 0-59)",
            ),
            (
                "0 0 0 * *",
                "invalid cron \"0 0 0 * *\": day-of-month field \"0\": number out of bounds \
                 (day-of-month takes 1-31, L, W)",
            ),
            (
                "0 0 * 13 *",
                "invalid cron \"0 0 * 13 *\": month field \"13\": number out of bounds (month \
                 takes 1-12 or JAN-DEC)",
            ),
            (
                "0 0 * * 8",
                "invalid cron \"0 0 * * 8\": day-of-week field \"8\": number out of bounds \
                 (day-of-week takes 0-7 or SUN-SAT, L, #)",
            ),
            (
                "*/0 * * * *",
                "invalid cron \"*/0 * * * *\": minute field \"*/0\": step cannot be zero \
                 (minute takes 0-59)",
            ),
            (
                "a 0 * * *",
                "invalid cron \"a 0 * * *\": minute field \"a\": \"A\" is not a number \
                 (minute takes 0-59)",
            ),
            (
                "0 0 * * 1;2",
                "invalid cron \"0 0 * * 1;2\": day-of-week field \"1;2\": illegal character \
                 ';' in part '1;2' (day-of-week takes 0-7 or SUN-SAT, L, #)",
            ),
            (
                "0 0 * * FUN",
                "invalid cron \"0 0 * * FUN\": day-of-week field \"FUN\": unknown name \"FUN\" \
                 (day-of-week takes 0-7 or SUN-SAT, L, #)",
            ),
            (
                "0 0 * * MONDAY",
                "invalid cron \"0 0 * * MONDAY\": day-of-week field \"MONDAY\": unknown name \
                 \"MONDAY\" (day-of-week takes 0-7 or SUN-SAT, L, #)",
            ),
            (
                "0 22-2/2 * * *",
                "invalid cron \"0 22-2/2 * * *\": hour field \"22-2/2\": the range 22-2 wraps \
                 around and cannot take a step; write it as a list (hour takes 0-23)",
            ),
            (
                "0 0 * * 5#6",
                "invalid cron \"0 0 * * 5#6\": day-of-week field \"5#6\": nth specifier out \
                 of bounds (day-of-week takes 0-7 or SUN-SAT, L, #)",
            ),
            (
                "0/10 0 L5 * *",
                "invalid cron \"0/10 0 L5 * *\": day-of-month field \"L5\": L not allowed in \
                 the current field (day-of-month takes 1-31, L, W)",
            ),
        ];
        for (expression, message) in cases {
            assert_eq!(
                CronSchedule::parse(expression).unwrap_err(),
                message,
                "{expression}"
            );
        }
    }

    #[test]
    fn names_ranges_lists_and_steps_parse() {
        for expression in [
            "*/15 9-17 * * MON-FRI",
            "0 0 1,15 * *",
            "0 12 * JAN,JUL *",
            "0 23 L * *",
            "0 0 LW * *",
            "0 0 15W * *",
            "0 0 * * 5#2",
            "0 0 * * 5L",
            "0 0 * * L5",
            "0 0 29 2 *",
            "0/10 * * * *",
            "0 22-2 * * *",
            "0 0 * * FRI-MON",
            "0 0 * * SUN-SUN",
            "@quarterly",
            "@annually",
            "@midnight",
        ] {
            assert!(CronSchedule::parse(expression).is_ok(), "{expression}");
        }
        assert_eq!(CronSchedule::parse(" @daily ").unwrap().text(), "@daily");
    }

    #[test]
    fn croniter_spellings_mean_what_they_mean_in_airflow() {
        let cases = [
            // Only a literal `*` lifts a day restriction: every day is OR-ed with Monday.
            (
                "0 0 1-31 * MON",
                "2024-01-01T00:00:00Z",
                "2024-01-02T00:00:00+00:00",
            ),
            (
                "0 0 13 * 0-6",
                "2024-01-01T00:00:00Z",
                "2024-01-02T00:00:00+00:00",
            ),
            // A stepped day of month is a restriction, OR-ed with the weekday.
            (
                "0 0 */10 * MON",
                "2024-01-08T00:00:00Z",
                "2024-01-11T00:00:00+00:00",
            ),
            // Last Friday, croniter's way.
            (
                "0 0 * * L5",
                "2024-01-01T00:00:00Z",
                "2024-01-26T00:00:00+00:00",
            ),
            (
                "0 0 * * SAT-SUN",
                "2024-01-06T00:00:00Z",
                "2024-01-07T00:00:00+00:00",
            ),
            (
                "0 22-2 * * *",
                "2024-01-01T02:00:00Z",
                "2024-01-01T22:00:00+00:00",
            ),
            (
                "5/20 * * * *",
                "2024-01-01T00:45:00Z",
                "2024-01-01T01:05:00+00:00",
            ),
        ];
        for (expression, after, expected) in cases {
            assert_eq!(next(expression, Tz::UTC, after), expected, "{expression}");
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
        let cases = [
            (
                "0 2 * * *",
                Tz::UTC,
                "2024-03-10T02:00:00Z",
                "2024-03-09T02:00:00Z",
            ),
            // From a moment after a tick, that tick: croner's whole-second search would skip it.
            (
                "0 2 * * *",
                Tz::UTC,
                "2024-03-10T02:00:00.25Z",
                "2024-03-10T02:00:00Z",
            ),
            (
                "0 * * * *",
                Tz::UTC,
                "2024-03-10T02:00:00.5Z",
                "2024-03-10T02:00:00Z",
            ),
            // Back across Berlin's fold, hourly: 02:00 CET, then 02:00 CEST.
            (
                "0 * * * *",
                Tz::Europe__Berlin,
                "2024-10-27T01:30:00Z",
                "2024-10-27T01:00:00Z",
            ),
            (
                "0 * * * *",
                Tz::Europe__Berlin,
                "2024-10-27T01:00:00Z",
                "2024-10-27T00:00:00Z",
            ),
            // Back across Berlin's gap: 03:30 CEST is where 02:30 landed.
            (
                "30 2 * * *",
                Tz::Europe__Berlin,
                "2024-04-01T00:00:00Z",
                "2024-03-31T01:30:00Z",
            ),
        ];
        for (expression, tz, before, expected) in cases {
            let cron = CronSchedule::parse(expression).unwrap();
            assert_eq!(
                cron.prev_before(at(before), tz),
                at(expected),
                "{expression} in {tz} before {before}"
            );
        }
    }

    #[test]
    fn local_times_in_gaps_and_folds() {
        let cases = [
            (
                Tz::Europe__Berlin,
                "2024-03-31T02:30:00",
                "2024-03-31T01:30:00Z",
            ),
            (
                Tz::Europe__Berlin,
                "2024-10-27T02:30:00",
                "2024-10-27T01:30:00Z",
            ),
            (
                Tz::America__New_York,
                "2024-03-10T02:30:00",
                "2024-03-10T07:30:00Z",
            ),
            (
                Tz::America__New_York,
                "2024-11-03T01:30:00",
                "2024-11-03T06:30:00Z",
            ),
            // Half an hour forward on Lord Howe Island: 02:15 +10:30 is 02:45 +11:00.
            (
                Tz::Australia__Lord_Howe,
                "2024-10-06T02:15:00",
                "2024-10-05T15:45:00Z",
            ),
            // Samoa skipped 2011-12-30: noon that day reads with the old offset, -10.
            (
                Tz::Pacific__Apia,
                "2011-12-30T12:00:00",
                "2011-12-30T22:00:00Z",
            ),
            (Tz::UTC, "2024-03-31T02:30:00", "2024-03-31T02:30:00Z"),
        ];
        for (tz, local, expected) in cases {
            let local: NaiveDateTime = local.parse().unwrap();
            assert_eq!(localize(tz, local), at(expected), "{local} in {tz}");
        }
    }

    #[test]
    fn clones_share_the_parse() {
        let cron = CronSchedule::parse("0 2 * * *").unwrap();
        assert!(Arc::ptr_eq(&cron.0, &cron.clone().0));
    }
}
