//! `updraft connections ...`: add, get, list, delete, import and export connections.

use std::path::Path;

use anyhow::{Result, anyhow};
use chrono::Utc;
use serde_json::{Map, Value, json};
use updraft_core::connection::ConnectionFields;
use updraft_core::ids::ConnectionId;
use updraft_core::secret::SecretsConfig;
use updraft_metadata::Store;
use updraft_ops::connections::{self, SetConnection};

use crate::cli::ConnectionsCommand;
use crate::config::{Config, KeyFile};
use crate::term::{actor, json_object_file, print_table, read_stdin, usage_error, write_private};
use crate::wiring::{open_store, runtime};

/// Runs `updraft connections ...` and returns the exit code.
pub fn run(config: &Config, command: ConnectionsCommand) -> Result<i32> {
    let secrets = config.secrets(KeyFile::CreateForHome)?;
    runtime()?.block_on(async {
        let store = open_store(config).await?;
        let code = match command {
            ConnectionsCommand::Add {
                conn_id,
                uri,
                conn_type,
                host,
                port,
                login,
                password,
                schema,
                extra,
                description,
            } => {
                let fields = match uri {
                    Some(uri) => ConnectionFields::from_uri(&uri),
                    None => fields(conn_type, host, port, login, password, schema, extra),
                };
                match fields {
                    Ok(fields) => {
                        let set = SetConnection {
                            conn_id,
                            fields,
                            description,
                        };
                        connections::set(&store, &actor(), &secrets, &set, Utc::now()).await?;
                        println!("set connection \"{}\"", set.conn_id);
                        Ok(0)
                    }
                    Err(message) => Ok(usage_error(message)),
                }
            }
            ConnectionsCommand::Get { conn_id, json } => {
                get(&store, &secrets, &conn_id, json).await
            }
            ConnectionsCommand::List { json } => list(&store, json).await,
            ConnectionsCommand::Delete { conn_id } => {
                connections::delete(&store, &actor(), &conn_id, Utc::now()).await?;
                println!("deleted connection \"{conn_id}\"");
                Ok(0)
            }
            ConnectionsCommand::Import { file } => import(&store, &secrets, &file).await,
            ConnectionsCommand::Export { file } => export(&store, &secrets, &file).await,
        };
        store.close().await;
        code
    })
}

/// The fields given as flags; `--password -` reads the password from stdin.
fn fields(
    conn_type: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    login: Option<String>,
    password: Option<String>,
    schema: Option<String>,
    extra: Option<String>,
) -> Result<ConnectionFields, String> {
    let password = match password.as_deref() {
        Some("-") => Some(read_stdin().map_err(|error| error.to_string())?),
        _ => password,
    };
    let extra = match extra.as_deref().map(serde_json::from_str::<Value>) {
        None => None,
        Some(Ok(Value::Object(extra))) => Some(extra),
        Some(_) => return Err("--extra must be a JSON object".to_owned()),
    };
    Ok(ConnectionFields {
        conn_type: conn_type.unwrap_or_default(),
        host,
        port,
        login,
        password,
        schema,
        extra,
    })
}

async fn get(
    store: &Store,
    secrets: &SecretsConfig,
    conn_id: &ConnectionId,
    json: bool,
) -> Result<i32> {
    let Some(connection) = store.get_connection(conn_id).await? else {
        return Err(anyhow!("no connection \"{conn_id}\""));
    };
    let fields = connections::fields_of(secrets, &connection)?;
    if json {
        let mut shown = serde_json::to_value(&fields)?;
        shown["conn_id"] = json!(conn_id);
        shown["uri"] = json!(fields.uri());
        shown["description"] = json!(connection.description);
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(0);
    }
    println!("{}", fields.uri());
    Ok(0)
}

async fn list(store: &Store, json: bool) -> Result<i32> {
    let listed = store.list_connections().await?;
    if json {
        let rows: Vec<Value> = listed
            .iter()
            .map(|c| {
                json!({
                    "conn_id": c.conn_id,
                    "conn_type": c.conn_type,
                    "host": c.host,
                    "port": c.port,
                    "login": c.login,
                    "schema": c.schema,
                    "description": c.description,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let rows: Vec<[String; 6]> = listed
        .iter()
        .map(|c| {
            [
                c.conn_id.to_string(),
                c.conn_type.clone(),
                text(&c.host),
                c.port.map(|port| port.to_string()).unwrap_or_default(),
                text(&c.login),
                text(&c.schema),
            ]
        })
        .collect();
    print_table(["ID", "TYPE", "HOST", "PORT", "LOGIN", "SCHEMA"], &rows);
    Ok(0)
}

/// Reads Airflow's connections file: `{"id": "uri"}` or `{"id": {"conn_type": ..., ...}}`.
async fn import(store: &Store, secrets: &SecretsConfig, file: &Path) -> Result<i32> {
    let entries = match json_object_file(file)? {
        Ok(entries) => entries,
        Err(message) => return Ok(usage_error(message)),
    };
    let mut sets = Vec::with_capacity(entries.len());
    for (id, value) in entries {
        let at = |error: String| format!("{}: connection \"{id}\": {error}", file.display());
        let conn_id = match ConnectionId::parse(&id) {
            Ok(conn_id) => conn_id,
            Err(error) => return Ok(usage_error(at(error.to_string()))),
        };
        let (fields, description) = match value {
            Value::String(uri) => (ConnectionFields::from_uri(&uri), None),
            Value::Object(mut object) => {
                let description = object
                    .remove("description")
                    .and_then(|d| d.as_str().map(str::to_owned));
                // Airflow writes the extra as a string of JSON.
                if let Some(Value::String(extra)) = object.get("extra") {
                    let parsed = serde_json::from_str(extra).unwrap_or(Value::Null);
                    object.insert("extra".to_owned(), parsed);
                }
                let fields = serde_json::from_value(Value::Object(object))
                    .map_err(|error| error.to_string());
                (fields, description)
            }
            _ => (Err("must be a URI or an object of fields".to_owned()), None),
        };
        match fields {
            Ok(fields) => sets.push(SetConnection {
                conn_id,
                fields,
                description,
            }),
            Err(error) => return Ok(usage_error(at(error))),
        }
    }
    let stored = connections::import(store, &actor(), secrets, &sets, Utc::now()).await?;
    println!(
        "imported {} connection(s) from {}",
        stored.len(),
        file.display()
    );
    Ok(0)
}

/// Writes Airflow's connections file (JSON, fields by connection id).
async fn export(store: &Store, secrets: &SecretsConfig, file: &Path) -> Result<i32> {
    let mut entries = Map::new();
    for connection in store.list_connections().await? {
        let fields = connections::fields_of(secrets, &connection)?;
        let mut shown = serde_json::to_value(&fields)?;
        shown["description"] = json!(connection.description);
        entries.insert(connection.conn_id.to_string(), shown);
    }
    let text = serde_json::to_string_pretty(&Value::Object(entries))? + "\n";
    write_private(file, &text)?;
    Ok(0)
}
