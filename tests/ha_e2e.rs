//! Highly available schedulers end to end (issue 6): three `updraft scheduler` processes and two
//! `updraft worker` processes on one Postgres database, under a load of catch-up runs of several
//! DAGs whose limits bind (`max_active_runs`, `max_active_tasks`, a pool), one scheduler killed
//! with SIGKILL midway. Afterwards the invariants are checked against the database and against
//! what the tasks recorded (see `common::world::TASK_SH`): every run exists once per logical
//! date, every task instance ran one try, once, and no limit was ever exceeded.
//!
//! The limits are checked two ways: from the tasks' own clocks (when each process started and
//! ended: a task instance holds its slot for longer than its process runs, so these intervals
//! may never overlap more than the limit allows), and by sampling the database while the load
//! runs (running runs per DAG).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::max_overlap;
use common::world::{Record, World, block_on};
use updraft_core::ids::DagId;
use updraft_core::state::{DagRunState, TaskState};

const DAGS: usize = 6;
const RUNS_PER_DAG: u32 = 10;
const MAX_ACTIVE_RUNS: usize = 2;
const MAX_ACTIVE_TASKS: usize = 3;
/// Slots of the pool every `b` task of every DAG uses.
const NARROW_SLOTS: usize = 3;
/// The five tasks of each run: a, then b (in the pool), c and d, then e.
const TASKS: [&str; 5] = ["a", "b", "c", "d", "e"];

/// DAG `ha_<n>`: daily catch-up runs from 2024-01-01, its task ids prefixed with `d<n>_` so
/// that the tasks' records (kept by run id and task id) of different DAGs never mix.
fn dag(n: usize) -> String {
    format!(
        r#"
version: 1
schedule: "@daily"
start_date: 2024-01-01
end_date: 2024-01-{RUNS_PER_DAG:02}
catchup: true
max_active_runs: {MAX_ACTIVE_RUNS}
max_active_tasks: {MAX_ACTIVE_TASKS}
env:
  WORK: "@WORK@"
tasks:
  d{n}_a:
    run: sh "$WORK/task.sh" 0.3
  d{n}_b:
    depends_on: d{n}_a
    pool: narrow
    run: sh "$WORK/task.sh" 0.4
  d{n}_c:
    depends_on: d{n}_a
    run: sh "$WORK/task.sh" 0.3
  d{n}_d:
    depends_on: d{n}_a
    run: sh "$WORK/task.sh" 0.3
  d{n}_e:
    depends_on: [d{n}_b, d{n}_c, d{n}_d]
    run: sh "$WORK/task.sh" 0.2
"#
    )
}

/// The most runs of each DAG the database said were running at once, sampled every few
/// milliseconds by a thread of its own until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(HashMap<String, usize>, usize)>,
}

impl Sampler {
    fn start(world: &World) -> Sampler {
        let url = world.database_url.clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            block_on(async move {
                let store = updraft_metadata::Store::open(&url).await.unwrap();
                let mut most: HashMap<String, usize> = HashMap::new();
                let mut samples = 0;
                while !stopping.load(Ordering::SeqCst) {
                    // One query: a consistent snapshot of the runs.
                    let Ok(runs) = store.list_unfinished_runs().await else {
                        continue;
                    };
                    samples += 1;
                    let mut running: HashMap<String, usize> = HashMap::new();
                    for run in runs.iter().filter(|r| r.state == DagRunState::Running) {
                        *running.entry(run.dag_id.to_string()).or_default() += 1;
                    }
                    for (dag, count) in running {
                        let seen = most.entry(dag).or_default();
                        *seen = (*seen).max(count);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                store.close().await;
                (most, samples)
            })
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> (HashMap<String, usize>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

#[test]
fn three_schedulers_under_load_create_and_queue_everything_once_within_the_limits() {
    let Some((world, _database)) = World::on_postgres() else {
        return;
    };
    world.ok(&["pools", "set", "narrow", &NARROW_SLOTS.to_string()]);
    for n in 0..DAGS {
        world.dag(&format!("ha_{n}"), &dag(n));
    }
    let sampler = Sampler::start(&world);
    let workers = [
        world.start("w1", &["worker", "--name", "w1", "--concurrency", "8"], 0),
        world.start("w2", &["worker", "--name", "w2", "--concurrency", "8"], 0),
    ];
    let mut schedulers: Vec<_> = (1..=3)
        .map(|i| world.start(&format!("scheduler.{i}"), &["scheduler"], 0))
        .collect();
    let total_runs = DAGS * RUNS_PER_DAG as usize;

    // Midway, one scheduler dies without a chance to clean up; the other two go on.
    let deadline = Duration::from_secs(240);
    let started = Instant::now();
    let finished_runs = |world: &World| -> usize {
        world.with_store(async |store| {
            let mut finished = 0;
            for n in 0..DAGS {
                let dag_id = DagId::parse(&format!("ha_{n}")).unwrap();
                let runs = store.list_dag_runs(&dag_id, None, 100, 0).await.unwrap();
                finished += runs.iter().filter(|run| run.state.is_finished()).count();
            }
            finished
        })
    };
    loop {
        let finished = finished_runs(&world);
        if finished >= total_runs / 3 {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "only {finished} runs finished"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    schedulers[1].kill9();
    let killed_at_runs = finished_runs(&world);
    loop {
        let finished = finished_runs(&world);
        if finished >= total_runs {
            break;
        }
        if started.elapsed() > deadline {
            let stderr: Vec<String> = schedulers
                .iter()
                .chain(&workers)
                .map(|p| p.stderr())
                .collect();
            panic!(
                "{finished} of {total_runs} runs finished\n{}",
                stderr.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = started.elapsed();
    let (most_running, samples) = sampler.finish();
    // Ticks that failed (a deadlock between schedulers, say) are retried and lose nothing, but
    // they are worth knowing about.
    let mut created_by = Vec::new();
    for (i, scheduler) in schedulers.iter().enumerate() {
        let failed = scheduler.stderr().matches("scheduler tick failed").count();
        let created = scheduler.stderr().matches("created a run").count();
        eprintln!(
            "scheduler {}: created {created} run(s), {failed} failed tick(s)",
            i + 1
        );
        created_by.push(created);
        assert!(
            !scheduler.stderr().contains("deadlock"),
            "{}",
            scheduler.stderr()
        );
    }
    // The schedulers shared the work, and each run was created by exactly one of them.
    assert_eq!(
        created_by.iter().sum::<usize>(),
        total_runs,
        "{created_by:?}"
    );
    assert!(
        created_by.iter().filter(|created| **created > 0).count() >= 2,
        "{created_by:?}"
    );
    eprintln!(
        "{total_runs} runs of {DAGS} DAGs in {took:?} with three schedulers (one killed after \
         {killed_at_runs} runs), {samples} samples of the running runs"
    );

    // Each (DAG, logical date) once, every run a success.
    let records = world.records();
    let mut checked_instances = 0;
    for n in 0..DAGS {
        let dag_id = format!("ha_{n}");
        let runs = world.runs(&dag_id);
        let dates: Vec<&str> = runs
            .iter()
            .map(|run| run["logical_date"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (1..=RUNS_PER_DAG)
            .map(|day| format!("2024-01-{day:02}T00:00:00Z"))
            .collect();
        assert_eq!(dates, expected, "{dag_id}: one run per logical date");
        for run in &runs {
            assert_eq!(run["state"], "success", "{run}");
        }

        // Each task instance queued, claimed and run once: one try in the database, one start
        // in its record, one `try_ended` event.
        let mut intervals_of_dag = Vec::new();
        let mut run_spans = Vec::new();
        for run in &runs {
            let run_id = run["run_id"].as_str().unwrap();
            let instances = world.instances(&dag_id, run_id);
            assert_eq!(instances.len(), TASKS.len(), "{dag_id} {run_id}");
            let mut span = (f64::MAX, f64::MIN);
            for (task_id, (instance, tries)) in &instances {
                let what = format!("{dag_id} {run_id} {task_id}");
                assert_eq!(
                    (instance.state, instance.try_number),
                    (TaskState::Success, 1),
                    "{what}"
                );
                assert_eq!(tries.len(), 1, "{what}: {tries:?}");
                let record: &Record = &records[&(run_id.to_owned(), task_id.clone())];
                assert_eq!(
                    record.tries.len(),
                    1,
                    "{what} ran more than once: {}",
                    record.text
                );
                record.assert_one_try_at_a_time(&what);
                let ran = &record.tries[0];
                let interval = (ran.start, ran.end.unwrap());
                intervals_of_dag.push(interval);
                span = (span.0.min(interval.0), span.1.max(interval.1));
                checked_instances += 1;
            }
            run_spans.push(span);
        }
        // A DAG's task instances never ran more than max_active_tasks at once, nor its runs
        // (each at least as long as its tasks ran) more than max_active_runs.
        assert!(
            max_overlap(&intervals_of_dag) <= MAX_ACTIVE_TASKS,
            "{dag_id}: {} task instances ran at once",
            max_overlap(&intervals_of_dag)
        );
        assert!(
            max_overlap(&run_spans) <= MAX_ACTIVE_RUNS,
            "{dag_id}: {} runs ran at once",
            max_overlap(&run_spans)
        );
        assert!(
            most_running.get(&dag_id).copied().unwrap_or(0) <= MAX_ACTIVE_RUNS,
            "{dag_id}: the database said {:?} runs were running at once",
            most_running.get(&dag_id)
        );

        // Each run started and finished once, each try ended once (the event log is written in
        // the transaction of each change).
        let events = world.with_store(async |store| {
            let dag_id = DagId::parse(&dag_id).unwrap();
            store.list_events(Some(&dag_id), 10_000).await.unwrap()
        });
        let mut counts: BTreeMap<(String, String, String), usize> = BTreeMap::new();
        for event in &events {
            let key = (
                event.event.clone(),
                event.run_id.clone().unwrap_or_default(),
                event
                    .task_id
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            );
            *counts.entry(key).or_default() += 1;
        }
        for ((event, run_id, task_id), count) in &counts {
            assert_eq!(
                *count, 1,
                "{dag_id}: {event} of {run_id} {task_id} {count} times"
            );
        }
        let kinds: BTreeSet<&str> = counts.keys().map(|(event, _, _)| event.as_str()).collect();
        assert_eq!(
            kinds,
            BTreeSet::from(["run_finished", "run_started", "try_ended"]),
            "{dag_id}"
        );
        assert_eq!(
            counts.len(),
            runs.len() * (2 + TASKS.len()),
            "{dag_id}: an event for each start, end and try"
        );
    }
    assert_eq!(checked_instances, total_runs * TASKS.len());

    // The pool's slots were never exceeded across the DAGs.
    let narrow: Vec<(f64, f64)> = records
        .iter()
        .filter(|((_, task), _)| task.ends_with("_b"))
        .map(|(_, record)| (record.tries[0].start, record.tries[0].end.unwrap()))
        .collect();
    assert_eq!(narrow.len(), total_runs);
    assert!(
        max_overlap(&narrow) <= NARROW_SLOTS,
        "{} tasks of pool narrow ran at once",
        max_overlap(&narrow)
    );
    // The limits bound: without them more would have run at once (the test tests something).
    let all: Vec<(f64, f64)> = records
        .values()
        .map(|record| (record.tries[0].start, record.tries[0].end.unwrap()))
        .collect();
    assert!(
        max_overlap(&all) > MAX_ACTIVE_TASKS,
        "the load never ran more than {} task instances at once",
        max_overlap(&all)
    );

    // Nothing more is created later.
    std::thread::sleep(Duration::from_secs(1));
    let runs: usize = (0..DAGS)
        .map(|n| world.runs(&format!("ha_{n}")).len())
        .sum();
    assert_eq!(runs, total_runs);
    drop(workers);
    schedulers.clear();
}
