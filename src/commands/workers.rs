//! `updraft workers list`: the registered workers, their queues, load and heartbeat age, as
//! `updraft worker` processes record them in the database.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_metadata::{WorkerLoad, WorkerStatus};

use crate::cli::WorkersCommand;
use crate::config::Config;
use crate::term::{print_table, rfc3339};
use crate::wiring::{open_store, runtime};

/// Runs `updraft workers ...` and returns the exit code.
pub fn run(config: &Config, command: WorkersCommand) -> Result<i32> {
    match command {
        WorkersCommand::List { json } => list(config, json),
    }
}

fn list(config: &Config, json: bool) -> Result<i32> {
    let loads = runtime()?.block_on(async {
        let store = open_store(config).await?;
        let loads = store.list_worker_loads().await;
        store.close().await;
        anyhow::Ok(loads?)
    })?;
    let now = Utc::now();
    if json {
        let listed: Vec<Listed> = loads.iter().map(|load| Listed::of(load, now)).collect();
        println!("{}", serde_json::to_string_pretty(&listed)?);
    } else if loads.is_empty() {
        println!(
            "no worker has registered; start one with `updraft worker --database-url \
             postgres://...` (`updraft standalone` runs its own)"
        );
    } else {
        print_table(
            [
                "NAME",
                "HOST",
                "QUEUES",
                "LOAD",
                "STATE",
                "HEARTBEAT",
                "STARTED",
            ],
            &rows(&loads, now),
        );
    }
    Ok(0)
}

/// A worker as `--json` prints it.
#[derive(Debug, Serialize)]
struct Listed<'a> {
    id: &'a str,
    hostname: &'a str,
    queues: &'a [String],
    concurrency: i32,
    /// Tries running under it now.
    running: i64,
    /// `running`, `stopping`, `stopped`, or `lost` (see `WorkerStatus`).
    state: WorkerStatus,
    heartbeat_at: DateTime<Utc>,
    /// Seconds since its last heartbeat.
    heartbeat_age: f64,
    started_at: DateTime<Utc>,
}

impl<'a> Listed<'a> {
    fn of(load: &'a WorkerLoad, now: DateTime<Utc>) -> Listed<'a> {
        let worker = &load.worker;
        Listed {
            id: &worker.id,
            hostname: &worker.hostname,
            queues: &worker.queues,
            concurrency: worker.concurrency,
            running: load.running,
            state: worker.status(now),
            heartbeat_at: worker.heartbeat_at,
            heartbeat_age: age(worker.heartbeat_at, now),
            started_at: worker.started_at,
        }
    }
}

/// The table's rows: `3/8` running of concurrency, heartbeat age as `0.4s ago`.
fn rows(loads: &[WorkerLoad], now: DateTime<Utc>) -> Vec<[String; 7]> {
    loads
        .iter()
        .map(|load| {
            let worker = &load.worker;
            [
                worker.id.clone(),
                worker.hostname.clone(),
                worker.queues.join(","),
                format!("{}/{}", load.running, worker.concurrency),
                worker.status(now).to_string(),
                human_age(age(worker.heartbeat_at, now)),
                rfc3339(worker.started_at),
            ]
        })
        .collect()
}

/// Seconds from `at` to `now`, to the millisecond; 0 for a clock that went backwards.
fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - at).num_milliseconds().max(0) as f64 / 1000.0
}

/// `0.4s ago` under a minute, then `3m ago`, `2h ago`, `5d ago`.
fn human_age(seconds: f64) -> String {
    let whole = seconds as u64;
    match whole {
        0..60 => format!("{seconds:.1}s ago"),
        60..3600 => format!("{}m ago", whole / 60),
        3600..86400 => format!("{}h ago", whole / 3600),
        _ => format!("{}d ago", whole / 86400),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use updraft_core::state::WorkerState;
    use updraft_metadata::Worker;

    use super::*;

    fn load(id: &str, state: WorkerState, heartbeat_at: DateTime<Utc>, running: i64) -> WorkerLoad {
        WorkerLoad {
            worker: Worker {
                id: id.to_owned(),
                hostname: "host-a".to_owned(),
                queues: vec!["default".to_owned(), "gpu".to_owned()],
                concurrency: 8,
                state,
                started_at: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
                heartbeat_at,
                pid: Some(4242),
            },
            running,
        }
    }

    #[test]
    fn rows_show_load_out_of_concurrency_state_and_heartbeat_age() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 1, 0, 0).unwrap();
        let fresh = now - chrono::Duration::milliseconds(400);
        let old = now - chrono::Duration::minutes(3);
        let rows = rows(
            &[
                load("w1", WorkerState::Running, fresh, 3),
                load("w2", WorkerState::Running, old, 1),
                load("w3", WorkerState::Stopped, old, 0),
            ],
            now,
        );
        assert_eq!(
            rows[0],
            [
                "w1",
                "host-a",
                "default,gpu",
                "3/8",
                "running",
                "0.4s ago",
                "2024-01-01T00:00:00Z"
            ]
        );
        assert_eq!(
            (rows[1][4].as_str(), rows[1][5].as_str()),
            ("lost", "3m ago")
        );
        assert_eq!(rows[2][4], "stopped");
    }

    #[test]
    fn heartbeat_ages_read_in_the_largest_whole_unit_past_a_minute() {
        assert_eq!(human_age(0.0), "0.0s ago");
        assert_eq!(human_age(59.94), "59.9s ago");
        assert_eq!(human_age(61.0), "1m ago");
        assert_eq!(human_age(7200.0), "2h ago");
        assert_eq!(human_age(3.0 * 86400.0), "3d ago");
    }

    #[test]
    fn json_names_the_derived_state() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 1, 0, 0).unwrap();
        let lost = load(
            "w2",
            WorkerState::Running,
            now - chrono::Duration::minutes(3),
            1,
        );
        let json = serde_json::to_value(Listed::of(&lost, now)).unwrap();
        assert_eq!(json["state"], "lost");
        assert_eq!(json["heartbeat_age"], 180.0);
        assert_eq!(json["running"], 1);
        assert_eq!(json["queues"], serde_json::json!(["default", "gpu"]));
    }
}
