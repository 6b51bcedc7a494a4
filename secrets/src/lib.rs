//! updraft-secrets: where a variable's or a connection's value comes from (issue 18), looked up
//! in Airflow's order: the secrets folder (`UPDRAFT_SECRETS_FOLDER`: `variables/<key>`,
//! `connections/<id>`, one file each, as Docker and Kubernetes mount secrets), then the
//! environment (`UPDRAFT_VAR_<KEY>`, `UPDRAFT_CONN_<ID>`, as Airflow's `AIRFLOW_VAR_*`), then
//! the metadata database (sealed values opened with the installation's keys).
//!
//! The scheduler reads the [`Catalog`] its templates render with ([`catalog`]: plain values,
//! and which secrets exist); a worker resolves the references of a try's plan as the try starts
//! ([`resolve_rendered`]) and masks every value it handed out.

use std::collections::BTreeMap;
use std::path::Path;

use updraft_core::connection::ConnectionFields;
use updraft_core::dag::Command;
use updraft_core::ids::{ConnectionId, VariableKey};
use updraft_core::render::{Rendered, RenderedHandler};
use updraft_core::seal::{connection_purpose, variable_purpose};
use updraft_core::secret::{
    Catalog, CatalogConnection, CatalogValue, ConnectionField, Masker, Reference, SecretsConfig,
    connection_env_name, env_suffix, references, substitute, variable_env_name,
};
use updraft_metadata::Store;

/// Why a value could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Says what is missing or wrong; a try fails with it in its log.
    #[error("{0}")]
    Lookup(String),
    #[error(transparent)]
    Store(#[from] updraft_metadata::Error),
}

/// The file of `name` in the `kind` folder (`variables`, `connections`) of the secrets folder,
/// without its final newline.
fn from_folder(config: &SecretsConfig, kind: &str, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(config.folder.as_ref()?.join(kind).join(name)).ok()?;
    Some(text.strip_suffix('\n').unwrap_or(&text).to_owned())
}

/// What templates may read, as this process finds it now: the database's variables and
/// connections, then the environment's and the folder's over them. A value from the folder, a
/// secret one of the database, and one from the environment whose key is a sensitive name are
/// secrets.
pub async fn catalog(
    store: &Store,
    config: &SecretsConfig,
) -> Result<Catalog, updraft_metadata::Error> {
    let mut catalog = Catalog::default();
    for variable in store.list_variables().await? {
        let value = match variable.is_secret {
            true => CatalogValue::Secret,
            false => CatalogValue::Plain(variable.value),
        };
        catalog.variables.insert(variable.key.to_string(), value);
    }
    for connection in store.list_connections().await? {
        catalog.connections.insert(
            connection.conn_id.to_string(),
            CatalogConnection {
                conn_type: connection.conn_type,
                host: connection.host,
                port: connection.port.and_then(|port| u16::try_from(port).ok()),
                login: connection.login,
                schema: connection.schema,
            },
        );
    }
    for (name, value) in std::env::vars() {
        if let Some(suffix) = name.strip_prefix("UPDRAFT_VAR_") {
            let value = match config.sensitivity.is_sensitive(suffix) {
                true => CatalogValue::Secret,
                false => CatalogValue::Plain(value),
            };
            catalog.outside_variables.insert(suffix.to_owned(), value);
        } else if let Some(suffix) = name.strip_prefix("UPDRAFT_CONN_")
            && let Ok(fields) = ConnectionFields::from_text(&value)
        {
            catalog
                .outside_connections
                .insert(suffix.to_owned(), visible(fields));
        }
    }
    if let Some(root) = &config.folder {
        for key in files(&root.join("variables")) {
            catalog
                .outside_variables
                .insert(env_suffix(&key), CatalogValue::Secret);
        }
        for id in files(&root.join("connections")) {
            if let Some(text) = from_folder(config, "connections", &id)
                && let Ok(fields) = ConnectionFields::from_text(&text)
            {
                catalog
                    .outside_connections
                    .insert(env_suffix(&id), visible(fields));
            }
        }
    }
    Ok(catalog)
}

/// What templates see of a connection in place.
fn visible(fields: ConnectionFields) -> CatalogConnection {
    CatalogConnection {
        conn_type: fields.conn_type,
        host: fields.host,
        port: fields.port,
        login: fields.login,
        schema: fields.schema,
    }
}

/// The names of the files of `folder` (none when it is missing).
fn files(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// `rendered` with every reference it holds replaced by its value, and a masker of every
/// value handed out (and of the values of its environment whose names are sensitive).
pub async fn resolve_rendered(
    store: &Store,
    config: &SecretsConfig,
    mut rendered: Rendered,
) -> Result<(Rendered, Masker), Error> {
    let mut found: Vec<Reference> = Vec::new();
    let mut texts: Vec<&str> = Vec::new();
    texts.extend(command_texts(&rendered.command));
    texts.extend(rendered.env.values().map(String::as_str));
    texts.extend(rendered.working_dir.as_deref());
    for handler in handlers(&rendered) {
        texts.extend(command_texts(&handler.command));
        texts.extend(handler.env.values().map(String::as_str));
    }
    for text in texts {
        for reference in references(text).map_err(Error::Lookup)? {
            if !found.contains(&reference) {
                found.push(reference);
            }
        }
    }
    let values = resolve(store, config, &found).await?;
    let fill = |text: &mut String| {
        if let Ok(filled) = substitute(text, |reference| Ok(values[reference].clone())) {
            *text = filled;
        }
    };
    fill_command(&mut rendered.command, fill);
    rendered.env.values_mut().for_each(fill);
    if let Some(dir) = &mut rendered.working_dir {
        fill(dir);
    }
    for handler in [
        &mut rendered.on_success,
        &mut rendered.on_failure,
        &mut rendered.on_retry,
    ]
    .into_iter()
    .flatten()
    {
        fill_command(&mut handler.command, fill);
        handler.env.values_mut().for_each(fill);
    }
    let masker = masker(config, &rendered, values.values().map(String::as_str));
    Ok((rendered, masker))
}

/// A masker of `resolved` (the values of a try's references) and of the values of the try's
/// environment whose names are sensitive.
pub fn masker<'a>(
    config: &SecretsConfig,
    rendered: &'a Rendered,
    resolved: impl Iterator<Item = &'a str>,
) -> Masker {
    let sensitive = rendered
        .env
        .iter()
        .filter(|(name, _)| config.sensitivity.is_sensitive(name))
        .map(|(_, value)| value.as_str());
    Masker::new(resolved.chain(sensitive))
}

/// [`resolve_rendered`] for a DAG handler (run by a scheduler).
pub async fn resolve_handler(
    store: &Store,
    config: &SecretsConfig,
    handler: RenderedHandler,
) -> Result<(RenderedHandler, Masker), Error> {
    let rendered = Rendered {
        command: handler.command,
        env: handler.env,
        inherit_env: handler.inherit_env,
        working_dir: None,
        on_success: None,
        on_failure: None,
        on_retry: None,
    };
    let (rendered, masker) = resolve_rendered(store, config, rendered).await?;
    let handler = RenderedHandler {
        command: rendered.command,
        env: rendered.env,
        inherit_env: rendered.inherit_env,
    };
    Ok((handler, masker))
}

fn handlers(rendered: &Rendered) -> impl Iterator<Item = &RenderedHandler> {
    [
        &rendered.on_success,
        &rendered.on_failure,
        &rendered.on_retry,
    ]
    .into_iter()
    .flatten()
}

fn command_texts(command: &Command) -> Vec<&str> {
    match command {
        Command::Run(line) => vec![line.as_str()],
        Command::Exec(argv) => argv.iter().map(String::as_str).collect(),
    }
}

fn fill_command(command: &mut Command, fill: impl Fn(&mut String)) {
    match command {
        Command::Run(line) => fill(line),
        Command::Exec(argv) => argv.iter_mut().for_each(fill),
    }
}

/// The values of `references`, each looked up in order: the folder, the environment, the
/// database.
pub async fn resolve(
    store: &Store,
    config: &SecretsConfig,
    references: &[Reference],
) -> Result<BTreeMap<Reference, String>, Error> {
    let mut values = BTreeMap::new();
    for reference in references {
        let value = match reference {
            Reference::Variable { key, path } => {
                let text = variable(store, config, key).await?;
                match path.is_empty() {
                    true => text,
                    false => json_at(&text, path)
                        .map_err(|why| Error::Lookup(format!("variable \"{key}\": {why}")))?,
                }
            }
            Reference::Connection { conn_id, field } => {
                let fields = connection(store, config, conn_id).await?;
                match field {
                    ConnectionField::Password => fields.password.unwrap_or_default(),
                    ConnectionField::Uri => fields.uri(),
                    ConnectionField::Extra(path) => {
                        let extra = serde_json::Value::Object(fields.extra.unwrap_or_default());
                        json_at(&extra.to_string(), path).map_err(|why| {
                            Error::Lookup(format!("connection \"{conn_id}\": extra: {why}"))
                        })?
                    }
                }
            }
        };
        values.insert(reference.clone(), value);
    }
    Ok(values)
}

/// Variable `key`'s value in clear.
async fn variable(store: &Store, config: &SecretsConfig, key: &str) -> Result<String, Error> {
    if let Some(value) = from_folder(config, "variables", key) {
        return Ok(value);
    }
    if let Ok(value) = std::env::var(variable_env_name(key)) {
        return Ok(value);
    }
    let missing = || {
        Error::Lookup(format!(
            "no variable \"{key}\" (in the secrets folder, in {} or in the database)",
            variable_env_name(key)
        ))
    };
    let parsed = VariableKey::parse(key).map_err(|_| missing())?;
    let Some(variable) = store.get_variable(&parsed).await? else {
        return Err(missing());
    };
    if !variable.is_secret {
        return Ok(variable.value);
    }
    let at = |error: updraft_core::seal::SealError| {
        Error::Lookup(format!("variable \"{key}\": {error}"))
    };
    config
        .keyring()
        .map_err(at)?
        .open(&variable_purpose(key), &variable.value)
        .map_err(at)
}

/// Connection `conn_id`'s fields in clear.
pub async fn connection(
    store: &Store,
    config: &SecretsConfig,
    conn_id: &str,
) -> Result<ConnectionFields, Error> {
    let at = |why: String| Error::Lookup(format!("connection \"{conn_id}\": {why}"));
    let outside = from_folder(config, "connections", conn_id)
        .or_else(|| std::env::var(connection_env_name(conn_id)).ok());
    if let Some(text) = outside {
        return ConnectionFields::from_text(&text).map_err(at);
    }
    let missing = || {
        Error::Lookup(format!(
            "no connection \"{conn_id}\" (in the secrets folder, in {} or in the database)",
            connection_env_name(conn_id)
        ))
    };
    let parsed = ConnectionId::parse(conn_id).map_err(|_| missing())?;
    let Some(stored) = store.get_connection(&parsed).await? else {
        return Err(missing());
    };
    let open = |field: &str, sealed: &str| -> Result<String, Error> {
        let keyring = config.keyring().map_err(|error| at(error.to_string()))?;
        keyring
            .open(&connection_purpose(conn_id, field), sealed)
            .map_err(|error| at(format!("{field}: {error}")))
    };
    let extra = match &stored.extra {
        None => None,
        Some(sealed) => match serde_json::from_str(&open("extra", sealed)?) {
            Ok(serde_json::Value::Object(extra)) => Some(extra),
            _ => return Err(at("its extra is not a JSON object".to_owned())),
        },
    };
    Ok(ConnectionFields {
        conn_type: stored.conn_type,
        host: stored.host,
        port: stored.port.and_then(|port| u16::try_from(port).ok()),
        login: stored.login,
        password: stored
            .password
            .as_deref()
            .map(|sealed| open("password", sealed))
            .transpose()?,
        schema: stored.schema,
        extra,
    })
}

/// The value at `path` of `text` read as JSON: a string as it is, anything else as JSON.
fn json_at(text: &str, path: &[String]) -> Result<String, String> {
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
    for segment in path {
        value = match value {
            serde_json::Value::Object(mut object) => object
                .remove(segment)
                .ok_or_else(|| format!("no key \"{segment}\""))?,
            serde_json::Value::Array(items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|index| items.into_iter().nth(index))
                .ok_or_else(|| format!("no item {segment}"))?,
            _ => return Err(format!("no key \"{segment}\" in a scalar")),
        };
    }
    Ok(match value {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    })
}
