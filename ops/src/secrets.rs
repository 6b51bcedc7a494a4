//! Rotating the installation's key: every sealed value sealed again with the first key.

use chrono::{DateTime, Utc};
use serde_json::json;
use updraft_core::seal::{connection_purpose, variable_purpose};
use updraft_core::secret::SecretsConfig;
use updraft_metadata::Store;

use crate::{Actor, Error, installation_event};

/// How many values a rotation sealed again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotated {
    pub variables: usize,
    pub connections: usize,
}

/// Seals every secret value not sealed with the first key again with it, in one transaction:
/// a value no listed key opens stops the rotation, and nothing is written.
pub async fn rotate_key(
    store: &Store,
    actor: &Actor,
    secrets: &SecretsConfig,
    now: DateTime<Utc>,
) -> Result<Rotated, Error> {
    let keyring = secrets.keyring()?;
    let reseal = |purpose: String, sealed: &str, what: &str| -> Result<Option<String>, Error> {
        if keyring.is_current(sealed) {
            return Ok(None);
        }
        let plain = keyring
            .open(&purpose, sealed)
            .map_err(|error| Error::Key(format!("{what}: {error}")))?;
        Ok(Some(keyring.seal(&purpose, &plain)))
    };
    let mut variables = Vec::new();
    for mut variable in store.list_variables().await? {
        if !variable.is_secret {
            continue;
        }
        let what = format!("variable '{}'", variable.key);
        if let Some(value) = reseal(
            variable_purpose(variable.key.as_str()),
            &variable.value,
            &what,
        )? {
            variable.value = value;
            variable.updated_at = now;
            variables.push(variable);
        }
    }
    let mut connections = Vec::new();
    for mut connection in store.list_connections().await? {
        let id = connection.conn_id.to_string();
        let mut changed = false;
        for (field, value) in [
            ("password", &mut connection.password),
            ("extra", &mut connection.extra),
        ] {
            let Some(sealed) = value.as_deref() else {
                continue;
            };
            let what = format!("connection '{id}': {field}");
            if let Some(resealed) = reseal(connection_purpose(&id, field), sealed, &what)? {
                *value = Some(resealed);
                changed = true;
            }
        }
        if changed {
            connection.updated_at = now;
            connections.push(connection);
        }
    }
    let rotated = Rotated {
        variables: variables.len(),
        connections: connections.len(),
    };
    let mut change = store.change("rotate the secret key").await?;
    for variable in &variables {
        change.set_variable(variable).await?;
    }
    for connection in &connections {
        change.set_connection(connection).await?;
    }
    let details = json!({
        "key": keyring.ids()[0],
        "variables": rotated.variables,
        "connections": rotated.connections,
    });
    change
        .commit(&installation_event(
            actor,
            "secret_key_rotated",
            details,
            now,
        ))
        .await?;
    Ok(rotated)
}
