//! The DAGs folder: watched with filesystem notifications (inotify on Linux, through the
//! `notify` crate), and synced into the database when something in it changed; then the next
//! runs of the DAGs that are new or changed are computed.
//!
//! Where notifications do not work (the folder does not exist yet, a file system without
//! them, the watch limit reached), the folder is polled instead: every tick compares each
//! file's path, modification time and size with what it saw before.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use updraft_core::dag::{dag_files, load_paths};
use updraft_core::ids::DagId;
use updraft_metadata::Error;

use super::{Scheduler, earliest};
use crate::sync::sync_dags;

/// The files of a polled folder as last seen: (path, modified, length).
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

pub(super) struct Folder {
    path: PathBuf,
    /// Set by the watcher's thread when anything under the folder changed; cleared before
    /// each sync, so a change during a sync makes another.
    changed: Arc<AtomicBool>,
    /// Wakes the scheduler's loop when the watcher saw a change.
    wake: Arc<Notify>,
    /// How the folder is followed; `None` before the first sync.
    follow: Option<Follow>,
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
        }
    }

    /// What the loop waits on besides wake-ups: the watcher's news of a change.
    pub(super) fn changes(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Whether the folder is to be synced now: at the first call (which starts watching it),
    /// and whenever something in it changed since the last sync.
    pub(super) fn needs_sync(&mut self) -> bool {
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

impl Scheduler {
    /// Loads and syncs the DAGs folder, then records the next runs of the DAGs that are new,
    /// changed or not planned yet (a due one is created in this tick).
    pub(super) async fn sync(&mut self, now: DateTime<Utc>) -> Result<(), Error> {
        let folder = self.settings.dags_folder.clone();
        let load_options = self.settings.load.clone();
        let load = tokio::task::spawn_blocking(move || load_paths(&[folder], &load_options))
            .await
            .expect("loading DAG files does not panic");
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
            next_runs.push((dag_id, dag.timetable.next_dagrun_info(last.as_ref(), now)));
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
