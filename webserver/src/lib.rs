//! updraft-webserver: the HTTP face of Updraft (DESIGN §9). So far it serves `/health`; the
//! pages, the JSON API and login come with the web UI.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use tokio::net::TcpListener;
use updraft_metadata::Store;

/// The routes, over `store`.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(store)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(store))
        .with_graceful_shutdown(shutdown)
        .await
}

/// `/health`: whether the database answers and how old the newest scheduler heartbeat is.
/// 200 when the database answers, 503 when it does not.
async fn health(State(store): State<Store>) -> Response {
    match store.last_scheduler_heartbeat().await {
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
