//! What pages and the API show, built from stored rows by pure functions: the grid of a DAG
//! (runs x tasks) and the pagination of lists.

use std::collections::HashMap;
use updraft_core::ids::DagRunId;

use serde::{Deserialize, Serialize};
use updraft_core::dag::Dag;
use updraft_core::state::TaskState;
use updraft_metadata::{DagRun, TaskInstance};

use crate::error::AppError;

/// Runs the grid shows.
pub const GRID_RUNS: i64 = 25;
/// The page size of lists when the request names none, and the largest one allowed.
pub const DEFAULT_LIMIT: i64 = 25;
pub const MAX_LIMIT: i64 = 500;

/// `?limit=&offset=` of a list.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Page {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl Page {
    /// The limit and offset to query: a limit of `1..=MAX_LIMIT` and an offset of `0..`, as
    /// the API's document says; anything else is refused.
    pub fn bounds(self) -> Result<(i64, i64), AppError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        let offset = self.offset.unwrap_or(0);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AppError::BadRequest(format!(
                "limit {limit} is out of range: 1 to {MAX_LIMIT}"
            )));
        }
        if offset < 0 {
            return Err(AppError::BadRequest(format!("offset {offset} is negative")));
        }
        Ok((limit, offset))
    }
}

/// A page of a list: the items, and the offset of the next page when there is one. Lists are
/// read with one row more than the limit to know whether a next page exists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub limit: i64,
    pub offset: i64,
    pub next_offset: Option<i64>,
}

impl<T> Paged<T> {
    /// `rows` as read with `LIMIT limit + 1`.
    pub fn new(mut rows: Vec<T>, limit: i64, offset: i64) -> Paged<T> {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        Paged {
            items: rows,
            limit,
            offset,
            next_offset: more.then(|| offset.saturating_add(limit)),
        }
    }

    /// The same page, each item made into another.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Paged<U> {
        Paged {
            items: self.items.into_iter().map(f).collect(),
            limit: self.limit,
            offset: self.offset,
            next_offset: self.next_offset,
        }
    }
}

/// One cell of the grid: a task instance of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub state: TaskState,
    pub try_number: i32,
}

/// A run as a grid column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Column {
    pub run_id: String,
    pub state: updraft_core::state::DagRunState,
    pub logical_date: chrono::DateTime<chrono::Utc>,
}

/// The grid of a DAG: its latest runs (oldest first, as Airflow draws them) by its tasks (in
/// dependency order, upstream first); a task a run has no instance of (added later) has no cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grid {
    pub runs: Vec<Column>,
    pub rows: Vec<GridRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GridRow {
    pub task_id: String,
    pub cells: Vec<Option<Cell>>,
}

/// Builds the grid from the runs (newest first, as listed) and their task instances.
pub fn grid(dag: &Dag, runs: &[DagRun], instances: &[TaskInstance]) -> Grid {
    let columns: Vec<&DagRun> = runs.iter().rev().collect();
    let index: HashMap<(DagRunId, &str), &TaskInstance> = instances
        .iter()
        .map(|ti| ((ti.dag_run_id, ti.task_id.as_str()), ti))
        .collect();
    let rows = dag
        .topological_order()
        .into_iter()
        .map(|task| &task.id)
        .map(|task_id| GridRow {
            task_id: task_id.to_string(),
            cells: columns
                .iter()
                .map(|run| {
                    index.get(&(run.id, task_id.as_str())).map(|ti| Cell {
                        state: ti.state,
                        try_number: ti.try_number,
                    })
                })
                .collect(),
        })
        .collect();
    Grid {
        runs: columns
            .iter()
            .map(|run| Column {
                run_id: run.run_id.clone(),
                state: run.state,
                logical_date: run.logical_date,
            })
            .collect(),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use updraft_core::dag::{LoadOptions, decode};
    use updraft_core::ids::{DagId, TaskId, TaskInstanceId};
    use updraft_core::state::{DagRunState, RunType};

    use super::*;

    fn run(id: i64, day: u32) -> DagRun {
        let at = Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap();
        DagRun {
            id: DagRunId(id),
            dag_id: DagId::parse("etl").unwrap(),
            run_id: format!("r{day}"),
            run_type: RunType::Scheduled,
            logical_date: at,
            data_interval_start: at,
            data_interval_end: at,
            run_after: at,
            state: DagRunState::Success,
            conf: serde_json::json!({}),
            version_hash: "v".to_owned(),
            queued_at: None,
            start_date: None,
            end_date: None,
            backfill_id: None,
            deadline_missed_at: None,
        }
    }

    fn ti(run: i64, task: &str, state: TaskState) -> TaskInstance {
        let at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        TaskInstance {
            id: TaskInstanceId(run * 10),
            dag_run_id: DagRunId(run),
            dag_id: DagId::parse("etl").unwrap(),
            run_id: format!("r{run}"),
            task_id: TaskId::parse(task).unwrap(),
            state,
            try_number: 1,
            max_tries: 1,
            pool: "default_pool".to_owned(),
            pool_slots: 1,
            queue: "default".to_owned(),
            priority_weight: 1,
            queued_at: None,
            start_date: None,
            end_date: None,
            next_retry_at: None,
            first_start_date: None,
            deadline_missed_at: None,
            worker_id: None,
            hostname: None,
            heartbeat_at: None,
            rendered_command: None,
            updated_at: at,
        }
    }

    #[test]
    fn the_grid_has_runs_oldest_first_and_tasks_upstream_first() {
        let dag = decode(
            "etl.yaml",
            "tasks:\n  b: {run: x}\n  a: {run: x, depends_on: b}\n",
            &LoadOptions::default(),
        )
        .unwrap();
        let runs = [run(2, 2), run(1, 1)];
        let instances = [
            ti(1, "b", TaskState::Failed),
            ti(2, "b", TaskState::Success),
            ti(2, "a", TaskState::Running),
        ];
        let grid = grid(&dag, &runs, &instances);
        let run_ids: Vec<&str> = grid.runs.iter().map(|c| c.run_id.as_str()).collect();
        assert_eq!(run_ids, ["r1", "r2"]);
        let states = |row: &GridRow| -> Vec<Option<TaskState>> {
            row.cells
                .iter()
                .map(|c| c.as_ref().map(|c| c.state))
                .collect()
        };
        assert_eq!(grid.rows[0].task_id, "b");
        assert_eq!(
            states(&grid.rows[0]),
            [Some(TaskState::Failed), Some(TaskState::Success)]
        );
        assert_eq!(grid.rows[1].task_id, "a");
        assert_eq!(states(&grid.rows[1]), [None, Some(TaskState::Running)]);
    }

    #[test]
    fn pages_know_whether_more_follow_and_refuse_bounds_out_of_range() {
        let page = Paged::new(vec![1, 2, 3], 2, 4);
        assert_eq!(page.items, [1, 2]);
        assert_eq!(page.next_offset, Some(6));
        assert_eq!(Paged::new(vec![1], 2, 0).next_offset, None);
        let bounds = |limit, offset| Page { limit, offset }.bounds();
        assert_eq!(bounds(None, None).unwrap(), (DEFAULT_LIMIT, 0));
        assert_eq!(bounds(Some(MAX_LIMIT), Some(50)).unwrap(), (MAX_LIMIT, 50));
        for (limit, offset) in [
            (Some(0), None),
            (Some(MAX_LIMIT + 1), None),
            (None, Some(-5)),
        ] {
            assert!(bounds(limit, offset).is_err(), "{limit:?} {offset:?}");
        }
    }
}
