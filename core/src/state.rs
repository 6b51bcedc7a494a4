//! States of DAG runs, task instances, backfills and workers, their legal moves, trigger rules
//! and run types.
//!
//! The names here are the vocabulary of every layer: the YAML, the `state` columns, the API and
//! the UI all use `as_str()`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::TaskInstanceId;

/// Defines a closed set of names with `as_str`, `FromStr`, `Display`, `ALL` and serde as the name.
macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Every name, for "expected one of" messages and the JSON Schema.
            pub fn names() -> impl Iterator<Item = &'static str> {
                Self::ALL.iter().map(|value| value.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(text: &str) -> Result<Self, UnknownName> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName { what: $what, name: text.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A name that is not one of a closed set's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} \"{name}\"")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
}

named_enum!(
    /// Which handler of a task or DAG ran: the key that declares it.
    HandlerName, "handler" {
        OnSuccess = "on_success",
        OnRetry = "on_retry",
        OnFailure = "on_failure",
    }
);

impl HandlerName {
    /// The handler a try that ended in `state` runs, if any.
    pub fn of_try(state: TaskState) -> Option<HandlerName> {
        match state {
            TaskState::Success => Some(HandlerName::OnSuccess),
            TaskState::UpForRetry => Some(HandlerName::OnRetry),
            TaskState::Failed => Some(HandlerName::OnFailure),
            _ => None,
        }
    }

    /// The handler a run that ended in `state` runs, if any.
    pub fn of_run(state: DagRunState) -> Option<HandlerName> {
        match state {
            DagRunState::Success => Some(HandlerName::OnSuccess),
            DagRunState::Failed => Some(HandlerName::OnFailure),
            DagRunState::Queued | DagRunState::Running => None,
        }
    }
}

named_enum!(
    /// The state of a DAG run: `queued` -> `running` -> `success` | `failed`.
    DagRunState, "dag run state" {
        Queued = "queued",
        Running = "running",
        Success = "success",
        Failed = "failed",
    }
);

named_enum!(
    /// The state of a task instance (one task in one DAG run).
    TaskState, "task state" {
        /// Created, or cleared; not yet considered by the scheduler.
        None = "none",
        /// Its trigger rule is met; waiting for a pool slot and limits.
        Scheduled = "scheduled",
        /// In the queue; a worker may claim it.
        Queued = "queued",
        /// A worker runs a try.
        Running = "running",
        Success = "success",
        Failed = "failed",
        Skipped = "skipped",
        /// An upstream failed, so its trigger rule can never be met.
        UpstreamFailed = "upstream_failed",
        /// A try failed and tries remain; it waits for its retry delay.
        UpForRetry = "up_for_retry",
        /// For sensors (not in format version 1).
        UpForReschedule = "up_for_reschedule",
        /// The task is no longer in the DAG version the run uses.
        Removed = "removed",
    }
);

named_enum!(
    /// Airflow's trigger rules: when a task may run given its upstream tasks' states.
    TriggerRule, "trigger rule" {
        AllSuccess = "all_success",
        AllFailed = "all_failed",
        AllDone = "all_done",
        AllSkipped = "all_skipped",
        OneSuccess = "one_success",
        OneFailed = "one_failed",
        OneDone = "one_done",
        NoneFailed = "none_failed",
        NoneFailedMinOneSuccess = "none_failed_min_one_success",
        NoneSkipped = "none_skipped",
        Always = "always",
    }
);

named_enum!(
    /// Why a DAG run exists.
    RunType, "run type" {
        Scheduled = "scheduled",
        Manual = "manual",
        Backfill = "backfill",
    }
);

impl RunType {
    /// The run id of a run of this type: `<type>__<logical date in RFC 3339>`, Airflow's form
    /// (`scheduled__2024-03-01T00:00:00+00:00`).
    pub fn run_id(self, logical_date: DateTime<Utc>) -> String {
        format!("{}__{}", self.as_str(), logical_date.to_rfc3339())
    }
}

/// The run id of a test run (`updraft dags test`, `tasks test`): `test__<time in RFC 3339>`.
pub fn test_run_id(at: DateTime<Utc>) -> String {
    format!("test__{}", at.to_rfc3339())
}

named_enum!(
    /// The state of a backfill: `running` <-> `paused`, then `completed` (every run finished)
    /// or `cancelled` (by a user: its queued runs failed, its running ones finished).
    BackfillState, "backfill state" {
        Running = "running",
        Paused = "paused",
        Completed = "completed",
        Cancelled = "cancelled",
    }
);

named_enum!(
    /// The state a worker's row records: `running`, `stopping` while it drains, `stopped` when
    /// it has left, or `lost` once a scheduler reaped its tries (until it heartbeats again).
    /// How a worker is doing also depends on its heartbeat's age: see the metadata's
    /// `WorkerStatus`.
    WorkerState, "worker state" {
        Running = "running",
        Stopping = "stopping",
        Stopped = "stopped",
        Lost = "lost",
    }
);

impl BackfillState {
    /// A finished backfill never changes state again.
    pub fn is_finished(self) -> bool {
        matches!(self, BackfillState::Completed | BackfillState::Cancelled)
    }

    /// The legal moves of a backfill: a user pauses, resumes or cancels an unfinished one; the
    /// scheduler completes a running one.
    pub fn can_move_to(self, to: BackfillState) -> bool {
        use BackfillState::*;
        matches!(
            (self, to),
            (Running, Paused | Completed | Cancelled) | (Paused, Running | Cancelled)
        )
    }
}

impl DagRunState {
    pub fn is_finished(self) -> bool {
        matches!(self, DagRunState::Success | DagRunState::Failed)
    }

    /// The legal moves of a DAG run. Clearing puts any run back to `queued`; a user may mark
    /// any run `success` or `failed`.
    pub fn can_move_to(self, to: DagRunState) -> bool {
        use DagRunState::*;
        self != to
            && matches!(
                (self, to),
                (_, Queued | Success | Failed) | (Queued, Running)
            )
    }
}

/// A compare-and-set of a task instance's state: it moves to `to` only if it is still in
/// `from`. The scheduler's steps and the users' marks decide them; the store applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMove {
    pub task_instance: TaskInstanceId,
    pub from: TaskState,
    pub to: TaskState,
}

impl TaskState {
    /// A finished task instance needs nothing more from the scheduler or a worker.
    pub fn is_finished(self) -> bool {
        use TaskState::*;
        matches!(self, Success | Failed | Skipped | UpstreamFailed | Removed)
    }

    /// The one place that owns the legal moves of a task instance. Every write is a
    /// compare-and-set from a state for which this returns true.
    pub fn can_move_to(self, to: TaskState) -> bool {
        use TaskState::*;
        if self == to {
            return false;
        }
        match to {
            // Clearing resets anything; a user may mark anything success or failed.
            None | Success | Failed => true,
            Scheduled => matches!(self, None | Queued | UpForRetry | UpForReschedule),
            Queued => self == Scheduled,
            Running => self == Queued,
            // A run that times out skips whatever has not finished.
            Skipped => matches!(self, None | Scheduled | Queued | Running | UpForRetry),
            UpstreamFailed => matches!(self, None | Scheduled),
            UpForRetry => matches!(self, Queued | Running),
            UpForReschedule => self == Running,
            Removed => !matches!(self, Running),
        }
    }

    /// What a task instance becomes when a user marks its run `run`, as Airflow's
    /// `set_dag_run_state_to_success` and `set_dag_run_state_to_failed` do: marked success,
    /// every task instance that is not success becomes success (a removed one stays); marked
    /// failed (or cancelled), a running one fails and the other unfinished ones are skipped.
    /// `None` when it stays as it is.
    pub fn when_run_marked(self, run: DagRunState) -> Option<TaskState> {
        use TaskState::*;
        let to = match (run, self) {
            (DagRunState::Success, Success | Removed) => return Option::None,
            (DagRunState::Success, _) => Success,
            (DagRunState::Failed, Running) => Failed,
            (DagRunState::Failed, state) if state.is_finished() => return Option::None,
            (DagRunState::Failed, _) => Skipped,
            (DagRunState::Queued | DagRunState::Running, _) => return Option::None,
        };
        self.can_move_to(to).then_some(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_their_type_and_their_logical_date() {
        let at = DateTime::parse_from_rfc3339("2024-03-01T06:00:00+01:00")
            .unwrap()
            .to_utc();
        assert_eq!(
            RunType::Scheduled.run_id(at),
            "scheduled__2024-03-01T05:00:00+00:00"
        );
        assert_eq!(
            RunType::Manual.run_id(at),
            "manual__2024-03-01T05:00:00+00:00"
        );
        assert_eq!(
            RunType::Backfill.run_id(at),
            "backfill__2024-03-01T05:00:00+00:00"
        );
        assert_eq!(test_run_id(at), "test__2024-03-01T05:00:00+00:00");
    }

    #[test]
    fn marking_a_run_moves_its_task_instances_as_airflow_does() {
        use TaskState::*;
        let all = [
            None,
            Scheduled,
            Queued,
            Running,
            Success,
            Failed,
            Skipped,
            UpstreamFailed,
            UpForRetry,
            Removed,
        ];
        let after = |run| -> Vec<Option<TaskState>> {
            all.iter().map(|ti| ti.when_run_marked(run)).collect()
        };
        assert_eq!(
            after(DagRunState::Success),
            [
                Some(Success),
                Some(Success),
                Some(Success),
                Some(Success),
                Option::None,
                Some(Success),
                Some(Success),
                Some(Success),
                Some(Success),
                Option::None,
            ]
        );
        assert_eq!(
            after(DagRunState::Failed),
            [
                Some(Skipped),
                Some(Skipped),
                Some(Skipped),
                Some(Failed),
                Option::None,
                Option::None,
                Option::None,
                Option::None,
                Some(Skipped),
                Option::None,
            ]
        );
        assert!(after(DagRunState::Queued).iter().all(Option::is_none));
    }

    #[test]
    fn names_round_trip() {
        for state in TaskState::ALL {
            assert_eq!(state.as_str().parse::<TaskState>().unwrap(), *state);
        }
        for rule in TriggerRule::ALL {
            assert_eq!(rule.as_str().parse::<TriggerRule>().unwrap(), *rule);
        }
        assert_eq!(
            "all_sucess".parse::<TriggerRule>().unwrap_err().to_string(),
            "unknown trigger rule \"all_sucess\""
        );
    }

    #[test]
    fn serde_uses_the_names() {
        assert_eq!(
            serde_json::to_string(&TaskState::UpstreamFailed).unwrap(),
            "\"upstream_failed\""
        );
    }

    #[test]
    fn task_lifecycle_moves_are_legal() {
        use TaskState::*;
        for (from, to) in [
            (None, Scheduled),
            (Scheduled, Queued),
            (Queued, Running),
            (Running, Success),
            (Running, UpForRetry),
            (UpForRetry, Scheduled),
            (None, UpstreamFailed),
            (Running, Skipped),
            (Success, None),
        ] {
            assert!(from.can_move_to(to), "{from} -> {to} should be legal");
        }
    }

    #[test]
    fn task_shortcuts_are_illegal() {
        use TaskState::*;
        for (from, to) in [
            (None, Running),
            (Scheduled, Running),
            (Success, Running),
            (Success, Success),
            (Failed, Queued),
            (Running, Removed),
        ] {
            assert!(!from.can_move_to(to), "{from} -> {to} should be illegal");
        }
    }

    #[test]
    fn backfill_moves() {
        use BackfillState::*;
        assert!(Running.can_move_to(Paused));
        assert!(Paused.can_move_to(Running));
        assert!(Paused.can_move_to(Cancelled));
        assert!(Running.can_move_to(Completed));
        assert!(!Paused.can_move_to(Completed));
        assert!(!Completed.can_move_to(Running));
        assert!(!Cancelled.can_move_to(Running));
        assert!(!Running.can_move_to(Running));
        assert_eq!("paused".parse::<BackfillState>().unwrap(), Paused);
    }

    #[test]
    fn dag_run_moves() {
        use DagRunState::*;
        assert!(Queued.can_move_to(Running));
        assert!(Running.can_move_to(Success));
        assert!(Failed.can_move_to(Queued));
        assert!(!Success.can_move_to(Running));
        assert!(!Running.can_move_to(Running));
    }
}
