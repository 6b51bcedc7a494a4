//! When a failed try is retried (DESIGN §5).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::dag::model::{humantime_opt, humantime_serde_compat};
use crate::dag::{Task, defaults};
use crate::state::TaskState;

/// How a task's failed tries are retried: the keys of its definition the decision reads,
/// carried in each try's plan so that a worker decides without the DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Tries after the first one.
    pub retries: u32,
    #[serde(with = "humantime_serde_compat")]
    pub retry_delay: Duration,
    pub retry_exponential_backoff: bool,
    #[serde(with = "humantime_opt")]
    pub max_retry_delay: Option<Duration>,
    /// Wait a pseudo-random part of each delay (see [`full_jitter`]).
    #[serde(default)]
    pub retry_jitter: bool,
}

impl Default for RetryPolicy {
    /// A DAG file's defaults: no retry, then `retry_delay` 5 minutes.
    fn default() -> RetryPolicy {
        RetryPolicy {
            retries: 0,
            retry_delay: defaults::RETRY_DELAY,
            retry_exponential_backoff: false,
            max_retry_delay: None,
            retry_jitter: false,
        }
    }
}

impl RetryPolicy {
    pub fn of(task: &Task) -> RetryPolicy {
        RetryPolicy {
            retries: task.retries,
            retry_delay: task.retry_delay,
            retry_exponential_backoff: task.retry_exponential_backoff,
            max_retry_delay: task.max_retry_delay,
            retry_jitter: task.retry_jitter,
        }
    }
}

/// What happens after a try fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Tries remain: `up_for_retry` until this moment.
    RetryAt(DateTime<Utc>),
    /// The last try failed: `failed`.
    Fail,
}

/// Decides after try `try_number` failed at `failed_at`. `max_tries` is the try number after
/// which no retry is left (Airflow's `max_tries`): `retries` at first, and `try_number +
/// retries` after the task instance is cleared, which gives it a fresh budget.
pub fn after_failure(
    policy: &RetryPolicy,
    try_number: u32,
    max_tries: u32,
    failed_at: DateTime<Utc>,
) -> AfterFailure {
    if try_number > max_tries {
        return AfterFailure::Fail;
    }
    // The retry about to happen, counted from the last clear: 1 for the first.
    let retry = policy.retries.saturating_sub(max_tries - try_number).max(1);
    let delay = match policy.retry_jitter {
        true => full_jitter(retry_delay(policy, retry), failed_at),
        false => retry_delay(policy, retry),
    };
    let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    AfterFailure::RetryAt(
        failed_at
            .checked_add_signed(delay)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

/// The state a failed try leaves its task instance in, and when it is retried: the one
/// decision of a worker whose try failed and of a scheduler that reaps a zombie's try.
pub fn after_failed_try(
    policy: &RetryPolicy,
    try_number: i32,
    max_tries: i32,
    now: DateTime<Utc>,
) -> (TaskState, Option<DateTime<Utc>>) {
    match after_failure(
        policy,
        try_number.max(0) as u32,
        max_tries.max(0) as u32,
        now,
    ) {
        AfterFailure::RetryAt(at) => (TaskState::UpForRetry, Some(at)),
        AfterFailure::Fail => (TaskState::Failed, None),
    }
}

/// The wait before retry `n` (1 for the first retry): `retry_delay`, or with exponential
/// backoff `retry_delay * 2^(n-1)`, never more than `max_retry_delay`.
pub fn retry_delay(policy: &RetryPolicy, n: u32) -> Duration {
    let delay = if policy.retry_exponential_backoff {
        let factor = 2u32.saturating_pow(n.saturating_sub(1));
        policy.retry_delay.saturating_mul(factor)
    } else {
        policy.retry_delay
    };
    match policy.max_retry_delay {
        Some(cap) => delay.min(cap),
        None => delay,
    }
}

/// Celery's full jitter: a wait from zero to `delay` (in whole milliseconds), drawn from the
/// moment the try failed, so that the tries that failed together (an outage) do not all come
/// back at once. Pure: the same failure gives the same wait.
pub fn full_jitter(delay: Duration, failed_at: DateTime<Utc>) -> Duration {
    let most = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX - 1);
    let moment = failed_at
        .timestamp_nanos_opt()
        .unwrap_or_else(|| failed_at.timestamp_micros());
    // The high bits: FNV's low bits follow its input's low bits too closely.
    let draw = crate::hash::fnv1a(&moment.to_le_bytes()) >> 16;
    Duration::from_millis(draw % (most + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::{LoadOptions, decode};

    fn task(keys: &str) -> RetryPolicy {
        let text = format!("tasks:\n  t: {{run: x, {keys}}}\n");
        let dag = decode("t.yaml", &text, &LoadOptions::default()).unwrap();
        RetryPolicy::of(dag.task("t").unwrap())
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn full_jitter_waits_part_of_the_backoff_the_same_for_the_same_failure() {
        let policy = task(
            "retries: 10, retry_delay: 10s, retry_exponential_backoff: true, retry_jitter: true",
        );
        let failed = at("2024-01-01T00:00:00Z");
        let mut waits = std::collections::BTreeSet::new();
        for nanos in 0..200 {
            let failed = failed + chrono::Duration::nanoseconds(nanos * 7919);
            // The third retry: 40 s of backoff, of which it waits a part.
            let AfterFailure::RetryAt(at) = after_failure(&policy, 3, 10, failed) else {
                panic!("tries remain");
            };
            let wait = at - failed;
            assert!(wait >= chrono::Duration::zero() && wait <= chrono::Duration::seconds(40));
            assert_eq!(
                after_failure(&policy, 3, 10, failed),
                AfterFailure::RetryAt(at)
            );
            waits.insert(wait.num_seconds());
        }
        assert!(waits.len() > 30, "spread over the 40 s: {waits:?}");
    }

    #[test]
    fn fixed_delay() {
        let task = task("retries: 2, retry_delay: 30s");
        let failed = at("2024-01-01T00:00:00Z");
        assert_eq!(
            after_failure(&task, 1, 2, failed),
            AfterFailure::RetryAt(at("2024-01-01T00:00:30Z"))
        );
        assert_eq!(
            after_failure(&task, 2, 2, failed),
            AfterFailure::RetryAt(at("2024-01-01T00:00:30Z"))
        );
        assert_eq!(after_failure(&task, 3, 2, failed), AfterFailure::Fail);
    }

    #[test]
    fn a_cleared_task_gets_a_fresh_budget_and_backoff() {
        let task = task("retries: 2, retry_delay: 10s, retry_exponential_backoff: true");
        let failed = at("2024-01-01T00:00:00Z");
        // Three tries failed, then a clear: max_tries = 3 + 2.
        assert_eq!(
            after_failure(&task, 4, 5, failed),
            AfterFailure::RetryAt(at("2024-01-01T00:00:10Z"))
        );
        assert_eq!(
            after_failure(&task, 5, 5, failed),
            AfterFailure::RetryAt(at("2024-01-01T00:00:20Z"))
        );
        assert_eq!(after_failure(&task, 6, 5, failed), AfterFailure::Fail);
    }

    #[test]
    fn a_failed_try_is_up_for_retry_while_tries_remain() {
        let policy = task("retries: 1, retry_delay: 1m");
        let now = at("2024-01-01T00:00:00Z");
        assert_eq!(
            after_failed_try(&policy, 1, 1, now),
            (TaskState::UpForRetry, Some(at("2024-01-01T00:01:00Z")))
        );
        assert_eq!(
            after_failed_try(&policy, 2, 1, now),
            (TaskState::Failed, None)
        );
    }

    #[test]
    fn a_policy_survives_the_stored_json() {
        let policy = task("retries: 3, retry_delay: 90s, max_retry_delay: 1h");
        let json = serde_json::to_value(policy).unwrap();
        assert_eq!(json["retry_delay"], "1m 30s");
        assert_eq!(serde_json::from_value::<RetryPolicy>(json).unwrap(), policy);
    }

    #[test]
    fn no_retries_fails_at_once() {
        assert_eq!(
            after_failure(&task("retries: 0"), 1, 0, at("2024-01-01T00:00:00Z")),
            AfterFailure::Fail
        );
    }

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap() {
        let task = task(
            "retries: 10, retry_delay: 10s, retry_exponential_backoff: true, max_retry_delay: 1m",
        );
        let delays: Vec<u64> = (1..=5).map(|n| retry_delay(&task, n).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 60, 60]);
    }

    #[test]
    fn huge_backoff_saturates_instead_of_overflowing() {
        let task = task("retries: 100, retry_delay: 1h, retry_exponential_backoff: true");
        assert!(retry_delay(&task, 90) >= Duration::from_secs(3600));
        assert!(matches!(
            after_failure(&task, 90, 100, at("2024-01-01T00:00:00Z")),
            AfterFailure::RetryAt(_)
        ));
    }
}
