//! Secrets in a try's plan (issue 18): the references a worker resolves when the try starts,
//! the names that make a value secret, and the masking of what a try prints.
//!
//! A template that reads a secret (a secret variable, a connection's password, extra or URI)
//! renders to a reference such as `${{updraft var api_key}}`, never to the value: the plan the
//! scheduler stores, the API and the pages show the reference. The worker replaces each
//! reference with the value as the try starts ([`substitute`]) and masks every value it handed
//! to the try in the try's log and outputs ([`Masker`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Airflow's default sensitive names (`core.sensitive_var_conn_names` adds to them): a
/// variable, a connection's extra field or an environment variable whose name contains one
/// (in any case) is secret.
pub const SENSITIVE_NAMES: &[&str] = &[
    "access_token",
    "api_key",
    "apikey",
    "authorization",
    "passphrase",
    "passwd",
    "password",
    "private_key",
    "secret",
    "token",
    "keyfile_dict",
    "service_account",
];

/// Values shorter than this are not masked: masking every `a` or `1` of a log hides the log,
/// not the secret (Airflow's `min_length_masked_secret`).
pub const MIN_MASKED_LENGTH: usize = 5;

/// What a masked value is replaced with.
pub const MASK: &str = "***";

/// How an installation keeps its secrets: its keys (to seal what the database stores), the
/// names that make a value secret, and the folder of secrets mounted beside it.
#[derive(Debug, Clone, Default)]
pub struct SecretsConfig {
    pub keyring: Option<crate::seal::Keyring>,
    pub sensitivity: Sensitivity,
    /// `UPDRAFT_SECRETS_FOLDER`: `variables/<key>` and `connections/<id>`, one file each.
    pub folder: Option<PathBuf>,
}

impl SecretsConfig {
    /// The keys, or why there are none.
    pub fn keyring(&self) -> Result<&crate::seal::Keyring, crate::seal::SealError> {
        self.keyring.as_ref().ok_or(crate::seal::SealError::NoKey)
    }
}

/// Which names are secret: [`SENSITIVE_NAMES`] and the installation's own additions
/// (`UPDRAFT_SENSITIVE_NAMES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sensitivity {
    pub extra: Vec<String>,
}

impl Sensitivity {
    pub fn is_sensitive(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        SENSITIVE_NAMES
            .iter()
            .copied()
            .chain(self.extra.iter().map(String::as_str))
            .any(|word| !word.is_empty() && name.contains(&word.to_ascii_lowercase()))
    }
}

/// The environment variable that holds variable `key` where Updraft runs:
/// `UPDRAFT_VAR_<KEY>` (as Airflow's `AIRFLOW_VAR_<KEY>`).
pub fn variable_env_name(key: &str) -> String {
    format!("UPDRAFT_VAR_{}", env_suffix(key))
}

/// The environment variable that holds connection `conn_id` as a URI or JSON fields where
/// Updraft runs, and that a task declaring the connection gets its URI in:
/// `UPDRAFT_CONN_<ID>` (as Airflow's `AIRFLOW_CONN_<ID>`).
pub fn connection_env_name(conn_id: &str) -> String {
    format!("UPDRAFT_CONN_{}", env_suffix(conn_id))
}

/// A key or id as the end of an environment variable's name: upper case, each character
/// other than a letter or digit as `_`.
pub fn env_suffix(name: &str) -> String {
    name.chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c.to_ascii_uppercase(),
            false => '_',
        })
        .collect()
}

/// A variable's value as templates see it when the scheduler renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogValue {
    /// Rendered in place.
    Plain(String),
    /// Rendered as a reference the worker resolves.
    Secret,
}

/// A connection as templates see it: what is not secret; its password, extra and URI only as
/// references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogConnection {
    pub conn_type: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub login: Option<String>,
    pub schema: Option<String>,
}

/// What templates may read of the variables and connections when the scheduler renders: the
/// database's, and those of the secrets folder and the environment, which come first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// The database's, by key.
    pub variables: BTreeMap<String, CatalogValue>,
    /// The folder's and the environment's, by the [`env_suffix`] of their key.
    pub outside_variables: BTreeMap<String, CatalogValue>,
    /// The database's, by id.
    pub connections: BTreeMap<String, CatalogConnection>,
    /// The folder's and the environment's, by the [`env_suffix`] of their id.
    pub outside_connections: BTreeMap<String, CatalogConnection>,
}

impl Catalog {
    pub fn variable(&self, key: &str) -> Option<&CatalogValue> {
        self.outside_variables
            .get(&env_suffix(key))
            .or_else(|| self.variables.get(key))
    }

    pub fn connection(&self, conn_id: &str) -> Option<&CatalogConnection> {
        self.outside_connections
            .get(&env_suffix(conn_id))
            .or_else(|| self.connections.get(conn_id))
    }
}

/// A secret a worker resolves when the try starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// A variable's value; with a path, the value at that path of the variable read as JSON
    /// (`var.json.key.a.b`).
    Variable { key: String, path: Vec<String> },
    /// A field of a connection that only a worker reads.
    Connection {
        conn_id: String,
        field: ConnectionField,
    },
}

/// The secret fields of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectionField {
    Password,
    /// The whole connection as a URI (`conn.x.get_uri()`), password included.
    Uri,
    /// A value of its extra JSON, by path (empty: the whole extra as JSON text).
    Extra(Vec<String>),
}

const OPEN: &str = "${{updraft ";
const CLOSE: &str = "}}";

/// A path segment as it is written in a reference: percent-encoded, so that it holds no
/// space, `/` or `}`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'-').remove(b'.');

impl fmt::Display for Reference {
    /// `${{updraft var KEY}}`, `${{updraft var.json KEY a/b}}`, `${{updraft conn.password ID}}`,
    /// `${{updraft conn.uri ID}}`, `${{updraft conn.extra ID a/b}}`. In a shell, an unresolved
    /// reference is a "bad substitution", never a value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name, path) = match self {
            Reference::Variable { key, path } if path.is_empty() => ("var", key, None),
            Reference::Variable { key, path } => ("var.json", key, Some(path)),
            Reference::Connection { conn_id, field } => match field {
                ConnectionField::Password => ("conn.password", conn_id, None),
                ConnectionField::Uri => ("conn.uri", conn_id, None),
                ConnectionField::Extra(path) => ("conn.extra", conn_id, Some(path)),
            },
        };
        write!(f, "{OPEN}{kind} {name}")?;
        if let Some(path) = path {
            let segments: Vec<String> = path
                .iter()
                .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
                .collect();
            write!(f, " {}", segments.join("/"))?;
        }
        f.write_str(CLOSE)
    }
}

impl Reference {
    /// Reads the inside of a reference (what is between `${{updraft ` and `}}`).
    fn parse_inside(inside: &str) -> Result<Reference, String> {
        let mut words = inside.split(' ');
        let (Some(kind), Some(name)) = (words.next(), words.next()) else {
            return Err(format!("a reference needs a kind and a name: {inside:?}"));
        };
        let path = match words.next() {
            None => Vec::new(),
            Some(path) => path
                .split('/')
                .map(|segment| {
                    percent_decode_str(segment)
                        .decode_utf8()
                        .map(|segment| segment.into_owned())
                        .map_err(|_| format!("a reference's path is not UTF-8: {inside:?}"))
                })
                .collect::<Result<_, _>>()?,
        };
        if words.next().is_some() || name.is_empty() {
            return Err(format!("not a reference: {inside:?}"));
        }
        let name = name.to_owned();
        match (kind, path.is_empty()) {
            ("var", true) => Ok(Reference::Variable {
                key: name,
                path: Vec::new(),
            }),
            ("var.json", _) => Ok(Reference::Variable { key: name, path }),
            ("conn.password", true) => Ok(Reference::Connection {
                conn_id: name,
                field: ConnectionField::Password,
            }),
            ("conn.uri", true) => Ok(Reference::Connection {
                conn_id: name,
                field: ConnectionField::Uri,
            }),
            ("conn.extra", _) => Ok(Reference::Connection {
                conn_id: name,
                field: ConnectionField::Extra(path),
            }),
            _ => Err(format!("unknown kind of reference: {inside:?}")),
        }
    }
}

/// The references in `text`, in order, each once.
pub fn references(text: &str) -> Result<Vec<Reference>, String> {
    let mut found = Vec::new();
    substitute(text, |reference| {
        if !found.contains(reference) {
            found.push(reference.clone());
        }
        Ok(String::new())
    })?;
    Ok(found)
}

/// `text` with every reference replaced by what `resolve` gives for it; the first error
/// (an unreadable reference, or one `resolve` refuses) stops it.
pub fn substitute(
    text: &str,
    mut resolve: impl FnMut(&Reference) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else {
            return Err("a reference `${{updraft ...` is not closed with `}}`".to_owned());
        };
        let reference = Reference::parse_inside(&after[..end])?;
        out.push_str(&resolve(&reference)?);
        rest = &after[end + CLOSE.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Replaces secret values with [`MASK`] in a stream of output (a try's log) and in single
/// values (its outputs). Each value is masked as written, percent-encoded (as in a URI) and in
/// base64; values shorter than [`MIN_MASKED_LENGTH`] are not.
///
/// A value may be split across two chunks of the stream: the end of a chunk that could begin
/// a value is held back until the next chunk (or [`Masker::finish`]) says whether it does.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so that a value containing another is masked whole.
    forms: Vec<Vec<u8>>,
    held: Vec<u8>,
}

impl Masker {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut forms: Vec<Vec<u8>> = Vec::new();
        for value in values {
            if value.chars().count() < MIN_MASKED_LENGTH {
                continue;
            }
            let encoded = utf8_percent_encode(value, NON_ALPHANUMERIC).to_string();
            let base64 = base64::engine::general_purpose::STANDARD.encode(value);
            for form in [value.to_owned(), encoded, base64] {
                let form = form.into_bytes();
                if !forms.contains(&form) {
                    forms.push(form);
                }
            }
        }
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Masker {
            forms,
            held: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// What of the stream so far can be written: `chunk` appended to what was held back,
    /// masked, without an end that may be the start of a value.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.forms.is_empty() {
            return chunk.to_vec();
        }
        self.held.extend_from_slice(chunk);
        let (masked, held) = self.mask_stream(false);
        self.held = held;
        masked
    }

    /// The rest of the stream, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        let (masked, _) = self.mask_stream(true);
        self.held.clear();
        masked
    }

    /// `text` with every value masked.
    pub fn mask(&self, text: &str) -> String {
        if self.forms.is_empty() {
            return text.to_owned();
        }
        let mut masker = Masker {
            forms: self.forms.clone(),
            held: text.as_bytes().to_vec(),
        };
        String::from_utf8_lossy(&masker.finish()).into_owned()
    }

    /// Masks `self.held`; unless `at_end`, keeps back its longest end that is the start of a
    /// value. Returns (masked, kept back).
    fn mask_stream(&self, at_end: bool) -> (Vec<u8>, Vec<u8>) {
        let bytes = &self.held;
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        'scan: while i < bytes.len() {
            for form in &self.forms {
                if bytes[i..].starts_with(form) {
                    out.extend_from_slice(MASK.as_bytes());
                    i += form.len();
                    continue 'scan;
                }
                if !at_end && form.len() > bytes.len() - i && form.starts_with(&bytes[i..]) {
                    return (out, bytes[i..].to_vec());
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        (out, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(key: &str) -> Reference {
        Reference::Variable {
            key: key.to_owned(),
            path: Vec::new(),
        }
    }

    #[test]
    fn references_read_back_as_written() {
        let all = [
            var("api_key"),
            Reference::Variable {
                key: "config".to_owned(),
                path: vec!["a b".to_owned(), "c/d}}".to_owned()],
            },
            Reference::Connection {
                conn_id: "warehouse".to_owned(),
                field: ConnectionField::Password,
            },
            Reference::Connection {
                conn_id: "warehouse".to_owned(),
                field: ConnectionField::Uri,
            },
            Reference::Connection {
                conn_id: "w".to_owned(),
                field: ConnectionField::Extra(vec!["token".to_owned()]),
            },
        ];
        let text: String = all.iter().map(|r| format!("x{r}y")).collect();
        assert_eq!(references(&text).unwrap(), all);
        assert_eq!(
            var("api_key").to_string(),
            "${{updraft var api_key}}",
            "readable where the plan is shown"
        );
    }

    #[test]
    fn substitute_replaces_each_reference_and_stops_at_a_refusal() {
        let text = format!("curl -H 'X: {}' {}", var("api_key"), var("host"));
        let done = substitute(&text, |r| match r {
            Reference::Variable { key, .. } => Ok(key.to_uppercase()),
            _ => unreachable!(),
        });
        assert_eq!(done.unwrap(), "curl -H 'X: API_KEY' HOST");
        let refused = substitute(&text, |_| Err("no such variable".to_owned()));
        assert_eq!(refused.unwrap_err(), "no such variable");
        assert!(substitute("echo ${{updraft var x", |_| Ok(String::new())).is_err());
        assert!(substitute("echo ${{updraft nope x}}", |_| Ok(String::new())).is_err());
        assert_eq!(
            substitute("no references ${HOME} {{ }}", |_| unreachable!()).unwrap(),
            "no references ${HOME} {{ }}"
        );
    }

    #[test]
    fn a_masker_masks_every_form_even_across_chunks() {
        let secret = "p@ss word/42";
        let mut masker = Masker::new([secret, "abc"]);
        let encoded = "p%40ss%20word%2F42";
        let base64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let stream = format!("a {secret} b {encoded} c {base64} d abc\n");
        // Every split of the stream into two chunks masks the same.
        for split in 0..=stream.len() {
            let mut masker = masker.clone();
            let mut out = masker.push(&stream.as_bytes()[..split]);
            out.extend(masker.push(&stream.as_bytes()[split..]));
            out.extend(masker.finish());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "a *** b *** c *** d abc\n",
                "split at {split}"
            );
        }
        // A held-back start that turns out not to be a value is written after all.
        assert_eq!(masker.push(b"x p@ss"), b"x ");
        assert_eq!(masker.push(b" wor"), b"");
        assert_eq!(masker.finish(), b"p@ss wor");
        assert_eq!(masker.mask("=p@ss word/42="), "=***=");
    }

    #[test]
    fn names_are_sensitive_as_in_airflow_plus_the_installations() {
        let sensitivity = Sensitivity {
            extra: vec!["Credential".to_owned()],
        };
        for name in ["API_KEY", "db_password", "slack_token", "my_credentials"] {
            assert!(sensitivity.is_sensitive(name), "{name}");
        }
        for name in ["region", "host", "bucket"] {
            assert!(!sensitivity.is_sensitive(name), "{name}");
        }
    }
}
