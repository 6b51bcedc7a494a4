//! The JSON API under `/api/v1`: everything the pages show, and the actions. Lists take
//! `?limit=&offset=` and answer `{"items", "limit", "offset", "next_offset"}`; errors are
//! `{"error": "..."}` with their status, also for malformed JSON, queries and paths.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use updraft_core::ids::{DagId, TaskId, TryKey};
use updraft_metadata::TaskTry;

use crate::AppState;
use crate::actions::{self, ClearRequest, find_run};
use crate::apidoc::{LIMIT, OFFSET, Operation, Query};
use crate::auth::Caller;
use crate::error::AppError;
use crate::extract::{Body, Params, Path};
use crate::model::Paged;
use crate::reads::{self, BackfillView, HandlerView};
use crate::reads::{
    DagQuery, DagScoped, DagSummary, RunQuery, backfills_page, build_grid, dag_summaries,
    events_page, find_task_instance, next_runs, pools, runs_page,
};
use updraft_ops::backfill::BackfillRequest;
use updraft_ops::dags::Trigger;
use updraft_ops::mark::{Cancelled, Mark};

/// Log chunks a log read returns when it names no limit, and at most.
const LOG_CHUNKS: i64 = 1000;
/// One route of the API: how the router serves it and how `openapi.json` describes it. The
/// router and the document are both built from [`ROUTES`], so they cannot disagree.
pub struct ApiRoute {
    /// `GET`, `POST` or `DELETE`.
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
        path: "/dags/{dag_id}/runs/{run_id}/notifications",
        handler: |m| on(m, list_notifications),
        doc: Operation::read(
            "listNotifications",
            "runs",
            "What the notifiers of the run's DAG and tasks were told, and how sending went.",
            "NotificationList",
        ),
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
    ApiRoute {
        method: MethodFilter::GET,
        path: "/variables",
        handler: |m| on(m, crate::variables::api_list),
        doc: Operation {
            query: &[LIMIT, OFFSET],
            ..Operation::read(
                "listVariables",
                "variables",
                "A page of variables, by key; a secret one's value is ***.",
                "VariablePage",
            )
        },
    },
    ApiRoute {
        method: MethodFilter::POST,
        path: "/variables",
        handler: |m| on(m, crate::variables::api_set),
        doc: Operation::write(
            "setVariable",
            "variables",
            "Creates or replaces a variable; a secret one is sealed with the installation's key.",
            Some("SetVariableRequest"),
            200,
            "Variable",
        ),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/variables/{variable_key}",
        handler: |m| on(m, crate::variables::api_get),
        doc: Operation::read(
            "getVariable",
            "variables",
            "A variable; a secret one's value in clear for an admin, *** for a viewer.",
            "Variable",
        ),
    },
    ApiRoute {
        method: MethodFilter::DELETE,
        path: "/variables/{variable_key}",
        handler: |m| on(m, crate::variables::api_delete),
        doc: Operation::write(
            "deleteVariable",
            "variables",
            "Deletes a variable.",
            None,
            200,
            "VariableDeleted",
        ),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/connections",
        handler: |m| on(m, crate::connections::api_list),
        doc: Operation {
            query: &[LIMIT, OFFSET],
            ..Operation::read(
                "listConnections",
                "connections",
                "A page of connections, by id; never a password or an extra.",
                "ConnectionPage",
            )
        },
    },
    ApiRoute {
        method: MethodFilter::POST,
        path: "/connections",
        handler: |m| on(m, crate::connections::api_set),
        doc: Operation::write(
            "setConnection",
            "connections",
            "Creates or replaces a connection as a whole; its password and extra are sealed \
             with the installation's key.",
            Some("SetConnectionRequest"),
            200,
            "Connection",
        ),
    },
    ApiRoute {
        method: MethodFilter::GET,
        path: "/connections/{connection_id}",
        handler: |m| on(m, crate::connections::api_get),
        doc: Operation::read(
            "getConnection",
            "connections",
            "A connection with its extra: the values of sensitive names masked for an admin, \
             every value for a viewer. The password is never shown.",
            "ConnectionDetail",
        ),
    },
    ApiRoute {
        method: MethodFilter::DELETE,
        path: "/connections/{connection_id}",
        handler: |m| on(m, crate::connections::api_delete),
        doc: Operation::write(
            "deleteConnection",
            "connections",
            "Deletes a connection.",
            None,
            200,
            "ConnectionDeleted",
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

async fn backfill(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<DagId>,
    Body(request): Body<BackfillRequest>,
) -> Result<Response, AppError> {
    let outcome = actions::backfill(&state.store, &caller, &id, &request, Utc::now()).await?;
    let status = match outcome.dry_run {
        true => axum::http::StatusCode::OK,
        false => axum::http::StatusCode::CREATED,
    };
    Ok((status, Json(outcome)).into_response())
}

async fn list_dags(
    State(state): State<AppState>,
    Params(query): Params<DagQuery>,
) -> Result<Json<Paged<DagSummary>>, AppError> {
    Ok(Json(dag_summaries(&state, &query).await?))
}

async fn get_dag(
    State(state): State<AppState>,
    Path(id): Path<DagId>,
) -> Result<Json<serde_json::Value>, AppError> {
    let (row, dag) = actions::load_dag(&state.store, &id).await?;
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
    Path(id): Path<DagId>,
) -> Result<Json<serde_json::Value>, AppError> {
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

async fn dag_grid(
    State(state): State<AppState>,
    Path(id): Path<DagId>,
) -> Result<Json<crate::model::Grid>, AppError> {
    let (_, dag) = actions::load_dag(&state.store, &id).await?;
    Ok(Json(build_grid(&state, &dag).await?))
}

async fn list_runs(
    State(state): State<AppState>,
    Path(id): Path<DagId>,
    Params(query): Params<RunQuery>,
) -> Result<Json<Paged<updraft_metadata::DagRun>>, AppError> {
    actions::load_dag(&state.store, &id).await?;
    Ok(Json(runs_page(&state, &id, &query).await?))
}

async fn get_run(
    State(state): State<AppState>,
    Path((id, run_id)): Path<(DagId, String)>,
) -> Result<Json<updraft_metadata::DagRun>, AppError> {
    Ok(Json(find_run(&state.store, &id, &run_id).await?))
}

async fn list_notifications(
    State(state): State<AppState>,
    Path((id, run_id)): Path<(DagId, String)>,
) -> Result<Json<serde_json::Value>, AppError> {
    let run = find_run(&state.store, &id, &run_id).await?;
    let items = reads::notifications(&state, run.id).await?;
    Ok(Json(serde_json::json!({ "items": items })))
}

async fn list_task_instances(
    State(state): State<AppState>,
    Path((id, run_id)): Path<(DagId, String)>,
) -> Result<Json<serde_json::Value>, AppError> {
    let run = find_run(&state.store, &id, &run_id).await?;
    let items = state.store.list_task_instances(run.id).await?;
    Ok(Json(json!({ "items": items })))
}

async fn get_task_instance(
    State(state): State<AppState>,
    Path((id, run_id, task)): Path<(DagId, String, TaskId)>,
) -> Result<Json<updraft_metadata::TaskInstance>, AppError> {
    Ok(Json(find_task_instance(&state, &id, &run_id, &task).await?))
}

async fn list_tries(
    State(state): State<AppState>,
    Path((id, run_id, task)): Path<(DagId, String, TaskId)>,
) -> Result<Json<serde_json::Value>, AppError> {
    let ti = find_task_instance(&state, &id, &run_id, &task).await?;
    let tries: Vec<TaskTry> = state.store.list_task_tries(ti.id).await?;
    let handlers = state.store.list_try_handler_runs(ti.id).await?;
    let items: Vec<serde_json::Value> = tries
        .into_iter()
        .map(|attempt| {
            let after: Vec<HandlerView> = handlers
                .iter()
                .filter(|run| {
                    run.try_key
                        .is_some_and(|key| key.try_number == attempt.try_number)
                })
                .cloned()
                .map(HandlerView::from)
                .collect();
            let mut item = json!(attempt);
            item["handlers"] = json!(after);
            item
        })
        .collect();
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
    Path((id, run_id, task, try_number)): Path<(DagId, String, TaskId, i32)>,
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
        .read_task_log(
            TryKey {
                task_instance: ti.id,
                try_number,
            },
            after,
            limit,
        )
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
    Path(id): Path<DagId>,
    Body(request): Body<Trigger>,
) -> Result<Response, AppError> {
    let run = actions::trigger(&state.store, &caller, &id, &request, Utc::now()).await?;
    Ok((axum::http::StatusCode::CREATED, Json(run)).into_response())
}

async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<DagId>,
) -> Result<Json<serde_json::Value>, AppError> {
    actions::set_paused(&state.store, &caller, &id, true, Utc::now()).await?;
    Ok(Json(json!({ "dag_id": id, "is_paused": true })))
}

async fn unpause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<DagId>,
) -> Result<Json<serde_json::Value>, AppError> {
    actions::set_paused(&state.store, &caller, &id, false, Utc::now()).await?;
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
    Path((id, run_id)): Path<(DagId, String)>,
    Body(request): Body<MarkRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    let new = actions::mark_run(
        &state.store,
        &caller,
        &id,
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
    Path((id, run_id)): Path<(DagId, String)>,
) -> Result<Json<Cancelled>, AppError> {
    let cancelled = actions::cancel_run(&state.store, &caller, &id, &run_id, Utc::now()).await?;
    Ok(Json(cancelled))
}

async fn mark_task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, run_id, task)): Path<(DagId, String, TaskId)>,
    Body(request): Body<MarkRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    let new = actions::mark_task(
        &state.store,
        &caller,
        &id,
        &run_id,
        &task,
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
    Path((id, run_id, task)): Path<(DagId, String, TaskId)>,
    Body(request): Body<ClearRequest>,
) -> Result<Json<actions::ClearOutcome>, AppError> {
    let outcome = actions::clear(
        &state.store,
        &caller,
        &id,
        &run_id,
        &task,
        &request,
        Utc::now(),
    )
    .await?;
    Ok(Json(outcome))
}

async fn list_pools(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    Ok(Json(json!({ "items": pools(&state).await? })))
}

async fn list_workers(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    Ok(Json(
        json!({ "items": state.store.list_worker_loads().await? }),
    ))
}

async fn list_backfills(
    State(state): State<AppState>,
    Params(query): Params<DagScoped>,
) -> Result<Json<Paged<BackfillView>>, AppError> {
    Ok(Json(backfills_page(&state, &query).await?))
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
