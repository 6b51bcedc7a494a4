//! Variables from the web: the page `/variables` (everyone lists; admins set and delete) and
//! the API's `/api/v1/variables` routes.
//!
//! A secret variable's value is shown as `***` in every list and on the page, and to a viewer
//! everywhere; an admin reads it in clear from `GET /api/v1/variables/{variable_key}` only.
//! Sets and deletes go through `actions`, as the command line's go through `updraft_ops`.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use updraft_core::ids::VariableKey;
use updraft_core::secret::MASK;
use updraft_metadata::Variable;
use updraft_ops::variables::{SetVariable, value_of};

use crate::AppState;
use crate::actions;
use crate::auth::Caller;
use crate::error::{AppError, PageError};
use crate::extract::{Body, Params, Path};
use crate::model::{Page, Paged};
use crate::pages::{Layout, pager};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/variables", get(page).post(set_form))
        .route("/variables/{variable_key}/delete", post(delete_form))
}

/// A variable as the web shows it.
#[derive(Debug, Serialize)]
pub struct VariableView {
    pub key: VariableKey,
    /// `***` for a secret one, but in an admin's read of it.
    pub value: String,
    pub is_secret: bool,
    pub description: String,
    pub updated_at: DateTime<Utc>,
}

impl VariableView {
    /// `variable`, its value masked when it is secret.
    fn masked(variable: Variable) -> VariableView {
        let value = match variable.is_secret {
            true => MASK.to_owned(),
            false => variable.value.clone(),
        };
        VariableView::shown(variable, value)
    }

    fn shown(variable: Variable, value: String) -> VariableView {
        VariableView {
            key: variable.key,
            value,
            is_secret: variable.is_secret,
            description: variable.description,
            updated_at: variable.updated_at,
        }
    }
}

async fn variables_page(state: &AppState, page: Page) -> Result<Paged<VariableView>, AppError> {
    let (limit, offset) = page.bounds()?;
    let rows = state.store.list_variables_page(limit + 1, offset).await?;
    Ok(Paged::new(rows, limit, offset).map(VariableView::masked))
}

async fn find(state: &AppState, key: &VariableKey) -> Result<Variable, AppError> {
    state
        .store
        .get_variable(key)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("variable '{key}' not found")))
}

/// `GET /api/v1/variables`.
pub async fn api_list(
    State(state): State<AppState>,
    Params(page): Params<Page>,
) -> Result<Json<Paged<VariableView>>, AppError> {
    Ok(Json(variables_page(&state, page).await?))
}

/// `GET /api/v1/variables/{variable_key}`: in clear for an admin.
pub async fn api_get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<VariableKey>,
) -> Result<Json<VariableView>, AppError> {
    let variable = find(&state, &key).await?;
    Ok(Json(match caller.is_admin() {
        true => {
            let value = value_of(&state.secrets, &variable)?;
            VariableView::shown(variable, value)
        }
        false => VariableView::masked(variable),
    }))
}

/// The body of `POST /api/v1/variables`: Airflow's `key`, `value` and `description`, and
/// whether the value is secret (by default: when its key is a sensitive name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVariableRequest {
    key: VariableKey,
    value: String,
    description: Option<String>,
    is_secret: Option<bool>,
}

/// `POST /api/v1/variables`: creates or replaces one.
pub async fn api_set(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(request): Body<SetVariableRequest>,
) -> Result<Json<VariableView>, AppError> {
    let set = SetVariable {
        key: request.key,
        value: request.value,
        secret: request.is_secret,
        description: request.description,
    };
    let stored =
        actions::set_variable(&state.store, &caller, &state.secrets, &set, Utc::now()).await?;
    Ok(Json(VariableView::masked(stored)))
}

/// `DELETE /api/v1/variables/{variable_key}`.
pub async fn api_delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<VariableKey>,
) -> Result<Json<Value>, AppError> {
    actions::delete_variable(&state.store, &caller, &key, Utc::now()).await?;
    Ok(Json(json!({ "key": key, "deleted": true })))
}

#[derive(Template, WebTemplate)]
#[template(path = "variables.html")]
pub struct VariablesPage {
    layout: Layout,
    variables: Vec<VariableView>,
    previous: Option<String>,
    next: Option<String>,
}

async fn page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Params(query): Params<Page>,
) -> Result<VariablesPage, PageError> {
    let page = variables_page(&state, query).await?;
    let (previous, next) = pager("/variables", "", &page);
    Ok(VariablesPage {
        layout: Layout::of(&caller, "Variables", "variables"),
        variables: page.items,
        previous,
        next,
    })
}

/// The form of the page: `secret` is `auto` (by the key's name), `yes` or `no`.
#[derive(Debug, Deserialize)]
pub struct SetForm {
    key: String,
    value: String,
    #[serde(default)]
    description: String,
    secret: String,
}

/// `POST /variables`, then back to the list.
async fn set_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<SetForm>,
) -> Result<Response, PageError> {
    caller.require_admin()?;
    let key = VariableKey::parse(form.key.trim())
        .map_err(|error| AppError::BadRequest(format!("bad key: {error}")))?;
    let secret = match form.secret.as_str() {
        "auto" => None,
        "yes" => Some(true),
        "no" => Some(false),
        other => {
            return Err(
                AppError::BadRequest(format!("secret is auto, yes or no, not '{other}'")).into(),
            );
        }
    };
    let set = SetVariable {
        key,
        // Browsers send a textarea's lines ended with CRLF.
        value: form.value.replace("\r\n", "\n"),
        secret,
        description: Some(form.description.trim().to_owned()),
    };
    actions::set_variable(&state.store, &caller, &state.secrets, &set, Utc::now()).await?;
    Ok(Redirect::to("/variables").into_response())
}

/// `POST /variables/{variable_key}/delete`, then back to the list.
async fn delete_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<VariableKey>,
) -> Result<Response, PageError> {
    actions::delete_variable(&state.store, &caller, &key, Utc::now()).await?;
    Ok(Redirect::to("/variables").into_response())
}
