//! Schedules and data intervals (DESIGN §4), with Airflow 2's semantics.
//!
//! A `Timetable` answers one question, as Airflow's timetables do: given the last automated
//! run's data interval (or none) and `now`, which run comes next? Everything else (the runs due
//! on an empty database, the upcoming ones) is built on that answer, so `updraft dags
//! next-runs` prints exactly what the scheduler creates. Pure: `now` is always a parameter.
//!
//! `cron.rs` evaluates cron on the DAG's wall clock with Airflow's DST policy, after
//! `dialect.rs` has rewritten croniter's spellings into croner's; `describe.rs` puts common
//! patterns into words. The expected behaviour comes from a real Airflow 2.10.5
//! (`tools/airflow_schedules/generate.py`, checked by `core/tests/schedule_airflow.rs`).

mod cron;
mod describe;
mod dialect;

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use cron::CronSchedule;

/// When runs happen. A closed set.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// `schedule: null` or absent: runs only when triggered.
    Manual,
    /// `@once`: one run at `start_date`.
    Once,
    /// A 5-field cron expression or a preset, on the DAG's wall clock.
    Cron(CronSchedule),
    /// Several cron expressions (`schedule: [{cron: ...}, {cron: ...}]`): the union of their
    /// ticks, one run per tick however many of them fall on it (Airflow 3's
    /// `MultipleCronTriggerTimetable`, Dagu's list of schedules).
    AnyOf(Vec<CronSchedule>),
    /// `every: <duration>`: fixed intervals, from `start_date` with catchup; without catchup
    /// on whole multiples of the interval since the Unix epoch, as Airflow does.
    Every(Duration),
}

impl Schedule {
    /// Parses a cron expression or a preset (`@once`, `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@quarterly`, `@yearly`, and croniter's `@annually`, `@midnight`).
    pub fn parse_cron(expression: &str) -> Result<Schedule, String> {
        if expression.trim() == "@once" {
            return Ok(Schedule::Once);
        }
        CronSchedule::parse(expression).map(Schedule::Cron)
    }

    pub fn every(interval: Duration) -> Result<Schedule, String> {
        if interval < Duration::from_secs(1) {
            return Err(format!(
                "\"every\" must be at least 1s, found {}",
                humantime::format_duration(interval)
            ));
        }
        Ok(Schedule::Every(interval))
    }
}

impl fmt::Display for Schedule {
    /// The text a DAG file would use: `null`, `@once`, the cron text, or `every 15m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Manual => f.write_str("null"),
            Schedule::Once => f.write_str("@once"),
            Schedule::Cron(cron) => f.write_str(cron.text()),
            Schedule::AnyOf(crons) => {
                let texts: Vec<&str> = crons.iter().map(CronSchedule::text).collect();
                f.write_str(&texts.join(" | "))
            }
            Schedule::Every(interval) => {
                write!(f, "every {}", humantime::format_duration(*interval))
            }
        }
    }
}

impl FromStr for Schedule {
    type Err = String;

    /// The inverse of `Display`.
    fn from_str(text: &str) -> Result<Schedule, String> {
        match text {
            "null" => Ok(Schedule::Manual),
            _ if text.contains(" | ") => text
                .split(" | ")
                .map(CronSchedule::parse)
                .collect::<Result<Vec<_>, _>>()
                .map(Schedule::AnyOf),
            _ => match text.strip_prefix("every ") {
                Some(interval) => humantime::parse_duration(interval)
                    .map_err(|error| format!("bad duration \"{interval}\": {error}"))
                    .and_then(Schedule::every),
                None => Schedule::parse_cron(text),
            },
        }
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Schedule, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a run's data interval is, relative to its schedule tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataIntervalMode {
    /// Airflow 2's default: the run for [t_k, t_k+1) is created at t_k+1; logical date t_k.
    Previous,
    /// The run is about its tick: logical date = interval start = interval end = tick
    /// (Airflow's CronTriggerTimetable).
    Instant,
}

impl FromStr for DataIntervalMode {
    type Err = String;

    fn from_str(text: &str) -> Result<DataIntervalMode, String> {
        match text {
            "previous" => Ok(DataIntervalMode::Previous),
            "instant" => Ok(DataIntervalMode::Instant),
            _ => Err(format!(
                "unknown data_interval \"{text}\"; use \"previous\" or \"instant\""
            )),
        }
    }
}

/// One DAG run the schedule calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInterval {
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    /// The run may start at this moment, not before.
    pub run_after: DateTime<Utc>,
}

impl RunInterval {
    fn interval(start: DateTime<Utc>, end: DateTime<Utc>) -> RunInterval {
        RunInterval {
            logical_date: start,
            data_interval_start: start,
            data_interval_end: end,
            run_after: end,
        }
    }

    fn exact(tick: DateTime<Utc>) -> RunInterval {
        RunInterval::interval(tick, tick)
    }
}

/// A delay of each scheduled run's start, up to `max` (APScheduler's `jitter`), so that many
/// DAGs on one schedule do not all start at once. It is derived from the DAG's id and the
/// run's logical date, so a scheduler that restarts, or another scheduler, computes the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jitter {
    #[serde(with = "crate::dag::model::humantime_serde_compat")]
    pub max: Duration,
    /// Of the DAG's id: the DAGs of one schedule spread out.
    pub seed: u64,
}

impl Jitter {
    pub fn of(max: Duration, dag_id: &str) -> Jitter {
        Jitter {
            max,
            seed: crate::hash::fnv1a(dag_id.as_bytes()),
        }
    }

    /// The delay of the run at `logical_date`: from zero to `max`, in whole milliseconds.
    pub fn delay(&self, logical_date: DateTime<Utc>) -> chrono::Duration {
        let most = u64::try_from(self.max.as_millis()).unwrap_or(u64::MAX - 1);
        let mut bytes = self.seed.to_le_bytes().to_vec();
        bytes.extend(logical_date.timestamp_micros().to_le_bytes());
        // The high bits: FNV's low bits follow its input's low bits too closely.
        let draw = crate::hash::fnv1a(&bytes) >> 16;
        chrono::Duration::milliseconds(i64::try_from(draw % (most + 1)).unwrap_or(0))
    }
}

/// A DAG's schedule with everything that decides its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timetable {
    pub schedule: Schedule,
    #[serde(with = "tz_name")]
    pub timezone: Tz,
    pub data_interval: DataIntervalMode,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub catchup: bool,
    /// Delays each run's `run_after` (not its data interval). Left out of the serialized DAG
    /// when absent, so that DAGs without one keep their version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
    /// A scheduled run that has not started this long after its `run_after` is skipped
    /// instead of started late (APScheduler's `misfire_grace_time`; see [`Timetable::misfire`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::dag::model::humantime_opt"
    )]
    pub misfire_grace: Option<Duration>,
}

impl Timetable {
    pub fn new(
        schedule: Schedule,
        timezone: Tz,
        data_interval: DataIntervalMode,
        start_date: Option<DateTime<Utc>>,
        end_date: Option<DateTime<Utc>>,
        catchup: bool,
    ) -> Timetable {
        Timetable {
            schedule,
            timezone,
            data_interval,
            start_date,
            end_date,
            catchup,
            jitter: None,
            misfire_grace: None,
        }
    }

    /// Why a scheduled run due at `run_after` is skipped rather than started at `now`, if it
    /// is: `misfire_grace` went by (its scheduler was down, or `max_active_runs` held it
    /// back).
    pub fn misfire(&self, run_after: DateTime<Utc>, now: DateTime<Utc>) -> Option<String> {
        let grace = self.misfire_grace?;
        let late = Duration::from_secs((now - run_after).num_seconds().max(0) as u64);
        let misfires = run_after + chrono::Duration::from_std(grace).ok()?;
        (now >= misfires).then(|| {
            format!(
                "not started within misfire_grace ({}) of {}: {} late",
                humantime::format_duration(grace),
                run_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                humantime::format_duration(late)
            )
        })
    }

    /// The run after the last automated one (`None`: the DAG has none yet), as Airflow's
    /// `next_dagrun_info`. `now` matters only without catchup, where runs before the latest
    /// complete interval are skipped. The result may lie in the future: it is due when
    /// `run_after <= now`.
    pub fn next_dagrun_info(
        &self,
        last: Option<&RunInterval>,
        now: DateTime<Utc>,
    ) -> Option<RunInterval> {
        let earliest = self.start_date?;
        let clock = match &self.schedule {
            Schedule::Manual => return None,
            Schedule::Once if last.is_some() => return None,
            Schedule::Once => None,
            Schedule::Cron(cron) => Some(Clock::Cron(std::slice::from_ref(cron), self.timezone)),
            Schedule::AnyOf(crons) => Some(Clock::Cron(crons, self.timezone)),
            Schedule::Every(interval) => {
                Some(Clock::Every(chrono::Duration::from_std(*interval).ok()?))
            }
        };
        let info = match (clock, self.data_interval) {
            (None, _) => RunInterval::exact(earliest),
            (Some(clock), DataIntervalMode::Previous) => {
                self.next_interval(&clock, last, earliest, now)?
            }
            (Some(clock), DataIntervalMode::Instant) => self.next_tick(&clock, last, earliest, now),
        };
        match self.end_date {
            Some(end) if info.logical_date > end => None,
            _ => Some(match self.jitter {
                Some(jitter) => RunInterval {
                    run_after: info.run_after + jitter.delay(info.logical_date),
                    ..info
                },
                None => info,
            }),
        }
    }

    /// Airflow's `_DataIntervalTimetable.next_dagrun_info`.
    fn next_interval(
        &self,
        clock: &Clock,
        last: Option<&RunInterval>,
        earliest: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<RunInterval> {
        let earliest = if self.catchup {
            clock.align_to_next(earliest)
        } else {
            clock.skip_to_latest(earliest, now)?
        };
        let start = match last {
            None => earliest,
            Some(last) => clock.align_to_prev(last.data_interval_end).max(earliest),
        };
        Some(RunInterval::interval(start, clock.next(start)))
    }

    /// Airflow's `CronTriggerTimetable.next_dagrun_info` with a zero interval.
    fn next_tick(
        &self,
        clock: &Clock,
        last: Option<&RunInterval>,
        earliest: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> RunInterval {
        let after_last = last.map(|last| clock.next(last.data_interval_end));
        let tick = if self.catchup {
            after_last.unwrap_or_else(|| clock.align_to_next(earliest))
        } else {
            let latest = clock.align_to_prev(now);
            let first = clock.align_to_next(earliest);
            after_last.map_or(latest, |t| t.max(latest)).max(first)
        };
        RunInterval::exact(tick)
    }

    /// What the scheduler creates at `now` on an empty database: with catchup every complete
    /// interval since `start_date` (oldest first), without it the latest one.
    pub fn due_runs(&self, now: DateTime<Utc>) -> Vec<RunInterval> {
        let mut runs: Vec<RunInterval> = Vec::new();
        while let Some(run) = self.next_dagrun_info(runs.last(), now) {
            if run.run_after > now || !moves_on(runs.last(), &run) {
                break;
            }
            runs.push(run);
        }
        runs
    }

    /// The `count` runs after `last_due`, the last of the runs due at `now` (`due_runs`).
    pub fn upcoming(
        &self,
        last_due: Option<&RunInterval>,
        now: DateTime<Utc>,
        count: usize,
    ) -> Vec<RunInterval> {
        let mut last = last_due.copied();
        let mut runs = Vec::with_capacity(count);
        while runs.len() < count {
            let Some(run) = self.next_dagrun_info(last.as_ref(), now) else {
                break;
            };
            if !moves_on(last.as_ref(), &run) {
                break;
            }
            runs.push(run);
            last = Some(run);
        }
        runs
    }

    /// The schedule in words, for people: "every day at 02:00 (Europe/Berlin)", "every 15m
    /// from start_date"; a cron pattern without common words shows as its text.
    pub fn describe(&self) -> String {
        let mut words = self.describe_schedule();
        if let Some(jitter) = self.jitter {
            let most = humantime::format_duration(jitter.max);
            words.push_str(&format!(", each start delayed up to {most}"));
        }
        if let Some(grace) = self.misfire_grace {
            let grace = humantime::format_duration(grace);
            words.push_str(&format!(", a run not started within {grace} skipped"));
        }
        words
    }

    fn describe_schedule(&self) -> String {
        let zone = self.timezone.name();
        match &self.schedule {
            Schedule::Manual => "manual only (no schedule)".to_owned(),
            Schedule::Once => "once, at start_date".to_owned(),
            Schedule::Cron(cron) => format!("{} ({zone})", cron_words(cron)),
            Schedule::AnyOf(crons) => {
                let words: Vec<String> = crons.iter().map(cron_words).collect();
                format!("{} ({zone})", words.join(", and "))
            }
            Schedule::Every(interval) => format!(
                "every {} from start_date",
                humantime::format_duration(*interval)
            ),
        }
    }
}

/// A cron schedule in words, or as its text when it has no common words.
fn cron_words(cron: &CronSchedule) -> String {
    cron.describe()
        .unwrap_or_else(|| format!("cron \"{}\"", cron.text()))
}

/// Whether `run` comes after `last`. Runs are unique by logical date, so a schedule that
/// answered the same run twice (a DST corner no case has shown) must end the walk, not loop.
fn moves_on(last: Option<&RunInterval>, run: &RunInterval) -> bool {
    last.is_none_or(|last| run.logical_date > last.logical_date)
}

/// The two kinds of tick sequence, with Airflow's alignment helpers over either. A cron clock
/// ticks at the union of its expressions' ticks.
enum Clock<'a> {
    Cron(&'a [CronSchedule], Tz),
    Every(chrono::Duration),
}

impl Clock<'_> {
    /// The first tick strictly after `t`.
    fn next(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Clock::Cron(crons, tz) => crons
                .iter()
                .map(|cron| cron.next_after(t, *tz))
                .min()
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            Clock::Every(interval) => t + *interval,
        }
    }

    /// The last tick strictly before `t`.
    fn prev(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Clock::Cron(crons, tz) => crons
                .iter()
                .map(|cron| cron.prev_before(t, *tz))
                .max()
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            Clock::Every(interval) => t - *interval,
        }
    }

    /// `t` if it is a tick, else the next tick.
    fn align_to_next(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Clock::Cron(..) => {
                let next = self.next(t);
                if self.prev(next) == t { t } else { next }
            }
            Clock::Every(_) => t,
        }
    }

    /// `t` if it is a tick, else the previous tick.
    fn align_to_prev(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Clock::Cron(..) => {
                let prev = self.prev(t);
                if self.next(prev) == t { t } else { prev }
            }
            Clock::Every(_) => t,
        }
    }

    /// Without catchup, the start of the latest complete interval at `now`, or the aligned
    /// start date if later (Airflow's `_skip_to_latest`). `None` where Airflow's assertion
    /// fails (the tick after the previous one lies before `now`): Airflow logs the error and
    /// creates no run.
    fn skip_to_latest(&self, earliest: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Clock::Cron(..) => {
                let last_start = self.prev(now);
                let next_start = self.next(last_start);
                let new_start = match next_start.cmp(&now) {
                    Ordering::Equal => last_start,
                    Ordering::Greater => self.prev(last_start),
                    Ordering::Less => return None,
                };
                Some(new_start.max(self.align_to_next(earliest)))
            }
            // Airflow rounds `now` down to a whole number of intervals since the Unix epoch
            // (`DeltaDataIntervalTimetable._round`), not since start_date: without catchup a
            // daily `every` covers midnight to midnight UTC, whatever time start_date has.
            Clock::Every(interval) => {
                let step = i128::from(interval.num_nanoseconds()?);
                let since_epoch = i128::from(now.timestamp()) * 1_000_000_000
                    + i128::from(now.timestamp_subsec_nanos());
                let past_boundary = since_epoch.rem_euclid(step);
                let rounded =
                    now - chrono::Duration::nanoseconds(i64::try_from(past_boundary).ok()?);
                Some(self.prev(rounded).max(earliest))
            }
        }
    }
}

/// Finds a timezone by its IANA name, suggesting the closest name for a typo, or the zone
/// named after a city given alone ("Berlin", "new york").
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        let names = || chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
        let city = name.trim().replace(' ', "_");
        let hint = crate::suggest::closest(name, names()).or_else(|| {
            names().find(|zone| {
                zone.rsplit('/')
                    .next()
                    .is_some_and(|last| last.eq_ignore_ascii_case(&city))
            })
        });
        let hint = hint
            .map(|zone| format!("; did you mean \"{zone}\"?"))
            .unwrap_or_default();
        format!("unknown timezone \"{name}\"{hint} (use an IANA name such as Europe/Berlin)")
    })
}

/// Timezones as their IANA names in the stored JSON.
mod tz_name {
    use chrono_tz::Tz;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(tz: &Tz, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(tz.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Tz, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
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

    fn timetable(schedule: &str, catchup: bool) -> Timetable {
        Timetable::new(
            schedule.parse().unwrap(),
            Tz::UTC,
            DataIntervalMode::Previous,
            Some(at("2024-01-01T00:00:00Z")),
            None,
            catchup,
        )
    }

    #[test]
    fn a_run_misfires_once_its_grace_has_gone_by() {
        let mut hourly = timetable("0 * * * *", true);
        let due = at("2024-01-01T01:00:00Z");
        assert_eq!(
            hourly.misfire(due, at("2024-01-02T00:00:00Z")),
            None,
            "no grace"
        );
        hourly.misfire_grace = Some(Duration::from_secs(600));
        assert_eq!(hourly.misfire(due, at("2024-01-01T01:09:59Z")), None);
        assert_eq!(
            hourly.misfire(due, at("2024-01-01T01:10:30Z")).as_deref(),
            Some("not started within misfire_grace (10m) of 2024-01-01T01:00:00Z: 10m 30s late")
        );
    }

    #[test]
    fn several_crons_run_at_the_union_of_their_ticks_once_each() {
        let union: Schedule = "0 8 * * 1-5 | 0 10 * * 6,0 | 0 8 * * 1".parse().unwrap();
        assert_eq!(union.to_string(), "0 8 * * 1-5 | 0 10 * * 6,0 | 0 8 * * 1");
        let timetable = |mode| {
            Timetable::new(
                union.clone(),
                Tz::UTC,
                mode,
                Some(at("2024-01-01T00:00:00Z")),
                None,
                true,
            )
        };
        // 2024-01-01 is a Monday: weekdays at 08:00, the weekend at 10:00; Monday's two
        // expressions make one run.
        let now = at("2024-01-08T09:00:00Z");
        let instant = timetable(DataIntervalMode::Instant).due_runs(now);
        let dates: Vec<String> = instant
            .iter()
            .map(|run| run.logical_date.format("%a %d %H:%M").to_string())
            .collect();
        assert_eq!(
            dates,
            [
                "Mon 01 08:00",
                "Tue 02 08:00",
                "Wed 03 08:00",
                "Thu 04 08:00",
                "Fri 05 08:00",
                "Sat 06 10:00",
                "Sun 07 10:00",
                "Mon 08 08:00"
            ]
        );
        assert!(
            instant
                .iter()
                .all(|run| run.data_interval_start == run.data_interval_end)
        );
        // Airflow 2's default: each run covers the union's tick to the next one.
        let previous = timetable(DataIntervalMode::Previous).due_runs(now);
        assert_eq!(previous.len(), 7);
        let friday = previous[4];
        assert_eq!(friday.data_interval_start, at("2024-01-05T08:00:00Z"));
        assert_eq!(friday.data_interval_end, at("2024-01-06T10:00:00Z"));
        assert_eq!(friday.run_after, friday.data_interval_end);
        let words = timetable(DataIntervalMode::Instant).describe();
        assert!(words.contains(", and "), "{words}");
    }

    #[test]
    fn jitter_delays_each_start_alone_by_the_same_amount_every_time() {
        let plain = timetable("0 * * * *", true);
        let jittered = Timetable {
            jitter: Some(Jitter::of(Duration::from_secs(600), "reports")),
            ..plain.clone()
        };
        let now = at("2024-01-03T00:00:00Z");
        let (without, with) = (plain.due_runs(now), jittered.due_runs(now));
        assert_eq!(without.len(), 48);
        assert_eq!(
            with.len(),
            47,
            "the interval ending at now waits for its jitter"
        );
        let mut delays = std::collections::BTreeSet::new();
        for (plain, delayed) in without.iter().zip(&with) {
            assert_eq!(plain.logical_date, delayed.logical_date);
            assert_eq!(plain.data_interval_end, delayed.data_interval_end);
            let delay = delayed.run_after - plain.run_after;
            assert!(delay >= chrono::Duration::zero() && delay <= chrono::Duration::minutes(10));
            delays.insert(delay);
        }
        assert!(delays.len() > 40, "spread out: {delays:?}");
        // The same run, computed again (a restart, another scheduler): the same delay.
        let again = jittered.upcoming(with.get(9), now, 3);
        assert_eq!(&again[..], &with[10..13]);
        // Another DAG on the same schedule starts at other moments.
        let other = Jitter::of(Duration::from_secs(600), "billing");
        let theirs = other.delay(with[0].logical_date);
        let ours = jittered.jitter.unwrap().delay(with[0].logical_date);
        assert_ne!(theirs, ours);
    }

    #[test]
    fn schedule_text_round_trips() {
        for text in [
            "null",
            "@once",
            "0 2 * * *",
            "@daily",
            "every 15m",
            "every 1day",
        ] {
            let schedule: Schedule = text.parse().unwrap();
            assert_eq!(schedule.to_string().parse::<Schedule>().unwrap(), schedule);
        }
    }

    #[test]
    fn every_refuses_less_than_a_second() {
        assert_eq!(
            Schedule::every(Duration::ZERO).unwrap_err(),
            "\"every\" must be at least 1s, found 0s"
        );
    }

    #[test]
    fn manual_and_missing_start_date_create_nothing() {
        let now = at("2024-02-01T00:00:00Z");
        assert!(timetable("null", true).due_runs(now).is_empty());
        let mut no_start = timetable("@daily", true);
        no_start.start_date = None;
        assert!(no_start.next_dagrun_info(None, now).is_none());
    }

    #[test]
    fn catchup_creates_every_complete_interval_oldest_first() {
        let runs = timetable("@daily", true).due_runs(at("2024-01-03T12:00:00Z"));
        let dates: Vec<_> = runs.iter().map(|r| r.logical_date.to_rfc3339()).collect();
        assert_eq!(
            dates,
            ["2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00"]
        );
        assert_eq!(runs[1].data_interval_end, at("2024-01-03T00:00:00Z"));
    }

    #[test]
    fn without_catchup_only_the_latest_interval_is_due() {
        let runs = timetable("@daily", false).due_runs(at("2024-01-10T12:00:00Z"));
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].logical_date, at("2024-01-09T00:00:00Z"));
    }

    #[test]
    fn upcoming_runs_follow_the_due_ones() {
        let daily = timetable("@daily", false);
        let now = at("2024-01-10T12:00:00Z");
        let upcoming = daily.upcoming(daily.due_runs(now).last(), now, 2);
        assert_eq!(upcoming[0].logical_date, at("2024-01-10T00:00:00Z"));
        assert_eq!(upcoming[1].run_after, at("2024-01-12T00:00:00Z"));
    }

    #[test]
    fn a_moment_after_a_boundary_is_still_one_interval() {
        for now in ["2024-01-10T00:00:00Z", "2024-01-10T00:00:00.000001Z"] {
            let runs = timetable("@daily", false).due_runs(at(now));
            assert_eq!(runs.len(), 1, "{now}");
            assert_eq!(runs[0].logical_date, at("2024-01-09T00:00:00Z"), "{now}");
        }
    }

    #[test]
    fn every_without_catchup_rounds_now_to_the_epoch() {
        // Airflow's DeltaDataIntervalTimetable._round: the grid is the Unix epoch's, not
        // start_date's (measured with Airflow 2.10.5, see the fixture).
        let mut every = timetable("every 1day", false);
        every.start_date = Some(at("2024-01-01T06:00:00Z"));
        let runs = every.due_runs(at("2024-01-10T12:00:00Z"));
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].data_interval_start, at("2024-01-09T00:00:00Z"));
        assert_eq!(runs[0].data_interval_end, at("2024-01-10T00:00:00Z"));
        // With catchup the grid is start_date's.
        every.catchup = true;
        let runs = every.due_runs(at("2024-01-03T12:00:00Z"));
        let starts: Vec<_> = runs.iter().map(|r| r.data_interval_start).collect();
        assert_eq!(
            starts,
            [at("2024-01-01T06:00:00Z"), at("2024-01-02T06:00:00Z")]
        );
    }

    #[test]
    fn once_runs_at_start_date_unless_past_end_date() {
        let once = timetable("@once", false);
        let now = at("2024-02-01T00:00:00Z");
        let runs = once.due_runs(now);
        assert_eq!(runs, [RunInterval::exact(at("2024-01-01T00:00:00Z"))]);
        assert!(once.upcoming(runs.last(), now, 3).is_empty());
        let mut ended = once;
        ended.end_date = Some(at("2023-12-31T00:00:00Z"));
        assert!(ended.due_runs(now).is_empty());
    }

    #[test]
    fn end_date_stops_runs_by_logical_date() {
        let mut daily = timetable("@daily", true);
        daily.end_date = Some(at("2024-01-02T12:00:00Z"));
        let now = at("2024-02-01T00:00:00Z");
        let runs = daily.due_runs(now);
        // The run for Jan 2 starts before end_date, so it is created though it ends after.
        let ends: Vec<_> = runs.iter().map(|r| r.data_interval_end).collect();
        assert_eq!(
            ends,
            [at("2024-01-02T00:00:00Z"), at("2024-01-03T00:00:00Z")]
        );
        assert!(daily.upcoming(runs.last(), now, 2).is_empty());
    }

    #[test]
    fn instant_runs_are_their_tick() {
        let mut instant = timetable("0 2 * * *", false);
        instant.data_interval = DataIntervalMode::Instant;
        let now = at("2024-01-10T12:00:00Z");
        let runs = instant.due_runs(now);
        assert_eq!(runs, [RunInterval::exact(at("2024-01-10T02:00:00Z"))]);
        let next = instant.upcoming(runs.last(), now, 1);
        assert_eq!(next, [RunInterval::exact(at("2024-01-11T02:00:00Z"))]);
    }

    #[test]
    fn describes_schedules_in_words() {
        let berlin = |text: &str| {
            let mut timetable = timetable(text, true);
            timetable.timezone = Tz::Europe__Berlin;
            timetable.describe()
        };
        let cases = [
            ("0 2 * * *", "every day at 02:00 (Europe/Berlin)"),
            (
                "*/15 9-17 * * MON-FRI",
                "every 15 minutes from 09:00 to 17:45, every Monday to Friday (Europe/Berlin)",
            ),
            ("0 0 L * *", "cron \"0 0 L * *\" (Europe/Berlin)"),
            ("every 15m", "every 15m from start_date"),
            ("@once", "once, at start_date"),
            ("null", "manual only (no schedule)"),
        ];
        for (schedule, words) in cases {
            assert_eq!(berlin(schedule), words, "{schedule}");
        }
    }

    #[test]
    fn timezone_typos_get_a_suggestion() {
        assert_eq!(
            parse_timezone("Europe/Berln").unwrap_err(),
            "unknown timezone \"Europe/Berln\"; did you mean \"Europe/Berlin\"? (use an IANA \
             name such as Europe/Berlin)"
        );
        let hints = [
            ("europe/berlin", Some("Europe/Berlin")),
            ("Berlin", Some("Europe/Berlin")),
            ("new york", Some("America/New_York")),
            ("America/NewYork", Some("America/New_York")),
            ("Mars/Olympus", None),
        ];
        for (name, zone) in hints {
            let hint = zone
                .map(|zone| format!("; did you mean \"{zone}\"?"))
                .unwrap_or_default();
            assert_eq!(
                parse_timezone(name).unwrap_err(),
                format!(
                    "unknown timezone \"{name}\"{hint} (use an IANA name such as Europe/Berlin)"
                ),
                "{name}"
            );
        }
        assert_eq!(
            parse_timezone("America/New_York").unwrap(),
            Tz::America__New_York
        );
    }

    #[test]
    fn every_schedule_kind_round_trips_through_json() {
        for (schedule, mode) in [
            ("null", DataIntervalMode::Previous),
            ("@once", DataIntervalMode::Previous),
            ("*/15 9-17 * * MON-FRI", DataIntervalMode::Instant),
            ("every 1h 30m", DataIntervalMode::Previous),
        ] {
            let mut timetable = timetable(schedule, false);
            timetable.data_interval = mode;
            timetable.timezone = Tz::America__New_York;
            timetable.end_date = Some(at("2025-01-01T00:00:00Z"));
            let json = serde_json::to_string(&timetable).unwrap();
            assert_eq!(
                serde_json::from_str::<Timetable>(&json).unwrap(),
                timetable,
                "{json}"
            );
        }
    }

    #[test]
    fn timetables_serialize_with_names() {
        let timetable = timetable("0 2 * * *", true);
        let json = serde_json::to_value(&timetable).unwrap();
        assert_eq!(json["schedule"], "0 2 * * *");
        assert_eq!(json["timezone"], "UTC");
        assert_eq!(json["data_interval"], "previous");
        assert_eq!(
            serde_json::from_value::<Timetable>(json).unwrap(),
            timetable
        );
    }
}
