//! The HTML pages (askama templates in `templates/`) and the forms' handlers, which call the
//! same `actions` as the JSON API and then redirect (303) back to a page.
//!
//! Times are rendered as `<time datetime="UTC">` and shown in the viewer's timezone by
//! `static/app.js`; elements marked `data-live` are refreshed by it without a reload.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use updraft_core::dag::{Dag, ParamType};
use updraft_core::ids::{DagId, TaskId, TaskInstanceId};
use updraft_core::state::TaskState;
use updraft_metadata::{DagRow, DagRun, EventLog, ImportError, TaskInstance, TaskTry, WorkerLoad};

use crate::AppState;
use crate::actions::{self, ClearOutcome, ClearRequest};
use crate::auth::Caller;
use crate::error::{AppError, PageError};
use crate::extract::{Params, Path};
use crate::format::{duration_between, iso, query_string};
use crate::gantt::{self, GanttRow, GanttTry};
use crate::graph;
use crate::model::{Grid, Paged};
use crate::reads::{
    self, BackfillView, DagQuery, DagScoped, DagSummary, HandlerView, NextRun, PoolView, RunQuery,
};
use updraft_ops::dags::Trigger;
use updraft_ops::mark::Mark;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dags") }))
        .route("/dags", get(dags))
        .route("/dags/{dag_id}", get(dag))
        .route("/dags/{dag_id}/trigger", get(trigger_form).post(trigger))
        .route("/dags/{dag_id}/pause", post(pause))
        .route("/dags/{dag_id}/unpause", post(unpause))
        .route("/dags/{dag_id}/runs/{run_id}", get(run))
        .route("/dags/{dag_id}/runs/{run_id}/mark", post(mark_run))
        .route("/dags/{dag_id}/runs/{run_id}/cancel", post(cancel_run))
        .route(
            "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}",
            get(task_try),
        )
        .route(
            "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/mark",
            post(mark_task),
        )
        .route(
            "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear",
            get(clear_confirm).post(clear),
        )
        .route("/pools", get(pools))
        .route("/workers", get(workers))
        .route("/backfills", get(backfills))
        .route("/events", get(events))
}

/// What the layout needs: the page title, the nav's section and the user.
pub struct Layout {
    pub title: String,
    pub section: &'static str,
    /// Empty on the login and error pages: no nav then.
    pub username: String,
    pub role: String,
    pub is_admin: bool,
    pub csrf: String,
}

impl Layout {
    pub fn anonymous(title: &str) -> Layout {
        Layout {
            title: title.to_owned(),
            section: "",
            username: String::new(),
            role: String::new(),
            is_admin: false,
            csrf: String::new(),
        }
    }

    pub(crate) fn of(caller: &Caller, title: impl Into<String>, section: &'static str) -> Layout {
        Layout {
            title: title.into(),
            section,
            username: caller.user.username.clone(),
            role: caller.user.role.to_string(),
            is_admin: caller.is_admin(),
            csrf: caller.csrf().to_owned(),
        }
    }
}

/// The URL of a DAG page, a run page or a task page, its segments percent-encoded.
pub use updraft_core::links::{dag_url, run_url, task_url};

/// A time, or a missing one, however deep the references templates hand over.
pub trait Instant {
    fn instant(&self) -> Option<DateTime<Utc>>;
}

impl Instant for DateTime<Utc> {
    fn instant(&self) -> Option<DateTime<Utc>> {
        Some(*self)
    }
}

impl Instant for Option<DateTime<Utc>> {
    fn instant(&self) -> Option<DateTime<Utc>> {
        *self
    }
}

impl<T: Instant + ?Sized> Instant for &T {
    fn instant(&self) -> Option<DateTime<Utc>> {
        (**self).instant()
    }
}

/// A time as a `<time>` element's value ("" when missing).
pub fn time(time: impl Instant) -> String {
    time.instant().map(iso).unwrap_or_default()
}

/// The duration between two times, "" unless both are known.
pub fn took(start: impl Instant, end: impl Instant) -> String {
    duration_between(start.instant(), end.instant())
}

// --- the DAG list -------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "dags.html")]
struct DagsPage {
    layout: Layout,
    dags: Vec<DagSummary>,
    import_errors: Vec<ImportError>,
    tags: Vec<String>,
    search: String,
    tag: String,
    paused: String,
    previous: Option<String>,
    next: Option<String>,
}

/// The DAG list's query as the form sends it (`paused` is "", "true" or "false").
#[derive(Debug, Default, Deserialize)]
struct DagListForm {
    search: Option<String>,
    tag: Option<String>,
    paused: Option<String>,
    offset: Option<i64>,
}

async fn dags(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Params(form): Params<DagListForm>,
) -> Result<DagsPage, PageError> {
    let paused = match form.paused.as_deref().unwrap_or("") {
        "" => None,
        "true" => Some(true),
        "false" => Some(false),
        other => {
            return Err(AppError::BadRequest(format!(
                "paused must be true or false, not \"{other}\""
            ))
            .into());
        }
    };
    let query = DagQuery {
        search: form.search.clone(),
        tag: form.tag.clone(),
        paused,
        limit: None,
        offset: form.offset,
    };
    let page = reads::dag_summaries(&state, &query).await?;
    let search = form.search.unwrap_or_default();
    let tag = form.tag.unwrap_or_default();
    let paused = form.paused.unwrap_or_default();
    let link = |offset: i64| {
        let offset = offset.to_string();
        format!(
            "/dags?{}",
            query_string(&[
                ("search", &search),
                ("tag", &tag),
                ("paused", &paused),
                ("offset", &offset)
            ])
        )
    };
    let previous = (page.offset > 0).then(|| link((page.offset - page.limit).max(0)));
    let next = page.next_offset.map(link);
    Ok(DagsPage {
        layout: Layout::of(&caller, "DAGs", "dags"),
        dags: page.items,
        import_errors: state.store.list_import_errors().await?,
        tags: state.store.list_dag_tags().await?,
        search,
        tag,
        paused,
        previous,
        next,
    })
}

// --- one DAG ------------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "dag.html")]
struct DagPage {
    layout: Layout,
    row: DagRow,
    dag: Dag,
    tab: String,
    grid: Option<Grid>,
    runs: Option<Paged<DagRun>>,
    run_state: String,
    run_type: String,
    runs_previous: Option<String>,
    runs_next: Option<String>,
    source: Option<String>,
    next_runs: Vec<NextRun>,
    graph: Option<GraphView>,
}

/// The graph tab: the DAG drawn with one run's states, and the runs to pick from.
struct GraphView {
    /// Inline SVG made by [`graph::render_svg`], which escapes everything it draws.
    svg: String,
    /// The run whose states colour the boxes (the latest when none is picked).
    run_id: Option<String>,
    runs: Vec<String>,
}

impl DagPage {
    fn params(&self) -> Vec<(String, String, String, String)> {
        self.dag
            .params
            .iter()
            .map(|(name, param)| {
                (
                    name.clone(),
                    param.kind.as_str().to_owned(),
                    param
                        .default
                        .as_ref()
                        .map(Value::to_string)
                        .unwrap_or_default(),
                    param.description.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    fn cron(&self) -> String {
        self.row.schedule.clone().unwrap_or_default()
    }
}

#[derive(Debug, Default, Deserialize)]
struct DagForm {
    tab: Option<String>,
    state: Option<String>,
    run_type: Option<String>,
    offset: Option<i64>,
    /// The graph tab's run.
    run: Option<String>,
}

/// How many recent runs the graph tab offers to colour the graph with.
const GRAPH_RUNS: i64 = 25;

const TABS: [&str; 5] = ["grid", "graph", "runs", "code", "details"];

async fn dag(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<DagId>,
    Params(form): Params<DagForm>,
) -> Result<DagPage, PageError> {
    let (row, dag) = actions::load_dag(&state.store, &id).await?;
    let tab = form.tab.clone().unwrap_or_else(|| "grid".to_owned());
    if !TABS.contains(&tab.as_str()) {
        return Err(
            AppError::NotFound(format!("no tab \"{tab}\"; tabs: {}", TABS.join(", "))).into(),
        );
    }
    let grid = match tab.as_str() {
        "grid" => Some(reads::build_grid(&state, &dag).await?),
        _ => None,
    };
    let run_state = form.state.clone().unwrap_or_default();
    let run_type = form.run_type.clone().unwrap_or_default();
    let (runs, runs_previous, runs_next) = match tab.as_str() {
        "runs" => {
            let query = RunQuery {
                state: form.state.clone(),
                run_type: form.run_type.clone(),
                limit: None,
                offset: form.offset,
            };
            let page = reads::runs_page(&state, &id, &query).await?;
            let link = |offset: i64| {
                let offset = offset.to_string();
                format!(
                    "{}?{}",
                    dag_url(id.as_str()),
                    query_string(&[
                        ("tab", "runs"),
                        ("state", &run_state),
                        ("run_type", &run_type),
                        ("offset", &offset)
                    ])
                )
            };
            let previous = (page.offset > 0).then(|| link((page.offset - page.limit).max(0)));
            let next = page.next_offset.map(link);
            (Some(page), previous, next)
        }
        _ => (None, None, None),
    };
    let source = match tab.as_str() {
        "code" => state
            .store
            .get_dag_version(&id, &row.version_hash)
            .await?
            .map(|version| version.source),
        _ => None,
    };
    let next_runs = reads::next_runs(&dag, &row, 5);
    let graph = match tab.as_str() {
        "graph" => Some(graph_view(&state, &dag, form.run.as_deref()).await?),
        _ => None,
    };
    Ok(DagPage {
        layout: Layout::of(&caller, id.to_string(), "dags"),
        row,
        dag,
        tab,
        grid,
        runs,
        run_state,
        run_type,
        runs_previous,
        runs_next,
        source,
        next_runs,
        graph,
    })
}

async fn graph_view(
    state: &AppState,
    dag: &Dag,
    run_id: Option<&str>,
) -> Result<GraphView, PageError> {
    let recent = state
        .store
        .list_dag_runs(&dag.id, None, GRAPH_RUNS, 0)
        .await?;
    let run = match run_id {
        Some(run_id) => Some(actions::find_run(&state.store, &dag.id, run_id).await?),
        None => recent.first().cloned(),
    };
    let states: HashMap<String, TaskState> = match &run {
        Some(run) => state
            .store
            .list_task_instances(run.id)
            .await?
            .into_iter()
            .map(|ti| (ti.task_id.to_string(), ti.state))
            .collect(),
        None => HashMap::new(),
    };
    let svg = graph::render_svg(&graph::layout(dag), &states, |task| {
        run.as_ref()
            .map(|run| task_url(dag.id.as_str(), &run.run_id, task))
    });
    Ok(GraphView {
        svg,
        run_id: run.map(|run| run.run_id),
        runs: recent.into_iter().map(|run| run.run_id).collect(),
    })
}

/// `next`: where a form goes back to, a path of this site.
#[derive(Debug, Default, Deserialize)]
struct Back {
    next: Option<String>,
}

fn back(next: Option<&str>, default: String) -> Redirect {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") => Redirect::to(path),
        _ => Redirect::to(&default),
    }
}

async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<DagId>,
    Form(form): Form<Back>,
) -> Result<Redirect, PageError> {
    actions::set_paused(&state.store, &caller, &id, true, Utc::now()).await?;
    Ok(back(form.next.as_deref(), dag_url(id.as_str())))
}

async fn unpause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<DagId>,
    Form(form): Form<Back>,
) -> Result<Redirect, PageError> {
    actions::set_paused(&state.store, &caller, &id, false, Utc::now()).await?;
    Ok(back(form.next.as_deref(), dag_url(id.as_str())))
}

// --- trigger ------------------------------------------------------------------------------

/// A param as a form field.
struct Field {
    name: String,
    kind: &'static str,
    /// The value shown: what was entered, else the default.
    value: String,
    description: String,
    /// `enum` values, for a select.
    choices: Vec<String>,
}

impl Field {
    fn is_boolean(&self) -> bool {
        self.kind == "boolean"
    }

    fn is_checked(&self) -> bool {
        self.value == "true"
    }

    fn is_json(&self) -> bool {
        matches!(self.kind, "array" | "object")
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "trigger.html")]
struct TriggerPage {
    layout: Layout,
    dag_id: String,
    is_paused: bool,
    fields: Vec<Field>,
    logical_date: String,
    errors: Vec<String>,
}

/// The text a form field shows for a JSON value: strings bare, the rest as JSON.
fn field_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The trigger form's fields: fresh (each param's default), or as `entered` after a refused
/// submit (an unchecked box sends nothing, so it shows unchecked then).
fn fields(dag: &Dag, entered: &[(String, String)]) -> Vec<Field> {
    let submitted = !entered.is_empty();
    dag.params
        .iter()
        .map(|(name, param)| {
            let key = format!("param.{name}");
            let typed = entered
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone());
            let value = match (typed, param.kind) {
                (Some(value), _) => value,
                (None, ParamType::Boolean) if submitted => "false".to_owned(),
                (None, _) => param.default.as_ref().map(field_text).unwrap_or_default(),
            };
            Field {
                name: name.clone(),
                kind: param.kind.as_str(),
                value,
                description: param.description.clone().unwrap_or_default(),
                choices: param.allowed.iter().map(field_text).collect(),
            }
        })
        .collect()
}

/// The conf a trigger form means: each field read as its param's type. A field left empty
/// is left out (the param's default applies); problems are collected, one per field.
pub fn conf_of_form(dag: &Dag, form: &[(String, String)]) -> Result<Value, Vec<String>> {
    let mut conf = serde_json::Map::new();
    let mut problems = Vec::new();
    for (name, param) in &dag.params {
        let key = format!("param.{name}");
        let text = form.iter().find(|(k, _)| *k == key).map(|(_, v)| v.trim());
        let value = match (param.kind, text) {
            (ParamType::Boolean, text) => Value::Bool(text == Some("true")),
            (_, None | Some("")) => continue,
            (ParamType::String, Some(text)) => Value::String(text.to_owned()),
            (_, Some(text)) => match serde_json::from_str::<Value>(text) {
                Ok(value) => value,
                Err(_) => {
                    problems.push(format!(
                        "param \"{name}\": \"{text}\" is not a valid {}",
                        param.kind.as_str()
                    ));
                    continue;
                }
            },
        };
        conf.insert(name.clone(), value);
    }
    match problems.is_empty() {
        true => Ok(Value::Object(conf)),
        false => Err(problems),
    }
}

/// A logical date from the form: empty (now), RFC 3339, or a date (midnight UTC).
fn logical_date_of_form(text: &str) -> Result<Option<DateTime<Utc>>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(instant.with_timezone(&Utc)));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).map(|t| t.and_utc()));
    }
    Err(format!(
        "logical date \"{text}\": write RFC 3339 (2024-03-01T12:00:00Z) or a date (2024-03-01)"
    ))
}

async fn trigger_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<DagId>,
) -> Result<TriggerPage, PageError> {
    let (row, dag) = actions::load_dag(&state.store, &id).await?;
    Ok(TriggerPage {
        layout: Layout::of(&caller, format!("Trigger {id}"), "dags"),
        dag_id: id.to_string(),
        is_paused: row.is_paused,
        fields: fields(&dag, &[]),
        logical_date: String::new(),
        errors: Vec::new(),
    })
}

async fn trigger(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<DagId>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    caller.require_admin()?;
    let (row, dag) = actions::load_dag(&state.store, &id).await?;
    let date_text = form
        .iter()
        .find(|(k, _)| k == "logical_date")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut errors = Vec::new();
    let conf = conf_of_form(&dag, &form).unwrap_or_else(|problems| {
        errors.extend(problems);
        Value::Null
    });
    let logical_date = logical_date_of_form(&date_text).unwrap_or_else(|problem| {
        errors.push(problem);
        None
    });
    if errors.is_empty() {
        let request = Trigger {
            conf: Some(conf),
            logical_date,
        };
        match actions::trigger(&state.store, &caller, &id, &request, Utc::now()).await {
            Ok(run) => {
                return Ok(Redirect::to(&run_url(id.as_str(), &run.run_id)).into_response());
            }
            Err(AppError::BadRequest(message) | AppError::Conflict(message)) => {
                errors.push(message);
            }
            Err(other) => return Err(other.into()),
        }
    }
    let page = TriggerPage {
        layout: Layout::of(&caller, format!("Trigger {id}"), "dags"),
        dag_id: id.to_string(),
        is_paused: row.is_paused,
        fields: fields(&dag, &form),
        logical_date: date_text,
        errors,
    };
    Ok((axum::http::StatusCode::BAD_REQUEST, page).into_response())
}

// --- one run ------------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "run.html")]
struct RunPage {
    layout: Layout,
    run: DagRun,
    instances: Vec<TaskInstance>,
    conf: String,
    /// Inline SVG made by [`gantt::render_svg`] (which escapes what it draws); `None` before
    /// any task started.
    gantt: Option<String>,
    /// What the DAG's handlers did each time the run ended.
    handlers: Vec<HandlerView>,
    /// What its notifiers were told, and how sending went.
    notifications: Vec<reads::NotificationView>,
}

async fn run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, run_id)): Path<(DagId, String)>,
) -> Result<RunPage, PageError> {
    let run = actions::find_run(&state.store, &id, &run_id).await?;
    let instances = state.store.list_task_instances(run.id).await?;
    let mut tries: HashMap<TaskInstanceId, Vec<TaskTry>> = HashMap::new();
    for attempt in state.store.list_run_tries(run.id).await? {
        tries
            .entry(attempt.task_instance_id)
            .or_default()
            .push(attempt);
    }
    let rows: Vec<GanttRow> = instances
        .iter()
        .map(|ti| GanttRow {
            task_id: ti.task_id.to_string(),
            tries: tries
                .get(&ti.id)
                .into_iter()
                .flatten()
                .map(|t| GanttTry {
                    try_number: t.try_number.into(),
                    start: t.start_date,
                    end: t.end_date,
                    state: t.state,
                    href: Some(format!(
                        "{}?try={}",
                        task_url(id.as_str(), &run.run_id, ti.task_id.as_str()),
                        t.try_number
                    )),
                })
                .collect(),
        })
        .collect();
    let gantt = gantt::render_svg(&rows, Utc::now());
    let conf = serde_json::to_string_pretty(&run.conf).unwrap_or_default();
    let handlers = state
        .store
        .list_run_handler_runs(run.id)
        .await?
        .into_iter()
        .map(HandlerView::from)
        .collect();
    let notifications = reads::notifications(&state, run.id).await?;
    Ok(RunPage {
        layout: Layout::of(&caller, format!("{id} · {run_id}"), "dags"),
        run,
        instances,
        conf,
        gantt,
        handlers,
        notifications,
    })
}

#[derive(Debug, Deserialize)]
struct MarkForm {
    state: Mark,
}

async fn mark_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, run_id)): Path<(DagId, String)>,
    Form(form): Form<MarkForm>,
) -> Result<Redirect, PageError> {
    actions::mark_run(&state.store, &caller, &id, &run_id, form.state, Utc::now()).await?;
    Ok(Redirect::to(&run_url(id.as_str(), &run_id)))
}

async fn cancel_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, run_id)): Path<(DagId, String)>,
) -> Result<Redirect, PageError> {
    actions::cancel_run(&state.store, &caller, &id, &run_id, Utc::now()).await?;
    Ok(Redirect::to(&run_url(id.as_str(), &run_id)))
}

async fn mark_task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, run_id, task)): Path<(DagId, String, TaskId)>,
    Form(form): Form<MarkForm>,
) -> Result<Redirect, PageError> {
    actions::mark_task(
        &state.store,
        &caller,
        &id,
        &run_id,
        &task,
        form.state,
        Utc::now(),
    )
    .await?;
    Ok(Redirect::to(&task_url(id.as_str(), &run_id, task.as_str())))
}

// --- clear --------------------------------------------------------------------------------

/// The clear options as checkboxes send them: present ("on") or absent.
#[derive(Debug, Default, Deserialize)]
struct ClearForm {
    downstream: Option<String>,
    upstream: Option<String>,
    past: Option<String>,
    future: Option<String>,
    only_failed: Option<String>,
}

impl ClearForm {
    fn request(&self, dry_run: bool) -> ClearRequest {
        ClearRequest {
            downstream: self.downstream.is_some(),
            upstream: self.upstream.is_some(),
            past: self.past.is_some(),
            future: self.future.is_some(),
            only_failed: self.only_failed.is_some(),
            dry_run,
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "clear.html")]
struct ClearPage {
    layout: Layout,
    dag_id: String,
    run_id: String,
    task_id: String,
    request: ClearRequest,
    outcome: ClearOutcome,
}

/// `GET .../clear?downstream=on...`: what the clear would do, and the button that does it.
async fn clear_confirm(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, run_id, task)): Path<(DagId, String, TaskId)>,
    Params(form): Params<ClearForm>,
) -> Result<ClearPage, PageError> {
    let request = form.request(true);
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
    Ok(ClearPage {
        layout: Layout::of(&caller, format!("Clear {task}"), "dags"),
        dag_id: id.to_string(),
        run_id,
        task_id: task.to_string(),
        request,
        outcome,
    })
}

async fn clear(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, run_id, task)): Path<(DagId, String, TaskId)>,
    Form(form): Form<ClearForm>,
) -> Result<Redirect, PageError> {
    let request = form.request(false);
    actions::clear(
        &state.store,
        &caller,
        &id,
        &run_id,
        &task,
        &request,
        Utc::now(),
    )
    .await?;
    Ok(Redirect::to(&run_url(id.as_str(), &run_id)))
}

// --- one task instance and its tries ------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "task.html")]
struct TaskPage {
    layout: Layout,
    ti: TaskInstance,
    tries: Vec<TaskTry>,
    /// The try shown: the one asked for, else the latest.
    selected: Option<TaskTry>,
    /// What the selected try's handler did.
    handlers: Vec<HandlerView>,
    rendered_command: String,
}

#[derive(Debug, Default, Deserialize)]
struct TryForm {
    #[serde(rename = "try")]
    try_number: Option<i32>,
}

async fn task_try(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, run_id, task)): Path<(DagId, String, TaskId)>,
    Params(form): Params<TryForm>,
) -> Result<TaskPage, PageError> {
    let ti = reads::find_task_instance(&state, &id, &run_id, &task).await?;
    let tries = state.store.list_task_tries(ti.id).await?;
    let selected = match form.try_number {
        Some(number) => Some(
            tries
                .iter()
                .find(|t| t.try_number == number)
                .cloned()
                .ok_or_else(|| AppError::NotFound(format!("try {number} of task '{task}'")))?,
        ),
        None => tries.last().cloned(),
    };
    let handlers = match &selected {
        Some(shown) => state
            .store
            .list_try_handler_runs(ti.id)
            .await?
            .into_iter()
            .filter(|run| {
                run.try_key
                    .is_some_and(|key| key.try_number == shown.try_number)
            })
            .map(HandlerView::from)
            .collect(),
        None => Vec::new(),
    };
    let rendered_command = ti
        .rendered_command
        .as_ref()
        .map(|command| serde_json::to_string_pretty(command).unwrap_or_default())
        .unwrap_or_default();
    Ok(TaskPage {
        layout: Layout::of(&caller, format!("{task} · {run_id}"), "dags"),
        ti,
        tries,
        selected,
        handlers,
        rendered_command,
    })
}

// --- pools, workers, backfills, audit log -------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "pools.html")]
struct PoolsPage {
    layout: Layout,
    pools: Vec<PoolView>,
}

async fn pools(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<PoolsPage, PageError> {
    Ok(PoolsPage {
        layout: Layout::of(&caller, "Pools", "pools"),
        pools: reads::pools(&state).await?,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "workers.html")]
struct WorkersPage {
    layout: Layout,
    workers: Vec<WorkerLoad>,
    now: DateTime<Utc>,
}

async fn workers(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<WorkersPage, PageError> {
    Ok(WorkersPage {
        layout: Layout::of(&caller, "Workers", "workers"),
        workers: state.store.list_worker_loads().await?,
        now: Utc::now(),
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "backfills.html")]
struct BackfillsPage {
    layout: Layout,
    backfills: Vec<BackfillView>,
    previous: Option<String>,
    next: Option<String>,
}

/// Links to the previous and next page of a list at `path` (keeping its `dag_id` filter).
pub(crate) fn pager<T>(path: &str, dag: &str, page: &Paged<T>) -> (Option<String>, Option<String>) {
    let link = |offset: i64| {
        let offset = offset.to_string();
        format!(
            "{path}?{}",
            query_string(&[("dag_id", dag), ("offset", &offset)])
        )
    };
    (
        (page.offset > 0).then(|| link((page.offset - page.limit).max(0))),
        page.next_offset.map(link),
    )
}

async fn backfills(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Params(query): Params<DagScoped>,
) -> Result<BackfillsPage, PageError> {
    let page = reads::backfills_page(&state, &query).await?;
    let (previous, next) = pager("/backfills", query.dag_id.as_deref().unwrap_or(""), &page);
    Ok(BackfillsPage {
        layout: Layout::of(&caller, "Backfills", "backfills"),
        backfills: page.items,
        previous,
        next,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "events.html")]
struct EventsPage {
    layout: Layout,
    events: Vec<EventLog>,
    dag_id: String,
    previous: Option<String>,
    next: Option<String>,
}

async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Params(query): Params<DagScoped>,
) -> Result<EventsPage, PageError> {
    let page = reads::events_page(&state, &query).await?;
    let dag = query.dag_id.clone().unwrap_or_default();
    let (previous, next) = pager("/events", &dag, &page);
    Ok(EventsPage {
        layout: Layout::of(&caller, "Audit log", "events"),
        events: page.items,
        dag_id: dag,
        previous,
        next,
    })
}

#[cfg(test)]
mod tests {
    use updraft_core::dag::{LoadOptions, decode};

    use super::*;

    fn dag() -> Dag {
        let text = "\
params:
  region: {type: string, default: eu}
  days: {type: integer, default: 1}
  full: {type: boolean, default: false}
  tables: {type: array, default: []}
tasks:
  a: {run: x}
";
        decode("p.yaml", text, &LoadOptions::default()).unwrap()
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_trigger_form_becomes_a_typed_conf() {
        let conf = conf_of_form(
            &dag(),
            &form(&[
                ("param.region", "us"),
                ("param.days", "3"),
                ("param.full", "true"),
                ("param.tables", "[\"a\"]"),
                ("csrf_token", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(
            conf,
            serde_json::json!({"region": "us", "days": 3, "full": true, "tables": ["a"]})
        );
        // Empty fields take the defaults; an unchecked box is false.
        let conf = conf_of_form(&dag(), &form(&[("param.days", "")])).unwrap();
        assert_eq!(conf, serde_json::json!({"full": false}));
    }

    #[test]
    fn a_field_that_is_not_its_type_is_named() {
        let problems = conf_of_form(
            &dag(),
            &form(&[("param.days", "three"), ("param.tables", "[")]),
        )
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "param \"days\": \"three\" is not a valid integer",
                "param \"tables\": \"[\" is not a valid array"
            ]
        );
    }

    #[test]
    fn logical_dates_are_rfc3339_or_dates() {
        assert_eq!(logical_date_of_form(" "), Ok(None));
        assert_eq!(
            logical_date_of_form("2024-03-01").unwrap().map(iso),
            Some("2024-03-01T00:00:00Z".to_owned())
        );
        assert_eq!(
            logical_date_of_form("2024-03-01T12:00:00+01:00")
                .unwrap()
                .map(iso),
            Some("2024-03-01T11:00:00Z".to_owned())
        );
        assert!(logical_date_of_form("yesterday").is_err());
    }

    #[test]
    fn url_segments_are_percent_encoded() {
        assert_eq!(
            run_url("etl", "manual__2024-01-01T00:00:00+00:00"),
            "/dags/etl/runs/manual__2024-01-01T00%3A00%3A00%2B00%3A00"
        );
        assert_eq!(task_url("a b", "r", "t"), "/dags/a%20b/runs/r/tasks/t");
    }
}
