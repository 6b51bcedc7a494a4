//! The validated settings every command runs with, made from the global flags once.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chrono_tz::Tz;
use updraft_core::dag::LoadOptions;
use updraft_core::schedule::parse_timezone;
use updraft_core::seal::Keyring;
use updraft_core::secret::{SecretsConfig, Sensitivity};

use crate::cli::GlobalArgs;

#[derive(Debug, Clone)]
pub struct Config {
    pub dags_folder: PathBuf,
    /// `--database-url`; `None`: the SQLite file under the Updraft home.
    database_url: Option<String>,
    /// `--home`; `None`: `~/.updraft`.
    home: Option<PathBuf>,
    pub load: LoadOptions,
    /// `--secrets-folder`.
    secrets_folder: Option<PathBuf>,
    /// `--sensitive-names`.
    sensitive_names: Vec<String>,
    /// `--base-url`: the web UI's address, for the links handlers are given.
    pub base_url: Option<String>,
}

/// The environment variable that holds the installation's secret key(s).
pub const SECRET_KEY_VARIABLE: &str = "UPDRAFT_SECRET_KEY";
/// The key file in the Updraft home, when `UPDRAFT_SECRET_KEY` is not set.
const KEY_FILE: &str = "secret.key";

/// Whether [`Config::secrets`] may create the home's key file when there is no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFile {
    /// Read it if it is there.
    Read,
    /// Create it when the database is the home's SQLite file (one machine, nothing else
    /// shares the key); a shared database needs `UPDRAFT_SECRET_KEY` on every host.
    CreateForHome,
    /// Create it (`standalone`: everything runs on this machine).
    Create,
}

impl Config {
    pub fn from_args(args: &GlobalArgs) -> Result<Config> {
        let default_timezone: Tz = parse_timezone(&args.default_timezone)
            .map_err(anyhow::Error::msg)
            .context("--default-timezone")?;
        Ok(Config {
            dags_folder: args.dags_folder.clone(),
            database_url: args.database_url.clone(),
            home: args.home.clone(),
            load: LoadOptions { default_timezone },
            secrets_folder: args.secrets_folder.clone(),
            sensitive_names: args.sensitive_names.clone(),
            base_url: args.base_url.clone(),
        })
    }

    /// How this installation keeps secrets: its keys (from `UPDRAFT_SECRET_KEY`, else the
    /// home's key file), sensitive names and secrets folder. A key that does not parse is an
    /// error; no key is not (what needs one says so).
    pub fn secrets(&self, key_file: KeyFile) -> Result<SecretsConfig> {
        let keyring = match std::env::var(SECRET_KEY_VARIABLE) {
            Ok(text) if !text.trim().is_empty() => {
                Some(Keyring::parse(&text).with_context(|| SECRET_KEY_VARIABLE.to_owned())?)
            }
            _ => self.key_file(key_file)?,
        };
        Ok(SecretsConfig {
            keyring,
            sensitivity: Sensitivity {
                extra: self.sensitive_names.clone(),
            },
            folder: self.secrets_folder.clone(),
        })
    }

    /// The keys of the home's key file, made first when `key_file` says so.
    fn key_file(&self, key_file: KeyFile) -> Result<Option<Keyring>> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = self.home()?.join(KEY_FILE);
        if !path.exists() {
            let create = match key_file {
                KeyFile::Read => false,
                KeyFile::CreateForHome => self.database_url.is_none(),
                KeyFile::Create => true,
            };
            if !create {
                return Ok(None);
            }
            std::fs::create_dir_all(self.home()?)?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create the key file {}", path.display()))?;
            writeln!(file, "{}", Keyring::new_key())?;
            eprintln!("created the secret key file {}", path.display());
        }
        let mode = std::fs::metadata(&path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "the key file {} may be read by others (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?;
        Ok(Some(
            Keyring::parse(&text).with_context(|| path.display().to_string())?,
        ))
    }

    /// The metadata database's URL. Resolved on demand: commands that only read DAG files
    /// work without a home folder.
    pub fn database_url(&self) -> Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        Ok(format!(
            "sqlite:{}",
            self.home()?.join("updraft.db").display()
        ))
    }

    /// The Updraft home: `--home`, `UPDRAFT_HOME`, or `~/.updraft`.
    pub fn home(&self) -> Result<PathBuf> {
        match &self.home {
            Some(home) => Ok(home.clone()),
            None => default_home(),
        }
    }
}

fn default_home() -> Result<PathBuf> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".updraft")),
        _ => bail!("cannot find a home folder: set UPDRAFT_HOME or pass --home"),
    }
}
