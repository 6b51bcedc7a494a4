//! `updraft db ...`: create, check and clean the metadata database.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use chrono::Utc;
use updraft_metadata::{Cleaned, SchemaStatus, Store};
use updraft_ops::retention::{self, Clean};

use crate::cli::DbCommand;
use crate::config::Config;
use crate::term::{actor, confirm, rfc3339};

pub fn run(config: &Config, command: DbCommand) -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store = Store::connect(&config.database_url()?).await?;
        let code = match command {
            DbCommand::Migrate => migrate(&store).await?,
            DbCommand::Check => check(&store).await?,
            DbCommand::Clean {
                older_than,
                dag_id,
                dry_run,
                yes,
            } => {
                let clean = Clean { older_than, dag_id };
                clean_old(&store, &clean, dry_run, yes).await?
            }
        };
        store.close().await;
        Ok(code)
    })
}

/// `db clean`: says what is old, asks (unless --yes), deletes it batch by batch.
async fn clean_old(store: &Store, clean: &Clean, dry_run: bool, yes: bool) -> Result<i32> {
    let now = Utc::now();
    let cutoff = clean.cutoff(now)?;
    let old = retention::count(store, clean, now).await?;
    let what = |cleaned: &Cleaned| {
        format!(
            "{} run(s) with {} task instance(s) (their tries, logs and outputs), and {} \
             event(s)",
            cleaned.runs, cleaned.task_instances, cleaned.events
        )
    };
    let scope = match &clean.dag_id {
        Some(dag_id) => format!(" of DAG \"{dag_id}\""),
        None => String::new(),
    };
    println!("older than {}{scope}: {}", rfc3339(cutoff), what(&old));
    if dry_run || old == Cleaned::default() {
        return Ok(0);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "error: not deleting without confirmation: stdin is not a terminal; pass --yes"
            );
            return Ok(1);
        }
        if !confirm("Delete them?")? {
            eprintln!("cancelled: nothing was deleted");
            return Ok(1);
        }
    }
    let cleaned = retention::clean(store, &actor(), clean, now, |_| {}).await?;
    println!("deleted {}", what(&cleaned));
    Ok(0)
}

async fn migrate(store: &Store) -> Result<i32> {
    let applied = store.migrate().await?;
    match (applied.first(), applied.last()) {
        (Some(first), Some(last)) if first == last => {
            println!("applied migration {first} to {}", store.url());
        }
        (Some(first), Some(last)) => {
            println!("applied migrations {first} to {last} to {}", store.url());
        }
        _ => println!("{} is up to date", store.url()),
    }
    Ok(0)
}

async fn check(store: &Store) -> Result<i32> {
    match store.schema_status().await? {
        SchemaStatus::Current { version } => {
            println!(
                "{}: reachable, schema version {version} (current)",
                store.url()
            );
            Ok(0)
        }
        other => {
            let problem = other
                .problem(store.url())
                .unwrap_or_else(|| format!("unexpected schema status {other:?}"));
            eprintln!("error: {problem}");
            Ok(1)
        }
    }
}
