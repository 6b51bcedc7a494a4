//! Connections: set (one, or many at once from an import), delete, and read one in clear.
//! The password and the extra are sealed with the installation's key before they are
//! written.

use chrono::{DateTime, Utc};
use serde_json::json;
use updraft_core::connection::ConnectionFields;
use updraft_core::ids::ConnectionId;
use updraft_core::seal::connection_purpose;
use updraft_core::secret::SecretsConfig;
use updraft_metadata::{Connection, Store};

use crate::{Actor, Error, installation_event as event, storable};

/// A connection to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetConnection {
    pub conn_id: ConnectionId,
    pub fields: ConnectionFields,
    /// `None`: keeps the current description (none for a new connection).
    pub description: Option<String>,
}

/// Creates or replaces a connection; returns it as stored.
pub async fn set(
    store: &Store,
    actor: &Actor,
    secrets: &SecretsConfig,
    connection: &SetConnection,
    now: DateTime<Utc>,
) -> Result<Connection, Error> {
    let mut stored = import(store, actor, secrets, std::slice::from_ref(connection), now).await?;
    Ok(stored.remove(0))
}

/// Sets `connections` in one transaction (all or none), with one event.
pub async fn import(
    store: &Store,
    actor: &Actor,
    secrets: &SecretsConfig,
    connections: &[SetConnection],
    now: DateTime<Utc>,
) -> Result<Vec<Connection>, Error> {
    let mut rows = Vec::with_capacity(connections.len());
    for connection in connections {
        let id = connection.conn_id.as_str();
        let fields = &connection.fields;
        if fields.conn_type.trim().is_empty() {
            return Err(Error::Invalid(format!("connection '{id}' needs a type")));
        }
        let texts = [
            ("type", Some(&fields.conn_type)),
            ("host", fields.host.as_ref()),
            ("login", fields.login.as_ref()),
            ("password", fields.password.as_ref()),
            ("schema", fields.schema.as_ref()),
            ("description", connection.description.as_ref()),
        ];
        for (field, text) in texts {
            if let Some(text) = text {
                storable(&format!("connection '{id}': the {field}"), text)?;
            }
        }
        let seal = |field: &str, value: &str| -> Result<String, Error> {
            Ok(secrets
                .keyring()?
                .seal(&connection_purpose(id, field), value))
        };
        let password = fields
            .password
            .as_deref()
            .map(|password| seal("password", password))
            .transpose()?;
        let extra = fields
            .extra
            .as_ref()
            .filter(|extra| !extra.is_empty())
            .map(|extra| {
                seal(
                    "extra",
                    &serde_json::Value::Object(extra.clone()).to_string(),
                )
            })
            .transpose()?;
        let description = match &connection.description {
            Some(description) => description.clone(),
            None => store
                .get_connection(&connection.conn_id)
                .await?
                .map(|old| old.description)
                .unwrap_or_default(),
        };
        rows.push(Connection {
            conn_id: connection.conn_id.clone(),
            conn_type: fields.conn_type.clone(),
            host: fields.host.clone(),
            port: fields.port.map(i32::from),
            login: fields.login.clone(),
            password,
            schema: fields.schema.clone(),
            extra,
            description,
            updated_at: now,
        });
    }
    let mut change = store.change("set connections").await?;
    for row in &rows {
        change.set_connection(row).await?;
    }
    let ids: Vec<&str> = rows.iter().map(|row| row.conn_id.as_str()).collect();
    let (name, details) = match ids.as_slice() {
        [id] => ("connection_set", json!({"conn_id": id})),
        _ => ("connections_imported", json!({"conn_ids": ids})),
    };
    change.commit(&event(actor, name, details, now)).await?;
    Ok(rows)
}

/// Deletes a connection.
pub async fn delete(
    store: &Store,
    actor: &Actor,
    conn_id: &ConnectionId,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let mut change = store.change("delete a connection").await?;
    change.delete_connection(conn_id).await?;
    change
        .commit(&event(
            actor,
            "connection_deleted",
            json!({"conn_id": conn_id}),
            now,
        ))
        .await?;
    Ok(())
}

/// A stored connection's fields in clear (its password and extra opened with the
/// installation's keys).
pub fn fields_of(
    secrets: &SecretsConfig,
    connection: &Connection,
) -> Result<ConnectionFields, Error> {
    let id = connection.conn_id.as_str();
    let open = |field: &str, sealed: &str| -> Result<String, Error> {
        secrets
            .keyring()?
            .open(&connection_purpose(id, field), sealed)
            .map_err(|error| Error::Key(format!("connection '{id}': {field}: {error}")))
    };
    let extra = match &connection.extra {
        None => None,
        Some(sealed) => match serde_json::from_str(&open("extra", sealed)?) {
            Ok(serde_json::Value::Object(extra)) => Some(extra),
            _ => {
                return Err(Error::Key(format!(
                    "connection '{id}': extra: not a JSON object once opened"
                )));
            }
        },
    };
    Ok(ConnectionFields {
        conn_type: connection.conn_type.clone(),
        host: connection.host.clone(),
        port: connection.port.and_then(|port| u16::try_from(port).ok()),
        login: connection.login.clone(),
        password: connection
            .password
            .as_deref()
            .map(|sealed| open("password", sealed))
            .transpose()?,
        schema: connection.schema.clone(),
        extra,
    })
}
