//! Group commit of a worker's try ends. Tries end one at a time, and each end is a transaction
//! of several writes (the task instance, the try row, the log's last lines, an event); a commit
//! per try would make the database's per-statement and per-commit work the cost of every try.
//! Instead one writer task records the ends: the ends that arrive while it writes a batch wait
//! and go together in the next one ([`Store::end_tries`], one statement on Postgres). A lone
//! end is written at once: batching never delays an end, it only shares the round trip.
//!
//! An outcome is never dropped: while the database does not answer, the writer keeps the batch
//! (and what arrives meanwhile) and tries again.

use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use updraft_metadata::{Store, TryEnd};

/// The most ends one write records.
const MOST_AT_ONCE: usize = 256;
/// Pause between attempts to write while the database is unreachable.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// An end waiting for its write, and who waits for it.
struct Waiting {
    end: TryEnd,
    written: oneshot::Sender<()>,
}

/// The handle of a worker's end writer; clones share it. The writer task stops when the last
/// handle is dropped and what was sent is written.
#[derive(Clone)]
pub(crate) struct Ends {
    sender: mpsc::UnboundedSender<Waiting>,
}

impl Ends {
    /// Starts the writer on the current runtime.
    pub(crate) fn start(store: Store) -> Ends {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write(store, receiver));
        Ends { sender }
    }

    /// Records `end`; completes once it is written.
    pub(crate) async fn record(&self, end: TryEnd) {
        let (written, done) = oneshot::channel();
        if self.sender.send(Waiting { end, written }).is_ok() {
            // The writer drops a sender only after the write (or when the runtime stops).
            let _ = done.await;
        }
    }
}

/// The writer: a batch of whatever is waiting, written, then the next.
async fn write(store: Store, mut receiver: mpsc::UnboundedReceiver<Waiting>) {
    let mut ends: Vec<TryEnd> = Vec::new();
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut failing = false;
    loop {
        // Waits only when nothing is left to write.
        if ends.is_empty() {
            let Some(waiting) = receiver.recv().await else {
                return;
            };
            ends.push(waiting.end);
            waiters.push(waiting.written);
        }
        while ends.len() < MOST_AT_ONCE {
            let Ok(waiting) = receiver.try_recv() else {
                break;
            };
            ends.push(waiting.end);
            waiters.push(waiting.written);
        }
        match store.end_tries(&ends, Utc::now()).await {
            Ok(_) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("the ends of tries are recorded again");
                }
                ends.clear();
                for written in waiters.drain(..) {
                    let _ = written.send(());
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!("cannot record the end of tries, retrying: {error}");
                }
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}
