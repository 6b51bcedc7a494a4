//! The extractors of the web server's handlers: a JSON body, query parameters and path
//! parameters, whose refusals are answered in the handler's own kind: a JSON error under
//! `/api/`, the error page elsewhere. A `{dag_id}` or `{task_id}` read as a `DagId` or `TaskId`
//! is checked here, so a handler holds a valid id or never runs.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::{AppError, PageError};

/// A refusal of a request's path, query or body, shown as the API or a page shows errors.
#[derive(Debug)]
pub struct Refused {
    error: AppError,
    page: bool,
}

impl Refused {
    fn of(parts: &Parts, status: StatusCode, message: String) -> Refused {
        // A nested router sees its own part of the path: the whole one is the original URI.
        let path = match parts.extensions.get::<OriginalUri>() {
            Some(OriginalUri(uri)) => uri.path(),
            None => parts.uri.path(),
        };
        Refused {
            error: AppError::rejected(status, message),
            page: !path.starts_with("/api/"),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self.page {
            true => PageError(self.error).into_response(),
            false => self.error.into_response(),
        }
    }
}

/// A JSON body (the API's): 413 when too large, 415 without a JSON content type, 400
/// otherwise. The body must be an object (serde would read a struct from a `[]` too), and none
/// of its members may be `null`: a member that is not wanted is left out.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        let Json(value) = Json::<serde_json::Value>::from_request(request, state)
            .await
            .map_err(|rejection: JsonRejection| {
                AppError::rejected(rejection.status(), rejection.body_text())
            })?;
        let serde_json::Value::Object(members) = &value else {
            return Err(AppError::BadRequest(
                "the body must be a JSON object".to_owned(),
            ));
        };
        if let Some((name, _)) = members.iter().find(|(_, value)| value.is_null()) {
            return Err(AppError::BadRequest(format!(
                "{name:?} is null: leave it out for its default"
            )));
        }
        serde_json::from_value(value)
            .map(Body)
            .map_err(|error| AppError::BadRequest(format!("invalid body: {error}")))
    }
}

/// Query parameters.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refused> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(Refused::of(
                parts,
                rejection.status(),
                rejection.body_text(),
            )),
        }
    }
}

/// Path parameters: `Path<DagId>`, `Path<(DagId, String)>`, `Path<(DagId, String, TaskId)>`
/// check the ids as they are read (a bad one is a 400 naming it).
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refused> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(Refused::of(
                parts,
                rejection.status(),
                rejection.body_text(),
            )),
        }
    }
}
