//! Connections from the web: the page `/connections` (everyone lists; admins set and delete)
//! and the API's `/api/v1/connections` routes, with Airflow's field names.
//!
//! A password is never shown, to anyone: lists and reads say only whether there is one. The
//! extra (sealed as a whole) is shown only in a read of one connection, with the values of
//! sensitive names masked for an admin and every value masked for a viewer.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use updraft_core::connection::ConnectionFields;
use updraft_core::ids::ConnectionId;
use updraft_core::secret::{MASK, Sensitivity};
use updraft_metadata::Connection;
use updraft_ops::connections::{SetConnection, fields_of};

use crate::AppState;
use crate::actions;
use crate::auth::Caller;
use crate::error::{AppError, PageError};
use crate::extract::{Body, Params, Path};
use crate::model::{Page, Paged};
use crate::pages::{Layout, pager};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/connections", get(page).post(set_form))
        .route("/connections/{connection_id}/delete", post(delete_form))
}

/// A connection as lists show it: no password, no extra.
#[derive(Debug, Serialize)]
pub struct ConnectionView {
    pub connection_id: ConnectionId,
    pub conn_type: String,
    pub host: Option<String>,
    pub port: Option<i32>,
    pub login: Option<String>,
    pub schema: Option<String>,
    pub has_password: bool,
    pub has_extra: bool,
    pub description: String,
    pub updated_at: DateTime<Utc>,
}

impl From<Connection> for ConnectionView {
    fn from(connection: Connection) -> ConnectionView {
        ConnectionView {
            connection_id: connection.conn_id,
            conn_type: connection.conn_type,
            host: connection.host,
            port: connection.port,
            login: connection.login,
            schema: connection.schema,
            has_password: connection.password.is_some(),
            has_extra: connection.extra.is_some(),
            description: connection.description,
            updated_at: connection.updated_at,
        }
    }
}

/// A connection as a read of it shows it: with its extra, masked.
#[derive(Debug, Serialize)]
pub struct ConnectionDetail {
    #[serde(flatten)]
    pub connection: ConnectionView,
    pub extra: Option<Map<String, Value>>,
}

/// `extra` as shown to an admin (`reveal`: the values of sensitive names masked, in nested
/// objects too) or to a viewer (every value masked).
pub fn shown_extra(
    extra: Map<String, Value>,
    sensitivity: &Sensitivity,
    reveal: bool,
) -> Map<String, Value> {
    extra
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                _ if !reveal || sensitivity.is_sensitive(&name) => json!(MASK),
                Value::Object(inner) => Value::Object(shown_extra(inner, sensitivity, reveal)),
                value => value,
            };
            (name, value)
        })
        .collect()
}

async fn connections_page(state: &AppState, page: Page) -> Result<Paged<ConnectionView>, AppError> {
    let (limit, offset) = page.bounds()?;
    let rows = state.store.list_connections_page(limit + 1, offset).await?;
    Ok(Paged::new(rows, limit, offset).map(ConnectionView::from))
}

/// `GET /api/v1/connections`.
pub async fn api_list(
    State(state): State<AppState>,
    Params(page): Params<Page>,
) -> Result<Json<Paged<ConnectionView>>, AppError> {
    Ok(Json(connections_page(&state, page).await?))
}

/// `GET /api/v1/connections/{connection_id}`.
pub async fn api_get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(conn_id): Path<ConnectionId>,
) -> Result<Json<ConnectionDetail>, AppError> {
    let connection = state
        .store
        .get_connection(&conn_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("connection '{conn_id}' not found")))?;
    let extra = match connection.extra {
        None => None,
        Some(_) => fields_of(&state.secrets, &connection)?
            .extra
            .map(|extra| shown_extra(extra, &state.secrets.sensitivity, caller.is_admin())),
    };
    Ok(Json(ConnectionDetail {
        connection: connection.into(),
        extra,
    }))
}

/// The body of `POST /api/v1/connections`: Airflow's fields, the extra as a JSON object.
/// The connection is replaced as a whole: a field left out is empty.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetConnectionRequest {
    connection_id: ConnectionId,
    conn_type: String,
    host: Option<String>,
    port: Option<u16>,
    login: Option<String>,
    password: Option<String>,
    schema: Option<String>,
    extra: Option<Map<String, Value>>,
    description: Option<String>,
}

/// `POST /api/v1/connections`: creates or replaces one.
pub async fn api_set(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(request): Body<SetConnectionRequest>,
) -> Result<Json<ConnectionView>, AppError> {
    let set = SetConnection {
        conn_id: request.connection_id,
        fields: ConnectionFields {
            conn_type: request.conn_type,
            host: request.host,
            port: request.port,
            login: request.login,
            password: request.password,
            schema: request.schema,
            extra: request.extra,
        },
        description: request.description,
    };
    let stored =
        actions::set_connection(&state.store, &caller, &state.secrets, &set, Utc::now()).await?;
    Ok(Json(stored.into()))
}

/// `DELETE /api/v1/connections/{connection_id}`.
pub async fn api_delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(conn_id): Path<ConnectionId>,
) -> Result<Json<Value>, AppError> {
    actions::delete_connection(&state.store, &caller, &conn_id, Utc::now()).await?;
    Ok(Json(json!({ "connection_id": conn_id, "deleted": true })))
}

#[derive(Template, WebTemplate)]
#[template(path = "connections.html")]
pub struct ConnectionsPage {
    layout: Layout,
    connections: Vec<ConnectionView>,
    previous: Option<String>,
    next: Option<String>,
}

async fn page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Params(query): Params<Page>,
) -> Result<ConnectionsPage, PageError> {
    let page = connections_page(&state, query).await?;
    let (previous, next) = pager("/connections", "", &page);
    Ok(ConnectionsPage {
        layout: Layout::of(&caller, "Connections", "connections"),
        connections: page.items,
        previous,
        next,
    })
}

/// The form of the page: a URI, or the fields one by one.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SetForm {
    connection_id: String,
    uri: String,
    conn_type: String,
    host: String,
    port: String,
    login: String,
    password: String,
    schema: String,
    /// A JSON object.
    extra: String,
    description: String,
}

impl SetForm {
    /// The fields the form gives: from its URI, or from its fields (empty ones left out).
    fn fields(&self) -> Result<ConnectionFields, String> {
        let given = |text: &str| Some(text.trim().to_owned()).filter(|text| !text.is_empty());
        let fields = [
            &self.conn_type,
            &self.host,
            &self.port,
            &self.login,
            &self.password,
            &self.schema,
            &self.extra,
        ];
        if !self.uri.trim().is_empty() {
            if fields.iter().any(|field| !field.trim().is_empty()) {
                return Err("give a URI or the fields, not both".to_owned());
            }
            return ConnectionFields::from_uri(self.uri.trim());
        }
        let port = match given(&self.port) {
            None => None,
            Some(port) => Some(
                port.parse::<u16>()
                    .map_err(|_| format!("the port must be 0 to 65535, not '{port}'"))?,
            ),
        };
        let extra = match given(&self.extra).map(|extra| serde_json::from_str(&extra)) {
            None => None,
            Some(Ok(Value::Object(extra))) => Some(extra),
            Some(_) => return Err("the extra must be a JSON object".to_owned()),
        };
        Ok(ConnectionFields {
            conn_type: self.conn_type.trim().to_owned(),
            host: given(&self.host),
            port,
            login: given(&self.login),
            // A password is kept as typed: spaces may be part of it.
            password: Some(self.password.clone()).filter(|password| !password.is_empty()),
            schema: given(&self.schema),
            extra,
        })
    }
}

/// `POST /connections`, then back to the list.
async fn set_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<SetForm>,
) -> Result<Response, PageError> {
    caller.require_admin()?;
    let conn_id = ConnectionId::parse(form.connection_id.trim())
        .map_err(|error| AppError::BadRequest(format!("bad connection id: {error}")))?;
    let set = SetConnection {
        conn_id,
        fields: form.fields().map_err(AppError::BadRequest)?,
        description: Some(form.description.trim().to_owned()),
    };
    actions::set_connection(&state.store, &caller, &state.secrets, &set, Utc::now()).await?;
    Ok(Redirect::to("/connections").into_response())
}

/// `POST /connections/{connection_id}/delete`, then back to the list.
async fn delete_form(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(conn_id): Path<ConnectionId>,
) -> Result<Response, PageError> {
    actions::delete_connection(&state.store, &caller, &conn_id, Utc::now()).await?;
    Ok(Redirect::to("/connections").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra() -> Map<String, Value> {
        let Value::Object(extra) = json!({
            "region": "eu-west-1",
            "token": "t0ps3cret",
            "nested": {"api_key": "k3y", "timeout": 30},
        }) else {
            unreachable!()
        };
        extra
    }

    #[test]
    fn an_admin_sees_the_extra_but_its_sensitive_values() {
        let shown = shown_extra(extra(), &Sensitivity::default(), true);
        assert_eq!(
            Value::Object(shown),
            json!({
                "region": "eu-west-1",
                "token": "***",
                "nested": {"api_key": "***", "timeout": 30},
            })
        );
    }

    #[test]
    fn a_viewer_sees_no_value_of_the_extra() {
        let shown = shown_extra(extra(), &Sensitivity::default(), false);
        assert_eq!(
            Value::Object(shown),
            json!({"region": "***", "token": "***", "nested": "***"})
        );
    }

    #[test]
    fn the_form_takes_a_uri_or_fields_but_not_both() {
        let uri = SetForm {
            uri: "postgres://etl:p%40ss@db.internal:5432/warehouse".to_owned(),
            ..SetForm::default()
        };
        let fields = uri.fields().unwrap();
        assert_eq!(fields.conn_type, "postgres");
        assert_eq!(fields.password.as_deref(), Some("p@ss"));
        assert_eq!(fields.port, Some(5432));
        let both = SetForm {
            host: "db".to_owned(),
            ..uri
        };
        assert_eq!(
            both.fields().unwrap_err(),
            "give a URI or the fields, not both"
        );
        let form = SetForm {
            conn_type: " http ".to_owned(),
            host: "api.example.com".to_owned(),
            port: "443".to_owned(),
            password: " spaced ".to_owned(),
            extra: r#"{"verify": false}"#.to_owned(),
            ..SetForm::default()
        };
        let fields = form.fields().unwrap();
        assert_eq!(fields.conn_type, "http");
        assert_eq!(fields.login, None);
        assert_eq!(fields.password.as_deref(), Some(" spaced "));
        assert_eq!(fields.extra.unwrap()["verify"], json!(false));
        for (port, extra, wanted) in [
            ("99999", "", "the port must be 0 to 65535, not '99999'"),
            ("", "[1]", "the extra must be a JSON object"),
        ] {
            let form = SetForm {
                conn_type: "http".to_owned(),
                port: port.to_owned(),
                extra: extra.to_owned(),
                ..SetForm::default()
            };
            assert_eq!(form.fields().unwrap_err(), wanted);
        }
    }
}
