//! Connecting, migrating and the schema check, on both backends.

use chrono::{DateTime, TimeZone, Utc};
use updraft_core::ids::{DagId, TaskId};
use updraft_core::state::{TaskMove, TaskState};
use updraft_metadata::testing::{TestDatabase, each_backend};
use updraft_metadata::{
    Backend, CreateOutcome, DagSync, Error, NewDagRun, NewEvent, NewTaskInstance, QueueRequest,
    SchemaStatus, Store,
};

/// The migrations this build knows: the files of `migrations/sqlite` (those of
/// `migrations/postgres` match them one for one).
fn known() -> i64 {
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/sqlite");
    std::fs::read_dir(folder)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.path().extension().is_some_and(|e| e == "sql"))
        })
        .count() as i64
}

#[tokio::test]
async fn a_new_database_is_unmigrated_until_migrate_makes_it_current() {
    each_backend(|db| async move {
        let store = db.connect().await;
        assert_eq!(
            store.schema_status().await.unwrap(),
            SchemaStatus::Unmigrated {
                applied: 0,
                known: known() as usize,
                missing: (1..=known()).collect()
            }
        );
        assert_eq!(
            store.migrate().await.unwrap(),
            (1..=known()).collect::<Vec<_>>()
        );
        assert_eq!(
            store.schema_status().await.unwrap(),
            SchemaStatus::Current { version: known() }
        );
        assert_eq!(store.migrate().await.unwrap(), Vec::<i64>::new());
    })
    .await;
}

#[tokio::test]
async fn open_refuses_an_unmigrated_database_and_says_to_migrate() {
    each_backend(|db| async move {
        let error = Store::open(db.url()).await.unwrap_err();
        assert!(matches!(error, Error::Schema(_)), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "database at {} is not migrated (0 of {} migrations applied): \
                 run \"updraft db migrate\"",
                db.url(),
                known()
            )
        );
        db.store().await;
        let store = Store::open(db.url()).await.unwrap();
        assert_eq!(store.backend(), db.backend());
    })
    .await;
}

#[tokio::test]
async fn a_newer_schema_is_refused_by_open_and_by_migrate() {
    each_backend(|db| async move {
        db.store().await;
        // Leaked: raw test SQL is `'static`, as every query of the store is.
        let newer = format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                 execution_time) \
             VALUES ({}, 'from a newer updraft', TRUE, '', 0)",
            known() + 1
        );
        db.execute(newer.leak()).await;
        let store = db.connect().await;
        assert_eq!(
            store.schema_status().await.unwrap(),
            SchemaStatus::Newer {
                database_version: known() + 1,
                known_version: known()
            }
        );
        let message = format!(
            "database schema version {} is newer than this updraft (knows up to {}): \
             upgrade updraft",
            known() + 1,
            known()
        );
        assert_eq!(
            Store::open(db.url()).await.unwrap_err().to_string(),
            message
        );
        assert_eq!(store.migrate().await.unwrap_err().to_string(), message);
    })
    .await;
}

#[tokio::test]
async fn a_failed_migration_is_dirty() {
    each_backend(|db| async move {
        db.store().await;
        db.execute("UPDATE _sqlx_migrations SET success = FALSE WHERE version = 1")
            .await;
        let store = db.connect().await;
        assert_eq!(
            store.schema_status().await.unwrap(),
            SchemaStatus::Dirty { version: 1 }
        );
        let error = Store::open(db.url()).await.unwrap_err().to_string();
        assert!(error.contains("has a failed migration 1"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn a_migration_changed_after_it_was_applied_is_reported() {
    each_backend(|db| async move {
        db.store().await;
        db.execute("UPDATE _sqlx_migrations SET checksum = '' WHERE version = 1")
            .await;
        let store = db.connect().await;
        assert_eq!(
            store.schema_status().await.unwrap(),
            SchemaStatus::Modified { version: 1 }
        );
        assert!(matches!(
            store.migrate().await.unwrap_err(),
            Error::Schema(_)
        ));
    })
    .await;
}

#[tokio::test]
async fn times_are_stored_to_the_microsecond_on_both_backends() {
    each_backend(|db| async move {
        let store = db.store().await;
        let at = Utc.with_ymd_and_hms(2024, 3, 31, 1, 30, 0).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        let event = store
            .append_event(&NewEvent {
                at,
                actor: "ada".to_owned(),
                dag_id: None,
                run_id: None,
                task_id: None,
                event: "probe".to_owned(),
                details: serde_json::json!({}),
            })
            .await
            .unwrap();
        let expected: DateTime<Utc> = "2024-03-31T01:30:00.123456Z".parse().unwrap();
        assert_eq!(event.at, expected);
    })
    .await;
}

#[tokio::test]
async fn sqlite_creates_the_file_and_its_folder_in_wal_mode() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("home/updraft/updraft.db");
    let store = Store::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert!(path.exists());
    // The write-ahead log sits next to the database while connections are open.
    assert!(path.with_file_name("updraft.db-wal").exists());
    store.close().await;
}

#[tokio::test]
async fn sqlite_in_memory_works_for_one_process() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(
        store.schema_status().await.unwrap(),
        SchemaStatus::Current { version: known() }
    );
    assert_eq!(store.list_pools().await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_unsupported_url_is_refused_without_its_password() {
    let error = Store::connect("mysql://ada:s3cret@db/updraft")
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "unsupported database url 'mysql://ada:***@db/updraft': \
         use postgres://USER@HOST:PORT/DATABASE or sqlite:PATH"
    );
}

#[tokio::test]
async fn a_malformed_url_is_invalid_and_redacted() {
    let error = Store::connect("postgres://ada:s3cret@localhost:port/updraft")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidUrl { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with("invalid database url 'postgres://ada:***@localhost:port/updraft': "),
        "{message}"
    );
}

#[tokio::test]
async fn an_unreachable_postgres_is_named_without_its_password() {
    // Nothing listens on port 1 of the loopback.
    let error = Store::connect("postgres://ada:s3cret@127.0.0.1:1/updraft")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with(
            "cannot connect to the database at postgres://ada:***@127.0.0.1:1/updraft: "
        ),
        "{message}"
    );
    assert!(!message.contains("s3cret"));
}

#[tokio::test]
async fn the_store_reports_its_backend_and_redacted_url() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let store = db.connect().await;
    assert_eq!(store.backend(), Backend::Sqlite);
    assert_eq!(store.url(), db.url());
    assert_eq!(
        Backend::of_url("postgresql://localhost/updraft"),
        Some(Backend::Postgres)
    );
    assert_eq!(Backend::of_url("mysql://localhost"), None);
}

#[tokio::test]
async fn several_processes_migrating_a_new_database_at_once_all_succeed() {
    // Every process migrates the SQLite file it opens: a scheduler and a worker started
    // together race on a new file. Each store has its own pool, as each process would.
    each_backend(|db| async move {
        let (a, b, c) = (db.connect().await, db.connect().await, db.connect().await);
        let (ra, rb, rc) = tokio::join!(a.migrate(), b.migrate(), c.migrate());
        for result in [ra, rb, rc] {
            result.unwrap();
        }
        assert_eq!(
            a.schema_status().await.unwrap(),
            SchemaStatus::Current { version: known() }
        );
        for store in [a, b, c] {
            store.close().await;
        }
    })
    .await;
}

#[tokio::test]
async fn migration_7_sends_what_an_earlier_version_queued_back_to_be_planned() {
    each_backend(|db| async move {
        let store = db.store().await;
        let now = Utc::now();
        let dag_id = DagId::parse("d").unwrap();
        let sync = DagSync {
            dag_id: dag_id.clone(),
            fileloc: "d.yaml".to_owned(),
            owner: "o".to_owned(),
            description: None,
            tags: Vec::new(),
            schedule: None,
            timezone: "UTC".to_owned(),
            max_active_runs: 16,
            max_active_tasks: 16,
            paused_on_creation: false,
            version_hash: "v1".to_owned(),
            serialized: serde_json::json!({}),
            source: String::new(),
        };
        store.upsert_dag(&sync, now).await.unwrap();
        let run = NewDagRun::manual(dag_id, "v1".to_owned(), now, serde_json::json!({}), now);
        let CreateOutcome::Created(run) = store.create_dag_run(&run, now).await.unwrap() else {
            panic!("a new run");
        };
        let task = |id: &str| NewTaskInstance {
            task_id: TaskId::parse(id).unwrap(),
            max_tries: 0,
            pool: "default_pool".to_owned(),
            pool_slots: 1,
            queue: "default".to_owned(),
            priority_weight: 1,
            rendered_command: None,
        };
        let instances = store
            .create_task_instances(run.id, &[task("queued"), task("waiting")], now)
            .await
            .unwrap();
        let queued = instances[0].id;
        store
            .set_task_states(
                &[TaskMove {
                    task_instance: queued,
                    from: TaskState::None,
                    to: TaskState::Scheduled,
                }],
                now,
            )
            .await
            .unwrap();
        // What an earlier version stored: a bare rendered command.
        let legacy = serde_json::json!({"command": {"run": "true"}, "env": {}});
        store
            .queue_task_instances(
                &[QueueRequest {
                    task_instance: queued,
                    plan: legacy,
                    rate_limit: None,
                }],
                now,
            )
            .await
            .unwrap();

        db.execute(match db.backend() {
            Backend::Postgres => include_str!("../../migrations/postgres/0007_try_plans.sql"),
            Backend::Sqlite => include_str!("../../migrations/sqlite/0007_try_plans.sql"),
        })
        .await;
        let after = store
            .get_task_instances(&[queued, instances[1].id])
            .await
            .unwrap();
        assert_eq!(after[0].state, TaskState::Scheduled);
        assert_eq!(after[0].rendered_command, None);
        assert_eq!(after[0].queued_at, None);
        assert_eq!(after[1].state, TaskState::None, "only queued ones move");
    })
    .await;
}
