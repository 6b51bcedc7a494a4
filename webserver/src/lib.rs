//! updraft-webserver: the HTTP face of Updraft (DESIGN §9): server-rendered pages, the JSON
//! API under `/api/v1`, login, and `/health`.
//!
//! It owns no state of its own: every page and answer is read from the metadata database, and
//! every action is a write there that the scheduler and workers act on.
//!
//! Module map: `auth` (who calls: passwords, tokens, sessions, CSRF, roles), `login` (with
//! `throttle`, the failed logins' waits), `pages` (askama templates in `templates/`), `api`
//! (JSON), `actions` (the writes users make, shared by the forms and the API: one path per
//! action), `tokens` (API tokens: page and API), `variables` and `connections` (their pages
//! and API routes), `headers` (the security headers), `format`
//! (pure display helpers), `assets` (CSS and JS embedded in the binary), `error`.
//!
//! Invariants:
//! - Every route but `/health`, `/login` and `/static/*` passes `auth::require_login`; a
//!   session's POST carries its CSRF token; actions check the admin role.
//! - Every answer carries the security headers of `headers`, errors and redirects too.
//! - Everything user- or DAG-supplied reaches HTML through askama's escaping; nothing from a
//!   DAG or a user is marked safe.
//! - Every query is bounded by what a page shows (see `updraft_metadata` `views`).

pub mod actions;
mod api;
mod apidoc;
mod assets;
pub mod auth;
pub mod backfill;
mod connections;
mod error;
mod extract;
pub mod format;
pub mod gantt;
pub mod graph;
mod headers;
mod login;
mod metrics;
mod model;
pub mod openapi;
mod pages;
mod reads;
pub mod throttle;
mod tokens;
mod variables;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use axum::{Json, Router, middleware};
use chrono::Utc;
use tokio::net::TcpListener;
use updraft_core::secret::SecretsConfig;
use updraft_metadata::Store;

pub use error::AppError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// The installation's keys and sensitive names: variables and connections are sealed
    /// with them when set, and opened for an admin's read of one.
    pub secrets: Arc<SecretsConfig>,
    /// The failed logins of this process (see `throttle`: kept in memory, per web server).
    throttle: Arc<Mutex<throttle::Throttle>>,
}

impl AppState {
    /// The login throttle. Held only for a lookup or an update, never across an await; a
    /// panic while holding it leaves a usable map, so a poisoned lock is taken as it is.
    fn throttle(&self) -> MutexGuard<'_, throttle::Throttle> {
        self.throttle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The routes, over `store`, sealing and opening secrets with `secrets`.
pub fn router(store: Store, secrets: SecretsConfig) -> Router {
    let state = AppState {
        store,
        secrets: Arc::new(secrets),
        throttle: Arc::default(),
    };
    let protected = Router::new()
        .route("/logout", post(login::logout))
        .route("/metrics", get(metrics::metrics))
        .merge(pages::routes())
        .merge(backfill::routes())
        .merge(tokens::routes())
        .merge(variables::routes())
        .merge(connections::routes())
        .nest(
            "/api/v1",
            api::routes().route("/openapi.json", get(openapi::serve)),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_login,
        ));
    let router = Router::new()
        .route("/health", get(health))
        .route("/login", get(login::show).post(login::login))
        .route("/static/{*path}", get(assets::serve))
        .merge(protected)
        .fallback(not_found)
        .with_state(state);
    headers::secure(router)
}

/// Serves `router` on `listener` until `shutdown` completes. Handlers are told each
/// connection's peer address (the login throttle counts per address).
pub async fn serve(
    listener: TcpListener,
    store: Store,
    secrets: SecretsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(store, secrets).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn not_found() -> AppError {
    AppError::NotFound("no such page".to_owned())
}

/// A scheduler is alive while its heartbeat is younger than this: Airflow's
/// `scheduler_health_check_threshold` (30 s); schedulers heartbeat every 2 s.
pub const SCHEDULER_HEALTH_THRESHOLD: chrono::Duration = chrono::Duration::seconds(30);

/// `/health`: 200 `{"status": "ok"}` when the database answers and a scheduler heartbeat is
/// younger than [`SCHEDULER_HEALTH_THRESHOLD`]; otherwise 503 `{"status": "unhealthy"}` with
/// what is wrong in `database` or `scheduler`. A web server alone, with no scheduler running
/// against its database, is unhealthy: nothing would run (load balancers probe the web server
/// itself at `/login`).
async fn health(State(state): State<AppState>) -> Response {
    let (database, age) = match state.store.last_scheduler_heartbeat().await {
        Ok(heartbeat) => ("ok".to_owned(), heartbeat.map(|at| Utc::now() - at)),
        Err(error) => (error.to_string(), None),
    };
    let scheduler = match age {
        Some(age) if age < SCHEDULER_HEALTH_THRESHOLD => "ok".to_owned(),
        Some(age) => format!(
            "the newest scheduler heartbeat is {} s old (more than {} s): is a scheduler running?",
            age.num_seconds(),
            SCHEDULER_HEALTH_THRESHOLD.num_seconds()
        ),
        None if database != "ok" => "unknown: the database does not answer".to_owned(),
        None => "no scheduler has ever heartbeaten: start `updraft scheduler`".to_owned(),
    };
    let healthy = database == "ok" && scheduler == "ok";
    let status = match healthy {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "unhealthy" },
        "database": database,
        "scheduler": scheduler,
        "scheduler_heartbeat_age_seconds": age.map(|age| age.num_milliseconds() as f64 / 1000.0),
    });
    (status, Json(body)).into_response()
}
