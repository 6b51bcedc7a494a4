//! updraft-notifier: tells the notifiers of DAGs and tasks (`notify:`) what happened, from the
//! event log. It runs beside a scheduler, as a task of its own, so that no notice ever holds a
//! scheduling decision back.
//!
//! Every change a notifier hears of (a try's end, a run's end, a missed deadline) is written
//! with its event in one transaction, so reading the event log misses none. The notifier reads
//! it in id order from a shared cursor, makes a `notification` per (event, notifier), each once
//! whichever scheduler reads the event first, and sends the due ones: each attempt taken by a
//! compare-and-set, at most [`SEND_ATTEMPTS`] attempts, what failed logged and kept on the row.
//! A notice is sent at least once: a sender that dies while sending leaves its notification to
//! be sent again.

mod send;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use updraft_core::dag::Dag;
use updraft_core::ids::{DagId, TryKey};
use updraft_core::links;
use updraft_core::notify::{
    COMMAND_TIMEOUT, Notice, NotifyEvent, SEND_ATTEMPTS, SEND_TIMEOUT, concerned, retry_delay,
};
use updraft_core::secret::SecretsConfig;
use updraft_metadata::{Attempt, DagRun, Error, EventLog, NewNotification, Notification, Store};

/// How often the event log is read.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a gap in the event log's ids (a transaction that took an id and has not committed)
/// is waited for before the cursor passes it: a rolled-back transaction's id never comes.
pub const GAP_WAIT: Duration = Duration::from_secs(60);
/// Notifications sent at once.
pub const SENDING_AT_ONCE: usize = 8;
/// Events read at once.
const EVENTS_AT_ONCE: i64 = 500;
/// How much of a try's log a notice carries.
const LOG_TAIL_BYTES: usize = 4096;

/// What the notifier needs besides the database.
#[derive(Debug, Clone)]
pub struct Settings {
    /// To open secrets: webhook URLs given as references, the SMTP connection's password.
    pub secrets: SecretsConfig,
    /// The UI's address, for the links in notices.
    pub base_url: Option<String>,
}

/// The cursor's next position after reading `events` (id and time, in id order) past
/// `cursor`: the last of the ids that follow it without a gap, or past a gap whose next event
/// is older than [`GAP_WAIT`] at `now`. Pure.
pub fn next_cursor(cursor: i64, events: &[(i64, DateTime<Utc>)], now: DateTime<Utc>) -> i64 {
    let wait = chrono::Duration::from_std(GAP_WAIT).expect("a short wait");
    let mut next = cursor;
    for &(id, at) in events {
        if id != next + 1 && now - at < wait {
            break;
        }
        next = id;
    }
    next
}

/// Runs the notifier until `cancel`; sends in flight are given [`SEND_TIMEOUT`] to finish.
pub async fn run(store: Store, settings: Settings, cancel: CancellationToken) {
    let mut notifier = Notifier {
        store,
        settings: Arc::new(settings),
        client: send::client(),
        cursor: None,
        processed: BTreeSet::new(),
        runs: HashMap::new(),
        dags: HashMap::new(),
        sending: JoinSet::new(),
    };
    loop {
        if let Err(error) = notifier.tick(Utc::now()).await {
            tracing::warn!("notifier: {error}");
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
    let _ = tokio::time::timeout(SEND_TIMEOUT, async {
        while notifier.sending.join_next().await.is_some() {}
    })
    .await;
}

struct Notifier {
    store: Store,
    settings: Arc<Settings>,
    client: reqwest::Client,
    /// How far the event log is read for good; `None` until read from the database.
    cursor: Option<i64>,
    /// Events after the cursor already turned into notifications.
    processed: BTreeSet<i64>,
    runs: HashMap<(DagId, String), Option<Arc<DagRun>>>,
    dags: HashMap<(DagId, String), Option<Arc<Dag>>>,
    sending: JoinSet<()>,
}

impl Notifier {
    async fn tick(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        let cursor = match self.cursor {
            Some(cursor) => cursor,
            None => self.store.notifier_cursor().await?,
        };
        let events = self.store.events_after(cursor, EVENTS_AT_ONCE).await?;
        // An event counts as processed once its notifications are stored: a failure on the
        // way leaves the whole batch to the next tick (the unique key makes a second try
        // harmless).
        let mut made = Vec::new();
        let mut read = Vec::new();
        for event in &events {
            if self.processed.contains(&event.id) {
                continue;
            }
            made.extend(self.notifications_of(event).await?);
            read.push(event.id);
        }
        if !made.is_empty() {
            self.store.add_notifications(&made, now).await?;
        }
        self.processed.extend(read);
        let seen: Vec<(i64, DateTime<Utc>)> = events.iter().map(|e| (e.id, e.at)).collect();
        let next = next_cursor(cursor, &seen, now);
        if next > cursor {
            self.store.advance_notifier_cursor(next).await?;
            self.processed = self.processed.split_off(&(next + 1));
        }
        self.cursor = Some(next);
        // The runs and versions of what was read are kept only while a batch needs them.
        if self.runs.len() > 10_000 {
            self.runs.clear();
        }
        self.send_due(now).await
    }

    /// The notifications an event calls for.
    async fn notifications_of(&mut self, event: &EventLog) -> Result<Vec<NewNotification>, Error> {
        let Some(kind) = NotifyEvent::of_logged(&event.event, &event.details) else {
            return Ok(Vec::new());
        };
        let (Some(dag_id), Some(run_id)) = (&event.dag_id, &event.run_id) else {
            return Ok(Vec::new());
        };
        let Some(run) = self.run(dag_id, run_id).await? else {
            return Ok(Vec::new());
        };
        let Some(dag) = self.dag(dag_id, &run.version_hash).await? else {
            return Ok(Vec::new());
        };
        let task_id = event.task_id.as_ref().map(|id| id.as_str());
        let notifiers = concerned(&dag, task_id, kind);
        if notifiers.is_empty() {
            return Ok(Vec::new());
        }
        let notice = self.notice(event, kind, &run).await?;
        let notice = serde_json::to_value(&notice).expect("a notice is JSON");
        Ok(notifiers
            .into_iter()
            .map(|(target, notifier)| NewNotification {
                event_id: event.id,
                dag_run_id: run.id,
                target,
                event: kind,
                channel: serde_json::to_value(&notifier.channel).expect("a channel is JSON"),
                notice: notice.clone(),
            })
            .collect())
    }

    async fn run(&mut self, dag_id: &DagId, run_id: &str) -> Result<Option<Arc<DagRun>>, Error> {
        let key = (dag_id.clone(), run_id.to_owned());
        if let Some(run) = self.runs.get(&key) {
            return Ok(run.clone());
        }
        let run = self
            .store
            .get_dag_run_by_run_id(dag_id, run_id)
            .await?
            .map(Arc::new);
        self.runs.insert(key, run.clone());
        Ok(run)
    }

    async fn dag(&mut self, dag_id: &DagId, version: &str) -> Result<Option<Arc<Dag>>, Error> {
        let key = (dag_id.clone(), version.to_owned());
        if let Some(dag) = self.dags.get(&key) {
            return Ok(dag.clone());
        }
        let dag = match self.store.load_dag(dag_id, version).await {
            Ok(dag) => Some(Arc::new(dag)),
            Err(Error::NotFound(_) | Error::Corrupt { .. }) => None,
            Err(error) => return Err(error),
        };
        self.dags.insert(key, dag.clone());
        Ok(dag)
    }

    /// What to tell of `event`: its facts, the page, and for a try the end of its log.
    async fn notice(
        &self,
        event: &EventLog,
        kind: NotifyEvent,
        run: &DagRun,
    ) -> Result<Notice, Error> {
        let number = |name: &str| event.details.get(name).and_then(serde_json::Value::as_i64);
        let text = |name: &str| {
            event
                .details
                .get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let try_number = number("try_number");
        let page = match &event.task_id {
            Some(task) => links::task_url(run.dag_id.as_str(), &run.run_id, task.as_str()),
            None => links::run_url(run.dag_id.as_str(), &run.run_id),
        };
        let url = self
            .settings
            .base_url
            .as_ref()
            .map(|base| format!("{}{page}", base.trim_end_matches('/')));
        let mut log_tail = None;
        if let (Some(task), Some(try_number)) = (&event.task_id, try_number) {
            let instances = self.store.list_task_instances(run.id).await?;
            if let Some(ti) = instances.iter().find(|ti| &ti.task_id == task) {
                let key = TryKey {
                    task_instance: ti.id,
                    try_number: try_number as i32,
                };
                let mut log = Vec::new();
                for chunk in self.store.read_task_log(key, 0, i64::MAX).await? {
                    log.extend(chunk.data);
                    let excess = log.len().saturating_sub(LOG_TAIL_BYTES);
                    log.drain(..excess);
                }
                log_tail = Some(String::from_utf8_lossy(&log).into_owned());
            }
        }
        Ok(Notice {
            event: kind,
            dag_id: run.dag_id.to_string(),
            run_id: run.run_id.clone(),
            task_id: event.task_id.as_ref().map(|id| id.to_string()),
            try_number,
            exit_code: number("exit_code"),
            deadline: text("deadline"),
            due: text("due").and_then(|due| {
                DateTime::parse_from_rfc3339(&due)
                    .ok()
                    .map(|due| due.with_timezone(&Utc))
            }),
            logical_date: run.logical_date,
            at: event.at,
            url,
            log_tail,
        })
    }

    /// Starts sending the due notifications, as many as there is room for.
    async fn send_due(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        while self.sending.try_join_next().is_some() {}
        let room = SENDING_AT_ONCE.saturating_sub(self.sending.len());
        if room == 0 {
            return Ok(());
        }
        // A send takes at most its timeout (a command's is the longest); one `sending` for
        // twice that lost its sender.
        let stale = now - chrono::Duration::from_std(COMMAND_TIMEOUT * 2).expect("a short time");
        let due = self
            .store
            .take_due_notifications(now, stale, room as i64)
            .await?;
        for notification in due {
            let (store, settings, client) = (
                self.store.clone(),
                self.settings.clone(),
                self.client.clone(),
            );
            self.sending.spawn(async move {
                let outcome = send::send(&store, &settings, &client, &notification).await;
                record(&store, &notification, outcome).await;
            });
        }
        Ok(())
    }
}

/// Records how an attempt went, and logs a failure.
async fn record(store: &Store, notification: &Notification, outcome: Result<(), String>) {
    let now = Utc::now();
    let attempt = match outcome {
        Ok(()) => Attempt::Sent,
        Err(error) => {
            let retry_at = (notification.attempts < SEND_ATTEMPTS).then(|| {
                now + chrono::Duration::from_std(retry_delay(notification.attempts))
                    .expect("a short delay")
            });
            tracing::warn!(
                notification = notification.id,
                event = %notification.event,
                target = %notification.target,
                attempt = notification.attempts,
                again = retry_at.is_some(),
                "a notification failed: {error}"
            );
            Attempt::Failed { error, retry_at }
        }
    };
    if let Err(error) = store
        .end_notification_attempt(notification.id, &attempt, now)
        .await
    {
        tracing::warn!(
            notification = notification.id,
            "cannot record a notification's attempt: {error}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn the_cursor_follows_ids_without_a_gap() {
        let events = [(11, at(0)), (12, at(0)), (14, at(1)), (15, at(1))];
        assert_eq!(next_cursor(10, &events, at(2)), 12);
        assert_eq!(next_cursor(10, &[], at(2)), 10);
    }

    #[test]
    fn a_gap_is_passed_once_the_event_after_it_is_old() {
        let events = [(11, at(0)), (13, at(0)), (14, at(50))];
        assert_eq!(next_cursor(10, &events, at(59)), 11);
        assert_eq!(next_cursor(10, &events, at(60)), 14);
        // A first event after the cursor that is missing counts as a gap too.
        assert_eq!(next_cursor(8, &events, at(30)), 8);
    }
}
