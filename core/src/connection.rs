//! Connections as Airflow writes them (issue 18): a URI
//! (`postgres://user:pass@host:5432/db?sslmode=require`) or fields (type, host, port, login,
//! password, schema, extra JSON), read and written by Airflow's rules, so that
//! `AIRFLOW_CONN_*` values and `airflow connections export` files work here.
//!
//! - The URI's scheme is the type, with `-` read as `_` (`google-cloud-platform` is
//!   `google_cloud_platform`); login, password, host and schema are percent-decoded; the path
//!   without its `/` is the schema.
//! - The query is the extra: each parameter a string field, or, when the only parameter is
//!   `__extra__`, its value as JSON.
//! - Writing it back ([`ConnectionFields::uri`]) percent-encodes each part and writes the
//!   extra as parameters when all its values are strings, else as `__extra__`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What Python's `quote(text, safe="")` encodes: all but letters, digits and `_.-~`.
const QUOTED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// A connection's fields, the password and extra in clear.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionFields {
    pub conn_type: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub login: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub schema: Option<String>,
    /// A JSON object.
    #[serde(default)]
    pub extra: Option<Map<String, Value>>,
}

impl ConnectionFields {
    /// Reads Airflow's URI form.
    pub fn from_uri(uri: &str) -> Result<ConnectionFields, String> {
        let url = url::Url::parse(uri).map_err(|error| {
            format!("not a connection URI ({error}): write e.g. postgres://user:pass@host:5432/db")
        })?;
        let decode = |text: &str| -> Result<Option<String>, String> {
            if text.is_empty() {
                return Ok(None);
            }
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|text| Some(text.into_owned()))
                .map_err(|_| format!("{text:?} is not UTF-8 once percent-decoded"))
        };
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let extra = match pairs.as_slice() {
            [] => None,
            [(name, json)] if name == "__extra__" => match serde_json::from_str(json) {
                Ok(Value::Object(extra)) => Some(extra),
                _ => return Err("__extra__ must be a JSON object".to_owned()),
            },
            pairs => Some(
                pairs
                    .iter()
                    .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                    .collect(),
            ),
        };
        Ok(ConnectionFields {
            conn_type: url.scheme().replace('-', "_"),
            host: url.host_str().map(decode).transpose()?.flatten(),
            port: url.port(),
            login: decode(url.username())?,
            password: url.password().map(decode).transpose()?.flatten(),
            schema: decode(url.path().trim_start_matches('/'))?,
            extra,
        })
    }

    /// The URI of Airflow's `get_uri()`, password included.
    pub fn uri(&self) -> String {
        let encode = |text: &str| utf8_percent_encode(text, QUOTED).to_string();
        let mut uri = format!("{}://", self.conn_type.to_lowercase().replace('_', "-"));
        if self.login.is_some() || self.password.is_some() {
            uri.push_str(&encode(self.login.as_deref().unwrap_or_default()));
            if let Some(password) = &self.password {
                uri.push(':');
                uri.push_str(&encode(password));
            }
            uri.push('@');
        }
        if let Some(host) = &self.host {
            uri.push_str(&encode(host));
        }
        if let Some(port) = self.port {
            uri.push_str(&format!(":{port}"));
        }
        if let Some(schema) = &self.schema {
            uri.push('/');
            uri.push_str(&encode(schema));
        }
        if let Some(extra) = self.extra.as_ref().filter(|extra| !extra.is_empty()) {
            let query = match extra.values().all(Value::is_string) {
                true => extra
                    .iter()
                    .map(|(name, value)| {
                        format!(
                            "{}={}",
                            encode(name),
                            encode(value.as_str().unwrap_or_default())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("&"),
                false => format!(
                    "__extra__={}",
                    encode(&Value::Object(extra.clone()).to_string())
                ),
            };
            uri.push('?');
            uri.push_str(&query);
        }
        uri
    }

    /// Reads a connection as Airflow's environment variables and secrets backends hold it: a
    /// URI, or a JSON object of the fields (`{"conn_type": "postgres", "host": ...}`).
    pub fn from_text(text: &str) -> Result<ConnectionFields, String> {
        let text = text.trim();
        match text.starts_with('{') {
            true => {
                serde_json::from_str(text).map_err(|error| format!("not a connection: {error}"))
            }
            false => ConnectionFields::from_uri(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_reads_as_airflow_reads_it() {
        let fields = ConnectionFields::from_uri(
            "postgres://etl%40corp:p%40ss%2Fw0rd@db.internal:5432/warehouse?sslmode=require",
        )
        .unwrap();
        assert_eq!(fields.conn_type, "postgres");
        assert_eq!(fields.login.as_deref(), Some("etl@corp"));
        assert_eq!(fields.password.as_deref(), Some("p@ss/w0rd"));
        assert_eq!(fields.host.as_deref(), Some("db.internal"));
        assert_eq!(fields.port, Some(5432));
        assert_eq!(fields.schema.as_deref(), Some("warehouse"));
        assert_eq!(
            Value::Object(fields.extra.clone().unwrap()),
            serde_json::json!({"sslmode": "require"})
        );
        assert_eq!(ConnectionFields::from_uri(&fields.uri()).unwrap(), fields);
    }

    #[test]
    fn types_extra_json_and_bare_uris_round_trip() {
        let fields = ConnectionFields::from_uri(
            "google-cloud-platform://?__extra__=%7B%22retries%22%3A+3%2C+%22scope%22%3A+%22a%22%7D",
        )
        .unwrap();
        assert_eq!(fields.conn_type, "google_cloud_platform");
        assert_eq!(fields.host, None);
        assert_eq!(
            Value::Object(fields.extra.clone().unwrap()),
            serde_json::json!({"retries": 3, "scope": "a"})
        );
        assert_eq!(ConnectionFields::from_uri(&fields.uri()).unwrap(), fields);
        let plain = ConnectionFields::from_uri("http://example.com").unwrap();
        assert_eq!(plain.uri(), "http://example.com");
        assert_eq!(ConnectionFields::from_uri(&plain.uri()).unwrap(), plain);
    }

    #[test]
    fn text_is_a_uri_or_json_fields_and_errors_say_what_to_write() {
        let json =
            ConnectionFields::from_text(r#"{"conn_type": "http", "host": "api", "port": 443}"#)
                .unwrap();
        assert_eq!((json.host.as_deref(), json.port), (Some("api"), Some(443)));
        assert!(
            ConnectionFields::from_text("not a uri")
                .unwrap_err()
                .contains("write e.g. postgres://")
        );
        assert!(ConnectionFields::from_text(r#"{"type": "x"}"#).is_err());
    }
}
