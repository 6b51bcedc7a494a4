//! [`AppError`]: every failure of a handler, with its HTTP status. The JSON API answers it as
//! `{"error": "..."}`; pages wrap it in [`PageError`], which renders the same message as HTML.

use askama::Template;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    /// Not logged in, or a bad API token.
    #[error("{0}")]
    Unauthorized(String),
    /// Logged in but not allowed (a viewer's action, a missing CSRF token).
    #[error("{0}")]
    Forbidden(String),
    /// What was asked for does not exist, e.g. "dag 'sales' not found".
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what is stored, e.g. a run already exists.
    #[error("{0}")]
    Conflict(String),
    /// A body larger than the server reads.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A body without `Content-Type: application/json` where JSON is expected.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Broken machinery (the database, the system's randomness).
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl AppError {
    /// An extractor's refusal of a request (a body, query or path axum could not read), with
    /// its status where it says more than 400 (413, 415) and axum's message.
    pub fn rejected(status: StatusCode, message: String) -> AppError {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge(message),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => AppError::UnsupportedMediaType(message),
            status if status.is_server_error() => AppError::Internal(message),
            _ => AppError::BadRequest(message),
        }
    }
}

impl From<updraft_metadata::Error> for AppError {
    fn from(error: updraft_metadata::Error) -> Self {
        use updraft_metadata::Error as E;
        match error {
            E::NotFound(_) => AppError::NotFound(error.to_string()),
            E::Conflict(_)
            | E::IllegalTaskTransition { .. }
            | E::IllegalDagRunTransition { .. } => AppError::Conflict(error.to_string()),
            E::Invalid(_) => AppError::BadRequest(error.to_string()),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::Internal(message) = &self {
            tracing::error!(error = %message, "request failed");
        }
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}

/// An [`AppError`] on a page: the message in the site's layout, with the same status.
#[derive(Debug)]
pub struct PageError(pub AppError);

impl<E: Into<AppError>> From<E> for PageError {
    fn from(error: E) -> Self {
        PageError(error.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if let AppError::Internal(message) = &self.0 {
            tracing::error!(error = %message, "page failed");
        }
        let page = ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or(""),
            message: self.0.to_string(),
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, self.0.to_string()).into_response(),
        }
    }
}
