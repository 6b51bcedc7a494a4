//! `/metrics`: Prometheus's text exposition format (0.0.4), read from the metadata database at
//! each scrape, so any web server of an installation answers for all of it.
//!
//! Like every page it needs a login (an API token as `Authorization: Bearer` is what a
//! scraper sends; any role). Every number comes from a bounded query (`updraft_metadata`
//! `metrics`): counts by state through the state indexes, the queue through the index of
//! queued task instances, durations from the tries of the newest task instances only.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use updraft_core::state::{DagRunState, TaskState};
use updraft_metadata::{SchedulerLoop, TryDuration};

use crate::AppState;
use crate::error::AppError;

/// The task durations cover the tries of this many newest task instances.
pub const RECENT_TASK_INSTANCES: i64 = 1000;

/// Upper bounds (seconds) of the task duration histogram's buckets; `+Inf` follows.
pub const DURATION_BUCKETS: [f64; 11] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

/// Everything a scrape shows, as read.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub runs: Vec<(DagRunState, i64)>,
    pub task_instances: Vec<(TaskState, i64)>,
    pub queues: Vec<(String, i64)>,
    pub schedulers: Vec<SchedulerLoop>,
    pub durations: Vec<TryDuration>,
    pub now: DateTime<Utc>,
}

pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let store = &state.store;
    let snapshot = Snapshot {
        runs: store.count_runs_by_state().await?,
        task_instances: store.count_task_instances_by_state().await?,
        queues: store.queue_depths().await?,
        schedulers: store.scheduler_loops().await?,
        durations: store.recent_try_durations(RECENT_TASK_INSTANCES).await?,
        now: Utc::now(),
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&snapshot),
    ))
}

/// A label value with `\`, `"` and newlines escaped, as the format asks.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The exposition text of `snapshot`. Every state has a line (0 when nothing is in it), so a
/// series does not vanish when its count drops to 0.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "updraft_dag_runs",
        "gauge",
        "DAG runs in each state.",
    );
    for &state in DagRunState::ALL {
        let count = snapshot
            .runs
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "updraft_dag_runs{{state=\"{state}\"}} {count}");
    }
    header(
        &mut out,
        "updraft_task_instances",
        "gauge",
        "Task instances in each state.",
    );
    for &state in TaskState::ALL {
        let count = snapshot
            .task_instances
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "updraft_task_instances{{state=\"{state}\"}} {count}");
    }
    header(
        &mut out,
        "updraft_queue_depth",
        "gauge",
        "Queued task instances waiting for a worker, by queue (queues with none are left out).",
    );
    for (queue, count) in &snapshot.queues {
        let _ = writeln!(
            out,
            "updraft_queue_depth{{queue=\"{}\"}} {count}",
            label(queue)
        );
    }
    header(
        &mut out,
        "updraft_scheduler_loop_duration_seconds",
        "gauge",
        "How long each scheduler's latest loop took, as of its last heartbeat.",
    );
    for scheduler in &snapshot.schedulers {
        if let Some(took) = scheduler.last_loop {
            let _ = writeln!(
                out,
                "updraft_scheduler_loop_duration_seconds{{scheduler=\"{}\",hostname=\"{}\"}} {}",
                label(&scheduler.id),
                label(&scheduler.hostname),
                took.as_secs_f64()
            );
        }
    }
    header(
        &mut out,
        "updraft_scheduler_heartbeat_age_seconds",
        "gauge",
        "Seconds since each scheduler's last heartbeat (schedulers heartbeat every 2 s).",
    );
    for scheduler in &snapshot.schedulers {
        let age = (snapshot.now - scheduler.heartbeat_at)
            .num_milliseconds()
            .max(0) as f64
            / 1000.0;
        let _ = writeln!(
            out,
            "updraft_scheduler_heartbeat_age_seconds{{scheduler=\"{}\",hostname=\"{}\"}} {age}",
            label(&scheduler.id),
            label(&scheduler.hostname)
        );
    }
    header(
        &mut out,
        "updraft_task_duration_seconds",
        "histogram",
        &format!(
            "Durations of the finished tries of the {RECENT_TASK_INSTANCES} newest task \
             instances, by the state the try ended in."
        ),
    );
    for &state in TaskState::ALL {
        let seconds: Vec<f64> = snapshot
            .durations
            .iter()
            .filter(|d| d.state == state)
            .map(|d| d.seconds)
            .collect();
        if seconds.is_empty() {
            continue;
        }
        for bound in DURATION_BUCKETS {
            let count = seconds.iter().filter(|s| **s <= bound).count();
            let _ = writeln!(
                out,
                "updraft_task_duration_seconds_bucket{{state=\"{state}\",le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "updraft_task_duration_seconds_bucket{{state=\"{state}\",le=\"+Inf\"}} {}",
            seconds.len()
        );
        let _ = writeln!(
            out,
            "updraft_task_duration_seconds_sum{{state=\"{state}\"}} {}",
            seconds.iter().sum::<f64>()
        );
        let _ = writeln!(
            out,
            "updraft_task_duration_seconds_count{{state=\"{state}\"}} {}",
            seconds.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_snapshot_renders_in_the_exposition_format() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 10).unwrap();
        let snapshot = Snapshot {
            runs: vec![(DagRunState::Running, 2)],
            task_instances: vec![(TaskState::Queued, 3)],
            queues: vec![("a\"b".to_owned(), 3)],
            schedulers: vec![SchedulerLoop {
                id: "host:1:2".to_owned(),
                hostname: "host".to_owned(),
                heartbeat_at: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 8).unwrap(),
                last_loop: Some(Duration::from_millis(1500)),
            }],
            durations: vec![
                TryDuration {
                    state: TaskState::Success,
                    seconds: 0.3,
                },
                TryDuration {
                    state: TaskState::Success,
                    seconds: 7.0,
                },
            ],
            now,
        };
        let text = render(&snapshot);
        for line in [
            "updraft_dag_runs{state=\"running\"} 2",
            "updraft_dag_runs{state=\"failed\"} 0",
            "updraft_task_instances{state=\"queued\"} 3",
            "updraft_queue_depth{queue=\"a\\\"b\"} 3",
            "updraft_scheduler_loop_duration_seconds{scheduler=\"host:1:2\",hostname=\"host\"} 1.5",
            "updraft_scheduler_heartbeat_age_seconds{scheduler=\"host:1:2\",hostname=\"host\"} 2",
            "updraft_task_duration_seconds_bucket{state=\"success\",le=\"0.1\"} 0",
            "updraft_task_duration_seconds_bucket{state=\"success\",le=\"0.5\"} 1",
            "updraft_task_duration_seconds_bucket{state=\"success\",le=\"10\"} 2",
            "updraft_task_duration_seconds_bucket{state=\"success\",le=\"+Inf\"} 2",
            "updraft_task_duration_seconds_sum{state=\"success\"} 7.3",
            "updraft_task_duration_seconds_count{state=\"success\"} 2",
            "# TYPE updraft_task_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("state=\"failed\",le="), "{text}");
    }
}
