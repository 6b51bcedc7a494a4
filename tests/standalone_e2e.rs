//! `updraft standalone` as a whole: it follows the DAGs folder, runs handlers, and answers
//! `/health`. Real processes on a real SQLite file; state read through the store.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Running, run, updraft, wait_for};
use updraft_core::ids::DagId;
use updraft_metadata::Store;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

async fn store(home: &Path) -> Store {
    Store::open(&format!("sqlite:{}", home.join("updraft.db").display()))
        .await
        .unwrap()
}

/// Polls the store every 50 ms until `check` holds, at most 2 s (the bound for a file
/// change to be seen); returns how long it took.
async fn within_2s<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "not seen within 2 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

const MANUAL: &str = "version: 1\nid: ID\ntasks:\n  only: {run: \"true\"}\n";

#[tokio::test(flavor = "multi_thread")]
async fn new_changed_deleted_and_broken_files_are_seen_within_two_seconds() {
    let home = tempfile::tempdir().unwrap();
    let dags = tempfile::tempdir().unwrap();
    write(&dags.path().join("a.yaml"), &MANUAL.replace("ID", "a"));
    let _standalone = Running::standalone(home.path(), dags.path(), &[], &[]);
    let store = store(home.path()).await;
    let a = DagId::parse("a").unwrap();
    within_2s("the first file", || async {
        store.get_dag(&a).await.unwrap().is_some()
    })
    .await;

    // New.
    write(&dags.path().join("b.yaml"), &MANUAL.replace("ID", "b"));
    let b = DagId::parse("b").unwrap();
    within_2s("a new file", || async {
        store
            .get_dag(&b)
            .await
            .unwrap()
            .is_some_and(|dag| dag.is_active)
    })
    .await;

    // Changed: a new version.
    let first = store.get_dag(&a).await.unwrap().unwrap().version_hash;
    write(
        &dags.path().join("a.yaml"),
        "version: 1\nid: a\ntasks:\n  only: {run: \"true\"}\n  more: {run: \"true\"}\n",
    );
    within_2s("a changed file", || async {
        store.get_dag(&a).await.unwrap().unwrap().version_hash != first
    })
    .await;

    // Broken: reported, and its DAG stays active on its last good version.
    let good = store.get_dag(&a).await.unwrap().unwrap().version_hash;
    write(
        &dags.path().join("a.yaml"),
        "version: 1\nid: a\ntasks:\n  only: {rn: x}\n",
    );
    // The watcher may see the file emptied before it is written: that is reported too, until
    // the write's own event replaces it.
    within_2s("a broken file", || async {
        let errors = store.list_import_errors().await.unwrap();
        errors
            .first()
            .is_some_and(|error| error.message.contains("rn"))
    })
    .await;
    let errors = store.list_import_errors().await.unwrap();
    assert!(errors[0].filename.ends_with("a.yaml"), "{errors:?}");
    assert!(errors[0].message.contains("rn"), "{}", errors[0].message);
    let kept = store.get_dag(&a).await.unwrap().unwrap();
    assert!(kept.is_active);
    assert_eq!(kept.version_hash, good);

    // Deleted: inactive, its row kept.
    std::fs::remove_file(dags.path().join("b.yaml")).unwrap();
    within_2s("a deleted file", || async {
        !store.get_dag(&b).await.unwrap().unwrap().is_active
    })
    .await;
    store.close().await;
}

#[test]
fn task_and_dag_handlers_run_with_the_runs_context() {
    let home = tempfile::tempdir().unwrap();
    let dags = tempfile::tempdir().unwrap();
    let out = dags.path().join("out");
    std::fs::create_dir(&out).unwrap();
    write(
        &dags.path().join("handled.yaml"),
        "version: 1\nid: handled\n\
         on_success: {run: 'echo \"dag success {{ run_id }}\" > out/dag_success'}\n\
         on_failure: {run: 'echo \"dag failure $UPDRAFT_RUN_ID\" > out/dag_failure'}\n\
         tasks:\n\
         \x20 flaky:\n\
         \x20   run: test \"$UPDRAFT_TRY_NUMBER\" -ge 2\n\
         \x20   retries: 1\n\
         \x20   retry_delay: 1s\n\
         \x20   on_retry: {run: 'echo \"retry {{ ti.try_number }}\" > out/retry'}\n\
         \x20   on_success: 'echo \"success {{ ti.try_number }}\" > out/success'\n\
         \x20 broken:\n\
         \x20   run: exit 3\n\
         \x20   on_failure: {run: 'echo \"failure $CODE\" > out/failure', env: {CODE: three}}\n",
    );
    let _standalone = Running::standalone(home.path(), dags.path(), &[], &[]);
    let mut trigger = updraft(home.path());
    trigger
        .arg("--dags-folder")
        .arg(dags.path())
        .args(["dags", "trigger", "handled", "--wait"]);
    let (code, run_id, _) = run(trigger);
    assert_eq!(code, 1, "the run fails: its leaf `broken` failed");
    let run_id = run_id.trim();
    let read = |name: &str| {
        wait_for(name, Duration::from_secs(10), || {
            std::fs::read_to_string(out.join(name)).ok()
        })
    };
    assert_eq!(read("retry"), "retry 1\n");
    assert_eq!(read("success"), "success 2\n");
    assert_eq!(read("failure"), "failure three\n");
    assert_eq!(read("dag_failure"), format!("dag failure {run_id}\n"));
    assert!(!out.join("dag_success").exists());
}

#[test]
fn health_answers_with_the_scheduler_heartbeat() {
    let home = tempfile::tempdir().unwrap();
    let dags = tempfile::tempdir().unwrap();
    write(&dags.path().join("a.yaml"), &MANUAL.replace("ID", "a"));
    let standalone = Running::standalone(home.path(), dags.path(), &[], &[]);
    let url = standalone.url();
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "binds 127.0.0.1 by default: {url}"
    );
    let address = url.trim_start_matches("http://");
    let body = wait_for("a scheduler heartbeat", Duration::from_secs(10), || {
        let body = http_get(address, "/health");
        body.contains("\"scheduler_heartbeat_age_seconds\":0")
            .then_some(body)
    });
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"database\":\"ok\""), "{body}");
}

/// A minimal HTTP/1.1 GET, enough for `/health`.
fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
