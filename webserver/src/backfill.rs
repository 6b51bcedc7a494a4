//! Starting a backfill from the UI and the API, with the CLI's options (`updraft dags
//! backfill`): the request, the plan (each interval and whether it would be created, re-run or
//! skipped, and why), the action, and the page with its form.
//!
//! The planner is `updraft_scheduler::backfill`, and the dependency rule keeps this crate from
//! depending on the scheduler. So the web server only defines what it needs, [`Backfills`],
//! and the binary hands `router` the implementation the CLI uses too
//! (`src/commands/backfill.rs`): one path for a backfill, whoever asks.

use std::future::Future;
use std::pin::Pin;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use updraft_core::ids::DagId;
use updraft_metadata::{Backfill, Store};

use crate::AppState;
use crate::actions::{self, dag_id};
use crate::auth::Caller;
use crate::error::{AppError, PageError};
use crate::format::query_string;
use crate::pages::Layout;

/// A future of a [`Backfills`] method (the trait is used as `dyn`, so its futures are boxed).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Plans and starts backfills: implemented by the binary over the scheduler's planner.
///
/// Errors are [`AppError`]s: `BadRequest` with a precise message for bad input (unparsable
/// or reversed dates, an unknown reprocess mode, a conf that does not fit the params, a range
/// without intervals, a manual-only DAG, more than 10,000 runs), `NotFound` for an unknown
/// DAG, `Conflict` for a start with nothing to run.
pub trait Backfills: Send + Sync {
    /// The dry run: what a backfill of `dag_id` as `request` asks would do. Changes nothing.
    fn plan<'a>(
        &'a self,
        store: &'a Store,
        dag_id: &'a DagId,
        request: &'a BackfillRequest,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<BackfillPlan, AppError>>;

    /// Plans and creates the backfill (its runs and re-runs in one transaction, the event
    /// log row with `created_by` as actor); the scheduler runs it.
    fn start<'a>(
        &'a self,
        store: &'a Store,
        dag_id: &'a DagId,
        request: &'a BackfillRequest,
        created_by: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<BackfillStarted, AppError>>;
}

/// What a backfill asks for: the options of `updraft dags backfill`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// First logical date: `YYYY-MM-DD` (midnight in the DAG's timezone), a date-time
    /// without offset (in the DAG's timezone), or RFC 3339.
    pub from: String,
    /// Last logical date, inclusive; the same forms.
    pub to: String,
    /// `none` (default), `failed` or `all`: which dates that have a finished run run again.
    #[serde(default)]
    pub reprocess: Option<String>,
    /// Runs of this backfill running at once, 1 to 10,000; default: the DAG's.
    #[serde(default)]
    pub max_active_runs: Option<u32>,
    /// Newest logical date first.
    #[serde(default)]
    pub run_backwards: bool,
    /// Every run's conf: a JSON object whose keys override the DAG's params.
    #[serde(default)]
    pub conf: Option<serde_json::Value>,
    /// Only say what would happen.
    #[serde(default)]
    pub dry_run: bool,
}

/// One interval of a planned backfill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedInterval {
    pub logical_date: DateTime<Utc>,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    /// `create`, `re-run` or `skip`.
    pub action: String,
    /// Why, in words: "no run yet", "run scheduled__... failed".
    pub reason: String,
    /// The run that holds the date, if any.
    pub run_id: Option<String>,
}

/// What a backfill would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackfillPlan {
    pub dag_id: DagId,
    /// The range asked for, as instants.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The DAG's timezone, in which dates without offset were read.
    pub timezone: String,
    /// The DAG's schedule in words.
    pub schedule: String,
    pub create: usize,
    pub rerun: usize,
    pub skip: usize,
    /// What the user should know: dates outside start_date/end_date, a paused DAG.
    pub warnings: Vec<String>,
    /// Every interval, in the order its runs start.
    pub intervals: Vec<PlannedInterval>,
}

/// A backfill that was started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackfillStarted {
    pub backfill: Backfill,
    /// New runs.
    pub created: usize,
    /// Existing runs cleared and run again.
    pub rerun: usize,
    /// Dates another run took between the plan and the write: skipped, never duplicated.
    pub taken: Vec<DateTime<Utc>>,
    pub plan: BackfillPlan,
}

/// The answer of `POST /api/v1/dags/{dag_id}/backfills`: the plan, and on a start the
/// backfill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackfillOutcome {
    pub dry_run: bool,
    /// `None` on a dry run.
    pub backfill: Option<Backfill>,
    pub created: usize,
    pub rerun: usize,
    pub taken: Vec<DateTime<Utc>>,
    pub plan: BackfillPlan,
}

/// Plans (a dry run, which changes nothing and so is a read, as a clear's dry run) or starts
/// (admins only) a backfill of `dag_id`.
pub async fn backfill(
    state: &AppState,
    caller: &Caller,
    dag_id: &DagId,
    request: &BackfillRequest,
    now: DateTime<Utc>,
) -> Result<BackfillOutcome, AppError> {
    if request.dry_run {
        let plan = state
            .backfills
            .plan(&state.store, dag_id, request, now)
            .await?;
        return Ok(BackfillOutcome {
            dry_run: true,
            backfill: None,
            created: 0,
            rerun: 0,
            taken: Vec::new(),
            plan,
        });
    }
    caller.require_admin()?;
    let started = state
        .backfills
        .start(&state.store, dag_id, request, &caller.user.username, now)
        .await?;
    Ok(BackfillOutcome {
        dry_run: false,
        backfill: Some(started.backfill),
        created: started.created,
        rerun: started.rerun,
        taken: started.taken,
        plan: started.plan,
    })
}

// --- the page -------------------------------------------------------------------------------

pub fn routes() -> Router<AppState> {
    Router::new().route("/dags/{dag_id}/backfill", get(form).post(submit))
}

/// The form as entered (every field as text, so a refused one is shown as typed).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BackfillForm {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub reprocess: String,
    #[serde(default)]
    pub max_active_runs: String,
    /// A checkbox: present ("on") or absent.
    #[serde(default)]
    pub run_backwards: Option<String>,
    #[serde(default)]
    pub conf: String,
    /// Which button: `preview` or `start`.
    #[serde(default)]
    pub intent: String,
}

impl BackfillForm {
    /// The request the form means; every field that cannot be read is named.
    pub fn request(&self) -> Result<BackfillRequest, Vec<String>> {
        let mut problems = Vec::new();
        let max_active_runs = match self.max_active_runs.trim() {
            "" => None,
            text => match text.parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    problems.push(format!(
                        "max active runs \"{text}\" is not a whole number from 1 to 10000"
                    ));
                    None
                }
            },
        };
        let conf = match self.conf.trim() {
            "" => None,
            text => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(value) => Some(value),
                Err(error) => {
                    problems.push(format!("conf is not valid JSON: {error}"));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(BackfillRequest {
            from: self.from.clone(),
            to: self.to.clone(),
            reprocess: Some(self.reprocess.clone()).filter(|mode| !mode.is_empty()),
            max_active_runs,
            run_backwards: self.run_backwards.is_some(),
            conf,
            dry_run: self.intent != "start",
        })
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "backfill.html")]
struct BackfillPage {
    layout: Layout,
    dag_id: String,
    is_paused: bool,
    schedule: String,
    timezone: String,
    form: BackfillForm,
    errors: Vec<String>,
    plan: Option<BackfillPlan>,
}

impl BackfillPage {
    fn reprocess_is(&self, mode: &str) -> bool {
        self.form.reprocess == mode || (self.form.reprocess.is_empty() && mode == "none")
    }
}

async fn form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<BackfillPage, PageError> {
    let id = dag_id(&id)?;
    let (row, dag) = actions::load_dag(&state.store, &id).await?;
    Ok(BackfillPage {
        layout: Layout::of(&caller, format!("Backfill {id}"), "dags"),
        dag_id: id.to_string(),
        is_paused: row.is_paused,
        schedule: dag.timetable.describe(),
        timezone: dag.timetable.timezone.name().to_owned(),
        form: BackfillForm::default(),
        errors: Vec::new(),
        plan: None,
    })
}

/// Preview: the page again with the plan. Start: the backfill list of the DAG. A refusal:
/// the page again (400) with the message above the form and the fields as entered.
async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Form(form): Form<BackfillForm>,
) -> Result<Response, PageError> {
    let id = dag_id(&id)?;
    let (row, dag) = actions::load_dag(&state.store, &id).await?;
    let outcome = match form.request() {
        Ok(request) => backfill(&state, &caller, &id, &request, Utc::now()).await,
        Err(problems) => Err(AppError::BadRequest(problems.join("; "))),
    };
    let (status, errors, plan) = match outcome {
        Ok(outcome) if !outcome.dry_run => {
            let list = format!("/backfills?{}", query_string(&[("dag_id", id.as_str())]));
            return Ok(Redirect::to(&list).into_response());
        }
        Ok(outcome) => (StatusCode::OK, Vec::new(), Some(outcome.plan)),
        Err(AppError::BadRequest(message) | AppError::Conflict(message)) => {
            (StatusCode::BAD_REQUEST, vec![message], None)
        }
        Err(other) => return Err(other.into()),
    };
    let page = BackfillPage {
        layout: Layout::of(&caller, format!("Backfill {id}"), "dags"),
        dag_id: id.to_string(),
        is_paused: row.is_paused,
        schedule: dag.timetable.describe(),
        timezone: dag.timetable.timezone.name().to_owned(),
        form,
        errors,
        plan,
    };
    Ok((status, page).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_becomes_a_request_or_names_each_bad_field() {
        let form = BackfillForm {
            from: "2024-01-01".to_owned(),
            to: "2024-01-03".to_owned(),
            reprocess: "failed".to_owned(),
            max_active_runs: " 2 ".to_owned(),
            run_backwards: Some("on".to_owned()),
            conf: r#"{"region": "us"}"#.to_owned(),
            intent: "start".to_owned(),
        };
        assert_eq!(
            form.request(),
            Ok(BackfillRequest {
                from: "2024-01-01".to_owned(),
                to: "2024-01-03".to_owned(),
                reprocess: Some("failed".to_owned()),
                max_active_runs: Some(2),
                run_backwards: true,
                conf: Some(serde_json::json!({"region": "us"})),
                dry_run: false,
            })
        );
        // Empty fields take the defaults, and anything but the start button is a preview.
        let request = BackfillForm::default().request().unwrap();
        assert_eq!((request.reprocess, request.conf), (None, None));
        assert!(request.dry_run);
        let bad = BackfillForm {
            max_active_runs: "many".to_owned(),
            conf: "{".to_owned(),
            ..BackfillForm::default()
        };
        let problems = bad.request().unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(
            problems[0],
            "max active runs \"many\" is not a whole number from 1 to 10000"
        );
        assert!(
            problems[1].starts_with("conf is not valid JSON"),
            "{problems:?}"
        );
    }
}
