//! Wake-ups between the parts (DESIGN §2): a finished task wakes the scheduler at once, queued
//! work or a kill wakes the workers. Polling is only the fallback.
//!
//! A scheduler's wake-up says what changed: the runs a write concerns ([`Changes::runs`]: a
//! run created, a try ended, a run or task instance marked), or that anything may have changed
//! ([`Changes::everything`]: a pause, a backfill, a clear, a pool, or a wake-up that may have
//! been missed), so the scheduler reads only those runs. The workers' wake-ups carry nothing.
//!
//! In one process a write bumps a [`watch`] counter that every [`Wakeups`] of that topic sees,
//! and puts what changed in each scheduler's mailbox. On Postgres the same write also sends
//! `pg_notify` inside its transaction (so it is delivered exactly when the write commits), its
//! payload the changed run ids (`12,13`) or `*`, and each [`Wakeups`] listens on a connection
//! of its own, so processes on other machines wake too. SQLite has no such channel: other
//! processes on the same file find the change at their next poll.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::db::{Query, query};

/// Who is to be woken. A closed set: the two loops that wait for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A run was created or a try ended: the scheduler has decisions to make.
    Scheduler,
    /// Task instances were queued, or a running one was moved away (kill it).
    Workers,
}

impl Topic {
    /// The Postgres channel of the topic.
    fn channel(self) -> &'static str {
        match self {
            Topic::Scheduler => "updraft_scheduler",
            Topic::Workers => "updraft_workers",
        }
    }

    /// The statement that notifies other processes when its transaction commits.
    pub(crate) fn pg_notify<'a>(self) -> Query<'a> {
        match self {
            Topic::Scheduler => query(
                "notify the scheduler",
                "SELECT pg_notify('updraft_scheduler', '*')",
            ),
            Topic::Workers => query(
                "notify the workers",
                "SELECT pg_notify('updraft_workers', '')",
            ),
        }
    }
}

/// What changed since a scheduler last looked: the runs writes concerned, or everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Runs something happened to (created, a try ended, marked, cancelled).
    pub runs: HashSet<i64>,
    /// Anything may have changed (a pause, a clear, a backfill, a pool, a lost wake-up): look
    /// at every unfinished run and every DAG.
    pub everything: bool,
}

impl Changes {
    /// More run ids than this and a mailbox gives up listing them: everything changed.
    const MOST_RUNS: usize = 100_000;

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && !self.everything
    }

    fn add(&mut self, change: Change<'_>) {
        match change {
            Change::Runs(runs) if !self.everything => {
                self.runs.extend(runs);
                if self.runs.len() > Changes::MOST_RUNS {
                    self.everything = true;
                    self.runs = HashSet::new();
                }
            }
            Change::Runs(_) => {}
            Change::Everything => {
                self.everything = true;
                self.runs = HashSet::new();
            }
        }
    }
}

/// One write's news for the schedulers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    Runs(&'a [i64]),
    Everything,
}

/// The longest payload of a notification (Postgres refuses 8,000 bytes and more).
const MOST_PAYLOAD: usize = 7_900;

/// A change as the payloads of Postgres notifications: run ids joined by commas, split so that
/// none is too long; `*` for everything.
pub(crate) fn payloads(change: Change<'_>) -> Vec<String> {
    let Change::Runs(runs) = change else {
        return vec!["*".to_owned()];
    };
    let mut payloads = Vec::new();
    let mut payload = String::new();
    for run in runs {
        let id = run.to_string();
        if !payload.is_empty() && payload.len() + 1 + id.len() > MOST_PAYLOAD {
            payloads.push(std::mem::take(&mut payload));
        }
        if !payload.is_empty() {
            payload.push(',');
        }
        payload.push_str(&id);
    }
    if !payload.is_empty() {
        payloads.push(payload);
    }
    payloads
}

/// The runs a payload names; `None` (everything) for `*`, an empty payload or anything else.
pub(crate) fn parse_payload(payload: &str) -> Option<Vec<i64>> {
    payload.split(',').map(|id| id.parse().ok()).collect()
}

/// The in-process side: one counter per topic, shared by every clone of a `Store`, and the
/// mailboxes of the schedulers subscribed.
#[derive(Debug)]
pub(crate) struct Signals {
    scheduler: watch::Sender<u64>,
    workers: watch::Sender<u64>,
    mailboxes: Mutex<Vec<Weak<Mutex<Changes>>>>,
}

impl Signals {
    pub(crate) fn new() -> Signals {
        Signals {
            scheduler: watch::Sender::new(0),
            workers: watch::Sender::new(0),
            mailboxes: Mutex::new(Vec::new()),
        }
    }

    fn sender(&self, topic: Topic) -> &watch::Sender<u64> {
        match topic {
            Topic::Scheduler => &self.scheduler,
            Topic::Workers => &self.workers,
        }
    }

    /// Wakes the loops of `topic`; a scheduler learns that anything may have changed.
    pub(crate) fn bump(&self, topic: Topic) {
        if topic == Topic::Scheduler {
            self.tell(Change::Everything);
        } else {
            self.sender(topic)
                .send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    /// Puts `change` in every scheduler's mailbox and wakes them.
    pub(crate) fn tell(&self, change: Change<'_>) {
        let mut mailboxes = self.mailboxes.lock().expect("no panic holds the mailboxes");
        mailboxes.retain(|mailbox| match mailbox.upgrade() {
            Some(mailbox) => {
                mailbox
                    .lock()
                    .expect("no panic holds a mailbox")
                    .add(change);
                true
            }
            None => false,
        });
        drop(mailboxes);
        self.scheduler
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    fn subscribe(&self, topic: Topic) -> (watch::Receiver<u64>, Option<Arc<Mutex<Changes>>>) {
        let mailbox = (topic == Topic::Scheduler).then(|| {
            // A new scheduler knows nothing yet: its first look is at everything.
            let mailbox = Arc::new(Mutex::new(Changes {
                runs: HashSet::new(),
                everything: true,
            }));
            self.mailboxes
                .lock()
                .expect("no panic holds the mailboxes")
                .push(Arc::downgrade(&mailbox));
            mailbox
        });
        (self.sender(topic).subscribe(), mailbox)
    }
}

/// How long a lost Postgres listener waits before it connects again.
const RELISTEN_DELAY: Duration = Duration::from_millis(500);

/// What a loop waits on: the topic's wake-ups, from this process and (on Postgres) others.
pub struct Wakeups {
    receiver: watch::Receiver<u64>,
    /// What changed, for a scheduler (`None` for the workers).
    mailbox: Option<Arc<Mutex<Changes>>>,
    listener: Option<JoinHandle<()>>,
}

impl Wakeups {
    pub(crate) fn new(signals: &Arc<Signals>, topic: Topic, postgres: Option<&PgPool>) -> Wakeups {
        let (receiver, mailbox) = signals.subscribe(topic);
        let listener = postgres.map(|pool| {
            let pool = pool.clone();
            let signals = signals.clone();
            tokio::spawn(async move { listen(pool, topic, &signals).await })
        });
        Wakeups {
            receiver,
            mailbox,
            listener,
        }
    }

    /// Waits until woken or until `timeout` passes; true when woken. Wake-ups that arrived
    /// since the last wait count, so none is lost between two waits.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.receiver.changed()).await,
            Ok(Ok(()))
        )
    }

    /// What changed since the last call (a scheduler's; the workers' wake-ups carry nothing).
    /// The first call after subscribing says everything.
    pub fn take_changes(&mut self) -> Changes {
        match &self.mailbox {
            Some(mailbox) => {
                std::mem::take(&mut *mailbox.lock().expect("no panic holds a mailbox"))
            }
            None => Changes::default(),
        }
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

/// Forwards the topic's notifications from Postgres to this process, reconnecting for as long
/// as it runs (a restarted database is listened to again; polling covers the gap).
async fn listen(pool: PgPool, topic: Topic, signals: &Signals) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if listener.listen(topic.channel()).await.is_ok() {
                    // Whatever happened while nobody listened: look now, at everything.
                    signals.bump(topic);
                    while let Ok(Some(notification)) = listener.try_recv().await {
                        match topic {
                            Topic::Scheduler => match parse_payload(notification.payload()) {
                                Some(runs) => signals.tell(Change::Runs(&runs)),
                                None => signals.tell(Change::Everything),
                            },
                            Topic::Workers => signals.bump(topic),
                        }
                    }
                }
            }
            Err(error) => tracing::debug!(%error, channel = topic.channel(), "cannot listen"),
        }
        tokio::time::sleep(RELISTEN_DELAY).await;
    }
}
