//! The worker loop against a real database (both backends).

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use updraft_core::ids::{DagId, TaskId};
use updraft_core::state::{RunType, TaskState};
use updraft_executor::worker::{Settings, Worker};
use updraft_metadata::testing::each_backend;
use updraft_metadata::{CreateOutcome, DagSync, NewDagRun, NewTaskInstance, WorkerRef};

#[tokio::test]
async fn a_try_claimed_under_its_name_that_it_never_started_is_ended() {
    each_backend(|db| async move {
        let store = db.store().await;
        let now = Utc::now();
        let dag_id = DagId::parse("lost").unwrap();
        store
            .upsert_dag(
                &DagSync {
                    dag_id: dag_id.clone(),
                    fileloc: "dags/lost.yaml".to_owned(),
                    owner: String::new(),
                    description: None,
                    tags: vec![],
                    schedule: None,
                    timezone: "UTC".to_owned(),
                    max_active_runs: 16,
                    max_active_tasks: 16,
                    paused_on_creation: false,
                    version_hash: "v1".to_owned(),
                    serialized: json!({}),
                    source: String::new(),
                },
                now,
            )
            .await
            .unwrap();
        let run = NewDagRun {
            dag_id,
            run_id: "r".to_owned(),
            run_type: RunType::Manual,
            logical_date: now,
            data_interval_start: now,
            data_interval_end: now,
            run_after: now,
            conf: json!({}),
            version_hash: "v1".to_owned(),
            backfill_id: None,
        };
        let CreateOutcome::Created(run) = store.create_dag_run(&run, now).await.unwrap() else {
            panic!("exists");
        };
        let ti = store
            .create_task_instances(
                run.id,
                &[NewTaskInstance {
                    task_id: TaskId::parse("t").unwrap(),
                    max_tries: 0,
                    pool: "default_pool".to_owned(),
                    pool_slots: 1,
                    queue: "elsewhere".to_owned(),
                    priority_weight: 1,
                    rendered_command: None,
                }],
                now,
            )
            .await
            .unwrap()
            .remove(0);
        store
            .set_task_states(&[(ti.id, TaskState::None, TaskState::Scheduled)], now)
            .await
            .unwrap();
        store
            .queue_task_instances(&[(ti.id, json!({"error": "unused"}))], now)
            .await
            .unwrap();

        let (stop, stopping) = tokio::sync::watch::channel(false);
        let worker = Worker::new(
            store.clone(),
            Settings {
                id: "w1".to_owned(),
                hostname: "host".to_owned(),
                queues: vec!["default".to_owned()],
                concurrency: 2,
                poll_interval: Duration::from_millis(100),
                heartbeat_interval: Duration::from_millis(200),
                echo: false,
                only_run: None,
            },
        );
        let worker = tokio::spawn(worker.run(async move {
            let mut stopping = stopping;
            let _ = stopping.wait_for(|stop| *stop).await;
        }));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A claim under w1's name whose answer never reached w1 (it serves no such queue).
        let claimed = store
            .claim_task_instances(
                WorkerRef {
                    id: "w1",
                    hostname: "host",
                },
                &["elsewhere".to_owned()],
                None,
                1,
                Utc::now(),
            )
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);

        let start = std::time::Instant::now();
        let ended = loop {
            let current = store.get_task_instance(ti.id).await.unwrap().unwrap();
            if current.state != TaskState::Running {
                break current;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the lost try was never ended"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(ended.state, TaskState::Failed, "no retries left");
        let log = store.read_task_log(ti.id, 1, 0, 100).await.unwrap();
        let text: Vec<u8> = log.into_iter().flat_map(|chunk| chunk.data).collect();
        assert!(
            String::from_utf8_lossy(&text).contains("never started this try"),
            "{}",
            String::from_utf8_lossy(&text)
        );
        stop.send_replace(true);
        worker.await.unwrap().unwrap();
    })
    .await;
}
