//! The reads that pages and the API share: the DAG list with its summaries, next runs, the
//! grid, pages of runs, a task instance, pools with their usage, backfills, the event log.
//! Each is bounded (a page, a `LIMIT`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use updraft_core::ids::{DagId, DagRunId, TaskId};
use updraft_core::state::{DagRunState, HandlerName, RunType};
use updraft_metadata::{Backfill, DagFilter, DagRow, HandlerRun, RunDot, RunFilter};

use crate::actions::dag_id;
use crate::error::AppError;
use crate::model::{GRID_RUNS, Page, Paged, grid};
use crate::{AppState, format};

/// What a handler did after a try or a run, as pages and the API show it.
#[derive(Debug, Serialize)]
pub struct HandlerView {
    pub handler: HandlerName,
    pub start_date: DateTime<Utc>,
    pub end_date: DateTime<Utc>,
    /// How its process ended, in words.
    pub ending: String,
    /// Its output (masked, cut at 64 KiB), as text.
    pub log: String,
    /// The try it followed; `None` for a DAG's handler.
    pub try_number: Option<i32>,
}

impl From<HandlerRun> for HandlerView {
    fn from(run: HandlerRun) -> HandlerView {
        HandlerView {
            handler: run.handler,
            start_date: run.start_date,
            end_date: run.end_date,
            ending: run.ending,
            log: String::from_utf8_lossy(&run.log).into_owned(),
            try_number: run.try_key.map(|key| key.try_number),
        }
    }
}

/// Runs shown as state dots per DAG in the DAG list.
pub const DOTS: i64 = 10;

/// A DAG as the list shows it: its row, the schedule in words, and its latest runs.
#[derive(Debug, Serialize)]
pub struct DagSummary {
    #[serde(flatten)]
    pub row: DagRow,
    pub schedule_description: String,
    pub recent_runs: Vec<RunDot>,
}

/// The filters of the DAG list.
#[derive(Debug, Default, Deserialize)]
pub struct DagQuery {
    pub search: Option<String>,
    pub tag: Option<String>,
    pub paused: Option<bool>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl DagQuery {
    pub fn filter(&self) -> DagFilter {
        let text = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
        DagFilter {
            search: text(&self.search),
            tag: text(&self.tag),
            paused: self.paused,
        }
    }
}

/// A page of the DAG list with each DAG's summary.
pub async fn dag_summaries(
    state: &AppState,
    query: &DagQuery,
) -> Result<Paged<DagSummary>, AppError> {
    let (limit, offset) = Page {
        limit: query.limit,
        offset: query.offset,
    }
    .bounds()?;
    let rows = state
        .store
        .list_dags_page(&query.filter(), limit + 1, offset)
        .await?;
    let page = Paged::new(rows, limit, offset);
    let mut items = Vec::with_capacity(page.items.len());
    for row in page.items {
        let recent_runs = state.store.recent_runs(&row.dag_id, DOTS).await?;
        let schedule_description = match state.store.load_dag(&row.dag_id, &row.version_hash).await
        {
            Ok(dag) => dag.timetable.describe(),
            Err(_) => row.schedule.clone().unwrap_or_default(),
        };
        items.push(DagSummary {
            row,
            schedule_description,
            recent_runs,
        });
    }
    Ok(Paged {
        items,
        limit: page.limit,
        offset: page.offset,
        next_offset: page.next_offset,
    })
}

/// The next runs of a DAG from `now`, as the scheduler will create them.
#[derive(Debug, Serialize)]
pub struct NextRun {
    pub logical_date: String,
    pub data_interval_start: String,
    pub data_interval_end: String,
    pub run_after: String,
}

pub fn next_runs(dag: &updraft_core::dag::Dag, row: &DagRow, count: usize) -> Vec<NextRun> {
    let now = Utc::now();
    let first = row
        .next_run
        .or_else(|| dag.timetable.next_dagrun_info(None, now));
    let Some(first) = first else {
        return Vec::new();
    };
    std::iter::once(first)
        .chain(
            dag.timetable
                .upcoming(Some(&first), now, count.saturating_sub(1)),
        )
        .map(|run| NextRun {
            logical_date: format::iso(run.logical_date),
            data_interval_start: format::iso(run.data_interval_start),
            data_interval_end: format::iso(run.data_interval_end),
            run_after: format::iso(run.run_after),
        })
        .collect()
}

/// The grid of a DAG: its latest runs by its tasks.
pub async fn build_grid(
    state: &AppState,
    dag: &updraft_core::dag::Dag,
) -> Result<crate::model::Grid, AppError> {
    let runs = state
        .store
        .list_dag_runs(&dag.id, None, GRID_RUNS, 0)
        .await?;
    let ids: Vec<DagRunId> = runs.iter().map(|run| run.id).collect();
    let instances = state.store.list_task_instances_of_runs(&ids).await?;
    Ok(grid(dag, &runs, &instances))
}

/// The filters of a run list.
#[derive(Debug, Default, Deserialize)]
pub struct RunQuery {
    pub state: Option<String>,
    pub run_type: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl RunQuery {
    pub fn filter(&self) -> Result<RunFilter, AppError> {
        let state = match self.state.as_deref().filter(|s| !s.is_empty()) {
            Some(text) => Some(
                text.parse::<DagRunState>()
                    .map_err(|error| AppError::BadRequest(error.to_string()))?,
            ),
            None => None,
        };
        let run_type = match self.run_type.as_deref().filter(|s| !s.is_empty()) {
            Some(text) => Some(
                text.parse::<RunType>()
                    .map_err(|error| AppError::BadRequest(error.to_string()))?,
            ),
            None => None,
        };
        Ok(RunFilter { state, run_type })
    }
}

pub async fn runs_page(
    state: &AppState,
    dag: &updraft_core::ids::DagId,
    query: &RunQuery,
) -> Result<Paged<updraft_metadata::DagRun>, AppError> {
    let (limit, offset) = Page {
        limit: query.limit,
        offset: query.offset,
    }
    .bounds()?;
    let rows = state
        .store
        .list_runs_page(dag, query.filter()?, limit + 1, offset)
        .await?;
    Ok(Paged::new(rows, limit, offset))
}

pub async fn find_task_instance(
    state: &AppState,
    id: &DagId,
    run_id: &str,
    task: &TaskId,
) -> Result<updraft_metadata::TaskInstance, AppError> {
    state
        .store
        .find_task_instance(id, run_id, task)
        .await?
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "task '{task}' of run '{run_id}' of dag '{id}' not found"
            ))
        })
}

/// A pool with the slots in use.
#[derive(Debug, Serialize)]
pub struct PoolView {
    #[serde(flatten)]
    pub pool: updraft_metadata::Pool,
    pub running_slots: i64,
    pub queued_slots: i64,
}

pub async fn pools(state: &AppState) -> Result<Vec<PoolView>, AppError> {
    let usage = state.store.pool_usage().await?;
    Ok(state
        .store
        .list_pools()
        .await?
        .into_iter()
        .map(|pool| {
            let used = usage
                .iter()
                .find(|(name, _)| *name == pool.name)
                .map(|(_, usage)| *usage)
                .unwrap_or_default();
            PoolView {
                pool,
                running_slots: used.running,
                queued_slots: used.queued,
            }
        })
        .collect())
}

/// `?dag_id=&limit=&offset=` of the backfill and event lists.
#[derive(Debug, Default, Deserialize)]
pub struct DagScoped {
    pub dag_id: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl DagScoped {
    pub fn dag(&self) -> Result<Option<updraft_core::ids::DagId>, AppError> {
        self.dag_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .map(dag_id)
            .transpose()
    }

    fn bounds(&self) -> Result<(i64, i64), AppError> {
        Page {
            limit: self.limit,
            offset: self.offset,
        }
        .bounds()
    }
}

/// A backfill with its progress.
#[derive(Debug, Serialize)]
pub struct BackfillView {
    #[serde(flatten)]
    pub backfill: Backfill,
    pub progress: updraft_metadata::BackfillProgress,
}

pub async fn backfills_page(
    state: &AppState,
    query: &DagScoped,
) -> Result<Paged<BackfillView>, AppError> {
    let (limit, offset) = query.bounds()?;
    let rows = state
        .store
        .list_backfills_page(query.dag()?.as_ref(), limit + 1, offset)
        .await?;
    let page = Paged::new(rows, limit, offset);
    let mut items = Vec::with_capacity(page.items.len());
    for backfill in page.items {
        let progress = state.store.backfill_progress(backfill.id).await?;
        items.push(BackfillView { backfill, progress });
    }
    Ok(Paged {
        items,
        limit,
        offset,
        next_offset: page.next_offset,
    })
}

pub async fn events_page(
    state: &AppState,
    query: &DagScoped,
) -> Result<Paged<updraft_metadata::EventLog>, AppError> {
    let (limit, offset) = query.bounds()?;
    let rows = state
        .store
        .list_events_page(query.dag()?.as_ref(), limit + 1, offset)
        .await?;
    Ok(Paged::new(rows, limit, offset))
}

/// A notification as pages and the API show it: what it tells, where (the channel's kind, never
/// its address), and how sending went.
#[derive(Debug, Serialize)]
pub struct NotificationView {
    pub event: String,
    /// Which notifier of the DAG file: `dag.0`, `task.load.1`.
    pub target: String,
    pub channel: String,
    /// `pending`, `sending`, `sent` or `failed` (for good).
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The notifications of run `run`, oldest first.
pub async fn notifications(
    state: &AppState,
    run: DagRunId,
) -> Result<Vec<NotificationView>, AppError> {
    Ok(state
        .store
        .list_run_notifications(run)
        .await?
        .into_iter()
        .map(|n| {
            let channel = serde_json::from_value::<updraft_core::notify::Channel>(n.channel)
                .map_or_else(|_| "unknown".to_owned(), |c| c.kind().to_owned());
            NotificationView {
                event: n.event.to_string(),
                target: n.target,
                channel,
                next_attempt_at: (n.state == "pending").then_some(n.next_attempt_at),
                state: n.state,
                attempts: n.attempts,
                sent_at: n.sent_at,
                last_error: n.last_error,
                created_at: n.created_at,
            }
        })
        .collect())
}
