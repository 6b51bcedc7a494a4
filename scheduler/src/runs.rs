//! Which scheduled DAG runs to create now (DESIGN §4): the timetable's due runs, oldest first,
//! within `max_active_runs`.

use chrono::{DateTime, Utc};
use updraft_core::schedule::{RunInterval, Timetable};

/// The runs to create at `now` for a DAG whose latest scheduled run is `last` and which has
/// `active` runs queued or running. A paused DAG gets none. Runs beyond `max_active_runs`
/// wait for a later tick, so catch-up never floods the queue.
pub fn runs_to_create(
    timetable: &Timetable,
    last: Option<&RunInterval>,
    active: usize,
    max_active_runs: u32,
    paused: bool,
    now: DateTime<Utc>,
) -> Vec<RunInterval> {
    let room = (max_active_runs as usize).saturating_sub(active);
    if paused || room == 0 {
        return Vec::new();
    }
    let mut runs: Vec<RunInterval> = Vec::with_capacity(room.min(64));
    let mut last = last.copied();
    while runs.len() < room {
        let Some(run) = timetable.next_dagrun_info(last.as_ref(), now) else {
            break;
        };
        // The timetable repeats itself only past the end of time; never loop on it.
        if run.run_after > now || last.is_some_and(|l| l.logical_date >= run.logical_date) {
            break;
        }
        runs.push(run);
        last = Some(run);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Tz;
    use updraft_core::schedule::{DataIntervalMode, Schedule};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn daily(catchup: bool) -> Timetable {
        Timetable::new(
            Schedule::parse_cron("@daily").unwrap(),
            Tz::UTC,
            DataIntervalMode::Previous,
            Some(at("2024-01-01T00:00:00Z")),
            None,
            catchup,
        )
    }

    fn dates(runs: &[RunInterval]) -> Vec<String> {
        runs.iter()
            .map(|r| r.logical_date.format("%m-%d").to_string())
            .collect()
    }

    #[test]
    fn catchup_fills_the_free_slots_oldest_first() {
        let now = at("2024-01-11T00:00:00Z");
        let runs = runs_to_create(&daily(true), None, 1, 3, false, now);
        assert_eq!(dates(&runs), ["01-01", "01-02"]);
        let more = runs_to_create(&daily(true), runs.last(), 0, 3, false, now);
        assert_eq!(dates(&more), ["01-03", "01-04", "01-05"]);
    }

    #[test]
    fn nothing_when_full_paused_or_not_due() {
        let now = at("2024-01-11T00:00:00Z");
        assert!(runs_to_create(&daily(true), None, 3, 3, false, now).is_empty());
        assert!(runs_to_create(&daily(true), None, 0, 3, true, now).is_empty());
        let today = RunInterval {
            logical_date: at("2024-01-10T00:00:00Z"),
            data_interval_start: at("2024-01-10T00:00:00Z"),
            data_interval_end: at("2024-01-11T00:00:00Z"),
            run_after: at("2024-01-11T00:00:00Z"),
        };
        assert!(runs_to_create(&daily(true), Some(&today), 0, 3, false, now).is_empty());
    }

    #[test]
    fn without_catchup_only_the_latest_interval() {
        let runs = runs_to_create(
            &daily(false),
            None,
            0,
            16,
            false,
            at("2024-01-11T06:00:00Z"),
        );
        assert_eq!(dates(&runs), ["01-10"]);
    }
}
