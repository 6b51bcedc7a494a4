//! `updraft pools ...`: list, create, resize and delete pools.

use anyhow::{Result, anyhow};
use updraft_core::rate::RateLimit;
use updraft_core::suggest::did_you_mean;
use updraft_metadata::{Error, Store};

use crate::cli::PoolsCommand;
use crate::config::Config;
use crate::term::print_table;
use crate::term::usage_error;
use crate::wiring::{open_store, runtime};

/// Runs `updraft pools ...` and returns the exit code.
pub fn run(config: &Config, command: PoolsCommand) -> Result<i32> {
    runtime()?.block_on(async {
        let store = open_store(config).await?;
        let code = match command {
            PoolsCommand::List { json } => list(&store, json).await,
            PoolsCommand::Set {
                name,
                slots,
                description,
                rate_limit,
            } => set(&store, &name, slots, &description, rate_limit.as_deref()).await,
            PoolsCommand::Delete { name } => delete(&store, &name).await,
        };
        store.close().await;
        code
    })
}

async fn list(store: &Store, json: bool) -> Result<i32> {
    let pools = store.list_pools().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&pools)?);
        return Ok(0);
    }
    let rows: Vec<[String; 4]> = pools
        .into_iter()
        .map(|pool| {
            let rate_limit = pool.rate_limit.map(|limit| limit.to_string());
            [
                pool.name,
                pool.slots.to_string(),
                rate_limit.unwrap_or_else(|| "-".to_owned()),
                pool.description,
            ]
        })
        .collect();
    print_table(["NAME", "SLOTS", "RATE LIMIT", "DESCRIPTION"], &rows);
    Ok(0)
}

/// Creates or resizes a pool. An empty `--description` keeps the current one, and so does no
/// `--rate-limit`; `--rate-limit none` removes it.
async fn set(
    store: &Store,
    name: &str,
    slots: i32,
    description: &str,
    rate_limit: Option<&str>,
) -> Result<i32> {
    let description = Some(description).filter(|text| !text.is_empty());
    let rate_limit = match rate_limit.map(str::trim) {
        None => None,
        Some("none") => Some(None),
        Some(text) => match text.parse::<RateLimit>() {
            Ok(limit) => Some(Some(limit)),
            Err(message) => return Ok(usage_error(format!("--rate-limit: {message}"))),
        },
    };
    match store.set_pool(name, slots, description, rate_limit).await {
        Ok(pool) => {
            let rate = match pool.rate_limit {
                Some(limit) => format!(", at most {limit}"),
                None => String::new(),
            };
            println!("pool \"{}\": {} slot(s){rate}", pool.name, pool.slots);
            Ok(0)
        }
        // A negative size or an empty name: the command line is wrong.
        Err(Error::Invalid(message)) => Ok(usage_error(message)),
        Err(error) => Err(error.into()),
    }
}

async fn delete(store: &Store, name: &str) -> Result<i32> {
    match store.delete_pool(name).await {
        Ok(()) => {
            println!("deleted pool \"{name}\"");
            Ok(0)
        }
        Err(Error::NotFound(_)) => {
            let pools = store.list_pools().await?;
            let hint = did_you_mean(name, pools.iter().map(|pool| pool.name.as_str()));
            Err(anyhow!("no pool \"{name}\"{hint}"))
        }
        Err(error) => Err(error.into()),
    }
}
