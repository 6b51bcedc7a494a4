//! `updraft variables ...`: set, get, list, delete, import and export variables.

use std::path::Path;

use anyhow::{Result, anyhow};
use chrono::Utc;
use serde_json::{Map, Value};
use updraft_core::ids::VariableKey;
use updraft_core::secret::{MASK, SecretsConfig};
use updraft_metadata::Store;
use updraft_ops::variables::{self, SetVariable};

use crate::cli::VariablesCommand;
use crate::config::{Config, KeyFile};
use crate::term::{actor, json_object_file, print_table, read_stdin, usage_error, write_private};
use crate::wiring::{open_store, runtime};

/// Runs `updraft variables ...` and returns the exit code.
pub fn run(config: &Config, command: VariablesCommand) -> Result<i32> {
    let secrets = config.secrets(KeyFile::CreateForHome)?;
    runtime()?.block_on(async {
        let store = open_store(config).await?;
        let code = match command {
            VariablesCommand::Set {
                key,
                value,
                secret,
                not_secret,
                description,
            } => {
                let secret = match (secret, not_secret) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                };
                let value = match value.as_str() {
                    "-" => read_stdin()?,
                    _ => value,
                };
                let set = SetVariable {
                    key,
                    value,
                    secret,
                    description,
                };
                set_one(&store, &secrets, &set).await
            }
            VariablesCommand::Get { key } => get(&store, &secrets, &key).await,
            VariablesCommand::List { json } => list(&store, json).await,
            VariablesCommand::Delete { key } => {
                variables::delete(&store, &actor(), &key, Utc::now()).await?;
                println!("deleted variable \"{key}\"");
                Ok(0)
            }
            VariablesCommand::Import { file } => import(&store, &secrets, &file).await,
            VariablesCommand::Export { file } => export(&store, &secrets, &file).await,
        };
        store.close().await;
        code
    })
}

async fn set_one(store: &Store, secrets: &SecretsConfig, set: &SetVariable) -> Result<i32> {
    let stored = variables::set(store, &actor(), secrets, set, Utc::now()).await?;
    let kind = match stored.is_secret {
        true => "secret variable",
        false => "variable",
    };
    println!("set {kind} \"{}\"", stored.key);
    Ok(0)
}

async fn get(store: &Store, secrets: &SecretsConfig, key: &VariableKey) -> Result<i32> {
    let Some(variable) = store.get_variable(key).await? else {
        return Err(anyhow!("no variable \"{key}\""));
    };
    println!("{}", variables::value_of(secrets, &variable)?);
    Ok(0)
}

async fn list(store: &Store, json: bool) -> Result<i32> {
    let listed = store.list_variables().await?;
    let shown = |variable: &updraft_metadata::Variable| match variable.is_secret {
        true => MASK.to_owned(),
        false => variable.value.clone(),
    };
    if json {
        let rows: Vec<Value> = listed
            .iter()
            .map(|variable| {
                serde_json::json!({
                    "key": variable.key,
                    "value": shown(variable),
                    "is_secret": variable.is_secret,
                    "description": variable.description,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    let rows: Vec<[String; 4]> = listed
        .iter()
        .map(|variable| {
            [
                variable.key.to_string(),
                shown(variable),
                variable.is_secret.to_string(),
                variable.description.clone(),
            ]
        })
        .collect();
    print_table(["KEY", "VALUE", "SECRET", "DESCRIPTION"], &rows);
    Ok(0)
}

/// Reads Airflow's variables file: `{"key": value}`, where a value that is not a string is
/// stored as its JSON, and `{"key": {"value": ..., "description": ...}}` (Airflow 3's export).
async fn import(store: &Store, secrets: &SecretsConfig, file: &Path) -> Result<i32> {
    let entries = match json_object_file(file)? {
        Ok(entries) => entries,
        Err(message) => return Ok(usage_error(message)),
    };
    let mut sets = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let key = match VariableKey::parse(&key) {
            Ok(key) => key,
            Err(error) => return Ok(usage_error(format!("{}: {error}", file.display()))),
        };
        let (value, description) = match value {
            Value::Object(mut fields) if fields.contains_key("value") => {
                let description = fields
                    .remove("description")
                    .and_then(|d| d.as_str().map(str::to_owned));
                (fields.remove("value").unwrap_or(Value::Null), description)
            }
            value => (value, None),
        };
        let value = match value {
            Value::String(text) => text,
            other => other.to_string(),
        };
        sets.push(SetVariable {
            key,
            value,
            secret: None,
            description,
        });
    }
    let stored = variables::import(store, &actor(), secrets, &sets, Utc::now()).await?;
    println!(
        "imported {} variable(s) from {}",
        stored.len(),
        file.display()
    );
    Ok(0)
}

/// Writes Airflow's variables file; a value that is JSON is written as JSON, as Airflow does.
async fn export(store: &Store, secrets: &SecretsConfig, file: &Path) -> Result<i32> {
    let mut entries = Map::new();
    for variable in store.list_variables().await? {
        let value = variables::value_of(secrets, &variable)?;
        let value = match serde_json::from_str::<Value>(&value) {
            Ok(json @ (Value::Object(_) | Value::Array(_))) => json,
            _ => Value::String(value),
        };
        entries.insert(variable.key.to_string(), value);
    }
    let text = serde_json::to_string_pretty(&Value::Object(entries))? + "\n";
    write_private(file, &text)?;
    Ok(0)
}
