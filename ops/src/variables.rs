//! Variables: set (one, or many at once from an import), delete, and read a value in clear.
//! A secret variable's value is sealed with the installation's key before it is written; a
//! variable is secret when asked, or by its name (`updraft_core::secret::Sensitivity`).

use chrono::{DateTime, Utc};
use serde_json::json;
use updraft_core::ids::VariableKey;
use updraft_core::seal::variable_purpose;
use updraft_core::secret::SecretsConfig;
use updraft_metadata::{Store, Variable};

use crate::{Actor, Error, installation_event as event, storable};

/// A variable to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetVariable {
    pub key: VariableKey,
    pub value: String,
    /// `None`: secret when its key is a sensitive name.
    pub secret: Option<bool>,
    /// `None`: keeps the current description (none for a new variable).
    pub description: Option<String>,
}

/// Creates or replaces a variable; returns it as stored.
pub async fn set(
    store: &Store,
    actor: &Actor,
    secrets: &SecretsConfig,
    variable: &SetVariable,
    now: DateTime<Utc>,
) -> Result<Variable, Error> {
    let mut stored = import(store, actor, secrets, std::slice::from_ref(variable), now).await?;
    Ok(stored.remove(0))
}

/// Sets `variables` in one transaction (all or none), with one event.
pub async fn import(
    store: &Store,
    actor: &Actor,
    secrets: &SecretsConfig,
    variables: &[SetVariable],
    now: DateTime<Utc>,
) -> Result<Vec<Variable>, Error> {
    let mut rows = Vec::with_capacity(variables.len());
    for variable in variables {
        let key = variable.key.as_str();
        storable(&format!("variable '{key}': the value"), &variable.value)?;
        if let Some(description) = &variable.description {
            storable(&format!("variable '{key}': the description"), description)?;
        }
        let is_secret = variable
            .secret
            .unwrap_or_else(|| secrets.sensitivity.is_sensitive(variable.key.as_str()));
        let value = match is_secret {
            true => secrets
                .keyring()?
                .seal(&variable_purpose(variable.key.as_str()), &variable.value),
            false => variable.value.clone(),
        };
        let description = match &variable.description {
            Some(description) => description.clone(),
            None => store
                .get_variable(&variable.key)
                .await?
                .map(|old| old.description)
                .unwrap_or_default(),
        };
        rows.push(Variable {
            key: variable.key.clone(),
            value,
            is_secret,
            description,
            updated_at: now,
        });
    }
    let mut change = store.change("set variables").await?;
    for row in &rows {
        change.set_variable(row).await?;
    }
    let keys: Vec<&str> = rows.iter().map(|row| row.key.as_str()).collect();
    let (name, details) = match keys.as_slice() {
        [key] => (
            "variable_set",
            json!({"key": key, "is_secret": rows[0].is_secret}),
        ),
        _ => ("variables_imported", json!({"keys": keys})),
    };
    change.commit(&event(actor, name, details, now)).await?;
    Ok(rows)
}

/// Deletes a variable.
pub async fn delete(
    store: &Store,
    actor: &Actor,
    key: &VariableKey,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let mut change = store.change("delete a variable").await?;
    change.delete_variable(key).await?;
    change
        .commit(&event(actor, "variable_deleted", json!({"key": key}), now))
        .await?;
    Ok(())
}

/// A stored variable's value in clear (a secret one opened with the installation's keys).
pub fn value_of(secrets: &SecretsConfig, variable: &Variable) -> Result<String, Error> {
    if !variable.is_secret {
        return Ok(variable.value.clone());
    }
    secrets
        .keyring()?
        .open(&variable_purpose(variable.key.as_str()), &variable.value)
        .map_err(|error| Error::Key(format!("variable '{}': {error}", variable.key)))
}
