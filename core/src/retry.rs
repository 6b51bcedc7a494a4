//! When a failed try is retried (DESIGN §5).

use std::time::Duration;

use crate::dag::Task;
use chrono::{DateTime, Utc};

/// What happens after a try fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Tries remain: `up_for_retry` until this moment.
    RetryAt(DateTime<Utc>),
    /// The last try failed: `failed`.
    Fail,
}

/// Decides after try `try_number` of `task` failed at `failed_at`. `max_tries` is the try
/// number after which no retry is left (Airflow's `max_tries`): `retries` at first, and
/// `try_number + retries` after the task instance is cleared, which gives it a fresh budget.
pub fn after_failure(
    task: &Task,
    try_number: u32,
    max_tries: u32,
    failed_at: DateTime<Utc>,
) -> AfterFailure {
    if try_number > max_tries {
        return AfterFailure::Fail;
    }
    // The retry about to happen, counted from the last clear: 1 for the first.
    let retry = task.retries.saturating_sub(max_tries - try_number).max(1);
    let delay = retry_delay(task, retry);
    let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    AfterFailure::RetryAt(
        failed_at
            .checked_add_signed(delay)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

/// The wait before retry `n` (1 for the first retry): `retry_delay`, or with exponential
/// backoff `retry_delay * 2^(n-1)`, never more than `max_retry_delay`.
pub fn retry_delay(task: &Task, n: u32) -> Duration {
    let delay = if task.retry_exponential_backoff {
        let factor = 2u32.saturating_pow(n.saturating_sub(1));
        task.retry_delay.saturating_mul(factor)
    } else {
        task.retry_delay
    };
    match task.max_retry_delay {
        Some(cap) => delay.min(cap),
        None => delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::{LoadOptions, decode};

    fn task(keys: &str) -> Task {
        let text = format!("tasks:\n  t: {{run: x, {keys}}}\n");
        let dag = decode("t.yaml", &text, &LoadOptions::default()).unwrap();
        dag.task("t").unwrap().clone()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
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
