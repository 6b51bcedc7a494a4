//! Wake-ups between the parts (DESIGN §2): a finished task wakes the scheduler at once, queued
//! work or a kill wakes the workers. Polling is only the fallback.
//!
//! In one process a write bumps a [`watch`] counter that every [`Wakeups`] of that topic sees.
//! On Postgres the same write also sends `pg_notify` inside its transaction (so it is delivered
//! exactly when the write commits), and each [`Wakeups`] listens on a connection of its own, so
//! processes on other machines wake too. SQLite has no such channel: other processes on the same
//! file find the change at their next poll.

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
                "SELECT pg_notify('updraft_scheduler', '')",
            ),
            Topic::Workers => query(
                "notify the workers",
                "SELECT pg_notify('updraft_workers', '')",
            ),
        }
    }
}

/// The in-process side: one counter per topic, shared by every clone of a `Store`.
#[derive(Debug)]
pub(crate) struct Signals {
    scheduler: watch::Sender<u64>,
    workers: watch::Sender<u64>,
}

impl Signals {
    pub(crate) fn new() -> Signals {
        Signals {
            scheduler: watch::Sender::new(0),
            workers: watch::Sender::new(0),
        }
    }

    fn sender(&self, topic: Topic) -> &watch::Sender<u64> {
        match topic {
            Topic::Scheduler => &self.scheduler,
            Topic::Workers => &self.workers,
        }
    }

    pub(crate) fn bump(&self, topic: Topic) {
        self.sender(topic)
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    pub(crate) fn subscribe(&self, topic: Topic) -> watch::Receiver<u64> {
        self.sender(topic).subscribe()
    }
}

/// How long a lost Postgres listener waits before it connects again.
const RELISTEN_DELAY: Duration = Duration::from_millis(500);

/// What a loop waits on: the topic's wake-ups, from this process and (on Postgres) others.
pub struct Wakeups {
    receiver: watch::Receiver<u64>,
    listener: Option<JoinHandle<()>>,
}

impl Wakeups {
    pub(crate) fn new(
        signals: &std::sync::Arc<Signals>,
        topic: Topic,
        postgres: Option<&PgPool>,
    ) -> Wakeups {
        let receiver = signals.subscribe(topic);
        let listener = postgres.map(|pool| {
            let pool = pool.clone();
            let signals = signals.clone();
            tokio::spawn(async move { listen(pool, topic, &signals).await })
        });
        Wakeups { receiver, listener }
    }

    /// Waits until woken or until `timeout` passes; true when woken. Wake-ups that arrived
    /// since the last wait count, so none is lost between two waits.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.receiver.changed()).await,
            Ok(Ok(()))
        )
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
                    // Whatever happened while nobody listened: look now.
                    signals.bump(topic);
                    while listener.try_recv().await.is_ok_and(|n| n.is_some()) {
                        signals.bump(topic);
                    }
                }
            }
            Err(error) => tracing::debug!(%error, channel = topic.channel(), "cannot listen"),
        }
        tokio::time::sleep(RELISTEN_DELAY).await;
    }
}
