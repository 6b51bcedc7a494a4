//! One module per command group. Each `run` returns the process exit code.

pub mod backfill;
pub mod bench;
pub mod dags;
pub mod db;
pub mod local_run;
pub mod pools;
pub mod runs;
pub mod serve;
pub mod tasks;
pub mod users;
pub mod workers;

use anyhow::{Context, Result};
use updraft_metadata::{Backend, Store};

use crate::config::Config;

/// The async runtime of commands that talk to the database or run tasks.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Opens the metadata database. The embedded SQLite database is created and migrated on first
/// use, so one machine needs no setup; Postgres must be migrated with `updraft db migrate`
/// (a shared database is changed on purpose, not by whichever process starts first).
pub async fn open_store(config: &Config) -> Result<Store> {
    let url = config.database_url()?;
    if Backend::of_url(&url) == Some(Backend::Sqlite) {
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        store.close().await;
    }
    Ok(Store::open(&url).await?)
}
