//! Tables `notification` and `notifier_cursor`: what notifiers are to be told, read from the
//! event log (whose rows are written with the changes they record), and how far it was read.
//!
//! A notification is made once per (event, notifier) whoever reads the event first; a sender
//! takes it by compare-and-set (`pending` -> `sending`), so one attempt is made at a time, and
//! records how it went: `sent`, `pending` again for a later attempt, or `failed` for good.

use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_core::ids::DagRunId;
use updraft_core::notify::NotifyEvent;

use crate::db::{Row, query, query_split};
use crate::{Error, EventLog, Store};

/// A notification to make: the input of [`Store::add_notifications`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub event_id: i64,
    pub dag_run_id: DagRunId,
    /// Which notifier (`dag.0`, `task.load.1`).
    pub target: String,
    pub event: NotifyEvent,
    /// The channel as the DAG file gave it.
    pub channel: serde_json::Value,
    /// What to tell.
    pub notice: serde_json::Value,
}

/// A row of `notification`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub id: i64,
    pub event_id: i64,
    pub dag_run_id: DagRunId,
    pub target: String,
    pub event: NotifyEvent,
    pub channel: serde_json::Value,
    pub notice: serde_json::Value,
    /// `pending`, `sending`, `sent` or `failed`.
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Notification {
    fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(Notification {
            id: row.get("id")?,
            event_id: row.get("event_id")?,
            dag_run_id: row.row_id("dag_run_id")?,
            target: row.get("target")?,
            event: row.name("event")?,
            channel: row.get("channel")?,
            notice: row.get("notice")?,
            state: row.get("state")?,
            attempts: row.get("attempts")?,
            next_attempt_at: row.get("next_attempt_at")?,
            sent_at: row.get("sent_at")?,
            last_error: row.get("last_error")?,
            created_at: row.get("created_at")?,
        })
    }
}

/// How an attempt to send went: the input of [`Store::end_notification_attempt`].
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Sent,
    /// Failed; tried again at the instant given, or never again (`None`).
    Failed {
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
}

impl Store {
    /// How far the event log was read for notifications.
    pub async fn notifier_cursor(&self) -> Result<i64, Error> {
        self.fetch_one(
            query(
                "read the notifier's cursor",
                "SELECT last_event_id FROM notifier_cursor WHERE id = 1",
            ),
            |row| row.get::<i64>("last_event_id"),
        )
        .await
    }

    /// Moves the cursor forward to `last_event_id` (never back: another scheduler may be
    /// further).
    pub async fn advance_notifier_cursor(&self, last_event_id: i64) -> Result<(), Error> {
        self.execute(
            query(
                "advance the notifier's cursor",
                "UPDATE notifier_cursor SET last_event_id = $1 \
                 WHERE id = 1 AND last_event_id < $1",
            )
            .bind(last_event_id),
        )
        .await?;
        Ok(())
    }

    /// Up to `limit` events after event `after`, in id order (all of them: the notifier's
    /// cursor follows the ids without a gap).
    pub async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<EventLog>, Error> {
        self.fetch_all(
            query(
                "read the events after one",
                "SELECT * FROM event_log WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(limit),
            EventLog::from_row,
        )
        .await
    }

    /// Makes the notifications that are not made yet, due at `now`; returns how many were.
    pub async fn add_notifications(
        &self,
        notifications: &[NewNotification],
        now: DateTime<Utc>,
    ) -> Result<usize, Error> {
        let mut made = 0;
        for new in notifications {
            made += self
                .execute(
                    query(
                        "make a notification",
                        "INSERT INTO notification (event_id, dag_run_id, target, event, channel, \
                             notice, state, next_attempt_at, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) \
                         ON CONFLICT (event_id, target) DO NOTHING",
                    )
                    .bind(new.event_id)
                    .bind(new.dag_run_id)
                    .bind(new.target.as_str())
                    .bind(new.event.as_str())
                    .bind(&new.channel)
                    .bind(&new.notice)
                    .bind(now),
                )
                .await?;
        }
        Ok(made as usize)
    }

    /// Takes up to `limit` pending notifications due at `now` to send, each by compare-and-set
    /// (`pending` -> `sending`, one more attempt): what another sender took is not returned.
    /// A notification left `sending` since before `stale` (its sender died) is pending again.
    pub async fn take_due_notifications(
        &self,
        now: DateTime<Utc>,
        stale: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Notification>, Error> {
        self.execute(
            query(
                "give back abandoned notifications",
                "UPDATE notification SET state = 'pending', claimed_at = NULL \
                 WHERE state = 'sending' AND claimed_at < $1",
            )
            .bind(stale),
        )
        .await?;
        self.fetch_all(
            query_split(
                "take due notifications",
                "UPDATE notification SET state = 'sending', attempts = attempts + 1, \
                     claimed_at = $1 \
                 WHERE id IN (SELECT id FROM notification \
                     WHERE state = 'pending' AND next_attempt_at <= $1 \
                     ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING *",
                "UPDATE notification SET state = 'sending', attempts = attempts + 1, \
                     claimed_at = $1 \
                 WHERE id IN (SELECT id FROM notification \
                     WHERE state = 'pending' AND next_attempt_at <= $1 \
                     ORDER BY next_attempt_at LIMIT $2) \
                 RETURNING *",
            )
            .bind(now)
            .bind(limit),
            Notification::from_row,
        )
        .await
    }

    /// Records how an attempt at notification `id` went.
    pub async fn end_notification_attempt(
        &self,
        id: i64,
        attempt: &Attempt,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let statement = match attempt {
            Attempt::Sent => query(
                "record a notification sent",
                "UPDATE notification SET state = 'sent', sent_at = $2, claimed_at = NULL, \
                     last_error = NULL \
                 WHERE id = $1 AND state = 'sending'",
            )
            .bind(id)
            .bind(now),
            Attempt::Failed { error, retry_at } => query(
                "record a notification that failed",
                "UPDATE notification SET state = CASE WHEN $3 IS NULL THEN 'failed' \
                         ELSE 'pending' END, \
                     next_attempt_at = COALESCE($3, next_attempt_at), claimed_at = NULL, \
                     last_error = $2 \
                 WHERE id = $1 AND state = 'sending'",
            )
            .bind(id)
            .bind(error.as_str())
            .bind(*retry_at),
        };
        self.execute(statement).await?;
        Ok(())
    }

    /// The notifications of run `run`, oldest first.
    pub async fn list_run_notifications(&self, run: DagRunId) -> Result<Vec<Notification>, Error> {
        self.fetch_all(
            query(
                "list a run's notifications",
                "SELECT * FROM notification WHERE dag_run_id = $1 ORDER BY id",
            )
            .bind(run),
            Notification::from_row,
        )
        .await
    }
}
