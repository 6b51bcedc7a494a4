//! `updraft db ...`: create and check the metadata database.

use anyhow::{Context, Result};
use updraft_metadata::{SchemaStatus, Store};

use crate::cli::DbCommand;
use crate::config::Config;

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
        };
        store.close().await;
        Ok(code)
    })
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
