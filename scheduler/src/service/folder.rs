//! The DAGs folder: watched with filesystem notifications (inotify on Linux, through the
//! `notify` crate), and synced into the database when something in it changed; then the next
//! runs of the DAGs that are new or changed are computed.
//!
//! Where notifications do not work (the folder does not exist yet, a file system without
//! them, the watch limit reached), the folder is polled instead: every tick compares each
//! file's path, modification time and size with what it saw before.
//!
//! A load runs on a thread of its own. A tick waits for it up to [`LOAD_PATIENCE`], then goes
//! on with the DAGs it has (a file on a stuck network file system must not stop the runs of
//! the others, nor a shutdown) and takes the load's result at a later tick, when it is ready.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{Notify, oneshot};
use updraft_core::dag::{FolderLoad, LoadOptions, dag_files, load_paths};
use updraft_core::ids::DagId;
use updraft_metadata::{Error, NextRun};

use super::{Scheduler, earliest};
use crate::sync::sync_dags;

/// The files of a polled folder as last seen: (path, modified, length).
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// How long a tick waits for a load of the DAGs folder it started.
const LOAD_PATIENCE: Duration = Duration::from_secs(10);

/// A load of the folder under way, on its own thread.
struct Loading {
    answer: oneshot::Receiver<FolderLoad>,
    began: std::time::Instant,
}

pub(super) struct Folder {
    path: PathBuf,
    /// Set by the watcher's thread when anything under the folder changed; cleared before
    /// each sync, so a change during a sync makes another.
    changed: Arc<AtomicBool>,
    /// Wakes the scheduler's loop when the watcher saw a change.
    wake: Arc<Notify>,
    /// How the folder is followed; `None` before the first sync.
    follow: Option<Follow>,
    /// A load that outlasted the tick that started it.
    loading: Option<Loading>,
    /// How long the tick that starts a load waits for it (see [`LOAD_PATIENCE`]).
    patience: Duration,
}

enum Follow {
    /// Notifications; the watcher stops when dropped.
    Watch { _watcher: RecommendedWatcher },
    /// A poll at every tick: the files as last seen.
    Poll(Fingerprint),
}

impl Folder {
    pub(super) fn new(path: PathBuf) -> Folder {
        Folder {
            path,
            changed: Arc::new(AtomicBool::new(false)),
            wake: Arc::new(Notify::new()),
            follow: None,
            loading: None,
            patience: LOAD_PATIENCE,
        }
    }

    /// What the loop waits on besides wake-ups: the watcher's news of a change.
    pub(super) fn changes(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Whether the folder is to be synced now: at the first call (which starts watching it),
    /// whenever something in it changed since the last sync, and while a load is under way
    /// (a change meanwhile is kept for the sync after it).
    pub(super) fn needs_sync(&mut self) -> bool {
        if self.loading.is_some() {
            return true;
        }
        match &mut self.follow {
            None => {
                self.follow = Some(self.start_following());
                self.changed.store(false, Ordering::SeqCst);
                true
            }
            Some(Follow::Watch { .. }) => self.changed.swap(false, Ordering::SeqCst),
            Some(Follow::Poll(seen)) => {
                let now = fingerprint(&self.path);
                let changed = *seen != now;
                *seen = now;
                changed
            }
        }
    }

    /// Watches the folder, or polls it where it cannot be watched.
    fn start_following(&self) -> Follow {
        let changed = self.changed.clone();
        let wake = self.wake.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // An error (a queue overflow, say) may hide a change: sync to be sure.
            if event.is_err() || event.is_ok_and(|event| !event.kind.is_access()) {
                changed.store(true, Ordering::SeqCst);
                wake.notify_one();
            }
        })
        .and_then(|mut watcher| {
            watcher.watch(&self.path, RecursiveMode::Recursive)?;
            Ok(watcher)
        });
        match watcher {
            Ok(watcher) => Follow::Watch { _watcher: watcher },
            Err(error) => {
                if self.path.exists() {
                    tracing::warn!(
                        "cannot watch the DAGs folder {} ({error}): polling it instead",
                        self.path.display()
                    );
                }
                Follow::Poll(fingerprint(&self.path))
            }
        }
    }
}

impl Folder {
    /// The folder's DAGs: a load started now and waited for up to the patience, or the result
    /// of the one under way if it is ready; `None` while it is not.
    async fn load(&mut self, options: &LoadOptions) -> Option<FolderLoad> {
        let folder = self.path.clone();
        let options = options.clone();
        self.load_with(move || load_paths(&[folder], &options))
            .await
    }

    async fn load_with(
        &mut self,
        load: impl FnOnce() -> FolderLoad + Send + 'static,
    ) -> Option<FolderLoad> {
        let (mut loading, patience) = match self.loading.take() {
            Some(loading) => (loading, Duration::ZERO),
            None => {
                // A thread of its own, not tokio's blocking pool: a load that never ends must
                // not hold up the runtime's shutdown.
                let (sender, answer) = oneshot::channel();
                std::thread::spawn(move || {
                    let _ = sender.send(load());
                });
                let began = std::time::Instant::now();
                (Loading { answer, began }, self.patience)
            }
        };
        match tokio::time::timeout(patience, &mut loading.answer).await {
            Ok(Ok(load)) => {
                if patience.is_zero() {
                    tracing::info!(
                        "the DAGs folder loaded after {:.1} s",
                        loading.began.elapsed().as_secs_f64()
                    );
                }
                Some(load)
            }
            Ok(Err(_)) => {
                tracing::error!("loading the DAGs folder failed; it is loaded again");
                self.changed.store(true, Ordering::SeqCst);
                None
            }
            Err(_) => {
                if !patience.is_zero() {
                    tracing::warn!(
                        "loading the DAGs folder {} takes longer than {} s (a file on a slow or \
                         stuck file system?): the scheduler goes on with the DAGs it has, and \
                         takes the folder's when the load ends",
                        self.path.display(),
                        patience.as_secs()
                    );
                }
                self.loading = Some(loading);
                None
            }
        }
    }
}

impl Scheduler {
    /// Loads and syncs the DAGs folder, then records the next runs of the DAGs that are new,
    /// changed or not planned yet (a due one is created in this tick). While a load outlasts
    /// its patience, nothing changes.
    pub(super) async fn sync(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        let Some(load) = self.folder.load(&self.settings.load).await else {
            return Ok(());
        };
        let report = sync_dags(&self.store, &load, self.settings.sync, now).await?;
        for error in &load.errors {
            tracing::warn!("{error}");
        }
        if !report.created.is_empty() || !report.changed.is_empty() || report.deactivated > 0 {
            tracing::info!(
                created = report.created.len(),
                changed = report.changed.len(),
                deactivated = report.deactivated,
                "synced the DAGs folder"
            );
        }
        let created: HashSet<&DagId> = report.created.iter().collect();
        let replan: HashSet<&DagId> = report.changed.iter().chain(&report.unplanned).collect();
        let mut next_runs = Vec::with_capacity(created.len() + replan.len());
        for loaded in load.dags {
            let dag_id = loaded.dag.id.clone();
            let created = created.contains(&dag_id);
            let key = (dag_id.clone(), loaded.dag.version_hash());
            let dag = self
                .versions
                .entry(key)
                .or_insert_with(|| Arc::new(loaded.dag))
                .clone();
            if !created && !replan.contains(&dag_id) {
                continue;
            }
            // A new DAG has no run yet; a changed one goes on from its latest scheduled run,
            // on its new schedule, and so does one that no scheduler planned yet.
            let last = match created {
                true => None,
                false => self.store.last_automated_run(&dag_id).await?,
            };
            let next = dag.timetable.next_dagrun_info(last.as_ref(), now);
            next_runs.push(NextRun { dag_id, next });
        }
        self.store.set_next_runs(&next_runs).await?;
        if !next_runs.is_empty() {
            self.next_due = earliest(self.next_due, Some(now));
        }
        Ok(())
    }
}

/// The DAG files under `folder` with their modification times and sizes. A missing folder has
/// no files.
fn fingerprint(folder: &Path) -> Fingerprint {
    dag_files(folder)
        .unwrap_or_default()
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (path, modified, len)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Whether `folder` asks for a sync within 5 s.
    fn asks_for_sync(folder: &mut Folder) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if folder.needs_sync() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn a_watched_folder_asks_for_a_sync_when_a_file_changes_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let mut folder = Folder::new(dir.path().to_owned());
        assert!(folder.needs_sync(), "the first look syncs");
        assert!(matches!(folder.follow, Some(Follow::Watch { .. })));
        assert!(!folder.needs_sync());
        std::fs::write(dir.path().join("a.yaml"), "version: 1\n").unwrap();
        assert!(asks_for_sync(&mut folder));
        // A write is several events (create, modify, close); let the last of them arrive.
        std::thread::sleep(Duration::from_millis(200));
        folder.needs_sync();
        // Reading the files (as a sync does) is no change.
        std::fs::read(dir.path().join("a.yaml")).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!folder.needs_sync());
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        assert!(asks_for_sync(&mut folder));
    }

    #[tokio::test]
    async fn a_load_that_outlasts_its_patience_is_taken_at_a_later_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut folder = Folder::new(dir.path().to_owned());
        folder.patience = Duration::from_millis(50);
        assert!(folder.needs_sync());
        let (release, released) = std::sync::mpsc::channel::<()>();
        let slow = move || {
            let _ = released.recv();
            FolderLoad::default()
        };
        assert!(
            folder.load_with(slow).await.is_none(),
            "not within its patience"
        );
        // A change while it loads is kept for the sync after it.
        std::fs::write(dir.path().join("a.yaml"), "version: 1\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(folder.needs_sync(), "a load is under way");
        let never = || panic!("a second load while one is under way");
        assert!(folder.load_with(never).await.is_none());
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let load = loop {
            assert!(folder.needs_sync());
            if let Some(load) = folder.load_with(|| panic!("a second load")).await {
                break load;
            }
            assert!(Instant::now() < deadline, "the load's result is taken");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(load.dags.is_empty());
        assert!(folder.needs_sync(), "the change made while it loaded");
        assert!(!folder.needs_sync());
    }

    #[test]
    fn a_folder_that_cannot_be_watched_is_polled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dags");
        let mut folder = Folder::new(path.clone());
        assert!(folder.needs_sync());
        assert!(
            matches!(folder.follow, Some(Follow::Poll(_))),
            "it does not exist yet"
        );
        assert!(!folder.needs_sync());
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("a.yaml"), "version: 1\n").unwrap();
        assert!(folder.needs_sync());
        assert!(!folder.needs_sync());
    }
}
