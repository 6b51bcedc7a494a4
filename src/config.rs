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
    pub database_url: String,
    pub load: LoadOptions,
}

impl Config {
    pub fn from_args(args: &GlobalArgs) -> Result<Config> {
        let home = match &args.home {
            Some(home) => home.clone(),
            None => default_home()?,
        };
        let database_url = match &args.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite:{}", home.join("updraft.db").display()),
        };
        let default_timezone: Tz = parse_timezone(&args.default_timezone)
            .map_err(anyhow::Error::msg)
            .context("--default-timezone")?;
        Ok(Config {
            dags_folder: args.dags_folder.clone(),
            database_url,
            load: LoadOptions { default_timezone },
        })
    }
}

fn default_home() -> Result<PathBuf> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".updraft")),
        _ => bail!("cannot find a home folder: set UPDRAFT_HOME or pass --home"),
    }
}
