//! A worker's name: one live process per name. Two processes under one name would each take the
//! other's tries for lost ones and end them, so a process takes a name only when no live
//! process holds it, and holds it until another takes it over (see [`holder`]).
//!
//! A name is taken with a compare-and-set on the row as read ([`Store::claim_worker_name`]): of
//! two processes starting at once, one gets it and the other reads again. Without `--name`, a
//! worker takes the first free of `<host>:1`, `<host>:2`, ...: several workers on one host need
//! no flags, and a worker restarted after a crash finds its previous name (and the tries its
//! previous life left) again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use updraft_core::state::WorkerState;
use updraft_metadata::{Error, Store, Worker as WorkerRow};

/// A name whose holder has not heartbeaten for this long is free: the holder is gone, or cut
/// off from the database for as long as the scheduler's default zombie threshold (its tries
/// are zombies by then). A holder that comes back finds its name taken and stops.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// On the holder's own host, a name whose process is gone is free once the holder missed this
/// many seconds of heartbeats (one a second): a worker restarted after a crash need not wait
/// for [`STALE_AFTER`]. A live holder in another pid namespace under the same host name (a
/// container) heartbeats more often than that.
const GONE_AFTER: Duration = Duration::from_secs(3);

/// How far the first free numbered name is searched for.
const MOST_NUMBERED: u32 = 1000;

/// Which name a worker takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// This one; refused while a live process holds it.
    Given(String),
    /// The first free of `<prefix>:1`, `<prefix>:2`, ...
    FirstFree(String),
    /// A `standalone`'s: it holds the lock of its home, so a holder on this host whose process
    /// is gone was the previous life of this one, and its name is free at once.
    OfHome(String),
}

/// This process, as it takes a name.
pub struct Claimant<'a> {
    pub hostname: &'a str,
    pub pid: u32,
    pub queues: &'a [String],
    pub concurrency: i32,
}

/// Whether a process may take a name (see [`holder`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Never taken, stopped, stale, or its process is gone from this host.
    Free,
    /// Its process is gone from this host but heartbeated a moment ago: free after this wait.
    Soon(Duration),
    /// A live process holds it; the message names it.
    Held(String),
}

/// Whether a process on `hostname` may take the name `existing` holds, at `now`.
///
/// `gone_after` is how long a holder on this host whose process is gone must have been silent
/// ([`GONE_AFTER`], or zero for [`Name::OfHome`]).
pub fn holder(
    existing: &WorkerRow,
    hostname: &str,
    now: DateTime<Utc>,
    gone_after: Duration,
    alive: impl Fn(i32) -> bool,
) -> Verdict {
    let silent = (now - existing.heartbeat_at).to_std().unwrap_or_default();
    if existing.state == WorkerState::Stopped || silent >= STALE_AFTER {
        return Verdict::Free;
    }
    let gone_here = existing.hostname == hostname && existing.pid.is_some_and(|pid| !alive(pid));
    if gone_here {
        return match gone_after.checked_sub(silent) {
            Some(wait) if !wait.is_zero() => Verdict::Soon(wait),
            _ => Verdict::Free,
        };
    }
    let process = match existing.pid {
        Some(pid) => format!("process {pid} on host {}", existing.hostname),
        None => format!("a process on host {}", existing.hostname),
    };
    Verdict::Held(format!(
        "the worker name '{}' is held by {process} (its last heartbeat is {:.1} s old)",
        existing.id,
        silent.as_secs_f64()
    ))
}

/// Whether a process of this id runs on this host (one we may not signal runs too).
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 sends nothing; it only checks the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Takes `name` for this process; returns the worker's id and the instant it took it (its
/// row's `started_at`, which its heartbeats check). A given name held by a live process is
/// refused with [`Error::Conflict`], naming that process.
pub async fn take(
    store: &Store,
    name: &Name,
    me: &Claimant<'_>,
) -> Result<(String, DateTime<Utc>), Error> {
    let (prefix, numbered, gone_after) = match name {
        Name::Given(id) => (id.as_str(), false, GONE_AFTER),
        Name::FirstFree(prefix) => (prefix.as_str(), true, GONE_AFTER),
        Name::OfHome(id) => (id.as_str(), false, Duration::ZERO),
    };
    let mut number = 1;
    loop {
        let id = match numbered {
            true => format!("{prefix}:{number}"),
            false => prefix.to_owned(),
        };
        let now = Utc::now();
        let existing = store.get_worker(&id).await?;
        let verdict = match &existing {
            Some(row) => holder(row, me.hostname, now, gone_after, process_alive),
            None => Verdict::Free,
        };
        match verdict {
            Verdict::Free => {}
            Verdict::Soon(wait) => {
                tokio::time::sleep(wait).await;
                continue;
            }
            Verdict::Held(_) if numbered && number < MOST_NUMBERED => {
                number += 1;
                continue;
            }
            Verdict::Held(reason) => {
                let advice = match name {
                    Name::FirstFree(_) => {
                        format!("{MOST_NUMBERED} workers run on this host already")
                    }
                    Name::Given(_) => {
                        "give this worker another name (--name), or stop that one".to_owned()
                    }
                    Name::OfHome(_) => "another standalone on this host uses the same database: \
                                        stop it, or give this one a database of its own"
                        .to_owned(),
                };
                return Err(Error::Conflict(format!("{reason}: {advice}")));
            }
        }
        let row = WorkerRow {
            id: id.clone(),
            hostname: me.hostname.to_owned(),
            queues: me.queues.to_vec(),
            concurrency: me.concurrency,
            state: WorkerState::Running,
            started_at: now,
            heartbeat_at: now,
            pid: i32::try_from(me.pid).ok(),
        };
        // Lost to another process meanwhile: read the same name again.
        if store.claim_worker_name(&row, existing.as_ref()).await? {
            if let Some(before) = existing.filter(|row| row.state != WorkerState::Stopped) {
                tracing::info!(
                    "took over the worker name '{id}' from {} (last heartbeat at {})",
                    before.hostname,
                    before.heartbeat_at.to_rfc3339()
                );
            }
            return Ok((id, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instant the names are judged at.
    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn held(hostname: &str, state: WorkerState, silent_ms: i64, pid: Option<i32>) -> WorkerRow {
        let heartbeat_at = now() - chrono::Duration::milliseconds(silent_ms);
        WorkerRow {
            id: "w1".to_owned(),
            hostname: hostname.to_owned(),
            queues: vec!["default".to_owned()],
            concurrency: 4,
            state,
            started_at: heartbeat_at,
            heartbeat_at,
            pid,
        }
    }

    #[test]
    fn a_live_holder_keeps_its_name_on_any_host_and_is_named() {
        let now = now();
        let alive = |_| true;
        let held_by = |row: &WorkerRow, host: &str, alive: fn(i32) -> bool| match holder(
            row, host, now, GONE_AFTER, alive,
        ) {
            Verdict::Held(reason) => reason,
            other => panic!("expected held, got {other:?}"),
        };
        let reason = held_by(&held("a", WorkerState::Running, 500, Some(42)), "b", alive);
        assert!(reason.contains("process 42 on host a"), "{reason}");
        held_by(&held("a", WorkerState::Running, 500, Some(42)), "a", alive);
        held_by(
            &held("a", WorkerState::Stopping, 20_000, Some(42)),
            "a",
            alive,
        );
        // Gone from another host is not known here, nor without a pid.
        held_by(
            &held("a", WorkerState::Running, 5_000, Some(42)),
            "b",
            |_| false,
        );
        held_by(&held("a", WorkerState::Running, 5_000, None), "a", |_| {
            false
        });
    }

    #[test]
    fn a_stopped_a_stale_or_a_dead_holder_on_this_host_frees_the_name() {
        let now = now();
        let verdict = |row: &WorkerRow, host: &str, alive: fn(i32) -> bool| {
            holder(row, host, now, GONE_AFTER, alive)
        };
        let alive: fn(i32) -> bool = |_| true;
        let dead: fn(i32) -> bool = |_| false;
        assert_eq!(
            verdict(&held("a", WorkerState::Stopped, 100, Some(42)), "b", alive),
            Verdict::Free
        );
        assert_eq!(
            verdict(
                &held("a", WorkerState::Running, 31_000, Some(42)),
                "b",
                alive
            ),
            Verdict::Free
        );
        assert_eq!(
            verdict(&held("a", WorkerState::Running, 5_000, Some(42)), "a", dead),
            Verdict::Free
        );
        // Its process gone a moment after a heartbeat (a restart right after a crash): the
        // name is free once the heartbeats a live namesake in another pid namespace (a
        // container under the same host name) would have made are missing.
        match verdict(&held("a", WorkerState::Running, 1_000, Some(42)), "a", dead) {
            Verdict::Soon(wait) => assert!(wait == Duration::from_secs(2), "{wait:?}"),
            other => panic!("expected soon, got {other:?}"),
        }
        // A standalone holds its home's lock: its previous life's name is free at once.
        let previous = held("a", WorkerState::Running, 1_000, Some(42));
        assert_eq!(
            holder(&previous, "a", now, Duration::ZERO, dead),
            Verdict::Free
        );
    }

    #[test]
    fn this_process_is_alive_and_an_unused_pid_is_not() {
        assert!(process_alive(std::process::id() as i32));
        assert!(!process_alive(i32::MAX));
    }
}
