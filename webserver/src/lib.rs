//! updraft-webserver: the HTTP face of Updraft (DESIGN §9): server-rendered pages, the JSON
//! API under `/api/v1`, login, and `/health`.
//!
//! It owns no state of its own: every page and answer is read from the metadata database, and
//! every action is a write there that the scheduler and workers act on.
//!
//! Module map: `auth` (who calls: passwords, tokens, sessions, CSRF, roles), `login`, `pages`
//! (askama templates in `templates/`), `api` (JSON), `actions` (the writes users make, shared
//! by the forms and the API: one path per action), `format` (pure display helpers), `assets`
//! (CSS and JS embedded in the binary), `error`.
//!
//! Invariants:
//! - Every route but `/health`, `/login` and `/static/*` passes `auth::require_login`; a
//!   session's POST carries its CSRF token; actions check the admin role.
//! - Everything user- or DAG-supplied reaches HTML through askama's escaping; nothing from a
//!   DAG or a user is marked safe.
//! - Every query is bounded by what a page shows (see `updraft_metadata` `views`).

pub mod actions;
mod api;
mod assets;
pub mod auth;
pub mod backfill;
mod error;
pub mod format;
pub mod gantt;
pub mod graph;
mod login;
mod metrics;
mod model;
pub mod openapi;
mod pages;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;

use axum::{Json, Router, middleware};
use chrono::Utc;
use tokio::net::TcpListener;
use updraft_metadata::Store;

pub use backfill::Backfills;
pub use error::AppError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Plans and starts backfills: the binary's, over the scheduler's planner (the
    /// dependency rule keeps this crate from calling it).
    pub backfills: Arc<dyn Backfills>,
}

/// The routes, over `store`; backfills are planned and started by `backfills`.
pub fn router(store: Store, backfills: Arc<dyn Backfills>) -> Router {
    let state = AppState { store, backfills };
    let protected = Router::new()
        .route("/logout", post(login::logout))
        .route("/metrics", get(metrics::metrics))
        .merge(pages::routes())
        .merge(backfill::routes())
        .nest("/api/v1", api::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_login,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/login", get(login::show).post(login::login))
        .route("/static/{*path}", get(assets::serve))
        .merge(protected)
        .fallback(not_found)
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    backfills: Arc<dyn Backfills>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(store, backfills))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn not_found() -> AppError {
    AppError::NotFound("no such page".to_owned())
}

/// `/health`: whether the database answers and how old the newest scheduler heartbeat is.
/// 200 when the database answers, 503 when it does not.
async fn health(State(state): State<AppState>) -> Response {
    match state.store.last_scheduler_heartbeat().await {
        Ok(heartbeat) => {
            let age = heartbeat.map(|at| (Utc::now() - at).num_milliseconds() as f64 / 1000.0);
            Json(serde_json::json!({
                "status": "ok",
                "database": "ok",
                "scheduler_heartbeat_age_seconds": age,
            }))
            .into_response()
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "unhealthy",
                "database": error.to_string(),
            })),
        )
            .into_response(),
    }
}
