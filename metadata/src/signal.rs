//! Wake-ups between the parts (DESIGN §2): a finished task wakes the scheduler at once, queued
//! work or a kill wakes the workers. Polling is only the fallback.
//!
//! A scheduler's wake-up says what changed ([`Changes`]): the runs a write concerns (a run
//! created, a run or task instance marked, a clear), the task instances whose tries ended, or
//! that anything may have changed (a pause, a backfill, a pool, or a wake-up that may have
//! been missed), so the scheduler reads only those runs, and of a run whose tries ended only
//! those task instances. The workers' wake-ups carry nothing.
//!
//! In one process a write bumps a [`watch`] counter that every [`Wakeups`] of that topic sees,
//! and puts what changed in each scheduler's mailbox. On Postgres the same write also sends
//! `pg_notify` inside its transaction (so it is delivered exactly when the write commits), its
//! payload what changed (`12,13/345` or `*`, [`Changes::payloads`]), and each [`Wakeups`]
//! listens on a connection of its own, so processes on other machines wake too. On a SQLite
//! file the same payloads go to the other processes through the doorbell (`doorbell.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use updraft_core::ids::{DagRunId, TaskInstanceId};

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

/// What changed since a scheduler last looked: the runs writes concerned, the task instances
/// whose tries ended, or everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Runs something happened to (created, marked, cleared, cancelled): read them again.
    pub runs: HashSet<DagRunId>,
    /// Task instances whose try ended, by run: in those runs only they moved.
    pub instances: HashMap<DagRunId, HashSet<TaskInstanceId>>,
    /// Anything may have changed (a pause, a backfill, a pool, a lost wake-up): look at every
    /// unfinished run and every DAG.
    pub everything: bool,
}

impl Changes {
    /// More ids than this and a mailbox gives up listing them: everything changed.
    const MOST_IDS: usize = 100_000;

    /// Runs `runs` changed.
    pub fn of_runs(runs: &[DagRunId]) -> Changes {
        Changes {
            runs: runs.iter().copied().collect(),
            ..Changes::default()
        }
    }

    /// The tries of `instances`, given as `(run, task instance)`, ended.
    pub fn of_instances(instances: &[(DagRunId, TaskInstanceId)]) -> Changes {
        let mut changes = Changes::default();
        for &(run, instance) in instances {
            changes.instances.entry(run).or_default().insert(instance);
        }
        changes
    }

    /// Anything may have changed.
    pub fn everything() -> Changes {
        Changes {
            everything: true,
            ..Changes::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.instances.is_empty() && !self.everything
    }

    /// Adds what `other` says changed.
    fn add(&mut self, other: &Changes) {
        if self.everything {
            return;
        }
        if other.everything {
            *self = Changes::everything();
            return;
        }
        self.runs.extend(&other.runs);
        for (run, instances) in &other.instances {
            self.instances.entry(*run).or_default().extend(instances);
        }
        let ids = self.runs.len() + self.instances.values().map(HashSet::len).sum::<usize>();
        if ids > Changes::MOST_IDS {
            *self = Changes::everything();
        }
    }

    /// The changes as the payloads of Postgres notifications (and of SQLite's doorbell): a run
    /// as its id (`12`), a task instance as its run's and its own (`12/345`), joined by commas
    /// and split so that none is too long; `*` for everything.
    pub(crate) fn payloads(&self) -> Vec<String> {
        if self.everything {
            return vec!["*".to_owned()];
        }
        let items =
            self.runs
                .iter()
                .map(DagRunId::to_string)
                .chain(self.instances.iter().flat_map(|(run, instances)| {
                    instances
                        .iter()
                        .map(move |instance| format!("{run}/{instance}"))
                }));
        let mut payloads = Vec::new();
        let mut payload = String::new();
        for item in items {
            if !payload.is_empty() && payload.len() + 1 + item.len() > MOST_PAYLOAD {
                payloads.push(std::mem::take(&mut payload));
            }
            if !payload.is_empty() {
                payload.push(',');
            }
            payload.push_str(&item);
        }
        if !payload.is_empty() {
            payloads.push(payload);
        }
        payloads
    }

    /// What a payload says changed: everything for `*`, an empty payload or anything else it
    /// cannot read.
    pub(crate) fn parse(payload: &str) -> Changes {
        let mut changes = Changes::default();
        for item in payload.split(',') {
            let parsed = match item.split_once('/') {
                None => item.parse().map(|run| {
                    changes.runs.insert(run);
                }),
                Some((run, instance)) => run.parse().and_then(|run| {
                    let instance = instance.parse()?;
                    changes.instances.entry(run).or_default().insert(instance);
                    Ok(())
                }),
            };
            if parsed.is_err() {
                return Changes::everything();
            }
        }
        changes
    }
}

/// The longest payload of a notification (Postgres refuses 8,000 bytes and more).
const MOST_PAYLOAD: usize = 7_900;

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
            self.tell(&Changes::everything());
        } else {
            self.sender(topic)
                .send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    /// Puts `changes` in every scheduler's mailbox and wakes them.
    pub(crate) fn tell(&self, changes: &Changes) {
        let mut mailboxes = self.mailboxes.lock().expect("no panic holds the mailboxes");
        mailboxes.retain(|mailbox| match mailbox.upgrade() {
            Some(mailbox) => {
                mailbox
                    .lock()
                    .expect("no panic holds a mailbox")
                    .add(changes);
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
            let mailbox = Arc::new(Mutex::new(Changes::everything()));
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
                            Topic::Scheduler => {
                                signals.tell(&Changes::parse(notification.payload()));
                            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_runs_and_task_instances_and_read_back() {
        let instance = |run, id| (DagRunId(run), TaskInstanceId(id));
        let mut changes = Changes::of_runs(&[DagRunId(12), DagRunId(13)]);
        changes.add(&Changes::of_instances(&[
            instance(14, 345),
            instance(14, 346),
            instance(15, 7),
        ]));
        let payloads = changes.payloads();
        assert_eq!(payloads.len(), 1);
        assert_eq!(Changes::parse(&payloads[0]), changes);
        assert_eq!(Changes::everything().payloads(), ["*"]);
        assert!(Changes::parse("*").everything);
        assert!(Changes::parse("").everything);
        assert!(Changes::parse("12,x/3").everything);
        assert!(Changes::parse("12/").everything);
    }

    #[test]
    fn a_long_list_is_split_into_payloads_that_fit() {
        let runs: Vec<DagRunId> = (1_000_000..1_002_000).map(DagRunId).collect();
        let payloads = Changes::of_runs(&runs).payloads();
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|payload| payload.len() <= MOST_PAYLOAD));
        let mut read = Changes::default();
        for payload in &payloads {
            read.add(&Changes::parse(payload));
        }
        assert_eq!(read, Changes::of_runs(&runs));
    }

    #[test]
    fn everything_absorbs_what_comes_after_and_too_many_ids_become_everything() {
        let mut changes = Changes::everything();
        changes.add(&Changes::of_runs(&[DagRunId(1)]));
        assert_eq!(changes, Changes::everything());
        let mut changes = Changes::of_instances(&[(DagRunId(1), TaskInstanceId(2))]);
        let many: Vec<DagRunId> = (0..=Changes::MOST_IDS as i64).map(DagRunId).collect();
        changes.add(&Changes::of_runs(&many));
        assert_eq!(changes, Changes::everything());
    }
}
