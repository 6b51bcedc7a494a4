//! `updraft secrets ...`: make a key, and rotate the key that seals stored secrets.

use anyhow::Result;
use chrono::Utc;
use updraft_core::seal::Keyring;

use crate::cli::SecretsCommand;
use crate::config::{Config, KeyFile};
use crate::term::actor;
use crate::wiring::{open_store, runtime};

/// Runs `updraft secrets ...` and returns the exit code.
pub fn run(config: &Config, command: SecretsCommand) -> Result<i32> {
    match command {
        SecretsCommand::NewKey => {
            println!("{}", Keyring::new_key());
            Ok(0)
        }
        SecretsCommand::RotateKey => {
            let secrets = config.secrets(KeyFile::Read)?;
            runtime()?.block_on(async {
                let store = open_store(config).await?;
                let rotated =
                    updraft_ops::secrets::rotate_key(&store, &actor(), &secrets, Utc::now()).await;
                store.close().await;
                let rotated = rotated?;
                println!(
                    "sealed {} variable(s) and {} connection(s) again with key {}",
                    rotated.variables,
                    rotated.connections,
                    secrets.keyring()?.ids()[0]
                );
                Ok(0)
            })
        }
    }
}
