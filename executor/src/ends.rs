//! Group commit of a worker's try ends. Tries end one at a time, and each end is a transaction
//! of several writes (the task instance, the try row, the log's last lines, an event); a commit
//! per try would make the database's per-statement and per-commit work the cost of every try.
//! Instead one writer task records the ends: the ends that arrive while it writes a batch wait
//! and go together in the next one ([`Store::end_tries`], one statement on Postgres). When the
//! worker is saturated (its last claim filled every free slot, so more work waits in the queue)
//! and other tries of it still run, a batch also waits up to [`LINGER`] for their ends, as
//! Postgres's `commit_delay` waits for `commit_siblings`: then the database's work per end
//! decides how many tries a second the worker gets through. Otherwise an end is written at once,
//! as the next task of a chain waits for it.
//!
//! An outcome is never dropped: while the database does not answer, the writer keeps the batch
//! (and what arrives meanwhile) and tries again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use updraft_core::state::TaskState;
use updraft_metadata::{Error, Store, TryEnd};

/// The most ends one write records.
const MOST_AT_ONCE: usize = 256;
/// Pause between attempts to write while the database is unreachable.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// How long a batch of a saturated worker waits for the ends of its other running tries.
/// Trivial tries end within milliseconds of each other, and each write costs the database a
/// statement and a commit whatever it holds: the `workers` benchmark wrote about 5 ends per
/// statement without the wait, 9 with it, and drained 4% more tries a second (medians of eight
/// runs side by side).
const LINGER: Duration = Duration::from_millis(20);

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
    load: Arc<Load>,
}

/// What the writer knows of the worker's load, to decide whether a batch waits.
#[derive(Default)]
struct Load {
    /// Tries expected to end (see [`Ends::expect`]).
    running: AtomicUsize,
    /// Whether the worker's last claim filled every free slot (see [`Ends::saturated`]).
    saturated: AtomicBool,
}

/// A try whose end the writer expects: while any is held, a batch may wait for more ends.
pub(crate) struct Expected(Arc<Load>);

impl Drop for Expected {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Ends {
    /// Starts the writer on the current runtime.
    pub(crate) fn start(store: Store) -> Ends {
        let (sender, receiver) = mpsc::unbounded_channel();
        let load = Arc::new(Load::default());
        tokio::spawn(write(store, receiver, load.clone()));
        Ends { sender, load }
    }

    /// Tells the writer a try started, whose end it will record.
    pub(crate) fn expect(&self) -> Expected {
        self.load.running.fetch_add(1, Ordering::Relaxed);
        Expected(self.load.clone())
    }

    /// Tells the writer whether the worker's last claim took as many task instances as it had
    /// free slots: more may wait in the queue, the worker is saturated.
    pub(crate) fn saturated(&self, saturated: bool) {
        self.load.saturated.store(saturated, Ordering::Relaxed);
    }

    /// Records `end`, the end of the try that was `expected`; completes once it is written.
    pub(crate) async fn record(&self, end: TryEnd, expected: Expected) {
        drop(expected);
        let (written, done) = oneshot::channel();
        if self.sender.send(Waiting { end, written }).is_ok() {
            // The writer drops a sender only after the write (or when the runtime stops).
            let _ = done.await;
        }
    }
}

/// The writer: a batch of whatever is waiting (and, when the worker is saturated, of what ends
/// within [`LINGER`]), written, then the next.
///
/// A batch the database refuses for what one of its ends holds (see [`Error::is_refused`]) is
/// written again one end at a time, so that one end does not hold back the others; an end
/// refused on its own is recorded as failed, without its outputs, with the database's reason
/// in its log (see [`refused`]). Any other error is an outage: the batch waits and is tried
/// again as it is.
async fn write(store: Store, mut receiver: mpsc::UnboundedReceiver<Waiting>, load: Arc<Load>) {
    let mut ends: Vec<TryEnd> = Vec::new();
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut failing = false;
    // How many of the ends at hand are written one at a time, after their batch was refused.
    let mut alone: usize = 0;
    // Whether the first end at hand is already the failed stand-in of a refused end.
    let mut stand_in = false;
    loop {
        // Waits only when nothing is left to write.
        if ends.is_empty() {
            let Some(waiting) = receiver.recv().await else {
                return;
            };
            ends.push(waiting.end);
            waiters.push(waiting.written);
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        while alone == 0 && ends.len() < MOST_AT_ONCE {
            let waiting = match receiver.try_recv() {
                Ok(waiting) => waiting,
                Err(_) if !waits_for_more(&load, failing) => break,
                Err(_) => match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(waiting)) => waiting,
                    Ok(None) | Err(_) => break,
                },
            };
            ends.push(waiting.end);
            waiters.push(waiting.written);
        }
        let batch = if alone > 0 { 1 } else { ends.len() };
        match store.end_tries(&ends[..batch], Utc::now()).await {
            Ok(_) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("the ends of tries are recorded again");
                }
                done(&mut ends, &mut waiters, batch);
                alone = alone.saturating_sub(1);
                stand_in = false;
            }
            Err(error) if error.is_refused() && batch > 1 => {
                tracing::warn!(
                    "the database refused a batch of {batch} ends of tries, writing them one \
                     at a time: {error}"
                );
                alone = batch;
            }
            Err(error) if error.is_refused() && !stand_in => {
                let end = &mut ends[0];
                tracing::warn!(
                    "the database refused the end of {}, recording it as failed: {error}",
                    end.key
                );
                *end = refused(end, &error);
                stand_in = true;
            }
            Err(error) if error.is_refused() => {
                // Nothing simpler is left to write: the worker's heartbeat finds the try
                // running without a process, and ends it as lost.
                tracing::error!(
                    "the database refused even a failed end of {}: {error}",
                    ends[0].key
                );
                done(&mut ends, &mut waiters, 1);
                alone = alone.saturating_sub(1);
                stand_in = false;
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

/// Removes the first `count` ends at hand and tells their tries they are written.
fn done(ends: &mut Vec<TryEnd>, waiters: &mut Vec<oneshot::Sender<()>>, count: usize) {
    ends.drain(..count);
    for written in waiters.drain(..count) {
        let _ = written.send(());
    }
}

/// What is recorded of an end the database refused: the try failed (no retry is scheduled, as
/// its outcome is unknown to the database), without outputs, and its log says why.
fn refused(end: &TryEnd, error: &Error) -> TryEnd {
    let mut log_tail = end.log_tail.clone();
    if !log_tail.is_empty() && !log_tail.ends_with(b"\n") {
        log_tail.push(b'\n');
    }
    log_tail.extend_from_slice(
        format!(
            "updraft: the database refused this try's outcome ({}, exit code {}), so it is \
             recorded as failed: {error}\n",
            end.state,
            end.exit_code
                .map_or_else(|| "none".to_owned(), |code| code.to_string()),
        )
        .as_bytes(),
    );
    TryEnd {
        key: end.key,
        worker_id: end.worker_id.clone(),
        state: TaskState::Failed,
        exit_code: end.exit_code,
        next_retry_at: None,
        outputs: Vec::new(),
        log_tail,
    }
}

/// Whether a batch that holds every end sent so far waits (up to [`LINGER`]) for more: only
/// when the worker is saturated and other tries of it run (so their ends may come), and not
/// while the database fails (the batch is retried anyway).
fn waits_for_more(load: &Load, failing: bool) -> bool {
    load.saturated.load(Ordering::Relaxed) && load.running.load(Ordering::Relaxed) > 0 && !failing
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_core::ids::{TaskInstanceId, TryKey};

    fn load(running: usize, saturated: bool) -> Load {
        Load {
            running: AtomicUsize::new(running),
            saturated: AtomicBool::new(saturated),
        }
    }

    #[test]
    fn a_batch_waits_for_running_tries_of_a_saturated_worker_unless_the_database_fails() {
        assert!(waits_for_more(&load(1, true), false));
        assert!(waits_for_more(&load(7, true), false));
        // The end of a try that ran alone (the next task of a chain) is written at once, and so
        // is the end of a worker with room for more than the queue holds (a backfill's chains).
        assert!(!waits_for_more(&load(0, true), false));
        assert!(!waits_for_more(&load(7, false), false));
        assert!(!waits_for_more(&load(3, true), true));
    }

    #[tokio::test]
    async fn a_try_is_expected_until_its_end_is_recorded_or_it_is_dropped() {
        // No writer: a recorded end goes nowhere, and `record` returns at once.
        let (sender, _) = mpsc::unbounded_channel();
        let ends = Ends {
            sender,
            load: Arc::new(load(0, true)),
        };
        let running = || ends.load.running.load(Ordering::Relaxed);
        let recorded = ends.expect();
        let dropped = ends.expect();
        assert_eq!(running(), 2);
        let end = TryEnd {
            key: TryKey {
                task_instance: TaskInstanceId(1),
                try_number: 1,
            },
            worker_id: None,
            state: TaskState::Success,
            exit_code: Some(0),
            next_retry_at: None,
            outputs: Vec::new(),
            log_tail: Vec::new(),
        };
        ends.record(end, recorded).await;
        assert_eq!(running(), 1);
        drop(dropped);
        assert_eq!(running(), 0);
    }
}
