//! The backfill form page: the options of `updraft dags backfill` as a form, its preview (the
//! plan of `updraft_ops::backfill`) and its start.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::Utc;
use serde::Deserialize;
use updraft_core::ids::DagId;
use updraft_ops::backfill::{BackfillPlan, BackfillRequest};

use crate::AppState;
use crate::actions;
use crate::auth::Caller;
use crate::error::{AppError, PageError};
use crate::extract::Path;
use crate::format::query_string;
use crate::pages::Layout;

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
    Path(id): Path<DagId>,
) -> Result<BackfillPage, PageError> {
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
    Path(id): Path<DagId>,
    Form(form): Form<BackfillForm>,
) -> Result<Response, PageError> {
    let (row, dag) = actions::load_dag(&state.store, &id).await?;
    let outcome = match form.request() {
        Ok(request) => actions::backfill(&state.store, &caller, &id, &request, Utc::now()).await,
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
