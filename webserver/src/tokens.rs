//! API tokens from the web: the page `/tokens` (list, create one for oneself, revoke) and the
//! API's `GET /api/v1/tokens` and `POST /api/v1/tokens/{token_id}/revoke`.
//!
//! Everyone manages their own tokens; an admin sees and revokes everyone's. A token is shown
//! once, on the page that created it; only its hash is stored. Tokens are created from a
//! session (the page) or the CLI, never with a token: a token that leaked cannot mint
//! another that outlives its expiry or its revocation. Creations and revocations are in the
//! event log.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use updraft_metadata::{ApiToken, NewApiToken, NewEvent};

use crate::AppState;
use crate::auth::{Caller, new_token, token_hash};
use crate::error::{AppError, PageError};
use crate::extract::Path;
use crate::pages::Layout;

/// The most tokens a list shows.
const SHOWN: i64 = 1000;
/// The longest name of a token.
const NAME_MAX: usize = 100;
/// The expiries the page offers, in days; 0 is never.
pub const EXPIRIES: [i64; 5] = [7, 30, 90, 365, 0];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tokens", get(page).post(create_form))
        .route("/tokens/{token_id}/revoke", post(revoke_form))
}

/// A token as lists show it: its row and whether it is active, expired or revoked.
#[derive(Debug, Serialize)]
pub struct TokenView {
    #[serde(flatten)]
    pub token: ApiToken,
    pub status: &'static str,
}

/// The caller's tokens, or everyone's for an admin, newest first.
async fn list(state: &AppState, caller: &Caller) -> Result<Vec<TokenView>, AppError> {
    let owner = (!caller.is_admin()).then_some(caller.user.username.as_str());
    let now = Utc::now();
    Ok(state
        .store
        .list_api_tokens(owner, SHOWN)
        .await?
        .into_iter()
        .map(|token| TokenView {
            status: token.status(now),
            token,
        })
        .collect())
}

fn event(caller: &Caller, name: &str, token: &ApiToken, now: DateTime<Utc>) -> NewEvent {
    NewEvent {
        at: now,
        actor: caller.user.username.clone(),
        dag_id: None,
        run_id: None,
        task_id: None,
        event: name.to_owned(),
        details: json!({ "token_id": token.id, "username": token.username, "name": token.name }),
    }
}

/// Revokes token `id`: the caller's own, or anyone's for an admin (404 for another's).
async fn revoke(state: &AppState, caller: &Caller, id: i64) -> Result<ApiToken, AppError> {
    let owner = (!caller.is_admin()).then_some(caller.user.username.as_str());
    let now = Utc::now();
    let token = state.store.revoke_api_token(id, owner, now).await?;
    state
        .store
        .append_event(&event(caller, "token_revoked", &token, now))
        .await?;
    Ok(token)
}

/// `GET /api/v1/tokens`.
pub async fn api_list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, AppError> {
    Ok(Json(json!({ "items": list(&state, &caller).await? })))
}

/// `POST /api/v1/tokens/{token_id}/revoke`.
pub async fn api_revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Result<Json<TokenView>, AppError> {
    let token = revoke(&state, &caller, id).await?;
    Ok(Json(TokenView {
        status: token.status(Utc::now()),
        token,
    }))
}

#[derive(Template, WebTemplate)]
#[template(path = "tokens.html")]
pub struct TokensPage {
    layout: Layout,
    tokens: Vec<TokenView>,
    /// A token just created: shown this once.
    created: Option<String>,
    expiries: [i64; 5],
}

async fn render(
    state: &AppState,
    caller: &Caller,
    created: Option<String>,
) -> Result<TokensPage, PageError> {
    Ok(TokensPage {
        layout: Layout::of(caller, "API tokens", "tokens"),
        tokens: list(state, caller).await?,
        created,
        expiries: EXPIRIES,
    })
}

async fn page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<TokensPage, PageError> {
    render(&state, &caller, None).await
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    name: String,
    /// Days until it expires; 0 never.
    expires_in_days: i64,
}

/// `POST /tokens`: a new token of the caller, shown on the page this once.
async fn create_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<CreateForm>,
) -> Result<TokensPage, PageError> {
    if caller.csrf_token.is_none() {
        return Err(AppError::Forbidden(
            "tokens are created from a login session or `updraft users tokens create`, \
             not with a token"
                .to_owned(),
        )
        .into());
    }
    let name = form.name.trim();
    if name.chars().count() > NAME_MAX || name.chars().any(char::is_control) {
        return Err(AppError::BadRequest(format!(
            "a token's name is at most {NAME_MAX} characters, without control characters"
        ))
        .into());
    }
    if !EXPIRIES.contains(&form.expires_in_days) {
        return Err(
            AppError::BadRequest(format!("expires_in_days must be one of {EXPIRIES:?}")).into(),
        );
    }
    let now = Utc::now();
    let spec = NewApiToken {
        name: name.to_owned(),
        expires_at: (form.expires_in_days > 0).then(|| now + Duration::days(form.expires_in_days)),
    };
    let secret = new_token()?;
    let token = state
        .store
        .create_api_token(&caller.user.username, &token_hash(&secret), &spec, now)
        .await?;
    state
        .store
        .append_event(&event(&caller, "token_created", &token, now))
        .await?;
    render(&state, &caller, Some(secret)).await
}

/// `POST /tokens/{token_id}/revoke`, then back to the list.
async fn revoke_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    revoke(&state, &caller, id).await?;
    Ok(Redirect::to("/tokens").into_response())
}
