//! DAG file sync against real databases (a fresh SQLite file and Postgres database per run).

use std::path::Path;

use chrono::{TimeZone, Utc};
use updraft_core::dag::{LoadOptions, load_paths};
use updraft_core::ids::DagId;
use updraft_metadata::testing::each_backend;
use updraft_scheduler::sync::{SyncOptions, sync_dags};

const OPTIONS: SyncOptions = SyncOptions {
    paused_on_creation: false,
};

fn id(text: &str) -> DagId {
    DagId::parse(text).unwrap()
}

fn write(folder: &Path, name: &str, text: &str) {
    std::fs::write(folder.join(name), text).unwrap();
}

#[tokio::test]
async fn new_changed_broken_and_deleted_files() {
    each_backend(|database| async move {
        let store = database.store().await;
        let folder = tempfile::tempdir().unwrap();
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let load = |folder: &Path| load_paths(&[folder.to_owned()], &LoadOptions::default());

        write(folder.path(), "a.yaml", "tasks:\n  t: {run: echo a}\n");
        write(folder.path(), "b.yaml", "tasks:\n  t: {run: echo b}\n");
        let report = sync_dags(&store, &load(folder.path()), OPTIONS, now)
            .await
            .unwrap();
        assert_eq!(report.created.len(), 2);

        // Same files: nothing new. A change makes a new version.
        let report = sync_dags(&store, &load(folder.path()), OPTIONS, now)
            .await
            .unwrap();
        assert_eq!((report.created.len(), report.unchanged), (0, 2));
        write(folder.path(), "a.yaml", "tasks:\n  t: {run: echo a2}\n");
        let report = sync_dags(&store, &load(folder.path()), OPTIONS, now)
            .await
            .unwrap();
        assert_eq!(report.changed.len(), 1);
        assert_eq!(report.changed[0].as_str(), "a");

        // A broken file: reported, and its DAG stays active on the last good version.
        write(
            folder.path(),
            "a.yaml",
            "tasks:\n  t: {run: echo a, retries: many}\n",
        );
        let good = store.get_dag(&id("a")).await.unwrap().unwrap();
        let report = sync_dags(&store, &load(folder.path()), OPTIONS, now)
            .await
            .unwrap();
        assert_eq!((report.import_errors, report.deactivated), (1, 0));
        let kept = store.get_dag(&id("a")).await.unwrap().unwrap();
        assert!(kept.is_active);
        assert_eq!(kept.version_hash, good.version_hash);
        let errors = store.list_import_errors().await.unwrap();
        assert!(
            errors[0]
                .message
                .contains("\"retries\" must be a whole number"),
            "{errors:?}"
        );

        // A deleted file: its DAG becomes inactive; fixed files clear their import error.
        std::fs::remove_file(folder.path().join("b.yaml")).unwrap();
        write(folder.path(), "a.yaml", "tasks:\n  t: {run: echo a3}\n");
        let report = sync_dags(&store, &load(folder.path()), OPTIONS, now)
            .await
            .unwrap();
        assert_eq!((report.import_errors, report.deactivated), (0, 1));
        let b = store.get_dag(&id("b")).await.unwrap().unwrap();
        assert!(!b.is_active);
        assert!(store.list_import_errors().await.unwrap().is_empty());
    })
    .await;
}
