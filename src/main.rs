//! The `updraft` binary: parses the command line and wires the parts together. No logic of its
//! own lives here beyond presenting results.
//!
//! Each command module (`commands/`) is a leaf of the command line and uses none of its
//! siblings (`tests/command_modules.rs` checks it): what several of them need lives in the
//! modules beside `commands/`, and [`run`] sends every command to the module that owns it.

mod accounts;
mod args;
mod cli;
mod commands;
mod config;
mod embedded;
mod lookup;
mod term;
mod wiring;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, DagsCommand};
use crate::commands::{
    backfill, connections, dags, db, pools, runs, secrets, serve, tasks, users, variables, workers,
};
use crate::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UPDRAFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(error) => {
            let message = format!("{error:#}");
            eprintln!("error: {}", updraft_core::text::lines(&message));
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; returns the process exit code. The `dags` group is dispatched leaf by
/// leaf: `dags backfill` belongs to the `backfill` module, with `backfills`.
fn run(cli: Cli) -> anyhow::Result<i32> {
    let config = Config::from_args(&cli.global)?;
    let config = &config;
    match cli.command {
        Command::Standalone(args) => serve::standalone(config, args),
        Command::Scheduler(args) => serve::scheduler(config, args),
        Command::Worker(args) => serve::worker(config, args),
        Command::Webserver(args) => serve::webserver(config, args),
        Command::Dags(command) => match command {
            DagsCommand::List { json } => dags::list(config, json),
            DagsCommand::Show { dag_id, json } => dags::show(config, &dag_id, json),
            DagsCommand::Validate { paths } => dags::validate(config, paths),
            DagsCommand::Schema => dags::schema(),
            DagsCommand::NextRuns {
                dag_id,
                now,
                count,
                json,
            } => dags::next_runs(config, &dag_id, now, count, json),
            DagsCommand::Trigger {
                dag_id,
                conf,
                logical_date,
                wait,
            } => dags::trigger(config, &dag_id, conf, logical_date, wait),
            DagsCommand::Pause { dag_id } => dags::set_paused(config, &dag_id, true),
            DagsCommand::Unpause { dag_id } => dags::set_paused(config, &dag_id, false),
            DagsCommand::Test {
                dag_id,
                logical_date,
                conf,
            } => dags::test(config, &dag_id, logical_date, conf),
            DagsCommand::Backfill(args) => backfill::backfill(config, args),
        },
        Command::Runs(command) => runs::run(config, command),
        Command::Backfills(command) => backfill::run(config, command),
        Command::Tasks(command) => tasks::run(config, command),
        Command::Pools(command) => pools::run(config, command),
        Command::Workers(command) => workers::run(config, command),
        Command::Variables(command) => variables::run(config, command),
        Command::Connections(command) => connections::run(config, command),
        Command::Secrets(command) => secrets::run(config, command),
        Command::Db(command) => db::run(config, command),
        Command::Users(command) => users::run(config, command),
    }
}
