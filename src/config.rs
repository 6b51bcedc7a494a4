//! The validated settings every command runs with, made from the global flags once.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chrono_tz::Tz;
use updraft_core::dag::LoadOptions;
use updraft_core::schedule::parse_timezone;

use crate::cli::GlobalArgs;

#[derive(Debug, Clone)]
pub struct Config {
    pub dags_folder: PathBuf,
    /// `--database-url`; `None`: the SQLite file under the Updraft home.
    database_url: Option<String>,
    /// `--home`; `None`: `~/.updraft`.
    home: Option<PathBuf>,
    pub load: LoadOptions,
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
        })
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
