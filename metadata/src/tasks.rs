//! Tables `task_instance`, `task_try`, `task_log` and `task_output`: one task in one run, its
//! attempts, their logs, and what it handed downstream.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use updraft_core::ids::{DagId, DagRunId, TaskId, TaskInstanceId, TryKey};
use updraft_core::state::{TaskMove, TaskState};

use crate::db::{Row, Tx, query, query_split};
use crate::{Error, RunStart, Store};

/// How often an append races another writer of the same try for the next `seq` before giving
/// up. Each round loses only to a writer that committed, so this is only reached when several
/// write one try at the same moment.
const LOG_APPEND_ATTEMPTS: usize = 5;

/// A row of `task_instance`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskInstance {
    pub id: TaskInstanceId,
    pub dag_run_id: DagRunId,
    pub dag_id: DagId,
    pub run_id: String,
    pub task_id: TaskId,
    pub state: TaskState,
    /// Tries started so far; the running or last try has this number.
    pub try_number: i32,
    /// The try number after which no retry is left.
    pub max_tries: i32,
    pub pool: String,
    pub pool_slots: i32,
    pub queue: String,
    pub priority_weight: i32,
    pub queued_at: Option<DateTime<Utc>>,
    /// When its running or last try started.
    pub start_date: Option<DateTime<Utc>>,
    /// When its first try since it was created or cleared started.
    pub first_start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub next_retry_at: Option<DateTime<Utc>>,
    /// When it missed its task's deadline (once).
    pub deadline_missed_at: Option<DateTime<Utc>>,
    pub worker_id: Option<String>,
    pub hostname: Option<String>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// The command with its templates rendered.
    pub rendered_command: Option<serde_json::Value>,
    pub updated_at: DateTime<Utc>,
}

/// A task instance to create in a run; it starts in state `none` with no try.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTaskInstance {
    pub task_id: TaskId,
    pub max_tries: i32,
    pub pool: String,
    pub pool_slots: i32,
    pub queue: String,
    pub priority_weight: i32,
    pub rendered_command: Option<serde_json::Value>,
}

/// A row of `task_try`: one attempt of a task instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskTry {
    pub task_instance_id: TaskInstanceId,
    pub try_number: i32,
    pub state: TaskState,
    pub worker_id: Option<String>,
    pub hostname: Option<String>,
    pub pid: Option<i32>,
    pub start_date: DateTime<Utc>,
    pub end_date: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
}

/// A try that has started: the input of [`Store::insert_task_try`]. It is `running`.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTaskTry {
    pub key: TryKey,
    pub worker_id: Option<String>,
    pub hostname: Option<String>,
    pub pid: Option<i32>,
    pub start_date: DateTime<Utc>,
}

/// A chunk of a try's log. Chunks are numbered 1, 2, ... in the order they were appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub seq: i64,
    /// Raw output: a chunk may end in the middle of a UTF-8 character.
    pub data: Vec<u8>,
}

/// One `key=value` output of a task instance, with the task that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskOutput {
    pub task_id: TaskId,
    pub name: String,
    pub value: String,
}

impl TaskInstance {
    /// The key of its running or last try.
    pub fn try_key(&self) -> TryKey {
        TryKey {
            task_instance: self.id,
            try_number: self.try_number,
        }
    }

    pub(crate) fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(TaskInstance {
            id: row.row_id("id")?,
            dag_run_id: row.row_id("dag_run_id")?,
            dag_id: row.id("dag_id")?,
            run_id: row.get("run_id")?,
            task_id: row.id("task_id")?,
            state: row.name("state")?,
            try_number: row.get("try_number")?,
            max_tries: row.get("max_tries")?,
            pool: row.get("pool")?,
            pool_slots: row.get("pool_slots")?,
            queue: row.get("queue")?,
            priority_weight: row.get("priority_weight")?,
            queued_at: row.get("queued_at")?,
            start_date: row.get("start_date")?,
            first_start_date: row.get("first_start_date")?,
            end_date: row.get("end_date")?,
            next_retry_at: row.get("next_retry_at")?,
            deadline_missed_at: row.get("deadline_missed_at")?,
            worker_id: row.get("worker_id")?,
            hostname: row.get("hostname")?,
            heartbeat_at: row.get("heartbeat_at")?,
            rendered_command: row.get("rendered_command")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

impl TaskTry {
    fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        Ok(TaskTry {
            task_instance_id: row.row_id("task_instance_id")?,
            try_number: row.get("try_number")?,
            state: row.name("state")?,
            worker_id: row.get("worker_id")?,
            hostname: row.get("hostname")?,
            pid: row.get("pid")?,
            start_date: row.get("start_date")?,
            end_date: row.get("end_date")?,
            exit_code: row.get("exit_code")?,
        })
    }
}

impl Store {
    /// Creates the task instances of run `dag_run_id` in one transaction, in state `none`, and
    /// returns the ones created in the order given. A task that already has an instance in the
    /// run is left as it is (so this also fills in tasks a new DAG version added).
    /// [`Error::NotFound`] for an unknown run. The scheduler creates them as it starts a run;
    /// the bench and the tests create them by hand (feature `scratch`).
    #[cfg(feature = "scratch")]
    pub async fn create_task_instances(
        &self,
        dag_run_id: DagRunId,
        tasks: &[NewTaskInstance],
        now: DateTime<Utc>,
    ) -> Result<Vec<TaskInstance>, Error> {
        let mut tx = self.begin("create task instances").await?;
        let run = tx
            .fetch_optional(
                query(
                    "read a dag run",
                    "SELECT dag_id, run_id FROM dag_run WHERE id = $1",
                )
                .bind(dag_run_id),
                |row| Ok((row.get::<String>("dag_id")?, row.get::<String>("run_id")?)),
            )
            .await?;
        let Some((dag_id, run_id)) = run else {
            return Err(Error::NotFound(format!("dag run {dag_run_id}")));
        };
        let mut created = Vec::with_capacity(tasks.len());
        for task in tasks {
            // Nothing when the run has an instance of that task already.
            let insert = query(
                "create a task instance",
                "INSERT INTO task_instance (dag_run_id, dag_id, run_id, task_id, state, \
                     try_number, max_tries, pool, pool_slots, queue, priority_weight, \
                     rendered_command, updated_at) \
                 VALUES ($1, $2, $3, $4, 'none', 0, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (dag_run_id, task_id) DO NOTHING \
                 RETURNING *",
            )
            .bind(dag_run_id)
            .bind(dag_id.as_str())
            .bind(run_id.as_str())
            .bind(task.task_id.as_str())
            .bind(task.max_tries)
            .bind(task.pool.as_str())
            .bind(task.pool_slots)
            .bind(task.queue.as_str())
            .bind(task.priority_weight)
            .bind(task.rendered_command.as_ref())
            .bind(now);
            if let Some(instance) = tx.fetch_optional(insert, TaskInstance::from_row).await? {
                created.push(instance);
            }
        }
        tx.commit("create task instances").await?;
        Ok(created)
    }

    pub async fn get_task_instance(
        &self,
        id: TaskInstanceId,
    ) -> Result<Option<TaskInstance>, Error> {
        self.fetch_optional(
            query(
                "read a task instance",
                "SELECT * FROM task_instance WHERE id = $1",
            )
            .bind(id),
            TaskInstance::from_row,
        )
        .await
    }

    /// The task instances of `ids` (those that exist), by id.
    pub async fn get_task_instances(
        &self,
        ids: &[TaskInstanceId],
    ) -> Result<Vec<TaskInstance>, Error> {
        let ids = serde_json::json!(ids);
        self.fetch_all(
            query_split(
                "read task instances",
                "SELECT * FROM task_instance \
                 WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1)::bigint)) ORDER BY id",
                "SELECT * FROM task_instance \
                 WHERE id IN (SELECT value FROM json_each($1)) ORDER BY id",
            )
            .bind(&ids),
            TaskInstance::from_row,
        )
        .await
    }

    /// The task instances of a run, in the order they were created.
    pub async fn list_task_instances(
        &self,
        dag_run_id: DagRunId,
    ) -> Result<Vec<TaskInstance>, Error> {
        self.fetch_all(
            query(
                "list task instances",
                "SELECT * FROM task_instance WHERE dag_run_id = $1 ORDER BY id",
            )
            .bind(dag_run_id),
            TaskInstance::from_row,
        )
        .await
    }

    /// The task instances of several runs (the grid: the runs a page shows x their tasks), by
    /// run and creation order. Reads only those runs' rows, however many the table holds.
    pub async fn list_task_instances_of_runs(
        &self,
        dag_run_ids: &[DagRunId],
    ) -> Result<Vec<TaskInstance>, Error> {
        let ids = serde_json::json!(dag_run_ids);
        self.fetch_all(
            query_split(
                "list task instances of runs",
                "SELECT * FROM task_instance \
                 WHERE dag_run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1)::bigint)) \
                 ORDER BY dag_run_id, id",
                "SELECT * FROM task_instance \
                 WHERE dag_run_id IN (SELECT value FROM json_each($1)) \
                 ORDER BY dag_run_id, id",
            )
            .bind(&ids),
            TaskInstance::from_row,
        )
        .await
    }

    /// Compare-and-set of a task instance's state: moves `id` from `expected` to `new` and
    /// returns true, or returns false (and writes nothing) when its state is not `expected`
    /// any more, e.g. because another scheduler or worker moved it first. A move
    /// `TaskState::can_move_to` forbids is an error before any write.
    ///
    /// Stamps `now` as `updated_at`, and as `queued_at` (to `queued`), `start_date` (to
    /// `running`, clearing `end_date`) or `end_date` (to a finished state or `up_for_retry`).
    /// A move (a user's mark) wakes the schedulers for the task instance's run.
    #[cfg(feature = "testing")]
    pub async fn set_task_state(
        &self,
        id: TaskInstanceId,
        expected: TaskState,
        new: TaskState,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let mut change = self.change("change a task instance's state").await?;
        let moved = change
            .set_task_states(
                &[TaskMove {
                    task_instance: id,
                    from: expected,
                    to: new,
                }],
                now,
            )
            .await?;
        change.commit_unrecorded().await?;
        Ok(moved == [true])
    }

    /// Applies several compare-and-sets of task instance states (as [`Store::set_task_state`]
    /// does one) in one transaction; returns, for each, whether it moved. Moving a `running`
    /// task instance away wakes the workers: the one running it kills the try. These are the
    /// scheduler's own moves (and a cancel's, whose run's move wakes the schedulers): the
    /// schedulers are not woken.
    #[cfg(feature = "scratch")]
    pub async fn set_task_states(
        &self,
        moves: &[TaskMove],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, Error> {
        check_moves(moves)?;
        if moves.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin("change task instance states").await?;
        let (moved, _) = move_task_states_in(&mut tx, moves, now).await?;
        let kills = kills(moves, &moved);
        if kills {
            self.notify_in(&mut tx, crate::Topic::Workers).await?;
        }
        tx.commit("change task instance states").await?;
        if kills {
            self.wake(crate::Topic::Workers);
        }
        Ok(moved)
    }

    /// The states of `task_ids` in the run of `dag_id` just before `logical_date` (by logical
    /// date), for `depends_on_past`; `None` when there is no earlier run.
    pub async fn previous_task_states(
        &self,
        dag_id: &DagId,
        logical_date: DateTime<Utc>,
    ) -> Result<Option<Vec<(TaskId, TaskState)>>, Error> {
        let previous = self
            .fetch_optional(
                query(
                    "find the previous run",
                    "SELECT id FROM dag_run WHERE dag_id = $1 AND logical_date < $2 \
                     ORDER BY logical_date DESC, id DESC LIMIT 1",
                )
                .bind(dag_id.as_str())
                .bind(logical_date),
                |row| row.row_id::<DagRunId>("id"),
            )
            .await?;
        let Some(previous) = previous else {
            return Ok(None);
        };
        let states = self
            .fetch_all(
                query(
                    "read the previous run's task states",
                    "SELECT task_id, state FROM task_instance WHERE dag_run_id = $1",
                )
                .bind(previous),
                |row| Ok((row.id("task_id")?, row.name("state")?)),
            )
            .await?;
        Ok(Some(states))
    }

    /// Records a started try, in state `running`. [`Error::Conflict`] when that try number is
    /// already recorded, [`Error::NotFound`] for an unknown task instance.
    #[cfg(feature = "testing")]
    pub async fn insert_task_try(&self, attempt: &NewTaskTry) -> Result<TaskTry, Error> {
        let insert = query(
            "record a task try",
            "INSERT INTO task_try (task_instance_id, try_number, state, worker_id, hostname, pid, \
                 start_date) \
             VALUES ($1, $2, 'running', $3, $4, $5, $6) \
             RETURNING *",
        )
        .bind(attempt.key.task_instance)
        .bind(attempt.key.try_number)
        .bind(attempt.worker_id.as_deref())
        .bind(attempt.hostname.as_deref())
        .bind(attempt.pid)
        .bind(attempt.start_date);
        match self.fetch_one(insert, TaskTry::from_row).await {
            Err(error) if error.is_unique_violation() => Err(Error::Conflict(format!(
                "{} is already recorded",
                attempt.key
            ))),
            Err(error) if error.is_foreign_key_violation() => Err(Error::NotFound(format!(
                "task instance {}",
                attempt.key.task_instance
            ))),
            result => result,
        }
    }

    /// Compare-and-set that ends a `running` try in `state` (a move `running` may make) at
    /// `now`; false when the try is not running (it ended already).
    #[cfg(feature = "testing")]
    pub async fn finish_task_try(
        &self,
        key: TryKey,
        state: TaskState,
        exit_code: Option<i32>,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        if !TaskState::Running.can_move_to(state) {
            return Err(Error::IllegalTaskTransition {
                from: TaskState::Running,
                to: state,
            });
        }
        let changed = self
            .execute(
                query(
                    "finish a task try",
                    "UPDATE task_try SET state = $3, exit_code = $4, end_date = $5 \
                     WHERE task_instance_id = $1 AND try_number = $2 AND state = 'running'",
                )
                .bind(key.task_instance)
                .bind(key.try_number)
                .bind(state.as_str())
                .bind(exit_code)
                .bind(now),
            )
            .await?;
        Ok(changed == 1)
    }

    /// The tries of a task instance, first to last.
    pub async fn list_task_tries(
        &self,
        task_instance_id: TaskInstanceId,
    ) -> Result<Vec<TaskTry>, Error> {
        self.fetch_all(
            query(
                "list task tries",
                "SELECT * FROM task_try WHERE task_instance_id = $1 ORDER BY try_number",
            )
            .bind(task_instance_id),
            TaskTry::from_row,
        )
        .await
    }

    /// The tries of every task instance of a run, by task instance, first to last (the gantt
    /// of a run: bounded by its tasks and their tries).
    pub async fn list_run_tries(&self, dag_run_id: DagRunId) -> Result<Vec<TaskTry>, Error> {
        self.fetch_all(
            query(
                "list the tries of a run",
                "SELECT t.* FROM task_try t \
                 JOIN task_instance ti ON ti.id = t.task_instance_id \
                 WHERE ti.dag_run_id = $1 ORDER BY t.task_instance_id, t.try_number",
            )
            .bind(dag_run_id),
            TaskTry::from_row,
        )
        .await
    }

    /// Appends a chunk to the log of a try and returns its `seq`. [`Error::NotFound`] when the
    /// try is not recorded.
    pub async fn append_task_log(&self, key: TryKey, data: &[u8]) -> Result<i64, Error> {
        let mut attempts = 0;
        loop {
            let append = query(
                "append to a task log",
                "INSERT INTO task_log (task_instance_id, try_number, seq, data) \
                 SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3 FROM task_log \
                 WHERE task_instance_id = $1 AND try_number = $2 \
                 RETURNING seq",
            )
            .bind(key.task_instance)
            .bind(key.try_number)
            .bind(data);
            attempts += 1;
            match self.fetch_one(append, |row| row.get::<i64>("seq")).await {
                // Another writer took this seq first; the next round sees its row.
                Err(error) if error.is_unique_violation() && attempts < LOG_APPEND_ATTEMPTS => {}
                Err(error) if error.is_foreign_key_violation() => {
                    return Err(Error::NotFound(key.to_string()));
                }
                result => return result,
            }
        }
    }

    /// Up to `limit` chunks of a try's log after chunk `after_seq` (0: from the start), in
    /// order. A reader following a live log passes the last `seq` it has.
    pub async fn read_task_log(
        &self,
        key: TryKey,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<LogChunk>, Error> {
        self.fetch_all(
            query(
                "read a task log",
                "SELECT seq, data FROM task_log \
                 WHERE task_instance_id = $1 AND try_number = $2 AND seq > $3 \
                 ORDER BY seq LIMIT $4",
            )
            .bind(key.task_instance)
            .bind(key.try_number)
            .bind(after_seq)
            .bind(limit),
            |row| {
                Ok(LogChunk {
                    seq: row.get("seq")?,
                    data: row.get("data")?,
                })
            },
        )
        .await
    }

    /// Records the outputs of a task instance in one transaction; a name written again takes
    /// the new value.
    #[cfg(feature = "testing")]
    pub async fn set_task_outputs(
        &self,
        task_instance_id: TaskInstanceId,
        outputs: &[(String, String)],
    ) -> Result<(), Error> {
        let mut tx = self.begin("record task outputs").await?;
        for (name, value) in outputs {
            tx.execute(
                query(
                    "record a task output",
                    "INSERT INTO task_output (task_instance_id, name, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (task_instance_id, name) DO UPDATE SET value = excluded.value",
                )
                .bind(task_instance_id)
                .bind(name.as_str())
                .bind(value.as_str()),
            )
            .await
            .map_err(|error| match error {
                error if error.is_foreign_key_violation() => {
                    Error::NotFound(format!("task instance {task_instance_id}"))
                }
                error => error,
            })?;
        }
        tx.commit("record task outputs").await
    }

    /// Every output of the task instances of a run (what `outputs.<task>.<name>` reads), by
    /// task and name.
    pub async fn list_task_outputs(&self, dag_run_id: DagRunId) -> Result<Vec<TaskOutput>, Error> {
        self.fetch_all(
            query(
                "list task outputs",
                "SELECT ti.task_id, o.name, o.value \
                 FROM task_output o JOIN task_instance ti ON ti.id = o.task_instance_id \
                 WHERE ti.dag_run_id = $1 \
                 ORDER BY ti.task_id, o.name",
            )
            .bind(dag_run_id),
            |row| {
                Ok(TaskOutput {
                    task_id: row.id("task_id")?,
                    name: row.get("name")?,
                    value: row.get("value")?,
                })
            },
        )
        .await
    }
}

/// Creates the task instances of runs being started, in `tx`, in one statement, in `state`
/// (`none`; `skipped` for a run that is skipped instead).
pub(crate) async fn create_task_instances_in(
    tx: &mut Tx,
    starts: &[&RunStart<'_>],
    state: TaskState,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let rows = serde_json::Value::Array(
        starts
            .iter()
            .flat_map(|start| {
                start.tasks.iter().map(|task| {
                    serde_json::json!({
                        "run": start.run.id,
                        "task_id": task.task_id,
                        "max_tries": task.max_tries,
                        "pool": task.pool,
                        "pool_slots": task.pool_slots,
                        "queue": task.queue,
                        "priority_weight": task.priority_weight,
                        "rendered_command": task.rendered_command,
                    })
                })
            })
            .collect(),
    );
    if rows.as_array().is_some_and(Vec::is_empty) {
        return Ok(());
    }
    tx.execute(
        query_split(
            "create task instances",
            "INSERT INTO task_instance (dag_run_id, dag_id, run_id, task_id, state, try_number, \
                 max_tries, pool, pool_slots, queue, priority_weight, rendered_command, \
                 updated_at) \
             SELECT t.run, r.dag_id, r.run_id, t.task_id, $3, 0, t.max_tries, t.pool, \
                 t.pool_slots, t.queue, t.priority_weight, t.rendered_command, $2 \
             FROM jsonb_to_recordset($1) AS t(run bigint, task_id text, max_tries integer, \
                 pool text, pool_slots integer, queue text, priority_weight integer, \
                 rendered_command jsonb) \
               JOIN dag_run r ON r.id = t.run \
             ON CONFLICT (dag_run_id, task_id) DO NOTHING",
            // `WHERE true`: SQLite reads `ON CONFLICT` after a join as the join's.
            "INSERT INTO task_instance (dag_run_id, dag_id, run_id, task_id, state, try_number, \
                 max_tries, pool, pool_slots, queue, priority_weight, rendered_command, \
                 updated_at) \
             SELECT r.id, r.dag_id, r.run_id, t.value ->> 'task_id', $3, 0, \
                 t.value ->> 'max_tries', t.value ->> 'pool', t.value ->> 'pool_slots', \
                 t.value ->> 'queue', t.value ->> 'priority_weight', \
                 NULLIF(t.value -> 'rendered_command', 'null'), $2 \
             FROM json_each($1) AS t JOIN dag_run r ON r.id = t.value ->> 'run' \
             WHERE true \
             ON CONFLICT (dag_run_id, task_id) DO NOTHING",
        )
        .bind(&rows)
        .bind(now)
        .bind(state.as_str()),
    )
    .await?;
    Ok(())
}

/// An error for the first move [`TaskState::can_move_to`] forbids.
pub(crate) fn check_moves(moves: &[TaskMove]) -> Result<(), Error> {
    match moves
        .iter()
        .find(|TaskMove { from, to, .. }| !from.can_move_to(*to))
    {
        Some(&TaskMove { from, to, .. }) => Err(Error::IllegalTaskTransition { from, to }),
        None => Ok(()),
    }
}

/// The compare-and-sets of [`Store::set_task_states`] in `tx`, in one statement: for each
/// move whether it moved, and the runs of those that did.
pub(crate) async fn move_task_states_in(
    tx: &mut Tx,
    moves: &[TaskMove],
    now: DateTime<Utc>,
) -> Result<(Vec<bool>, Vec<DagRunId>), Error> {
    if moves.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let rows = serde_json::Value::Array(
        moves
            .iter()
            .map(
                |&TaskMove {
                     task_instance: id,
                     from,
                     to,
                 }| {
                    serde_json::json!({
                        "id": id,
                        "from": from.as_str(),
                        "to": to.as_str(),
                        "queues": to == TaskState::Queued,
                        "starts": to == TaskState::Running,
                        "ends": to.is_finished() || to == TaskState::UpForRetry,
                    })
                },
            )
            .collect(),
    );
    let moved: HashMap<TaskInstanceId, DagRunId> = tx
        .fetch_all(
            query_split(
                "change task instance states",
                "UPDATE task_instance t SET state = m.to, updated_at = $2, \
                     queued_at = CASE WHEN m.queues THEN $2 ELSE t.queued_at END, \
                     start_date = CASE WHEN m.starts THEN $2 ELSE t.start_date END, \
                     first_start_date = CASE WHEN m.starts \
                         THEN COALESCE(t.first_start_date, $2) ELSE t.first_start_date END, \
                     end_date = CASE WHEN m.starts THEN NULL WHEN m.ends THEN $2 \
                         ELSE t.end_date END \
                 FROM jsonb_to_recordset($1) AS m(id bigint, \"from\" text, \"to\" text, \
                     queues boolean, starts boolean, ends boolean) \
                 WHERE t.id = ANY(ARRAY(SELECT (e ->> 'id')::bigint \
                         FROM jsonb_array_elements($1) AS e)) \
                   AND t.id = m.id AND t.state = m.\"from\" \
                 RETURNING t.id, t.dag_run_id",
                // `NOT INDEXED`: by primary key (the rowid), never by the state index.
                "UPDATE task_instance NOT INDEXED SET state = m.value ->> 'to', updated_at = $2, \
                     queued_at = CASE WHEN m.value ->> 'queues' THEN $2 ELSE queued_at END, \
                     start_date = CASE WHEN m.value ->> 'starts' THEN $2 ELSE start_date END, \
                     first_start_date = CASE WHEN m.value ->> 'starts' \
                         THEN COALESCE(first_start_date, $2) ELSE first_start_date END, \
                     end_date = CASE WHEN m.value ->> 'starts' THEN NULL \
                         WHEN m.value ->> 'ends' THEN $2 ELSE end_date END \
                 FROM json_each($1) AS m \
                 WHERE task_instance.id = m.value ->> 'id' \
                   AND task_instance.state = m.value ->> 'from' \
                 RETURNING task_instance.id, task_instance.dag_run_id",
            )
            .bind(&rows)
            .bind(now),
            id_and_run,
        )
        .await?
        .into_iter()
        .collect();
    let runs = moved.values().copied().collect();
    Ok((
        moves
            .iter()
            .map(|task_move| moved.contains_key(&task_move.task_instance))
            .collect(),
        runs,
    ))
}

/// A task instance's id and its run's, from a row that has both (a `RETURNING` of the moves
/// and the ends).
pub(crate) fn id_and_run(row: &Row<'_>) -> Result<(TaskInstanceId, DagRunId), Error> {
    Ok((row.row_id("id")?, row.row_id("dag_run_id")?))
}

/// Whether the moves that `moved` moved a `running` task instance away: its worker kills it.
pub(crate) fn kills(moves: &[TaskMove], moved: &[bool]) -> bool {
    moves
        .iter()
        .zip(moved)
        .any(|(task_move, moved)| *moved && task_move.from == TaskState::Running)
}
