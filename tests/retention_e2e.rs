//! `updraft db clean` (issue 18) against real databases, both backends: what is old goes with
//! everything that hangs on it, in batches; what is recent, each DAG's latest scheduled run
//! and the events since stay; a dry run and a refusal delete nothing.

mod common;

use chrono::{Duration, Utc};
use updraft_core::dag::{LoadOptions, load_paths};
use updraft_core::ids::{DagId, TaskId};
use updraft_metadata::testing::each_backend;
use updraft_metadata::{NewEvent, SeedRuns, Store};
use updraft_scheduler::sync::{SyncOptions, sync_dags};

use common::{repo, run, updraft};

/// 60 runs of `sales_daily` a day apart, the first 60 days and an hour ago (each ends a day
/// and a minute after its logical date), and two events: one 40 days old, one new. Returns the number of tasks of the DAG.
async fn seed(store: &Store) -> i64 {
    let load = load_paths(&[repo().join("dags")], &LoadOptions::default());
    let options = SyncOptions {
        paused_on_creation: true,
    };
    sync_dags(store, &load, options, Utc::now()).await.unwrap();
    let dag_id = DagId::parse("sales_daily").unwrap();
    let row = store.get_dag(&dag_id).await.unwrap().unwrap();
    let dag = store.load_dag(&dag_id, &row.version_hash).await.unwrap();
    let task_ids: Vec<TaskId> = dag.tasks.keys().cloned().collect();
    let first = Utc::now() - Duration::days(60) - Duration::hours(1);
    store
        .seed_finished_runs(SeedRuns {
            dag_id: &dag_id,
            version_hash: &row.version_hash,
            task_ids: &task_ids,
            runs: 60,
            first,
            step: Duration::days(1),
        })
        .await
        .unwrap();
    for days in [40, 0] {
        store
            .append_event(&NewEvent {
                at: Utc::now() - Duration::days(days),
                actor: "test".to_owned(),
                dag_id: Some(dag_id.clone()),
                run_id: None,
                task_id: None,
                event: format!("event_{days}_days_ago"),
                details: serde_json::json!({}),
            })
            .await
            .unwrap();
    }
    task_ids.len() as i64
}

fn clean(home: &std::path::Path, url: &str, args: &[&str]) -> (i32, String, String) {
    let mut command = updraft(home);
    command
        .args(["--database-url", url, "db", "clean"])
        .args(args)
        .stdin(std::process::Stdio::null());
    run(command)
}

async fn runs_left(store: &Store) -> Vec<String> {
    let dag_id = DagId::parse("sales_daily").unwrap();
    let mut runs: Vec<String> = store
        .list_dag_runs(&dag_id, None, 1000, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|run| run.run_id)
        .collect();
    runs.sort();
    runs
}

#[tokio::test]
async fn db_clean_deletes_what_is_old_and_keeps_the_rest() {
    each_backend(|db| async move {
        let home = tempfile::tempdir().unwrap();
        let store = db.store().await;
        let tasks = seed(&store).await;
        let url = db.url();

        // Seeded runs 1 to 30 ended more than 30 days ago; 1 seeded event is older.
        let old = format!(
            "30 run(s) with {} task instance(s) (their tries, logs and outputs), and 1 event(s)",
            30 * tasks
        );
        let (code, stdout, stderr) = clean(home.path(), url, &["--older-than", "30d", "--dry-run"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(&old), "{stdout}");
        let (code, _, stderr) = clean(home.path(), url, &["--older-than", "30d"]);
        assert_eq!(code, 1, "without --yes and without a terminal: {stderr}");
        assert!(stderr.contains("pass --yes"), "{stderr}");
        assert_eq!(runs_left(&store).await.len(), 60, "nothing was deleted yet");

        let (code, stdout, stderr) = clean(home.path(), url, &["--older-than", "30d", "--yes"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains(&format!("deleted {old}")), "{stdout}");
        let left = runs_left(&store).await;
        assert_eq!(left.first().map(String::as_str), Some("seed_000031"));
        assert_eq!(left.len(), 30);
        let dag_id = DagId::parse("sales_daily").unwrap();
        let events = store.list_events(Some(&dag_id), 100).await.unwrap();
        let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert!(names.contains(&"event_0_days_ago"), "{names:?}");
        assert!(!names.contains(&"event_40_days_ago"), "{names:?}");
        // The clean is in the log, with what it removed.
        let all = store.list_events(None, 100).await.unwrap();
        let logged = all
            .iter()
            .find(|e| e.event == "db_clean")
            .expect("a db_clean event");
        assert_eq!(logged.details["runs"], 30);

        // Everything is old a second after: all go but the DAG's latest scheduled run, which
        // its next run is computed from; another DAG's filter touches none of them.
        let (code, stdout, _) = clean(
            home.path(),
            url,
            &["--older-than", "1s", "--dag", "region_report", "--yes"],
        );
        assert_eq!(code, 0);
        assert!(stdout.contains(": 0 run(s)"), "{stdout}");
        assert_eq!(runs_left(&store).await.len(), 30);
        let (code, _, stderr) = clean(
            home.path(),
            url,
            &["--older-than", "1s", "--dag", "sales_daily", "--yes"],
        );
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(runs_left(&store).await, ["seed_000060"]);
        let kept = store
            .get_dag_run_by_run_id(&dag_id, "seed_000060")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store.list_task_instances(kept.id).await.unwrap().len() as i64,
            tasks
        );
    })
    .await;
}

#[test]
fn db_clean_flags_are_checked() {
    let home = tempfile::tempdir().unwrap();
    for (args, message) in [
        (vec!["db", "clean"], "--older-than"),
        (
            vec!["db", "clean", "--older-than", "90"],
            "write e.g. 30s or 5m",
        ),
        (
            vec!["db", "clean", "--older-than", "90d", "--dag", "a b"],
            "invalid dag id",
        ),
    ] {
        let mut command = updraft(home.path());
        command.args(&args);
        let (code, _, stderr) = run(command);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_scheduler_with_a_retention_cleans_as_it_starts_and_keeps_scheduling() {
    each_backend(|db| async move {
        let home = tempfile::tempdir().unwrap();
        let store = db.store().await;
        seed(&store).await;
        let mut command = updraft(home.path());
        command
            .args(["--database-url", db.url(), "--dags-folder"])
            .arg(repo().join("dags"))
            .args(["scheduler", "--retention", "30d"])
            .env("UPDRAFT_LOG", "info");
        let stderr = home.path().join("scheduler.stderr");
        let mut scheduler = common::Running::start(command, &stderr, 0);
        let start = std::time::Instant::now();
        while runs_left(&store).await.len() != 30 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "no clean: {}",
                scheduler.stderr()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert_eq!(
            runs_left(&store).await.first().map(String::as_str),
            Some("seed_000031")
        );
        // It still schedules: its heartbeat goes on after the clean.
        let beat = store.last_scheduler_heartbeat().await.unwrap().unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        assert!(store.last_scheduler_heartbeat().await.unwrap().unwrap() > beat);
        assert!(
            scheduler
                .stderr()
                .contains("retention: deleted what ended before")
        );
        assert_eq!(
            scheduler.terminate(std::time::Duration::from_secs(10)),
            Some(0)
        );
    })
    .await;
}

#[test]
fn a_try_that_prints_too_much_is_stored_up_to_the_cap_and_says_where_it_was_cut() {
    let world = common::world::World::new();
    world.dag(
        "loud",
        "version: 1\ntasks:\n  loud:\n    run: |\n      echo first line\n      head -c 3000000 /dev/zero | tr '\\\\0' x\n      echo\n      echo last line\n",
    );
    let standalone = world.standalone("standalone", &["--max-log-size", "1MB"]);
    let run_id = world.trigger("loud");
    let runs = world.finished_runs("loud", 1, &[&standalone]);
    assert_eq!(runs[0]["state"], "success", "{runs:?}");
    let log = world.log("loud", &run_id, "loud", 1);
    assert!(log.starts_with("first line\n"), "{}", &log[..100]);
    assert!(
        log.contains("\nupdraft: the log is cut here, at 1048576 bytes"),
        "no cut mark"
    );
    assert!(
        !log.contains("last line"),
        "what follows the cut is not stored"
    );
    // 11 + 3,000,000 + 1 + 10 bytes written, 1,048,576 stored.
    assert!(
        log.contains("updraft: 1951446 bytes of the command's output were not stored\n"),
        "{}",
        &log[log.len().saturating_sub(400)..]
    );
    assert!(
        log.ends_with("updraft: exited with code 0; success\n"),
        "{}",
        &log[log.len() - 200..]
    );
    assert!(log.len() < 1_048_576 + 1000, "{} bytes stored", log.len());
}

#[test]
fn max_log_size_is_checked() {
    let world = common::world::World::new();
    for size in ["0", "1TB", "lots"] {
        let (code, _, stderr) = run(world.command(&["worker", "--max-log-size", size]));
        assert_eq!(code, 2, "{size}: {stderr}");
        assert!(
            stderr.contains("write e.g. 512KB, 20MB or 1GB"),
            "{size}: {stderr}"
        );
    }
}
