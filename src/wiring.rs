//! The parts as the commands build them from the [`Config`]: the async runtime, the metadata
//! store, a scheduler's and a worker's settings, and this machine's name. Commands that run a
//! part (`standalone`, `scheduler`, `worker`, `dags test`, `dags backfill`) start from here,
//! so that they run it alike.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use updraft_core::scope::Scope;
use updraft_core::secret::SecretsConfig;
use updraft_executor::name::Name;
use updraft_executor::worker;
use updraft_metadata::{Backend, Store};
use updraft_scheduler::service;

use crate::config::Config;

/// How long a loop waits for a wake-up before it looks anyway: 1 s. Wake-ups reach every
/// process (LISTEN/NOTIFY on Postgres, the doorbell on a SQLite file) and say what changed, so
/// a look that nothing woke finds nothing new; it is the fallback for a lost wake-up.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How often a worker heartbeats its tries (and notices kills it was not woken for).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

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

/// A scheduler of the configured DAGs folder that takes on `scope` and renders with
/// `secrets`, with the scheduler's defaults (the long-running commands then apply their flags).
pub fn scheduler_settings(
    config: &Config,
    scope: Scope,
    secrets: SecretsConfig,
) -> service::Settings {
    let mut settings = service::Settings::new(config.dags_folder.clone(), config.load.clone());
    settings.poll_interval = POLL_INTERVAL;
    settings.scope = scope;
    settings.secrets = secrets;
    settings.base_url = config.base_url.clone();
    settings
}

/// A worker that claims from `queues`, any task instance (the embedded ones narrow its scope),
/// and resolves its tries' secrets with `secrets`.
pub fn worker_settings(
    name: Name,
    hostname: String,
    queues: Vec<String>,
    concurrency: u32,
    secrets: SecretsConfig,
) -> worker::Settings {
    worker::Settings {
        name,
        hostname,
        queues,
        concurrency: concurrency as usize,
        poll_interval: POLL_INTERVAL,
        heartbeat_interval: HEARTBEAT_INTERVAL,
        echo: false,
        scope: Scope::Everything,
        shutdown_timeout: None,
        inherit_env: Vec::new(),
        secrets: Arc::new(secrets),
        max_log_bytes: worker::MAX_LOG_BYTES,
        base_url: None,
    }
}

/// This machine's name, as workers and schedulers record it.
pub fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, and gethostname writes at most that.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    match result {
        0 if end > 0 => String::from_utf8_lossy(&buffer[..end]).into_owned(),
        _ => "localhost".to_owned(),
    }
}
