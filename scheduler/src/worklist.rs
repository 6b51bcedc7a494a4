//! Which runs a scheduler looks at in a tick: the runs something happened to, the runs whose
//! timer ran out, the runs that wait for room when room may have freed, and every unfinished run
//! at a sweep. Pure: the service tells it what it learned, and asks it with `now`.
//!
//! A run needs a look when:
//! - a write concerned it (a run created, a try ended, a mark, a clear: the wake-up's
//!   [`Changes`]); a run is read again unless only its tries ended;
//! - its timer ran out (a retry delay, its timeout, its `run_after`);
//! - it waits for room (a queued run at `max_active_runs`, scheduled task instances beyond a
//!   pool's slots or `max_active_tasks`, `depends_on_past`) and something happened that may
//!   have made room (a try ended, a run finished, a pool changed);
//! - a sweep is due: after a wake-up that may have missed something (`everything`), and at
//!   least every [`SWEEP_INTERVAL`] as the safety net. A sweep is the only scan.

use std::collections::{HashMap, HashSet};
use std::time::Duration;
use updraft_core::ids::DagRunId;

use chrono::{DateTime, Utc};
use updraft_metadata::Changes;

/// The longest time between two sweeps of every unfinished run.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Worklist {
    /// Runs a write concerned since they were last looked at: to read again.
    dirty: HashSet<DagRunId>,
    /// Runs some of whose tries ended since they were last looked at (their task instances
    /// moved, the runs did not).
    moved: HashSet<DagRunId>,
    /// When a run needs a look though nothing happens to it.
    timers: HashMap<DagRunId, DateTime<Utc>>,
    /// Runs that wait for room.
    waiting: HashSet<DagRunId>,
    /// Room may have freed since the waiting runs were last looked at.
    room_freed: bool,
    /// A sweep is due whatever the time (a wake-up said everything, or none was looked at yet).
    sweep_now: bool,
    last_sweep: Option<DateTime<Utc>>,
}

impl Worklist {
    pub fn new() -> Worklist {
        Worklist {
            sweep_now: true,
            ..Worklist::default()
        }
    }

    /// What a wake-up said changed. A change to any run may have freed room (a try ended).
    pub fn note(&mut self, changes: &Changes) {
        self.sweep_now |= changes.everything;
        self.room_freed |= !changes.runs.is_empty() || !changes.instances.is_empty();
        self.dirty.extend(&changes.runs);
        self.moved.extend(changes.instances.keys());
    }

    /// Run `run` needs a look (this scheduler created or started it).
    pub fn touch(&mut self, run: DagRunId) {
        self.dirty.insert(run);
    }

    /// Room may have freed (a run finished, a pool grew).
    pub fn room_freed(&mut self) {
        self.room_freed = true;
    }

    /// Whether every unfinished run is to be read and looked at now.
    pub fn sweep_due(&self, now: DateTime<Utc>) -> bool {
        self.sweep_now
            || self
                .last_sweep
                .is_none_or(|last| (now - last).to_std().unwrap_or_default() >= SWEEP_INTERVAL)
    }

    /// A sweep read `runs`, every unfinished run: each needs a look, and what was known of
    /// others (finished meanwhile) is forgotten.
    pub fn swept(&mut self, runs: impl IntoIterator<Item = DagRunId>, now: DateTime<Utc>) {
        self.dirty = runs.into_iter().collect();
        self.moved.clear();
        self.timers.clear();
        self.waiting.clear();
        self.room_freed = false;
        self.sweep_now = false;
        self.last_sweep = Some(now);
    }

    /// The runs a write concerned, to read again before they are looked at.
    pub fn dirty(&self) -> impl Iterator<Item = DagRunId> + '_ {
        self.dirty.iter().copied()
    }

    /// The runs whose tries ended, to look at without reading them again.
    pub fn moved(&self) -> impl Iterator<Item = DagRunId> + '_ {
        self.moved.iter().copied()
    }

    /// The runs to look at now, taken from the list: the dirty and moved ones, those whose
    /// timer ran out, and the waiting ones when room may have freed.
    pub fn take(&mut self, now: DateTime<Utc>) -> HashSet<DagRunId> {
        let mut due = std::mem::take(&mut self.dirty);
        due.extend(self.moved.drain());
        self.timers.retain(|&run, &mut at| {
            let ran_out = at <= now;
            if ran_out {
                due.insert(run);
            }
            !ran_out
        });
        if std::mem::take(&mut self.room_freed) {
            due.extend(self.waiting.drain());
        }
        for run in &due {
            self.waiting.remove(run);
            self.timers.remove(run);
        }
        due
    }

    /// Run `run` was looked at: it needs another look at `wake_at` at the latest, and when
    /// room frees if it `waits`.
    pub fn looked_at(&mut self, run: DagRunId, wake_at: Option<DateTime<Utc>>, waits: bool) {
        if let Some(at) = wake_at {
            self.timers.insert(run, at);
        }
        if waits {
            self.waiting.insert(run);
        }
    }

    /// Run `run` finished (or is gone): it is forgotten, and its place may let another start.
    pub fn finished(&mut self, run: DagRunId) {
        self.dirty.remove(&run);
        self.moved.remove(&run);
        self.timers.remove(&run);
        self.waiting.remove(&run);
        self.room_freed = true;
    }

    /// The earliest timer, or the next sweep if that is sooner.
    pub fn wake_at(&self) -> Option<DateTime<Utc>> {
        let sweep = self.last_sweep.map(|last| {
            last + chrono::Duration::from_std(SWEEP_INTERVAL).expect("a short interval")
        });
        self.timers.values().copied().chain(sweep).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_core::ids::TaskInstanceId;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn run(n: i64) -> DagRunId {
        DagRunId(n)
    }

    fn runs(ns: &[i64]) -> Vec<DagRunId> {
        ns.iter().copied().map(DagRunId).collect()
    }

    fn changes(ns: &[i64]) -> Changes {
        Changes::of_runs(&runs(ns))
    }

    fn sorted(runs: HashSet<DagRunId>) -> Vec<DagRunId> {
        let mut runs: Vec<DagRunId> = runs.into_iter().collect();
        runs.sort_unstable();
        runs
    }

    #[test]
    fn the_first_look_and_an_everything_wake_up_are_sweeps() {
        let mut list = Worklist::new();
        assert!(list.sweep_due(at(0)));
        list.swept(runs(&[1, 2]), at(0));
        assert!(!list.sweep_due(at(1)));
        assert_eq!(sorted(list.take(at(1))), runs(&[1, 2]));
        list.note(&Changes::everything());
        assert!(list.sweep_due(at(2)));
    }

    #[test]
    fn a_sweep_is_due_at_least_every_interval() {
        let mut list = Worklist::new();
        list.swept([], at(0));
        let interval = SWEEP_INTERVAL.as_secs() as i64;
        assert!(!list.sweep_due(at(interval - 1)));
        assert!(list.sweep_due(at(interval)));
        assert_eq!(list.wake_at(), Some(at(interval)));
    }

    #[test]
    fn only_changed_runs_and_ran_out_timers_are_looked_at() {
        let mut list = Worklist::new();
        list.swept([], at(0));
        list.note(&changes(&[7]));
        list.looked_at(run(8), Some(at(10)), false);
        assert_eq!(sorted(list.take(at(1))), runs(&[7]));
        assert!(list.take(at(2)).is_empty());
        assert_eq!(list.wake_at(), Some(at(10)));
        assert_eq!(sorted(list.take(at(10))), runs(&[8]));
        assert!(list.take(at(11)).is_empty());
    }

    #[test]
    fn waiting_runs_are_looked_at_when_room_may_have_freed() {
        let mut list = Worklist::new();
        list.swept([], at(0));
        list.looked_at(run(3), None, true);
        assert!(list.take(at(1)).is_empty(), "nothing freed room");
        list.note(&changes(&[9]));
        assert_eq!(sorted(list.take(at(2))), runs(&[3, 9]));
        assert!(
            list.take(at(3)).is_empty(),
            "it waits again only when told so"
        );

        list.looked_at(run(3), None, true);
        list.finished(run(4));
        assert_eq!(sorted(list.take(at(4))), runs(&[3]));
    }

    #[test]
    fn a_run_whose_tries_ended_is_looked_at_without_being_read_again() {
        let mut list = Worklist::new();
        list.swept([], at(0));
        list.looked_at(run(3), None, true);
        list.note(&Changes::of_instances(&[
            (run(4), TaskInstanceId(40)),
            (run(4), TaskInstanceId(41)),
        ]));
        assert!(list.dirty().next().is_none());
        assert_eq!(list.moved().collect::<Vec<_>>(), [run(4)]);
        assert_eq!(
            sorted(list.take(at(1))),
            runs(&[3, 4]),
            "an end may have freed room"
        );
        assert!(list.moved().next().is_none());
    }

    #[test]
    fn a_finished_run_is_forgotten() {
        let mut list = Worklist::new();
        list.swept([], at(0));
        list.note(&changes(&[5]));
        list.looked_at(run(5), Some(at(1)), true);
        list.finished(run(5));
        assert!(list.take(at(2)).is_empty());
    }

    #[test]
    fn a_sweep_replaces_what_was_known() {
        let mut list = Worklist::new();
        list.swept([], at(0));
        list.looked_at(run(1), Some(at(5)), true);
        list.note(&changes(&[2]));
        list.swept(runs(&[3]), at(1));
        assert_eq!(sorted(list.take(at(6))), runs(&[3]));
    }
}
