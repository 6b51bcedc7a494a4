//! Table `handler_run`: what a handler (`on_success`, `on_retry`, `on_failure`) did once the
//! try, or for a DAG's handler the run, it reacts to had ended and been recorded.

use chrono::{DateTime, Utc};
use updraft_core::ids::{DagRunId, TaskInstanceId, TryKey};
use updraft_core::state::HandlerName;

use crate::db::{Row, query};
use crate::{Error, Store};

/// One run of a handler: the input of [`Store::record_handler_run`] and a row of
/// `handler_run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerRun {
    pub dag_run_id: DagRunId,
    /// The try a task's handler followed; `None` for a DAG's handler.
    pub try_key: Option<TryKey>,
    pub handler: HandlerName,
    pub start_date: DateTime<Utc>,
    pub end_date: DateTime<Utc>,
    /// How its process ended, in words (`updraft_process::describe`).
    pub ending: String,
    /// Its output, masked and cut (`updraft_process::HANDLER_LOG_BYTES`).
    pub log: Vec<u8>,
}

impl HandlerRun {
    fn from_row(row: &Row<'_>) -> Result<Self, Error> {
        let task_instance = row.get::<Option<i64>>("task_instance_id")?;
        let try_number = row.get::<Option<i32>>("try_number")?;
        Ok(HandlerRun {
            dag_run_id: row.row_id("dag_run_id")?,
            try_key: task_instance
                .zip(try_number)
                .map(|(id, try_number)| TryKey {
                    task_instance: TaskInstanceId::from(id),
                    try_number,
                }),
            handler: row.name("handler")?,
            start_date: row.get("start_date")?,
            end_date: row.get("end_date")?,
            ending: row.get("ending")?,
            log: row.get("log")?,
        })
    }
}

impl Store {
    /// Records a handler's run; [`Error::NotFound`] when its try or run is gone (deleted
    /// meanwhile, by `db clean` say).
    pub async fn record_handler_run(&self, run: &HandlerRun) -> Result<(), Error> {
        let insert = query(
            "record a handler's run",
            "INSERT INTO handler_run (dag_run_id, task_instance_id, try_number, handler, \
                 start_date, end_date, ending, log) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(run.dag_run_id)
        .bind(run.try_key.map(|key| key.task_instance))
        .bind(run.try_key.map(|key| key.try_number))
        .bind(run.handler.as_str())
        .bind(run.start_date)
        .bind(run.end_date)
        .bind(run.ending.as_str())
        .bind(run.log.as_slice());
        match self.execute(insert).await {
            Err(error) if error.is_foreign_key_violation() => Err(Error::NotFound(format!(
                "the run or try of a {} handler",
                run.handler
            ))),
            result => result.map(|_| ()),
        }
    }

    /// The handler runs that followed the tries of a task instance, by try, oldest first.
    pub async fn list_try_handler_runs(
        &self,
        task_instance_id: TaskInstanceId,
    ) -> Result<Vec<HandlerRun>, Error> {
        self.fetch_all(
            query(
                "list the handler runs of a task instance",
                "SELECT * FROM handler_run WHERE task_instance_id = $1 \
                 ORDER BY try_number, id",
            )
            .bind(task_instance_id),
            HandlerRun::from_row,
        )
        .await
    }

    /// The runs of a DAG's handlers after a run ended (one per time it ended), oldest first.
    pub async fn list_run_handler_runs(
        &self,
        dag_run_id: DagRunId,
    ) -> Result<Vec<HandlerRun>, Error> {
        self.fetch_all(
            query(
                "list the handler runs of a DAG run",
                "SELECT * FROM handler_run WHERE dag_run_id = $1 AND task_instance_id IS NULL \
                 ORDER BY id",
            )
            .bind(dag_run_id),
            HandlerRun::from_row,
        )
        .await
    }
}
