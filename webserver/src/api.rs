//! The JSON API under `/api/v1`: everything the pages show, and the actions. Lists take
//! `?limit=&offset=` and answer `{"items", "limit", "offset", "next_offset"}`; errors are
//! `{"error": "..."}` with their status, also for malformed JSON, queries and paths.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use updraft_core::state::{DagRunState, RunType};
use updraft_metadata::{Backfill, DagFilter, DagRow, RunDot, RunFilter, TaskTry};

use crate::actions::{self, ClearRequest, dag_id, find_run, task_id};
use crate::auth::Caller;
use crate::error::AppError;
use crate::model::{GRID_RUNS, Page, Paged, grid};
use crate::openapi::{LIMIT, OFFSET, Operation, Query};
use crate::{AppState, format};
use updraft_ops::backfill::BackfillRequest;
use updraft_ops::dags::Trigger;
use updraft_ops::mark::{Cancelled, Mark};

/// Log chunks a log read returns when it names no limit, and at most.
const LOG_CHUNKS: i64 = 1000;
/// Runs shown as state dots per DAG in the DAG list.
pub const DOTS: i64 = 10;

/// One route of the API: how the router serves it and how `openapi.json` describes it. The
/// router and the document are both built from [`ROUTES`], so they cannot disagree.
pub struct ApiRoute {
    /// `GET` or `POST`.
    pub method: MethodFilter,
    /// Under `/api/v1`, with `{name}` for path parameters (axum's and OpenAPI's syntax).
    pub path: &'static str,
    /// The handler, served for `method`.
    pub handler: fn(MethodFilter) -> MethodRouter<AppState>,
    pub doc: Operation,
}

/// Every route of the API.
pub static ROUTES: &[ApiRoute] = &[
    ApiRoute {
        method: MethodFilter::GET,
        path: "/openapi.json",
        handler: |m| on(m, openapi_json),
        doc: Operation::read("getOpenApi", "meta", "This document.", "OpenApi"),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/me",
        handler: |m| on(m, me),
        doc: Operation::read("getMe", "meta", "The caller: user name and role.", "Me"),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/dags",
        handler: |m| on(m, list_dags),
        doc: Operation {
            query: &[
                Query::text("search", "Part of the DAG id, case-insensitive."),
                Query::text("tag", "Only DAGs with this tag."),
                Query::boolean("paused", "Only paused (true) or active (false) DAGs."),
                LIMIT,
                OFFSET,
            ],
            ..Operation::read(
                "listDags",
                "dags",
                "A page of DAGs with their schedule in words and latest runs.",
                "DagSummaryPage",
            )
        },
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/dags/{dag_id}",
        handler: |m| on(m, get_dag),
        doc: Operation::read(
            "getDag",
            "dags",
            "A DAG: its row, tasks, params and next runs.",
            "DagDetail",
        ),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/dags/{dag_id}/source",
        handler: |m| on(m, dag_source),
        doc: Operation::read(
            "getDagSource",
            "dags",
            "The YAML source of the DAG's current version.",
            "DagSource",
        ),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/dags/{dag_id}/grid",
        handler: |m| on(m, dag_grid),
        doc: Operation::read(
            "getDagGrid",
            "dags",
            "The grid: the latest 25 runs by the DAG's tasks.",
            "Grid",
        ),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/dags/{dag_id}/runs",
        handler: |m| on(m, list_runs),
        doc: Operation {
            query: &[
                Query::choice(
                    "state",
                    "Only runs in this state.",
                    &["queued", "running", "success", "failed"],
                ),
                Query::choice(
                    "run_type",
                    "Only runs of this type.",
                    &["scheduled", "manual", "backfill"],
                ),
                LIMIT,
                OFFSET,
            ],
            ..Operation::read(
                "listRuns",
                "runs",
                "A page of the DAG's runs, newest logical date first.",
                "DagRunPage",
            )
        },
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/dags/{dag_id}/runs/{run_id}",
        handler: |m| on(m, get_run),
        doc: Operation::read("getRun", "runs", "A run.", "DagRun"),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/dags/{dag_id}/runs/{run_id}/tasks",
        handler: |m| on(m, list_task_instances),
        doc: Operation::read(
            "listTaskInstances",
            "tasks",
            "The task instances of a run.",
            "TaskInstanceList",
        ),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}",
        handler: |m| on(m, get_task_instance),
        doc: Operation::read(
            "getTaskInstance",
            "tasks",
            "A task instance.",
            "TaskInstance",
        ),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/tries",
        handler: |m| on(m, list_tries),
        doc: Operation::read(
            "listTries",
            "tasks",
            "The tries of a task instance, first first.",
            "TaskTryList",
        ),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/tries/{try_number}/log",
        handler: |m| on(m, read_log),
        doc: Operation {
            query: &[
                Query::integer(
                    "offset",
                    "The last chunk already read (next_offset of the previous read); 0 from the start.",
                    0,
                    Some(i64::MAX),
                ),
                Query::integer("limit", "Chunks to read, 1 to 1000.", 1, Some(LOG_CHUNKS)),
            ],
            ..Operation::read(
                "readLog",
                "tasks",
                "A piece of a try's log; read again from next_offset until complete.",
                "LogPiece",
            )
        },
    },
    ApiRoute {
        method: MethodFilter::POST,
        path: "/dags/{dag_id}/trigger",
        handler: |m| on(m, trigger),
        doc: Operation::write(
            "triggerDag",
            "actions",
            "Creates a manual run; its conf is checked against the DAG's params.",
            Some("TriggerRequest"),
            201,
            "DagRun",
        ),
    },
    ApiRoute {
        method: MethodFilter::POST,
        path: "/dags/{dag_id}/pause",
        handler: |m| on(m, pause),
        doc: Operation::write(
            "pauseDag",
            "actions",
            "Pauses the DAG.",
            None,
            200,
            "Paused",
        ),
    },
    ApiRoute {
        method: MethodFilter::POST,
        path: "/dags/{dag_id}/unpause",
        handler: |m| on(m, unpause),
        doc: Operation::write(
            "unpauseDag",
            "actions",
            "Unpauses the DAG.",
            None,
            200,
            "Paused",
        ),
    },
    ApiRoute {
        method: MethodFilter::POST,
        path: "/dags/{dag_id}/backfills",
        handler: |m| on(m, backfill),
        doc: Operation::write(
            "createBackfill",
            "actions",
            "Plans (dry_run: 200, changes nothing, any role) or starts (201, admins) a backfill \
             over a range of logical dates, with the options of `updraft dags backfill`.",
            Some("BackfillRequest"),
            201,
            "BackfillOutcome",
        ),
    },
    ApiRoute {
        method: MethodFilter::POST,
        path: "/dags/{dag_id}/runs/{run_id}/state",
        handler: |m| on(m, mark_run),
        doc: Operation::write(
            "markRun",
            "actions",
            "Marks a run success or failed; its task instances stay as they are.",
            Some("MarkRequest"),
            200,
            "Marked",
        ),
    },
    ApiRoute {
        method: MethodFilter::POST,
        path: "/dags/{dag_id}/runs/{run_id}/cancel",
        handler: |m| on(m, cancel_run),
        doc: Operation::write(
            "cancelRun",
            "actions",
            "Cancels an unfinished run: it fails, its unfinished task instances are skipped.",
            None,
            200,
            "Cancelled",
        ),
    },
    ApiRoute {
        method: MethodFilter::POST,
        path: "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/state",
        handler: |m| on(m, mark_task),
        doc: Operation::write(
            "markTaskInstance",
            "actions",
            "Marks a task instance success or failed.",
            Some("MarkRequest"),
            200,
            "Marked",
        ),
    },
    ApiRoute {
        method: MethodFilter::POST,
        path: "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear",
        handler: |m| on(m, clear),
        doc: Operation::write(
            "clearTaskInstance",
            "actions",
            "Clears a task instance and, as asked, its relatives and the same tasks in past \
             and future runs (dry_run: only list them, any role).",
            Some("ClearRequest"),
            200,
            "ClearOutcome",
        ),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/pools",
        handler: |m| on(m, list_pools),
        doc: Operation::read(
            "listPools",
            "system",
            "Pools with their slots in use.",
            "PoolList",
        ),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/workers",
        handler: |m| on(m, list_workers),
        doc: Operation::read(
            "listWorkers",
            "system",
            "Workers and their heartbeats.",
            "WorkerList",
        ),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/backfills",
        handler: |m| on(m, list_backfills),
        doc: Operation {
            query: &[
                Query::dag_id("dag_id", "Only this DAG's backfills."),
                LIMIT,
                OFFSET,
            ],
            ..Operation::read(
                "listBackfills",
                "system",
                "A page of backfills, newest first, with their progress.",
                "BackfillPage",
            )
        },
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/events",
        handler: |m| on(m, list_events),
        doc: Operation {
            query: &[
                Query::dag_id("dag_id", "Only this DAG's events."),
                LIMIT,
                OFFSET,
            ],
            ..Operation::read(
                "listEvents",
                "system",
                "A page of the audit log (event_log), newest first.",
                "EventPage",
            )
        },
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/import-errors",
        handler: |m| on(m, list_import_errors),
        doc: Operation::read(
            "listImportErrors",
            "system",
            "The DAG files that do not load, with their problems.",
            "ImportErrorList",
        ),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/tokens",
        handler: |m| on(m, crate::tokens::api_list),
        doc: Operation::read(
            "listTokens",
            "meta",
            "The caller's API tokens (an admin's: everyone's), newest first; never the tokens \
             themselves.",
            "TokenList",
        ),
    },
    ApiRoute {
        method: MethodFilter::POST,
        path: "/tokens/{token_id}/revoke",
        handler: |m| on(m, crate::tokens::api_revoke),
        doc: Operation::write(
            "revokeToken",
            "meta",
            "Revokes an API token of the caller (an admin: anyone's); it is refused from now \
             on. 404 for another user's token, 409 when it is revoked already.",
            None,
            200,
            "Token",
        ),
    },
];

/// The API's router, from [`ROUTES`]; a method a route does not serve answers a JSON 405.
pub fn routes() -> Router<AppState> {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path, (route.handler)(route.method))
        })
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed(method: axum::http::Method) -> Response {
    let body = json!({ "error": format!("method {method} is not allowed here") });
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

async fn openapi_json() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

async fn backfill(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(request): Body<BackfillRequest>,
) -> Result<Response, AppError> {
    let outcome =
        actions::backfill(&state.store, &caller, &dag_id(&id)?, &request, Utc::now()).await?;
    let status = match outcome.dry_run {
        true => axum::http::StatusCode::OK,
        false => axum::http::StatusCode::CREATED,
    };
    Ok((status, Json(outcome)).into_response())
}

/// A JSON body whose rejection is a JSON error: 413 when too large, 415 without a JSON
/// content type, 400 otherwise. The body must be an object (serde would read a struct from a
/// `[]` too), and none of its members may be `null`: a member that is not wanted is left out.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        let Json(value) = Json::<serde_json::Value>::from_request(request, state)
            .await
            .map_err(json_rejection)?;
        let serde_json::Value::Object(members) = &value else {
            return Err(AppError::BadRequest(
                "the body must be a JSON object".to_owned(),
            ));
        };
        if let Some((name, _)) = members.iter().find(|(_, value)| value.is_null()) {
            return Err(AppError::BadRequest(format!(
                "{name:?} is null: leave it out for its default"
            )));
        }
        serde_json::from_value(value)
            .map(Body)
            .map_err(|error| AppError::BadRequest(format!("invalid body: {error}")))
    }
}

fn json_rejection(rejection: JsonRejection) -> AppError {
    AppError::rejected(rejection.status(), rejection.body_text())
}

/// Query parameters whose rejection is a JSON error.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> AppError {
    AppError::rejected(rejection.status(), rejection.body_text())
}

/// Path parameters whose rejection (a try number that is not a number) is a JSON error.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(AppError::rejected(
                rejection.status(),
                rejection.body_text(),
            )),
        }
    }
}

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

async fn list_dags(
    State(state): State<AppState>,
    Params(query): Params<DagQuery>,
) -> Result<Json<Paged<DagSummary>>, AppError> {
    Ok(Json(dag_summaries(&state, &query).await?))
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

async fn get_dag(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let (row, dag) = actions::load_dag(&state.store, &dag_id(&id)?).await?;
    let tasks: Vec<serde_json::Value> = dag
        .tasks
        .values()
        .map(|task| {
            json!({
                "task_id": task.id,
                "depends_on": task.depends_on,
                "trigger_rule": task.trigger_rule,
                "retries": task.retries,
                "pool": task.pool,
                "queue": task.queue,
            })
        })
        .collect();
    Ok(Json(json!({
        "dag": row,
        "schedule_description": dag.timetable.describe(),
        "params": dag.params,
        "tasks": tasks,
        "next_runs": next_runs(&dag, &row, 5),
    })))
}

async fn dag_source(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let id = dag_id(&id)?;
    let (row, _) = actions::load_dag(&state.store, &id).await?;
    let version = state
        .store
        .get_dag_version(&id, &row.version_hash)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("version of dag '{id}'")))?;
    Ok(Json(json!({
        "dag_id": id,
        "fileloc": row.fileloc,
        "version_hash": version.version_hash,
        "source": version.source,
    })))
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
    let ids: Vec<i64> = runs.iter().map(|run| run.id).collect();
    let instances = state.store.list_task_instances_of_runs(&ids).await?;
    Ok(grid(dag, &runs, &instances))
}

async fn dag_grid(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<crate::model::Grid>, AppError> {
    let (_, dag) = actions::load_dag(&state.store, &dag_id(&id)?).await?;
    Ok(Json(build_grid(&state, &dag).await?))
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

async fn list_runs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(query): Params<RunQuery>,
) -> Result<Json<Paged<updraft_metadata::DagRun>>, AppError> {
    let id = dag_id(&id)?;
    actions::load_dag(&state.store, &id).await?;
    Ok(Json(runs_page(&state, &id, &query).await?))
}

async fn get_run(
    State(state): State<AppState>,
    Path((id, run_id)): Path<(String, String)>,
) -> Result<Json<updraft_metadata::DagRun>, AppError> {
    Ok(Json(find_run(&state.store, &dag_id(&id)?, &run_id).await?))
}

async fn list_task_instances(
    State(state): State<AppState>,
    Path((id, run_id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, AppError> {
    let run = find_run(&state.store, &dag_id(&id)?, &run_id).await?;
    let items = state.store.list_task_instances(run.id).await?;
    Ok(Json(json!({ "items": items })))
}

pub async fn find_task_instance(
    state: &AppState,
    id: &str,
    run_id: &str,
    task: &str,
) -> Result<updraft_metadata::TaskInstance, AppError> {
    let (id, task) = (dag_id(id)?, task_id(task)?);
    state
        .store
        .find_task_instance(&id, run_id, &task)
        .await?
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "task '{task}' of run '{run_id}' of dag '{id}' not found"
            ))
        })
}

async fn get_task_instance(
    State(state): State<AppState>,
    Path((id, run_id, task)): Path<(String, String, String)>,
) -> Result<Json<updraft_metadata::TaskInstance>, AppError> {
    Ok(Json(find_task_instance(&state, &id, &run_id, &task).await?))
}

async fn list_tries(
    State(state): State<AppState>,
    Path((id, run_id, task)): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, AppError> {
    let ti = find_task_instance(&state, &id, &run_id, &task).await?;
    let items: Vec<TaskTry> = state.store.list_task_tries(ti.id).await?;
    Ok(Json(json!({ "items": items })))
}

/// `?offset=` (the last chunk already read; 0 from the start) and `?limit=` (chunks).
#[derive(Debug, Default, Deserialize)]
struct LogQuery {
    offset: Option<i64>,
    limit: Option<i64>,
}

/// A piece of a try's log: its text, where to read on from, and whether more may come.
#[derive(Debug, Serialize)]
pub struct LogPiece {
    pub text: String,
    pub next_offset: i64,
    /// The try is still running: more may come.
    pub running: bool,
    /// Nothing more will come: the try has ended and this read reached the end of its log.
    /// Until then, read again from `next_offset`.
    pub complete: bool,
}

async fn read_log(
    State(state): State<AppState>,
    Path((id, run_id, task, try_number)): Path<(String, String, String, i32)>,
    Params(query): Params<LogQuery>,
) -> Result<Json<LogPiece>, AppError> {
    let after = query.offset.unwrap_or(0);
    let limit = query.limit.unwrap_or(LOG_CHUNKS);
    if after < 0 || !(1..=LOG_CHUNKS).contains(&limit) {
        return Err(AppError::BadRequest(format!(
            "offset must be 0 or more and limit 1 to {LOG_CHUNKS}"
        )));
    }
    let ti = find_task_instance(&state, &id, &run_id, &task).await?;
    // The try's state is read before its log: a try that had ended by then has written its
    // last chunk, so `running: false` means nothing more will come.
    let tries = state.store.list_task_tries(ti.id).await?;
    let attempt = tries
        .iter()
        .find(|t| t.try_number == try_number)
        .ok_or_else(|| {
            AppError::NotFound(format!("try {try_number} of task '{task}' not found"))
        })?;
    let running = attempt.end_date.is_none();
    let chunks = state
        .store
        .read_task_log(ti.id, try_number, after, limit)
        .await?;
    let next_offset = chunks.last().map_or(after, |chunk| chunk.seq);
    let complete = !running && (chunks.len() as i64) < limit;
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|chunk| chunk.data).collect();
    Ok(Json(LogPiece {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        next_offset,
        running,
        complete,
    }))
}

async fn trigger(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(request): Body<Trigger>,
) -> Result<Response, AppError> {
    let run = actions::trigger(&state.store, &caller, &dag_id(&id)?, &request, Utc::now()).await?;
    Ok((axum::http::StatusCode::CREATED, Json(run)).into_response())
}

async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    actions::set_paused(&state.store, &caller, &dag_id(&id)?, true, Utc::now()).await?;
    Ok(Json(json!({ "dag_id": id, "is_paused": true })))
}

async fn unpause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    actions::set_paused(&state.store, &caller, &dag_id(&id)?, false, Utc::now()).await?;
    Ok(Json(json!({ "dag_id": id, "is_paused": false })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkRequest {
    state: Mark,
}

async fn mark_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, run_id)): Path<(String, String)>,
    Body(request): Body<MarkRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    let new = actions::mark_run(
        &state.store,
        &caller,
        &dag_id(&id)?,
        &run_id,
        request.state,
        Utc::now(),
    )
    .await?;
    Ok(Json(json!({ "run_id": run_id, "state": new })))
}

async fn cancel_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, run_id)): Path<(String, String)>,
) -> Result<Json<Cancelled>, AppError> {
    let cancelled =
        actions::cancel_run(&state.store, &caller, &dag_id(&id)?, &run_id, Utc::now()).await?;
    Ok(Json(cancelled))
}

async fn mark_task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, run_id, task)): Path<(String, String, String)>,
    Body(request): Body<MarkRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    let new = actions::mark_task(
        &state.store,
        &caller,
        &dag_id(&id)?,
        &run_id,
        &task_id(&task)?,
        request.state,
        Utc::now(),
    )
    .await?;
    Ok(Json(
        json!({ "run_id": run_id, "task_id": task, "state": new }),
    ))
}

async fn clear(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, run_id, task)): Path<(String, String, String)>,
    Body(request): Body<ClearRequest>,
) -> Result<Json<actions::ClearOutcome>, AppError> {
    let outcome = actions::clear(
        &state.store,
        &caller,
        &dag_id(&id)?,
        &run_id,
        &task_id(&task)?,
        &request,
        Utc::now(),
    )
    .await?;
    Ok(Json(outcome))
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

async fn list_pools(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    Ok(Json(json!({ "items": pools(&state).await? })))
}

async fn list_workers(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    Ok(Json(
        json!({ "items": state.store.list_worker_loads().await? }),
    ))
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

async fn list_backfills(
    State(state): State<AppState>,
    Params(query): Params<DagScoped>,
) -> Result<Json<Paged<BackfillView>>, AppError> {
    Ok(Json(backfills_page(&state, &query).await?))
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

async fn list_events(
    State(state): State<AppState>,
    Params(query): Params<DagScoped>,
) -> Result<Json<Paged<updraft_metadata::EventLog>>, AppError> {
    Ok(Json(events_page(&state, &query).await?))
}

async fn list_import_errors(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, AppError> {
    Ok(Json(
        json!({ "items": state.store.list_import_errors().await? }),
    ))
}

async fn me(Extension(caller): Extension<Caller>) -> Json<serde_json::Value> {
    Json(json!({ "username": caller.user.username, "role": caller.user.role }))
}
